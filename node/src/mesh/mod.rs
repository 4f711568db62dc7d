//! Replication between region nodes: pending requests, claims and commits
//! as automerge documents, and the protocol that keeps cross-border matches
//! consistent. [`replica`] is the protocol core (no I/O, no clock).

pub mod discovery;
pub mod documents;
pub mod ledger;
pub mod record;
pub mod replica;
pub mod tls;
pub mod transport;

#[cfg(test)]
mod simulation;
#[cfg(test)]
mod transport_tests;
