//! The test harness, compiled only for tests: the deterministic simulation
//! of the shipped node, the model check it is replayed against, and the
//! mesh over real QUIC with several nodes in one process.

mod mesh_over_quic;
pub(crate) mod model;
pub(crate) mod simulation;
pub(crate) mod trace;

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use ride_types::clock::Millis;
use ride_types::halo::Layout;
use ride_types::ids::NodeId;

use crate::disk::journal::{Durability, Journal};
use crate::disk::match_log::MatchLog;
use crate::protocol::persist::Loaded;
use crate::protocol::replica::{Hooks, Replica, ReplicaConfig};
use crate::runtime::admission::Limits;
use crate::runtime::node::Node;
use crate::runtime::recent_matches::Retention;

/// A node `node` of region `dhaka` on an unmapped layout, that runs a round
/// at every step and decides at once.
pub(crate) fn replica_config(node: &str) -> ReplicaConfig {
    ReplicaConfig {
        node: NodeId(node.into()),
        region: "dhaka".into(),
        layout: Arc::new(Layout::unmapped(5.0)),
        incarnation: 1,
        request_ttl_ms: 30_000,
        claim_ttl_ms: 2_000,
        epoch_ms: 1_000,
        intake_flush_ms: 20,
        max_pickup_km: 5.0,
        match_interval_ms: 0,
        ready_grace_ms: 0,
        hooks: Hooks::default(),
    }
}

/// A new replica: nothing loaded, started at time 0.
pub(crate) fn new_replica(config: ReplicaConfig) -> Replica {
    Replica::open(config, Loaded::default(), Millis(0)).expect("nothing to load")
}

/// The node's shared state around a new replica, journaling into a folder
/// of its own that lives as long as this does.
pub(crate) struct TestCore {
    core: Node,
    dir: tempfile::TempDir,
}

impl TestCore {
    pub(crate) fn new(config: ReplicaConfig, retention: Retention) -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let (journal, _) = Journal::open(dir.path(), Durability::PageCache).expect("a journal");
        let match_log = MatchLog::open(dir.path()).expect("a match log");
        let core = Node::new(
            new_replica(config),
            journal,
            match_log,
            retention,
            Duration::from_secs(1),
        );
        Self { core, dir }
    }

    /// The same state, shedding intake past `limits`.
    pub(crate) fn with_limits(self, limits: Limits) -> Self {
        Self {
            core: self.core.with_limits(limits),
            dir: self.dir,
        }
    }

    /// The state, to share with tasks (the transport), and its folder.
    pub(crate) fn into_shared(self) -> (Arc<Node>, tempfile::TempDir) {
        (Arc::new(self.core), self.dir)
    }
}

impl Deref for TestCore {
    type Target = Node;

    fn deref(&self) -> &Node {
        &self.core
    }
}
