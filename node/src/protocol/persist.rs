//! What the protocol hands the disk, and what it reads back at start.
//!
//! The protocol owns no file. Whatever it writes that must survive a crash
//! (a change to one of its own documents, the set of documents it dropped,
//! a file to delete) it queues as a [`Persist`]; the runtime appends the
//! queue to the journal, in order, and syncs it before anything the
//! protocol produced afterwards leaves the node (a sync message, a claim's
//! answer, a notice to a client). At start the journal hands back what it
//! kept as [`Loaded`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use ride_types::clock::Millis;
use ride_types::halo::Scope;
use ride_types::ids::NodeId;

use super::doc_id::DocId;

/// One of this node's own documents, as its journal keeps it: the owner is
/// always this node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Part {
    pub epoch: u64,
    pub scope: Scope,
}

impl Part {
    pub fn of(doc: &DocId) -> Self {
        Self {
            epoch: doc.epoch,
            scope: doc.scope.clone(),
        }
    }
}

/// The documents a node has dropped, kept with its journal so that a
/// restart does not let a peer bring them back: each dropped document with
/// the node's clock when it was dropped, and per owner the newest epoch
/// below which everything was dropped long ago.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dropped {
    pub docs: BTreeMap<DocId, Millis>,
    pub floors: BTreeMap<NodeId, u64>,
}

/// What a journal held when it was opened.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Every own document's changes.
    pub docs: BTreeMap<Part, Vec<u8>>,
    /// By epoch, the requests accepted then, as appended (whether or not
    /// their documents hold them yet).
    pub intake: BTreeMap<u64, Vec<u8>>,
    pub dropped: Dropped,
}

/// One thing the disk must keep before the protocol's next output leaves
/// the node.
#[derive(Debug, Clone, PartialEq)]
pub enum Persist {
    /// New changes to own documents, one per document, as automerge
    /// encodes them.
    Changes(Vec<(Part, Vec<u8>)>),
    /// The documents dropped so far, replacing what was kept: written
    /// before the files of dropped documents go, so that a crash between
    /// the two leaves a kept document that is refused where it matters.
    Dropped(Dropped),
    /// An own document dropped: its changes are no longer needed.
    Remove(Part),
    /// Requests accepted in epochs before this one are over.
    IntakeBefore(u64),
}
