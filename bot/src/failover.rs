//! Which endpoints are set aside as dead, and until when.
//!
//! When every node of a region is down, the nearest live region adopts its
//! area, and every other node redirects (`307`) there. A request sent to a
//! dead endpoint itself gets nothing useful: a refused connection, a
//! gateway's `502` (no live backend), or a `503` `region_unavailable` (a
//! node that cannot serve the position). Trying it again on every request
//! would fail every request that hashes to it, so it is set aside for
//! [`SET_ASIDE`], and the [router](crate::endpoint::Router) sends those
//! requests to a live endpoint instead, which accepts them or redirects
//! them to the adopter.
//!
//! A `503` `overloaded` is load, not death: the node is alive, and moving
//! its load onto the others would only spread the overload, so it sets
//! nothing aside (the request's `Retry-After` paces it instead).
//!
//! Every function takes the time (`now`), so the rules are tested without a
//! clock. The state is one atomic per endpoint: load mode's workers read it
//! on every request, and must not queue on a lock to do so.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// How long a dead endpoint is left alone. Long enough that a dead node
/// costs each request stream one failure per few seconds rather than one
/// per request; short enough that a node started again (a restart takes
/// about a second) gets its region's requests back within seconds.
pub const SET_ASIDE: Duration = Duration::from_secs(3);

/// Per endpoint (by index), when its set-aside ends.
#[derive(Debug)]
pub struct SetAside {
    /// The origin of the stored times.
    epoch: Instant,
    /// Nanoseconds after `epoch` at which each endpoint is live again; 0 for
    /// one never set aside.
    until: Box<[AtomicU64]>,
}

impl SetAside {
    /// `endpoints` live endpoints; times before `epoch` count as `epoch`.
    pub fn new(endpoints: usize, epoch: Instant) -> Self {
        SetAside {
            epoch,
            until: (0..endpoints).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Sets endpoint `i` aside until [`SET_ASIDE`] after `now` (a later
    /// failure extends it; an earlier one, seen late, does not shorten it).
    pub fn set_aside(&self, i: usize, now: Instant) {
        self.until[i].fetch_max(self.nanos(now + SET_ASIDE), Relaxed);
    }

    /// Whether endpoint `i` may be used at `now`.
    pub fn is_live(&self, i: usize, now: Instant) -> bool {
        self.until[i].load(Relaxed) <= self.nanos(now)
    }

    /// Of `candidates`, the endpoint whose set-aside ends first (the first
    /// listed of equals); `None` when there are none.
    pub fn first_back(&self, candidates: &[usize]) -> Option<usize> {
        candidates
            .iter()
            .copied()
            .min_by_key(|&i| self.until[i].load(Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_set_aside_is_live_again_when_its_set_aside_ends() {
        let t0 = Instant::now();
        let aside = SetAside::new(2, t0);
        assert!(aside.is_live(0, t0) && aside.is_live(1, t0));
        aside.set_aside(0, t0);
        assert!(!aside.is_live(0, t0));
        assert!(!aside.is_live(0, t0 + SET_ASIDE - Duration::from_nanos(1)));
        assert!(aside.is_live(0, t0 + SET_ASIDE));
        assert!(aside.is_live(1, t0), "only the endpoint that failed");
    }

    #[test]
    fn a_later_failure_extends_the_set_aside_and_an_earlier_one_does_not_shorten_it() {
        let t0 = Instant::now();
        let aside = SetAside::new(1, t0);
        let later = t0 + Duration::from_secs(2);
        aside.set_aside(0, later);
        aside.set_aside(0, t0);
        assert!(!aside.is_live(0, t0 + SET_ASIDE));
        assert!(aside.is_live(0, later + SET_ASIDE));
    }

    #[test]
    fn the_first_back_is_the_one_whose_set_aside_ends_first() {
        let t0 = Instant::now();
        let aside = SetAside::new(3, t0);
        aside.set_aside(0, t0 + Duration::from_secs(2));
        aside.set_aside(1, t0);
        aside.set_aside(2, t0 + Duration::from_secs(1));
        assert_eq!(aside.first_back(&[0, 1, 2]), Some(1));
        assert_eq!(aside.first_back(&[0, 2]), Some(2));
        assert_eq!(aside.first_back(&[]), None);
    }
}
