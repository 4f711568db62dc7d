//! The metric table against what uses it: every name the node records is
//! described, and the Grafana dashboards (`deploy/grafana/*.json`) and
//! alert rules (`deploy/prometheus/rules.yml`) name only described metrics.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{Histogram, METRICS};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// Names that are not the node's but every Prometheus has: the scrape's
/// own result.
const SCRAPE_SERIES: &[&str] = &["up"];

/// PromQL words that are not metric names: aggregations (which may be
/// followed by `by (...)` rather than by their argument), operators,
/// modifiers and literals. A function call is recognised by its `(`.
const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "and",
    "or",
    "unless",
    "atan2",
    "bool",
    "offset",
    "inf",
    "nan",
];

/// Words followed by a list of label names in parentheses (for
/// `group_left` and `group_right`, an optional one).
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The index just past the delimiter that closes the one at `start`
/// (quotes, or brackets of one kind, skipping quoted text inside them).
fn skip_group(chars: &[char], start: usize) -> usize {
    let open = chars[start];
    let close = match open {
        '{' => '}',
        '[' => ']',
        '(' => ')',
        quote => quote,
    };
    let quoted = matches!(open, '"' | '\'' | '`');
    let mut depth = 0;
    let mut i = start + 1;
    while i < chars.len() {
        let c = chars[i];
        if quoted {
            if c == '\\' {
                i += 1;
            } else if c == close {
                return i + 1;
            }
        } else if matches!(c, '"' | '\'' | '`') {
            i = skip_group(chars, i);
            continue;
        } else if c == open {
            depth += 1;
        } else if c == close {
            if depth == 0 {
                return i + 1;
            }
            depth -= 1;
        }
        i += 1;
    }
    chars.len()
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The metric names a PromQL expression selects: identifiers that are not
/// functions (followed by `(`), keywords, label names (inside `{...}` or a
/// `by (...)`-like list), quoted strings, durations or numbers, nor
/// Grafana variables (`$name`, `${name}`).
fn metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`' | '{' | '[') {
            i = skip_group(&chars, i);
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '$' {
            i += 1;
            if chars.get(i) == Some(&'{') {
                i = skip_group(&chars, i);
            }
            while i < chars.len() && is_name_char(chars[i]) {
                i += 1;
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // A number (0.99, 1e3) or a duration (5m).
            while i < chars.len() && (is_name_char(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if is_name_start(c) {
            let start = i;
            while i < chars.len() && is_name_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let call = chars.get(next) == Some(&'(');
            if LABEL_LISTS.contains(&word.as_str()) {
                if call {
                    i = skip_group(&chars, next);
                }
            } else if !call && !KEYWORDS.contains(&word.as_str()) {
                names.push(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Of the names `expr` selects, those the node does not export: not in
/// the table, nor a histogram's `_sum`, `_count` or `_bucket` series.
fn unknown_metrics(expr: &str) -> Vec<String> {
    let described: BTreeSet<&str> = METRICS.iter().map(|&(_, name, _)| name).collect();
    let histograms: BTreeSet<&str> = METRICS
        .iter()
        .filter(|&&(kind, _, _)| kind == Histogram)
        .map(|&(_, name, _)| name)
        .collect();
    metric_names(expr)
        .into_iter()
        .filter(|name| {
            let series_of_histogram = ["_sum", "_count", "_bucket"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|base| histograms.contains(base))
            });
            !described.contains(name.as_str())
                && !SCRAPE_SERIES.contains(&name.as_str())
                && !series_of_histogram
        })
        .collect()
}

/// Every `expr` of a rule file: one line, or a block (`expr: |`) of the
/// lines indented deeper than the key.
fn rule_expressions(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut exprs = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let Some(value) = trimmed.strip_prefix("expr:") else {
            continue;
        };
        let indent = line.len() - trimmed.len();
        let value = value.trim();
        if value.starts_with('|') || value.starts_with('>') {
            let block: Vec<&str> = lines[n + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .copied()
                .collect();
            exprs.push(block.join("\n"));
        } else {
            let unquoted = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(value);
            exprs.push(unquoted.to_owned());
        }
    }
    exprs
}

/// Every `expr` string anywhere in a dashboard (each panel's queries).
fn dashboard_expressions(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match value {
                    serde_json::Value::String(expr) if key == "expr" => out.push(expr.clone()),
                    _ => dashboard_expressions(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                dashboard_expressions(item, out);
            }
        }
        _ => {}
    }
}

fn repo_path(relative: &str) -> PathBuf {
    Path::new(MANIFEST_DIR).join("..").join(relative)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn no_metric_is_described_twice() {
    let mut seen = BTreeSet::new();
    for &(_, name, help) in METRICS {
        assert!(seen.insert(name), "{name} is described twice");
        assert!(!help.is_empty(), "{name} has no help text");
    }
}

#[test]
fn the_metric_name_extractor_skips_functions_labels_strings_and_numbers() {
    let expr = r#"
        sum by (instance, peer) (rate(mesh_bytes_received_total{peer="a", job=~"x|y"}[2m]))
          / on (instance) group_left (region)
        max without (quantile) (ride_group_commit_seconds{quantile="0.99"}) offset 5m > 0.5e1
        * on (instance) group_left ride_ready
        and label_replace(up == 1, "peer", "$1", "instance", "(.*)")
        # a comment naming not_a_metric
        or histogram_quantile(0.99, rate(http_request_duration_seconds_bucket[$__rate_interval]))
        unless count(ride_pending{kind="rider"}) by (job) > bool 0
        or sum(rate(ride_requests_accepted_total[${window}])) - $region
    "#;
    assert_eq!(
        metric_names(expr),
        [
            "mesh_bytes_received_total",
            "ride_group_commit_seconds",
            "ride_ready",
            "up",
            "http_request_duration_seconds_bucket",
            "ride_pending",
            "ride_requests_accepted_total",
        ]
    );
    assert!(
        unknown_metrics(expr).is_empty(),
        "{:?}",
        unknown_metrics(expr)
    );
}

#[test]
fn a_metric_the_node_does_not_export_is_caught() {
    assert_eq!(
        unknown_metrics("sum by (region) (rate(ride_no_such_thing_total[5m])) / up"),
        ["ride_no_such_thing_total"]
    );
    // A suffix only counts for a histogram's series.
    assert_eq!(
        unknown_metrics("rate(ride_pending_count[1m]) + ride_ratings_total_sum"),
        ["ride_pending_count", "ride_ratings_total_sum"]
    );
}

#[test]
fn every_metric_recorded_in_node_src_is_described() {
    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    rust_files(&Path::new(MANIFEST_DIR).join("src"), &mut files);
    let described: BTreeSet<&str> = METRICS.iter().map(|&(_, name, _)| name).collect();
    let mut recorded = BTreeSet::new();
    let mut missing = Vec::new();
    for file in &files {
        let text = read(file);
        for kind in ["counter", "gauge", "histogram"] {
            let call = format!("metrics::{kind}!(");
            for (at, _) in text.match_indices(&call) {
                let rest = text[at + call.len()..].trim_start();
                let Some(name) = rest.strip_prefix('"').and_then(|r| r.split('"').next()) else {
                    continue;
                };
                recorded.insert(name.to_owned());
                if !described.contains(name) {
                    missing.push(format!("{name} ({})", file.display()));
                }
            }
        }
    }
    assert!(
        recorded.len() >= 30,
        "found only {} recorded metrics in node/src: {recorded:?}; has the way they are recorded changed?",
        recorded.len()
    );
    assert!(
        missing.is_empty(),
        "recorded but not described in telemetry::METRICS: {missing:?}"
    );
}

#[test]
fn dashboards_and_alert_rules_name_only_exported_metrics() {
    let mut sources: Vec<(String, Vec<String>)> = Vec::new();

    let rules = repo_path("deploy/prometheus/rules.yml");
    let exprs = rule_expressions(&read(&rules));
    assert!(
        exprs.len() >= 10,
        "only {} expressions found in {}",
        exprs.len(),
        rules.display()
    );
    sources.push((rules.display().to_string(), exprs));

    let grafana = repo_path("deploy/grafana");
    let mut dashboards: Vec<PathBuf> = std::fs::read_dir(&grafana)
        .unwrap_or_else(|e| panic!("reading {}: {e}", grafana.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    dashboards.sort();
    assert!(
        !dashboards.is_empty(),
        "no dashboard in {}",
        grafana.display()
    );
    for path in dashboards {
        let json: serde_json::Value = serde_json::from_str(&read(&path))
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        let mut exprs = Vec::new();
        dashboard_expressions(&json, &mut exprs);
        assert!(!exprs.is_empty(), "no query in {}", path.display());
        sources.push((path.display().to_string(), exprs));
    }

    let mut unknown = Vec::new();
    for (source, exprs) in &sources {
        for expr in exprs {
            assert!(
                !metric_names(expr).is_empty(),
                "{source}: no metric found in `{expr}`"
            );
            for name in unknown_metrics(expr) {
                unknown.push(format!("{source}: {name} in `{}`", expr.trim()));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics the node does not export (telemetry::METRICS):\n{}",
        unknown.join("\n")
    );
}
