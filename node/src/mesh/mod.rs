//! Replication between region nodes: pending requests, claims and commits
//! as automerge documents, and the protocol that keeps cross-border matches
//! consistent. [`replica`] is the protocol core (no I/O, no clock);
//! [`protocol`] holds what the core, the transport and the node share;
//! [`journal`] makes a node's own documents survive a crash.

pub mod discovery;
pub mod documents;
pub mod journal;
pub mod ledger;
pub mod protocol;
pub mod record;
pub mod replica;
pub mod tls;
pub mod transport;

#[cfg(test)]
pub(crate) mod simulation;
#[cfg(test)]
mod transport_tests;
