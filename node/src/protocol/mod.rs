//! The replication and matching protocol: no sockets, no clock, no files.
//!
//! Pending requests, claims and commits are write-once records in automerge
//! documents ([`record`], [`documents`]), indexed for the protocol's
//! questions ([`ledger`]). [`replica`] is the state machine of one node: the
//! runtime feeds it accepted requests, peers' messages and the time, and
//! carries out what it returns. [`message`] is what peers send each other;
//! [`pairing`] is one matching round; [`intake`] validates what clients send;
//! [`fare`] prices a match. The protocol owns no file: what must survive a
//! crash it queues for the runtime to journal ([`persist`]).

pub(crate) mod codec;
pub mod doc_id;
pub mod documents;
pub(crate) mod fare;
pub(crate) mod intake;
pub(crate) mod ledger;
pub(crate) mod message;
pub mod pairing;
pub mod persist;
pub mod record;
pub(crate) mod replica;
