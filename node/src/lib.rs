//! A ride-sharing region node.
//!
//! Every region runs identical nodes, and every node runs every module: rider
//! and driver intake, the pending cache, matching, fares, websocket delivery
//! and ratings. Modules are kept free of I/O where they can be (the pairing round,
//! the dispatch state machine, fares), so that they are testable without
//! sockets or clocks; thin async tasks in [`server`] drive them.

#![warn(unreachable_pub)]

/// The node's own tests run on the allocator the node ships with (see
/// `main.rs`): the simulation and the model check allocate heavily, and
/// with glibc's the model check took 2.4 times as long (BENCHMARKS.md).
#[cfg(all(test, feature = "mimalloc"))]
#[global_allocator]
static TEST_ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// The public surface is what the node's binary, the bot, the benches and
// the integration tests use; everything else is the node's own business.
pub mod access;
pub(crate) mod admission;
pub mod clock;
pub mod config;
pub(crate) mod decimals;
pub(crate) mod delivery;
pub(crate) mod fare;
pub(crate) mod fly;
pub mod geodesy;
pub mod halo;
pub mod history;
pub(crate) mod http;
pub mod ids;
pub(crate) mod intake;
pub(crate) mod match_log;
pub mod mesh;
#[cfg(test)]
mod model;
pub(crate) mod node_core;
pub mod pairing;
pub(crate) mod peer_board;
pub mod ratings;
pub mod region_grid;
pub mod regions;
pub mod server;
pub(crate) mod step_loop;
pub mod telemetry;
pub mod wan_relay;
pub mod wire;

/// The API's size limits, which clients (the bot) keep to.
pub use http::{MAX_FRAME_BYTES, MAX_MATCHES_LISTED};
