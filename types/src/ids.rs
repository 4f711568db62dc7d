//! Identifiers.
//!
//! Request ids are UUIDv7: unique across every node without coordination
//! (74 random bits), and ordered by creation time to the millisecond, which
//! makes them a cheap, deterministic tie-breaker that every node computes the
//! same way.

use std::fmt;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::clock::Millis;

/// A rider or driver request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(pub Uuid);

/// How long an id this node does not know yet may still be a request that
/// another node (a replica of the same region behind a load balancer, say)
/// accepted and has not replicated here yet.
pub const REPLICATION_GRACE_MS: u64 = 10_000;

impl RequestId {
    /// A fresh id made now, for tests: a node makes its ids with
    /// [`Entropy::request_id`], on the clock its core is given.
    #[cfg(any(test, feature = "testing"))]
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    /// When the id was made, for UUIDv7 ids.
    pub fn created_at(&self) -> Option<Millis> {
        let (secs, nanos) = self.0.get_timestamp()?.to_unix();
        Some(Millis(secs * 1000 + u64::from(nanos / 1_000_000)))
    }

    /// Made within [`REPLICATION_GRACE_MS`] of `now` (either way, for
    /// clock skew): an id that may yet arrive by replication.
    pub fn may_still_arrive(&self, now: Millis) -> bool {
        self.created_at()
            .is_some_and(|at| at.0.abs_diff(now.0) <= REPLICATION_GRACE_MS)
    }
}

/// Where a node's new ids get their random bits. A node draws them from
/// the OS; the simulation from its seed, so that a seed replays the same
/// ids, and with them the same tie-breaks and the same orders, every time.
pub enum Entropy {
    Os,
    Seeded(Box<Mutex<StdRng>>),
}

impl Entropy {
    pub fn seeded(seed: u64) -> Self {
        Self::Seeded(Box::new(Mutex::new(StdRng::seed_from_u64(seed))))
    }

    fn fill(&self, bytes: &mut [u8]) {
        match self {
            Self::Os => rand::rng().fill(bytes),
            Self::Seeded(rng) => rng.lock().fill(bytes),
        }
    }

    /// A request id made at `now` on this node's clock (UUIDv7), so that
    /// its age is read on the clock that made it.
    pub fn request_id(&self, now: Millis) -> RequestId {
        let mut random = [0; 10];
        self.fill(&mut random);
        RequestId(uuid::Builder::from_unix_timestamp_millis(now.0, &random).into_uuid())
    }

    /// 48 random bits in hex: what makes a name unique (an owner
    /// identity's lineage, a node id made up on first start).
    pub fn suffix(&self) -> String {
        let mut random = [0; 6];
        self.fill(&mut random);
        random.iter().map(|b| format!("{b:02x}")).collect()
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
    /// the node's journal) belongs to.
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

    #[test]
    fn a_seed_makes_the_same_ids_on_the_clock_it_is_given() {
        let at = Millis(1_800_000_000_123);
        let (a, b) = (Entropy::seeded(7), Entropy::seeded(7));
        let id = a.request_id(at);
        assert_eq!(id, b.request_id(at));
        assert_eq!(id.created_at(), Some(at));
        assert_eq!(a.suffix(), b.suffix());
        assert_ne!(a.request_id(at), id, "a seed's ids do not repeat");
        assert_ne!(Entropy::Os.request_id(at), Entropy::Os.request_id(at));
        assert_eq!(Entropy::Os.suffix().len(), 12);
    }
}
