//! Accepted requests as the journal keeps them for their 202.
//!
//! A request's 202 waits for the disk, not for automerge. Each group commit
//! appends the requests it accepted, as plain records with the regions
//! they go to, to the journal file of their epoch
//! ([`super::journal::Journal::append_intake`]) and syncs it; the requests
//! are written into automerge documents later, many group commits to one
//! change ([`super::replica::Replica`]'s intake flush). An automerge change
//! costs every peer that applies it the same whatever it carries, so fewer
//! and larger changes are most of what cheap replication per request needs
//! (BENCHMARKS.md, session 15).
//!
//! A crash between the 202 and the change loses nothing: a restart reads
//! the records back and writes the ones no document holds yet.

use serde::{Deserialize, Serialize};

use super::record::RecordV1;
use crate::halo::Scope;

/// One group commit's accepted requests of one epoch. The version tag lets
/// a newer node read an older node's journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Entry {
    V1(Vec<(Scope, RecordV1)>),
}

/// One journal frame's payload.
pub(crate) fn encode(accepted: &[(Scope, RecordV1)]) -> Vec<u8> {
    // Encoding plain structs into a Vec cannot fail.
    postcard::to_stdvec(&Entry::V1(accepted.to_vec())).unwrap_or_default()
}

/// Every request in an intake file's frames, concatenated as the journal
/// loads them, in the order they were appended.
pub(crate) fn decode(mut bytes: &[u8]) -> Result<Vec<(Scope, RecordV1)>, postcard::Error> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (Entry::V1(accepted), rest) = postcard::take_from_bytes(bytes)?;
        out.extend(accepted);
        bytes = rest;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Millis;
    use crate::ids::RequestId;
    use crate::mesh::record::RiderRecord;
    use crate::wire::Position;

    fn rider(n: u64) -> (Scope, RecordV1) {
        (
            Scope::of([0, 2]),
            RecordV1::Rider(RiderRecord {
                id: RequestId::generate(),
                name: format!("rider {n}"),
                position: Position {
                    lat: 23.8,
                    lon: 90.4,
                },
                destination: Position {
                    lat: 23.7,
                    lon: 90.3,
                },
                accepted_at: Millis(n),
                expires_at: Millis(n + 20_000),
            }),
        )
    }

    #[test]
    fn frames_read_back_in_order() {
        let first = vec![rider(1), rider(2)];
        let second = vec![rider(3)];
        let mut bytes = encode(&first);
        bytes.extend(encode(&second));
        let all: Vec<_> = first.into_iter().chain(second).collect();
        assert_eq!(decode(&bytes).unwrap(), all);
        assert!(decode(&[]).unwrap().is_empty());
    }

    #[test]
    fn a_frame_cut_short_is_an_error_not_fewer_requests() {
        let bytes = encode(&[rider(1), rider(2)]);
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode(&[0xff, 0x01]).is_err());
    }
}
