//! A ride-sharing region node.
//!
//! Every region runs identical nodes, and every node runs every module: rider
//! and driver intake, the pending cache, matching, fares, websocket delivery
//! and ratings. Modules are kept free of I/O where they can be (the matcher,
//! the dispatch state machine, fares), so that they are testable without
//! sockets or clocks; thin async tasks in [`server`] drive them.

/// The node's own tests run on the allocator the node ships with (see
/// `main.rs`): the simulation and the model check allocate heavily, and
/// with glibc's the model check took 2.4 times as long (BENCHMARKS.md).
#[cfg(all(test, feature = "mimalloc"))]
#[global_allocator]
static TEST_ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod access;
pub mod admission;
pub mod clock;
pub mod communication;
pub mod config;
pub mod fare;
pub mod fly;
pub mod geodesy;
pub mod history;
pub mod http;
pub mod ids;
pub mod intake;
pub mod matcher;
pub mod matches;
pub mod matching;
pub mod mesh;
#[cfg(test)]
mod model;
pub mod peer_board;
pub mod ratings;
pub mod regions;
pub mod server;
pub mod shared;
pub mod telemetry;
pub mod wan_relay;
pub mod wire;
