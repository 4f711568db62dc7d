//! The test harness, compiled only for tests: the deterministic simulation
//! of the shipped node, the model check it is replayed against, and the
//! mesh over real QUIC with several nodes in one process.

mod mesh_over_quic;
pub(crate) mod model;
pub(crate) mod simulation;
pub(crate) mod trace;
