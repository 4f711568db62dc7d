//! What a node keeps on its own disk: the journal of its own documents and
//! accepted requests ([`journal`], [`intake_log`]), and driver ratings
//! ([`ratings`]: an embedded store, or a CQL cluster with the embedded store
//! as its outbox).

pub mod intake_log;
pub mod journal;
pub mod ratings;
