//! What a node holds for whom: which regions it serves, the inventory it
//! offers a peer, and the digests by which two nodes tell that they hold the
//! same documents. Apart from the documents' reads and writes because these
//! are the mesh's bookkeeping, asked for by sync and convergence checks.

use std::collections::BTreeMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use automerge::ChangeHash;
use ride_types::halo::{RegionIndex, Scope};

use super::{Documents, Inventory};

impl Documents {
    /// This node now serves the regions of `served`: documents scoped to
    /// them are taken from peers, and the others refused from now on (those
    /// already held stay until they age out, which is the hand-back's
    /// drain).
    pub fn serve(&mut self, served: Scope) {
        if served != self.served {
            self.served = served;
            self.generation += 1;
        }
    }

    pub fn served(&self) -> &Scope {
        &self.served
    }

    /// What each region's nodes serve where that is more than the region
    /// itself (each scope holds its region), for the pair digests.
    pub fn set_shares(&mut self, shares: BTreeMap<RegionIndex, Scope>) {
        if shares != self.shares {
            self.shares = shares;
            self.generation += 1;
        }
    }

    /// Every document held for a node that serves `served`, and its heads.
    pub fn inventory(&mut self, served: &Scope) -> Inventory {
        self.docs
            .iter_mut()
            .filter(|(id, _)| id.scope.intersects(served))
            .map(|(id, d)| (id.clone(), d.doc.get_heads().iter().map(|h| h.0).collect()))
            .collect()
    }

    /// Holds every change of `inventory` (or has dropped its document).
    pub fn covers(&mut self, inventory: &Inventory) -> bool {
        inventory.iter().all(|(id, heads)| {
            if !self.docs.contains_key(id) && self.refuses(id) {
                return true;
            }
            self.docs.get_mut(id).is_some_and(|d| {
                heads
                    .iter()
                    .all(|h| d.doc.get_change_by_hash(&ChangeHash(*h)).is_some())
            })
        })
    }

    /// A hash of every document's id and heads: equal on nodes of one
    /// region that hold the same documents with the same changes.
    pub fn digest(&mut self) -> u64 {
        self.digested().0
    }

    /// Per region, [`Documents::digest`] of what this node shares with that
    /// region's nodes: the documents scoped to a region this node serves and
    /// to one they serve. A node of region `a` and one of `b` have converged
    /// when the first's digest for `b` equals the second's for `a`, also
    /// while either serves an adopted region too.
    pub fn digests(&mut self) -> BTreeMap<RegionIndex, u64> {
        self.digested().1.clone()
    }

    /// Both digests, computed in one walk whenever anything changed.
    fn digested(&mut self) -> (u64, &BTreeMap<RegionIndex, u64>) {
        if self
            .digested
            .as_ref()
            .is_none_or(|d| d.0 != self.generation)
        {
            let mut all = DefaultHasher::new();
            let mut by_region: BTreeMap<RegionIndex, DefaultHasher> = BTreeMap::new();
            for (id, entry) in &mut self.docs {
                let mut heads = entry.doc.get_heads();
                heads.sort();
                (id, &heads).hash(&mut all);
                if !id.scope.intersects(&self.served) {
                    continue;
                }
                let plain = id
                    .scope
                    .regions()
                    .iter()
                    .filter(|r| !self.shares.contains_key(r));
                let wider = self.shares.iter().filter(|(_, s)| s.intersects(&id.scope));
                for region in plain.chain(wider.map(|(r, _)| r)) {
                    (id, &heads).hash(by_region.entry(*region).or_default());
                }
            }
            let by_region = by_region
                .into_iter()
                .map(|(r, h)| (r, h.finish()))
                .collect();
            self.digested = Some((self.generation, all.finish(), by_region));
        }
        let (_, all, by_region) = self.digested.as_ref().expect("just computed");
        (*all, by_region)
    }
}
