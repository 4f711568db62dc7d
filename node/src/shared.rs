//! The node's core as its tasks share it: the replication and matching
//! protocol ([`Replica`]) plus the log of committed matches that websockets,
//! ratings and operators read.
//!
//! Intake never takes the core's lock: an accepted request gets its id and
//! expiry at once and is handed over through a lock-free queue. Whoever locks
//! the core next (the matcher, the mesh, a subscription) first moves the
//! queued requests in, so every reader sees every request accepted before
//! it locked, and intake latency never depends on how long a matching round
//! or a replication batch holds the lock.
//!
//! A node without peers is simply a mesh of one: the same protocol runs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};

use parking_lot::{Mutex, MutexGuard};

use crate::clock::Millis;
use crate::fare;
use crate::geodesy::haversine_km;
use crate::ids::{NodeId, RequestId};
use crate::intake::{NewDriver, NewRider};
use crate::matches::{Match, MatchLog, Retention};
use crate::mesh::ledger::Owned;
use crate::mesh::record::CommitRecord;
pub use crate::mesh::replica::MIN_REQUEST_TTL_MS;
use crate::mesh::replica::{
    PeerMessage, PeerMessageV1, PeerStatus, Replica, ReplicaError, ReplicaStats,
};
use crate::mesh::transport::SyncCore;
use crate::peer_board::{PeerBoard, RateMeter};
use crate::wire::{DashboardClaim, DashboardFrame, DashboardMatch, NodePanel, Position};

/// How often a node tells each peer its status.
const STATUS_INTERVAL_MS: u64 = 1_000;

/// The answer to an accepted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub id: RequestId,
    pub expires_at: Millis,
}

/// Where a request stands, as this node knows it.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    Pending,
    Matched(Arc<Match>),
    /// Known here, but expired (or committed and no longer retained).
    Over,
    Unknown,
}

/// What `/debug/state` shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub pending_riders: usize,
    pub pending_drivers: usize,
    pub committed_matches: usize,
    pub open_claims: usize,
    pub documents: usize,
    /// Bytes of the records the documents hold.
    pub document_bytes: u64,
    pub digest: u64,
    pub ready: bool,
    pub stats: ReplicaStats,
}

enum Arrival {
    Rider(RequestId, NewRider, Millis),
    Driver(RequestId, NewDriver, Millis),
}

struct State {
    replica: Replica,
    matches: MatchLog,
    arrivals: Receiver<Arrival>,
    /// Peers heard from since start, until the node is ready.
    heard: HashSet<NodeId>,
    /// Commits whose rider or driver record has not arrived yet (documents
    /// sync independently); retried every step.
    unresolved: Vec<Owned<CommitRecord>>,
    /// Peers as operators see them, and this node's own rates.
    board: PeerBoard,
    intake_rate: RateMeter,
    commit_rate: RateMeter,
    status_sent: HashMap<NodeId, Millis>,
}

pub struct NodeCore {
    state: Mutex<State>,
    intake: Sender<Arrival>,
    request_ttl_ms: u64,
    peers: usize,
}

impl NodeCore {
    /// `peers` is how many peers the node has; without any, it is ready at
    /// once, else once it has heard from all of them (see
    /// [`NodeCore::set_ready`] for the fallback).
    pub fn new(replica: Replica, retention: Retention, peers: usize) -> Self {
        let (intake, arrivals) = mpsc::channel();
        let mut replica = replica;
        if peers == 0 {
            replica.set_ready();
        }
        Self {
            request_ttl_ms: replica.request_ttl_ms(),
            state: Mutex::new(State {
                replica,
                matches: MatchLog::new(retention),
                arrivals,
                heard: HashSet::new(),
                unresolved: Vec::new(),
                board: PeerBoard::default(),
                intake_rate: RateMeter::default(),
                commit_rate: RateMeter::default(),
                status_sent: HashMap::new(),
            }),
            intake,
            peers,
        }
    }

    /// Accepts a rider without waiting for the core.
    pub fn submit_rider(&self, rider: NewRider, now: Millis) -> Ticket {
        let id = RequestId::generate();
        let _ = self.intake.send(Arrival::Rider(id, rider, now));
        self.ticket(id, now)
    }

    /// Accepts a driver without waiting for the core.
    pub fn submit_driver(&self, driver: NewDriver, now: Millis) -> Ticket {
        let id = RequestId::generate();
        let _ = self.intake.send(Arrival::Driver(id, driver, now));
        self.ticket(id, now)
    }

    /// One protocol step (see [`Replica::step`]); returns the matches this
    /// node learnt of, already recorded for late subscribers and ratings.
    pub fn step(&self, now: Millis) -> Result<Vec<Arc<Match>>, ReplicaError> {
        let mut state = self.lock();
        let mut learnt = std::mem::take(&mut state.unresolved);
        learnt.extend(state.replica.step(now)?);
        state.matches.prune(now);
        let State {
            replica,
            matches,
            unresolved,
            commit_rate,
            ..
        } = &mut *state;
        let mut made = Vec::new();
        for commit in learnt {
            match to_match(replica, &commit) {
                Some(m) => {
                    if m.committed_by == *replica.node() {
                        commit_rate.add(1);
                    }
                    let m = Arc::new(m);
                    matches.insert(Arc::clone(&m));
                    made.push(m);
                }
                // Kept until its records arrive or its documents are dropped.
                None if commit.record.committed_at.plus(replica.request_ttl_ms()) > now => {
                    unresolved.push(commit);
                }
                None => {}
            }
        }
        Ok(made)
    }

    pub fn status(&self, id: &RequestId, now: Millis) -> Status {
        let state = self.lock();
        if let Some(m) = state.matches.get(id) {
            Status::Matched(Arc::clone(m))
        } else if state.replica.is_pending(id, now) {
            Status::Pending
        } else if state.replica.knows(id) {
            Status::Over
        } else {
            Status::Unknown
        }
    }

    /// Which of `ids` are still pending.
    pub fn still_pending(&self, ids: &[RequestId], now: Millis) -> Vec<bool> {
        let state = self.lock();
        ids.iter()
            .map(|id| state.replica.is_pending(id, now))
            .collect()
    }

    /// The retained match of a rider or a driver.
    pub fn match_of(&self, id: &RequestId) -> Option<Arc<Match>> {
        self.lock().matches.get(id).cloned()
    }

    /// The most recent matches, newest first.
    pub fn recent_matches(&self, limit: usize) -> Vec<Arc<Match>> {
        self.lock().matches.recent(limit).cloned().collect()
    }

    pub fn snapshot(&self, now: Millis) -> Snapshot {
        let mut state = self.lock();
        let (pending_riders, pending_drivers) = state.replica.pending_counts(now);
        Snapshot {
            pending_riders,
            pending_drivers,
            committed_matches: state.matches.len(),
            open_claims: state.replica.open_claims(now),
            documents: state.replica.document_count(),
            document_bytes: state.replica.record_bytes(),
            digest: state.replica.digest(),
            ready: state.replica.is_ready(),
            stats: state.replica.stats(),
        }
    }

    /// Peers to show (as unreachable) before they are first heard from.
    pub fn expect_peers<'a>(&self, peers: impl IntoIterator<Item = &'a NodeId>) {
        let mut state = self.lock();
        for peer in peers {
            state.board.expect(peer);
        }
    }

    /// What the dashboard draws: pending requests, the newest `max_matches`
    /// matches, open claims, and every node's panel.
    pub fn dashboard(&self, now: Millis, max_matches: usize) -> DashboardFrame {
        let mut state = self.lock();
        let own = own_status(&mut state, now);
        let state = &*state;
        let replica = &state.replica;
        let region_of = |owner: &NodeId| -> String {
            if owner == replica.node() {
                replica.region().to_owned()
            } else {
                state.board.region_of(owner).unwrap_or("?").to_owned()
            }
        };
        let mut owners: Vec<String> = Vec::new();
        let mut owner_index = |owner: &NodeId| -> u16 {
            let region = region_of(owner);
            let index = owners.iter().position(|r| *r == region).unwrap_or_else(|| {
                owners.push(region);
                owners.len() - 1
            });
            u16::try_from(index).unwrap_or(u16::MAX)
        };
        let riders = replica
            .pending_riders(now)
            .map(|r| point(r.record.position, owner_index(&r.owner)))
            .collect();
        let drivers = replica
            .pending_drivers(now)
            .map(|d| point(d.record.position, owner_index(&d.owner)))
            .collect();
        let matches = state
            .matches
            .recent(max_matches)
            .map(|m| DashboardMatch {
                rider: lat_lon(m.rider.position),
                driver: lat_lon(m.driver.position),
                region: m.region.clone(),
                cross_border: region_of(&m.rider_owner) != region_of(&m.driver_owner),
            })
            .collect();
        let ledger = replica.ledger();
        let claims = replica
            .waiting_claims(now)
            .filter_map(|c| {
                Some(DashboardClaim {
                    rider: lat_lon(ledger.rider(&c.record.rider)?.record.position),
                    driver: lat_lon(ledger.driver(&c.record.driver)?.record.position),
                })
            })
            .collect();
        let mut nodes = vec![panel(replica.node(), &own, true, true, None)];
        for (peer, view) in state.board.iter() {
            let status = view.status.clone().unwrap_or_else(|| PeerStatus {
                region: "?".into(),
                ..PeerStatus::default()
            });
            nodes.push(panel(
                peer,
                &status,
                false,
                view.connected,
                view.lag_percentiles(),
            ));
        }
        DashboardFrame {
            node: replica.node().0.clone(),
            region: replica.region().to_owned(),
            at_ms: now.0,
            owners,
            riders,
            drivers,
            matches,
            claims,
            nodes,
        }
    }

    /// Lets the node decide even if some peer never answered (called after
    /// a grace period at start).
    pub fn set_ready(&self) {
        self.lock().replica.set_ready();
    }

    /// Locks the core, with every request accepted so far moved in.
    fn lock(&self) -> MutexGuard<'_, State> {
        let mut state = self.state.lock();
        let State {
            replica,
            arrivals,
            intake_rate,
            ..
        } = &mut *state;
        let mut arrived = false;
        for arrival in arrivals.try_iter() {
            arrived = true;
            intake_rate.add(1);
            match arrival {
                Arrival::Rider(id, rider, at) => replica.accept_rider(id, rider, at),
                Arrival::Driver(id, driver, at) => replica.accept_driver(id, driver, at),
            };
        }
        if arrived && let Err(e) = replica.flush() {
            tracing::error!(error = %e, "cannot record accepted requests");
        }
        state
    }

    fn ticket(&self, id: RequestId, now: Millis) -> Ticket {
        Ticket {
            id,
            expires_at: now.plus(self.request_ttl_ms),
        }
    }
}

/// What this node tells its peers about itself.
fn own_status(state: &mut State, now: Millis) -> PeerStatus {
    PeerStatus {
        region: state.replica.region().to_owned(),
        digest: state.replica.digest(),
        documents: u32::try_from(state.replica.document_count()).unwrap_or(u32::MAX),
        record_bytes: state.replica.record_bytes(),
        requests_per_s: state.intake_rate.per_second(now),
        matches_per_s: state.commit_rate.per_second(now),
        ready: state.replica.is_ready(),
    }
}

fn panel(
    node: &NodeId,
    status: &PeerStatus,
    this_node: bool,
    reachable: bool,
    lags: Option<(f64, f64)>,
) -> NodePanel {
    NodePanel {
        node: node.0.clone(),
        region: status.region.clone(),
        this_node,
        reachable,
        lag_p50_ms: lags.map(|l| l.0),
        lag_p99_ms: lags.map(|l| l.1),
        requests_per_s: fare::round_to(status.requests_per_s, 1),
        matches_per_s: fare::round_to(status.matches_per_s, 1),
        documents: status.documents,
        document_bytes: Some(status.record_bytes),
        digest: format!("{:016x}", status.digest),
        ready: status.ready,
    }
}

/// Five decimals of a degree is about a metre: plenty for a map.
fn lat_lon(p: Position) -> (f64, f64) {
    (fare::round_to(p.lat, 5), fare::round_to(p.lon, 5))
}

fn point(p: Position, owner: u16) -> (f64, f64, u16) {
    let (lat, lon) = lat_lon(p);
    (lat, lon, owner)
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

impl SyncCore for NodeCore {
    fn outgoing(&self, peer: &NodeId) -> Result<Vec<PeerMessage>, ReplicaError> {
        let mut state = self.lock();
        let mut messages = state.replica.outgoing(peer)?;
        let now = Millis::now();
        let due = state
            .status_sent
            .get(peer)
            .is_none_or(|at| now.0 >= at.0 + STATUS_INTERVAL_MS);
        if due {
            state.status_sent.insert(peer.clone(), now);
            let status = own_status(&mut state, now);
            messages.push(PeerMessage::V1(PeerMessageV1::Status(status)));
        }
        Ok(messages)
    }

    fn receive(&self, peer: &NodeId, message: PeerMessage) -> Result<(), ReplicaError> {
        let mut state = self.lock();
        state.board.heard(peer);
        if let PeerMessage::V1(PeerMessageV1::Status(status)) = message {
            state.board.status(peer, status);
            return Ok(());
        }
        let arrived = state.replica.receive(peer, message)?;
        let now = Millis::now();
        for accepted_at in arrived {
            let lag = now.0.saturating_sub(accepted_at.0) as f64 / 1000.0;
            metrics::histogram!("mesh_replication_lag_seconds", "peer" => peer.0.clone())
                .record(lag);
            state.board.lag(peer, lag * 1000.0);
        }
        if !state.replica.is_ready() {
            state.heard.insert(peer.clone());
            if state.heard.len() >= self.peers {
                state.replica.set_ready();
                tracing::info!("synced with every peer; matching starts");
            }
        }
        Ok(())
    }

    fn peer_lost(&self, peer: &NodeId) {
        let mut state = self.lock();
        state.replica.peer_lost(peer);
        state.board.lost(peer);
        state.status_sent.remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::replica::ReplicaConfig;
    use crate::wire::Position;

    const TTL: u64 = 30_000;

    fn core() -> NodeCore {
        NodeCore::new(
            Replica::new(ReplicaConfig {
                node: NodeId("dhaka-1".into()),
                region: "dhaka".into(),
                incarnation: 1,
                request_ttl_ms: TTL,
                claim_ttl_ms: 2_000,
                epoch_ms: 1_000,
                max_pickup_km: 5.0,
            }),
            Retention {
                ms: 60_000,
                max_matches: 1_000,
            },
            0,
        )
    }

    fn rider(lat: f64) -> NewRider {
        NewRider {
            name: "Rumi".into(),
            position: Position { lat, lon: 90.4 },
            destination: Position {
                lat: 23.9,
                lon: 90.4,
            },
        }
    }

    fn driver(lat: f64) -> NewDriver {
        NewDriver {
            name: "Karim".into(),
            car_number: "DHA-1".into(),
            position: Position { lat, lon: 90.4 },
        }
    }

    #[test]
    fn a_rider_and_a_driver_are_matched_once_with_the_fare() {
        let core = core();
        let t0 = Millis(1_800_000_000_000);
        let r = core.submit_rider(rider(23.8), t0);
        let d = core.submit_driver(driver(23.81), t0);
        assert_eq!(r.expires_at, t0.plus(TTL));
        assert_eq!(core.status(&r.id, t0), Status::Pending);

        let made = core.step(t0.plus(1_000)).unwrap();
        assert_eq!(made.len(), 1);
        let m = &made[0];
        assert_eq!((m.rider.id, m.driver.id), (r.id, d.id));
        assert!((m.trip_km - 11.1195).abs() < 1e-3, "{}", m.trip_km);
        assert_eq!(m.fare_taka, 22.24);
        assert_eq!(m.region, "dhaka");
        assert!(matches!(
            core.status(&d.id, t0.plus(1_000)),
            Status::Matched(_)
        ));
        assert!(
            core.step(t0.plus(2_000)).unwrap().is_empty(),
            "matched twice"
        );
    }

    #[test]
    fn requests_expire_after_their_ttl_and_never_before() {
        let core = core();
        let t0 = Millis(1_800_000_000_000);
        let r = core.submit_rider(rider(23.8), t0);
        core.step(t0.plus(TTL - 1)).unwrap();
        assert_eq!(core.status(&r.id, t0.plus(TTL - 1)), Status::Pending);
        assert_eq!(core.status(&r.id, t0.plus(TTL)), Status::Over);
        core.submit_driver(driver(23.8), t0.plus(TTL));
        assert!(core.step(t0.plus(TTL + 1)).unwrap().is_empty());
    }

    #[test]
    fn ttl_is_never_below_five_seconds() {
        let core = NodeCore::new(
            Replica::new(ReplicaConfig {
                node: NodeId("n".into()),
                region: "r".into(),
                incarnation: 1,
                request_ttl_ms: 10,
                claim_ttl_ms: 2_000,
                epoch_ms: 1_000,
                max_pickup_km: 5.0,
            }),
            Retention {
                ms: 1,
                max_matches: 1,
            },
            0,
        );
        assert_eq!(
            core.submit_rider(rider(1.0), Millis(0)).expires_at,
            Millis(MIN_REQUEST_TTL_MS)
        );
    }

    #[test]
    fn matches_are_forgotten_after_their_retention() {
        let core = core();
        let t0 = Millis(1_800_000_000_000);
        let r = core.submit_rider(rider(23.8), t0);
        core.submit_driver(driver(23.8), t0);
        core.step(t0).unwrap();
        core.step(t0.plus(59_999)).unwrap();
        assert!(core.match_of(&r.id).is_some());
        core.step(t0.plus(60_000)).unwrap();
        assert!(core.match_of(&r.id).is_none());
    }

    #[test]
    fn the_match_log_keeps_only_the_newest_when_full() {
        let core = core();
        let t0 = Millis(1_800_000_000_000);
        let mut riders = Vec::new();
        for i in 0..1_005 {
            let lat = 23.0 + f64::from(i) * 0.1; // 11 km apart: one pair per spot
            riders.push(core.submit_rider(rider(lat), t0).id);
            core.submit_driver(driver(lat), t0);
        }
        assert_eq!(core.step(t0).unwrap().len(), 1_005);
        assert_eq!(core.snapshot(t0).committed_matches, 1_000);
        assert!(core.match_of(&riders[0]).is_none());
        assert!(core.match_of(&riders[1_004]).is_some());
    }
}
