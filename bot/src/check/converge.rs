//! `bot check converge`: how long after a heal every node holds one digest.
//!
//! Polls every node's `/debug/state` until all answer, all are ready and
//! all digests are equal, or until `--timeout` after `--since`, and appends
//! what it saw to the convergence log, which `bot check check` reads back.
//! With `--final` (the bot has stopped) it then waits until the mesh
//! settles: pending riders and drivers may still be matched after the bot
//! stopped, so the digest must stay put for a while and every match log
//! must hold as many matches before the last check looks.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use ride_types::api::DebugState;
use serde::{Deserialize, Serialize};

use super::nodes::{NodeUrl, Nodes, POLL_TIMEOUT, converged, parse_node};
use super::{CheckError, now_secs};

/// How often the nodes are asked.
const POLL: Duration = Duration::from_millis(200);
/// Seconds without a change before the mesh counts as settled: over two
/// matcher rounds (1 s each).
const QUIET_SECS: f64 = 2.5;

#[derive(Debug, clap::Args)]
pub struct ConvergeArgs {
    /// The nodes' operator listeners, as ID=URL.
    #[arg(required = true, value_name = "ID=URL", value_parser = parse_node)]
    nodes: Vec<NodeUrl>,
    /// What is being measured, e.g. `heal split`; `final ...` for the last.
    #[arg(long)]
    label: String,
    /// When the clock started (epoch seconds, e.g. the heal) [default: now].
    #[arg(long, value_name = "EPOCH_SECS")]
    since: Option<f64>,
    /// Give up this many seconds after --since.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    timeout: f64,
    /// The convergence log to append to (one JSON line).
    #[arg(long, value_name = "FILE")]
    log: PathBuf,
    /// Also wait until the state stops changing and the match logs agree.
    #[arg(long = "final")]
    settle: bool,
    /// Nodes restarted during the run: their match logs lost what their
    /// documents dropped while they were down, so their counts are not
    /// compared.
    #[arg(long, value_name = "ID", num_args = 0..)]
    restarted: Vec<String>,
}

/// One line of the convergence log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Convergence {
    pub label: String,
    pub converged: bool,
    /// From --since to the end of the measurement, to the millisecond.
    pub seconds: f64,
    /// The one digest, when converged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// `--final` only: whether the mesh settled in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled: Option<bool>,
    /// `--final` only: seconds from --since to its last change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled_after: Option<f64>,
    /// What every node answered last (`null`: no answer).
    pub states: BTreeMap<String, Option<DebugState>>,
}

impl Convergence {
    pub fn is_final(&self) -> bool {
        self.label.starts_with("final")
    }
}

pub async fn run(args: ConvergeArgs) -> Result<bool, CheckError> {
    let since = args.since.unwrap_or_else(now_secs);
    let nodes = Nodes::new(args.nodes)?;
    let deadline = since + args.timeout;
    let mut states = nodes.states(POLL_TIMEOUT).await;
    let mut ok = converged(&states);
    while !ok && now_secs() < deadline {
        tokio::time::sleep(POLL).await;
        states = nodes.states(POLL_TIMEOUT).await;
        ok = converged(&states);
    }
    let seconds = now_secs() - since;
    let digest = ok.then(|| digest_of(&states));
    let mut entry = Convergence {
        label: args.label,
        converged: ok,
        seconds: to_millis(seconds),
        digest: digest.clone(),
        settled: None,
        settled_after: None,
        states: BTreeMap::new(),
    };
    if let (Some(digest), true) = (digest, args.settle) {
        let (settled, changed) =
            settle(&nodes, &mut states, digest, args.timeout, &args.restarted).await;
        entry.settled = Some(settled);
        entry.settled_after = Some(to_millis(changed - since));
    }
    entry.states = nodes.ids().map(str::to_owned).zip(states).collect();
    append(&args.log, &entry)?;
    print!("{}", describe(&entry));
    Ok(ok)
}

/// Waits until the digest has not changed for [`QUIET_SECS`] and the match
/// logs of all but the restarted nodes hold as many matches, for at most
/// `timeout` seconds; returns whether that happened, and when (epoch
/// seconds) the state last changed.
async fn settle(
    nodes: &Nodes,
    states: &mut Vec<Option<DebugState>>,
    mut digest: String,
    timeout: f64,
    restarted: &[String],
) -> (bool, f64) {
    let mut changed = now_secs();
    let give_up = changed + timeout;
    while now_secs() < give_up {
        tokio::time::sleep(POLL).await;
        *states = nodes.states(POLL_TIMEOUT).await;
        let ok = converged(states);
        let same = ok && digest_of(states) == digest;
        if same && match_logs_agree(nodes.ids(), states, restarted) {
            if now_secs() - changed >= QUIET_SECS {
                return (true, changed);
            }
            continue;
        }
        if ok {
            digest = digest_of(states);
        }
        changed = now_secs();
    }
    (false, changed)
}

/// Every node's digest, joined: it changes whenever any node's state
/// does. Call only when [`converged`].
fn digest_of(states: &[Option<DebugState>]) -> String {
    let digests: Vec<&str> = states.iter().flatten().map(|s| s.digest.as_str()).collect();
    digests.join("/")
}

/// Every node of a region that was not restarted (and answered) holds as
/// many matches as the others there (nodes of different regions learn
/// different matches).
fn match_logs_agree<'a>(
    ids: impl Iterator<Item = &'a str>,
    states: &[Option<DebugState>],
    restarted: &[String],
) -> bool {
    let mut counts: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
    for state in ids
        .zip(states)
        .filter(|(id, _)| !restarted.iter().any(|r| r == id))
        .filter_map(|(_, s)| s.as_ref())
    {
        counts
            .entry(&state.region)
            .or_default()
            .insert(state.committed_matches);
    }
    counts.values().all(|c| c.len() == 1)
}

fn to_millis(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

fn append(path: &PathBuf, entry: &Convergence) -> Result<(), CheckError> {
    let error = |source| CheckError::Write {
        path: path.clone(),
        source,
    };
    let mut line = serde_json::to_vec(entry).map_err(|e| error(e.into()))?;
    line.push(b'\n');
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(&line))
        .map_err(error)
}

/// What the script prints: one line when converged, else every node's state.
fn describe(entry: &Convergence) -> String {
    if let Some(digest) = &entry.digest {
        return format!(
            "  converged {:.2} s after {} (digest {digest})\n",
            entry.seconds, entry.label
        );
    }
    let mut text = format!(
        "  NOT converged {:.1} s after {}:\n",
        entry.seconds, entry.label
    );
    for (node, state) in &entry.states {
        let seen = match state {
            None => "no answer".to_owned(),
            Some(s) => format!("digest {} ready {}", s.digest, s.ready),
        };
        text.push_str(&format!("    {node:<18} {seen}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::check::nodes::tests::state;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: ConvergeArgs,
    }

    fn parse(args: &[&str]) -> Result<ConvergeArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("converge").chain(args.iter().copied()))
            .map(|cli| cli.args)
    }

    #[test]
    fn arguments_read_as_the_script_passes_them() {
        let args = parse(&[
            "a=http://127.0.0.1:1",
            "b=http://127.0.0.1:2",
            "--label",
            "final (bot stopped)",
            "--since",
            "1764467312.123456789",
            "--timeout",
            "30",
            "--log",
            "c.jsonl",
            "--final",
            "--restarted",
        ])
        .unwrap();
        assert_eq!(args.nodes.len(), 2);
        assert_eq!(args.since, Some(1_764_467_312.123_456_8));
        assert!(args.settle);
        assert!(args.restarted.is_empty());
        let args = parse(&[
            "a=http://127.0.0.1:1",
            "--label",
            "x",
            "--log",
            "l",
            "--restarted",
            "a",
            "b",
        ])
        .unwrap();
        assert_eq!(args.restarted, ["a", "b"]);
        assert_eq!((args.since, args.timeout, args.settle), (None, 30.0, false));
        assert!(parse(&["--label", "x", "--log", "l"]).is_err(), "no node");
    }

    #[test]
    fn restarted_nodes_are_left_out_of_the_match_count_comparison() {
        let with = |n| {
            let mut s = state("n", "d", true);
            s.committed_matches = n;
            Some(s)
        };
        let states = [with(5), with(3), with(5), None];
        let ids = || ["a", "b", "c", "d"].into_iter();
        assert!(!match_logs_agree(ids(), &states, &[]));
        assert!(match_logs_agree(ids(), &states, &["b".into()]));
    }

    #[test]
    fn the_log_line_round_trips_and_is_described() {
        let entry = Convergence {
            label: "heal split".into(),
            converged: false,
            seconds: to_millis(30.123_456),
            digest: None,
            settled: None,
            settled_after: None,
            states: BTreeMap::from([
                ("a".to_owned(), Some(state("a", "d1", true))),
                ("b".to_owned(), None),
            ]),
        };
        let line = serde_json::to_string(&entry).unwrap();
        assert!(!line.contains("settled"), "{line}");
        let back: Convergence = serde_json::from_str(&line).unwrap();
        assert_eq!(back, entry);
        assert_eq!(back.seconds, 30.123);
        assert!(!back.is_final());
        assert_eq!(
            describe(&entry),
            "  NOT converged 30.1 s after heal split:\n    a                  digest d1 ready true\n    b                  no answer\n"
        );
        let done = Convergence {
            converged: true,
            digest: Some("d1".into()),
            ..entry
        };
        assert_eq!(
            describe(&done),
            "  converged 30.12 s after heal split (digest d1)\n"
        );
    }
}
