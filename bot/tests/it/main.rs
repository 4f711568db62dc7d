//! End to end: the real `bot` binary, as a process, against real node
//! processes.

mod node;

use node::NodeProcess;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use ride_types::api::ServerMessage;
use serde_json::Value;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Generous: the bot's own --duration bounds each run; this only stops a hung
/// bot from hanging the test suite.
const BOT_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the bot to completion, without any `BOT_*` variables from the
/// environment leaking into its flags.
async fn run_bot(args: &[&str]) -> Result<Output, Box<dyn std::error::Error>> {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_bot"));
    command.args(args).kill_on_drop(true);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("BOT_") {
            command.env_remove(name);
        }
    }
    let output = tokio::time::timeout(BOT_TIMEOUT, command.output()).await??;
    Ok(output)
}

fn describe(output: &Output) -> String {
    format!(
        "bot exited with {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn read_summary(path: &Path, output: &Output) -> Result<Value, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "no summary at {}: {e}\n{}",
            path.display(),
            describe(output)
        )
    })?;
    Ok(serde_json::from_str(&text)?)
}

fn count(summary: &Value, pointer: &str) -> u64 {
    summary
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("summary has no count at {pointer}: {summary:#}"))
}

/// The load mode's summary says every request it sent got a 2xx, and none
/// was refused or lost in transport.
fn assert_every_request_accepted(summary: &Value, context: impl Fn() -> String) {
    let sent = count(summary, "/requests/sent");
    assert!(sent > 0, "{}", context());
    assert_eq!(
        count_2xx(summary, "/requests/by_status"),
        sent,
        "{}",
        context()
    );
    assert_eq!(count(summary, "/requests/rejected"), 0, "{}", context());
    assert_eq!(
        count(summary, "/requests/transport_errors"),
        0,
        "{}",
        context()
    );
}

/// Sum of the counts of the 2xx statuses under `pointer` (a `by_status` map).
fn count_2xx(summary: &Value, pointer: &str) -> u64 {
    summary
        .pointer(pointer)
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("summary has no status map at {pointer}: {summary:#}"))
        .iter()
        .filter(|(status, _)| status.starts_with('2'))
        .filter_map(|(_, n)| n.as_u64())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulation_gets_matches_and_rates_them() -> TestResult {
    let solo = NodeProcess::start(&[]).await?;
    let endpoint = solo.endpoint.clone();
    let bot_dir = tempfile::tempdir()?;
    let summary_path = bot_dir.path().join("summary.json");
    let record_path = bot_dir.path().join("matches.jsonl");

    let output = run_bot(&[
        "--endpoint",
        &endpoint,
        "--riders",
        "20",
        "--drivers",
        "20",
        "--duration",
        "4s",
        "--seed",
        "7",
        "--no-progress",
        "--summary-json",
        summary_path.to_str().ok_or("non-UTF-8 temp path")?,
        "--record",
        record_path.to_str().ok_or("non-UTF-8 temp path")?,
    ])
    .await?;
    drop(solo);

    assert!(output.status.success(), "{}", describe(&output));
    let summary = read_summary(&summary_path, &output)?;
    let context = || format!("{summary:#}\n{}", describe(&output));
    assert_eq!(summary["mode"], "simulate", "{}", context());
    assert_eq!(summary["ok"], true, "{}", context());
    assert!(count(&summary, "/requests/accepted") > 0, "{}", context());
    assert_eq!(count(&summary, "/requests/rejected"), 0, "{}", context());
    assert_eq!(
        count(&summary, "/requests/transport_errors"),
        0,
        "{}",
        context()
    );
    let matches = count(&summary, "/matches/received");
    assert!(matches > 0, "{}", context());
    let ratings_sent = count(&summary, "/ratings/sent");
    assert!(count(&summary, "/ratings/accepted") > 0, "{}", context());
    assert_eq!(
        count(&summary, "/ratings/accepted"),
        ratings_sent,
        "{}",
        context()
    );

    // Every recorded line is a match notice in the wire format, tagged with
    // the endpoint that delivered it; riders alone account for `matches`.
    let record = std::fs::read_to_string(&record_path)?;
    let mut lines = 0;
    for line in record.lines() {
        let value: Value = serde_json::from_str(line)?;
        assert_eq!(value["endpoint"], format!("{endpoint}/"), "{line}");
        let message: ServerMessage = serde_json::from_value(value["message"].clone())?;
        assert!(matches!(message, ServerMessage::Match(_)), "{line}");
        lines += 1;
    }
    assert!(lines >= matches, "{lines} lines for {matches} matches");
    Ok(())
}

/// With `--settle`, a stopped bot waits for every accepted request's
/// outcome: riders with no driver end expired, each one counted, none left
/// outstanding (what `bot check` needs after a node restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settle_waits_until_every_accepted_request_has_an_outcome() -> TestResult {
    let node = NodeProcess::start(&["--request-ttl", "5s"]).await?;
    let endpoint = node.endpoint.clone();
    let bot_dir = tempfile::tempdir()?;
    let summary_path = bot_dir.path().join("summary.json");
    let output = run_bot(&[
        "--endpoint",
        &endpoint,
        "--riders",
        "3",
        "--drivers",
        "0",
        "--duration",
        "1500ms",
        "--settle",
        "20s",
        "--no-progress",
        "--summary-json",
        summary_path.to_str().ok_or("non-UTF-8 temp path")?,
    ])
    .await?;
    drop(node);

    assert!(output.status.success(), "{}", describe(&output));
    let summary = read_summary(&summary_path, &output)?;
    let context = || format!("{summary:#}\n{}", describe(&output));
    let accepted = count(&summary, "/requests/accepted");
    assert!(accepted >= 3, "{}", context());
    assert_eq!(count(&summary, "/matches/received"), 0, "{}", context());
    assert_eq!(
        count(&summary, "/matches/expired_riders"),
        accepted,
        "{}",
        context()
    );
    Ok(())
}

/// Runs load mode against a node of its own with `args` and returns the
/// bot's output and summary, once the bot has succeeded.
async fn load_on_solo(args: &[&str]) -> Result<(Output, Value), Box<dyn std::error::Error>> {
    let solo = NodeProcess::start(&[]).await?;
    let bot_dir = tempfile::tempdir()?;
    let summary_path = bot_dir.path().join("summary.json");
    let summary_arg = summary_path.to_str().ok_or("non-UTF-8 temp path")?;
    let mut all = vec![
        "--endpoint",
        &solo.endpoint,
        "--no-progress",
        "--summary-json",
        summary_arg,
    ];
    all.extend_from_slice(args);
    let output = run_bot(&all).await?;
    drop(solo);
    assert!(output.status.success(), "{}", describe(&output));
    let summary = read_summary(&summary_path, &output)?;
    Ok((output, summary))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_mode_gets_every_request_accepted() -> TestResult {
    let (output, summary) = load_on_solo(&[
        "--rate",
        "500",
        "--duration",
        "2s",
        "--warmup",
        "500ms",
        "--concurrency",
        "16",
    ])
    .await?;
    let context = || format!("{summary:#}\n{}", describe(&output));
    assert_eq!(summary["mode"], "load", "{}", context());
    assert_every_request_accepted(&summary, context);
    let sent = count(&summary, "/requests/sent");
    assert_eq!(count(&summary, "/latency_ms/count"), sent, "{}", context());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratings_load_mode_rates_each_prepared_match_once() -> TestResult {
    let (output, summary) = load_on_solo(&[
        "--rate",
        "40",
        "--load",
        "ratings",
        "--duration",
        "1s",
        "--warmup",
        "0s",
        "--concurrency",
        "4",
    ])
    .await?;
    let context = || format!("{summary:#}\n{}", describe(&output));
    // More matches are prepared than rated, so a second rating of one
    // match (a 409) would show here as a refusal.
    assert_every_request_accepted(&summary, context);
    // Every one of them a rating stored (201), none a rider or a driver.
    assert_eq!(
        count(&summary, "/requests/by_status/201"),
        count(&summary, "/requests/sent"),
        "{}",
        context()
    );
    Ok(())
}

/// A loopback URL where nothing listens: a port that was free a moment ago.
fn dead_endpoint() -> Result<String, Box<dyn std::error::Error>> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    Ok(format!("http://127.0.0.1:{port}"))
}

#[tokio::test]
async fn unreachable_endpoint_fails_with_a_clear_message() -> TestResult {
    let endpoint = dead_endpoint()?;
    let output = run_bot(&[
        "--endpoint",
        &endpoint,
        "--riders",
        "2",
        "--drivers",
        "2",
        "--duration",
        "1500ms",
        "--no-progress",
    ])
    .await?;
    assert!(!output.status.success(), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no endpoint answers") && stderr.contains(&endpoint),
        "{}",
        describe(&output)
    );
    assert!(
        stderr.contains("Connection refused") || stderr.contains("connect"),
        "{}",
        describe(&output)
    );
    Ok(())
}

/// One endpoint of two is dead from the start: the bot says so and runs on
/// the other, which gets the dead one's requests too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_at_start_is_reported_and_the_run_goes_on() -> TestResult {
    let dead = dead_endpoint()?;
    let (output, summary) = load_on_solo(&[
        "--endpoint",
        &dead,
        "--rate",
        "200",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--concurrency",
        "4",
    ])
    .await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{dead}/ does not answer")),
        "{}",
        describe(&output)
    );
    let context = || format!("{summary:#}\n{}", describe(&output));
    assert!(count(&summary, "/requests/accepted") > 0, "{}", context());
    assert!(count(&summary, "/requests/failovers") > 0, "{}", context());
    assert_eq!(count(&summary, "/requests/rejected"), 0, "{}", context());
    // Should the dead endpoint be tried again, each try is a refused
    // connection, counted as a post that met a dead node.
    assert!(
        count(&summary, "/requests/transport_errors") <= count(&summary, "/requests/failed"),
        "{}",
        context()
    );
    Ok(())
}

#[tokio::test]
async fn bad_flags_are_usage_errors() -> TestResult {
    let output = run_bot(&["--area", "23.9,90.35,23.7,90.5"]).await?;
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("swapped"), "{}", describe(&output));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regions_send_every_request_to_the_node_that_owns_it() -> TestResult {
    let regions = concat!(env!("CARGO_MANIFEST_DIR"), "/../regions");
    let bot_dir = tempfile::tempdir()?;
    let mut nodes = Vec::new();
    for region in ["dhaka-north", "dhaka-southeast", "dhaka-southwest"] {
        nodes.push(NodeProcess::start(&["--region", region, "--regions", regions]).await?);
    }
    // On ephemeral ports, not the regions' mesh addresses: the bot asks each
    // node its region.
    let endpoints: Vec<String> = nodes.iter().map(|n| n.endpoint.clone()).collect();
    let summary_path = bot_dir.path().join("summary.json");

    let output = run_bot(&[
        "--regions",
        regions,
        "--endpoint",
        &endpoints.join(","),
        "--rate",
        "300",
        "--duration",
        "2s",
        "--warmup",
        "300ms",
        "--concurrency",
        "8",
        "--no-progress",
        "--summary-json",
        summary_path.to_str().ok_or("non-UTF-8 temp path")?,
    ])
    .await?;
    drop(nodes);

    assert!(output.status.success(), "{}", describe(&output));
    let summary = read_summary(&summary_path, &output)?;
    let context = || format!("{summary:#}\n{}", describe(&output));
    assert_every_request_accepted(&summary, context);
    // A node would have answered 307 for a position it does not own.
    assert_eq!(count(&summary, "/requests/redirects"), 0, "{}", context());
    Ok(())
}

#[tokio::test]
async fn an_endpoint_outside_the_regions_is_refused() -> TestResult {
    // Region `test`, which the shipped regions do not have.
    let solo = NodeProcess::start(&[]).await?;
    let endpoint = solo.endpoint.clone();
    let output = run_bot(&[
        "--regions",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../regions"),
        "--endpoint",
        &endpoint,
        "--duration",
        "1s",
        "--no-progress",
    ])
    .await?;
    drop(solo);
    assert!(!output.status.success(), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("serves region \"test\", which is not in --regions"),
        "{}",
        describe(&output)
    );
    Ok(())
}

/// `bot check` on a real node's history, with the chaos script's three
/// verbs: a short simulation run against one node passes; the same record
/// with one notice the node never committed fails, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_a_real_run_and_catches_a_notice_never_committed() -> TestResult {
    let solo = NodeProcess::start(&[]).await?;
    let endpoint = solo.endpoint.clone();
    let dir = tempfile::tempdir()?;
    let path = |name: &str| -> Result<String, String> {
        dir.path()
            .join(name)
            .to_str()
            .map(str::to_owned)
            .ok_or_else(|| "non-UTF-8 temp path".to_owned())
    };
    let (summary, record, store) = (
        path("summary.json")?,
        path("told.jsonl")?,
        path("store.json")?,
    );
    let (convergence, partitions) = (path("convergence.jsonl")?, path("partitions.jsonl")?);
    let output = run_bot(&[
        "--endpoint",
        &endpoint,
        "--riders",
        "10",
        "--drivers",
        "10",
        "--duration",
        "3s",
        "--seed",
        "3",
        "--no-progress",
        "--summary-json",
        &summary,
        "--record",
        &record,
    ])
    .await?;
    assert!(output.status.success(), "{}", describe(&output));

    let node = format!("solo={}", solo.admin);
    let output = run_bot(&["check", "snapshot", &node, "--store", &store]).await?;
    assert!(output.status.success(), "{}", describe(&output));
    let output = run_bot(&[
        "check",
        "converge",
        &node,
        "--label",
        "final (bot stopped)",
        "--timeout",
        "120",
        "--log",
        &convergence,
        "--final",
        "--restarted",
    ])
    .await?;
    assert!(output.status.success(), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).starts_with("  converged "),
        "{}",
        describe(&output)
    );
    let regions = concat!(env!("CARGO_MANIFEST_DIR"), "/../regions");
    let check_args = [
        "check",
        "check",
        &node,
        "--store",
        &store,
        "--record",
        &record,
        "--bot-summary",
        &summary,
        "--convergence",
        &convergence,
        // None: nothing was partitioned.
        "--partitions",
        &partitions,
        "--regions",
        regions,
        // Only the final convergence is judged here, not how fast it was.
        "--limit",
        "600",
        // The node's counters are this test process's, which other
        // tests' nodes add to: named as restarted, its per-kind
        // accounting is skipped.
        "--restarted",
        "solo",
    ];
    let output = run_bot(&check_args).await?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{}", describe(&output));
    assert!(stdout.ends_with("no violations\n"), "{}", describe(&output));
    let committed: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("committed matches (union of all nodes): "))
        .and_then(|l| l.split(';').next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| describe(&output))?;
    assert!(committed > 0, "{}", describe(&output));

    // One more notice, of a pair nobody committed.
    let forged = serde_json::json!({
        "endpoint": format!("{endpoint}/"),
        "received_at": "2026-01-01T00:00:00Z",
        "message": {
            "type": "match",
            "rider_id": "00000000-0000-0000-0000-000000000001",
            "driver_id": "00000000-0000-0000-0000-000000000002",
            "rider_name": "nobody",
            "driver_name": "nobody",
            "car_number": "DHA-0",
            "pickup_km": 0.0,
            "trip_km": 0.0,
            "fare_taka": 0.0,
            "region": "test",
            "committed_at": "2026-01-01T00:00:00Z"
        }
    });
    let mut lines = std::fs::read_to_string(&record)?;
    lines.push_str(&format!("{forged}\n"));
    std::fs::write(&record, lines)?;
    let output = run_bot(&check_args).await?;
    drop(solo);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(
            "bot was told rider 00000000-0000-0000-0000-000000000001 got driver \
             00000000-0000-0000-0000-000000000002"
        ) && stdout.contains("but the nodes committed nothing"),
        "{}",
        describe(&output)
    );
    Ok(())
}
