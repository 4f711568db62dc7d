//! Running a simulation to its end: traffic with chaos, then healing,
//! then the checks; with the trace replayed against the model when asked.

use super::*;

/// The figures of one run.
pub(super) struct Outcome {
    /// What the nodes did, if traced.
    pub(super) trace: Vec<TraceEvent>,
    /// What the conformance replay of the trace went through, if replayed.
    pub(super) covered: Covered,
    pub(super) violations: Vec<String>,
    pub(super) shed: usize,
    pub(super) matches: usize,
    pub(super) cross_border: usize,
    /// Requests nodes read back from their journals at restart, answered
    /// 202 before any document held them.
    pub(super) reloaded: u64,
    pub(super) converged_after_ms: u64,
}

/// Runs one seed: three retention periods of traffic and chaos (with a
/// partition longer than the TTL), then quiet healing, then the checks.
pub(super) fn run(seed: u64, nodes: usize, memory: Memory, traffic: Traffic) -> Outcome {
    drive(Sim::new(seed, nodes, memory, traffic))
}

/// Runs one seed with every node's steps traced, then replays the trace
/// against the model's transition relation ([`conformance::replay`]): a
/// step the model does not allow is a violation of the run.
pub(super) fn run_conforming(seed: u64, nodes: usize, memory: Memory, traffic: Traffic) -> Outcome {
    let mut outcome = run_traced(seed, nodes, memory, traffic);
    // A run that already failed may stop anywhere; its own violations say
    // more than the replay would.
    if outcome.violations.is_empty() {
        match conformance::replay(&outcome.trace) {
            Ok(covered) => outcome.covered = covered,
            Err(e) => outcome.violations.push(format!(
                "the model does not allow a step of the shipped core: {e}"
            )),
        }
    }
    outcome.trace = Vec::new();
    outcome
}

/// Runs one seed as [`run`] does, recording its trace.
pub(super) fn run_traced(seed: u64, nodes: usize, memory: Memory, traffic: Traffic) -> Outcome {
    let mut sim = Sim::new(seed, nodes, memory, traffic);
    sim.tracer = Some(Tracer {
        events: Vec::new(),
        ready: vec![false; nodes],
        docs: vec![BTreeSet::new(); nodes],
    });
    for i in 0..nodes {
        sim.trace_boot(i);
    }
    drive(sim)
}

/// Runs a simulation to its end and checks it.
pub(super) fn drive(mut sim: Sim) -> Outcome {
    let nodes = sim.nodes.len();
    let chaos_ticks = 3 * RETAIN_MS / TICK_MS;
    let long_cut = sim.rng.random_range(0..chaos_ticks / 2);
    let long_cut_node = sim.rng.random_range(0..nodes);
    for t in 0..chaos_ticks {
        sim.tick(true, true);
        if t == long_cut {
            sim.cut_off(long_cut_node);
            for _ in 0..(TTL_MS + 1_500) / TICK_MS {
                sim.tick(true, false);
            }
        }
    }
    sim.heal_all();
    // Everything from before the heal drains away everywhere (a stuck or
    // resurrected document would stay), then fresh traffic must converge.
    for _ in 0..(RETAIN_MS + READY_GRACE_MS) / TICK_MS {
        sim.tick(false, false);
    }
    for _ in 0..1_000 / TICK_MS {
        sim.tick(true, false);
    }
    let healed = sim.now;
    let mut converged_after = None;
    for _ in 0..CONVERGE_WITHIN_MS / TICK_MS {
        sim.tick(false, false);
        if converged_after.is_none() && sim.now.0.is_multiple_of(STEP_EVERY_MS) && sim.converged() {
            converged_after = Some(sim.now.0 - healed.0);
        }
    }
    if let Some(after) = converged_after {
        sim.converged_after_ms = after;
    }
    if converged_after.is_none() {
        let states: Vec<String> = sim
            .nodes
            .iter()
            .map(|n| match &n.process {
                Some(p) => {
                    let s = p.core.snapshot(n.clock(sim.now));
                    let inv: Vec<String> = p
                        .core
                        .inventory()
                        .into_iter()
                        .map(|(d, _)| format!("{}:{}", &d.owner.0[..8], d.epoch % 1000))
                        .collect();
                    format!(
                        "{} ready={} docs={} digest={:x} {:?}",
                        s.owner, s.ready, s.documents, s.digest, inv
                    )
                }
                None => "down".into(),
            })
            .collect();
        sim.check.violations.push(format!(
            "no single digest within {CONVERGE_WITHIN_MS} ms of fresh traffic after healing: {states:?}"
        ));
    }
    sim.check();
    let matches = sim.check.told.riders();
    Outcome {
        trace: sim.tracer.map(|t| t.events).unwrap_or_default(),
        covered: Covered::default(),
        violations: sim.check.violations,
        shed: sim.shed,
        matches,
        cross_border: sim.cross_border,
        reloaded: sim.reloaded,
        converged_after_ms: sim.converged_after_ms,
    }
}
