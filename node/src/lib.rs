//! A ride-sharing region node.
//!
//! Every region runs identical nodes, and every node runs every module: rider
//! and driver intake, the pending cache, matching, fares, websocket delivery
//! and ratings. The crate is layered; each layer uses only those above it in
//! this list:
//!
//! - `ride_types` (a crate of its own): the API's JSON, positions, ids,
//!   regions and halos, shared with the bot and the scripts;
//! - [`protocol`]: the replication and matching protocol, with no I/O and no
//!   clock, testable without sockets;
//! - [`disk`]: the journal that makes a node's writes survive a crash, and
//!   the rating stores;
//! - [`net`]: the QUIC mesh with mutual TLS, peer discovery;
//! - [`runtime`]: the tasks and shared state that drive the protocol, admit
//!   requests and deliver matches;
//! - `http`: the public and admin APIs;
//! - [`config`], [`server`], [`telemetry`]: flags, the assembly of a running
//!   node and its shutdown, logs and metrics.
//!
//! The test harness (the deterministic simulation, the model check, the
//! mesh over QUIC in one process) lives in `testkit`, compiled only for
//! tests.

#![warn(unreachable_pub)]
// The node is an application: its docs are read with
// `cargo doc --document-private-items`, where links to crate-private items
// resolve.
#![allow(rustdoc::private_intra_doc_links)]

/// The node's own tests run on the allocator the node ships with (see
/// `main.rs`): the simulation and the model check allocate heavily, and
/// with glibc's the model check took 2.4 times as long (BENCHMARKS.md).
#[cfg(all(test, feature = "mimalloc"))]
#[global_allocator]
static TEST_ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod config;
pub mod disk;
pub(crate) mod http;
pub mod net;
pub mod protocol;
pub mod runtime;
pub mod server;
pub mod telemetry;
#[cfg(test)]
mod testkit;
