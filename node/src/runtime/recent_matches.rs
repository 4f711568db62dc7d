//! Committed matches, retained for a while after they are made.
//!
//! Retention serves three readers: a websocket that subscribes after its
//! match was committed still gets it, `POST /rating` checks that the rated
//! match happened, and `GET /matches` shows operators what was decided.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::protocol::record::{DriverRecord, RiderRecord};
use ride_types::api::MatchNotice;
use ride_types::clock::Millis;
use ride_types::decimals;
use ride_types::ids::{NodeId, RequestId};

/// A committed match: the final word on a rider and a driver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Match {
    pub rider: RiderRecord,
    pub rider_owner: NodeId,
    pub driver: DriverRecord,
    pub driver_owner: NodeId,
    pub pickup_km: f64,
    pub trip_km: f64,
    pub fare_taka: f64,
    pub region: String,
    pub committed_by: NodeId,
    pub committed_at: Millis,
}

impl Match {
    /// What the rider and the driver are told. Distances are rounded to the
    /// metre; the fare is computed from the unrounded trip.
    pub(crate) fn notice(&self) -> MatchNotice {
        MatchNotice {
            rider_id: self.rider.id.0,
            driver_id: self.driver.id.0,
            rider_name: self.rider.name.clone(),
            driver_name: self.driver.name.clone(),
            car_number: self.driver.car_number.clone(),
            pickup_km: decimals::round(self.pickup_km, 3),
            trip_km: decimals::round(self.trip_km, 3),
            fare_taka: self.fare_taka,
            region: self.region.clone(),
            committed_at: self.committed_at.to_utc(),
        }
    }
}

/// How long matches are retained, and how many at most: at thousands of
/// matches a second, time alone would let the log grow without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Retention {
    pub ms: u64,
    pub max_matches: usize,
}

/// What [`RecentMatches::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inserted {
    New,
    /// The same match was recorded already.
    Duplicate,
    /// The rider or the driver is recorded with someone else.
    Conflict,
}

#[derive(Debug)]
pub(crate) struct RecentMatches {
    retention: Retention,
    order: VecDeque<Arc<Match>>,
    by_request: HashMap<RequestId, Arc<Match>>,
}

impl RecentMatches {
    /// Reserves room for the most matches the log may hold, so that it
    /// never stops the node to grow while intake waits on the lock.
    pub(crate) fn new(retention: Retention) -> Self {
        Self {
            retention,
            order: VecDeque::with_capacity(retention.max_matches),
            by_request: HashMap::with_capacity(retention.max_matches.saturating_mul(2)),
        }
    }

    /// Records a match, forgetting the oldest one if the log is full. A
    /// commit learnt again (from another peer, after a reconnect) is not
    /// recorded twice, and one that names another partner for someone
    /// already matched is refused: nobody is told two partners.
    pub(crate) fn insert(&mut self, m: Arc<Match>) -> Inserted {
        let known = [m.rider.id, m.driver.id].map(|id| self.by_request.get(&id));
        match known {
            [None, None] => {}
            [Some(a), Some(b)]
                if Arc::ptr_eq(a, b) && a.rider.id == m.rider.id && a.driver.id == m.driver.id =>
            {
                return Inserted::Duplicate;
            }
            _ => return Inserted::Conflict,
        }
        self.by_request.insert(m.rider.id, Arc::clone(&m));
        self.by_request.insert(m.driver.id, Arc::clone(&m));
        self.order.push_back(m);
        if self.order.len() > self.retention.max_matches {
            self.forget_oldest();
        }
        Inserted::New
    }

    /// Forgets matches committed more than the retention ago.
    pub(crate) fn prune(&mut self, now: Millis) {
        let horizon = now.minus(self.retention.ms);
        while self
            .order
            .front()
            .is_some_and(|oldest| oldest.committed_at <= horizon)
        {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some(oldest) = self.order.pop_front() {
            self.by_request.remove(&oldest.rider.id);
            self.by_request.remove(&oldest.driver.id);
        }
    }

    /// The match of a rider or a driver.
    pub(crate) fn get(&self, id: &RequestId) -> Option<&Arc<Match>> {
        self.by_request.get(id)
    }

    /// The most recent matches, newest first.
    pub(crate) fn recent(&self, limit: usize) -> impl Iterator<Item = &Arc<Match>> {
        self.order.iter().rev().take(limit)
    }

    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    /// Every retained match, oldest first.
    pub(crate) fn all(&self) -> impl ExactSizeIterator<Item = &Arc<Match>> {
        self.order.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ride_types::api::Position;

    fn matched(rider: RequestId, driver: RequestId) -> Arc<Match> {
        let p = Position {
            lat: 23.8,
            lon: 90.4,
        };
        Arc::new(Match {
            rider: RiderRecord {
                id: rider,
                name: "r".into(),
                position: p,
                destination: p,
                accepted_at: Millis(0),
                expires_at: Millis(5_000),
            },
            rider_owner: NodeId("a".into()),
            driver: DriverRecord {
                id: driver,
                name: "d".into(),
                car_number: "C-1".into(),
                position: p,
                accepted_at: Millis(0),
                expires_at: Millis(5_000),
            },
            driver_owner: NodeId("b".into()),
            pickup_km: 0.0,
            trip_km: 0.0,
            fare_taka: 0.0,
            region: "dhaka".into(),
            committed_by: NodeId("a".into()),
            committed_at: Millis(1),
        })
    }

    #[test]
    fn a_match_recorded_again_is_a_duplicate_and_another_partner_a_conflict() {
        let mut log = RecentMatches::new(Retention {
            ms: 60_000,
            max_matches: 10,
        });
        let (rider, driver, other) = (
            RequestId::generate(),
            RequestId::generate(),
            RequestId::generate(),
        );
        assert_eq!(log.insert(matched(rider, driver)), Inserted::New);
        assert_eq!(log.insert(matched(rider, driver)), Inserted::Duplicate);
        assert_eq!(log.insert(matched(rider, other)), Inserted::Conflict);
        assert_eq!(log.insert(matched(other, driver)), Inserted::Conflict);
        assert_eq!(log.len(), 1);
        assert_eq!(log.get(&driver).unwrap().rider.id, rider);
    }
}
