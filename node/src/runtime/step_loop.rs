//! The step loop: the task that drives the core's time. Whenever the core asks for it
//! ([`Node::poll_timeout`]), one step (answer claims, commit, run a
//! matching round when one is due), then the matches it learnt of go to the
//! websockets, and subscriptions of requests that are no longer pending are
//! forgotten.
//!
//! A step is CPU work (tens of milliseconds at 10k x 10k), so it runs on the
//! blocking pool and never occupies an async worker; the round itself runs
//! outside the core's lock (see [`crate::runtime::node`]), so it delays neither
//! intake nor the mesh.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::runtime::delivery::Hub;
use crate::runtime::node::Node;
use ride_types::clock::Millis;
use ride_types::ids::NodeId;

#[derive(Clone)]
pub(crate) struct StepLoop {
    pub core: Arc<Node>,
    pub hub: Arc<Hub>,
    /// The longest the task sleeps between steps, whatever the core asks.
    pub interval: Duration,
    /// The identity the core writes as (fixed once it is open): the
    /// matches it committed itself are counted as decided.
    pub owner: NodeId,
}

impl StepLoop {
    /// Runs a step at once and then whenever the core's next timeout
    /// comes, until `shutdown`.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        loop {
            let step_loop = self.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || step_loop.step()).await {
                tracing::error!(error = %e, "protocol step panicked");
            }
            let due = self.core.poll_timeout();
            let wait = Duration::from_millis(due.0.saturating_sub(Millis::now().0))
                .clamp(Duration::from_millis(1), self.interval);
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn step(&self) {
        let now = Millis::now();
        let started = Instant::now();
        let committed = match self.core.step(now) {
            Ok(committed) => committed,
            Err(e) => {
                tracing::error!(error = %e, "protocol step failed");
                return;
            }
        };
        metrics::histogram!("ride_match_round_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("ride_matches_committed_total").increment(committed.len() as u64);
        let decided = committed
            .iter()
            .filter(|m| m.committed_by == self.owner)
            .count();
        metrics::counter!("ride_matches_decided_total").increment(decided as u64);
        for m in &committed {
            tracing::info!(
                rider = %m.rider.id,
                driver = %m.driver.id,
                car = %m.driver.car_number,
                pickup_km = m.pickup_km,
                fare_taka = m.fare_taka,
                committed_by = %m.committed_by,
                "matched"
            );
        }
        self.hub.publish(&committed);

        let watched = self.hub.watched();
        let pending = self.core.still_pending(&watched, now);
        let gone: Vec<_> = watched
            .into_iter()
            .zip(pending)
            .filter_map(|(id, pending)| (!pending && !id.may_still_arrive(now)).then_some(id))
            .collect();
        self.hub.forget(&gone);

        let state = self.core.snapshot(now);
        metrics::gauge!("ride_pending", "kind" => "rider").set(state.pending_riders as f64);
        metrics::gauge!("ride_pending", "kind" => "driver").set(state.pending_drivers as f64);
        metrics::gauge!("ride_ready").set(if state.ready { 1.0 } else { 0.0 });
        metrics::gauge!("mesh_documents").set(state.documents as f64);
        metrics::gauge!("mesh_document_bytes").set(state.document_bytes as f64);
        metrics::gauge!("mesh_open_claims").set(state.open_claims as f64);
        metrics::counter!("mesh_claims_sent_total").absolute(state.stats.claims_sent);
        metrics::counter!("mesh_claims_granted_total").absolute(state.stats.transfers_granted);
        metrics::counter!("mesh_claims_refused_total").absolute(state.stats.claims_refused);
        metrics::counter!("mesh_claims_expired_total").absolute(state.stats.claims_expired);
        metrics::counter!("mesh_records_rejected_total").absolute(state.stats.records_rejected);
        metrics::counter!("mesh_documents_refused_total").absolute(state.stats.documents_refused);
        metrics::counter!("mesh_intake_reloaded_total").absolute(state.stats.intake_reloaded);
        metrics::counter!("mesh_candidates_skipped_total").absolute(state.stats.candidates_skipped);
        metrics::counter!("ride_commits_duplicate_total").absolute(state.duplicate_commits);
        metrics::counter!("ride_commits_conflicting_total").absolute(state.conflicting_commits);
    }
}
