//! How far apart the group committer starts its commits.
//!
//! Every group commit is a journal sync, and a mesh's nodes on one machine
//! syncing as fast as the disk answers spend about a quarter more CPU per
//! request than at one commit per 5 ms (BENCHMARKS.md). The pacer
//! keeps commits at least a minimum gap apart: whatever arrives meanwhile
//! joins the next one. A request that finds the last commit older than the
//! gap is committed at once, so a quiet node adds no latency.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct CommitPacer {
    min_gap: Duration,
    last_commit: Option<Instant>,
}

impl CommitPacer {
    pub(crate) fn new(min_gap: Duration) -> Self {
        Self {
            min_gap,
            last_commit: None,
        }
    }

    /// How long a commit that could start at `now` should wait first.
    pub(crate) fn wait_at(&self, now: Instant) -> Duration {
        self.last_commit.map_or(Duration::ZERO, |at| {
            (at + self.min_gap).saturating_duration_since(now)
        })
    }

    /// A commit that moved requests started at `at`.
    pub(crate) fn committed(&mut self, at: Instant) {
        self.last_commit = Some(at);
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
    fn a_commit_within_the_gap_waits_for_the_rest_of_it() {
        let start = Instant::now();
        let mut pacer = CommitPacer::new(GAP);
        pacer.committed(start);
        assert_eq!(pacer.wait_at(start), GAP);
        assert_eq!(
            pacer.wait_at(start + Duration::from_millis(2)),
            Duration::from_millis(3)
        );
    }

    #[test]
    fn a_commit_after_the_gap_starts_at_once() {
        let start = Instant::now();
        let mut pacer = CommitPacer::new(GAP);
        pacer.committed(start);
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
        pacer.committed(start);
        assert_eq!(pacer.wait_at(start), Duration::ZERO);
    }
}
