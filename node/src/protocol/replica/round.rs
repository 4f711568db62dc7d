//! The matching round: what it may pair (free riders of this node, free
//! drivers it can see), and what a pair becomes (a commit when this node
//! owns both, a claim when another node owns the driver).

use super::*;

/// The candidates of one matching round, taken from the core so that the
/// round itself runs without it (see [`Replica::complete_round`]).
#[derive(Debug, Clone)]
pub(crate) struct RoundInput {
    pub riders: Vec<Candidate>,
    pub drivers: Vec<Candidate>,
    pub max_pickup_km: f64,
    pub now: Millis,
}

impl RoundInput {
    /// The greedy round: pure CPU work, no core needed.
    pub(crate) fn run(&self) -> Vec<Pair> {
        greedy(&self.riders, &self.drivers, self.max_pickup_km)
    }
}

impl Replica {
    /// Uncommitted and unexpired.
    pub(super) fn is_free(&self, id: &RequestId, now: Millis) -> bool {
        let alive = self
            .ledger
            .rider(id)
            .map(|r| r.record.expires_at)
            .or_else(|| self.ledger.driver(id).map(|d| d.record.expires_at))
            .is_some_and(|expires_at| expires_at > now);
        alive && !self.ledger.is_committed(id)
    }

    /// Riders and drivers in a claim still waiting for its answer.
    pub(super) fn claimed(&self, now: Millis) -> HashSet<RequestId> {
        let mut claimed = HashSet::new();
        for claim in self.ledger.claims() {
            if self.ledger.claim_is_open(&claim.record, now) {
                claimed.insert(claim.record.rider);
                claimed.insert(claim.record.driver);
            }
        }
        claimed
    }

    pub(super) fn round_input(&mut self, now: Millis) -> RoundInput {
        let mut claimed = self.claimed(now);
        let skipped = self.owned_by_the_down(now);
        self.stats.candidates_skipped += skipped.len() as u64;
        claimed.extend(skipped);
        // Open means not committed; unexpired and unclaimed makes it free
        // for this round (what `is_free` says, read from the index alone).
        let candidates = |open: &mut dyn Iterator<Item = (&RequestId, &Open)>| -> Vec<Candidate> {
            open.filter(|(id, o)| o.expires_at > now && !claimed.contains(*id))
                .map(|(id, o)| Candidate {
                    id: *id,
                    position: o.position,
                })
                .collect()
        };
        let (mut riders, mut drivers) = self.ledger.open_index();
        RoundInput {
            riders: candidates(&mut riders),
            drivers: candidates(&mut drivers),
            max_pickup_km: self.config.max_pickup_km,
            now,
        }
    }

    /// Open riders and drivers whose owner's region is down: never offered
    /// (see [`super::adoption`]). Costs nothing while no region is down.
    fn owned_by_the_down(&self, now: Millis) -> Vec<RequestId> {
        if self.down.is_empty() {
            return Vec::new();
        }
        let (riders, drivers) = self.ledger.open_index();
        let riders = riders
            .filter(|(_, o)| o.expires_at > now)
            .filter(|(id, _)| {
                self.ledger
                    .rider(id)
                    .is_some_and(|r| self.owner_is_down(&r.owner))
            });
        let drivers = drivers
            .filter(|(_, o)| o.expires_at > now)
            .filter(|(id, _)| {
                self.ledger
                    .driver_owner(id)
                    .is_some_and(|(owner, _)| self.owner_is_down(&owner))
            });
        riders.chain(drivers).map(|(id, _)| *id).collect()
    }

    /// Acts on a round's pairs for this node's riders: commits where it
    /// owns the driver too, claims the driver otherwise. What changed while
    /// the round ran (a rider committed, a claim made) is checked again
    /// here, under the core's lock, so a stale round can only propose less.
    pub(crate) fn complete_round(
        &mut self,
        input: &RoundInput,
        pairs: &[Pair],
        now: Millis,
    ) -> Result<(), ReplicaError> {
        let me = self.config.node.clone();
        let claimed = self.claimed(now);
        let round_at = input.now;
        let mut writes = Vec::new();
        for pair in pairs {
            let (Some(rider), Some(driver)) = (
                self.ledger.rider(&pair.rider),
                self.ledger.driver(&pair.driver),
            ) else {
                continue;
            };
            if rider.owner != me
                || claimed.contains(&pair.rider)
                || claimed.contains(&pair.driver)
                || !self.is_free(&pair.rider, now)
                || !self.is_free(&pair.driver, now)
            {
                continue;
            }
            let Some((driver_owner, generation)) = self.ledger.driver_owner(&pair.driver) else {
                continue;
            };
            let scope = self.scope_of_decision(&[&rider.scope, &driver.scope]);
            if driver_owner == me {
                writes.push((
                    scope,
                    Record::Commit(CommitRecord {
                        rider: pair.rider,
                        driver: pair.driver,
                        pickup_km: pair.pickup_km,
                        region: self.config.region.clone(),
                        committed_at: now,
                    }),
                ));
            } else {
                self.stats.claims_sent += 1;
                writes.push((
                    scope,
                    Record::Claim(ClaimRecord {
                        id: ClaimId::derive(&me, pair.rider, pair.driver, round_at),
                        rider: pair.rider,
                        driver: pair.driver,
                        driver_owner,
                        generation,
                        created_at: now,
                        deadline: now.plus(self.config.claim_ttl_ms),
                    }),
                ));
            }
        }
        for (scope, record) in writes {
            self.write(now, scope, record);
        }
        self.flush(now)
    }
}
