//! Admission control: a 202 is a promise that the request will be
//! replicated and considered for matching before it expires, so intake is
//! bounded by what the node can get through its journal, the mesh and the
//! matching round, not by what the HTTP server can parse. Past any bound,
//! `POST /rider` and `/driver` are refused at the door (503 `overloaded`
//! with `Retry-After`), which costs a few atomic loads: a shed request is
//! answered long before it could have been queued.
//!
//! Three signals, each against a limit (all flags):
//! - the intake queue: requests handed to the core and not yet journaled;
//! - the mesh round trip: the last round trip of a status message to the
//!   slowest connected peer and back. Status messages share the stream with
//!   sync messages, so a peer (or this node) falling behind on replication
//!   shows here, whichever side is slow. A peer gone silent keeps its last
//!   round trip: silence is what a partition looks like until the session
//!   times out, and a partition must not stop a region from serving;
//! - the last matching round: a round slower than the limit cannot keep up
//!   with what it is given.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use thiserror::Error;

/// The bounds past which intake is shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub max_queue: usize,
    pub max_mesh_lag: Duration,
    pub max_round: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_queue: 4_096,
            max_mesh_lag: Duration::from_secs(2),
            max_round: Duration::from_millis(800),
        }
    }
}

/// Why a request was shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub(crate) enum Overload {
    #[error("{queued} requests are waiting to be journaled (limit {max})")]
    Queue { queued: usize, max: usize },
    #[error("replication to a peer is {lag_ms} ms behind (limit {max_ms} ms)")]
    MeshLag { lag_ms: u64, max_ms: u64 },
    #[error("the last matching round took {round_ms} ms (limit {max_ms} ms)")]
    Round { round_ms: u64, max_ms: u64 },
}

impl Overload {
    /// The metric label of the signal at fault.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::Queue { .. } => "queue",
            Self::MeshLag { .. } => "mesh_lag",
            Self::Round { .. } => "round",
        }
    }
}

/// The signals as the core last measured them: written by the tasks that
/// measure them, read without a lock by every request.
#[derive(Debug, Default)]
pub(crate) struct Load {
    queued: AtomicUsize,
    mesh_lag_ms: AtomicU64,
    round_ms: AtomicU64,
}

impl Load {
    pub(crate) fn enqueued(&self) {
        self.queued.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn dequeued(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::Relaxed);
    }

    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    pub(crate) fn set_mesh_lag(&self, lag: Duration) {
        self.mesh_lag_ms.store(millis(lag), Ordering::Relaxed);
    }

    pub(crate) fn set_round(&self, took: Duration) {
        self.round_ms.store(millis(took), Ordering::Relaxed);
    }

    /// `Ok` when one more request fits within `limits`.
    pub(crate) fn admit(&self, limits: &Limits) -> Result<(), Overload> {
        let queued = self.queued();
        if queued >= limits.max_queue {
            return Err(Overload::Queue {
                queued,
                max: limits.max_queue,
            });
        }
        let (lag_ms, max_ms) = (
            self.mesh_lag_ms.load(Ordering::Relaxed),
            millis(limits.max_mesh_lag),
        );
        if lag_ms > max_ms {
            return Err(Overload::MeshLag { lag_ms, max_ms });
        }
        let (round_ms, max_ms) = (
            self.round_ms.load(Ordering::Relaxed),
            millis(limits.max_round),
        );
        if round_ms > max_ms {
            return Err(Overload::Round { round_ms, max_ms });
        }
        Ok(())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_signal_sheds_only_past_its_own_limit() {
        let limits = Limits {
            max_queue: 2,
            max_mesh_lag: Duration::from_millis(100),
            max_round: Duration::from_millis(50),
        };
        let load = Load::default();
        load.enqueued();
        load.set_mesh_lag(Duration::from_millis(100));
        load.set_round(Duration::from_millis(50));
        assert_eq!(load.admit(&limits), Ok(()), "at the limits, still admitted");

        load.enqueued();
        assert_eq!(
            load.admit(&limits),
            Err(Overload::Queue { queued: 2, max: 2 })
        );
        load.dequeued(2);
        load.set_mesh_lag(Duration::from_millis(101));
        assert_eq!(load.admit(&limits).unwrap_err().reason(), "mesh_lag");
        load.set_mesh_lag(Duration::ZERO);
        load.set_round(Duration::from_millis(51));
        assert_eq!(load.admit(&limits).unwrap_err().reason(), "round");
        load.set_round(Duration::ZERO);
        assert_eq!(load.admit(&limits), Ok(()));
    }
}
