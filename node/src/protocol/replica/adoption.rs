//! Serving a region that is down, as the protocol sees it (which regions
//! are down, and who adopts them, is the runtime's call: see
//! [`ride_types::adoption`]).
//!
//! An adopter holds, syncs and offers the documents scoped to the region it
//! adopted, as a late replica of that region would: it tells its peers what
//! it serves (`Serving`), and they offer it the documents of every region it
//! serves. The halo rule then holds over the union: a rider accepted for the
//! adopted area is scoped to that region, and every driver within the radius
//! of it is scoped there too, so the adopter sees them all.
//!
//! Requests owned by a node of a region that is down are never taken over:
//! that node may have journaled a commit or a transfer that never left it,
//! so deciding for its requests could put a driver in two matches. They are
//! left out of matching rounds while their owner's region is down (a claim
//! on them could only time out, and a live rider would wait for nothing),
//! and they expire as they would, or match once their owner is back.

use super::*;

impl Replica {
    /// The runtime's view: this node serves its region and `adopted`, and
    /// the regions of `down` are down.
    pub(crate) fn set_availability(&mut self, adopted: RegionSet, down: RegionSet) {
        let served = Scope::of(adopted.iter().chain([self.region]));
        self.docs.serve(served);
        self.down = down;
        self.refresh_shares();
    }

    /// A peer said what it serves. Its own region is always among them.
    pub(super) fn peer_serves(
        &mut self,
        peer: &NodeId,
        regions: Scope,
    ) -> Result<(), ReplicaError> {
        let known = self.config.layout.region_count();
        if let Some(&region) = regions.regions().iter().find(|r| usize::from(**r) >= known) {
            return Err(ReplicaError::ServesUnknownRegion {
                peer: peer.clone(),
                region,
            });
        }
        match self.peer_regions.get(peer) {
            Some(&own) => {
                self.peer_served
                    .insert(peer.clone(), regions.union(&Scope::of([own])));
            }
            None => return Err(ReplicaError::UnexpectedServing(peer.clone())),
        }
        self.refresh_shares();
        Ok(())
    }

    /// What `peer`, of `region`, serves.
    pub(super) fn served_by(&self, peer: &NodeId, region: RegionIndex) -> Scope {
        self.peer_served
            .get(peer)
            .cloned()
            .unwrap_or_else(|| Scope::of([region]))
    }

    /// The `Serving` message `peer` needs: none while this node serves only
    /// its region and never said otherwise to it.
    pub(super) fn serving_news(&mut self, peer: &NodeId) -> Option<PeerMessage> {
        let served = self.docs.served().clone();
        let told = self.serving_sent.get(peer);
        let news = match told {
            Some(told) => *told != served,
            None => served != Scope::of([self.region]),
        };
        if !news {
            return None;
        }
        self.serving_sent.insert(peer.clone(), served.clone());
        Some(PeerMessage::V1(PeerMessageV1::Serving { regions: served }))
    }

    /// The pair digests' view of what each region serves: what its
    /// connected nodes said, where that is more than the region.
    pub(super) fn refresh_shares(&mut self) {
        let mut shares: BTreeMap<RegionIndex, Scope> = BTreeMap::new();
        for (peer, served) in &self.peer_served {
            if let Some(&region) = self.peer_regions.get(peer) {
                let entry = shares.entry(region).or_insert_with(|| Scope::of([region]));
                *entry = entry.union(served);
            }
        }
        let own = self.docs.served().clone();
        if own != Scope::of([self.region]) {
            shares.insert(self.region, own);
        }
        self.docs.set_shares(shares);
    }

    /// Whether `owner` (a request's owner identity) is a node of a region
    /// that is down.
    pub(super) fn owner_is_down(&self, owner: &NodeId) -> bool {
        !self.down.is_empty()
            && self
                .known_regions
                .get(&owner.node_of_owner())
                .is_some_and(|r| self.down.contains(*r))
    }
}
