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
use ride_types::clock::Millis;
use ride_types::halo::{Layout, OwnHalo, RegionIndex, Scope};
use ride_types::ids::{NodeId, RequestId};

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
}

/// The candidates of one matching round, taken from the core so that the
/// round itself runs without it (see [`Replica::complete_round`]).
#[derive(Debug, Clone)]
pub(crate) struct RoundInput {
    pub riders: Vec<Candidate>,
    pub drivers: Vec<Candidate>,
    pub max_pickup_km: f64,
    pub now: Millis,
}

impl RoundInput {
    /// The greedy round: pure CPU work, no core needed.
    pub(crate) fn run(&self) -> Vec<Pair> {
        greedy(&self.riders, &self.drivers, self.max_pickup_km)
    }
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

    /// A connected peer's region (by its id in the layout).
    pub(crate) fn region_of_peer(&self, peer: &NodeId) -> Option<&str> {
        self.config.layout.id_of(*self.peer_regions.get(peer)?)
    }

    /// A peer said hello from `region`. An error means the session should
    /// end: the region is not in the layout, or too far to share anything
    /// (the peer is then not waited for either).
    pub(crate) fn peer_joined(&mut self, peer: &NodeId, region: &str) -> Result<(), ReplicaError> {
        let layout = &self.config.layout;
        let index = layout
            .index_of(region)
            .ok_or_else(|| ReplicaError::UnknownRegion(region.to_owned()))?;
        if !layout.are_neighbours(self.region, index) {
            self.distant.insert(peer.clone());
            return Err(ReplicaError::NotNeighbour {
                peer: peer.clone(),
                region: region.to_owned(),
            });
        }
        self.peer_regions.insert(peer.clone(), index);
        Ok(())
    }

    /// A peer's clock minus this node's, as measured (see
    /// [`Documents::unchanged_for`]).
    pub(crate) fn set_clock_offset(&mut self, peer: &NodeId, offset_ms: f64) {
        self.docs.set_clock_offset(peer, offset_ms.round() as i64);
    }

    /// Where this node's own requests go, for intake to scope them.
    pub(crate) fn own_halo(&self) -> OwnHalo {
        OwnHalo::new(Arc::clone(&self.config.layout), self.region)
    }

    /// Peers this node has been in sync with since it started.
    pub(crate) fn is_synced_with(&self, peer: &NodeId) -> bool {
        self.synced.contains(peer)
    }

    /// Accepts a rider: pending at once, journaled by the next
    /// [`Replica::journal_arrivals`] (its 202 waits for that), and written
    /// into a document by a later intake flush.
    pub(crate) fn accept_rider(
        &mut self,
        id: RequestId,
        rider: NewRider,
        scope: Scope,
        now: Millis,
    ) -> Ticket {
        let expires_at = now.plus(self.config.request_ttl_ms);
        self.arrive(
            scope,
            Record::Rider(RiderRecord {
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

    /// A rider or driver record accepted here, on its way to the journal.
    fn arrive(&mut self, scope: Scope, record: Record) {
        if let Some(request) = record.request() {
            self.unwritten.insert(request.id, request);
            self.arrived.push((request.accepted_at, scope, record));
        }
    }

    /// Accepts a driver, as [`Replica::accept_rider`] does a rider.
    pub(crate) fn accept_driver(
        &mut self,
        id: RequestId,
        driver: NewDriver,
        scope: Scope,
        now: Millis,
    ) -> Ticket {
        let expires_at = now.plus(self.config.request_ttl_ms);
        self.arrive(
            scope,
            Record::Driver(DriverRecord {
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
    pub(crate) fn receive(
        &mut self,
        from: &NodeId,
        message: PeerMessage,
        now: Millis,
    ) -> Result<Vec<Millis>, ReplicaError> {
        let arrived = match message {
            PeerMessage::V1(PeerMessageV1::Sync { doc, message }) => {
                if !self.docs.receive(from, &doc, &message, now)? {
                    self.stats.documents_refused += 1;
                }
                self.absorb()
            }
            PeerMessage::V1(PeerMessageV1::Inventory { docs }) => {
                if !self.ready {
                    self.inventories.insert(from.clone(), docs);
                }
                Vec::new()
            }
            PeerMessage::V1(PeerMessageV1::Hello { .. }) => {
                return Err(ReplicaError::UnexpectedHello);
            }
            PeerMessage::V1(PeerMessageV1::Status(_)) => Vec::new(),
        };
        self.check_synced();
        Ok(arrived)
    }

    /// Peers whose inventory this node now covers are in sync.
    fn check_synced(&mut self) {
        if self.ready || self.inventories.is_empty() {
            return;
        }
        let docs = &mut self.docs;
        let covered: Vec<NodeId> = self
            .inventories
            .iter()
            .filter(|(_, inventory)| docs.covers(inventory))
            .map(|(peer, _)| peer.clone())
            .collect();
        for peer in covered {
            self.inventories.remove(&peer);
            tracing::info!(%peer, "in sync with peer");
            self.synced.insert(peer);
        }
    }

    /// What `peer` needs now: at the start of a session this node's
    /// inventory, then sync messages. Flushes pending writes first, so a
    /// batch of writes becomes one change. The messages may leave only once
    /// what they carry is durable: the caller runs [`Replica::take_sync`]'s
    /// sync (taken after this) before sending them.
    pub(crate) fn outgoing(
        &mut self,
        peer: &NodeId,
        now: Millis,
    ) -> Result<Vec<PeerMessage>, ReplicaError> {
        self.write_intake(now, false);
        self.flush(now)?;
        // Nothing before its hello says where the peer is.
        let Some(&region) = self.peer_regions.get(peer) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        if self.inventory_sent.insert(peer.clone()) {
            out.push(PeerMessage::V1(PeerMessageV1::Inventory {
                docs: self.docs.inventory(region),
            }));
        }
        out.extend(
            self.docs
                .outgoing(peer, region, now)
                .into_iter()
                .map(|(doc, message)| PeerMessage::V1(PeerMessageV1::Sync { doc, message })),
        );
        Ok(out)
    }

    /// The connection to `peer` was lost: start its syncs afresh.
    pub(crate) fn peer_lost(&mut self, peer: &NodeId) {
        self.docs.reset_peer(peer);
        self.peer_regions.remove(peer);
        self.inventory_sent.remove(peer);
        self.inventories.remove(peer);
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

    /// Every commit this node learnt of since the last call (its own and
    /// replicated ones), for delivery.
    pub(crate) fn take_commits(&mut self) -> Vec<Owned<CommitRecord>> {
        self.ledger.take_new_commits()
    }

    pub(crate) fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// A rider or driver with this id is in the replicated state, or was
    /// accepted here and is on its way into it.
    pub(crate) fn knows(&self, id: &RequestId) -> bool {
        self.ledger.rider(id).is_some()
            || self.ledger.driver(id).is_some()
            || self.unwritten.contains_key(id)
    }

    /// Known, unexpired and not yet committed.
    pub(crate) fn is_pending(&self, id: &RequestId, now: Millis) -> bool {
        self.is_free(id, now) || self.unwritten.get(id).is_some_and(|u| u.expires_at > now)
    }

    /// (riders, drivers) accepted here, pending, and in no document yet.
    fn unwritten_counts(&self, now: Millis) -> (usize, usize) {
        let live = self.unwritten.values().filter(|u| u.expires_at > now);
        live.fold((0, 0), |(riders, drivers), u| {
            if u.rider {
                (riders + 1, drivers)
            } else {
                (riders, drivers + 1)
            }
        })
    }

    /// (riders, drivers) pending now, counted on the open index alone (every
    /// step's snapshot asks, under the core's lock).
    pub(crate) fn pending_counts(&self, now: Millis) -> (usize, usize) {
        let (riders, drivers) = self.ledger.open_index();
        let live = |(_, open): &(&RequestId, &Open)| open.expires_at > now;
        let (new_riders, new_drivers) = self.unwritten_counts(now);
        (
            riders.filter(live).count() + new_riders,
            drivers.filter(live).count() + new_drivers,
        )
    }

    /// (riders, drivers) pending now that this node accepted.
    pub(crate) fn own_pending_counts(&self, now: Millis) -> (usize, usize) {
        let me = &self.config.node;
        let (new_riders, new_drivers) = self.unwritten_counts(now);
        (
            self.pending_riders(now).filter(|r| &r.owner == me).count() + new_riders,
            self.pending_drivers(now).filter(|d| &d.owner == me).count() + new_drivers,
        )
    }

    // Open means not committed, so an open request is pending (`is_free`)
    // exactly while it has not expired.
    pub(crate) fn pending_riders(&self, now: Millis) -> impl Iterator<Item = &Owned<RiderRecord>> {
        self.ledger
            .open_riders()
            .filter(move |r| r.record.expires_at > now)
    }

    pub(crate) fn pending_drivers(
        &self,
        now: Millis,
    ) -> impl Iterator<Item = &Owned<DriverRecord>> {
        self.ledger
            .open_drivers()
            .filter(move |d| d.record.expires_at > now)
    }

    /// Claims still waiting for an answer.
    pub(crate) fn open_claims(&self, now: Millis) -> usize {
        self.waiting_claims(now).count()
    }

    pub(crate) fn waiting_claims(&self, now: Millis) -> impl Iterator<Item = &Owned<ClaimRecord>> {
        self.ledger
            .claims()
            .filter(move |c| self.ledger.claim_is_open(&c.record, now))
    }

    pub(crate) fn stats(&self) -> ReplicaStats {
        self.stats
    }

    pub(crate) fn digest(&mut self) -> u64 {
        self.docs.digest()
    }

    /// Per region id, the digest of what this node shares with it (see
    /// [`Documents::digests`]).
    pub(crate) fn digests(&mut self) -> BTreeMap<String, u64> {
        let layout = &self.config.layout;
        self.docs
            .digests()
            .into_iter()
            .filter_map(|(region, digest)| Some((layout.id_of(region)?.to_owned(), digest)))
            .collect()
    }

    #[cfg(test)]
    pub(crate) fn inventory(&mut self) -> Inventory {
        self.docs.inventory(self.region)
    }

    pub(crate) fn document_count(&self) -> usize {
        self.docs.len()
    }

    pub(crate) fn record_bytes(&self) -> u64 {
        self.docs.record_bytes()
    }

    /// Every record absorbed since the last call, with its document (only
    /// with [`Hooks::observe`]).
    #[cfg(test)]
    pub(crate) fn take_observed(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.observed)
    }

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

    /// The requests accepted since the last call, as the journal keeps
    /// them: one intake frame per epoch of this node's clock. They are
    /// durable (and may be answered 202) once appended and synced; the
    /// runtime then says whether the append worked
    /// ([`Replica::arrivals_journaled`]).
    pub(crate) fn arrivals_to_journal(&self) -> Vec<(u64, Vec<u8>)> {
        let mut by_epoch: BTreeMap<u64, Vec<(&Scope, &Record)>> = BTreeMap::new();
        for (at, scope, record) in &self.arrived {
            by_epoch
                .entry(at.0 / self.config.epoch_ms)
                .or_default()
                .push((scope, record));
        }
        by_epoch
            .into_iter()
            .map(|(epoch, accepted)| (epoch, encode_intake(&accepted)))
            .collect()
    }

    /// The last [`Replica::arrivals_to_journal`] was appended: its requests
    /// wait, journaled, for the next intake flush. If it was not, they are
    /// forgotten, and the caller refuses them.
    pub(crate) fn arrivals_journaled(&mut self, appended: bool) {
        if appended {
            self.journaled.append(&mut self.arrived);
            return;
        }
        for (_, _, record) in self.arrived.drain(..) {
            if let Some(request) = record.request() {
                self.unwritten.remove(&request.id);
            }
        }
    }

    /// Moves journaled requests into the writes of the next flush, if the
    /// intake flush is due (or `now` regardless of the interval).
    fn write_intake(&mut self, now: Millis, now_regardless: bool) {
        if self.journaled.is_empty() || (!now_regardless && now < self.next_intake_flush) {
            return;
        }
        self.next_intake_flush = now.plus(self.config.intake_flush_ms);
        for (at, scope, record) in self.journaled.drain(..) {
            if let Some(request) = record.request() {
                self.unwritten.remove(&request.id);
            }
            self.unflushed.push((at, scope, record));
        }
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
            let driver_scope = self.ledger.driver(&c.driver).map(|d| &d.scope);
            let scope =
                self.scope_of_decision(&[&claim.scope, driver_scope.unwrap_or(&claim.scope)]);
            decisions.push((
                scope,
                DecisionRecord {
                    claim: c.id,
                    driver: c.driver,
                    generation: c.generation,
                    to: claim.owner.clone(),
                    transfer,
                    decided_at: now,
                },
            ));
        }
        for (scope, decision) in decisions {
            if decision.transfer {
                self.stats.transfers_granted += 1;
            } else {
                self.stats.claims_refused += 1;
            }
            self.write(now, scope, Record::Decision(decision));
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
            commits.push((
                self.scope_of_decision(&[&rider.scope, &driver.scope]),
                CommitRecord {
                    rider: c.rider,
                    driver: c.driver,
                    pickup_km: ride_types::geodesy::haversine_km(
                        driver.record.position,
                        rider.record.position,
                    ),
                    region: self.config.region.clone(),
                    committed_at: now,
                },
            ));
        }
        for (scope, commit) in commits {
            self.write(now, scope, Record::Commit(commit));
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

    /// Riders and drivers in a claim still waiting for its answer.
    fn claimed(&self, now: Millis) -> HashSet<RequestId> {
        let mut claimed = HashSet::new();
        for claim in self.ledger.claims() {
            if self.ledger.claim_is_open(&claim.record, now) {
                claimed.insert(claim.record.rider);
                claimed.insert(claim.record.driver);
            }
        }
        claimed
    }

    fn round_input(&self, now: Millis) -> RoundInput {
        let claimed = self.claimed(now);
        // Open means not committed; unexpired and unclaimed makes it free
        // for this round (what `is_free` says, read from the index alone).
        let candidates = |open: &mut dyn Iterator<Item = (&RequestId, &Open)>| -> Vec<Candidate> {
            open.filter(|(id, o)| o.expires_at > now && !claimed.contains(*id))
                .map(|(id, o)| Candidate {
                    id: *id,
                    position: o.position,
                })
                .collect()
        };
        let (mut riders, mut drivers) = self.ledger.open_index();
        RoundInput {
            riders: candidates(&mut riders),
            drivers: candidates(&mut drivers),
            max_pickup_km: self.config.max_pickup_km,
            now,
        }
    }

    /// Acts on a round's pairs for this node's riders: commits where it
    /// owns the driver too, claims the driver otherwise. What changed while
    /// the round ran (a rider committed, a claim made) is checked again
    /// here, under the core's lock, so a stale round can only propose less.
    pub(crate) fn complete_round(
        &mut self,
        input: &RoundInput,
        pairs: &[Pair],
        now: Millis,
    ) -> Result<(), ReplicaError> {
        let me = self.config.node.clone();
        let claimed = self.claimed(now);
        let round_at = input.now;
        let mut writes = Vec::new();
        for pair in pairs {
            let (Some(rider), Some(driver)) = (
                self.ledger.rider(&pair.rider),
                self.ledger.driver(&pair.driver),
            ) else {
                continue;
            };
            if rider.owner != me
                || claimed.contains(&pair.rider)
                || claimed.contains(&pair.driver)
                || !self.is_free(&pair.rider, now)
                || !self.is_free(&pair.driver, now)
            {
                continue;
            }
            let Some((driver_owner, generation)) = self.ledger.driver_owner(&pair.driver) else {
                continue;
            };
            let scope = self.scope_of_decision(&[&rider.scope, &driver.scope]);
            if driver_owner == me {
                writes.push((
                    scope,
                    Record::Commit(CommitRecord {
                        rider: pair.rider,
                        driver: pair.driver,
                        pickup_km: pair.pickup_km,
                        region: self.config.region.clone(),
                        committed_at: now,
                    }),
                ));
            } else {
                self.stats.claims_sent += 1;
                writes.push((
                    scope,
                    Record::Claim(ClaimRecord {
                        id: ClaimId::derive(&me, pair.rider, pair.driver, round_at),
                        rider: pair.rider,
                        driver: pair.driver,
                        driver_owner,
                        generation,
                        created_at: now,
                        deadline: now.plus(self.config.claim_ttl_ms),
                    }),
                ));
            }
        }
        for (scope, record) in writes {
            self.write(now, scope, record);
        }
        self.flush(now)
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

    /// Drops the documents that have not changed here for the retention,
    /// measured on this node's clock, except those whose commits, answers
    /// or claims refer to a rider or driver still held elsewhere: a commit
    /// or a transfer is never forgotten while what it decided about can
    /// still be seen, whatever the timestamps inside say.
    fn drop_old(&mut self, now: Millis) -> Result<(), ReplicaError> {
        if now < self.next_cleanup {
            return Ok(());
        }
        // At epoch boundaries of this node's clock: nodes whose clocks agree
        // drop the same documents at the same moment.
        let epoch = self.config.epoch_ms;
        let boundary = Millis(now.0 / epoch * epoch);
        self.next_cleanup = boundary.plus(epoch);
        // Every request accepted in an epoch before this one has expired.
        self.docs
            .drop_intake_before(boundary.minus(self.config.request_ttl_ms).0 / epoch);
        let stale = self.docs.unchanged_for(self.config.retain_ms(), boundary);
        if stale.is_empty() {
            return Ok(());
        }
        let contents: Vec<(DocId, Vec<Record>)> = stale
            .into_iter()
            .map(|doc| {
                let records = self.docs.records_of(&doc);
                (doc, records)
            })
            .collect();
        let mut dropping: BTreeSet<DocId> = contents.iter().map(|(d, _)| d.clone()).collect();
        loop {
            let needed: Vec<DocId> = contents
                .iter()
                .filter(|(doc, records)| {
                    dropping.contains(doc)
                        && records.iter().flat_map(refers_to).any(|id| {
                            self.ledger
                                .home_of(&id)
                                .is_some_and(|home| !dropping.contains(&home))
                        })
                })
                .map(|(doc, _)| doc.clone())
                .collect();
            if needed.is_empty() {
                break;
            }
            for doc in needed {
                dropping.remove(&doc);
            }
        }
        let mut dropped = Vec::with_capacity(dropping.len());
        for (doc, records) in &contents {
            if dropping.contains(doc) {
                self.ledger.forget(doc, records);
                dropped.push(doc.clone());
            }
        }
        self.docs
            .drop_docs(&dropped, self.config.tombstone_ms(), now);
        let ledger = &self.ledger;
        self.expired_claims
            .retain(|id| ledger.claims().any(|c| &c.record.id == id));
        Ok(())
    }
}

/// The riders and drivers a record decides about.
fn refers_to(record: &Record) -> Vec<RequestId> {
    match record {
        Record::Commit(m) => vec![m.rider, m.driver],
        Record::Claim(c) => vec![c.rider, c.driver],
        Record::Decision(x) => vec![x.driver],
        Record::Rider(_) | Record::Driver(_) => Vec::new(),
    }
}
