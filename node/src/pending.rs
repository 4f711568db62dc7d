//! The pending cache: riders and drivers waiting for a match, each until its
//! own absolute expiry.
//!
//! Expiry is kept in an ordered set so that a sweep costs only what it
//! removes, however many requests are waiting.

use std::collections::{BTreeSet, HashMap};

use crate::clock::Millis;
use crate::ids::{NodeId, RequestId};
use crate::matching::Candidate;
use crate::wire::Position;

#[derive(Debug, Clone, PartialEq)]
pub struct Rider {
    pub id: RequestId,
    pub name: String,
    pub position: Position,
    pub destination: Position,
    pub owner: NodeId,
    pub accepted_at: Millis,
    pub expires_at: Millis,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Driver {
    pub id: RequestId,
    pub name: String,
    pub car_number: String,
    pub position: Position,
    pub owner: NodeId,
    pub accepted_at: Millis,
    pub expires_at: Millis,
}

/// What a sweep removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expired {
    pub ids: Vec<RequestId>,
    pub riders: usize,
    pub drivers: usize,
}

#[derive(Debug, Default)]
pub struct PendingCache {
    riders: HashMap<RequestId, Rider>,
    drivers: HashMap<RequestId, Driver>,
    expiry: BTreeSet<(Millis, RequestId)>,
}

impl PendingCache {
    pub fn insert_rider(&mut self, rider: Rider) {
        self.expiry.insert((rider.expires_at, rider.id));
        self.riders.insert(rider.id, rider);
    }

    pub fn insert_driver(&mut self, driver: Driver) {
        self.expiry.insert((driver.expires_at, driver.id));
        self.drivers.insert(driver.id, driver);
    }

    /// Removes every request whose expiry is at or before `now`.
    pub fn expire(&mut self, now: Millis) -> Expired {
        let mut expired = Expired::default();
        while let Some(&(at, id)) = self.expiry.first() {
            if at > now {
                break;
            }
            self.expiry.pop_first();
            if self.riders.remove(&id).is_some() {
                expired.riders += 1;
            } else if self.drivers.remove(&id).is_some() {
                expired.drivers += 1;
            } else {
                continue;
            }
            expired.ids.push(id);
        }
        expired
    }

    /// Removes and returns both requests, or neither if either is gone.
    pub fn take_pair(&mut self, rider: RequestId, driver: RequestId) -> Option<(Rider, Driver)> {
        if !self.riders.contains_key(&rider) || !self.drivers.contains_key(&driver) {
            return None;
        }
        let rider = self.riders.remove(&rider)?;
        let driver = self.drivers.remove(&driver)?;
        self.expiry.remove(&(rider.expires_at, rider.id));
        self.expiry.remove(&(driver.expires_at, driver.id));
        Some((rider, driver))
    }

    /// Everyone who can be matched, riders first.
    pub fn candidates(&self) -> (Vec<Candidate>, Vec<Candidate>) {
        let riders = self
            .riders
            .values()
            .map(|r| Candidate {
                id: r.id,
                position: r.position,
            })
            .collect();
        let drivers = self
            .drivers
            .values()
            .map(|d| Candidate {
                id: d.id,
                position: d.position,
            })
            .collect();
        (riders, drivers)
    }

    pub fn contains(&self, id: &RequestId) -> bool {
        self.riders.contains_key(id) || self.drivers.contains_key(id)
    }

    pub fn rider_count(&self) -> usize {
        self.riders.len()
    }

    pub fn driver_count(&self) -> usize {
        self.drivers.len()
    }
}
