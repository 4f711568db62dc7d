//! How far apart the group committer starts its commits.
//!
//! Every group commit is a journal sync, and a mesh's nodes on one machine
//! syncing as fast as the disk answers spend about a quarter more CPU per
//! request than at one commit per 5 ms (BENCHMARKS.md). Spacing commits
//! saves that CPU only under load, and costs every request up to the gap
//! in latency at any load. So the pacer spaces commits only while they are
//! busy: a commit that moved at least [`BUSY_BATCH`] requests shows them
//! arriving faster than the disk answers one at a time, and the next
//! commit waits out the rest of the gap, gathering what arrives meanwhile.
//! After a smaller commit, or one older than the gap, the next starts at
//! once, so a quiet node pays no gap.

use std::time::{Duration, Instant};

/// The smallest commit that counts as busy. Unloaded, a commit moves the
/// one or two requests that arrived during the previous sync; at the rates
/// where spacing saved CPU (thousands a second per node), tens.
pub(crate) const BUSY_BATCH: usize = 8;

#[derive(Debug)]
pub(crate) struct CommitPacer {
    min_gap: Duration,
    /// When the last commit started, if it was busy.
    last_busy: Option<Instant>,
}

impl CommitPacer {
    pub(crate) fn new(min_gap: Duration) -> Self {
        Self {
            min_gap,
            last_busy: None,
        }
    }

    /// How long a commit that could start at `now` should wait first.
    pub(crate) fn wait_at(&self, now: Instant) -> Duration {
        self.last_busy.map_or(Duration::ZERO, |at| {
            (at + self.min_gap).saturating_duration_since(now)
        })
    }

    /// A commit that moved `moved` requests started at `at`.
    pub(crate) fn committed(&mut self, at: Instant, moved: usize) {
        self.last_busy = (moved >= BUSY_BATCH).then_some(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GAP: Duration = Duration::from_millis(5);

    #[test]
    fn the_first_commit_does_not_wait() {
        assert_eq!(
            CommitPacer::new(GAP).wait_at(Instant::now()),
            Duration::ZERO
        );
    }

    #[test]
    fn a_commit_within_the_gap_of_a_busy_one_waits_for_the_rest_of_it() {
        let start = Instant::now();
        let mut pacer = CommitPacer::new(GAP);
        pacer.committed(start, BUSY_BATCH);
        assert_eq!(pacer.wait_at(start), GAP);
        assert_eq!(
            pacer.wait_at(start + Duration::from_millis(2)),
            Duration::from_millis(3)
        );
    }

    #[test]
    fn after_a_small_commit_the_next_starts_at_once() {
        let start = Instant::now();
        let mut pacer = CommitPacer::new(GAP);
        pacer.committed(start, BUSY_BATCH);
        pacer.committed(start + GAP, BUSY_BATCH - 1);
        assert_eq!(pacer.wait_at(start + GAP), Duration::ZERO);
    }

    #[test]
    fn a_commit_after_the_gap_starts_at_once() {
        let start = Instant::now();
        let mut pacer = CommitPacer::new(GAP);
        pacer.committed(start, BUSY_BATCH);
        assert_eq!(pacer.wait_at(start + GAP), Duration::ZERO);
        assert_eq!(
            pacer.wait_at(start + Duration::from_secs(60)),
            Duration::ZERO
        );
    }

    #[test]
    fn without_a_gap_nothing_waits() {
        let start = Instant::now();
        let mut pacer = CommitPacer::new(Duration::ZERO);
        pacer.committed(start, 1000);
        assert_eq!(pacer.wait_at(start), Duration::ZERO);
    }
}
