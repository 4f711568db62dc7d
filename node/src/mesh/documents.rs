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
//! Each (document, peer) pair has its own automerge sync state.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

use automerge::sync::{self, SyncDoc};
use automerge::{
    ActorId, AutoCommit, PatchAction, ROOT, ScalarValue, Value, transaction::Transactable,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::record::RecordV1;
use crate::ids::NodeId;

/// A document: its owner and the epoch of the owner's clock it covers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DocId {
    pub owner: NodeId,
    pub epoch: u64,
}

#[derive(Debug, Error)]
pub enum DocumentError {
    #[error("bad sync message for {doc:?}: {reason}")]
    BadSync { doc: DocId, reason: String },
    #[error("cannot write to {doc:?}: {reason}")]
    Write { doc: DocId, reason: String },
}

struct Document {
    doc: AutoCommit,
    sync: HashMap<NodeId, sync::State>,
    /// Bytes of the records read out of it (keys and values): its size as
    /// the dashboard shows it. automerge's own size needs a full save,
    /// too costly to run every second.
    record_bytes: u64,
}

impl Document {
    fn new() -> Self {
        let mut doc = AutoCommit::new();
        doc.update_diff_cursor();
        Self {
            doc,
            sync: HashMap::new(),
            record_bytes: 0,
        }
    }
}

/// A record read out of a document, with the document's owner.
pub type Change = (NodeId, RecordV1);

/// What was read from documents: good records and what was rejected.
#[derive(Debug, Default)]
pub struct Changes {
    pub records: Vec<Change>,
    pub rejected: Vec<String>,
}

pub struct Documents {
    docs: BTreeMap<DocId, Document>,
    /// The automerge actor this node writes its own documents as.
    actor: ActorId,
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

impl Documents {
    pub fn new(node: &NodeId, incarnation: u64) -> Self {
        Self {
            docs: BTreeMap::new(),
            actor: actor_for(node, incarnation),
        }
    }

    /// Writes records into a document of one's own (created if new).
    pub fn write(&mut self, doc: &DocId, records: &[RecordV1]) -> Result<(), DocumentError> {
        let actor = &self.actor;
        let entry = self.docs.entry(doc.clone()).or_insert_with(Document::new);
        entry.doc.set_actor(actor.clone());
        for record in records {
            entry
                .doc
                .put(ROOT, record.key(), ScalarValue::Bytes(record.encode()))
                .map_err(|e| DocumentError::Write {
                    doc: doc.clone(),
                    reason: e.to_string(),
                })?;
        }
        entry.doc.commit();
        Ok(())
    }

    /// Applies a peer's sync message for one document.
    pub fn receive(
        &mut self,
        from: &NodeId,
        doc: &DocId,
        message: &[u8],
    ) -> Result<(), DocumentError> {
        let bad = |reason: String| DocumentError::BadSync {
            doc: doc.clone(),
            reason,
        };
        let message = sync::Message::decode(message).map_err(|e| bad(e.to_string()))?;
        let entry = self.docs.entry(doc.clone()).or_insert_with(Document::new);
        let state = entry.sync.entry(from.clone()).or_default();
        entry
            .doc
            .sync()
            .receive_sync_message(state, message)
            .map_err(|e| bad(e.to_string()))
    }

    /// Records written since the last call, from every document.
    pub fn take_changes(&mut self) -> Changes {
        let mut changes = Changes::default();
        for (id, entry) in &mut self.docs {
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
                match RecordV1::decode(&key, bytes) {
                    Ok(record) => changes.records.push((id.owner.clone(), record)),
                    Err(e) => changes.rejected.push(format!("{id:?}: {e}")),
                }
            }
        }
        changes
    }

    /// The sync messages that `peer` needs now, one per document at most.
    pub fn outgoing(&mut self, peer: &NodeId) -> Vec<(DocId, Vec<u8>)> {
        let mut out = Vec::new();
        for (id, entry) in &mut self.docs {
            let state = entry.sync.entry(peer.clone()).or_default();
            if let Some(message) = entry.doc.sync().generate_sync_message(state) {
                out.push((id.clone(), message.encode()));
            }
        }
        out
    }

    /// Forgets what was exchanged with `peer` (its connection was lost), so
    /// the next messages start a fresh sync.
    pub fn reset_peer(&mut self, peer: &NodeId) {
        for entry in self.docs.values_mut() {
            entry.sync.remove(peer);
        }
    }

    /// Drops every document of an epoch before `epoch`.
    pub fn drop_before(&mut self, epoch: u64) -> usize {
        let before = self.docs.len();
        self.docs.retain(|id, _| id.epoch >= epoch);
        before - self.docs.len()
    }

    /// What a restart from durable storage leaves: only `node`'s own
    /// documents, no sync state, a new actor, and
    /// [`Documents::take_changes`] reading the kept documents whole again.
    pub fn restart(&mut self, node: &NodeId, incarnation: u64) {
        self.actor = actor_for(node, incarnation);
        self.docs.retain(|id, _| &id.owner == node);
        for entry in self.docs.values_mut() {
            entry.sync.clear();
            entry.doc.reset_diff_cursor();
            entry.record_bytes = 0;
        }
    }

    /// A hash of every document's id and heads: equal on nodes that hold
    /// the same documents with the same changes.
    pub fn digest(&mut self) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for (id, entry) in &mut self.docs {
            id.hash(&mut hasher);
            let mut heads = entry.doc.get_heads();
            heads.sort();
            heads.hash(&mut hasher);
        }
        hasher.finish()
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
