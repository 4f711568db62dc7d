//! The embedded rating store: a redb file in the node's data directory.
//!
//! redb makes every commit durable (fsync), which costs milliseconds, so
//! writes go through one writer thread that commits whatever ratings queued
//! up meanwhile in a single transaction (group commit): throughput grows with
//! load instead of being capped at one fsync per rating. Reads run on redb's
//! MVCC snapshots and never wait for the writer.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use super::{Rating, RatingStore, Recorded, StoreError, Summary};

/// (car number, rider id) → (stars, rated at ms, driver id).
const RATINGS: TableDefinition<(&str, u128), (u8, u64, u128)> = TableDefinition::new("ratings");
/// car number → (sum of stars, count).
const SUMMARIES: TableDefinition<&str, (u64, u64)> = TableDefinition::new("summaries");

/// Ratings committed in one transaction at most.
const MAX_BATCH: usize = 1024;
const QUEUE_DEPTH: usize = 16 * 1024;

type Reply = oneshot::Sender<Result<Recorded, StoreError>>;

enum Command {
    Record(Rating, Reply),
    Close(oneshot::Sender<()>),
}

pub struct EmbeddedStore {
    db: Arc<Database>,
    writer: Mutex<Option<mpsc::Sender<Command>>>,
}

impl EmbeddedStore {
    /// Opens (or creates) `ratings.redb` in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Storage(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("ratings.redb");
        let db = Database::create(&path)
            .map_err(|e| StoreError::Storage(format!("cannot open {}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(storage)?;
        txn.open_table(RATINGS).map_err(storage)?;
        txn.open_table(SUMMARIES).map_err(storage)?;
        txn.commit().map_err(storage)?;

        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let writer_db = Arc::clone(&db);
        std::thread::Builder::new()
            .name("ratings-writer".into())
            .spawn(move || write_loop(&writer_db, rx))
            .map_err(|e| StoreError::Storage(format!("cannot start the writer: {e}")))?;
        Ok(Self {
            db,
            writer: Mutex::new(Some(tx)),
        })
    }

    fn sender(&self) -> Result<mpsc::Sender<Command>, StoreError> {
        self.writer.lock().clone().ok_or(StoreError::Closed)
    }
}

#[async_trait]
impl RatingStore for EmbeddedStore {
    async fn record(&self, rating: Rating) -> Result<Recorded, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.sender()?
            .send(Command::Record(rating, reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn summary(&self, car_number: &str) -> Result<Summary, StoreError> {
        let db = Arc::clone(&self.db);
        let car_number = car_number.to_owned();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(SUMMARIES).map_err(storage)?;
            let found = table.get(car_number.as_str()).map_err(storage)?;
            Ok(found.map_or_else(Summary::default, |v| {
                let (stars, count) = v.value();
                Summary { stars, count }
            }))
        })
        .await
        .map_err(|e| StoreError::Storage(e.to_string()))?
    }

    async fn close(&self) -> Result<(), StoreError> {
        let Some(sender) = self.writer.lock().take() else {
            return Ok(());
        };
        let (done, finished) = oneshot::channel();
        if sender.send(Command::Close(done)).await.is_ok() {
            let _ = finished.await;
        }
        Ok(())
    }
}

fn storage(e: impl std::fmt::Display) -> StoreError {
    StoreError::Storage(e.to_string())
}

/// Commits queued ratings in batches until told to close.
fn write_loop(db: &Database, mut rx: mpsc::Receiver<Command>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = Vec::new();
        let mut closing = None;
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Record(rating, reply) => batch.push((rating, reply)),
                Command::Close(done) => {
                    closing = Some(done);
                    break;
                }
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            commit_batch(db, batch);
        }
        if let Some(done) = closing {
            let _ = done.send(());
            return;
        }
    }
}

fn commit_batch(db: &Database, batch: Vec<(Rating, Reply)>) {
    let ratings: Vec<&Rating> = batch.iter().map(|(r, _)| r).collect();
    match apply(db, &ratings) {
        Ok(outcomes) => {
            for ((_, reply), outcome) in batch.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, ratings = batch.len(), "rating batch failed");
            for (_, reply) in batch {
                let _ = reply.send(Err(StoreError::Storage(e.to_string())));
            }
        }
    }
}

fn apply(db: &Database, ratings: &[&Rating]) -> Result<Vec<Recorded>, StoreError> {
    let txn = db.begin_write().map_err(storage)?;
    let mut outcomes = Vec::with_capacity(ratings.len());
    {
        let mut table = txn.open_table(RATINGS).map_err(storage)?;
        let mut summaries = txn.open_table(SUMMARIES).map_err(storage)?;
        for rating in ratings {
            let key = (rating.car_number.as_str(), rating.rider_id.0.as_u128());
            if table.get(key).map_err(storage)?.is_some() {
                outcomes.push(Recorded::Duplicate);
                continue;
            }
            table
                .insert(
                    key,
                    (
                        rating.stars,
                        rating.rated_at.0,
                        rating.driver_id.0.as_u128(),
                    ),
                )
                .map_err(storage)?;
            let (stars, count) = summaries
                .get(rating.car_number.as_str())
                .map_err(storage)?
                .map_or((0, 0), |v| v.value());
            summaries
                .insert(
                    rating.car_number.as_str(),
                    (stars + u64::from(rating.stars), count + 1),
                )
                .map_err(storage)?;
            outcomes.push(Recorded::New);
        }
    }
    txn.commit().map_err(storage)?;
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Millis;
    use crate::ids::RequestId;

    fn rating(car: &str, stars: u8) -> Rating {
        Rating {
            rider_id: RequestId::generate(),
            driver_id: RequestId::generate(),
            car_number: car.into(),
            stars,
            rated_at: Millis(1),
        }
    }

    #[tokio::test]
    async fn records_once_per_match_and_averages() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let first = rating("DHA-1", 4);
        assert_eq!(store.record(first.clone()).await.unwrap(), Recorded::New);
        assert_eq!(
            store.record(rating("DHA-1", 1)).await.unwrap(),
            Recorded::New
        );
        assert_eq!(store.record(first).await.unwrap(), Recorded::Duplicate);
        let s = store.summary("DHA-1").await.unwrap();
        assert_eq!((s.stars, s.count), (5, 2));
        assert_eq!(store.summary("NOPE").await.unwrap(), Summary::default());
    }

    #[tokio::test]
    async fn concurrent_ratings_are_all_counted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { store.record(rating("DHA-2", (i % 5 + 1) as u8)).await })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), Recorded::New);
        }
        let s = store.summary("DHA-2").await.unwrap();
        assert_eq!((s.stars, s.count), (600, 200));
    }

    #[tokio::test]
    async fn ratings_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let kept = rating("DHA-3", 5);
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            store.record(kept.clone()).await.unwrap();
            store.close().await.unwrap();
            assert!(matches!(
                store.record(rating("DHA-3", 1)).await,
                Err(StoreError::Closed)
            ));
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(store.summary("DHA-3").await.unwrap().count, 1);
        assert_eq!(store.record(kept).await.unwrap(), Recorded::Duplicate);
    }
}
