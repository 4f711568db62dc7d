//! The rating store of a deployment: a multi-datacenter CQL cluster
//! (ScyllaDB in production, Apache Cassandra on a laptop), one datacenter per
//! region, with the node's embedded store as its outbox.
//!
//! Why an outbox: a rating is accepted once it is durable on the node, and
//! only then sent to the cluster by one delivery task. Each delivery round
//! takes every waiting outbox entry and writes them all at once: one
//! unlogged batch per driver (one partition, so one replica set and no
//! batch log), the ratings of a driver in acceptance order inside it, and
//! the drivers concurrently. A round is confirmed only once all of it is
//! in; the next round then starts at once, and the outbox entries of the
//! last one are dropped with the node's next group commit rather than with
//! an fsync of their own.
//! While the cluster takes writes the handler waits for its rating's
//! delivery, so the answer means "in the cluster at `LOCAL_QUORUM`"; when it
//! does not, the handler answers at once, the backlog grows on disk (shown
//! as `ride_ratings_outbox_backlog`), and the task drains it when the cluster
//! is back. Nothing accepted is lost and intake never stalls.
//!
//! Why writes are harmless to repeat: a rating's primary key is its match
//! (driver's car, rider), and its write timestamp is its rating time, so a
//! redelivered rating rewrites the same cells with the same timestamp and the
//! average counts it once.
//!
//! Consistency: writes at `LOCAL_QUORUM` (a majority of the local
//! datacenter's replicas, so a region does not wait on another continent);
//! reads at `LOCAL_QUORUM` too, so that with any replication factor a read
//! through a region sees every rating written through it (R + W > RF).
//! Other regions see a rating once the cluster has replicated it across
//! datacenters, usually within milliseconds.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::try_join_all;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::frame::types::Consistency;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::policies::retry::DefaultRetryPolicy;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlTimestamp;
use tokio::sync::{Notify, OnceCell, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{EmbeddedStore, Rating, RatingStore, Recorded, StoreError, Summary};

/// Outbox entries delivered in one round at most; a round is confirmed
/// (and removed from the outbox) only once all of it is in the cluster.
const DELIVERY_ROUND: usize = 2048;
/// Rows in one unlogged batch at most: Cassandra warns about batches over
/// 5 KiB (`batch_size_warn_threshold`), and a rating row is ~100 bytes.
const BATCH_ROWS: usize = 32;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Where the cluster is and how this node uses it.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Contact points (`host:port`), best one or more per datacenter.
    pub nodes: Vec<String>,
    /// This region's datacenter: preferred for every request.
    pub datacenter: String,
    pub keyspace: String,
    /// Replication factor per datacenter, for creating the keyspace.
    pub replication: Vec<(String, u32)>,
    /// Whether requests may go to another datacenter when the local one is
    /// down (they then run at that datacenter's `LOCAL_QUORUM`).
    pub dc_failover: bool,
    /// Client-side limit on one request, retries included.
    pub request_timeout: Duration,
}

impl ClusterConfig {
    /// Checks the names that end up in CQL text.
    pub fn validate(&self) -> Result<(), StoreError> {
        let names = std::iter::once(&self.keyspace)
            .chain(std::iter::once(&self.datacenter))
            .chain(self.replication.iter().map(|(dc, _)| dc));
        for name in names {
            let plain = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !plain {
                return Err(StoreError::Config(format!(
                    "{name:?} is not a plain keyspace or datacenter name (letters, digits, _ and -)"
                )));
            }
        }
        if self.nodes.is_empty() {
            return Err(StoreError::Config("no CQL contact points".into()));
        }
        if !self
            .replication
            .iter()
            .any(|(dc, _)| *dc == self.datacenter)
        {
            return Err(StoreError::Config(format!(
                "the replication settings name no replicas in this node's datacenter {}",
                self.datacenter
            )));
        }
        Ok(())
    }
}

/// A connected session and the two statements the node runs.
struct Cluster {
    session: Session,
    insert: PreparedStatement,
    summary: PreparedStatement,
}

impl Cluster {
    async fn connect(config: &ClusterConfig) -> Result<Self, StoreError> {
        let policy = DefaultPolicy::builder()
            .prefer_datacenter(config.datacenter.clone())
            .token_aware(true)
            .permit_dc_failover(config.dc_failover)
            .build();
        let profile = ExecutionProfile::builder()
            .load_balancing_policy(policy)
            .consistency(Consistency::LocalQuorum)
            .retry_policy(Arc::new(DefaultRetryPolicy::new()))
            .request_timeout(Some(config.request_timeout))
            .build();
        let session = SessionBuilder::new()
            .known_nodes(&config.nodes)
            .connection_timeout(config.request_timeout)
            .default_execution_profile_handle(profile.into_handle())
            .build()
            .await
            .map_err(unavailable)?;
        let replication: String = config
            .replication
            .iter()
            .map(|(dc, rf)| format!(", '{dc}': {rf}"))
            .collect();
        let keyspace = &config.keyspace;
        session
            .query_unpaged(
                format!(
                    "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = \
                     {{'class': 'NetworkTopologyStrategy'{replication}}}"
                ),
                (),
            )
            .await
            .map_err(unavailable)?;
        // One partition per driver: both queries touch exactly one.
        session
            .query_unpaged(
                format!(
                    "CREATE TABLE IF NOT EXISTS {keyspace}.ratings_by_driver (\
                     car_number text, rider_id uuid, driver_id uuid, stars int, \
                     rated_at timestamp, PRIMARY KEY ((car_number), rider_id))"
                ),
                (),
            )
            .await
            .map_err(unavailable)?;
        let mut insert = session
            .prepare(format!(
                "INSERT INTO {keyspace}.ratings_by_driver \
                 (car_number, rider_id, driver_id, stars, rated_at) \
                 VALUES (?, ?, ?, ?, ?) USING TIMESTAMP ?"
            ))
            .await
            .map_err(unavailable)?;
        insert.set_is_idempotent(true);
        let mut summary = session
            .prepare(format!(
                "SELECT COUNT(*), SUM(stars) FROM {keyspace}.ratings_by_driver \
                 WHERE car_number = ?"
            ))
            .await
            .map_err(unavailable)?;
        summary.set_is_idempotent(true);
        Ok(Self {
            session,
            insert,
            summary,
        })
    }

    /// Writes outbox entries, in outbox order: the drivers concurrently,
    /// each driver's ratings in order in unlogged batches, one after another.
    async fn write(&self, entries: &[(u64, Rating)]) -> Result<(), StoreError> {
        let mut by_driver: HashMap<&str, Vec<&Rating>> = HashMap::new();
        for (_, rating) in entries {
            by_driver
                .entry(rating.car_number.as_str())
                .or_default()
                .push(rating);
        }
        try_join_all(by_driver.into_values().map(|ratings| async move {
            for chunk in ratings.chunks(BATCH_ROWS) {
                self.write_partition(chunk).await?;
            }
            Ok::<_, StoreError>(())
        }))
        .await?;
        Ok(())
    }

    /// Ratings of one driver: one statement, or one unlogged batch.
    async fn write_partition(&self, ratings: &[&Rating]) -> Result<(), StoreError> {
        let rows: Vec<_> = ratings.iter().map(|r| row(r)).collect();
        if let [one] = rows.as_slice() {
            self.session.execute_unpaged(&self.insert, one).await
        } else {
            let mut batch = Batch::new(BatchType::Unlogged);
            for _ in &rows {
                batch.append_statement(self.insert.clone());
            }
            batch.set_is_idempotent(true);
            self.session.batch(&batch, rows).await
        }
        .map_err(unavailable)?;
        Ok(())
    }

    async fn summary(&self, car_number: &str) -> Result<Summary, StoreError> {
        let rows = self
            .session
            .execute_unpaged(&self.summary, (car_number,))
            .await
            .map_err(unavailable)?
            .into_rows_result()
            .map_err(|e| StoreError::Storage(e.to_string()))?;
        let (count, stars) = rows
            .first_row::<(i64, Option<i32>)>()
            .map_err(|e| StoreError::Storage(e.to_string()))?;
        Ok(Summary {
            stars: u64::try_from(stars.unwrap_or(0)).unwrap_or(0),
            count: u64::try_from(count).unwrap_or(0),
        })
    }
}

/// The insert's bind values; the write timestamp is the rating time.
fn row(rating: &Rating) -> (&str, uuid::Uuid, uuid::Uuid, i32, CqlTimestamp, i64) {
    let rated_at = i64::try_from(rating.rated_at.0).unwrap_or(i64::MAX / 1000);
    (
        rating.car_number.as_str(),
        rating.rider_id.0,
        rating.driver_id.0,
        i32::from(rating.stars),
        CqlTimestamp(rated_at),
        rated_at.saturating_mul(1000),
    )
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// State shared by the handlers and the delivery task.
struct Shared {
    config: ClusterConfig,
    outbox: EmbeddedStore,
    cluster: OnceCell<Cluster>,
    /// The highest outbox sequence known to be in the cluster.
    delivered: watch::Sender<Option<u64>>,
    /// Whether the last delivery attempt succeeded: handlers wait for
    /// delivery only then.
    healthy: AtomicBool,
    wake: Notify,
}

pub struct ClusterStore {
    shared: Arc<Shared>,
    stop: CancellationToken,
    delivery: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

impl ClusterStore {
    /// Starts delivering the outbox in `outbox` to the cluster. Connecting
    /// is tried for up to `connect_wait` here and retried in the background
    /// after that: a node starts, and accepts ratings, with its cluster down.
    pub async fn start(
        config: ClusterConfig,
        outbox: EmbeddedStore,
        connect_wait: Duration,
    ) -> Result<Self, StoreError> {
        config.validate()?;
        let shared = Arc::new(Shared {
            config,
            outbox,
            cluster: OnceCell::new(),
            delivered: watch::Sender::new(None),
            healthy: AtomicBool::new(false),
            wake: Notify::new(),
        });
        match tokio::time::timeout(connect_wait, shared.connected()).await {
            Ok(Ok(_)) => tracing::info!(
                datacenter = %shared.config.datacenter,
                keyspace = %shared.config.keyspace,
                "connected to the ratings cluster"
            ),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "ratings cluster unreachable; ratings queue on disk")
            }
            Err(_) => tracing::warn!("ratings cluster not reached yet; ratings queue on disk"),
        }
        let stop = CancellationToken::new();
        let delivery = tokio::spawn(deliver(Arc::clone(&shared), stop.clone()));
        Ok(Self {
            shared,
            stop,
            delivery: parking_lot::Mutex::new(Some(delivery)),
        })
    }
}

impl Shared {
    async fn connected(&self) -> Result<&Cluster, StoreError> {
        self.cluster
            .get_or_try_init(|| Cluster::connect(&self.config))
            .await
    }

    /// Waits until the outbox entry `seq` is in the cluster, or `limit`.
    async fn await_delivery(&self, seq: u64, limit: Duration) {
        let mut delivered = self.delivered.subscribe();
        let _ =
            tokio::time::timeout(limit, delivered.wait_for(|d| d.is_some_and(|d| d >= seq))).await;
    }

    /// Delivers the whole outbox, oldest first, round after round; stops
    /// at the first failure. `sent` is the last sequence known to be in the
    /// cluster, whose trim may not be committed yet.
    async fn drain(self: &Arc<Self>, sent: &mut Option<u64>) -> Result<(), StoreError> {
        let cluster = self.connected().await?;
        loop {
            let round = self.outbox.undelivered(*sent, DELIVERY_ROUND).await?;
            let Some(&(last, _)) = round.last() else {
                return Ok(());
            };
            let started = std::time::Instant::now();
            cluster.write(&round).await?;
            metrics::histogram!("ride_ratings_delivery_batch_seconds")
                .record(started.elapsed().as_secs_f64());
            metrics::counter!("ride_ratings_delivered_total").increment(round.len() as u64);
            *sent = Some(last);
            self.delivered.send_replace(Some(last));
            // Dropped from the outbox with the next group commit, waited
            // for here (the handlers already know it is delivered), so that
            // no task outlives `close`; until then a crash only means
            // writing these again, harmlessly.
            match self.outbox.delivered(last).await {
                // Shutting down: the entries are delivered again next time.
                Ok(()) | Err(StoreError::Closed) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot drop delivered ratings from the outbox")
                }
            }
        }
    }
}

/// The delivery task: drains the outbox whenever woken, retrying with
/// backoff while the cluster is down, until `stop`.
async fn deliver(shared: Arc<Shared>, stop: CancellationToken) {
    let mut backoff = FIRST_BACKOFF;
    let mut sent = None;
    loop {
        let outcome = shared.drain(&mut sent).await;
        let pause = match outcome {
            Ok(()) => {
                if !shared.healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!("ratings cluster takes writes; outbox drained");
                }
                backoff = FIRST_BACKOFF;
                None
            }
            Err(e) => {
                if shared.healthy.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "ratings cluster refuses writes; queueing on disk");
                }
                metrics::counter!("ride_ratings_delivery_failures_total").increment(1);
                let pause = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                Some(pause)
            }
        };
        let woken = shared.wake.notified();
        tokio::select! {
            () = stop.cancelled() => return,
            () = woken, if pause.is_none() => {}
            () = tokio::time::sleep(pause.unwrap_or_default()), if pause.is_some() => {}
        }
    }
}

#[async_trait]
impl RatingStore for ClusterStore {
    async fn record(&self, rating: Rating) -> Result<Recorded, StoreError> {
        let outcome = self.shared.outbox.submit(rating).await?;
        if let Some(seq) = outcome.queued {
            self.shared.wake.notify_one();
            if self.shared.healthy.load(Ordering::Relaxed) {
                let limit = self.shared.config.request_timeout * 2;
                self.shared.await_delivery(seq, limit).await;
            }
        }
        Ok(outcome.recorded)
    }

    async fn summary(&self, car_number: &str) -> Result<Summary, StoreError> {
        match self.shared.cluster.get() {
            Some(cluster) => cluster.summary(car_number).await,
            None => Err(StoreError::Unavailable(
                "the ratings cluster has not been reached yet".into(),
            )),
        }
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.stop.cancel();
        let delivery = self.delivery.lock().take();
        if let Some(delivery) = delivery {
            let _ = delivery.await;
        }
        self.shared.outbox.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ClusterConfig {
        ClusterConfig {
            nodes: vec!["127.0.0.1:9042".into()],
            datacenter: "dhaka_north".into(),
            keyspace: "ride".into(),
            replication: vec![("dhaka_north".into(), 1), ("dhaka_southeast".into(), 1)],
            dc_failover: true,
            request_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn names_that_reach_cql_text_are_checked() {
        assert!(config().validate().is_ok());
        let mut bad = config();
        bad.keyspace = "ride'; DROP".into();
        assert!(matches!(bad.validate(), Err(StoreError::Config(_))));
        let mut bad = config();
        bad.replication = vec![("x}".into(), 1), ("dhaka_north".into(), 1)];
        assert!(matches!(bad.validate(), Err(StoreError::Config(_))));
        let mut elsewhere = config();
        elsewhere.datacenter = "dhaka_southwest".into();
        assert!(matches!(elsewhere.validate(), Err(StoreError::Config(_))));
        let mut none = config();
        none.nodes.clear();
        assert!(matches!(none.validate(), Err(StoreError::Config(_))));
    }

    /// With no cluster reachable, ratings are accepted at once, kept in the
    /// outbox in order, and duplicates are still refused.
    #[tokio::test]
    async fn an_unreachable_cluster_queues_ratings_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config();
        // A port nothing listens on: connecting fails fast.
        config.nodes = vec!["127.0.0.1:1".into()];
        let outbox = EmbeddedStore::open_outbox(dir.path()).unwrap();
        let store = ClusterStore::start(config, outbox, Duration::from_millis(200))
            .await
            .unwrap();
        let ratings: Vec<Rating> = (0..5)
            .map(|i| Rating {
                rider_id: ride_types::ids::RequestId::generate(),
                driver_id: ride_types::ids::RequestId::generate(),
                car_number: "DHA-7".into(),
                stars: i + 1,
                rated_at: ride_types::clock::Millis(1_000 + u64::from(i)),
            })
            .collect();
        for r in &ratings {
            assert_eq!(store.record(r.clone()).await.unwrap(), Recorded::New);
        }
        assert_eq!(
            store.record(ratings[0].clone()).await.unwrap(),
            Recorded::Duplicate
        );
        assert!(matches!(
            store.summary("DHA-7").await,
            Err(StoreError::Unavailable(_))
        ));
        store.close().await.unwrap();
        drop(store);

        let outbox = EmbeddedStore::open_outbox(dir.path()).unwrap();
        let queued = outbox.undelivered(None, 100).await.unwrap();
        let queued: Vec<Rating> = queued.into_iter().map(|(_, r)| r).collect();
        assert_eq!(queued, ratings);
    }
}
