//! The automerge documents a node holds and syncs.
//!
//! automerge keeps every change forever and slows down with many small
//! transactions (automerge#348, #1387), so history is bounded by design: each
//! owner writes one document per short epoch of its clock, writes are
//! committed in batches (one change per flush, not per record), and a whole
//! document is dropped once every record in it is past use. Memory then
//! tracks the traffic of the last few epochs, not all traffic ever seen.
//!
//! Every document has exactly one writer (its owner); others only merge it.
//! Each (document, peer) pair has its own automerge sync state. A document
//! also has a scope (see [`ride_types::halo`]): the regions it goes to. A node
//! holds only documents whose scope has a region it serves (its own, and any
//! it adopted while that region is down), and offers a peer only those whose
//! scope has one the peer serves.
//!
//! Two rules keep a node's view safe whatever the clocks say:
//! - its own documents are journaled ([`super::persist`]) before anyone can
//!   read them, and are never learnt back from a peer (a peer's copy may be
//!   stale);
//! - a dropped document stays dropped: a peer that still has it (a late
//!   reconnect) cannot bring it, or the commits in it, back.
//!
//! Age is measured on this node's clock, from when a document last changed
//! here, never from the timestamps its writer put in it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};

use automerge::sync::{self, SyncDoc};
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, AutoCommit, ChangeHash, PatchAction, ROOT, ReadDoc, ScalarValue, Value};
use thiserror::Error;

use super::codec::Batch;
pub use super::doc_id::DocId;
use super::persist::{Dropped, Loaded, Part, Persist};
use super::record::Record;
use ride_types::clock::Millis;
use ride_types::halo::{RegionIndex, Scope};
use ride_types::ids::NodeId;

/// How long a message that only acknowledges waits after the previous
/// message for the same document and peer. Each document has one writer,
/// which pushes its changes whether or not the last ones were
/// acknowledged, so nothing waits on an acknowledgement but the writer's
/// bookkeeping. Receiving one costs automerge a walk of the document's
/// whole history (`filter_changes`), and answering every change message
/// doubled the messages a mesh sends: acknowledging in batches keeps both
/// per document, not per change. (The messages fell by a third; the CPU
/// saved was within a loaded machine's noise: BENCHMARKS.md.)
pub const ACK_EVERY_MS: u64 = 100;

#[derive(Debug, Error)]
pub enum DocumentError {
    #[error("bad sync message for {doc:?}: {reason}")]
    BadSync { doc: DocId, reason: String },
    #[error("cannot write to {doc:?}: {reason}")]
    Write { doc: DocId, reason: String },
    #[error("cannot load own document {doc:?} from the journal: {reason}")]
    Load { doc: DocId, reason: String },
}

struct Document {
    doc: AutoCommit,
    sync: HashMap<NodeId, sync::State>,
    /// Bumped whenever the document changes here.
    version: u64,
    /// Batches this incarnation wrote into it: names the next one.
    batches: u64,
    /// Per peer, the version at which it last had nothing to send that
    /// peer, if nothing was received from it since: it has nothing now
    /// either, and generating a sync message to find that out is most of
    /// a quiet mesh's work.
    quiet: HashMap<NodeId, u64>,
    /// Per peer, when this node last sent it a sync message for this
    /// document: see [`ACK_EVERY_MS`].
    sent_at: HashMap<NodeId, Millis>,
    /// Bytes of the records read out of it (keys and values): its size as
    /// the dashboard shows it. automerge's own size needs a full save,
    /// too costly to run every second.
    record_bytes: u64,
    /// This node's clock when the document last changed here.
    touched_at: Millis,
    /// The owner's clock at its newest change (each change carries it).
    written_at: Option<Millis>,
}

impl Document {
    fn new(now: Millis) -> Self {
        let mut doc = AutoCommit::new();
        doc.update_diff_cursor();
        Self::holding(doc, now)
    }

    fn holding(doc: AutoCommit, now: Millis) -> Self {
        Self {
            doc,
            sync: HashMap::new(),
            version: 0,
            batches: 0,
            quiet: HashMap::new(),
            sent_at: HashMap::new(),
            record_bytes: 0,
            touched_at: now,
            written_at: None,
        }
    }

    /// The owner's clock at the newest change not reachable from `since`.
    fn newest_write(&mut self, since: &[ChangeHash]) -> Option<Millis> {
        self.doc
            .get_changes(since)
            .iter()
            .filter_map(|c| u64::try_from(c.timestamp()).ok())
            .max()
            .map(Millis)
    }
}

/// A record read out of a document.
pub type Change = (DocId, Record);

/// What was read from documents: good records and what was rejected.
#[derive(Debug, Default)]
pub struct Changes {
    pub records: Vec<Change>,
    pub rejected: Vec<String>,
}

/// The heads of every document a node holds, as its peers are told.
pub type Inventory = Vec<(DocId, Vec<[u8; 32]>)>;

pub struct Documents {
    owner: NodeId,
    /// The regions this node serves: its own and any it adopted (see
    /// [`ride_types::adoption`]). It holds only documents scoped to one.
    served: Scope,
    /// What each region's nodes serve, where that is more than the region
    /// itself: the pair digests compare what two nodes share.
    shares: BTreeMap<RegionIndex, Scope>,
    docs: BTreeMap<DocId, Document>,
    /// The automerge actor this node writes its own documents as, and the
    /// incarnation it stands for.
    actor: ActorId,
    incarnation: u64,
    /// What the disk must keep before anything written since leaves the
    /// node (see [`super::persist`]).
    unpersisted: Vec<Persist>,
    /// Whether a peer's copy of an own document is taken (see
    /// [`super::replica::Hooks::relearn_own_documents`]).
    relearn_own: bool,
    /// Documents dropped here, kept with the journal: refused if offered
    /// again (a tombstone per document; per owner, a floor at or below
    /// which everything is refused once tombstones are old).
    dropped: Dropped,
    /// Peers' clocks minus this node's, as measured, by node.
    offsets: HashMap<NodeId, i64>,
    /// Documents changed since the last [`Documents::take_changes`]: it
    /// reads only those (a node holds hundreds of documents, and a sync
    /// message changes one).
    changed: BTreeSet<DocId>,
    /// Bumped whenever any document changes or goes; the digests below
    /// were computed at `digested.0` (heads cost a walk of each document,
    /// and every peer's status asks for them).
    generation: u64,
    digested: Option<(u64, u64, BTreeMap<RegionIndex, u64>)>,
}

/// One actor per node incarnation: a restarted node must not reuse the
/// sequence numbers of changes it may have sent before it crashed.
fn actor_for(node: &NodeId, incarnation: u64) -> ActorId {
    let mut bytes = Vec::with_capacity(16);
    for salt in [0u8, 1] {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (salt, node, incarnation).hash(&mut h);
        bytes.extend_from_slice(&h.finish().to_be_bytes());
    }
    ActorId::from(bytes)
}

/// The key of one flush's value: unique (this incarnation and its count of
/// batches in the document), and sorting before every key written earlier.
///
/// The order is for the peers. Applying a change to a map, automerge walks
/// the map's ops in key order up to the new key, and copies every value it
/// passes (`BatchApply`'s map walk hydrates each op). With the newest key
/// first, that walk stops at once; with it last, every sync of a flush
/// would copy every batch the document already holds (`cargo bench -p node
/// --bench replication`: 185 us against 73 us a flush, in a document of
/// 1,000 flushes). Both counters are written complemented and fixed-width
/// hex, so later numbers sort first.
fn batch_key(incarnation: u64, batch: u64) -> String {
    format!("{:016x}/{:016x}", !incarnation, !batch)
}

impl Documents {
    /// `owner`'s documents as its journal kept them (`loaded`), to be read
    /// whole by the next [`Documents::take_changes`].
    pub fn open(
        owner: &NodeId,
        region: RegionIndex,
        incarnation: u64,
        relearn_own: bool,
        loaded: Loaded,
        now: Millis,
    ) -> Result<Self, DocumentError> {
        let mut docs = BTreeMap::new();
        for (part, bytes) in loaded.docs {
            let id = DocId {
                owner: owner.clone(),
                epoch: part.epoch,
                scope: part.scope,
            };
            let mut doc = AutoCommit::load(&bytes).map_err(|e| DocumentError::Load {
                doc: id.clone(),
                reason: e.to_string(),
            })?;
            doc.reset_diff_cursor();
            // Its age goes on from its last write (this node's clock, which
            // each change carries), not from the restart.
            let mut document = Document::holding(doc, now);
            document.written_at = document.newest_write(&[]);
            docs.insert(id, document);
        }
        Ok(Self {
            owner: owner.clone(),
            served: Scope::of([region]),
            shares: BTreeMap::new(),
            changed: docs.keys().cloned().collect(),
            generation: 0,
            digested: None,
            docs,
            actor: actor_for(owner, incarnation),
            incarnation,
            unpersisted: Vec::new(),
            relearn_own,
            dropped: loaded.dropped,
            offsets: HashMap::new(),
        })
    }

    /// Writes records into documents of one's own (created if new), one
    /// change per document, and queues the changes for the disk
    /// ([`Documents::take_persist`]).
    pub fn write(
        &mut self,
        writes: Vec<(DocId, Vec<Record>)>,
        now: Millis,
    ) -> Result<(), DocumentError> {
        let mut journaled = Vec::with_capacity(writes.len());
        for (id, records) in writes {
            debug_assert_eq!(id.owner, self.owner, "a node writes only its own documents");
            self.dropped.docs.remove(&id);
            let entry = self
                .docs
                .entry(id.clone())
                .or_insert_with(|| Document::new(now));
            entry.doc.set_actor(self.actor.clone());
            entry.version += 1;
            self.changed.insert(id.clone());
            self.generation += 1;
            entry.touched_at = now;
            entry.written_at = Some(now);
            let key = batch_key(self.incarnation, entry.batches);
            entry.batches += 1;
            entry
                .doc
                .put(ROOT, key, ScalarValue::Bytes(Batch::encode(&records)))
                .map_err(|e| DocumentError::Write {
                    doc: id.clone(),
                    reason: e.to_string(),
                })?;
            let time = i64::try_from(now.0).unwrap_or(i64::MAX);
            entry
                .doc
                .commit_with(CommitOptions::default().with_time(time));
            // The change just made, as automerge encodes it: appending
            // it costs what the change costs (`save_incremental` walks the
            // document's history to find what is new).
            if let Some(change) = entry.doc.get_last_local_change() {
                journaled.push((Part::of(&id), change.raw_bytes().to_vec()));
            }
        }
        self.unpersisted.push(Persist::Changes(journaled));
        Ok(())
    }

    /// Forgets the accepted requests journaled in epochs before `epoch`.
    pub fn drop_intake_before(&mut self, epoch: u64) {
        self.unpersisted.push(Persist::IntakeBefore(epoch));
    }

    /// What the disk must keep, in order, before anything written so far
    /// leaves the node.
    pub fn take_persist(&mut self) -> Vec<Persist> {
        std::mem::take(&mut self.unpersisted)
    }

    /// Applies a peer's sync message for one document. Returns `false`
    /// when the document is refused: dropped here before, one of this
    /// node's own that it does not hold (a peer's copy of it may be stale),
    /// or not scoped to a region this node serves.
    pub fn receive(
        &mut self,
        from: &NodeId,
        doc: &DocId,
        message: &[u8],
        now: Millis,
    ) -> Result<bool, DocumentError> {
        let bad = |reason: String| DocumentError::BadSync {
            doc: doc.clone(),
            reason,
        };
        let message = sync::Message::decode(message).map_err(|e| bad(e.to_string()))?;
        if !self.docs.contains_key(doc) && self.refuses(doc) {
            return Ok(false);
        }
        let entry = self
            .docs
            .entry(doc.clone())
            .or_insert_with(|| Document::new(now));
        let before = entry.doc.get_heads();
        entry.quiet.remove(from);
        let state = entry.sync.entry(from.clone()).or_default();
        entry
            .doc
            .sync()
            .receive_sync_message(state, message)
            .map_err(|e| bad(e.to_string()))?;
        if entry.doc.get_heads() != before {
            self.changed.insert(doc.clone());
            self.generation += 1;
            entry.version += 1;
            entry.touched_at = now;
            entry.written_at = entry.newest_write(&before).max(entry.written_at);
        }
        Ok(true)
    }

    /// Whether `doc` was dropped here (its tombstone or its owner's floor).
    pub fn was_dropped(&self, doc: &DocId) -> bool {
        self.dropped.docs.contains_key(doc)
            || self
                .dropped
                .floors
                .get(&doc.owner)
                .is_some_and(|f| doc.epoch <= *f)
    }

    fn refuses(&self, doc: &DocId) -> bool {
        (doc.owner == self.owner && !self.relearn_own)
            || !doc.scope.intersects(&self.served)
            || self.was_dropped(doc)
    }

    /// Records written since the last call, from every document.
    pub fn take_changes(&mut self) -> Changes {
        let mut changes = Changes::default();
        for id in std::mem::take(&mut self.changed) {
            let Some(entry) = self.docs.get_mut(&id) else {
                continue;
            };
            let id = &id;
            for patch in entry.doc.diff_incremental() {
                let PatchAction::PutMap { key, value, .. } = patch.action else {
                    changes
                        .rejected
                        .push(format!("{id:?}: a change that is not a record"));
                    continue;
                };
                let Value::Scalar(scalar) = value.0 else {
                    changes
                        .rejected
                        .push(format!("{id:?}: {key} is not a bytes value"));
                    continue;
                };
                let ScalarValue::Bytes(bytes) = scalar.as_ref() else {
                    changes
                        .rejected
                        .push(format!("{id:?}: {key} is not a bytes value"));
                    continue;
                };
                entry.record_bytes += (key.len() + bytes.len()) as u64;
                match Batch::decode(&key, bytes) {
                    Ok(records) => changes
                        .records
                        .extend(records.into_iter().map(|r| (id.clone(), r))),
                    Err(e) => changes.rejected.push(format!("{id:?}: {e}")),
                }
            }
        }
        changes
    }

    /// Every record a document holds.
    pub fn records_of(&self, id: &DocId) -> Vec<Record> {
        let Some(entry) = self.docs.get(id) else {
            return Vec::new();
        };
        entry
            .doc
            .map_range(ROOT, ..)
            .flat_map(|item| {
                let Value::Scalar(scalar) = Value::from(item.value) else {
                    return Vec::new();
                };
                let ScalarValue::Bytes(bytes) = scalar.as_ref() else {
                    return Vec::new();
                };
                Batch::decode(&item.key, bytes).unwrap_or_default()
            })
            .collect()
    }

    /// The sync messages that `peer`, which serves the regions of
    /// `served`, needs now, one per document at most. A message that would only acknowledge (the
    /// peer already has every change this node has) waits until
    /// [`ACK_EVERY_MS`] after the last one sent for that document.
    pub fn outgoing(
        &mut self,
        peer: &NodeId,
        served: &Scope,
        now: Millis,
    ) -> Vec<(DocId, Vec<u8>)> {
        let mut out = Vec::new();
        for (id, entry) in &mut self.docs {
            if entry.quiet.get(peer) == Some(&entry.version) || !id.scope.intersects(served) {
                continue;
            }
            let sent_lately = entry
                .sent_at
                .get(peer)
                .is_some_and(|at| now < at.plus(ACK_EVERY_MS));
            let state = entry.sync.entry(peer.clone()).or_default();
            // Only then are the heads worth comparing: the peer has every
            // change this node has, so a message would only acknowledge.
            if sent_lately && state.their_heads.as_ref() == Some(&entry.doc.get_heads()) {
                continue;
            }
            match entry.doc.sync().generate_sync_message(state) {
                Some(message) => {
                    entry.quiet.remove(peer);
                    entry.sent_at.insert(peer.clone(), now);
                    out.push((id.clone(), message.encode()));
                }
                None => {
                    entry.quiet.insert(peer.clone(), entry.version);
                }
            }
        }
        out
    }

    /// Forgets what was exchanged with `peer` (its connection was lost), so
    /// the next messages start a fresh sync.
    pub fn reset_peer(&mut self, peer: &NodeId) {
        for entry in self.docs.values_mut() {
            entry.sync.remove(peer);
            entry.quiet.remove(peer);
            entry.sent_at.remove(peer);
        }
    }

    /// A peer's clock minus this node's, as last measured.
    pub fn set_clock_offset(&mut self, node: &NodeId, offset_ms: i64) {
        self.offsets.insert(node.clone(), offset_ms);
    }

    /// Documents whose newest change is at least `retain_ms` old at `now`,
    /// on this node's clock. The age runs from the owner's write, mapped
    /// onto this clock through the measured offset, so that nodes that
    /// received a document at different times (one was partitioned away)
    /// still drop it together; without a measurement, or if the mapping
    /// says later, from the moment it changed here. Only liveness rests on
    /// this: what may be dropped safely is the caller's rule.
    pub fn unchanged_for(&self, retain_ms: u64, now: Millis) -> Vec<DocId> {
        self.docs
            .iter()
            .filter(|(id, d)| {
                let offset = if id.owner == self.owner {
                    Some(0)
                } else {
                    self.offsets.get(&id.owner.node_of_owner()).copied()
                };
                let written_here = d
                    .written_at
                    .zip(offset)
                    .map(|(at, offset)| Millis(at.0.saturating_add_signed(-offset)));
                let since = written_here.map_or(d.touched_at, |w| w.min(d.touched_at));
                since.plus(retain_ms) <= now
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub fn holds(&self, id: &DocId) -> bool {
        self.docs.contains_key(id)
    }

    /// Drops documents for good: own ones leave the journal too, and every
    /// one is refused if a peer offers it again. Tombstones older than
    /// `tombstone_ms` become a per-owner floor.
    pub fn drop_docs(&mut self, ids: &[DocId], tombstone_ms: u64, now: Millis) {
        for id in ids {
            if self.docs.remove(id).is_some() {
                self.changed.remove(id);
                self.generation += 1;
                self.dropped.docs.insert(id.clone(), now);
            }
        }
        let horizon = now.minus(tombstone_ms);
        let expired: Vec<DocId> = self
            .dropped
            .docs
            .iter()
            .filter(|(_, at)| **at < horizon)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.dropped.docs.remove(&id);
            let floor = self.dropped.floors.entry(id.owner).or_insert(0);
            *floor = (*floor).max(id.epoch);
        }
        // The tombstones first: a crash between the two steps then leaves
        // a journaled document that is refused nowhere it matters.
        self.unpersisted
            .push(Persist::Dropped(self.dropped.clone()));
        for id in ids.iter().filter(|id| id.owner == self.owner) {
            self.unpersisted.push(Persist::Remove(Part::of(id)));
        }
    }

    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// Bytes of the records held in every document.
    pub fn record_bytes(&self) -> u64 {
        self.docs.values().map(|d| d.record_bytes).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }
}

mod coverage;
#[cfg(test)]
mod tests;
