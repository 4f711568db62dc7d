//! What a node keeps on its own disk: the journal of its own documents and
//! accepted requests ([`journal`]), the matches it retains ([`match_log`]),
//! and driver ratings
//! ([`ratings`]: an embedded store, or a CQL cluster with the embedded store
//! as its outbox).

pub mod journal;
pub mod match_log;
pub mod ratings;
