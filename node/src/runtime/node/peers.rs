//! Sessions as the transport drives them ([`PeerSync`]): sync messages
//! leave only once durable, statuses measure round trips and clock offsets,
//! and what is known of each peer is kept for operators.

use super::*;

impl Node {
    pub(super) fn is_skewed(&self, offset_ms: Option<f64>) -> bool {
        offset_ms.is_some_and(|o| o.abs() > self.max_clock_skew_ms as f64)
    }

    /// The peers to be in sync with before deciding, and to show (as
    /// unreachable) before they are first heard from.
    pub(crate) fn expect_peers<'a>(&self, peers: impl IntoIterator<Item = &'a NodeId>) {
        let mut state = self.lock();
        let peers: Vec<NodeId> = peers.into_iter().cloned().collect();
        for peer in &peers {
            state.board.expect(peer);
        }
        state.replica.set_peers(peers);
    }
}

impl Node {
    /// Judges the neighbour regions from what was heard of their nodes
    /// since the last step (see [`crate::runtime::availability`]); a change
    /// reaches the protocol at once, so documents of an adopted region are
    /// asked for, and requests of a dead region's owners left out of the
    /// round that follows.
    pub(super) fn judge_regions(&self, now: Millis) {
        let mut state = self.lock();
        let layout = Arc::clone(self.availability.layout());
        let sightings: Vec<PeerSighting> = state
            .board
            .take_sightings()
            .into_iter()
            .filter_map(|(region, heard, ready)| {
                Some(PeerSighting {
                    region: layout.index_of(&region)?,
                    heard,
                    ready,
                })
            })
            .collect();
        let Some(changed) = self.availability.observe(now, sightings) else {
            return;
        };
        state
            .replica
            .set_availability(changed.adopted, changed.down);
        let names = |set: ride_types::adoption::RegionSet| -> Vec<&str> {
            set.iter().filter_map(|r| layout.id_of(r)).collect()
        };
        tracing::warn!(
            down = ?names(changed.down),
            adopted = ?names(changed.adopted),
            "regions down or served changed"
        );
        metrics::gauge!("ride_regions_down").set(changed.down.len() as f64);
        metrics::gauge!("ride_regions_served").set((changed.adopted.len() + 1) as f64);
    }
}

impl PeerSync for Node {
    fn outgoing(&self, peer: &NodeId, now: Millis) -> Result<Vec<PeerMessage>, SyncError> {
        let (mut messages, sync) = {
            let mut state = self.lock();
            let messages = state.replica.outgoing(peer, now)?;
            (messages, state.take_sync().map_err(CoreError::from)?)
        };
        // What the messages carry leaves the node only once durable; the
        // sync covers every write not yet durable, and runs unlocked.
        if let Some(sync) = sync {
            sync.run().map_err(CoreError::from)?;
        }
        let mut state = self.lock();
        let due = state
            .status_sent
            .get(peer)
            .is_none_or(|at| now.0 >= at.0 + STATUS_INTERVAL_MS);
        if due {
            state.status_sent.insert(peer.clone(), now);
            let region = state.replica.region_of_peer(peer).map(str::to_owned);
            let mut status = own_status(&mut state, now, region.as_deref());
            status.echo = state.status_heard.get(peer).copied();
            messages.push(PeerMessage::V1(PeerMessageV1::Status(status)));
        }
        Ok(messages)
    }

    fn receive(&self, peer: &NodeId, message: PeerMessage, now: Millis) -> Result<(), SyncError> {
        let mut state = self.lock();
        state.board.heard(peer);
        if let PeerMessage::V1(PeerMessageV1::Status(status)) = message {
            state
                .status_heard
                .insert(peer.clone(), (status.sent_at, now));
            if let Some((sent, their_receipt)) = status.echo {
                let round_trip = round_trip_ms(sent, their_receipt, status.sent_at, now);
                state.round_trips.insert(peer.clone(), round_trip);
                self.load.set_mesh_lag(mesh_lag(&state));
                let offset = clock_offset_ms(sent, their_receipt, status.sent_at, now);
                let was_skewed = self.is_skewed(state.board.clock_offset(peer));
                state.board.set_clock_offset(peer, offset);
                state.replica.set_clock_offset(peer, offset);
                let skewed = self.is_skewed(Some(offset));
                metrics::gauge!("mesh_peer_clock_offset_seconds", "peer" => peer.0.clone())
                    .set(offset / 1000.0);
                metrics::gauge!("mesh_peer_clock_skewed", "peer" => peer.0.clone())
                    .set(if skewed { 1.0 } else { 0.0 });
                if skewed && !was_skewed {
                    tracing::warn!(%peer, offset_ms = offset, max_ms = self.max_clock_skew_ms, "peer's clock is beyond the skew bound");
                } else if was_skewed && !skewed {
                    tracing::info!(%peer, offset_ms = offset, "peer's clock is back within the skew bound");
                }
            }
            state.board.status(peer, status);
            return Ok(());
        }
        let arrived = state.replica.receive(peer, message, now)?;
        for accepted_at in arrived {
            let lag = now.0.saturating_sub(accepted_at.0) as f64 / 1000.0;
            metrics::histogram!("mesh_replication_lag_seconds", "peer" => peer.0.clone())
                .record(lag);
            state.board.lag(peer, lag * 1000.0);
        }
        Ok(())
    }

    fn peer_joined(&self, peer: &NodeId, region: &str) -> Result<(), SyncError> {
        let mut state = self.lock();
        let joined = state.replica.peer_joined(peer, region);
        if let Err(ReplicaError::NotNeighbour { .. }) = joined {
            state.board.forget(peer);
        }
        Ok(joined?)
    }

    fn peer_lost(&self, peer: &NodeId) {
        let mut state = self.lock();
        state.replica.peer_lost(peer);
        state.board.lost(peer);
        state.status_sent.remove(peer);
        state.status_heard.remove(peer);
        state.round_trips.remove(peer);
        self.load.set_mesh_lag(mesh_lag(&state));
    }
}

/// How far replication to the slowest connected peer is behind: the last
/// round trip of a status through both nodes' streams, where it queues
/// behind sync messages. A peer that has gone silent counts with its last
/// round trip: silence is what a partition looks like until the session
/// times out, and a partition must not stop intake.
pub(super) fn mesh_lag(state: &State) -> Duration {
    let worst_ms = state.round_trips.values().copied().fold(0.0, f64::max);
    Duration::from_secs_f64(worst_ms / 1000.0)
}

/// The round trip of a status and its echo, without the time the peer held
/// it (NTP's delay): `t1`..`t4` as in [`clock_offset_ms`].
pub(super) fn round_trip_ms(t1: Millis, t2: Millis, t3: Millis, t4: Millis) -> f64 {
    let total = t4.0.saturating_sub(t1.0) as f64;
    let held = t3.0.saturating_sub(t2.0) as f64;
    (total - held).max(0.0)
}

/// The peer's clock minus this node's, NTP-style, from one round trip:
/// this node sent at `t1` (its clock), the peer received at `t2` and
/// answered at `t3` (the peer's clock), this node received at `t4`.
pub(super) fn clock_offset_ms(t1: Millis, t2: Millis, t3: Millis, t4: Millis) -> f64 {
    let ms = |m: Millis| m.0 as f64;
    ((ms(t2) - ms(t1)) + (ms(t3) - ms(t4))) / 2.0
}

/// What this node tells its peers about itself; with `for_region`, its
/// digest is that of what it shares with that region's nodes.
pub(super) fn own_status(state: &mut State, now: Millis, for_region: Option<&str>) -> PeerStatus {
    let digest = match for_region {
        Some(region) => state.replica.digests().get(region).copied().unwrap_or(0),
        None => state.replica.digest(),
    };
    PeerStatus {
        region: state.replica.region().to_owned(),
        digest,
        documents: u32::try_from(state.replica.document_count()).unwrap_or(u32::MAX),
        record_bytes: state.replica.record_bytes(),
        requests_per_s: state.intake_rate.per_second(now),
        matches_per_s: state.commit_rate.per_second(now),
        ready: state.replica.is_ready(),
        sent_at: now,
        echo: None,
    }
}
