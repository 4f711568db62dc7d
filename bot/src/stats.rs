//! What the bot counts while it runs.
//!
//! Every request task updates these lock-free counters directly (only the
//! latency histogram sits behind a mutex, held for a single `record`), so the
//! progress line and the final summary read the same numbers without a
//! collector task in the hot path. [`Stats::snapshot`] turns them into plain
//! values for display.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Highest latency the histogram resolves; slower answers are clamped to it.
const MAX_LATENCY_MICROS: u64 = 120_000_000;
/// Status codes are three digits; anything else is folded into slot 0.
const STATUS_SLOTS: usize = 1000;
/// The status of a request refused at the door (a node at capacity).
const SHED: u16 = 503;

fn record_micros(histogram: &Mutex<Histogram<u64>>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    histogram
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .saturating_record(micros);
}

fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 3)
        .expect("constant histogram bounds are valid")
}

/// How one HTTP request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The server answered (possibly after following redirects).
    Answered { status: u16, redirected: bool },
    /// No answer: connection refused, reset, timed out, ...
    Transport,
}

/// Counts for one kind of request.
pub struct Counters {
    sent: AtomicU64,
    by_status: Box<[AtomicU64]>,
    transport_errors: AtomicU64,
    redirects: AtomicU64,
    failed: AtomicU64,
    failovers: AtomicU64,
}

/// A point-in-time copy of [`Counters`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CountersSnapshot {
    pub sent: u64,
    /// 2xx answers.
    pub accepted: u64,
    /// Every other answer (4xx, 5xx, an unfollowed 3xx).
    pub rejected: u64,
    /// 503s: refused at the door by a node at capacity (or whose storage
    /// failed), with `Retry-After`. Counted among `rejected` too.
    pub shed: u64,
    pub by_status: BTreeMap<u16, u64>,
    pub transport_errors: u64,
    pub redirects: u64,
    /// Requests that met a dead node: a refused connection, a `502`, or a
    /// `503` `region_unavailable` (among `transport_errors` or `rejected`).
    pub failed: u64,
    /// Requests sent to another endpoint because their own was set aside.
    pub failovers: u64,
}

impl Counters {
    fn new() -> Self {
        Counters {
            sent: AtomicU64::new(0),
            by_status: (0..STATUS_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            transport_errors: AtomicU64::new(0),
            redirects: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            failovers: AtomicU64::new(0),
        }
    }

    fn record(&self, outcome: Outcome) {
        self.sent.fetch_add(1, Relaxed);
        match outcome {
            Outcome::Answered { status, redirected } => {
                let slot = usize::from(status);
                let slot = if slot < STATUS_SLOTS { slot } else { 0 };
                self.by_status[slot].fetch_add(1, Relaxed);
                if redirected {
                    self.redirects.fetch_add(1, Relaxed);
                }
            }
            Outcome::Transport => {
                self.transport_errors.fetch_add(1, Relaxed);
            }
        }
    }

    fn snapshot(&self) -> CountersSnapshot {
        let mut snap = CountersSnapshot {
            sent: self.sent.load(Relaxed),
            transport_errors: self.transport_errors.load(Relaxed),
            redirects: self.redirects.load(Relaxed),
            failed: self.failed.load(Relaxed),
            failovers: self.failovers.load(Relaxed),
            ..CountersSnapshot::default()
        };
        for (status, count) in self.by_status.iter().enumerate() {
            let count = count.load(Relaxed);
            if count == 0 {
                continue;
            }
            // `status` < STATUS_SLOTS, which fits in a u16.
            let status = status as u16;
            snap.by_status.insert(status, count);
            if (200..300).contains(&status) {
                snap.accepted += count;
            } else {
                snap.rejected += count;
            }
            if status == SHED {
                snap.shed += count;
            }
        }
        snap
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LatencySnapshot {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl LatencySnapshot {
    /// Reads percentiles from a histogram of microseconds.
    pub fn from_micros(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return LatencySnapshot::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        LatencySnapshot {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// Events per second over `elapsed`; zero when no time has passed.
pub fn per_sec(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

/// Everything the bot counts.
pub struct Stats {
    started: Instant,
    requests: Counters,
    ratings: Counters,
    latency: Mutex<Histogram<u64>>,
    shed_latency: Mutex<Histogram<u64>>,
    matches: AtomicU64,
    driver_notices: AtomicU64,
    fare_paisa: AtomicU64,
    expired_riders: AtomicU64,
    expired_drivers: AtomicU64,
    ws_connects: AtomicU64,
    ws_drops: AtomicU64,
    ws_server_errors: AtomicU64,
    first_problem: Mutex<Option<String>>,
}

/// A point-in-time copy of [`Stats`].
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub elapsed: Duration,
    pub requests: CountersSnapshot,
    pub ratings: CountersSnapshot,
    pub latency: LatencySnapshot,
    /// Latency of the shed (503) answers alone: refusing must be fast.
    pub shed_latency: LatencySnapshot,
    pub matches: u64,
    pub driver_notices: u64,
    pub fare_total_taka: f64,
    pub expired_riders: u64,
    pub expired_drivers: u64,
    pub ws_connects: u64,
    pub ws_drops: u64,
    pub ws_server_errors: u64,
    /// The first transport error or rejection seen, to explain failures.
    pub first_problem: Option<String>,
}

impl Stats {
    /// `started` is when measuring begins (after any warm-up); `elapsed`
    /// counts from there and is zero before.
    pub fn new(started: Instant) -> Self {
        Stats {
            started,
            requests: Counters::new(),
            ratings: Counters::new(),
            latency: Mutex::new(latency_histogram()),
            shed_latency: Mutex::new(latency_histogram()),
            matches: AtomicU64::new(0),
            driver_notices: AtomicU64::new(0),
            fare_paisa: AtomicU64::new(0),
            expired_riders: AtomicU64::new(0),
            expired_drivers: AtomicU64::new(0),
            ws_connects: AtomicU64::new(0),
            ws_drops: AtomicU64::new(0),
            ws_server_errors: AtomicU64::new(0),
            first_problem: Mutex::new(None),
        }
    }

    /// A rider or driver POST finished after `latency`. Only answers enter
    /// the histogram: a refused connection fails in microseconds and would
    /// make a dead node look fast.
    pub fn record_request(&self, outcome: Outcome, latency: Duration) {
        self.requests.record(outcome);
        if outcome == Outcome::Transport {
            return;
        }
        record_micros(&self.latency, latency);
    }

    /// How long a request that was shed took to be answered, from the
    /// moment it was sent (not scheduled): refusing must be fast whatever
    /// the bot's own backlog.
    pub fn record_shed(&self, outcome: Outcome, answered_in: Duration) {
        if matches!(outcome, Outcome::Answered { status: SHED, .. }) {
            record_micros(&self.shed_latency, answered_in);
        }
    }

    /// A rider or driver POST met a dead node (see
    /// [`CountersSnapshot::failed`]).
    pub fn record_failed_post(&self) {
        self.requests.failed.fetch_add(1, Relaxed);
    }

    /// A rider or driver POST went to another endpoint because its own was
    /// set aside.
    pub fn record_failover(&self) {
        self.requests.failovers.fetch_add(1, Relaxed);
    }

    pub fn record_rating(&self, outcome: Outcome) {
        self.ratings.record(outcome);
    }

    /// A rider was told of its match.
    pub fn record_match(&self, fare_taka: f64) {
        self.matches.fetch_add(1, Relaxed);
        // Fares have two decimals; summing whole paisa avoids float atomics.
        let paisa = (fare_taka * 100.0).round();
        if paisa.is_finite() && paisa >= 0.0 {
            self.fare_paisa.fetch_add(paisa as u64, Relaxed);
        }
    }

    /// A driver was told of its match.
    pub fn record_driver_notice(&self) {
        self.driver_notices.fetch_add(1, Relaxed);
    }

    pub fn record_expired(&self, rider: bool) {
        let counter = if rider {
            &self.expired_riders
        } else {
            &self.expired_drivers
        };
        counter.fetch_add(1, Relaxed);
    }

    pub fn record_ws_connect(&self) {
        self.ws_connects.fetch_add(1, Relaxed);
    }

    pub fn record_ws_drop(&self) {
        self.ws_drops.fetch_add(1, Relaxed);
    }

    /// Returns how many came before this one.
    pub fn record_ws_server_error(&self) -> u64 {
        self.ws_server_errors.fetch_add(1, Relaxed)
    }

    /// Keeps the first problem for the summary. Returns its description if
    /// this was the first, so the caller can log it once instead of flooding
    /// the log; `describe` is not called otherwise.
    pub fn note_problem(&self, describe: impl FnOnce() -> String) -> Option<String> {
        let mut first = self
            .first_problem
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if first.is_some() {
            return None;
        }
        let text = describe();
        *first = Some(text.clone());
        Some(text)
    }

    pub fn snapshot(&self) -> Snapshot {
        let read = |h: &Mutex<Histogram<u64>>| {
            LatencySnapshot::from_micros(&h.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
        };
        let (latency, shed_latency) = (read(&self.latency), read(&self.shed_latency));
        Snapshot {
            elapsed: self.started.elapsed(),
            requests: self.requests.snapshot(),
            ratings: self.ratings.snapshot(),
            latency,
            shed_latency,
            matches: self.matches.load(Relaxed),
            driver_notices: self.driver_notices.load(Relaxed),
            fare_total_taka: self.fare_paisa.load(Relaxed) as f64 / 100.0,
            expired_riders: self.expired_riders.load(Relaxed),
            expired_drivers: self.expired_drivers.load(Relaxed),
            ws_connects: self.ws_connects.load(Relaxed),
            ws_drops: self.ws_drops.load(Relaxed),
            ws_server_errors: self.ws_server_errors.load(Relaxed),
            first_problem: self
                .first_problem
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_from_a_histogram() {
        let mut h = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_MICROS, 3).unwrap();
        // 1..=1000 ms, once each.
        for ms in 1..=1000_u64 {
            h.record(ms * 1000).unwrap();
        }
        let l = LatencySnapshot::from_micros(&h);
        assert_eq!(l.count, 1000);
        let close = |actual: f64, expected: f64| (actual - expected).abs() <= expected * 0.002;
        assert!(close(l.p50, 500.0), "{l:?}");
        assert!(close(l.p90, 900.0), "{l:?}");
        assert!(close(l.p99, 990.0), "{l:?}");
        assert!(close(l.p999, 999.0), "{l:?}");
        assert!(close(l.max, 1000.0), "{l:?}");
        assert!(close(l.mean, 500.5), "{l:?}");
    }

    #[test]
    fn empty_histogram_reads_as_zero() {
        let h = Histogram::<u64>::new(3).unwrap();
        assert_eq!(LatencySnapshot::from_micros(&h), LatencySnapshot::default());
    }

    #[test]
    fn rates() {
        assert_eq!(per_sec(100, Duration::from_secs(4)), 25.0);
        assert_eq!(per_sec(100, Duration::ZERO), 0.0);
        assert_eq!(per_sec(3, Duration::from_millis(1500)), 2.0);
    }

    #[test]
    fn counts_outcomes_by_status() {
        let stats = Stats::new(Instant::now());
        let ok = Outcome::Answered {
            status: 202,
            redirected: false,
        };
        stats.record_request(ok, Duration::from_millis(2));
        stats.record_request(
            Outcome::Answered {
                status: 202,
                redirected: true,
            },
            Duration::from_millis(4),
        );
        stats.record_request(
            Outcome::Answered {
                status: 422,
                redirected: false,
            },
            Duration::from_millis(1),
        );
        let shed = Outcome::Answered {
            status: 503,
            redirected: false,
        };
        stats.record_request(shed, Duration::from_secs(200));
        stats.record_shed(shed, Duration::from_micros(300));
        stats.record_shed(ok, Duration::from_secs(1));
        stats.record_request(Outcome::Transport, Duration::from_millis(1));
        stats.record_rating(Outcome::Answered {
            status: 409,
            redirected: false,
        });
        stats.record_match(12.34);
        stats.record_match(0.01);
        stats.record_failed_post();
        stats.record_failover();
        stats.record_failover();
        let s = stats.snapshot();
        assert_eq!(s.requests.sent, 5);
        assert_eq!(s.requests.accepted, 2);
        assert_eq!(s.requests.rejected, 2);
        assert_eq!(s.requests.shed, 1, "the 503 was shed");
        assert_eq!(
            (s.shed_latency.count, s.shed_latency.max),
            (1, 0.3),
            "only the 503 enters the shed latency, with its own time"
        );
        assert_eq!(s.requests.transport_errors, 1);
        assert_eq!(s.requests.redirects, 1);
        assert_eq!((s.requests.failed, s.requests.failovers), (1, 2));
        assert_eq!((s.ratings.failed, s.ratings.failovers), (0, 0));
        assert_eq!(
            s.requests.by_status,
            BTreeMap::from([(202, 2), (422, 1), (503, 1)])
        );
        assert_eq!(s.latency.count, 4);
        // The 200 s outlier is clamped, not lost.
        assert!(s.latency.max >= 119_000.0, "{:?}", s.latency);
        assert_eq!(s.ratings.rejected, 1);
        assert_eq!(s.matches, 2);
        assert_eq!(s.fare_total_taka, 12.35);
    }

    #[test]
    fn keeps_only_the_first_problem() {
        let stats = Stats::new(Instant::now());
        assert_eq!(
            stats.note_problem(|| "first".into()).as_deref(),
            Some("first")
        );
        assert_eq!(stats.note_problem(|| unreachable!()), None);
        assert_eq!(stats.snapshot().first_problem.as_deref(), Some("first"));
    }
}
