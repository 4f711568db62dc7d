//! What this node knows of each peer, for operators: whether a session is up
//! right now, the peer's last status report, and the replication lag of what
//! it sent recently. Nothing here feeds a protocol decision.

use std::collections::{BTreeMap, VecDeque};

use crate::protocol::message::PeerStatus;
use ride_types::clock::Millis;
use ride_types::ids::NodeId;

/// Lag samples kept per peer for its percentiles.
const LAG_WINDOW: usize = 1024;

#[derive(Debug, Default)]
pub(crate) struct PeerView {
    pub connected: bool,
    /// A message came since [`PeerBoard::take_sightings`] last looked.
    heard_lately: bool,
    pub status: Option<PeerStatus>,
    /// The peer's clock minus this node's, from the last status exchange.
    pub clock_offset_ms: Option<f64>,
    lags_ms: VecDeque<f64>,
}

impl PeerView {
    /// Median and 99th percentile of the recent lags, in milliseconds.
    pub(crate) fn lag_percentiles(&self) -> Option<(f64, f64)> {
        if self.lags_ms.is_empty() {
            return None;
        }
        let mut sorted: Vec<f64> = self.lags_ms.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        Some((at(0.5), at(0.99)))
    }
}

#[derive(Debug, Default)]
pub(crate) struct PeerBoard {
    peers: BTreeMap<NodeId, PeerView>,
}

impl PeerBoard {
    /// Every configured or discovered peer, so that one never heard from
    /// still shows (as unreachable).
    pub(crate) fn expect(&mut self, peer: &NodeId) {
        self.peers.entry(peer.clone()).or_default();
    }

    /// A peer too far away to keep a session with: not shown at all (it
    /// is not partitioned, it has nothing to share).
    pub(crate) fn forget(&mut self, peer: &NodeId) {
        self.peers.remove(peer);
    }

    pub(crate) fn heard(&mut self, peer: &NodeId) {
        let view = self.peers.entry(peer.clone()).or_default();
        view.connected = true;
        view.heard_lately = true;
    }

    /// Per peer of a known region, whether it was heard from since the last
    /// call and whether it is connected and ready: what the availability
    /// watcher judges regions by.
    pub(crate) fn take_sightings(&mut self) -> Vec<(String, bool, bool)> {
        self.peers
            .values_mut()
            .filter_map(|view| {
                let heard = std::mem::take(&mut view.heard_lately);
                let status = view.status.as_ref()?;
                Some((status.region.clone(), heard, view.connected && status.ready))
            })
            .collect()
    }

    pub(crate) fn lost(&mut self, peer: &NodeId) {
        self.peers.entry(peer.clone()).or_default().connected = false;
    }

    pub(crate) fn status(&mut self, peer: &NodeId, status: PeerStatus) {
        self.peers.entry(peer.clone()).or_default().status = Some(status);
    }

    pub(crate) fn lag(&mut self, peer: &NodeId, lag_ms: f64) {
        let lags = &mut self.peers.entry(peer.clone()).or_default().lags_ms;
        if lags.len() == LAG_WINDOW {
            lags.pop_front();
        }
        lags.push_back(lag_ms);
    }

    pub(crate) fn clock_offset(&self, peer: &NodeId) -> Option<f64> {
        self.peers.get(peer).and_then(|v| v.clock_offset_ms)
    }

    pub(crate) fn set_clock_offset(&mut self, peer: &NodeId, offset_ms: f64) {
        self.peers.entry(peer.clone()).or_default().clock_offset_ms = Some(offset_ms);
    }

    pub(crate) fn region_of(&self, peer: &NodeId) -> Option<&str> {
        self.peers
            .get(peer)
            .and_then(|v| v.status.as_ref())
            .map(|s| s.region.as_str())
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&NodeId, &PeerView)> {
        self.peers.iter()
    }
}

/// Events per second over the last few seconds, from a running total.
#[derive(Debug, Default)]
pub(crate) struct RateMeter {
    total: u64,
    /// (time, total) samples, one per half second at most, five seconds.
    samples: VecDeque<(Millis, u64)>,
}

const RATE_WINDOW_MS: u64 = 5_000;
const RATE_SAMPLE_MS: u64 = 500;

impl RateMeter {
    pub(crate) fn add(&mut self, n: u64) {
        self.total += n;
    }

    /// The rate now; call at least every few seconds to keep it current.
    pub(crate) fn per_second(&mut self, now: Millis) -> f64 {
        if self
            .samples
            .back()
            .is_none_or(|(at, _)| now.0 >= at.0 + RATE_SAMPLE_MS)
        {
            self.samples.push_back((now, self.total));
        }
        while self
            .samples
            .front()
            .is_some_and(|(at, _)| at.0 + RATE_WINDOW_MS < now.0)
        {
            self.samples.pop_front();
        }
        let Some(&(since, base)) = self.samples.front() else {
            return 0.0;
        };
        let elapsed_ms = now.0.saturating_sub(since.0);
        if elapsed_ms == 0 {
            return 0.0;
        }
        (self.total - base) as f64 * 1000.0 / elapsed_ms as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_percentiles_come_from_the_recent_window() {
        let mut board = PeerBoard::default();
        let peer = NodeId("b".into());
        board.expect(&peer);
        assert_eq!(board.iter().next().unwrap().1.lag_percentiles(), None);
        // 1..=100 ms, then 2,000 samples of 7 ms push the first ones out.
        for ms in 1..=100 {
            board.lag(&peer, f64::from(ms));
        }
        let (p50, p99) = board.iter().next().unwrap().1.lag_percentiles().unwrap();
        assert_eq!((p50, p99), (51.0, 99.0));
        for _ in 0..2_000 {
            board.lag(&peer, 7.0);
        }
        let view = board.iter().next().unwrap().1;
        assert_eq!(view.lag_percentiles(), Some((7.0, 7.0)));
        assert!(!view.connected);
        board.heard(&peer);
        assert!(board.iter().next().unwrap().1.connected);
        board.lost(&peer);
        assert!(!board.iter().next().unwrap().1.connected);
    }

    #[test]
    fn rates_cover_the_last_five_seconds() {
        let mut meter = RateMeter::default();
        assert_eq!(meter.per_second(Millis(0)), 0.0);
        for t in 1..=10 {
            meter.add(100);
            meter.per_second(Millis(t * 1_000));
        }
        // 100 per second throughout.
        assert_eq!(meter.per_second(Millis(10_000)), 100.0);
        // Nothing for ten seconds: the window forgets the old traffic.
        meter.per_second(Millis(15_000));
        assert_eq!(meter.per_second(Millis(20_000)), 0.0);
    }
}
