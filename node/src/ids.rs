//! Identifiers.
//!
//! Request ids are UUIDv7: unique across every node without coordination
//! (74 random bits), and ordered by creation time, which makes them a cheap,
//! deterministic tie-breaker that every node computes the same way.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A rider or driver request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(pub Uuid);

/// How long an id this node does not know yet may still be a request that
/// another node (a replica of the same region behind a load balancer, say)
/// accepted and has not replicated here yet.
pub const REPLICATION_GRACE_MS: u64 = 10_000;

impl RequestId {
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    /// When the id was made, for UUIDv7 ids.
    pub fn created_at(&self) -> Option<crate::clock::Millis> {
        let (secs, nanos) = self.0.get_timestamp()?.to_unix();
        Some(crate::clock::Millis(
            secs * 1000 + u64::from(nanos / 1_000_000),
        ))
    }

    /// Made within [`REPLICATION_GRACE_MS`] of `now` (either way, for
    /// clock skew): an id that may yet arrive by replication.
    pub fn may_still_arrive(&self, now: crate::clock::Millis) -> bool {
        self.created_at()
            .is_some_and(|at| at.0.abs_diff(now.0) <= REPLICATION_GRACE_MS)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The node that accepted a request: its owner, the only node that may commit
/// a match for it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub String);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl NodeId {
    /// The node an owner identity (`<node>@<lineage>`, see
    /// [`crate::mesh::journal::open_owner`]) belongs to.
    pub fn node_of_owner(&self) -> NodeId {
        match self.0.split_once('@') {
            Some((node, _)) => NodeId(node.to_owned()),
            None => self.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Millis;

    #[test]
    fn new_ids_may_still_arrive_old_and_random_ones_not() {
        let id = RequestId::generate();
        let made = id.created_at().unwrap();
        assert!(made.0.abs_diff(Millis::now().0) < 1_000);
        assert!(id.may_still_arrive(made));
        assert!(id.may_still_arrive(made.plus(REPLICATION_GRACE_MS)));
        assert!(!id.may_still_arrive(made.plus(REPLICATION_GRACE_MS + 1)));
        assert!(!RequestId(Uuid::from_u128(42)).may_still_arrive(made));
    }
}
