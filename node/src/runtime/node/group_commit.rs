//! The group commit: requests handed over without the lock, journaled in
//! batches under it, synced once per batch outside it, and answered once
//! durable.

use super::*;

impl Node {
    /// Accepts a rider without waiting for the core; the answer may go out
    /// once `Durable` resolves.
    pub(crate) fn submit_rider(&self, rider: NewRider, now: Millis) -> (Ticket, Durable) {
        let id = self.entropy.request_id(now);
        let (done, durable) = oneshot::channel();
        self.load.enqueued();
        let scope = self.own_halo.scope_of(rider.position);
        let _ = self
            .intake
            .send(Arrival::Rider(id, rider, scope, now, done));
        self.nudge();
        (self.ticket(id, now), durable)
    }

    /// Accepts a driver without waiting for the core; the answer may go out
    /// once `Durable` resolves.
    pub(crate) fn submit_driver(&self, driver: NewDriver, now: Millis) -> (Ticket, Durable) {
        let id = self.entropy.request_id(now);
        let (done, durable) = oneshot::channel();
        self.load.enqueued();
        let scope = self.own_halo.scope_of(driver.position);
        let _ = self
            .intake
            .send(Arrival::Driver(id, driver, scope, now, done));
        self.nudge();
        (self.ticket(id, now), durable)
    }

    pub(super) fn nudge(&self) {
        *self.wake.pending.lock() = true;
        self.wake.signal.notify_one();
    }

    /// The group committer: whenever requests arrive, moves them in and
    /// journals them (one sync for all that arrived meanwhile), until
    /// `shutdown`. Runs on its own thread: a sync blocks. Under load,
    /// commits start at least `min_gap` apart ([`CommitPacer`],
    /// `--mesh-commit-interval`); otherwise at once.
    pub(crate) fn run_flusher(
        self: Arc<Self>,
        min_gap: Duration,
        shutdown: CancellationToken,
    ) -> std::thread::JoinHandle<()> {
        std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || {
                let mut pacer = CommitPacer::new(min_gap);
                while !shutdown.is_cancelled() {
                    {
                        let mut pending = self.wake.pending.lock();
                        if !*pending {
                            self.wake
                                .signal
                                .wait_for(&mut pending, Duration::from_millis(100));
                        }
                        *pending = false;
                    }
                    // Whatever arrives meanwhile joins this commit.
                    std::thread::sleep(pacer.wait_at(std::time::Instant::now()));
                    let started = std::time::Instant::now();
                    let moved = self.commit_arrivals();
                    if moved > 0 {
                        pacer.committed(started, moved);
                    }
                }
                self.commit_arrivals();
            })
            .expect("spawn the group-commit thread")
    }

    /// Moves every request accepted so far in and journals them, in
    /// batches of at most [`MAX_COMMIT_BATCH`]: each batch is written under
    /// the lock and synced outside it, and its submitters are told once
    /// the sync returns (a failed write or sync refuses them: 503).
    /// Returns how many requests it moved in.
    pub(crate) fn commit_arrivals(&self) -> usize {
        let mut committed = 0;
        loop {
            let asked = std::time::Instant::now();
            let (waiting, sync, more, locked) = {
                let mut state = self.lock();
                let locked = asked.elapsed();
                let State {
                    replica,
                    journal,
                    arrivals,
                    intake_rate,
                    ..
                } = &mut *state;
                let mut waiting = Vec::new();
                for arrival in arrivals.try_iter().take(MAX_COMMIT_BATCH) {
                    waiting.push(match arrival {
                        Arrival::Rider(id, rider, scope, at, done) => {
                            replica.accept_rider(id, rider, scope, at);
                            done
                        }
                        Arrival::Driver(id, driver, scope, at, done) => {
                            replica.accept_driver(id, driver, scope, at);
                            done
                        }
                    });
                }
                if waiting.is_empty() {
                    return committed;
                }
                committed += waiting.len();
                self.load.dequeued(waiting.len());
                intake_rate.add(waiting.len() as u64);
                let appended = replica
                    .arrivals_to_journal()
                    .iter()
                    .try_for_each(|(epoch, frame)| journal.append_intake(*epoch, frame));
                replica.arrivals_journaled(appended.is_ok());
                let sync = appended.and_then(|()| take_sync(replica, journal));
                let sync = match sync {
                    Ok(sync) => sync,
                    Err(e) => {
                        // Dropping `waiting` refuses them: the submitters answer 503.
                        tracing::error!(error = %e, "cannot journal accepted requests");
                        continue;
                    }
                };
                let more = waiting.len() == MAX_COMMIT_BATCH;
                (waiting, sync, more, locked)
            };
            let written = asked.elapsed();
            let synced = sync.map_or(Ok(()), PendingSync::run);
            record_group_commit(locked, written - locked, asked.elapsed() - written);
            match synced {
                Ok(()) => {
                    for done in waiting {
                        let _ = done.send(());
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot sync the journal"),
            }
            if !more {
                return committed;
            }
        }
    }

    /// Requests handed over and not yet journaled: the intake queue.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.load.queued()
    }
}

/// Where a group commit's time goes, so that an intake tail can be traced
/// to its cause: waiting for the core's lock (held by a round's commits or
/// a session applying a peer's changes), writing the batch into its
/// document and journal, or the `fdatasync`.
pub(super) fn record_group_commit(lock_wait: Duration, write: Duration, sync: Duration) {
    for (phase, took) in [("lock_wait", lock_wait), ("write", write), ("sync", sync)] {
        metrics::histogram!("ride_group_commit_seconds", "phase" => phase)
            .record(took.as_secs_f64());
    }
}

impl State {
    pub(super) fn take_sync(&mut self) -> Result<Option<PendingSync>, JournalError> {
        take_sync(&mut self.replica, &mut self.journal)
    }
}

/// Journals what the replica queued for the disk, and takes the sync that
/// makes every write so far durable, to run outside the lock (`None` when
/// everything is durable already).
pub(super) fn take_sync(
    replica: &mut Replica,
    journal: &mut Journal,
) -> Result<Option<PendingSync>, JournalError> {
    journal.persist(replica.take_persist())?;
    Ok(journal.take_sync())
}
