//! How a running node stops: one cancellation token, then everything in
//! order within one grace period. Requests in flight finish (or are cut off
//! at the grace), background tasks are joined, then the step loop, the
//! mesh, the group-commit thread and the rating store, so that nothing the
//! node acknowledged is left half-written.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::NodeError;
use crate::disk::ratings::RatingStore;
use crate::net::transport::Mesh;

/// What a node stops once its token is cancelled.
pub(super) struct Stopping {
    /// The public and admin servers, shutting down gracefully on the token.
    pub serving: JoinHandle<std::io::Result<()>>,
    pub tasks: TaskTracker,
    pub step_loop: JoinHandle<()>,
    pub mesh: Option<Mesh>,
    pub flusher: std::thread::JoinHandle<()>,
    pub store: Arc<dyn RatingStore>,
    /// One grace for the requests in flight and the tasks together.
    pub grace: Duration,
}

impl Stopping {
    /// Waits for `stop`, then stops everything; the servers' error, if any.
    pub(super) async fn after(mut self, stop: CancellationToken) -> Result<(), NodeError> {
        stop.cancelled().await;
        let deadline = tokio::time::Instant::now() + self.grace;
        let served = match tokio::time::timeout_at(deadline, &mut self.serving).await {
            Ok(joined) => joined?.map_err(NodeError::Serve),
            Err(_) => {
                tracing::warn!(grace = ?self.grace, "in-flight requests outlived the shutdown grace");
                // Dropped, connections and all, and joined: not left running.
                self.serving.abort();
                let _ = self.serving.await;
                Ok(())
            }
        };
        self.tasks.close();
        if tokio::time::timeout_at(deadline, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                grace = ?self.grace,
                left = self.tasks.len(),
                "node tasks outlived the shutdown grace"
            );
        }
        self.step_loop.await?;
        if let Some(mesh) = self.mesh {
            mesh.stopped().await;
        }
        let flusher = self.flusher;
        if tokio::task::spawn_blocking(move || flusher.join())
            .await?
            .is_err()
        {
            tracing::error!("the group-commit thread panicked");
        }
        self.store.close().await?;
        tracing::info!("node stopped");
        served
    }
}
