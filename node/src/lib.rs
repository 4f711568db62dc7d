//! A ride-sharing region node.
//!
//! Every region runs identical nodes, and every node runs every module: rider
//! and driver intake, the pending cache, matching, fares, websocket delivery
//! and ratings. Modules are kept free of I/O where they can be (the matcher,
//! the dispatch state machine, fares), so that they are testable without
//! sockets or clocks; thin async tasks in [`server`] drive them.

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
