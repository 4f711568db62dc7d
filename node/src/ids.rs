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

impl RequestId {
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
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
