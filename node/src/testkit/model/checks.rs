//! The model checked breadth-first, every reachable state, with the state
//! count printed: the shipped protocol must break no property, a world
//! without faults must commit every rider, and each defect put back must
//! be found, its shortest counterexample printed as a trace.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use stateright::report::{ReportData, ReportDiscovery, Reporter};
use stateright::{Checker, HasDiscoveries, Model, Path};

use super::ownership::{
    ACKED_KEPT, Action, Bounds, CONVERGED, Defect, HANDED_OVER, LIVE, NO_DOUBLE_COMMIT, Owner,
    ProtocolModel, RequestSpec, State, TOLD_BACKED,
};

const SAFETY: [&str; 4] = [NO_DOUBLE_COMMIT, TOLD_BACKED, ACKED_KEPT, CONVERGED];

fn home(node: u8, rider: bool) -> RequestSpec {
    RequestSpec {
        home: Owner { node, lineage: 0 },
        rider,
    }
}

/// The bound of the normal test run: three nodes, two riders (at n0 and
/// n2) and two drivers (at n1 and n0), so that n0 can match at home or
/// across a border and n2 only across one; one crash (journal kept, or an
/// empty disk), one partition, one message in flight per link, a claimant
/// claims once per rider, driver and believed owner, and a driver is handed
/// over at most twice; a node sends to every peer it reaches at once, and
/// messages arrive as they are sent (see [`Bounds`]). `MODEL_BOUND=large`
/// sends link by link, so that one peer learns a record before another
/// without a fault.
fn bounds() -> Bounds {
    let large = std::env::var("MODEL_BOUND").is_ok_and(|b| b == "large");
    Bounds {
        nodes: 3,
        requests: vec![home(0, true), home(2, true), home(1, false), home(0, false)],
        accepted_at_start: true,
        ready_at_start: true,
        crashes: 1,
        partitions: 1,
        max_generation: 1,
        max_attempts: 1,
        broadcast: !large,
        cleanup_together: true,
        fair: false,
    }
}

/// The checker's threads: this machine's cores (two), no more.
fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(2))
}

struct Run {
    discoveries: std::collections::HashMap<&'static str, Path<State, Action>>,
    states: usize,
}

/// Prints how far a long run got, every half minute.
struct Progress {
    what: String,
    printed: Duration,
}

impl Reporter<ProtocolModel> for Progress {
    fn report_checking(&mut self, data: ReportData) {
        if !data.done && data.duration >= self.printed + Duration::from_secs(30) {
            self.printed = data.duration;
            eprintln!(
                "model check ({}): {} states so far, depth {}, {:?}",
                self.what, data.unique_states, data.max_depth, data.duration
            );
        }
    }

    /// How often the checker's progress is polled: also how long a run
    /// waits, at most, after it is done.
    fn delay(&self) -> Duration {
        Duration::from_millis(50)
    }

    fn report_discoveries(
        &mut self,
        _: &ProtocolModel,
        _: BTreeMap<&'static str, ReportDiscovery<ProtocolModel>>,
    ) {
        // The tests print the traces they want, in words.
    }
}

fn explore(model: ProtocolModel, finish_when: HasDiscoveries, what: &str) -> (Run, ProtocolModel) {
    let started = Instant::now();
    let checker = model
        .checker()
        .threads(threads())
        .finish_when(finish_when)
        .spawn_bfs()
        .join_and_report(&mut Progress {
            what: what.to_owned(),
            printed: Duration::ZERO,
        });
    let run = Run {
        discoveries: checker.discoveries(),
        states: checker.unique_state_count(),
    };
    eprintln!(
        "model check ({what}): {} states explored breadth-first ({} generated, depth {}) in {:?}",
        run.states,
        checker.state_count(),
        checker.max_depth(),
        started.elapsed()
    );
    let model = ProtocolModel {
        bounds: checker.model().bounds.clone(),
        defect: checker.model().defect,
    };
    (run, model)
}

/// A counterexample as numbered steps, then who holds which commits.
fn trace(model: &ProtocolModel, path: &Path<State, Action>) -> (usize, String) {
    let steps = path.clone().into_vec();
    let mut text = String::new();
    let mut count = 0;
    for (state, action) in &steps {
        if let Some(action) = action {
            count += 1;
            text.push_str(&format!(
                "  {count:>2}. {}\n",
                model.describe(state, action)
            ));
        }
    }
    let last = path.last_state();
    for node in &last.nodes {
        let commits: Vec<String> = node
            .view
            .iter()
            .filter(|r| matches!(r, super::ownership::Record::Commit { .. }))
            .map(|r| model.record_text(r))
            .collect();
        text.push_str(&format!(
            "  then {} holds [{}]\n",
            node.owner,
            commits.join(", ")
        ));
    }
    (count, text)
}

#[test]
fn the_protocol_keeps_its_promises_in_every_state() {
    let (run, model) = explore(
        ProtocolModel {
            bounds: bounds(),
            defect: Defect::None,
        },
        HasDiscoveries::All,
        "shipped protocol, one crash, one partition",
    );
    for property in SAFETY {
        if let Some(path) = run.discoveries.get(property) {
            let (steps, text) = trace(&model, path);
            panic!("{property} broken in {steps} steps:\n{text}");
        }
    }
    assert!(
        run.discoveries.contains_key(HANDED_OVER),
        "the model never hands a driver over: it checks nothing"
    );
}

#[test]
fn without_faults_every_rider_is_committed() {
    let mut bounds = bounds();
    bounds.fair = true;
    let (run, model) = explore(
        ProtocolModel {
            bounds,
            defect: Defect::None,
        },
        HasDiscoveries::All,
        "links up, clocks within the bound",
    );
    for property in SAFETY.into_iter().chain([LIVE]) {
        if let Some(path) = run.discoveries.get(property) {
            let (steps, text) = trace(&model, path);
            panic!("{property} broken in {steps} steps:\n{text}");
        }
    }
    assert!(run.discoveries.contains_key(HANDED_OVER));
}

/// Explores until `defect` double-books; returns the trace's length.
fn caught(defect: Defect, what: &str) -> usize {
    let (run, model) = explore(
        ProtocolModel {
            bounds: bounds(),
            defect,
        },
        HasDiscoveries::AnyOf(BTreeSet::from([NO_DOUBLE_COMMIT])),
        what,
    );
    let path = run
        .discoveries
        .get(NO_DOUBLE_COMMIT)
        .unwrap_or_else(|| panic!("{what}: no double commit found"));
    let (steps, text) = trace(&model, path);
    eprintln!("{what}: shortest double commit, {steps} steps:\n{text}");
    steps
}

#[test]
fn an_owner_transferring_a_driver_it_no_longer_owns_is_caught() {
    caught(
        Defect::TransferWithoutOwnership,
        "defect: transfer without ownership",
    );
}

#[test]
fn a_restart_that_forgets_its_transfers_is_caught() {
    caught(
        Defect::ForgetfulRestart,
        "defect: a restart that forgets its transfers",
    );
}
