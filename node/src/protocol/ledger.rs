//! The replicated state, read: every record of every live document, indexed
//! for the questions the protocol asks (who owns this driver now? is this
//! rider committed? which claims wait for my answer?).
//!
//! The ledger is only ever fed from document changes, local or replicated,
//! so what a node decides on is exactly what it replicates.

use std::collections::{BTreeMap, HashMap};

use super::documents::DocId;
use super::record::{
    ClaimId, ClaimRecord, CommitRecord, DecisionRecord, DriverRecord, Record, RiderRecord,
};
use ride_types::api::Position;
use ride_types::clock::Millis;
use ride_types::halo::Scope;
use ride_types::ids::{NodeId, RequestId};

/// A record, the node whose document holds it (its only writer) and that
/// document's epoch and scope.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Owned<T> {
    pub owner: NodeId,
    pub epoch: u64,
    pub scope: Scope,
    pub record: T,
}

impl<T> Owned<T> {
    fn new(doc: &DocId, record: T) -> Self {
        Self {
            owner: doc.owner.clone(),
            epoch: doc.epoch,
            scope: doc.scope.clone(),
            record,
        }
    }

    fn is_from(&self, doc: &DocId) -> bool {
        self.owner == doc.owner && self.epoch == doc.epoch && self.scope == doc.scope
    }

    /// The document that holds the record.
    pub(crate) fn doc(&self) -> DocId {
        DocId {
            owner: self.owner.clone(),
            epoch: self.epoch,
            scope: self.scope.clone(),
        }
    }
}

/// An open rider or driver as a matching round sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Open {
    pub position: Position,
    pub expires_at: Millis,
}

impl Open {
    fn of(position: Position, expires_at: Millis) -> Self {
        Self {
            position,
            expires_at,
        }
    }
}

/// The record maps are B-trees, not hash maps, on purpose: request ids are
/// UUIDv7, so records arrive in key order and leave, a whole epoch at a time,
/// from the low end. A B-tree frees its nodes as they empty and its memory
/// follows the live count; a hash map under that churn fills with
/// tombstones, doubles its table and never gives the room back (measured:
/// 13 MiB of RSS growth in the second minute at 1,000 requests/s).
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    riders: BTreeMap<RequestId, Owned<RiderRecord>>,
    drivers: BTreeMap<RequestId, Owned<DriverRecord>>,
    claims: BTreeMap<ClaimId, Owned<ClaimRecord>>,
    decisions: HashMap<ClaimId, Owned<DecisionRecord>>,
    /// (driver, generation) → the node the driver was handed to.
    transfers: HashMap<(RequestId, u32), NodeId>,
    commits: BTreeMap<RequestId, Owned<CommitRecord>>,
    committed_drivers: BTreeMap<RequestId, RequestId>,
    /// Riders and drivers not yet committed (some may have expired), with
    /// what a matching round reads of them: a round's input is one pass
    /// over these, with no look-up in the record B-trees (which took 10-30
    /// ms under the core's lock for 20,000 open requests).
    open_riders: HashMap<RequestId, Open>,
    open_drivers: HashMap<RequestId, Open>,
    /// Commits not yet handed out by [`Ledger::take_new_commits`].
    fresh_commits: Vec<RequestId>,
}

impl Ledger {
    /// Adds a record from a document. A record seen before is ignored:
    /// keys are written once.
    pub(crate) fn apply(&mut self, doc: &DocId, record: Record) {
        match record {
            Record::Rider(r) => {
                if !self.commits.contains_key(&r.id) {
                    self.open_riders
                        .entry(r.id)
                        .or_insert(Open::of(r.position, r.expires_at));
                }
                self.riders
                    .entry(r.id)
                    .or_insert_with(|| Owned::new(doc, r));
            }
            Record::Driver(d) => {
                if !self.committed_drivers.contains_key(&d.id) {
                    self.open_drivers
                        .entry(d.id)
                        .or_insert(Open::of(d.position, d.expires_at));
                }
                self.drivers
                    .entry(d.id)
                    .or_insert_with(|| Owned::new(doc, d));
            }
            Record::Claim(c) => {
                self.claims
                    .entry(c.id)
                    .or_insert_with(|| Owned::new(doc, c));
            }
            Record::Decision(x) => {
                if x.transfer {
                    self.transfers
                        .entry((x.driver, x.generation))
                        .or_insert_with(|| x.to.clone());
                }
                self.decisions
                    .entry(x.claim)
                    .or_insert_with(|| Owned::new(doc, x));
            }
            Record::Commit(m) => {
                if !self.commits.contains_key(&m.rider) {
                    self.open_riders.remove(&m.rider);
                    self.open_drivers.remove(&m.driver);
                    self.committed_drivers.insert(m.driver, m.rider);
                    self.fresh_commits.push(m.rider);
                    self.commits.insert(m.rider, Owned::new(doc, m));
                }
            }
        }
    }

    /// The driver's owner now and the number of hand-overs so far.
    pub(crate) fn driver_owner(&self, driver: &RequestId) -> Option<(NodeId, u32)> {
        let mut owner = self.drivers.get(driver)?.owner.clone();
        let mut generation = 0;
        while let Some(next) = self.transfers.get(&(*driver, generation)) {
            owner = next.clone();
            generation += 1;
        }
        Some((owner, generation))
    }

    pub(crate) fn rider(&self, id: &RequestId) -> Option<&Owned<RiderRecord>> {
        self.riders.get(id)
    }

    pub(crate) fn driver(&self, id: &RequestId) -> Option<&Owned<DriverRecord>> {
        self.drivers.get(id)
    }

    /// Riders not committed (expired ones included).
    pub(crate) fn open_riders(&self) -> impl Iterator<Item = &Owned<RiderRecord>> {
        self.open_riders.keys().filter_map(|id| self.riders.get(id))
    }

    /// Drivers not committed (expired ones included).
    pub(crate) fn open_drivers(&self) -> impl Iterator<Item = &Owned<DriverRecord>> {
        self.open_drivers
            .keys()
            .filter_map(|id| self.drivers.get(id))
    }

    pub(crate) fn claims(&self) -> impl Iterator<Item = &Owned<ClaimRecord>> {
        self.claims.values()
    }

    pub(crate) fn decision(&self, claim: &ClaimId) -> Option<&Owned<DecisionRecord>> {
        self.decisions.get(claim)
    }

    /// A claim waits while it has no decision and its deadline has not come.
    pub(crate) fn claim_is_open(&self, claim: &ClaimRecord, now: Millis) -> bool {
        !self.decisions.contains_key(&claim.id) && now < claim.deadline
    }

    /// Open riders and drivers, as (riders, drivers) of id and what a round
    /// reads; expired ones included.
    pub(crate) fn open_index(
        &self,
    ) -> (
        impl Iterator<Item = (&RequestId, &Open)>,
        impl Iterator<Item = (&RequestId, &Open)>,
    ) {
        (self.open_riders.iter(), self.open_drivers.iter())
    }

    pub(crate) fn is_committed(&self, id: &RequestId) -> bool {
        self.commits.contains_key(id) || self.committed_drivers.contains_key(id)
    }

    /// A commit of `id` (its rider or its driver) was learnt and not yet
    /// handed out by [`Ledger::take_new_commits`]: it is about to be told.
    pub(crate) fn is_fresh_commit(&self, id: &RequestId) -> bool {
        let rider = self.committed_drivers.get(id).unwrap_or(id);
        self.commits.contains_key(rider) && self.fresh_commits.contains(rider)
    }

    pub(crate) fn commits(&self) -> impl Iterator<Item = &Owned<CommitRecord>> {
        self.commits.values()
    }

    /// Commits applied since the last call, in the order they arrived.
    pub(crate) fn take_new_commits(&mut self) -> Vec<Owned<CommitRecord>> {
        std::mem::take(&mut self.fresh_commits)
            .into_iter()
            .filter_map(|rider| self.commits.get(&rider).cloned())
            .collect()
    }

    /// Forgets the records of a dropped document (those the ledger holds
    /// from that very document: a key written elsewhere too stays).
    pub(crate) fn forget(&mut self, doc: &DocId, records: &[Record]) {
        for record in records {
            match record {
                Record::Rider(r) => {
                    if self.riders.get(&r.id).is_some_and(|o| o.is_from(doc)) {
                        self.riders.remove(&r.id);
                        self.open_riders.remove(&r.id);
                    }
                }
                Record::Driver(d) => {
                    if self.drivers.get(&d.id).is_some_and(|o| o.is_from(doc)) {
                        self.drivers.remove(&d.id);
                        self.open_drivers.remove(&d.id);
                    }
                }
                Record::Claim(c) => {
                    if self.claims.get(&c.id).is_some_and(|o| o.is_from(doc)) {
                        self.claims.remove(&c.id);
                    }
                }
                Record::Decision(x) => {
                    if self.decisions.get(&x.claim).is_some_and(|o| o.is_from(doc)) {
                        self.decisions.remove(&x.claim);
                        if x.transfer
                            && self.transfers.get(&(x.driver, x.generation)) == Some(&x.to)
                        {
                            self.transfers.remove(&(x.driver, x.generation));
                        }
                    }
                }
                Record::Commit(m) => {
                    if self.commits.get(&m.rider).is_some_and(|o| o.is_from(doc)) {
                        self.commits.remove(&m.rider);
                        if self.committed_drivers.get(&m.driver) == Some(&m.rider) {
                            self.committed_drivers.remove(&m.driver);
                        }
                    }
                }
            }
        }
    }

    /// The document that holds a rider's or a driver's record.
    pub(crate) fn home_of(&self, id: &RequestId) -> Option<DocId> {
        self.riders
            .get(id)
            .map(Owned::doc)
            .or_else(|| self.drivers.get(id).map(Owned::doc))
    }
}
