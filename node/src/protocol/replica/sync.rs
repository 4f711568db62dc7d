//! Sessions with peers: hello, inventories, automerge sync messages per
//! document, and when this node is in sync with a peer (readiness).

use super::*;

impl Replica {
    /// A peer said hello from `region`. An error means the session should
    /// end: the region is not in the layout, or too far to share anything
    /// (the peer is then not waited for either).
    pub(crate) fn peer_joined(&mut self, peer: &NodeId, region: &str) -> Result<(), ReplicaError> {
        let layout = &self.config.layout;
        let index = layout
            .index_of(region)
            .ok_or_else(|| ReplicaError::UnknownRegion(region.to_owned()))?;
        if !layout.are_neighbours(self.region, index) {
            self.distant.insert(peer.clone());
            return Err(ReplicaError::NotNeighbour {
                peer: peer.clone(),
                region: region.to_owned(),
            });
        }
        self.peer_regions.insert(peer.clone(), index);
        self.known_regions.insert(peer.clone(), index);
        Ok(())
    }

    /// A peer's clock minus this node's, as measured (see
    /// [`Documents::unchanged_for`]).
    pub(crate) fn set_clock_offset(&mut self, peer: &NodeId, offset_ms: f64) {
        self.docs.set_clock_offset(peer, offset_ms.round() as i64);
    }

    /// Peers this node has been in sync with since it started.
    pub(crate) fn is_synced_with(&self, peer: &NodeId) -> bool {
        self.synced.contains(peer)
    }

    /// A connected peer's region (by its id in the layout).
    pub(crate) fn region_of_peer(&self, peer: &NodeId) -> Option<&str> {
        self.config.layout.id_of(*self.peer_regions.get(peer)?)
    }

    /// Applies a peer's message, returning when each request it brought
    /// was accepted (for replication lag). An error means the peer sent
    /// something malformed; the runtime should drop that connection.
    pub(crate) fn receive(
        &mut self,
        from: &NodeId,
        message: PeerMessage,
        now: Millis,
    ) -> Result<Vec<Millis>, ReplicaError> {
        let arrived = match message {
            PeerMessage::V1(PeerMessageV1::Sync { doc, message }) => {
                if !self.docs.receive(from, &doc, &message, now)? {
                    self.stats.documents_refused += 1;
                }
                self.absorb()
            }
            PeerMessage::V1(PeerMessageV1::Inventory { docs }) => {
                if !self.ready {
                    self.inventories.insert(from.clone(), docs);
                }
                Vec::new()
            }
            PeerMessage::V1(PeerMessageV1::Hello { .. }) => {
                return Err(ReplicaError::UnexpectedHello);
            }
            PeerMessage::V1(PeerMessageV1::Status(_)) => Vec::new(),
            PeerMessage::V1(PeerMessageV1::Serving { regions }) => {
                self.peer_serves(from, regions)?;
                Vec::new()
            }
        };
        self.check_synced();
        Ok(arrived)
    }

    /// Peers whose inventory this node now covers are in sync.
    pub(super) fn check_synced(&mut self) {
        if self.ready || self.inventories.is_empty() {
            return;
        }
        let docs = &mut self.docs;
        let covered: Vec<NodeId> = self
            .inventories
            .iter()
            .filter(|(_, inventory)| docs.covers(inventory))
            .map(|(peer, _)| peer.clone())
            .collect();
        for peer in covered {
            self.inventories.remove(&peer);
            tracing::info!(%peer, "in sync with peer");
            self.synced.insert(peer);
        }
    }

    /// What `peer` needs now: at the start of a session this node's
    /// inventory, then sync messages. Flushes pending writes first, so a
    /// batch of writes becomes one change. The messages may leave only once
    /// what they carry is durable: the caller runs [`Replica::take_sync`]'s
    /// sync (taken after this) before sending them.
    pub(crate) fn outgoing(
        &mut self,
        peer: &NodeId,
        now: Millis,
    ) -> Result<Vec<PeerMessage>, ReplicaError> {
        self.write_intake(now, false);
        self.flush(now)?;
        // Nothing before its hello says where the peer is.
        let Some(&region) = self.peer_regions.get(peer) else {
            return Ok(Vec::new());
        };
        let mut out: Vec<PeerMessage> = self.serving_news(peer).into_iter().collect();
        let served = self.served_by(peer, region);
        if self.inventory_sent.insert(peer.clone()) {
            out.push(PeerMessage::V1(PeerMessageV1::Inventory {
                docs: self.docs.inventory(&served),
            }));
        }
        out.extend(
            self.docs
                .outgoing(peer, &served, now)
                .into_iter()
                .map(|(doc, message)| PeerMessage::V1(PeerMessageV1::Sync { doc, message })),
        );
        Ok(out)
    }

    /// The connection to `peer` was lost: start its syncs afresh.
    pub(crate) fn peer_lost(&mut self, peer: &NodeId) {
        self.docs.reset_peer(peer);
        self.peer_regions.remove(peer);
        self.peer_served.remove(peer);
        self.serving_sent.remove(peer);
        self.refresh_shares();
        self.inventory_sent.remove(peer);
        self.inventories.remove(peer);
    }
}
