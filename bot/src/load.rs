//! Load mode: a fixed request rate, with honest latency.
//!
//! Request `k` is *scheduled* at `start + k / rate`; `--concurrency` workers
//! take the next `k`, wait for its time, send it, and measure latency from the
//! scheduled time rather than from when it was actually sent. A node that
//! stalls therefore shows its stall in every request queued behind it instead
//! of hiding it by slowing the sender ("coordinated omission"). If the workers
//! fall behind the schedule, the run still ends on time and the report shows
//! the achieved rate below the target.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Url;
use ride_types::api::{DriverRequest, RatingRequest, RiderRequest};
use serde::Serialize;
use serde::de::IgnoredAny;
use tokio::sync::watch;
use tracing::warn;

use crate::area::Area;
use crate::conn::{ConnError, Connections};
use crate::endpoint::Router;
use crate::http::{Reply, describe_error};
use crate::seed::RatingTarget;
use crate::stats::{Outcome, Stats, per_sec};
use crate::world::{self, RunTag};

/// Below this share of the target rate the report says the bot fell behind.
const KEPT_UP_SHARE: f64 = 0.98;
/// Distinct rider and driver names cycled through (car numbers never repeat).
const NAMES: u64 = 1000;

/// When each request is due.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start: Instant,
    rate: u32,
    /// Requests scheduled from here on are measured.
    pub measure_from: Instant,
    /// Nothing is scheduled at or after this.
    pub end: Instant,
}

impl Schedule {
    pub fn new(start: Instant, rate: u32, warmup: Duration, duration: Duration) -> Self {
        let measure_from = start + warmup;
        Schedule {
            start,
            rate,
            measure_from,
            end: measure_from + duration,
        }
    }

    /// The scheduled start of request `k` (exact, no accumulated drift).
    pub fn due(&self, k: u64) -> Instant {
        let nanos = u128::from(k) * 1_000_000_000 / u128::from(self.rate.max(1));
        self.start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

pub struct LoadConfig {
    pub schedule: Schedule,
    pub concurrency: usize,
    pub area: Area,
    pub seed: Option<u64>,
    pub run: RunTag,
    /// Rate these matches (request `k` rates match `k`) instead of sending
    /// riders and drivers.
    pub ratings: Option<Arc<Vec<RatingTarget>>>,
}

/// What the summary needs beyond [`Stats`].
#[derive(Debug, Clone, PartialEq)]
pub struct LoadReport {
    pub target_per_sec: u32,
    pub achieved_per_sec: f64,
    pub kept_up: bool,
    /// Length of the measured window (shorter than `--duration` after Ctrl-C).
    pub window: Duration,
    pub warmup_requests: u64,
}

impl LoadReport {
    fn new(target: u32, measured: u64, window: Duration, warmup_requests: u64) -> Self {
        let achieved_per_sec = per_sec(measured, window);
        LoadReport {
            target_per_sec: target,
            achieved_per_sec,
            kept_up: achieved_per_sec >= f64::from(target) * KEPT_UP_SHARE,
            window,
            warmup_requests,
        }
    }
}

/// State shared by the workers.
struct Shared {
    router: Arc<Router>,
    stats: Arc<Stats>,
    schedule: Schedule,
    area: Area,
    run: RunTag,
    ratings: Option<Arc<Vec<RatingTarget>>>,
    next: AtomicU64,
    warmup_requests: AtomicU64,
}

/// Sends on schedule until the end or `interrupt` (Ctrl-C), then waits for
/// the requests in flight (each bounded by the client's timeout).
pub async fn run(
    router: Arc<Router>,
    config: LoadConfig,
    stats: Arc<Stats>,
    interrupt: impl Future<Output = ()>,
) -> LoadReport {
    let schedule = config.schedule;
    let shared = Arc::new(Shared {
        router,
        stats: Arc::clone(&stats),
        schedule,
        area: config.area,
        run: config.run,
        ratings: config.ratings,
        next: AtomicU64::new(0),
        warmup_requests: AtomicU64::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let seed = config.seed.unwrap_or_else(|| rand::rng().random());
    let workers: Vec<_> = (0..config.concurrency as u64)
        .map(|w| {
            let rng = StdRng::seed_from_u64(seed.wrapping_add(w));
            tokio::spawn(worker(Arc::clone(&shared), rng, stop_rx.clone()))
        })
        .collect();

    // Workers stop by themselves at the schedule's end; only an interruption
    // has to wake the ones sleeping until their next request is due.
    let stopped_at = tokio::select! {
        () = tokio::time::sleep_until(schedule.end.into()) => schedule.end,
        () = interrupt => {
            let _ = stop_tx.send(true);
            Instant::now().min(schedule.end)
        }
    };
    for handle in workers {
        if let Err(e) = handle.await {
            warn!(error = %e, "a load worker failed");
        }
    }

    let measured = stats.snapshot().requests.sent;
    LoadReport::new(
        schedule.rate,
        measured,
        stopped_at.saturating_duration_since(schedule.measure_from),
        shared.warmup_requests.load(Relaxed),
    )
}

async fn worker(shared: Arc<Shared>, mut rng: StdRng, mut stop: watch::Receiver<bool>) {
    let schedule = shared.schedule;
    let mut connections = Connections::default();
    loop {
        let k = shared.next.fetch_add(1, Relaxed);
        let due = schedule.due(k);
        let now = Instant::now();
        // Past the end, or so far behind that the end has come: stop.
        if due >= schedule.end || now >= schedule.end || *stop.borrow() {
            return;
        }
        if due > now {
            tokio::select! {
                () = tokio::time::sleep_until(due.into()) => {}
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
        }
        let sent_at = Instant::now();
        let sent = match &shared.ratings {
            Some(targets) => rate(&mut connections, targets, k).await,
            None => send_request(&shared, &mut connections, &mut rng, k, sent_at).await,
        };
        set_aside_dead(&shared.router, &sent, Instant::now());
        count(&shared, sent, due, sent_at);
    }
}

/// Sets aside, as of `now`, the endpoint where `sent` met a dead node.
fn set_aside_dead(router: &Router, sent: &Sent, now: Instant) {
    if let Some(dead) = &sent.dead_at {
        router.set_aside(dead, now);
    }
}

/// Counts a request that was due at `due` and sent at `sent_at`, if it was
/// due in the measured window.
fn count(shared: &Shared, sent: Sent, due: Instant, sent_at: Instant) {
    let (latency, answered_in) = (due.elapsed(), sent_at.elapsed());
    let outcome = match sent.result {
        Ok(reply) => {
            if let Err(problem) = reply.body
                && let Some(text) = shared.stats.note_problem(|| problem)
            {
                warn!("request refused: {text} (further problems are counted, not logged)");
            }
            Outcome::Answered {
                status: reply.status.as_u16(),
                redirected: reply.redirected_to.is_some(),
            }
        }
        Err(e) => {
            if let Some(text) = shared.stats.note_problem(|| describe_error(&e)) {
                warn!("{text} (further errors are counted, not logged)");
            }
            Outcome::Transport
        }
    };
    if due < shared.schedule.measure_from {
        shared.warmup_requests.fetch_add(1, Relaxed);
        return;
    }
    let stats = &shared.stats;
    stats.record_request(outcome, latency);
    stats.record_shed(outcome, answered_in);
    if sent.dead_at.is_some() {
        stats.record_failed_post();
    }
    if sent.failover {
        stats.record_failover();
    }
}

/// One request, sent.
struct Sent {
    result: Result<Reply<IgnoredAny>, ConnError>,
    /// Its own endpoint was set aside, so it went to another.
    failover: bool,
    /// Where it met a dead node, if it did.
    dead_at: Option<Url>,
}

impl Sent {
    fn new(result: Result<Reply<IgnoredAny>, ConnError>, asked: &Url, failover: bool) -> Self {
        let dead_at = match &result {
            Ok(reply) => reply.dead_at(asked),
            Err(e) => e.refused_at(),
        }
        .cloned();
        Sent {
            result,
            failover,
            dead_at,
        }
    }
}

/// Request `k`: a rider when even, a driver when odd, to the endpoint its
/// position routes to at `now`.
async fn send_request(
    shared: &Shared,
    connections: &mut Connections,
    rng: &mut StdRng,
    k: u64,
    now: Instant,
) -> Sent {
    let position = shared.area.random_position(rng);
    let route = shared.router.route(position, now);
    let name = k % NAMES;
    if k.is_multiple_of(2) {
        let body = RiderRequest {
            // Bounded by NAMES, so the cast cannot truncate.
            name: world::rider_name(shared.run, name as usize),
            position,
            destination: shared.area.random_position(rng),
        };
        let url = &route.endpoint.rider;
        Sent::new(post(connections, url, &body).await, url, route.failover)
    } else {
        let body = DriverRequest {
            name: world::driver_name(shared.run, name as usize),
            car_number: world::car_number(shared.run, k),
            position,
        };
        let url = &route.endpoint.driver;
        Sent::new(post(connections, url, &body).await, url, route.failover)
    }
}

/// Request `k`: rates match `k` (cycling if the run outlasts the matches,
/// which then shows as 409s).
async fn rate(connections: &mut Connections, targets: &[RatingTarget], k: u64) -> Sent {
    let target = &targets[(k % targets.len().max(1) as u64) as usize];
    let body = RatingRequest {
        rider_id: target.rider_id,
        token: Some(target.token.clone()),
        car_number: target.car_number.clone(),
        stars: (k % 5 + 1) as i64,
    };
    Sent::new(
        post(connections, &target.url, &body).await,
        &target.url,
        false,
    )
}

/// POSTs `body` as JSON on this worker's connection and reads the answer.
async fn post(
    connections: &mut Connections,
    url: &Url,
    body: &impl Serialize,
) -> Result<Reply<IgnoredAny>, ConnError> {
    let json = serde_json::to_vec(body).expect("request bodies serialize");
    let answer = connections.post_json(url, json.into()).await?;
    Ok(Reply::read(
        url,
        answer.status,
        answer.redirected_to,
        answer.retry_after.as_ref(),
        &answer.body,
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::failover::SET_ASIDE;
    use crate::scripted::{Scripted, answer, nothing_listening, refusal, serve};

    /// Load mode's shared state over `bases`, for requests sent by hand.
    fn shared(bases: &[Url]) -> Shared {
        let start = Instant::now();
        Shared {
            router: Arc::new(Router::new(bases).unwrap()),
            stats: Arc::new(Stats::new(start)),
            schedule: Schedule::new(start, 100, Duration::ZERO, Duration::from_secs(1)),
            area: Area::DHAKA,
            run: RunTag::random(&mut StdRng::seed_from_u64(1)),
            ratings: None,
            next: AtomicU64::new(0),
            warmup_requests: AtomicU64::new(0),
        }
    }

    /// A scripted endpoint that answers as `script`, and how many requests
    /// reached it.
    async fn endpoint(
        script: impl Fn() -> Scripted + Send + Sync + 'static,
    ) -> (Url, Arc<AtomicUsize>) {
        let reached = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&reached);
        let (base, _) = serve(move |_| {
            counter.fetch_add(1, Relaxed);
            script()
        })
        .await;
        (base, reached)
    }

    /// What 40 requests sent at `now` did, as a worker handles them.
    #[derive(Debug, Default, PartialEq)]
    struct Tally {
        dead: usize,
        failovers: usize,
    }

    async fn send_at(shared: &Shared, rng: &mut StdRng, now: Instant) -> Tally {
        let mut connections = Connections::default();
        let mut tally = Tally::default();
        for k in 0..40 {
            let sent = send_request(shared, &mut connections, rng, k, now).await;
            set_aside_dead(&shared.router, &sent, now);
            tally.dead += usize::from(sent.dead_at.is_some());
            tally.failovers += usize::from(sent.failover);
        }
        tally
    }

    /// Requests over `dead_base` and an endpoint that accepts: the first
    /// to reach the dead one sets it aside, the others go to the live one
    /// until the set-aside ends, and then it is tried again.
    async fn assert_set_aside_until_it_ends(dead_base: Url) {
        let (live_base, live_reached) = endpoint(|| answer("202 Accepted")).await;
        let shared = shared(&[dead_base, live_base]);
        let mut rng = StdRng::seed_from_u64(4);
        let t0 = Instant::now();
        let first = send_at(&shared, &mut rng, t0).await;
        assert_eq!(first.dead, 1, "set aside after one");
        assert!(first.failovers > 0, "{first:?}");
        assert_eq!(live_reached.load(Relaxed), 39);
        let again = send_at(&shared, &mut rng, t0 + SET_ASIDE).await;
        assert_eq!(again.dead, 1, "tried again after the set-aside");
    }

    /// [`assert_set_aside_until_it_ends`] for an endpoint that answers as
    /// `dead`, which is reached once before the set-aside and once after.
    async fn assert_answer_sets_aside(dead: fn() -> Scripted) {
        let (dead_base, dead_reached) = endpoint(dead).await;
        assert_set_aside_until_it_ends(dead_base).await;
        assert_eq!(dead_reached.load(Relaxed), 2);
    }

    #[tokio::test]
    async fn a_node_that_cannot_serve_the_region_is_set_aside_until_the_set_aside_ends() {
        assert_answer_sets_aside(|| refusal("region_unavailable")).await;
    }

    #[tokio::test]
    async fn a_gateway_with_no_live_node_is_set_aside_until_the_set_aside_ends() {
        assert_answer_sets_aside(|| answer("502 Bad Gateway")).await;
    }

    #[tokio::test]
    async fn a_refused_connection_sets_the_endpoint_aside_until_the_set_aside_ends() {
        assert_set_aside_until_it_ends(nothing_listening()).await;
    }

    #[tokio::test]
    async fn an_overloaded_node_is_not_set_aside() {
        let (busy_base, busy_reached) = endpoint(|| refusal("overloaded")).await;
        let (live_base, live_reached) = endpoint(|| answer("202 Accepted")).await;
        let shared = shared(&[busy_base, live_base]);
        let mut rng = StdRng::seed_from_u64(4);
        let tally = send_at(&shared, &mut rng, Instant::now()).await;
        assert_eq!(tally, Tally::default(), "load, not death");
        let busy = busy_reached.load(Relaxed);
        assert!(busy > 1, "every request of its own reaches it: {busy}");
        assert_eq!(busy + live_reached.load(Relaxed), 40);
    }

    #[test]
    fn schedule_spaces_requests_evenly_without_drift() {
        let start = Instant::now();
        let s = Schedule::new(
            start,
            20_000,
            Duration::from_secs(2),
            Duration::from_secs(10),
        );
        assert_eq!(s.due(0), start);
        assert_eq!(s.due(1) - s.due(0), Duration::from_micros(50));
        assert_eq!(s.due(20_000), start + Duration::from_secs(1));
        assert_eq!(s.due(240_000), start + Duration::from_secs(12));
        assert_eq!(s.measure_from, start + Duration::from_secs(2));
        assert_eq!(s.end, start + Duration::from_secs(12));
        // A rate that does not divide a second stays exact at whole seconds.
        let s = Schedule::new(start, 3, Duration::ZERO, Duration::from_secs(1));
        assert_eq!(s.due(3), start + Duration::from_secs(1));
        assert_eq!(s.due(1), start + Duration::from_nanos(333_333_333));
    }

    #[test]
    fn schedule_counts_the_measured_requests() {
        let s = Schedule::new(
            Instant::now(),
            500,
            Duration::from_secs(2),
            Duration::from_secs(2),
        );
        let measured = (0..10_000_u64)
            .map(|k| s.due(k))
            .filter(|&due| due >= s.measure_from && due < s.end)
            .count();
        assert_eq!(measured, 1000);
    }

    #[test]
    fn report_says_whether_the_rate_was_met() {
        let r = LoadReport::new(500, 1000, Duration::from_secs(2), 10);
        assert_eq!(r.achieved_per_sec, 500.0);
        assert!(r.kept_up);
        let r = LoadReport::new(20_000, 100_000, Duration::from_secs(10), 0);
        assert_eq!(r.achieved_per_sec, 10_000.0);
        assert!(!r.kept_up);
        let r = LoadReport::new(500, 0, Duration::ZERO, 0);
        assert_eq!(r.achieved_per_sec, 0.0);
        assert!(!r.kept_up);
    }
}
