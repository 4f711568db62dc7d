//! Driver ratings, behind a storage trait.
//!
//! The node only ever needs two things from storage: record a rating once per
//! match, and read a driver's average and count. Keeping the trait that small
//! lets the embedded store (the default, for a laptop) and a multi-datacenter
//! cluster store stand in for each other without the HTTP layer noticing.

mod cluster;
mod embedded;

pub use cluster::{ClusterConfig, ClusterStore};
pub use embedded::{EmbeddedStore, Outcome};

use async_trait::async_trait;
use thiserror::Error;

use ride_types::clock::Millis;
use ride_types::ids::RequestId;

/// One rider's rating of the driver it was matched with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rating {
    /// A rider is in at most one match, so the rider id names the match.
    pub rider_id: RequestId,
    pub driver_id: RequestId,
    pub car_number: String,
    pub stars: u8,
    pub rated_at: Millis,
}

/// Whether a rating was new or had been recorded before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    New,
    Duplicate,
}

/// A driver's ratings, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub stars: u64,
    pub count: u64,
}

impl Summary {
    /// The average to two decimals; `None` without ratings.
    pub fn average(&self) -> Option<f64> {
        (self.count > 0)
            .then(|| ride_types::decimals::round(self.stars as f64 / self.count as f64, 2))
    }
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("rating storage failed: {0}")]
    Storage(String),
    #[error("the ratings cluster is unavailable: {0}")]
    Unavailable(String),
    #[error("bad ratings cluster settings: {0}")]
    Config(String),
    #[error("rating store is shut down")]
    Closed,
}

#[async_trait]
pub trait RatingStore: Send + Sync + 'static {
    /// Records a rating unless one for the same match exists.
    async fn record(&self, rating: Rating) -> Result<Recorded, StoreError>;
    /// The ratings of the driver of `car_number`.
    async fn summary(&self, car_number: &str) -> Result<Summary, StoreError>;
    /// Flushes and stops; later calls fail with [`StoreError::Closed`].
    async fn close(&self) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_rounds_to_two_decimals() {
        assert_eq!(Summary::default().average(), None);
        assert_eq!(
            Summary {
                stars: 10,
                count: 3
            }
            .average(),
            Some(3.33)
        );
        assert_eq!(Summary { stars: 5, count: 1 }.average(), Some(5.0));
    }
}
