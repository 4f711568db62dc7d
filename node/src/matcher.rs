//! The matcher task: every interval, one round of
//! prepare (under the lock) → [`greedy`] (off the async workers) → commit
//! (under the lock) → publish to websockets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::clock::Millis;
use crate::communication::Hub;
use crate::dispatch::Dispatch;
use crate::matching::greedy;

pub struct Matcher {
    pub dispatch: Arc<Mutex<Dispatch>>,
    pub hub: Arc<Hub>,
    pub interval: Duration,
    pub max_pickup_km: f64,
}

impl Matcher {
    /// Runs rounds until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if let Err(e) = self.round().await {
                tracing::error!(error = %e, "matching round failed");
            }
        }
    }

    async fn round(&self) -> Result<(), tokio::task::JoinError> {
        let round = self.dispatch.lock().prepare_round(Millis::now());
        self.hub.forget(&round.expired.ids);
        metrics::counter!("ride_requests_expired_total", "kind" => "rider")
            .increment(round.expired.riders as u64);
        metrics::counter!("ride_requests_expired_total", "kind" => "driver")
            .increment(round.expired.drivers as u64);
        metrics::gauge!("ride_pending", "kind" => "rider").set(round.riders.len() as f64);
        metrics::gauge!("ride_pending", "kind" => "driver").set(round.drivers.len() as f64);
        if round.riders.is_empty() || round.drivers.is_empty() {
            return Ok(());
        }

        let max_km = self.max_pickup_km;
        let started = Instant::now();
        let pairs =
            tokio::task::spawn_blocking(move || greedy(&round.riders, &round.drivers, max_km))
                .await?;
        metrics::histogram!("ride_match_round_seconds").record(started.elapsed().as_secs_f64());

        let committed = self.dispatch.lock().commit(&pairs, Millis::now());
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
        Ok(())
    }
}
