//! The dispatch core: accepts requests, prepares matching rounds and commits
//! their pairs. A plain state machine with no I/O and no clock (callers pass
//! `now`), so it can be driven by the HTTP shell, by tests and by simulations
//! alike.
//!
//! A round is split in two so that the expensive part runs outside any lock:
//! [`Dispatch::prepare_round`] copies the candidates out, the caller runs
//! [`crate::matching::greedy`] on them, and [`Dispatch::commit`] applies the
//! pairs, skipping any whose rider or driver left in the meantime.

use std::sync::Arc;

use crate::clock::Millis;
use crate::fare;
use crate::geodesy::haversine_km;
use crate::ids::{NodeId, RequestId};
use crate::intake::{NewDriver, NewRider};
use crate::matches::{Match, MatchLog, Retention};
use crate::matching::{Candidate, Pair};
use crate::pending::{Driver, Expired, PendingCache, Rider};

/// The lowest time-to-live a request may have.
pub const MIN_REQUEST_TTL_MS: u64 = 5_000;

#[derive(Debug, Clone)]
pub struct Settings {
    pub node: NodeId,
    pub region: String,
    /// How long a request waits for a match; at least [`MIN_REQUEST_TTL_MS`].
    pub request_ttl_ms: u64,
    /// How long, and how many, committed matches stay visible.
    pub match_retention: Retention,
}

/// The answer to an accepted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub id: RequestId,
    pub expires_at: Millis,
}

/// Where a request stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    Pending,
    Matched(Arc<Match>),
    Unknown,
}

/// The candidates of one round.
#[derive(Debug, Clone, Default)]
pub struct Round {
    pub riders: Vec<Candidate>,
    pub drivers: Vec<Candidate>,
    pub expired: Expired,
}

#[derive(Debug)]
pub struct Dispatch {
    settings: Settings,
    pending: PendingCache,
    matches: MatchLog,
}

impl Dispatch {
    pub fn new(mut settings: Settings) -> Self {
        settings.request_ttl_ms = settings.request_ttl_ms.max(MIN_REQUEST_TTL_MS);
        Self {
            matches: MatchLog::new(settings.match_retention),
            pending: PendingCache::default(),
            settings,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn accept_rider(&mut self, id: RequestId, rider: NewRider, now: Millis) -> Ticket {
        let expires_at = now.plus(self.settings.request_ttl_ms);
        self.pending.insert_rider(Rider {
            id,
            name: rider.name,
            position: rider.position,
            destination: rider.destination,
            owner: self.settings.node.clone(),
            accepted_at: now,
            expires_at,
        });
        Ticket { id, expires_at }
    }

    pub fn accept_driver(&mut self, id: RequestId, driver: NewDriver, now: Millis) -> Ticket {
        let expires_at = now.plus(self.settings.request_ttl_ms);
        self.pending.insert_driver(Driver {
            id,
            name: driver.name,
            car_number: driver.car_number,
            position: driver.position,
            owner: self.settings.node.clone(),
            accepted_at: now,
            expires_at,
        });
        Ticket { id, expires_at }
    }

    /// Drops what expired by `now` and copies out who can be matched.
    pub fn prepare_round(&mut self, now: Millis) -> Round {
        let expired = self.pending.expire(now);
        self.matches.prune(now);
        let (riders, drivers) = self.pending.candidates();
        Round {
            riders,
            drivers,
            expired,
        }
    }

    /// Commits the pairs whose rider and driver are both still pending.
    pub fn commit(&mut self, pairs: &[Pair], now: Millis) -> Vec<Arc<Match>> {
        pairs
            .iter()
            .filter_map(|pair| {
                let (rider, driver) = self.pending.take_pair(pair.rider, pair.driver)?;
                if rider.expires_at <= now || driver.expires_at <= now {
                    return None;
                }
                let trip_km = haversine_km(rider.position, rider.destination);
                let committed = Arc::new(Match {
                    pickup_km: pair.pickup_km,
                    trip_km,
                    fare_taka: fare::fare_taka(trip_km),
                    region: self.settings.region.clone(),
                    committed_by: self.settings.node.clone(),
                    committed_at: now,
                    rider,
                    driver,
                });
                self.matches.insert(Arc::clone(&committed));
                Some(committed)
            })
            .collect()
    }

    pub fn status(&self, id: &RequestId) -> Status {
        if self.pending.contains(id) {
            Status::Pending
        } else if let Some(m) = self.matches.get(id) {
            Status::Matched(Arc::clone(m))
        } else {
            Status::Unknown
        }
    }

    /// The match a rider was in, if it is still retained.
    pub fn match_of(&self, id: &RequestId) -> Option<&Arc<Match>> {
        self.matches.get(id)
    }

    /// The most recent matches, newest first.
    pub fn recent_matches(&self, limit: usize) -> Vec<Arc<Match>> {
        self.matches.recent(limit).cloned().collect()
    }

    pub fn pending_riders(&self) -> usize {
        self.pending.rider_count()
    }

    pub fn pending_drivers(&self) -> usize {
        self.pending.driver_count()
    }

    pub fn committed_matches(&self) -> usize {
        self.matches.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matching::greedy;
    use crate::wire::Position;

    const TTL: u64 = 30_000;

    fn dispatch() -> Dispatch {
        Dispatch::new(Settings {
            node: NodeId("dhaka-1".into()),
            region: "dhaka".into(),
            request_ttl_ms: TTL,
            match_retention: Retention {
                ms: 60_000,
                max_matches: 1_000,
            },
        })
    }

    fn rider(lat: f64) -> NewRider {
        NewRider {
            name: "Rumi".into(),
            position: Position { lat, lon: 90.4 },
            destination: Position {
                lat: 23.9,
                lon: 90.4,
            },
        }
    }

    fn driver(lat: f64) -> NewDriver {
        NewDriver {
            name: "Karim".into(),
            car_number: "DHA-1".into(),
            position: Position { lat, lon: 90.4 },
        }
    }

    fn round(d: &mut Dispatch, now: Millis) -> Vec<Arc<Match>> {
        let r = d.prepare_round(now);
        let pairs = greedy(&r.riders, &r.drivers, 5.0);
        d.commit(&pairs, now)
    }

    #[test]
    fn a_rider_and_a_driver_are_matched_once_with_the_fare() {
        let mut d = dispatch();
        let t0 = Millis(1_000_000);
        let r = d.accept_rider(RequestId::generate(), rider(23.8), t0);
        let dr = d.accept_driver(RequestId::generate(), driver(23.81), t0);
        assert_eq!(r.expires_at, t0.plus(TTL));

        let made = round(&mut d, t0.plus(1_000));
        assert_eq!(made.len(), 1);
        let m = &made[0];
        assert_eq!((m.rider.id, m.driver.id), (r.id, dr.id));
        assert!((m.trip_km - 11.1195).abs() < 1e-3, "{}", m.trip_km);
        assert_eq!(m.fare_taka, 22.24);
        assert!(matches!(d.status(&r.id), Status::Matched(_)));
        assert!(round(&mut d, t0.plus(2_000)).is_empty(), "matched twice");
    }

    #[test]
    fn requests_expire_after_their_ttl_and_never_before() {
        let mut d = dispatch();
        let t0 = Millis(1_000_000);
        let r = d.accept_rider(RequestId::generate(), rider(23.8), t0);
        d.prepare_round(t0.plus(TTL - 1));
        assert_eq!(d.status(&r.id), Status::Pending);
        let swept = d.prepare_round(t0.plus(TTL));
        assert_eq!(swept.expired.riders, 1);
        assert_eq!(d.status(&r.id), Status::Unknown);
        d.accept_driver(RequestId::generate(), driver(23.8), t0.plus(TTL));
        assert!(round(&mut d, t0.plus(TTL + 1)).is_empty());
    }

    #[test]
    fn ttl_is_never_below_five_seconds() {
        let d = Dispatch::new(Settings {
            request_ttl_ms: 10,
            ..dispatch().settings().clone()
        });
        assert_eq!(d.settings().request_ttl_ms, MIN_REQUEST_TTL_MS);
    }

    #[test]
    fn a_pair_whose_rider_left_is_not_committed() {
        let mut d = dispatch();
        let t0 = Millis(1_000_000);
        d.accept_rider(RequestId::generate(), rider(23.8), t0);
        d.accept_driver(RequestId::generate(), driver(23.8), t0);
        let prepared = d.prepare_round(t0);
        let pairs = greedy(&prepared.riders, &prepared.drivers, 5.0);
        // Everything expires between preparing and committing.
        d.prepare_round(t0.plus(TTL));
        assert!(d.commit(&pairs, t0.plus(TTL)).is_empty());
    }

    #[test]
    fn matches_are_forgotten_after_their_retention() {
        let mut d = dispatch();
        let t0 = Millis(1_000_000);
        let r = d.accept_rider(RequestId::generate(), rider(23.8), t0);
        d.accept_driver(RequestId::generate(), driver(23.8), t0);
        round(&mut d, t0);
        d.prepare_round(t0.plus(59_999));
        assert!(d.match_of(&r.id).is_some());
        d.prepare_round(t0.plus(60_000));
        assert!(d.match_of(&r.id).is_none());
        assert_eq!(d.committed_matches(), 0);
    }

    #[test]
    fn the_match_log_keeps_only_the_newest_when_full() {
        let mut d = dispatch();
        let t0 = Millis(1_000_000);
        let mut riders = Vec::new();
        for i in 0..1_005 {
            let lat = 23.0 + f64::from(i) * 0.1; // 11 km apart: one pair per spot
            riders.push(d.accept_rider(RequestId::generate(), rider(lat), t0).id);
            d.accept_driver(RequestId::generate(), driver(lat), t0);
        }
        assert_eq!(round(&mut d, t0).len(), 1_005);
        assert_eq!(d.committed_matches(), 1_000);
        assert!(d.match_of(&riders[0]).is_none());
        assert!(d.match_of(&riders[1_004]).is_some());
    }
}
