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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use thiserror::Error;

use super::codec::{decode_intake, encode_intake};
use super::documents::{Change, DocId, DocumentError, Documents, Inventory};
use super::ledger::{Ledger, Open, Owned};
use super::message::{PeerMessage, PeerMessageV1, Ticket};
use super::persist::{Loaded, Persist};
use super::record::{
    ClaimId, ClaimRecord, CommitRecord, DecisionRecord, DriverRecord, Record, RequestFacts,
    RiderRecord,
};
use crate::protocol::intake::{NewDriver, NewRider};
use crate::protocol::pairing::{Candidate, Pair, greedy};
use ride_types::adoption::RegionSet;
use ride_types::clock::Millis;
use ride_types::halo::{Layout, OwnHalo, RegionIndex, Scope};
use ride_types::ids::{NodeId, RequestId};

mod adoption;
mod claims;
mod cleanup;
mod intake;
mod queries;
mod round;
mod sync;

pub(crate) use round::RoundInput;

/// The lowest time-to-live a request may have.
pub(crate) const MIN_REQUEST_TTL_MS: u64 = 5_000;

#[derive(Debug, Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Document(#[from] DocumentError),
    #[error("a hello in the middle of a session")]
    UnexpectedHello,
    #[error("region {0:?} is not in this node's region layout")]
    UnknownRegion(String),
    #[error("{peer} is in region {region:?}, which is no neighbour of this node's")]
    NotNeighbour { peer: NodeId, region: String },
    #[error("unreadable accepted requests of epoch {epoch} in the journal: {source}")]
    Intake { epoch: u64, source: postcard::Error },
    #[error("{0} said what it serves before its hello")]
    UnexpectedServing(NodeId),
    #[error("{peer} says it serves region {region}, which is not in the layout")]
    ServesUnknownRegion { peer: NodeId, region: RegionIndex },
}

/// What the deterministic simulation needs from the protocol and a node
/// never does: all off by default, and off in every node that ships.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Hooks {
    /// Keep every record absorbed, for the simulation's checks.
    pub observe: bool,
    /// Take one's own documents back from peers, as a node did before it
    /// had a journal: the defect the simulation shows its checks catch.
    pub relearn_own_documents: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct ReplicaConfig {
    /// The owner identity this node writes as (see
    /// [`crate::disk::journal::open_owner`]).
    pub node: NodeId,
    pub region: String,
    /// The regions and pickup radius every node shares: which regions each
    /// record goes to (see [`ride_types::halo`]).
    pub layout: Arc<Layout>,
    /// Distinguishes this run of the node from earlier ones (e.g. its start
    /// time): each run writes as a new automerge actor.
    pub incarnation: u64,
    pub request_ttl_ms: u64,
    /// How long a claimant waits for an answer before its rider returns to
    /// the pool.
    pub claim_ttl_ms: u64,
    /// Each owner starts a new document every epoch.
    pub epoch_ms: u64,
    /// How long accepted requests may wait, journaled and answered, before
    /// they are written into documents: many group commits then make one
    /// automerge change (see [`crate::protocol::codec`]).
    pub intake_flush_ms: u64,
    pub max_pickup_km: f64,
    /// How often a matching round runs.
    pub match_interval_ms: u64,
    /// How long a starting node waits to be in sync with every peer before
    /// it decides anyway (peers may be down or partitioned away).
    pub ready_grace_ms: u64,
    /// What only the test harness turns on.
    pub hooks: Hooks,
}

impl ReplicaConfig {
    /// How long a document is kept after it last changed here: until every
    /// request, claim and answer in it is past use.
    fn retain_ms(&self) -> u64 {
        self.request_ttl_ms + 2 * self.claim_ttl_ms + self.epoch_ms
    }

    /// How long a dropped document is remembered by id before only its
    /// owner's floor refuses it.
    fn tombstone_ms(&self) -> u64 {
        10 * self.retain_ms()
    }
}

/// Protocol counters, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ReplicaStats {
    pub claims_sent: u64,
    pub transfers_granted: u64,
    pub claims_refused: u64,
    pub claims_expired: u64,
    pub records_rejected: u64,
    pub documents_refused: u64,
    /// Requests read back from the journal at start that no document held
    /// (the node stopped between their 202 and their change).
    pub intake_reloaded: u64,
    /// Riders and drivers left out of a matching round because their owner's
    /// region is down (see [`Replica::set_availability`]).
    pub candidates_skipped: u64,
}

pub(crate) struct Replica {
    config: ReplicaConfig,
    /// This node's region in the layout.
    region: RegionIndex,
    docs: Documents,
    ledger: Ledger,
    unflushed: Vec<(Millis, Scope, Record)>,
    /// Requests accepted since the last group commit, which journals them
    /// ([`Replica::journal_arrivals`]) before their 202.
    arrived: Vec<(Millis, Scope, Record)>,
    /// Requests journaled and not yet written into a document.
    journaled: Vec<(Millis, Scope, Record)>,
    /// Every request in `arrived` or `journaled`: pending before any
    /// document holds it.
    unwritten: HashMap<RequestId, RequestFacts>,
    /// When `journaled` is next written into documents, unless a round
    /// needs it sooner.
    next_intake_flush: Millis,
    ready: bool,
    /// The first [`Replica::handle_timeout`]: readiness's grace runs from it.
    started_at: Option<Millis>,
    last_timeout: Millis,
    next_round: Millis,
    next_cleanup: Millis,
    /// The peers this node should be in sync with before it decides.
    peers: BTreeSet<NodeId>,
    /// Each connected peer's region, as its hello said.
    peer_regions: HashMap<NodeId, RegionIndex>,
    /// Every peer's region since it was first heard from, connected or not:
    /// where the owner of a request lives.
    known_regions: HashMap<NodeId, RegionIndex>,
    /// What each connected peer serves, when it said more than its region.
    peer_served: HashMap<NodeId, Scope>,
    /// What each connected peer was last told this node serves.
    serving_sent: HashMap<NodeId, Scope>,
    /// The regions this node believes down: their owners' requests are left
    /// out of matching rounds.
    down: RegionSet,
    /// Peers of regions too far away to share anything: never waited for.
    distant: HashSet<NodeId>,
    synced: HashSet<NodeId>,
    /// Peers' inventories this node does not cover yet.
    inventories: HashMap<NodeId, Inventory>,
    inventory_sent: HashSet<NodeId>,
    expired_claims: HashSet<ClaimId>,
    observed: Vec<Change>,
    stats: ReplicaStats,
}

impl Replica {
    /// A replica holding its own documents as the journal kept them
    /// (`loaded`; a new node loads nothing).
    pub(crate) fn open(
        mut config: ReplicaConfig,
        mut loaded: Loaded,
        now: Millis,
    ) -> Result<Self, ReplicaError> {
        let intake = std::mem::take(&mut loaded.intake);
        config.request_ttl_ms = config.request_ttl_ms.max(MIN_REQUEST_TTL_MS);
        let region = config
            .layout
            .index_of(&config.region)
            .ok_or_else(|| ReplicaError::UnknownRegion(config.region.clone()))?;
        let docs = Documents::open(
            &config.node,
            region,
            config.incarnation,
            config.hooks.relearn_own_documents,
            loaded,
            now,
        )?;
        let mut replica = Self {
            region,
            docs,
            config,
            ledger: Ledger::default(),
            unflushed: Vec::new(),
            arrived: Vec::new(),
            journaled: Vec::new(),
            unwritten: HashMap::new(),
            next_intake_flush: Millis(0),
            ready: false,
            started_at: None,
            last_timeout: Millis(0),
            next_round: Millis(0),
            next_cleanup: Millis(0),
            peers: BTreeSet::new(),
            peer_regions: HashMap::new(),
            known_regions: HashMap::new(),
            peer_served: HashMap::new(),
            serving_sent: HashMap::new(),
            down: RegionSet::EMPTY,
            distant: HashSet::new(),
            synced: HashSet::new(),
            inventories: HashMap::new(),
            inventory_sent: HashSet::new(),
            expired_claims: HashSet::new(),
            observed: Vec::new(),
            stats: ReplicaStats::default(),
        };
        replica.absorb();
        replica.reload_intake(intake, now)?;
        Ok(replica)
    }

    /// Requests the journal holds as accepted that no own document holds
    /// (the node stopped between their 202 and their change): written into
    /// documents like new ones. Expired ones are over anyway.
    fn reload_intake(
        &mut self,
        intake: BTreeMap<u64, Vec<u8>>,
        now: Millis,
    ) -> Result<(), ReplicaError> {
        for (epoch, bytes) in intake {
            let accepted =
                decode_intake(&bytes).map_err(|source| ReplicaError::Intake { epoch, source })?;
            for (scope, record) in accepted {
                let Some(request) = record.request() else {
                    continue;
                };
                let doc = DocId {
                    owner: self.config.node.clone(),
                    epoch: request.accepted_at.0 / self.config.epoch_ms,
                    scope: scope.clone(),
                };
                if request.expires_at <= now
                    || self.knows(&request.id)
                    || self.docs.was_dropped(&doc)
                {
                    continue;
                }
                self.unwritten.insert(request.id, request);
                self.journaled.push((request.accepted_at, scope, record));
                self.stats.intake_reloaded += 1;
            }
        }
        Ok(())
    }

    pub(crate) fn node(&self) -> &NodeId {
        &self.config.node
    }

    pub(crate) fn region(&self) -> &str {
        &self.config.region
    }

    pub(crate) fn request_ttl_ms(&self) -> u64 {
        self.config.request_ttl_ms
    }

    /// The peers (session ids) to be in sync with before deciding; follows
    /// membership changes.
    pub(crate) fn set_peers(&mut self, peers: impl IntoIterator<Item = NodeId>) {
        self.peers = peers.into_iter().collect();
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready
    }

    /// The layout every node shares.
    pub(crate) fn layout(&self) -> Arc<Layout> {
        Arc::clone(&self.config.layout)
    }

    /// This node's region, by its index in the layout.
    pub(crate) fn own_region(&self) -> RegionIndex {
        self.region
    }

    /// Where this node's own requests go, for intake to scope them.
    pub(crate) fn own_halo(&self) -> OwnHalo {
        OwnHalo::new(Arc::clone(&self.config.layout), self.region)
    }

    /// When [`Replica::handle_timeout`] has work next: the next round, or
    /// while not ready, the next check of readiness (a round's interval
    /// after the last call, or the end of the grace if sooner).
    pub(crate) fn poll_timeout(&self) -> Millis {
        match (self.ready, self.started_at) {
            (false, Some(started)) => self
                .last_timeout
                .plus(self.config.match_interval_ms)
                .min(started.plus(self.config.ready_grace_ms)),
            _ => self.next_round,
        }
    }

    /// Time passes: become ready (in sync with every peer, or the grace is
    /// over), answer claims on this node's drivers, commit drivers handed
    /// to it, drop documents past use, and, when a round is due, return its
    /// candidates. The caller runs [`RoundInput::run`] (outside any lock)
    /// and hands the pairs to [`Replica::complete_round`].
    pub(crate) fn handle_timeout(
        &mut self,
        now: Millis,
    ) -> Result<Option<RoundInput>, ReplicaError> {
        self.write_intake(now, false);
        self.flush(now)?;
        self.last_timeout = now;
        let started = *self.started_at.get_or_insert(now);
        if !self.ready {
            let in_sync = self
                .peers
                .iter()
                .all(|p| self.synced.contains(p) || self.distant.contains(p));
            if in_sync || now >= started.plus(self.config.ready_grace_ms) {
                if !in_sync {
                    tracing::warn!("not in sync with every peer after the grace; deciding anyway");
                }
                self.ready = true;
                self.inventories.clear();
            }
        }
        if self.ready {
            self.answer_claims(now);
            self.flush(now)?;
            self.commit_transfers(now);
            self.flush(now)?;
            self.count_expired_claims(now);
        }
        self.drop_old(now)?;
        if !self.ready || now < self.next_round {
            return Ok(None);
        }
        // A round sees every request accepted before it.
        self.write_intake(now, true);
        self.flush(now)?;
        self.next_round = now.plus(self.config.match_interval_ms);
        Ok(Some(self.round_input(now)))
    }

    // Open means not committed, so an open request is pending (`is_free`)
    // exactly while it has not expired.
    fn write(&mut self, now: Millis, scope: Scope, record: Record) {
        self.unflushed.push((now, scope, record));
    }

    /// Where a decision about these riders and drivers goes: everywhere
    /// their records went (see [`ride_types::halo`]), and this node's region.
    fn scope_of_decision(&self, about: &[&Scope]) -> Scope {
        about
            .iter()
            .fold(Scope::of([self.region]), |all, s| all.union(s))
    }

    /// Writes pending records into this node's documents of their epochs,
    /// one change per document, appends them to the journal, and reads them
    /// back into the ledger. They may leave the node only once durable
    /// (a [`Replica::take_sync`] taken after this has run): outgoing
    /// messages see to it, and so must whoever tells a client of a commit.
    pub(crate) fn flush(&mut self, now: Millis) -> Result<(), ReplicaError> {
        if self.unflushed.is_empty() {
            return Ok(());
        }
        let mut by_doc: BTreeMap<(u64, Scope), Vec<Record>> = BTreeMap::new();
        for (at, scope, record) in self.unflushed.drain(..) {
            by_doc
                .entry((at.0 / self.config.epoch_ms, scope))
                .or_default()
                .push(record);
        }
        let writes = by_doc
            .into_iter()
            .map(|((epoch, scope), records)| {
                let doc = DocId {
                    owner: self.config.node.clone(),
                    epoch,
                    scope,
                };
                (doc, records)
            })
            .collect();
        self.docs.write(writes, now)?;
        self.absorb();
        Ok(())
    }

    /// What the disk must keep, in order, before anything this replica
    /// produced so far leaves the node (see [`super::persist`]).
    pub(crate) fn take_persist(&mut self) -> Vec<Persist> {
        self.docs.take_persist()
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
        for (doc, record) in changes.records {
            if doc.owner != self.config.node
                && let Some(request) = record.request()
            {
                arrived.push(request.accepted_at);
            }
            if self.config.hooks.observe {
                self.observed.push((doc.clone(), record.clone()));
            }
            self.ledger.apply(&doc, record);
        }
        arrived
    }
}

#[cfg(test)]
mod tests;
