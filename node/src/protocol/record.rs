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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Record {
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

impl Record {
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

/// A rider record accepted at `n` ms, for tests.
#[cfg(test)]
pub(crate) fn sample_rider(n: u64) -> Record {
    Record::Rider(RiderRecord {
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

/// A driver record, for tests.
#[cfg(test)]
pub(crate) fn sample_driver() -> Record {
    Record::Driver(DriverRecord {
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
