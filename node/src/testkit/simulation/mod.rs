//! Deterministic simulation of the node that ships: several region nodes,
//! each the production [`Node`] (protocol core, journal on disk, match
//! log) with the production websocket [`Hub`] in front of it, driven over
//! an in-process network on a virtual clock. Seeded random traffic
//! concentrates at the region borders; links have random delays, go down
//! and come back; partitions outlast the request TTL; nodes crash (memory
//! gone, journal kept, sometimes with a torn last write) and restart, or
//! come back with an empty disk; every node's clock has its own offset,
//! within and beyond the skew bound, and steps in its own phase. Runs last
//! at least three retention periods, so that cleanup really runs.
//!
//! Links are ordered and reliable while up (a QUIC stream per peer); delays
//! differ per link, so messages interleave differently across links. A link
//! that goes down loses what it carried, and both ends start their syncs
//! afresh, as a lost connection does.
//!
//! The checks look at raw records, as every node ever absorbed them from
//! any document, and at what clients were told over the hub, not at any
//! node's summary (see [`Checker`]). A failure names its seed so that it can
//! be replayed (`SIM_SEED=n`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;

use crate::disk::journal::{self, Durability};
use crate::net::peer_sync::PeerSync;
use crate::protocol::documents::DocId;
use crate::protocol::intake::{NewDriver, NewRider};
use crate::protocol::message::PeerMessage;
use crate::protocol::record::{CommitRecord, Record};
use crate::protocol::replica::{Hooks, ReplicaConfig};
use crate::runtime::admission::Limits;
use crate::runtime::delivery::Hub;
use crate::runtime::node::{Durable, Node, Snapshot, Status};
use crate::runtime::recent_matches::Retention;
use crate::testkit::model::conformance::{self, Covered};
use crate::testkit::trace::TraceEvent;
use ride_types::api::{Position, ServerMessage};
use ride_types::clock::Millis;
use ride_types::convergence::all_in_step;
use ride_types::decimals;
use ride_types::halo::{Layout, Scope};
use ride_types::history::{self, Commits, Fate, Told};
use ride_types::ids::{Entropy, NodeId, RequestId};
use ride_types::region_grid::{self, GridArgs};
use ride_types::regions::{Region, Regions};

mod checker;
mod clients;
mod network;
mod run;
mod world;

use checker::{Acked, Checker, fate, ready_and_in_step};
use run::{Outcome, drive, run, run_conforming, run_traced};
use world::World;

const TICK_MS: u64 = 10;
const SEND_EVERY_MS: u64 = 40;
const STEP_EVERY_MS: u64 = 100;
const TTL_MS: u64 = 5_000;
const CLAIM_TTL_MS: u64 = 1_000;
const EPOCH_MS: u64 = 1_000;
/// Accepted requests wait, journaled, up to two sends before a change
/// holds them (production's default is two sync intervals).
const INTAKE_FLUSH_MS: u64 = 2 * SEND_EVERY_MS;
/// How long documents are kept after they last changed (the replica's
/// rule): runs last three times this.
const RETAIN_MS: u64 = TTL_MS + 2 * CLAIM_TTL_MS + EPOCH_MS;
const READY_GRACE_MS: u64 = 2_000;
const MAX_SKEW_MS: u64 = 1_000;
/// After healing and fresh traffic, one digest everywhere within this.
const CONVERGE_WITHIN_MS: u64 = 20_000;
/// Traffic clusters within this many degrees (about 2 km) of region
/// corners.
const SPREAD_DEG: f64 = 0.02;

/// What a run is allowed to keep across a crash: the shipped node keeps
/// its journal; `Forgetful` is the defect the journal fixes (a restarted
/// node with its old id and nothing it wrote), kept to show that the
/// checks catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Memory {
    Journal,
    Forgetful,
}

/// How clients load the mesh. `Steady` is a trickle that every node keeps
/// up with. `Overload` floods it in bursts while one node runs its group
/// commit and reads its peers five times slower than the rest, and every
/// node sheds past small admission limits (what the shipped node does,
/// with its flags turned down): what is shed is never acknowledged, and
/// what is acknowledged must keep every promise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Traffic {
    Steady,
    Overload,
}

/// In `Overload`, the slow node works one tick in this many.
const SLOW_EVERY_TICKS: u64 = 5;
/// In `Overload`, bursts of this many posts per tick, for the first
/// `BURST_MS` of every `BURST_EVERY_MS`.
const BURST_POSTS: usize = 8;
const BURST_MS: u64 = 500;
const BURST_EVERY_MS: u64 = 5_000;

fn overload_limits() -> Limits {
    Limits {
        max_queue: 8,
        max_mesh_lag: Duration::from_millis(1_500),
        // The round's time is wall-clock time: never a decision here.
        max_round: Duration::MAX,
    }
}

const PICKUP_KM: f64 = 5.0;

/// What a node received from its peers: bytes of messages (as the wire
/// encodes them) and records of other owners.
#[derive(Debug, Clone, Copy, Default)]
struct Received {
    bytes: usize,
    records: usize,
}

struct Link {
    up: bool,
    queue: VecDeque<(Millis, PeerMessage)>,
}

/// A node process: its core, its hub with one client socket watching
/// everything accepted here (as the bot does), and its data folder.
struct Process {
    core: Node,
    hub: Hub,
    socket: u64,
    frames: mpsc::Receiver<axum::extract::ws::Utf8Bytes>,
    /// Requests submitted here, not yet durable.
    waiting: Vec<(RequestId, Millis, Scope, Durable)>,
    /// Riders told on this socket (a socket is told each match once).
    told: HashSet<RequestId>,
}

struct SimNode {
    id: NodeId,
    region: String,
    dir: tempfile::TempDir,
    /// This node's clock minus the simulation's.
    offset_ms: i64,
    /// Steps happen when (its clock + phase) is a multiple of the step.
    phase_ms: u64,
    process: Option<Process>,
    down_until: Millis,
    incarnation: u64,
}

impl SimNode {
    fn clock(&self, now: Millis) -> Millis {
        Millis(now.0.saturating_add_signed(self.offset_ms))
    }
}

/// The trace being recorded, and what it needs to notice readiness and
/// dropped documents.
struct Tracer {
    events: Vec<TraceEvent>,
    ready: Vec<bool>,
    docs: Vec<BTreeSet<DocId>>,
}

struct Sim {
    world: Arc<World>,
    tracer: Option<Tracer>,
    rng: StdRng,
    now: Millis,
    memory: Memory,
    traffic: Traffic,
    /// Posts refused at the door (`Overload` only).
    shed: usize,
    nodes: Vec<SimNode>,
    links: BTreeMap<(usize, usize), Link>,
    /// Links over which the sender has had the receiver's hello (as a
    /// session's start does), and pairs of regions too far apart to keep
    /// a session.
    joined: HashSet<(usize, usize)>,
    distant: HashSet<(usize, usize)>,
    check: Checker,
    /// By node: what peers' messages brought it.
    received: Vec<Received>,
    cross_border: usize,
    /// Requests nodes read back from their journals at restart, answered
    /// 202 before any document held them.
    reloaded: u64,
    converged_after_ms: u64,
}

/// What a forgetful node keeps across a restart: its owner identity, and
/// nothing it wrote under it.
fn forget_all_but_the_owner(dir: &std::path::Path) {
    for entry in std::fs::read_dir(dir).expect("the node's folder").flatten() {
        if entry.file_name() != "owner" {
            std::fs::remove_file(entry.path()).expect("a journal file removed");
        }
    }
}

fn node_id(i: usize) -> NodeId {
    NodeId(format!("region-{i}"))
}

fn replica_config(i: usize, world: &World, incarnation: u64, memory: Memory) -> ReplicaConfig {
    ReplicaConfig {
        node: node_id(i),
        region: world.region_of(i).id.clone(),
        layout: Arc::clone(&world.layout),
        incarnation,
        request_ttl_ms: TTL_MS,
        claim_ttl_ms: CLAIM_TTL_MS,
        epoch_ms: EPOCH_MS,
        intake_flush_ms: INTAKE_FLUSH_MS,
        max_pickup_km: PICKUP_KM,
        match_interval_ms: STEP_EVERY_MS,
        ready_grace_ms: READY_GRACE_MS,
        hooks: Hooks {
            observe: true,
            relearn_own_documents: memory == Memory::Forgetful,
        },
    }
}

const RETENTION: Retention = Retention {
    ms: 60_000,
    max_matches: 100_000,
};

impl Sim {
    fn new(seed: u64, nodes: usize, memory: Memory, traffic: Traffic) -> Self {
        Self::on(World::shipped(), seed, nodes, memory, traffic)
    }

    fn on(world: Arc<World>, seed: u64, nodes: usize, memory: Memory, traffic: Traffic) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        // Clock offsets: all within the bound, or some far beyond it.
        let spread: i64 = [0, 400, 3_000, 15_000][rng.random_range(0..4)];
        let now = Millis(1_800_000_000_000);
        let count = nodes;
        let nodes = (0..count)
            .map(|i| SimNode {
                id: node_id(i),
                region: world.region_of(i).id.clone(),
                dir: tempfile::tempdir().expect("a temporary folder"),
                // Whole ticks, so that every node's clock meets its steps.
                offset_ms: rng.random_range(-spread..=spread) / TICK_MS as i64 * TICK_MS as i64,
                phase_ms: rng.random_range(0..STEP_EVERY_MS / TICK_MS) * TICK_MS,
                process: None,
                down_until: Millis(0),
                incarnation: 0,
            })
            .collect();
        let mut sim = Sim {
            world,
            tracer: None,
            rng,
            now,
            memory,
            traffic,
            shed: 0,
            nodes,
            links: BTreeMap::new(),
            joined: HashSet::new(),
            distant: HashSet::new(),
            check: Checker::default(),
            received: vec![Received::default(); count],
            cross_border: 0,
            reloaded: 0,
            converged_after_ms: 0,
        };
        let n = sim.nodes.len();
        for a in 0..n {
            for b in 0..n {
                if a != b {
                    sim.links.insert(
                        (a, b),
                        Link {
                            up: true,
                            queue: VecDeque::new(),
                        },
                    );
                }
            }
        }
        for i in 0..n {
            sim.boot(i);
        }
        sim
    }

    /// Starts node `i` from its data folder, as `server::start` does.
    fn boot(&mut self, i: usize) {
        let entropy = Entropy::seeded(self.rng.random());
        let node = &mut self.nodes[i];
        node.incarnation += 1;
        let clock = node.clock(self.now);
        let config = replica_config(i, &self.world, node.incarnation, self.memory);
        if self.memory == Memory::Forgetful {
            forget_all_but_the_owner(node.dir.path());
        }
        let core = Node::open(
            node.dir.path(),
            &node.id,
            config,
            RETENTION,
            Duration::from_millis(MAX_SKEW_MS),
            Durability::PageCache,
            clock,
            entropy,
        )
        .expect("a node opens its own journal");
        let core = match self.traffic {
            Traffic::Steady => core,
            Traffic::Overload => core.with_limits(overload_limits()),
        };
        let peers: Vec<NodeId> = (0..self.nodes.len())
            .filter(|&p| p != i)
            .map(node_id)
            .collect();
        core.expect_peers(&peers);
        let hub = Hub::default();
        let (socket, frames) = hub.connect();
        let node = &mut self.nodes[i];
        node.process = Some(Process {
            core,
            hub,
            socket,
            frames,
            waiting: Vec::new(),
            told: HashSet::new(),
        });
        self.trace_boot(i);
        // What it held before, it holds again: every request it answered
        // 202 for and that has not expired.
        let process = self.nodes[i].process.as_ref().expect("just booted");
        self.reloaded += process.core.snapshot(clock).stats.intake_reloaded;
        let owner = process.core.owner();
        let owed = self
            .check
            .acked
            .iter()
            .filter(|(_, acked)| {
                acked.node == i && acked.owner == owner && acked.expires_at > clock
            })
            .map(|(id, _)| id);
        for id in history::lost(owed, |id| fate(&process.core.status(id, clock))) {
            self.check.violations.push(format!(
                "node {i} restarted without request {id} it had accepted"
            ));
        }
    }

    /// Traces node `i`'s start (when tracing).
    fn trace_boot(&mut self, i: usize) {
        if self.tracer.is_none() {
            return;
        }
        let Some(process) = &self.nodes[i].process else {
            return;
        };
        let owner = process.core.owner();
        let loaded = process.core.take_observed();
        self.check.observe(loaded.clone());
        let tracer = self.tracer.as_mut().expect("tracing");
        tracer.ready[i] = false;
        tracer.docs[i] = loaded.iter().map(|(doc, _)| doc.clone()).collect();
        tracer.events.push(TraceEvent::Boot {
            node: i,
            owner,
            loaded,
        });
    }

    /// Traces what node `i` absorbed since last asked (when tracing).
    fn trace_absorbed(&mut self, i: usize, from: Option<usize>) {
        let (Some(tracer), Some(process)) = (&mut self.tracer, &self.nodes[i].process) else {
            return;
        };
        let records = process.core.take_observed();
        if records.is_empty() {
            return;
        }
        self.check.observe(records.clone());
        tracer.docs[i].extend(records.iter().map(|(doc, _)| doc.clone()));
        tracer.events.push(TraceEvent::Absorbed {
            node: i,
            from,
            records,
        });
    }

    fn crash(&mut self, i: usize, empty_disk: bool) {
        self.trace_absorbed(i, None);
        if self.nodes[i].process.take().is_none() {
            return;
        }
        if let Some(tracer) = &mut self.tracer {
            tracer.events.push(TraceEvent::Crash {
                node: i,
                wipe: empty_disk,
            });
        }
        let node = &mut self.nodes[i];
        if empty_disk {
            node.dir = tempfile::tempdir().expect("a temporary folder");
        } else if self.rng.random_bool(0.5) {
            journal::tear_last_write(node.dir.path());
        }
        node.down_until = self.now.plus(self.rng.random_range(200..3_000));
        self.joined.retain(|(a, b)| *a != i && *b != i);
        for p in 0..self.nodes.len() {
            if p != i {
                for key in [(i, p), (p, i)] {
                    self.links.get_mut(&key).expect("link").queue.clear();
                }
                if let Some(process) = &self.nodes[p].process {
                    process.core.peer_lost(&node_id(i));
                }
            }
        }
    }

    /// Traces node `i` becoming ready and the documents it dropped, around
    /// what its step wrote (when tracing).
    fn trace_step(&mut self, i: usize, clock: Millis) {
        let (Some(tracer), Some(process)) = (&mut self.tracer, &self.nodes[i].process) else {
            return;
        };
        if !tracer.ready[i] && process.core.snapshot(clock).ready {
            tracer.ready[i] = true;
            tracer.events.push(TraceEvent::Ready { node: i });
        }
        self.trace_absorbed(i, None);
        let (Some(tracer), Some(process)) = (&mut self.tracer, &self.nodes[i].process) else {
            return;
        };
        let held: BTreeSet<DocId> = process
            .core
            .inventory()
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        let dropped: Vec<DocId> = tracer.docs[i].difference(&held).cloned().collect();
        if !dropped.is_empty() {
            tracer.docs[i].retain(|d| held.contains(d));
            tracer.events.push(TraceEvent::Dropped {
                node: i,
                docs: dropped,
            });
        }
    }

    /// Node `i`'s matcher task: a step, then publishing what it learnt.
    fn step_node(&mut self, i: usize) {
        let clock = self.nodes[i].clock(self.now);
        let Some(process) = &mut self.nodes[i].process else {
            return;
        };
        let made = process.core.step(clock).expect("honest writes never fail");
        self.trace_step(i, clock);
        let Some(process) = &mut self.nodes[i].process else {
            return;
        };
        process.hub.publish(&made);
        self.check.observe(process.core.take_observed());
        let mut told = Vec::new();
        while let Ok(frame) = process.frames.try_recv() {
            let Ok(ServerMessage::Match(m)) = serde_json::from_str(frame.as_str()) else {
                continue;
            };
            let (rider, driver) = (RequestId(m.rider_id), RequestId(m.driver_id));
            if !process.told.insert(rider) {
                self.check.violations.push(format!(
                    "node {i} told one socket of rider {rider}'s match twice"
                ));
            }
            told.push((rider, driver));
        }
        for m in &made {
            let own = m.committed_by.node_of_owner() == node_id(i);
            if own && m.rider_owner.node_of_owner() != m.driver_owner.node_of_owner() {
                self.cross_border += 1;
            }
        }
        for (rider, driver) in told {
            self.check.told(i, rider, driver);
        }
    }

    fn tick(&mut self, with_traffic: bool, with_chaos: bool) {
        self.now = self.now.plus(TICK_MS);
        if with_traffic {
            self.traffic();
        }
        if with_chaos {
            self.chaos();
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].process.is_none() && self.now >= self.nodes[i].down_until {
                self.boot(i);
            }
        }
        self.deliver();
        for i in 0..self.nodes.len() {
            self.commit_and_answer(i);
        }
        if self.now.0.is_multiple_of(SEND_EVERY_MS) {
            self.send();
        }
        for i in 0..self.nodes.len() {
            let node = &self.nodes[i];
            if (node.clock(self.now).0 + node.phase_ms).is_multiple_of(STEP_EVERY_MS) {
                self.step_node(i);
            }
        }
    }

    /// Every node up and ready, and in step with every other.
    fn converged(&self) -> bool {
        let states: Vec<Option<(&str, Snapshot)>> = self
            .nodes
            .iter()
            .map(|n| {
                let state = n.process.as_ref()?.core.snapshot(n.clock(self.now));
                Some((n.region.as_str(), state))
            })
            .collect();
        ready_and_in_step(&states)
    }

    /// The checks at the end of a run, every node up and every link healed
    /// for a while.
    fn check(&mut self) {
        self.check.check_commits();
        let now = self.now;
        for (i, node) in self.nodes.iter().enumerate() {
            let process = node.process.as_ref().expect("every node is up");
            let state = process.core.snapshot(node.clock(now));
            if state.conflicting_commits > 0 {
                self.check.violations.push(format!(
                    "node {i} learnt {} conflicting commits",
                    state.conflicting_commits
                ));
            }
        }
        // No acknowledged request lost: until it expires, every node of its
        // scope knows it (requests of an owner whose disk was lost are exempt only if
        // that owner never got to replicate them, which the owner check at
        // restart and this one together bound).
        let owners: HashSet<NodeId> = self
            .nodes
            .iter()
            .map(|n| n.process.as_ref().expect("up").core.owner())
            .collect();
        let owed: Vec<(&RequestId, &Acked)> = self
            .check
            .acked
            .iter()
            .filter(|(_, acked)| {
                acked.expires_at > self.nodes[acked.node].clock(now)
                    && owners.contains(&acked.owner)
            })
            .collect();
        for (i, node) in self.nodes.iter().enumerate() {
            let clock = node.clock(now);
            let process = node.process.as_ref().expect("up");
            let region = self
                .world
                .layout
                .index_of(&node.region)
                .expect("in the layout");
            let owed_here = owed
                .iter()
                .copied()
                .filter(|(_, a)| a.scope.contains(region));
            let lost = history::lost(owed_here, |(id, _)| fate(&process.core.status(id, clock)));
            for (id, acked) in lost {
                self.check.violations.push(format!(
                    "node {i} does not know request {id} that node {} accepted",
                    acked.node
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests;
