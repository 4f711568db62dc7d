//! The embedded rating store: a redb file in the node's data directory.
//!
//! redb makes every commit durable (`Durability::Immediate`, the default:
//! one-phase commit with checksums, one fsync), so writes go through one
//! writer thread that commits everything queued up meanwhile (every waiting
//! rating, and the outbox entries the cluster has taken since) in a single
//! transaction with a single fsync (group commit): throughput grows with
//! load instead of being capped at one fsync per rating. Quick repair stays
//! off: it would add work to every commit, and the file is small enough to
//! check in full after a crash. Reads run on redb's MVCC snapshots and never
//! wait for the writer.
//!
//! In front of a cluster the same file is the cluster's outbox: a new rating
//! is also appended, in the same transaction, to an ordered queue that the
//! cluster store drains (see `cluster.rs`). A rating is then durable on the
//! node before it is acknowledged, whether or not the cluster can take it.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{Rating, RatingStore, Recorded, StoreError, Summary};
use ride_types::clock::Millis;
use ride_types::ids::RequestId;

/// (car number, rider id) → (stars, rated at ms, driver id).
const RATINGS: TableDefinition<(&str, u128), (u8, u64, u128)> = TableDefinition::new("ratings");
/// car number → (sum of stars, count).
const SUMMARIES: TableDefinition<&str, (u64, u64)> = TableDefinition::new("summaries");
/// sequence → (car number, rider id, driver id, stars, rated at ms): ratings
/// not yet delivered to the cluster, in acceptance order.
const OUTBOX: TableDefinition<u64, (&str, u128, u128, u8, u64)> = TableDefinition::new("outbox");
/// "next" → the sequence the next outbox entry gets; kept apart from the
/// outbox so that sequences never repeat once the outbox is emptied.
const OUTBOX_SEQUENCE: TableDefinition<&str, u64> = TableDefinition::new("outbox_sequence");

/// Commands waiting for the writer at most; one commit takes all of them.
const QUEUE_DEPTH: usize = 16 * 1024;

/// What recording a rating did: new ratings kept as an outbox entry carry
/// its sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub recorded: Recorded,
    pub queued: Option<u64>,
}

type Reply = oneshot::Sender<Result<Outcome, StoreError>>;
type Trimmed = oneshot::Sender<Result<(), StoreError>>;

enum Command {
    Record(Rating, Reply),
    /// Removes outbox entries up to and including this sequence.
    Delivered(u64, Trimmed),
    Close(oneshot::Sender<()>),
}

/// What one commit does: every command that was waiting.
#[derive(Default)]
struct Round {
    ratings: Vec<(Rating, Reply)>,
    /// The highest delivered sequence named, if any.
    trim: Option<u64>,
    trimmed: Vec<Trimmed>,
}

pub struct EmbeddedStore {
    db: Arc<Database>,
    writer: Mutex<Option<mpsc::Sender<Command>>>,
}

impl EmbeddedStore {
    /// Opens (or creates) `ratings.redb` in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, false)
    }

    /// Opens the store as a cluster's outbox: every new rating is also
    /// queued for [`EmbeddedStore::undelivered`].
    pub fn open_outbox(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, true)
    }

    fn open_with(dir: &Path, outbox: bool) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Storage(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("ratings.redb");
        let db = Database::create(&path)
            .map_err(|e| StoreError::Storage(format!("cannot open {}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(storage)?;
        txn.open_table(RATINGS).map_err(storage)?;
        txn.open_table(SUMMARIES).map_err(storage)?;
        let backlog = txn.open_table(OUTBOX).map_err(storage)?.len();
        txn.open_table(OUTBOX_SEQUENCE).map_err(storage)?;
        txn.commit().map_err(storage)?;
        if outbox {
            record_backlog(backlog.map_err(storage)?);
        }

        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let writer_db = Arc::clone(&db);
        std::thread::Builder::new()
            .name("ratings-writer".into())
            .spawn(move || {
                let closed = write_loop(&writer_db, outbox, rx);
                // Let go of the file before saying so, so it can be reopened.
                drop(writer_db);
                if let Some(done) = closed {
                    let _ = done.send(());
                }
            })
            .map_err(|e| StoreError::Storage(format!("cannot start the writer: {e}")))?;
        Ok(Self {
            db,
            writer: Mutex::new(Some(tx)),
        })
    }

    fn sender(&self) -> Result<mpsc::Sender<Command>, StoreError> {
        self.writer.lock().clone().ok_or(StoreError::Closed)
    }

    /// Records a rating; when new in an outbox store, also queues it.
    pub async fn submit(&self, rating: Rating) -> Result<Outcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.sender()?
            .send(Command::Record(rating, reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// The oldest `limit` outbox entries after sequence `after` (all of
    /// them with `None`), in order. The cursor lets delivery move on while
    /// the entries it sent are still being trimmed.
    pub async fn undelivered(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Rating)>, StoreError> {
        let Some(from) = after.map_or(Some(0), |seq| seq.checked_add(1)) else {
            return Ok(Vec::new());
        };
        self.read(move |txn| {
            let table = txn.open_table(OUTBOX).map_err(storage)?;
            let mut out = Vec::new();
            for entry in table.range(from..).map_err(storage)?.take(limit) {
                let (seq, value) = entry.map_err(storage)?;
                let (car, rider, driver, stars, rated_at) = value.value();
                out.push((
                    seq.value(),
                    Rating {
                        rider_id: RequestId(Uuid::from_u128(rider)),
                        driver_id: RequestId(Uuid::from_u128(driver)),
                        car_number: car.to_owned(),
                        stars,
                        rated_at: Millis(rated_at),
                    },
                ));
            }
            Ok(out)
        })
        .await
    }

    /// Drops outbox entries up to and including `seq`, once delivered; done
    /// with the next group commit, so it costs no fsync of its own.
    pub async fn delivered(&self, seq: u64) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.sender()?
            .send(Command::Delivered(seq, reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs a read transaction off the async runtime.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || read(&db.begin_read().map_err(storage)?))
            .await
            .map_err(|e| StoreError::Storage(e.to_string()))?
    }
}

#[async_trait]
impl RatingStore for EmbeddedStore {
    async fn record(&self, rating: Rating) -> Result<Recorded, StoreError> {
        Ok(self.submit(rating).await?.recorded)
    }

    async fn summary(&self, car_number: &str) -> Result<Summary, StoreError> {
        let car_number = car_number.to_owned();
        self.read(move |txn| {
            let table = txn.open_table(SUMMARIES).map_err(storage)?;
            let found = table.get(car_number.as_str()).map_err(storage)?;
            Ok(found.map_or_else(Summary::default, |v| {
                let (stars, count) = v.value();
                Summary { stars, count }
            }))
        })
        .await
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

/// The outbox size, for operators (`ride_ratings_outbox_backlog`): set by
/// the writer, which knows it after every commit.
fn record_backlog(entries: u64) {
    metrics::gauge!("ride_ratings_outbox_backlog").set(entries as f64);
}

/// Commits whatever is queued, all of it in one transaction, until told to
/// close; returns the closer to answer.
fn write_loop(
    db: &Database,
    outbox: bool,
    mut rx: mpsc::Receiver<Command>,
) -> Option<oneshot::Sender<()>> {
    let mut closing = None;
    while closing.is_none() {
        let Some(first) = rx.blocking_recv() else {
            break;
        };
        let mut round = Round::default();
        let mut next = Some(first);
        while let Some(command) = next {
            match command {
                Command::Record(rating, reply) => round.ratings.push((rating, reply)),
                Command::Delivered(seq, reply) => {
                    round.trim = round.trim.max(Some(seq));
                    round.trimmed.push(reply);
                }
                Command::Close(done) => {
                    closing = Some(done);
                    break;
                }
            }
            next = rx.try_recv().ok();
        }
        commit_round(db, outbox, round);
    }
    closing
}

fn commit_round(db: &Database, outbox: bool, round: Round) {
    if round.ratings.is_empty() && round.trimmed.is_empty() {
        return;
    }
    let ratings: Vec<&Rating> = round.ratings.iter().map(|(r, _)| r).collect();
    match apply(db, outbox, round.trim, &ratings) {
        Ok(outcomes) => {
            for ((_, reply), outcome) in round.ratings.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
            for reply in round.trimmed {
                let _ = reply.send(Ok(()));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, ratings = ratings.len(), "rating commit failed");
            for (_, reply) in round.ratings {
                let _ = reply.send(Err(StoreError::Storage(e.to_string())));
            }
            for reply in round.trimmed {
                let _ = reply.send(Err(StoreError::Storage(e.to_string())));
            }
        }
    }
}

/// One transaction: drops the outbox up to `trim`, then records `ratings`
/// in order (a second rating of a match in the same round is a duplicate).
fn apply(
    db: &Database,
    outbox: bool,
    trim: Option<u64>,
    ratings: &[&Rating],
) -> Result<Vec<Outcome>, StoreError> {
    let txn = db.begin_write().map_err(storage)?;
    let mut outcomes = Vec::with_capacity(ratings.len());
    let backlog;
    {
        let mut table = txn.open_table(RATINGS).map_err(storage)?;
        let mut summaries = txn.open_table(SUMMARIES).map_err(storage)?;
        let mut queue = txn.open_table(OUTBOX).map_err(storage)?;
        let mut sequence = txn.open_table(OUTBOX_SEQUENCE).map_err(storage)?;
        if let Some(up_to) = trim {
            queue.retain_in(..=up_to, |_, _| false).map_err(storage)?;
        }
        let mut next_seq = sequence
            .get("next")
            .map_err(storage)?
            .map_or(0, |v| v.value());
        for rating in ratings {
            let key = (rating.car_number.as_str(), rating.rider_id.0.as_u128());
            if table.get(key).map_err(storage)?.is_some() {
                outcomes.push(Outcome {
                    recorded: Recorded::Duplicate,
                    queued: None,
                });
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
            let queued = outbox.then_some(next_seq);
            if outbox {
                queue
                    .insert(
                        next_seq,
                        (
                            rating.car_number.as_str(),
                            rating.rider_id.0.as_u128(),
                            rating.driver_id.0.as_u128(),
                            rating.stars,
                            rating.rated_at.0,
                        ),
                    )
                    .map_err(storage)?;
                next_seq += 1;
            }
            outcomes.push(Outcome {
                recorded: Recorded::New,
                queued,
            });
        }
        sequence.insert("next", next_seq).map_err(storage)?;
        backlog = queue.len().map_err(storage)?;
    }
    txn.commit().map_err(storage)?;
    if outbox {
        record_backlog(backlog);
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test]
    async fn the_outbox_keeps_new_ratings_in_order_until_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_outbox(dir.path()).unwrap();
        let sent: Vec<Rating> = (1..=3).map(|stars| rating("DHA-4", stars)).collect();
        let mut seqs = Vec::new();
        for r in &sent {
            let outcome = store.submit(r.clone()).await.unwrap();
            assert_eq!(outcome.recorded, Recorded::New);
            seqs.push(outcome.queued.unwrap());
        }
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        let again = store.submit(sent[0].clone()).await.unwrap();
        assert_eq!((again.recorded, again.queued), (Recorded::Duplicate, None));

        let queued = store.undelivered(None, 10).await.unwrap();
        assert_eq!(queued.iter().map(|(s, _)| *s).collect::<Vec<_>>(), seqs);
        assert_eq!(
            queued.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(),
            sent
        );
        // Delivery reads on past what it sent before the trim is committed.
        assert_eq!(
            store.undelivered(Some(seqs[0]), 1).await.unwrap(),
            vec![(seqs[1], sent[1].clone())]
        );
        assert!(
            store
                .undelivered(Some(u64::MAX), 10)
                .await
                .unwrap()
                .is_empty()
        );
        store.delivered(seqs[1]).await.unwrap();
        assert_eq!(store.undelivered(None, 10).await.unwrap().len(), 1);
        store.close().await.unwrap();
        drop(store);

        // Reopened: the undelivered rating is still there, and sequences
        // keep rising even once the outbox is emptied.
        let store = EmbeddedStore::open_outbox(dir.path()).unwrap();
        assert_eq!(
            store.undelivered(None, 10).await.unwrap(),
            vec![(seqs[2], sent[2].clone())]
        );
        store.delivered(seqs[2]).await.unwrap();
        assert!(store.undelivered(None, 10).await.unwrap().is_empty());
        let later = store.submit(rating("DHA-4", 5)).await.unwrap();
        assert!(later.queued.unwrap() > seqs[2]);
    }

    #[tokio::test]
    async fn a_plain_store_queues_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let outcome = store.submit(rating("DHA-5", 3)).await.unwrap();
        assert_eq!(outcome.queued, None);
        assert!(store.undelivered(None, 10).await.unwrap().is_empty());
    }

    /// Copies of one rating sent at once land in the same commit: the
    /// first is new, the rest are duplicates of it, and it is queued once.
    #[tokio::test]
    async fn one_commit_records_a_match_once_however_often_it_waits() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open_outbox(dir.path()).unwrap());
        let twice = rating("DHA-6", 4);
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let store = Arc::clone(&store);
                let r = if i % 2 == 0 {
                    twice.clone()
                } else {
                    rating("DHA-6", 2)
                };
                tokio::spawn(async move { store.submit(r).await })
            })
            .collect();
        let mut new = 0;
        for t in tasks {
            if t.await.unwrap().unwrap().recorded == Recorded::New {
                new += 1;
            }
        }
        assert_eq!(new, 33);
        let s = store.summary("DHA-6").await.unwrap();
        assert_eq!((s.stars, s.count), (4 + 32 * 2, 33));
        assert_eq!(store.undelivered(None, 100).await.unwrap().len(), 33);
    }
}
