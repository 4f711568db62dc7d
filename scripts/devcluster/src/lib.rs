//! One launcher for local meshes of `node` processes.
//!
//! Before this crate, three places started a mesh, each its own way: the
//! integration tests (`node/tests/it/support.rs`), the scripts
//! (`scripts/lib/mesh-lib.sh` with a Python helper) and the transport's unit
//! tests. The tests and the scripts now start nodes through this crate,
//! as corrosion's `corro-devcluster` does: it owns the plan (regions, node
//! ids, loopback ports, WAN relays and their delays), the certificates,
//! spawning a node and waiting for its ready file, the relays, nginx in
//! front of replicas, status lines, and a state file (`cluster.json`) so
//! that separate invocations of the `devcluster` binary act on one running
//! mesh. It also keeps a mesh running while nodes die (`up --supervise`
//! reports each death and can start the node again) and takes a whole
//! region down and back on demand (`kill-region`, `start-region`), for
//! showing a region's failover.
//!
//! The region files are read by the node binary itself (`node regions
//! list|distances`), never parsed here: one reading of the format.
//!
//! `node/src/testkit/mesh_over_quic.rs` stays apart on purpose: it runs
//! transports in-process on `127.0.0.1:0` to test the QUIC session itself,
//! with no binary, no ready file and no certificates on disk, so none of a
//! process launcher applies to it.

pub mod certs;
pub mod cluster;
mod error;
pub mod launch;
pub mod nginx;
mod outage;
pub mod plan;
pub mod ports;
pub mod process;
pub mod status;
pub mod supervise;

pub use error::Error;
