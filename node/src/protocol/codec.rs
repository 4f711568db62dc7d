//! How the protocol's records are encoded where they are kept: the only
//! module that knows the versioned envelopes. A newer node reads an older
//! node's envelopes by their version tag and refuses what it cannot read;
//! everything else handles records in memory, unversioned.
//!
//! - [`Batch`]: what one flush wrote into one automerge document, one bytes
//!   value per flush (automerge's cost is per operation, so it scales with
//!   flushes, not requests).
//! - Intake frames: what one group commit accepted, as the journal keeps it
//!   for the 202. A request's 202 waits for the disk, not for automerge; the
//!   requests are written into documents later, many group commits to one
//!   change (the replica's intake flush). A crash between the 202 and the
//!   change loses nothing: a restart reads the frames back and writes the
//!   requests no document holds yet.

use serde::{Deserialize, Serialize};

use thiserror::Error;

use ride_types::halo::Scope;

use super::record::Record;

/// One group commit's accepted requests of one epoch, a sequence of
/// (scope, record): written from borrowed records, read back as owned
/// ones. The version tag lets a newer node read an older node's journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Entry<Requests> {
    V1(Requests),
}

/// One intake frame's payload: what one group commit accepted in one
/// epoch.
pub(crate) fn encode_intake(accepted: &[(&Scope, &Record)]) -> Vec<u8> {
    // Encoding plain structs into a Vec cannot fail.
    postcard::to_stdvec(&Entry::V1(accepted)).unwrap_or_default()
}

/// Every request in an intake file's frames, concatenated as the journal
/// loads them, in the order they were appended.
pub(crate) fn decode_intake(mut bytes: &[u8]) -> Result<Vec<(Scope, Record)>, postcard::Error> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (Entry::V1(accepted), rest) =
            postcard::take_from_bytes::<Entry<Vec<(Scope, Record)>>>(bytes)?;
        out.extend(accepted);
        bytes = rest;
    }
    Ok(out)
}

/// What one flush wrote into one document, as stored; the version tag lets
/// a newer node read old data and reject what it cannot read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Batch {
    V1(Vec<Record>),
}

#[derive(Debug, Error)]
#[error("undecodable batch under {key}: {source}")]
pub(crate) struct BatchError {
    key: String,
    source: postcard::Error,
}

impl Batch {
    pub(crate) fn encode(records: &[Record]) -> Vec<u8> {
        // Encoding plain structs into a Vec cannot fail.
        postcard::to_stdvec(&Batch::V1(records.to_vec())).unwrap_or_default()
    }

    /// Decodes a value read from a peer's document (`key` names it in the
    /// error).
    pub(crate) fn decode(key: &str, bytes: &[u8]) -> Result<Vec<Record>, BatchError> {
        let Batch::V1(records) = postcard::from_bytes(bytes).map_err(|source| BatchError {
            key: key.to_owned(),
            source,
        })?;
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::record::{CommitRecord, sample_driver, sample_rider};
    use ride_types::clock::Millis;
    use ride_types::ids::RequestId;

    /// Encodes owned requests as the replica does borrowed ones.
    fn frame(accepted: &[(Scope, Record)]) -> Vec<u8> {
        let borrowed: Vec<(&Scope, &Record)> = accepted.iter().map(|(s, r)| (s, r)).collect();
        encode_intake(&borrowed)
    }

    fn rider(n: u64) -> (Scope, Record) {
        (Scope::of([0, 2]), sample_rider(n))
    }

    #[test]
    fn frames_read_back_in_order() {
        let first = vec![rider(1), rider(2)];
        let second = vec![rider(3)];
        let mut bytes = frame(&first);
        bytes.extend(frame(&second));
        let all: Vec<_> = first.into_iter().chain(second).collect();
        assert_eq!(decode_intake(&bytes).unwrap(), all);
        assert!(decode_intake(&[]).unwrap().is_empty());
    }

    #[test]
    fn a_frame_cut_short_is_an_error_not_fewer_requests() {
        let bytes = frame(&[rider(1), rider(2)]);
        assert!(decode_intake(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_intake(&[0xff, 0x01]).is_err());
    }

    #[test]
    fn a_batch_round_trips_and_garbage_is_refused() {
        let records = vec![
            sample_driver(),
            Record::Commit(CommitRecord {
                rider: RequestId::generate(),
                driver: RequestId::generate(),
                pickup_km: 1.5,
                region: "dhaka-north".into(),
                committed_at: Millis(7),
            }),
        ];
        let bytes = Batch::encode(&records);
        assert_eq!(Batch::decode("k", &bytes).unwrap(), records);
        let error = Batch::decode("f/3", &[0xff, 0x00, 0x13]).unwrap_err();
        assert!(error.to_string().contains("f/3"), "{error}");
        // A batch cut short is refused, not read as fewer records.
        assert!(Batch::decode("k", &bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn a_request_record_is_compact() {
        let records: Vec<Record> = (0..100).map(|_| sample_driver()).collect();
        let per_record = Batch::encode(&records).len() / records.len();
        assert!(per_record < 80, "{per_record} bytes per record");
    }

    /// The V1 envelopes' bytes, pinned: in-memory records may change, but
    /// what older nodes wrote must still read, so a change to these bytes
    /// needs a V2 envelope, not an edit.
    #[test]
    fn v1_envelopes_keep_their_bytes() {
        use crate::protocol::record::RiderRecord;
        use ride_types::api::Position;
        let rider = Record::Rider(RiderRecord {
            id: RequestId(uuid::Uuid::from_u128(
                0x0190_0000_0000_7000_8000_0000_0000_0001,
            )),
            name: "Rumi".into(),
            position: Position {
                lat: 23.5,
                lon: 90.25,
            },
            destination: Position {
                lat: 23.75,
                lon: 90.5,
            },
            accepted_at: Millis(1_000),
            expires_at: Millis(31_000),
        });
        let batch = Batch::encode(std::slice::from_ref(&rider));
        let intake = encode_intake(&[(&Scope::of([0, 2]), &rider)]);
        assert_eq!(hex(&batch), PINNED_BATCH, "batch");
        assert_eq!(hex(&intake), PINNED_INTAKE, "intake frame");
    }

    const PINNED_BATCH: &str = "00010010019000000000700080000000000000010452756d69000000000080374000000000009056400000000000c037400000000000a05640e80798f201";
    const PINNED_INTAKE: &str = "00010200020010019000000000700080000000000000010452756d69000000000080374000000000009056400000000000c037400000000000a05640e80798f201";

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
