//! What names a document. A module of its own because both the documents
//! and what the disk keeps of them ([`super::persist`]) speak of it.

use serde::{Deserialize, Serialize};

use ride_types::halo::Scope;
use ride_types::ids::NodeId;

/// A document: its owner, the epoch of the owner's clock it covers, and the
/// regions it goes to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DocId {
    pub owner: NodeId,
    pub epoch: u64,
    pub scope: Scope,
}
