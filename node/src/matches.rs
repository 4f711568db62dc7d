//! Committed matches, retained for a while after they are made.
//!
//! Retention serves three readers: a websocket that subscribes after its
//! match was committed still gets it, `POST /rating` checks that the rated
//! match happened, and `GET /matches` shows operators what was decided.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::clock::Millis;
use crate::fare;
use crate::ids::{NodeId, RequestId};
use crate::pending::{Driver, Rider};
use crate::wire::MatchNotice;

/// A committed match: the final word on a rider and a driver.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    pub rider: Rider,
    pub driver: Driver,
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
    pub fn notice(&self) -> MatchNotice {
        MatchNotice {
            rider_id: self.rider.id.0,
            driver_id: self.driver.id.0,
            rider_name: self.rider.name.clone(),
            driver_name: self.driver.name.clone(),
            car_number: self.driver.car_number.clone(),
            pickup_km: fare::round_to(self.pickup_km, 3),
            trip_km: fare::round_to(self.trip_km, 3),
            fare_taka: self.fare_taka,
            region: self.region.clone(),
            committed_at: self.committed_at.to_utc(),
        }
    }
}

#[derive(Debug)]
pub struct MatchLog {
    retention_ms: u64,
    order: VecDeque<Arc<Match>>,
    by_request: HashMap<RequestId, Arc<Match>>,
}

impl MatchLog {
    pub fn new(retention_ms: u64) -> Self {
        Self {
            retention_ms,
            order: VecDeque::new(),
            by_request: HashMap::new(),
        }
    }

    pub fn insert(&mut self, m: Arc<Match>) {
        self.by_request.insert(m.rider.id, Arc::clone(&m));
        self.by_request.insert(m.driver.id, Arc::clone(&m));
        self.order.push_back(m);
    }

    /// Forgets matches committed more than the retention ago.
    pub fn prune(&mut self, now: Millis) {
        let horizon = now.minus(self.retention_ms);
        while let Some(oldest) = self.order.front() {
            if oldest.committed_at > horizon {
                break;
            }
            self.by_request.remove(&oldest.rider.id);
            self.by_request.remove(&oldest.driver.id);
            self.order.pop_front();
        }
    }

    /// The match of a rider or a driver.
    pub fn get(&self, id: &RequestId) -> Option<&Arc<Match>> {
        self.by_request.get(id)
    }

    /// The most recent matches, newest first.
    pub fn recent(&self, limit: usize) -> impl Iterator<Item = &Arc<Match>> {
        self.order.iter().rev().take(limit)
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}
