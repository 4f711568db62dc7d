//! What the replicated documents hold: write-once records, grouped in
//! batches, one batch per flush of a document, each batch one bytes value
//! in a versioned, compact binary encoding (postcard).
//!
//! One value per flush, not per record: automerge's cost is per operation
//! (a column splice each, ~34 us per record in a document of tens of
//! thousands, the intake path's largest cost), so it should scale with
//! flushes, not with requests. A batch is written once, under a key no
//! other batch uses, by the owner of the document that holds it, so
//! documents never hold conflicting values. Records are never rewritten:
//! each rider, driver, claim, answer and commit appears in one batch.

use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

use ride_types::api::Position;
use ride_types::clock::Millis;
use ride_types::ids::{NodeId, RequestId};

/// A claim's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClaimId(pub Uuid);

impl ClaimId {
    /// A claimant makes at most one claim per rider, driver and instant, so
    /// these name it; deriving the id keeps replays of a run identical.
    pub fn derive(claimant: &NodeId, rider: RequestId, driver: RequestId, at: Millis) -> Self {
        let half = |salt: u8| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (salt, claimant, rider, driver, at).hash(&mut h);
            h.finish()
        };
        Self(Uuid::from_u64_pair(half(0), half(1)))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiderRecord {
    pub id: RequestId,
    pub name: String,
    pub position: Position,
    pub destination: Position,
    pub accepted_at: Millis,
    pub expires_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriverRecord {
    pub id: RequestId,
    pub name: String,
    pub car_number: String,
    pub position: Position,
    pub accepted_at: Millis,
    pub expires_at: Millis,
}

/// A rider's owner asks a driver's owner to hand the driver over, so that
/// the rider's owner can commit the match alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimRecord {
    pub id: ClaimId,
    pub rider: RequestId,
    pub driver: RequestId,
    /// Whom the claimant believes owns the driver, and at which hand-over.
    pub driver_owner: NodeId,
    pub generation: u32,
    pub created_at: Millis,
    /// The claimant gives up waiting at this instant (its own clock).
    pub deadline: Millis,
}

/// The driver owner's answer. `transfer: true` hands the driver over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub claim: ClaimId,
    pub driver: RequestId,
    pub generation: u32,
    /// The claimant, who owns the driver from now on if `transfer`.
    pub to: NodeId,
    pub transfer: bool,
    pub decided_at: Millis,
}

/// A committed match, written by the node that owned both sides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitRecord {
    pub rider: RequestId,
    pub driver: RequestId,
    pub pickup_km: f64,
    /// The region of the committing node.
    pub region: String,
    pub committed_at: Millis,
}

/// What one flush wrote into one document, as stored; the version tag lets
/// a newer node read old data and reject what it cannot read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Batch {
    V1(Vec<RecordV1>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RecordV1 {
    Rider(RiderRecord),
    Driver(DriverRecord),
    Claim(ClaimRecord),
    Decision(DecisionRecord),
    Commit(CommitRecord),
}

/// What a rider or driver record says of its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestFacts {
    pub id: RequestId,
    pub rider: bool,
    pub accepted_at: Millis,
    pub expires_at: Millis,
}

impl RecordV1 {
    /// The request a rider or driver record is; `None` for the records
    /// that decide about requests.
    pub fn request(&self) -> Option<RequestFacts> {
        match self {
            Self::Rider(r) => Some(RequestFacts {
                id: r.id,
                rider: true,
                accepted_at: r.accepted_at,
                expires_at: r.expires_at,
            }),
            Self::Driver(d) => Some(RequestFacts {
                id: d.id,
                rider: false,
                accepted_at: d.accepted_at,
                expires_at: d.expires_at,
            }),
            Self::Claim(_) | Self::Decision(_) | Self::Commit(_) => None,
        }
    }
}

#[derive(Debug, Error)]
#[error("undecodable batch under {key}: {source}")]
pub struct BatchError {
    key: String,
    source: postcard::Error,
}

impl Batch {
    pub fn encode(records: &[RecordV1]) -> Vec<u8> {
        // Encoding plain structs into a Vec cannot fail.
        postcard::to_stdvec(&Batch::V1(records.to_vec())).unwrap_or_default()
    }

    /// Decodes a value read from a peer's document (`key` names it in the
    /// error).
    pub fn decode(key: &str, bytes: &[u8]) -> Result<Vec<RecordV1>, BatchError> {
        let Batch::V1(records) = postcard::from_bytes(bytes).map_err(|source| BatchError {
            key: key.to_owned(),
            source,
        })?;
        Ok(records)
    }
}

/// A rider record accepted at `n` ms, for tests.
#[cfg(test)]
pub(crate) fn sample_rider(n: u64) -> RecordV1 {
    RecordV1::Rider(RiderRecord {
        id: RequestId::generate(),
        name: format!("Rider {n}"),
        position: Position {
            lat: 23.8,
            lon: 90.4,
        },
        destination: Position {
            lat: 23.7,
            lon: 90.3,
        },
        accepted_at: Millis(n),
        expires_at: Millis(n + 30_000),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn driver() -> RecordV1 {
        RecordV1::Driver(DriverRecord {
            id: RequestId::generate(),
            name: "Karim Uddin".into(),
            car_number: "DHA-11-2233".into(),
            position: Position {
                lat: 23.8,
                lon: 90.4,
            },
            accepted_at: Millis(1_764_000_000_000),
            expires_at: Millis(1_764_000_030_000),
        })
    }

    #[test]
    fn a_batch_round_trips_and_garbage_is_refused() {
        let records = vec![
            driver(),
            RecordV1::Commit(CommitRecord {
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
        let records: Vec<RecordV1> = (0..100).map(|_| driver()).collect();
        let per_record = Batch::encode(&records).len() / records.len();
        assert!(per_record < 80, "{per_record} bytes per record");
    }
}
