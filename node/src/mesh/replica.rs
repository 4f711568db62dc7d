//! The replication and matching protocol of one node: no sockets, no clock.
//! The runtime (or a simulation) feeds it accepted requests, peers' messages
//! and the time, and sends what it returns.
//!
//! # Why every match has one decider
//! A CRDT merge cannot choose between two matches for one driver. So every
//! request has one owner, the node that accepted it, and only the owner of
//! both the rider and the driver may commit their match:
//! - Every node runs the same greedy rule over the same replicated pool, so
//!   converged nodes propose the same pairs; a node acts only on the pairs
//!   of its own riders.
//! - If it also owns the driver, it commits at once.
//! - Otherwise it writes a *claim*: a request that the driver's owner hand
//!   the driver over. The driver's owner answers each claim once, first come
//!   (claims ordered by time, then id): it transfers the driver if it still
//!   owns it uncommitted, else refuses. Having transferred, it never commits
//!   that driver; the claimant, now the owner of both, commits.
//! - A claim has a deadline: when it passes unanswered (a partition), the
//!   rider returns to the pool. A transfer that arrives later simply gives
//!   the claimant a driver to match with anyone, so no deadline, clock or
//!   partition can put a driver or a rider in two committed matches.
//!
//! Every record lives in its writer's own documents, so every field has one
//! writer and merges never have to pick a winner.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::documents::{DocId, DocumentError, Documents};
use super::ledger::{Ledger, Owned};
use super::record::{
    ClaimId, ClaimRecord, CommitRecord, DecisionRecord, DriverRecord, RecordV1, RiderRecord,
};
use crate::clock::Millis;
use crate::ids::{NodeId, RequestId};
use crate::intake::{NewDriver, NewRider};
use crate::matching::{Candidate, greedy};
use crate::shared::Ticket;

/// The lowest time-to-live a request may have.
pub const MIN_REQUEST_TTL_MS: u64 = 5_000;

/// What peers send each other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PeerMessage {
    V1(PeerMessageV1),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PeerMessageV1 {
    /// The first frame on a connection: who is speaking (checked against
    /// the speaker's certificate).
    Hello { node: NodeId },
    /// One automerge sync message for one document.
    Sync { doc: DocId, message: Vec<u8> },
    /// How the speaker is doing, about once a second: for operators (the
    /// dashboard), never for protocol decisions.
    Status(PeerStatus),
}

/// A node's view of itself, as it tells its peers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub region: String,
    pub digest: u64,
    pub documents: u32,
    pub record_bytes: u64,
    /// Requests this node accepted, and matches it committed, per second.
    pub requests_per_s: f64,
    pub matches_per_s: f64,
    pub ready: bool,
}

#[derive(Debug, Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Document(#[from] DocumentError),
    #[error("a hello in the middle of a session")]
    UnexpectedHello,
}

#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    pub node: NodeId,
    pub region: String,
    /// Distinguishes this run of the node from earlier ones (e.g. its start
    /// time): each run writes as a new automerge actor.
    pub incarnation: u64,
    pub request_ttl_ms: u64,
    /// How long a claimant waits for an answer before its rider returns to
    /// the pool.
    pub claim_ttl_ms: u64,
    /// Each owner starts a new document every epoch.
    pub epoch_ms: u64,
    pub max_pickup_km: f64,
}

impl ReplicaConfig {
    /// How long after its epoch ends a document is kept: until every
    /// request, claim and answer in it is past use.
    fn retain_ms(&self) -> u64 {
        self.request_ttl_ms + 2 * self.claim_ttl_ms + self.epoch_ms
    }
}

/// Protocol counters, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicaStats {
    pub claims_sent: u64,
    pub transfers_granted: u64,
    pub claims_refused: u64,
    pub claims_expired: u64,
    pub records_rejected: u64,
}

pub struct Replica {
    config: ReplicaConfig,
    docs: Documents,
    ledger: Ledger,
    unflushed: Vec<(Millis, RecordV1)>,
    ready: bool,
    /// Restarts so far; each incarnation writes as a new automerge actor.
    incarnation: u64,
    dropped_before_epoch: u64,
    expired_claims: HashSet<ClaimId>,
    stats: ReplicaStats,
}

impl Replica {
    pub fn new(mut config: ReplicaConfig) -> Self {
        config.request_ttl_ms = config.request_ttl_ms.max(MIN_REQUEST_TTL_MS);
        Self {
            docs: Documents::new(&config.node, config.incarnation),
            incarnation: config.incarnation,
            config,
            ledger: Ledger::default(),
            unflushed: Vec::new(),
            ready: false,
            dropped_before_epoch: 0,
            expired_claims: HashSet::new(),
            stats: ReplicaStats::default(),
        }
    }

    pub fn node(&self) -> &NodeId {
        &self.config.node
    }

    pub fn region(&self) -> &str {
        &self.config.region
    }

    pub fn request_ttl_ms(&self) -> u64 {
        self.config.request_ttl_ms
    }

    /// Lets the node make decisions: the runtime calls this once it has
    /// synced with its peers (or none answered in time).
    pub fn set_ready(&mut self) {
        self.ready = true;
    }

    pub fn is_ready(&self) -> bool {
        self.ready
    }

    pub fn accept_rider(&mut self, id: RequestId, rider: NewRider, now: Millis) -> Ticket {
        let expires_at = now.plus(self.config.request_ttl_ms);
        self.write(
            now,
            RecordV1::Rider(RiderRecord {
                id,
                name: rider.name,
                position: rider.position,
                destination: rider.destination,
                accepted_at: now,
                expires_at,
            }),
        );
        Ticket { id, expires_at }
    }

    pub fn accept_driver(&mut self, id: RequestId, driver: NewDriver, now: Millis) -> Ticket {
        let expires_at = now.plus(self.config.request_ttl_ms);
        self.write(
            now,
            RecordV1::Driver(DriverRecord {
                id,
                name: driver.name,
                car_number: driver.car_number,
                position: driver.position,
                accepted_at: now,
                expires_at,
            }),
        );
        Ticket { id, expires_at }
    }

    /// Applies a peer's message, returning when each request it brought
    /// was accepted (for replication lag). An error means the peer sent
    /// something malformed; the runtime should drop that connection.
    pub fn receive(
        &mut self,
        from: &NodeId,
        message: PeerMessage,
    ) -> Result<Vec<Millis>, ReplicaError> {
        match message {
            PeerMessage::V1(PeerMessageV1::Sync { doc, message }) => {
                self.docs.receive(from, &doc, &message)?;
                Ok(self.absorb())
            }
            PeerMessage::V1(PeerMessageV1::Hello { .. }) => Err(ReplicaError::UnexpectedHello),
            PeerMessage::V1(PeerMessageV1::Status(_)) => Ok(Vec::new()),
        }
    }

    /// What `peer` needs now. Flushes pending writes first, so a batch of
    /// writes becomes one change.
    pub fn outgoing(&mut self, peer: &NodeId) -> Result<Vec<PeerMessage>, ReplicaError> {
        self.flush()?;
        Ok(self
            .docs
            .outgoing(peer)
            .into_iter()
            .map(|(doc, message)| PeerMessage::V1(PeerMessageV1::Sync { doc, message }))
            .collect())
    }

    /// The connection to `peer` was lost: start its syncs afresh.
    pub fn peer_lost(&mut self, peer: &NodeId) {
        self.docs.reset_peer(peer);
    }

    /// What a crash and restart leave: the node's own documents (durable),
    /// nothing of others', no sync state, and no decisions until ready.
    pub fn restart(&mut self) {
        let me = self.config.node.clone();
        self.unflushed.clear();
        self.incarnation += 1;
        self.docs.restart(&me, self.incarnation);
        self.ledger = Ledger::default();
        self.expired_claims.clear();
        self.ready = false;
        self.absorb();
    }

    /// One protocol step: answer claims on our drivers, commit drivers handed
    /// to us, run a matching round for our riders, and drop old documents.
    /// Returns the commits this node learnt of since the last step (its own
    /// and replicated ones), for delivery to websockets.
    pub fn step(&mut self, now: Millis) -> Result<Vec<Owned<CommitRecord>>, ReplicaError> {
        self.flush()?;
        if self.ready {
            self.answer_claims(now);
            self.flush()?;
            self.commit_transfers(now);
            self.flush()?;
            self.match_round(now);
            self.flush()?;
            self.count_expired_claims(now);
        }
        self.drop_old(now);
        Ok(self.ledger.take_new_commits())
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// A rider or driver with this id is in the replicated state.
    pub fn knows(&self, id: &RequestId) -> bool {
        self.ledger.rider(id).is_some() || self.ledger.driver(id).is_some()
    }

    /// Known, unexpired and not yet committed.
    pub fn is_pending(&self, id: &RequestId, now: Millis) -> bool {
        self.is_free(id, now)
    }

    /// (riders, drivers) pending now.
    pub fn pending_counts(&self, now: Millis) -> (usize, usize) {
        (
            self.pending_riders(now).count(),
            self.pending_drivers(now).count(),
        )
    }

    pub fn pending_riders(&self, now: Millis) -> impl Iterator<Item = &Owned<RiderRecord>> {
        self.ledger
            .open_riders()
            .filter(move |r| self.is_free(&r.record.id, now))
    }

    pub fn pending_drivers(&self, now: Millis) -> impl Iterator<Item = &Owned<DriverRecord>> {
        self.ledger
            .open_drivers()
            .filter(move |d| self.is_free(&d.record.id, now))
    }

    /// Claims still waiting for an answer.
    pub fn open_claims(&self, now: Millis) -> usize {
        self.waiting_claims(now).count()
    }

    pub fn waiting_claims(&self, now: Millis) -> impl Iterator<Item = &Owned<ClaimRecord>> {
        self.ledger
            .claims()
            .filter(move |c| self.ledger.claim_is_open(&c.record, now))
    }

    pub fn stats(&self) -> ReplicaStats {
        self.stats
    }

    pub fn digest(&mut self) -> u64 {
        self.docs.digest()
    }

    pub fn document_count(&self) -> usize {
        self.docs.len()
    }

    pub fn record_bytes(&self) -> u64 {
        self.docs.record_bytes()
    }

    fn write(&mut self, now: Millis, record: RecordV1) {
        self.unflushed.push((now, record));
    }

    /// Writes pending records into this node's documents of their epochs,
    /// one change per document, and reads them back into the ledger.
    pub fn flush(&mut self) -> Result<(), ReplicaError> {
        if self.unflushed.is_empty() {
            return Ok(());
        }
        let mut by_epoch: std::collections::BTreeMap<u64, Vec<RecordV1>> = Default::default();
        for (at, record) in self.unflushed.drain(..) {
            by_epoch
                .entry(at.0 / self.config.epoch_ms)
                .or_default()
                .push(record);
        }
        for (epoch, records) in by_epoch {
            let doc = DocId {
                owner: self.config.node.clone(),
                epoch,
            };
            self.docs.write(&doc, &records)?;
        }
        self.absorb();
        Ok(())
    }

    /// Moves new document contents into the ledger; returns when each new
    /// request of another owner was accepted.
    fn absorb(&mut self) -> Vec<Millis> {
        let changes = self.docs.take_changes();
        for rejected in &changes.rejected {
            tracing::warn!(%rejected, "ignored a record");
        }
        self.stats.records_rejected += changes.rejected.len() as u64;
        let mut arrived = Vec::new();
        for (owner, record) in changes.records {
            if owner != self.config.node {
                match &record {
                    RecordV1::Rider(r) => arrived.push(r.accepted_at),
                    RecordV1::Driver(d) => arrived.push(d.accepted_at),
                    _ => {}
                }
            }
            self.ledger.apply(&owner, record);
        }
        arrived
    }

    fn answer_claims(&mut self, now: Millis) {
        let me = &self.config.node;
        let mut waiting: Vec<&Owned<ClaimRecord>> = self
            .ledger
            .claims()
            .filter(|c| {
                &c.record.driver_owner == me && self.ledger.decision(&c.record.id).is_none()
            })
            .collect();
        waiting.sort_by_key(|c| (c.record.created_at, c.record.id));
        let mut handed_over = HashSet::new();
        let mut decisions = Vec::new();
        for claim in waiting {
            let c = &claim.record;
            let owned_now = self.ledger.driver_owner(&c.driver) == Some((me.clone(), c.generation));
            let usable = self
                .ledger
                .driver(&c.driver)
                .is_some_and(|d| d.record.expires_at > now);
            let transfer = owned_now
                && usable
                && now < c.deadline
                && !self.ledger.is_committed(&c.driver)
                && handed_over.insert(c.driver);
            decisions.push(DecisionRecord {
                claim: c.id,
                driver: c.driver,
                generation: c.generation,
                to: claim.owner.clone(),
                transfer,
                decided_at: now,
            });
        }
        for decision in decisions {
            if decision.transfer {
                self.stats.transfers_granted += 1;
            } else {
                self.stats.claims_refused += 1;
            }
            self.write(now, RecordV1::Decision(decision));
        }
    }

    fn commit_transfers(&mut self, now: Millis) {
        let me = &self.config.node;
        let mut used = HashSet::new();
        let mut commits = Vec::new();
        for claim in self.ledger.claims().filter(|c| &c.owner == me) {
            let c = &claim.record;
            let granted = self
                .ledger
                .decision(&c.id)
                .is_some_and(|x| x.record.transfer);
            if !granted
                || self.ledger.driver_owner(&c.driver).map(|(o, _)| o).as_ref() != Some(me)
                || !self.is_free(&c.rider, now)
                || !self.is_free(&c.driver, now)
                || used.contains(&c.rider)
                || used.contains(&c.driver)
            {
                continue;
            }
            let (Some(rider), Some(driver)) =
                (self.ledger.rider(&c.rider), self.ledger.driver(&c.driver))
            else {
                continue;
            };
            used.insert(c.rider);
            used.insert(c.driver);
            commits.push(CommitRecord {
                rider: c.rider,
                driver: c.driver,
                pickup_km: crate::geodesy::haversine_km(
                    driver.record.position,
                    rider.record.position,
                ),
                region: self.config.region.clone(),
                committed_at: now,
            });
        }
        for commit in commits {
            self.write(now, RecordV1::Commit(commit));
        }
    }

    /// Uncommitted and unexpired.
    fn is_free(&self, id: &RequestId, now: Millis) -> bool {
        let alive = self
            .ledger
            .rider(id)
            .map(|r| r.record.expires_at)
            .or_else(|| self.ledger.driver(id).map(|d| d.record.expires_at))
            .is_some_and(|expires_at| expires_at > now);
        alive && !self.ledger.is_committed(id)
    }

    fn match_round(&mut self, now: Millis) {
        let mut claimed = HashSet::new();
        for claim in self.ledger.claims() {
            if self.ledger.claim_is_open(&claim.record, now) {
                claimed.insert(claim.record.rider);
                claimed.insert(claim.record.driver);
            }
        }
        let available = |id: &RequestId| !claimed.contains(id) && self.is_free(id, now);
        let riders: Vec<Candidate> = self
            .ledger
            .open_riders()
            .filter(|r| available(&r.record.id))
            .map(|r| Candidate {
                id: r.record.id,
                position: r.record.position,
            })
            .collect();
        let drivers: Vec<Candidate> = self
            .ledger
            .open_drivers()
            .filter(|d| available(&d.record.id))
            .map(|d| Candidate {
                id: d.record.id,
                position: d.record.position,
            })
            .collect();
        let me = self.config.node.clone();
        let mut writes = Vec::new();
        for pair in greedy(&riders, &drivers, self.config.max_pickup_km) {
            let rider_owner = self.ledger.rider(&pair.rider).map(|r| &r.owner);
            if rider_owner != Some(&me) {
                continue;
            }
            let Some((driver_owner, generation)) = self.ledger.driver_owner(&pair.driver) else {
                continue;
            };
            if driver_owner == me {
                writes.push(RecordV1::Commit(CommitRecord {
                    rider: pair.rider,
                    driver: pair.driver,
                    pickup_km: pair.pickup_km,
                    region: self.config.region.clone(),
                    committed_at: now,
                }));
            } else {
                self.stats.claims_sent += 1;
                writes.push(RecordV1::Claim(ClaimRecord {
                    id: ClaimId::derive(&me, pair.rider, pair.driver, now),
                    rider: pair.rider,
                    driver: pair.driver,
                    driver_owner,
                    generation,
                    created_at: now,
                    deadline: now.plus(self.config.claim_ttl_ms),
                }));
            }
        }
        for record in writes {
            self.write(now, record);
        }
    }

    fn count_expired_claims(&mut self, now: Millis) {
        let me = &self.config.node;
        let expired: Vec<ClaimId> = self
            .ledger
            .claims()
            .filter(|c| {
                &c.owner == me
                    && c.record.deadline <= now
                    && self.ledger.decision(&c.record.id).is_none()
                    && !self.expired_claims.contains(&c.record.id)
            })
            .map(|c| c.record.id)
            .collect();
        self.stats.claims_expired += expired.len() as u64;
        self.expired_claims.extend(expired);
    }

    fn drop_old(&mut self, now: Millis) {
        let horizon = now.minus(self.config.retain_ms());
        let first_kept = horizon.0 / self.config.epoch_ms;
        if first_kept <= self.dropped_before_epoch {
            return;
        }
        self.dropped_before_epoch = first_kept;
        self.docs.drop_before(first_kept);
        self.ledger
            .forget_written_before(Millis(first_kept * self.config.epoch_ms));
        let ledger = &self.ledger;
        self.expired_claims
            .retain(|id| ledger.claims().any(|c| &c.record.id == id));
    }
}

impl super::transport::SyncCore for parking_lot::Mutex<Replica> {
    fn outgoing(&self, peer: &NodeId) -> Result<Vec<PeerMessage>, ReplicaError> {
        self.lock().outgoing(peer)
    }

    fn receive(&self, peer: &NodeId, message: PeerMessage) -> Result<(), ReplicaError> {
        self.lock().receive(peer, message).map(drop)
    }

    fn peer_lost(&self, peer: &NodeId) {
        self.lock().peer_lost(peer);
    }
}
