use std::borrow::Cow;

use chrono::Utc;

use super::*;
use crate::check::nodes::tests::state;
use crate::check::store::tests::notice;
use crate::summary::{MatchSummary, RatingSummary, RequestSummary};

const NORTH: &str = "http://127.0.0.1:8081/";
const SOUTH: &str = "http://127.0.0.1:8082/";

fn told(endpoint: &str, m: MatchNotice) -> Line<'static> {
    Line {
        endpoint: Cow::Owned(endpoint.to_owned()),
        received_at: Utc::now(),
        message: Cow::Owned(ServerMessage::Match(m)),
    }
}

fn convergence(label: &str, seconds: f64) -> Convergence {
    Convergence {
        label: label.into(),
        converged: true,
        seconds,
        digest: Some("d".into()),
        settled: label.starts_with("final").then_some(true),
        settled_after: label.starts_with("final").then_some(seconds + 1.0),
        states: BTreeMap::new(),
    }
}

fn figures(accepted: u64, received: u64) -> SimulationFigures {
    let summary: RequestSummary = serde_json::from_value(serde_json::json!({
        "sent": accepted, "accepted": accepted, "rejected": 0, "shed": 0,
        "shed_latency_ms": {"count": 0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "p999": 0.0, "max": 0.0, "mean": 0.0},
        "by_status": {}, "transport_errors": 0, "redirects": 0, "per_sec": 1.0
    }))
    .unwrap();
    SimulationFigures {
        elapsed_secs: 60.0,
        requests: summary,
        matches: MatchSummary {
            received,
            driver_notices: received,
            expired_riders: 0,
            expired_drivers: 0,
            fare_total_taka: 0.0,
            fare_avg_taka: 0.0,
        },
        ratings: RatingSummary {
            sent: 1,
            accepted: 1,
            rejected: 0,
            by_status: BTreeMap::new(),
            transport_errors: 0,
        },
    }
}

/// A clean run of two nodes: two matches (one cross-border: its driver
/// was told on the south's socket), both on both nodes, both told; one
/// partition, healed in time; 4 requests accepted, 4 matched.
fn clean() -> Inputs {
    let mut store = Store::default();
    let listing = || {
        Some(ride_types::api::MatchList {
            matches: vec![notice(2, 20), notice(1, 10)],
        })
    };
    store.add([("a", listing()), ("b", listing())], 1.0);
    let metrics = "ride_requests_accepted_total{kind=\"rider\"} 1\nride_requests_accepted_total{kind=\"driver\"} 1\n";
    Inputs {
        nodes: vec!["a".into(), "b".into()],
        states: vec![Some(state("a", "d", true)), Some(state("b", "d", true))],
        metrics: vec![Some(metrics.into()), Some(metrics.into())],
        store,
        summary_path: "bot-summary.json".into(),
        summary: Some(figures(4, 2)),
        told: vec![
            told(NORTH, notice(1, 10)),
            told(NORTH, notice(1, 10)),
            told(NORTH, notice(2, 20)),
            told(SOUTH, notice(2, 20)),
        ],
        convergence: vec![
            convergence("start", 0.5),
            convergence("heal split", 2.0),
            convergence("final (bot stopped)", 3.0),
        ],
        partitions: vec![Partition {
            label: "split".into(),
            method: "iptables".into(),
            start: 100.0,
            end: 108.0,
        }],
        endpoints: vec![
            ("north".into(), Url::parse(NORTH).unwrap()),
            ("south".into(), Url::parse(SOUTH).unwrap()),
        ],
        limit: 30.0,
        restarted: Vec::new(),
    }
}

fn violations(inputs: &Inputs) -> Vec<String> {
    assess(inputs).violations
}

#[test]
fn a_clean_run_has_no_violations_and_says_so() {
    let report = assess(&clean());
    assert_eq!(report.violations, Vec::<String>::new());
    assert_eq!((report.matches, report.told), (2, 2));
    assert_eq!(
        report.cross,
        BTreeMap::from([(("north".to_owned(), "south".to_owned()), 1)])
    );
    let text = report.to_string();
    let expected = "
== chaos report
partitions (iptables):
  split                held   8.0 s   converged 2.00 s after heal
  final (bot stopped)  converged 3.00 s after the last heal; last change 4.00 s after it (limit 30 s)
bot: 4 requests sent, 4 accepted, 0 rejected, 0 transport errors; 0 met a dead node, 0 sent elsewhere as their own node was; told 2 matches (2 drivers told), expired 0 riders / 0 drivers; ratings 1/1 accepted; 60 s
committed matches (union of all nodes): 2; told to the bot: 2; snapshots: 1
cross-border matches: 1 of 2 told (north rider <- south driver: 1)
pending at the end (all nodes, each counted once): 0 riders, 0 drivers
accounting: accepted 4, accounted 4, transport_errors 0, outstanding_at_bot_exit 0, riders accepted by nodes 2, drivers accepted by nodes 2
no violations
";
    assert_eq!(text, expected);
}

#[test]
fn requests_accepted_for_a_dead_region_are_reported_by_node() {
    let mut inputs = clean();
    inputs.metrics[1] = Some(
        "ride_requests_accepted_total{kind=\"rider\"} 1\n\
         ride_requests_accepted_total{kind=\"driver\"} 1\n\
         ride_requests_adopted_total{region=\"north\"} 2\n"
            .into(),
    );
    let report = assess(&inputs);
    assert_eq!(report.violations, Vec::<String>::new());
    assert_eq!(report.adopted, [("b".into(), "north".into(), 2)]);
    let text = report.to_string();
    assert!(
        text.contains("\naccepted for a region whose nodes were down: b for north: 2\n"),
        "{text}"
    );
    assert!(
        !assess(&clean())
            .to_string()
            .contains("whose nodes were down")
    );
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

/// The clean run, with `node` listing a match of rider `r` and driver
/// `d` besides.
fn also_listed(node: &str, r: u128, d: u128) -> Inputs {
    let mut inputs = clean();
    let listing = ride_types::api::MatchList {
        matches: vec![notice(r, d)],
    };
    inputs.store.add([(node, Some(listing))], 2.0);
    inputs
}

fn assert_found(found: &[String], expected: &str) {
    assert!(
        found.iter().any(|v| v == expected),
        "{expected:?} not in {found:#?}"
    );
}

#[test]
fn a_driver_in_two_matches_on_one_node_is_a_violation() {
    let found = violations(&also_listed("a", 3, 10));
    let (driver, riders) = (id(10), format!("[{}, {}]", id(1), id(3)));
    assert_found(
        &found,
        &format!("node a: driver {driver} committed with riders {riders}"),
    );
    assert_found(
        &found,
        &format!("across all nodes: driver {driver} committed with riders {riders}"),
    );
    assert_found(&found, &format!("match {}/{driver} is missing on b", id(3)));
}

#[test]
fn a_rider_in_two_matches_across_nodes_is_a_violation() {
    // Node b lists rider 1 with another driver, and never with driver 10.
    let mut inputs = also_listed("b", 1, 11);
    let b = inputs.store.nodes.get_mut("b").expect("b listed");
    b.remove(&crate::check::store::pair_key(&notice(1, 10)));
    let found = violations(&inputs);
    let (rider, drivers) = (id(1), format!("[{}, {}]", id(10), id(11)));
    assert_found(
        &found,
        &format!("across all nodes: rider {rider} committed with drivers {drivers}"),
    );
    assert!(
        !found.iter().any(|v| v.starts_with("node ")),
        "no node lists both: {found:#?}"
    );
    // The bot was told of driver 10, no longer the only one.
    assert_found(
        &found,
        &format!(
            "bot was told rider {rider} got driver {} (via {NORTH}), but the nodes committed {drivers}",
            id(10)
        ),
    );
}

#[test]
fn a_notice_without_a_commit_or_of_a_second_partner_is_a_violation() {
    for (line, expected) in [
        (
            told(NORTH, notice(5, 50)),
            format!(
                "bot was told rider {} got driver {} (via {NORTH}), but the nodes committed nothing",
                id(5),
                id(50)
            ),
        ),
        (
            told(SOUTH, notice(1, 20)),
            format!(
                "bot was told rider {} of {} after {}",
                id(1),
                id(20),
                id(10)
            ),
        ),
    ] {
        let mut inputs = clean();
        inputs.told.push(line);
        assert_found(&violations(&inputs), &expected);
    }
}

#[test]
fn an_accepted_request_accounted_for_nowhere_is_lost() {
    let mut inputs = clean();
    inputs.summary = Some(figures(5, 2));
    let found = violations(&inputs);
    assert!(
        found
            .iter()
            .any(|v| v.starts_with("1 accepted requests are neither in a committed match")),
        "{found:#?}"
    );
    // The nodes' counters: 3 riders accepted, 2 matched, none pending.
    let mut inputs = clean();
    let metrics = "ride_requests_accepted_total{kind=\"rider\"} 2\nride_requests_accepted_total{kind=\"driver\"} 1\n";
    inputs.metrics[0] = Some(metrics.into());
    let found = violations(&inputs);
    assert_eq!(
        found,
        ["1 rider requests accepted by the nodes are neither matched, pending nor expired"]
    );
}

#[test]
fn a_restarted_node_skips_the_per_kind_accounting_with_a_note() {
    let mut inputs = clean();
    inputs.metrics[0] = Some("ride_requests_accepted_total{kind=\"rider\"} 9\n".into());
    inputs.restarted = vec!["b".into()];
    let report = assess(&inputs);
    assert_eq!(report.violations, Vec::<String>::new());
    assert_eq!(
        report.notes,
        ["per-kind accounting from node counters skipped: b restarted (counters reset)"]
    );
}

#[test]
fn slow_missing_or_unsettled_convergence_is_a_violation() {
    let mut inputs = clean();
    inputs.convergence[2].seconds = 31.0;
    assert_eq!(
        violations(&inputs),
        ["converged 31.00 s after the last heal, over the 30 s limit"]
    );
    inputs.convergence[2] = convergence("final (bot stopped)", 3.0);
    inputs.convergence[2].settled = Some(false);
    assert_eq!(
        violations(&inputs),
        ["the replicated state kept changing for 30 s after the bot stopped"]
    );
    inputs.convergence.pop();
    inputs.convergence[1].converged = false;
    assert_eq!(
        violations(&inputs),
        [
            "no convergence within 2.0 s after heal split",
            "no final convergence was measured"
        ]
    );
}

#[test]
fn silent_nodes_and_differing_digests_at_the_end_are_violations() {
    let mut inputs = clean();
    inputs.states[1] = Some(state("b", "other", true));
    assert_eq!(
        violations(&inputs),
        ["nodes not in step at the end: a d ready true; b other ready true"]
    );
    inputs.states[1] = None;
    assert_found(&violations(&inputs), "nodes not answering at the end: b");
}

#[test]
fn nodes_that_disagree_on_pending_counts_are_a_violation() {
    let mut inputs = clean();
    inputs.states[1].as_mut().unwrap().pending_riders = 1;
    assert_found(
        &violations(&inputs),
        "nodes of r disagree on pending counts (riders/drivers): a 0/0, b 1/0",
    );
}

#[test]
fn gaps_in_the_snapshots_are_violations_and_the_report_lists_the_first_fifty() {
    let mut inputs = clean();
    for at in 0..60 {
        inputs.store.gaps.push(crate::check::store::Gap {
            node: "a".into(),
            at: f64::from(at),
            oldest: notice(1, 10),
        });
    }
    let report = assess(&inputs);
    assert_eq!(report.violations.len(), 60);
    let text = report.to_string();
    assert!(text.contains("VIOLATIONS (60):"), "{text}");
    assert_eq!(
        text.matches("\n  - node a: a /matches listing was full (1000)")
            .count(),
        50
    );
    assert!(text.ends_with("  ... and 10 more\n"), "{text}");
}
