//! Accepted requests as the journal keeps them for their 202.
//!
//! A request's 202 waits for the disk, not for automerge. Each group commit
//! appends the requests it accepted, as plain records with the regions
//! they go to, to the journal file of their epoch
//! ([`crate::disk::journal::Journal::append_intake`]) and syncs it; the requests
//! are written into automerge documents later, many group commits to one
//! change ([`crate::protocol::replica::Replica`]'s intake flush). An automerge change
//! costs every peer that applies it the same whatever it carries, so fewer
//! and larger changes are most of what cheap replication per request needs
//! (BENCHMARKS.md, session 15).
//!
//! A crash between the 202 and the change loses nothing: a restart reads
//! the records back and writes the ones no document holds yet.

use serde::{Deserialize, Serialize};

use crate::protocol::record::RecordV1;
use ride_types::halo::Scope;

/// One group commit's accepted requests of one epoch, a sequence of
/// (scope, record): written from borrowed records, read back as owned
/// ones. The version tag lets a newer node read an older node's journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Entry<Requests> {
    V1(Requests),
}

/// One journal frame's payload.
pub(crate) fn encode(accepted: &[(&Scope, &RecordV1)]) -> Vec<u8> {
    // Encoding plain structs into a Vec cannot fail.
    postcard::to_stdvec(&Entry::V1(accepted)).unwrap_or_default()
}

/// Every request in an intake file's frames, concatenated as the journal
/// loads them, in the order they were appended.
pub(crate) fn decode(mut bytes: &[u8]) -> Result<Vec<(Scope, RecordV1)>, postcard::Error> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (Entry::V1(accepted), rest) =
            postcard::take_from_bytes::<Entry<Vec<(Scope, RecordV1)>>>(bytes)?;
        out.extend(accepted);
        bytes = rest;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::record::sample_rider;

    /// Encodes owned requests as the replica does borrowed ones.
    fn frame(accepted: &[(Scope, RecordV1)]) -> Vec<u8> {
        let borrowed: Vec<(&Scope, &RecordV1)> = accepted.iter().map(|(s, r)| (s, r)).collect();
        encode(&borrowed)
    }

    fn rider(n: u64) -> (Scope, RecordV1) {
        (Scope::of([0, 2]), sample_rider(n))
    }

    #[test]
    fn frames_read_back_in_order() {
        let first = vec![rider(1), rider(2)];
        let second = vec![rider(3)];
        let mut bytes = frame(&first);
        bytes.extend(frame(&second));
        let all: Vec<_> = first.into_iter().chain(second).collect();
        assert_eq!(decode(&bytes).unwrap(), all);
        assert!(decode(&[]).unwrap().is_empty());
    }

    #[test]
    fn a_frame_cut_short_is_an_error_not_fewer_requests() {
        let bytes = frame(&[rider(1), rider(2)]);
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode(&[0xff, 0x01]).is_err());
    }
}
