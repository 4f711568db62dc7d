//! What the runtime and operators read of the replica: pending requests,
//! claims, commits, digests and counts.

use super::*;

impl Replica {
    /// Every commit this node learnt of since the last call (its own and
    /// replicated ones), for delivery.
    pub(crate) fn take_commits(&mut self) -> Vec<Owned<CommitRecord>> {
        self.ledger.take_new_commits()
    }

    pub(crate) fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// A rider or driver with this id is in the replicated state, or was
    /// accepted here and is on its way into it.
    pub(crate) fn knows(&self, id: &RequestId) -> bool {
        self.ledger.rider(id).is_some()
            || self.ledger.driver(id).is_some()
            || self.unwritten.contains_key(id)
    }

    /// Known, unexpired and not yet committed.
    pub(crate) fn is_pending(&self, id: &RequestId, now: Millis) -> bool {
        self.is_free(id, now) || self.unwritten.get(id).is_some_and(|u| u.expires_at > now)
    }

    /// (riders, drivers) accepted here, pending, and in no document yet.
    pub(super) fn unwritten_counts(&self, now: Millis) -> (usize, usize) {
        let live = self.unwritten.values().filter(|u| u.expires_at > now);
        live.fold((0, 0), |(riders, drivers), u| {
            if u.rider {
                (riders + 1, drivers)
            } else {
                (riders, drivers + 1)
            }
        })
    }

    /// (riders, drivers) pending now, counted on the open index alone (every
    /// step's snapshot asks, under the core's lock).
    pub(crate) fn pending_counts(&self, now: Millis) -> (usize, usize) {
        let (riders, drivers) = self.ledger.open_index();
        let live = |(_, open): &(&RequestId, &Open)| open.expires_at > now;
        let (new_riders, new_drivers) = self.unwritten_counts(now);
        (
            riders.filter(live).count() + new_riders,
            drivers.filter(live).count() + new_drivers,
        )
    }

    /// (riders, drivers) pending now that this node accepted.
    pub(crate) fn own_pending_counts(&self, now: Millis) -> (usize, usize) {
        let me = &self.config.node;
        let (new_riders, new_drivers) = self.unwritten_counts(now);
        (
            self.pending_riders(now).filter(|r| &r.owner == me).count() + new_riders,
            self.pending_drivers(now).filter(|d| &d.owner == me).count() + new_drivers,
        )
    }

    pub(crate) fn pending_riders(&self, now: Millis) -> impl Iterator<Item = &Owned<RiderRecord>> {
        self.ledger
            .open_riders()
            .filter(move |r| r.record.expires_at > now)
    }

    pub(crate) fn pending_drivers(
        &self,
        now: Millis,
    ) -> impl Iterator<Item = &Owned<DriverRecord>> {
        self.ledger
            .open_drivers()
            .filter(move |d| d.record.expires_at > now)
    }

    /// Claims still waiting for an answer.
    pub(crate) fn open_claims(&self, now: Millis) -> usize {
        self.waiting_claims(now).count()
    }

    pub(crate) fn waiting_claims(&self, now: Millis) -> impl Iterator<Item = &Owned<ClaimRecord>> {
        self.ledger
            .claims()
            .filter(move |c| self.ledger.claim_is_open(&c.record, now))
    }

    pub(crate) fn stats(&self) -> ReplicaStats {
        self.stats
    }

    pub(crate) fn digest(&mut self) -> u64 {
        self.docs.digest()
    }

    /// Per region id, the digest of what this node shares with it (see
    /// [`Documents::digests`]).
    pub(crate) fn digests(&mut self) -> BTreeMap<String, u64> {
        let layout = &self.config.layout;
        self.docs
            .digests()
            .into_iter()
            .filter_map(|(region, digest)| Some((layout.id_of(region)?.to_owned(), digest)))
            .collect()
    }

    #[cfg(test)]
    pub(crate) fn inventory(&mut self) -> Inventory {
        let served = self.docs.served().clone();
        self.docs.inventory(&served)
    }

    pub(crate) fn document_count(&self) -> usize {
        self.docs.len()
    }

    pub(crate) fn record_bytes(&self) -> u64 {
        self.docs.record_bytes()
    }

    /// Every record absorbed since the last call, with its document (only
    /// with [`Hooks::observe`]).
    #[cfg(test)]
    pub(crate) fn take_observed(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.observed)
    }
}
