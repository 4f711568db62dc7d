//! Replication between region nodes: pending requests, claims and commits
//! as automerge documents, and the protocol that keeps cross-border matches
//! consistent. [`replica`] is the protocol core (no I/O, no clock);
//! [`protocol`] holds what the core, the transport and the node share;
//! [`journal`] makes a node's own documents survive a crash.

pub(crate) mod compression;
pub(crate) mod discovery;
pub mod documents;
pub(crate) mod intake_log;
pub mod journal;
pub(crate) mod ledger;
pub(crate) mod protocol;
pub mod record;
pub(crate) mod replica;
pub mod tls;
pub(crate) mod transport;

#[cfg(test)]
pub(crate) mod simulation;
#[cfg(test)]
mod transport_tests;
