//! What every part of the ride-sharing mesh shares, and nothing that does
//! I/O beyond reading region files: the node, the bot and the local-mesh
//! scripts all depend on this crate, and none of them on another.
//!
//! - [`api`]: the public API's JSON shapes and limits;
//! - [`geodesy`]: positions and great-circle distances;
//! - [`clock`], [`ids`]: time as milliseconds, request and node ids;
//! - [`regions`], [`region_grid`]: region files, and which region a position
//!   belongs to;
//! - [`halo`]: which regions a request concerns;
//! - [`adoption`]: which live region serves the area of one that is down;
//! - [`convergence`], [`history`]: when two nodes are in step, and the rules
//!   every history of matches keeps;
//! - [`decimals`]: rounding for what people read.

#![warn(unreachable_pub)]

pub mod adoption;
pub mod api;
pub mod clock;
pub mod convergence;
pub mod decimals;
pub mod geodesy;
pub mod halo;
pub mod history;
pub mod ids;
pub mod region_grid;
pub mod regions;
