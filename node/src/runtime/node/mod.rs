//! The node's core as its tasks share it: the replication and matching
//! protocol ([`Replica`]) plus the log of committed matches that websockets,
//! ratings and operators read.
//!
//! A 202 is a promise, so an accepted request is durable before it is
//! answered: intake hands the request over through a lock-free queue and
//! waits for the group commit that journals it ([`Node::run_flusher`]
//! wakes on every arrival, moves a bounded batch of queued requests in under
//! the lock, appends them to the journal as plain records, and syncs the
//! journal once with the lock released, so that intake, mesh sessions and
//! readers never queue behind the disk). Automerge comes later: the replica
//! writes journaled requests into its documents at most every
//! `--intake-flush-interval`, many group commits to one change
//! ([`crate::protocol::codec`]). Nothing leaves the node before it is durable: sync
//! messages and the step that tells websockets of commits first run a sync
//! that covers every write not yet durable ([`Replica::take_sync`]), also
//! with the lock released.
//!
//! The matching round itself runs on a snapshot, outside the lock
//! ([`Node::step`]), so intake's group commits, mesh sessions and
//! readers never wait for a round.
//!
//! A node without peers is simply a mesh of one: the same protocol runs.

mod dashboard;
mod group_commit;
mod pacer;
mod peers;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use pacer::CommitPacer;
use parking_lot::{Condvar, Mutex, MutexGuard};
use thiserror::Error;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::disk::journal::{self, Durability, Journal, JournalError, PendingSync};
use crate::disk::match_log::{MatchLog, MatchLogError};
use crate::net::peer_sync::{PeerSync, SyncError};
use crate::protocol::fare;
use crate::protocol::intake::{NewDriver, NewRider};
use crate::protocol::ledger::Owned;
pub(crate) use crate::protocol::message::Ticket;
use crate::protocol::message::{PeerMessage, PeerMessageV1, PeerStatus};
use crate::protocol::record::CommitRecord;
use crate::protocol::replica::{Replica, ReplicaConfig, ReplicaError, ReplicaStats};
use crate::runtime::admission::{Limits, Load, Overload};
use crate::runtime::availability::{Availability, PeerSighting, Timing};
use crate::runtime::peer_board::{PeerBoard, RateMeter};
use crate::runtime::recent_matches::{Inserted, Match, RecentMatches, Retention};
use ride_types::api::PeerClock;
use ride_types::clock::Millis;
use ride_types::geodesy::haversine_km;
use ride_types::halo::{OwnHalo, Scope};
use ride_types::ids::{Entropy, NodeId, RequestId};

/// How often a node tells each peer its status.
const STATUS_INTERVAL_MS: u64 = 1_000;

/// Most requests one group commit moves in: bounds how long it holds the
/// lock (each costs an automerge write), whatever the backlog.
const MAX_COMMIT_BATCH: usize = 1_024;

/// Most pairs of a round committed under one hold of the lock: a round's
/// thousands of commits would otherwise stall intake for tens of ms. The
/// pairs of a round are disjoint, and each chunk checks its pairs against
/// the state of the moment, so splitting a round changes nothing it
/// decides.
const ROUND_CHUNK: usize = 128;

/// Resolves once an accepted request is journaled; an error means it was
/// not (the journal failed) and the request must be refused.
pub(crate) type Durable = oneshot::Receiver<()>;

/// Where a request stands, as this node knows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Status {
    Pending,
    Matched(Arc<Match>),
    /// Known here, but expired (or committed and no longer retained).
    Over,
    Unknown,
}

/// What `/debug/state` shows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Snapshot {
    pub owner: String,
    pub pending_riders: usize,
    pub pending_drivers: usize,
    /// Of those, the ones this node accepted: summed over every node, each
    /// pending request counts once (nodes of different regions hold
    /// different requests).
    pub own_pending: (usize, usize),
    pub committed_matches: usize,
    pub open_claims: usize,
    pub documents: usize,
    /// Bytes of the records the documents hold.
    pub document_bytes: u64,
    pub digest: u64,
    /// Per region id, the digest of what this node shares with it.
    pub digests: BTreeMap<String, u64>,
    pub ready: bool,
    pub stats: ReplicaStats,
    pub peers: Vec<PeerClock>,
    /// Commits learnt twice (recorded once), and commits that named another
    /// partner for someone already matched (never told).
    pub duplicate_commits: u64,
    pub conflicting_commits: u64,
}

/// Why the node's state could not open, or take a step: the protocol
/// refused, or the journal failed.
#[derive(Debug, Error)]
pub enum CoreError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error(transparent)]
    MatchLog(#[from] MatchLogError),
}

impl From<CoreError> for SyncError {
    fn from(error: CoreError) -> Self {
        SyncError::new(error)
    }
}

impl From<ReplicaError> for SyncError {
    fn from(error: ReplicaError) -> Self {
        SyncError::new(error)
    }
}

/// An accepted request on its way to the group commit, already scoped.
enum Arrival {
    Rider(RequestId, NewRider, Scope, Millis, oneshot::Sender<()>),
    Driver(RequestId, NewDriver, Scope, Millis, oneshot::Sender<()>),
}

struct State {
    replica: Replica,
    /// Where what the replica queues for the disk goes
    /// ([`crate::protocol::persist`]).
    journal: Journal,
    matches: RecentMatches,
    arrivals: Receiver<Arrival>,
    /// Commits learnt and not yet told: waiting for the sync that makes
    /// them durable (within a step), or for their rider or driver record
    /// (documents sync independently; retried every step).
    unresolved: Vec<Owned<CommitRecord>>,
    /// Peers as operators see them, and this node's own rates.
    board: PeerBoard,
    intake_rate: RateMeter,
    commit_rate: RateMeter,
    status_sent: HashMap<NodeId, Millis>,
    /// Per peer, its last status's `sent_at` and this node's clock on
    /// receipt: echoed back, for the peer's offset measurement.
    status_heard: HashMap<NodeId, (Millis, Millis)>,
    /// Per connected peer, the last round trip of a status through both
    /// streams, in ms: the mesh lag that admission bounds.
    round_trips: HashMap<NodeId, f64>,
    duplicate_commits: u64,
    conflicting_commits: u64,
}

/// Wakes the flusher when requests arrive.
#[derive(Default)]
struct Wake {
    pending: Mutex<bool>,
    signal: Condvar,
}

pub(crate) struct Node {
    state: Mutex<State>,
    intake: Sender<Arrival>,
    /// What admission control reads without the lock, and its bounds.
    load: Load,
    limits: Limits,
    wake: Wake,
    request_ttl_ms: u64,
    max_clock_skew_ms: u64,
    /// Scopes requests at intake, outside the lock.
    own_halo: OwnHalo,
    /// Which regions are down and which this node serves, read by intake
    /// without the lock.
    availability: Arc<Availability>,
    /// The random bits of the ids this node makes.
    entropy: Entropy,
    /// The retained matches on disk, written by the step task alone.
    match_log: Mutex<MatchLog<Match>>,
}

impl Node {
    /// A core around `replica`; peers whose clocks differ from this node's
    /// by more than `max_clock_skew` are reported.
    /// `logged` are the matches `match_log` held at start: retained again
    /// as long as the retention says, whatever the documents still hold.
    pub(crate) fn new(
        replica: Replica,
        journal: Journal,
        (match_log, logged): (MatchLog<Match>, Vec<Match>),
        retention: Retention,
        max_clock_skew: Duration,
    ) -> Self {
        let (intake, arrivals) = mpsc::channel();
        let mut matches = RecentMatches::new(retention);
        for m in logged {
            matches.insert(Arc::new(m));
        }
        Self {
            match_log: Mutex::new(match_log),
            availability: Arc::new(Availability::fixed(replica.layout(), replica.own_region())),
            request_ttl_ms: replica.request_ttl_ms(),
            own_halo: replica.own_halo(),
            max_clock_skew_ms: u64::try_from(max_clock_skew.as_millis()).unwrap_or(u64::MAX),
            state: Mutex::new(State {
                replica,
                journal,
                matches,
                arrivals,
                unresolved: Vec::new(),
                board: PeerBoard::default(),
                intake_rate: RateMeter::default(),
                commit_rate: RateMeter::default(),
                status_sent: HashMap::new(),
                status_heard: HashMap::new(),
                round_trips: HashMap::new(),
                duplicate_commits: 0,
                conflicting_commits: 0,
            }),
            intake,
            load: Load::default(),
            limits: Limits::default(),
            wake: Wake::default(),
            entropy: Entropy::Os,
        }
    }

    /// The same core, making its ids from `entropy` (the simulation's seed).
    pub(crate) fn with_entropy(mut self, entropy: Entropy) -> Self {
        self.entropy = entropy;
        self
    }

    /// The same core, judging its neighbour regions from `now` on and
    /// adopting those that go down (see [`crate::runtime::availability`]).
    pub(crate) fn with_adoption(mut self, timing: Timing, now: Millis) -> Self {
        let (layout, own) = (
            Arc::clone(self.availability.layout()),
            self.availability.own(),
        );
        self.availability = Arc::new(Availability::watching(layout, own, timing, now));
        metrics::gauge!("ride_regions_down").set(0.0);
        metrics::gauge!("ride_regions_served").set(1.0);
        self
    }

    /// Which regions are down, which this node serves, and where a request
    /// goes.
    pub(crate) fn availability(&self) -> &Availability {
        &self.availability
    }

    /// The same core, shedding intake past `limits` ([`Node::admit`]).
    pub(crate) fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Whether one more request may be accepted now: refused past any of
    /// the limits, without taking the lock.
    pub(crate) fn admit(&self) -> Result<(), Overload> {
        self.load.admit(&self.limits)
    }

    /// The core of a node whose own documents live in `dir`: they are
    /// loaded from the journal there, and everything the node writes is
    /// journaled there before anyone sees it. A node whose journal is gone
    /// writes as a new owner (see [`journal::open_owner`]): `config.node`
    /// is replaced by that owner identity.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open(
        dir: &Path,
        node: &NodeId,
        mut config: ReplicaConfig,
        retention: Retention,
        max_clock_skew: Duration,
        durability: Durability,
        now: Millis,
        entropy: Entropy,
    ) -> Result<Self, CoreError> {
        let (owner, fresh) = journal::open_owner(dir, node, &entropy)?;
        if fresh {
            tracing::info!(%owner, "no journal: writing as a new owner");
        }
        let (journal, loaded) = Journal::open(dir, durability)?;
        let match_log = MatchLog::open(dir)?;
        config.node = owner;
        let replica = Replica::open(config, loaded, now)?;
        tracing::info!(
            owner = %replica.node(),
            documents = replica.document_count(),
            commits = replica.ledger().commits().count(),
            requests_reloaded = replica.stats().intake_reloaded,
            "own documents loaded"
        );
        Ok(Self::new(replica, journal, match_log, retention, max_clock_skew).with_entropy(entropy))
    }

    /// The identity this node writes as.
    pub(crate) fn owner(&self) -> NodeId {
        self.lock().replica.node().clone()
    }

    /// Every record the core absorbed since the last call (only with
    /// [`ReplicaConfig::observe`]): what the simulation checks.
    #[cfg(test)]
    pub(crate) fn take_observed(&self) -> Vec<crate::protocol::documents::Change> {
        self.lock().replica.take_observed()
    }

    /// Every document held and its heads, for the simulation's reports.
    #[cfg(test)]
    pub(crate) fn inventory(&self) -> crate::protocol::documents::Inventory {
        self.lock().replica.inventory()
    }

    /// When [`Node::step`] has work next.
    pub(crate) fn poll_timeout(&self) -> Millis {
        self.lock().replica.poll_timeout()
    }

    /// Time passes (see [`Replica::handle_timeout`]): the round, when one
    /// is due, runs outside the lock. Returns the matches this node learnt
    /// of, each once, already recorded for late subscribers and ratings.
    pub(crate) fn step(&self, now: Millis) -> Result<Vec<Arc<Match>>, CoreError> {
        self.judge_regions(now);
        let round = self.lock().replica.handle_timeout(now)?;
        if let Some(input) = round {
            let started = std::time::Instant::now();
            let pairs = input.run();
            for chunk in pairs.chunks(ROUND_CHUNK) {
                self.lock().replica.complete_round(&input, chunk, now)?;
            }
            self.load.set_round(started.elapsed());
        }
        // A commit is told only once durable: the commits learnt so far wait
        // (among the unresolved, still watched) while the sync taken with
        // them, which covers every write not yet durable, runs outside the
        // lock. Only this task adds to them meanwhile.
        let sync = {
            let mut state = self.lock();
            let commits = state.replica.take_commits();
            state.unresolved.extend(commits);
            state.take_sync()?
        };
        if let Some(sync) = sync {
            sync.run()?;
        }
        // Told in chunks too, each under its own hold of the lock: a round
        // at 20k requests/s commits thousands. A commit stays among the
        // unresolved until the hold that records it, so it is pending to
        // every reader until it is in the match log.
        let mut left = {
            let mut state = self.lock();
            state.matches.prune(now);
            state.unresolved.len()
        };
        let mut made = Vec::new();
        while left > 0 {
            let mut state = self.lock();
            let State {
                replica,
                matches,
                unresolved,
                commit_rate,
                duplicate_commits,
                conflicting_commits,
                ..
            } = &mut *state;
            let n = left.min(ROUND_CHUNK);
            left -= n;
            let chunk: Vec<_> = unresolved.drain(..n).collect();
            for commit in chunk {
                match to_match(replica, &commit) {
                    Some(m) => {
                        let m = Arc::new(m);
                        match matches.insert(Arc::clone(&m)) {
                            Inserted::New => {
                                if m.committed_by == *replica.node() {
                                    commit_rate.add(1);
                                }
                                made.push(m);
                            }
                            Inserted::Duplicate => *duplicate_commits += 1,
                            Inserted::Conflict => {
                                *conflicting_commits += 1;
                                tracing::error!(rider = %m.rider.id, driver = %m.driver.id, committed_by = %m.committed_by, "a commit names another partner for someone already matched; not told");
                            }
                        }
                    }
                    // Kept until its records arrive or its documents are dropped.
                    None if commit.record.committed_at.plus(replica.request_ttl_ms()) > now => {
                        unresolved.push(commit);
                    }
                    None => {}
                }
            }
        }
        self.log_matches(&made);
        Ok(made)
    }

    /// Writes the matches made to the match log, and rewrites it once most
    /// of what it holds is no longer retained. A failure costs only the
    /// retention across a restart (the documents hold every match), so it
    /// is reported, not fatal.
    fn log_matches(&self, made: &[Arc<Match>]) {
        let mut log = self.match_log.lock();
        let mut written = log.append(made.iter().map(|m| &**m));
        let retained = self.lock().matches.len();
        if written.is_ok() && log.wants_rewrite(retained) {
            let all: Vec<Arc<Match>> = self.lock().matches.all().cloned().collect();
            written = log.rewrite(all.iter().map(|m| &**m));
        }
        if let Err(e) = written {
            tracing::warn!(error = %e, "matches not logged: a restart may forget them sooner");
        }
    }

    pub(crate) fn status(&self, id: &RequestId, now: Millis) -> Status {
        let state = self.lock();
        if let Some(m) = state.matches.get(id) {
            Status::Matched(Arc::clone(m))
        } else if state.replica.is_pending(id, now) || awaits_telling(&state, id) {
            Status::Pending
        } else if state.replica.knows(id) {
            Status::Over
        } else {
            Status::Unknown
        }
    }

    /// Which of `ids` are still pending (or matched and about to be told).
    pub(crate) fn still_pending(&self, ids: &[RequestId], now: Millis) -> Vec<bool> {
        let state = self.lock();
        ids.iter()
            .map(|id| state.replica.is_pending(id, now) || awaits_telling(&state, id))
            .collect()
    }

    /// The retained match of a rider or a driver.
    pub(crate) fn match_of(&self, id: &RequestId) -> Option<Arc<Match>> {
        self.lock().matches.get(id).cloned()
    }

    /// The most recent matches, newest first.
    pub(crate) fn recent_matches(&self, limit: usize) -> Vec<Arc<Match>> {
        self.lock().matches.recent(limit).cloned().collect()
    }

    pub(crate) fn snapshot(&self, now: Millis) -> Snapshot {
        let mut state = self.lock();
        let (pending_riders, pending_drivers) = state.replica.pending_counts(now);
        let peers = state
            .board
            .iter()
            .map(|(peer, view)| PeerClock {
                node: peer.0.clone(),
                reachable: view.connected,
                in_sync: state.replica.is_synced_with(peer),
                clock_offset_ms: view.clock_offset_ms,
                clock_skewed: self.is_skewed(view.clock_offset_ms),
            })
            .collect();
        Snapshot {
            owner: state.replica.node().0.clone(),
            pending_riders,
            pending_drivers,
            own_pending: state.replica.own_pending_counts(now),
            committed_matches: state.matches.len(),
            open_claims: state.replica.open_claims(now),
            documents: state.replica.document_count(),
            document_bytes: state.replica.record_bytes(),
            digest: state.replica.digest(),
            digests: state.replica.digests(),
            ready: state.replica.is_ready(),
            stats: state.replica.stats(),
            peers,
            duplicate_commits: state.duplicate_commits,
            conflicting_commits: state.conflicting_commits,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    fn ticket(&self, id: RequestId, now: Millis) -> Ticket {
        Ticket {
            id,
            expires_at: now.plus(self.request_ttl_ms),
        }
    }
}

/// `id` is committed, but its match is not in the match log yet: a step
/// publishes commits only once they are durable, outside the lock that
/// wrote them, and a commit waits there for its records if they have not
/// arrived. Such a request is neither pending nor over: a subscriber is
/// watching it until it is told.
fn awaits_telling(state: &State, id: &RequestId) -> bool {
    state.replica.ledger().is_fresh_commit(id)
        || state
            .unresolved
            .iter()
            .any(|c| c.record.rider == *id || c.record.driver == *id)
}

/// A commit, with what the rider and the driver are told.
fn to_match(replica: &Replica, commit: &Owned<CommitRecord>) -> Option<Match> {
    let ledger = replica.ledger();
    let c = &commit.record;
    let rider = ledger.rider(&c.rider)?;
    let driver = ledger.driver(&c.driver)?;
    let trip_km = haversine_km(rider.record.position, rider.record.destination);
    Some(Match {
        rider: rider.record.clone(),
        rider_owner: rider.owner.clone(),
        driver: driver.record.clone(),
        driver_owner: driver.owner.clone(),
        pickup_km: c.pickup_km,
        trip_km,
        fare_taka: fare::fare_taka(trip_km),
        region: c.region.clone(),
        committed_by: commit.owner.clone(),
        committed_at: c.committed_at,
    })
}

#[cfg(test)]
mod tests;
