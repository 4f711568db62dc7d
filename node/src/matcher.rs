//! The matcher task: every interval, one round of
//! prepare (under the lock) → [`greedy`] → commit (under the lock, in short
//! chunks) → publish to websockets.
//!
//! A round is batch CPU work (tens of milliseconds at 10k x 10k), so it runs
//! on the blocking pool and never occupies an async worker. Intake does not
//! take the core's lock at all (see [`crate::shared`]), so a round never
//! delays intake either.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::clock::Millis;
use crate::communication::Hub;
use crate::matching::greedy;
use crate::shared::SharedDispatch;

/// Pairs committed per hold of the dispatch lock, so that a subscription or
/// a rating never waits behind a whole round's commits.
const COMMIT_CHUNK: usize = 256;

#[derive(Clone)]
pub struct Matcher {
    pub dispatch: Arc<SharedDispatch>,
    pub hub: Arc<Hub>,
    pub interval: Duration,
    pub max_pickup_km: f64,
}

impl Matcher {
    /// Runs a round at once and then every interval, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let matcher = self.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || matcher.round()).await {
                tracing::error!(error = %e, "matching round failed");
            }
        }
    }

    fn round(&self) {
        let round = self.dispatch.lock().prepare_round(Millis::now());
        self.hub.forget(&round.expired.ids);
        metrics::counter!("ride_requests_expired_total", "kind" => "rider")
            .increment(round.expired.riders as u64);
        metrics::counter!("ride_requests_expired_total", "kind" => "driver")
            .increment(round.expired.drivers as u64);
        metrics::gauge!("ride_pending", "kind" => "rider").set(round.riders.len() as f64);
        metrics::gauge!("ride_pending", "kind" => "driver").set(round.drivers.len() as f64);
        if round.riders.is_empty() || round.drivers.is_empty() {
            return;
        }

        let started = Instant::now();
        let pairs = greedy(&round.riders, &round.drivers, self.max_pickup_km);
        metrics::histogram!("ride_match_round_seconds").record(started.elapsed().as_secs_f64());

        for chunk in pairs.chunks(COMMIT_CHUNK) {
            let committed = self.dispatch.lock().commit(chunk, Millis::now());
            metrics::counter!("ride_matches_committed_total").increment(committed.len() as u64);
            for m in &committed {
                tracing::info!(
                    rider = %m.rider.id,
                    driver = %m.driver.id,
                    car = %m.driver.car_number,
                    pickup_km = m.pickup_km,
                    fare_taka = m.fare_taka,
                    "matched"
                );
            }
            self.hub.publish(&committed);
        }
    }
}
