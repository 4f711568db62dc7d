//! Claims on other owners' drivers: answering the claims made on this
//! node's drivers (a transfer or a refusal), committing the matches whose
//! driver was handed over, and giving up on claims past their deadline.

use super::*;

impl Replica {
    pub(super) fn answer_claims(&mut self, now: Millis) {
        let me = &self.config.node;
        let mut waiting: Vec<&Owned<ClaimRecord>> = self
            .ledger
            .claims()
            .filter(|c| {
                &c.record.driver_owner == me && self.ledger.decision(&c.record.id).is_none()
            })
            .collect();
        waiting.sort_by_key(|c| (c.record.created_at, c.record.id));
        let mut handed_over = HashSet::new();
        let mut decisions = Vec::new();
        for claim in waiting {
            let c = &claim.record;
            let owned_now = self.ledger.driver_owner(&c.driver) == Some((me.clone(), c.generation));
            let usable = self
                .ledger
                .driver(&c.driver)
                .is_some_and(|d| d.record.expires_at > now);
            let transfer = owned_now
                && usable
                && now < c.deadline
                && !self.ledger.is_committed(&c.driver)
                && handed_over.insert(c.driver);
            let driver_scope = self.ledger.driver(&c.driver).map(|d| &d.scope);
            let scope =
                self.scope_of_decision(&[&claim.scope, driver_scope.unwrap_or(&claim.scope)]);
            decisions.push((
                scope,
                DecisionRecord {
                    claim: c.id,
                    driver: c.driver,
                    generation: c.generation,
                    to: claim.owner.clone(),
                    transfer,
                    decided_at: now,
                },
            ));
        }
        for (scope, decision) in decisions {
            if decision.transfer {
                self.stats.transfers_granted += 1;
            } else {
                self.stats.claims_refused += 1;
            }
            self.write(now, scope, Record::Decision(decision));
        }
    }

    pub(super) fn commit_transfers(&mut self, now: Millis) {
        let me = &self.config.node;
        let mut used = HashSet::new();
        let mut commits = Vec::new();
        for claim in self.ledger.claims().filter(|c| &c.owner == me) {
            let c = &claim.record;
            let granted = self
                .ledger
                .decision(&c.id)
                .is_some_and(|x| x.record.transfer);
            if !granted
                || self.ledger.driver_owner(&c.driver).map(|(o, _)| o).as_ref() != Some(me)
                || !self.is_free(&c.rider, now)
                || !self.is_free(&c.driver, now)
                || used.contains(&c.rider)
                || used.contains(&c.driver)
            {
                continue;
            }
            let (Some(rider), Some(driver)) =
                (self.ledger.rider(&c.rider), self.ledger.driver(&c.driver))
            else {
                continue;
            };
            used.insert(c.rider);
            used.insert(c.driver);
            commits.push((
                self.scope_of_decision(&[&rider.scope, &driver.scope]),
                CommitRecord {
                    rider: c.rider,
                    driver: c.driver,
                    pickup_km: ride_types::geodesy::haversine_km(
                        driver.record.position,
                        rider.record.position,
                    ),
                    region: self.config.region.clone(),
                    committed_at: now,
                },
            ));
        }
        for (scope, commit) in commits {
            self.write(now, scope, Record::Commit(commit));
        }
    }

    pub(super) fn count_expired_claims(&mut self, now: Millis) {
        let me = &self.config.node;
        let expired: Vec<ClaimId> = self
            .ledger
            .claims()
            .filter(|c| {
                &c.owner == me
                    && c.record.deadline <= now
                    && self.ledger.decision(&c.record.id).is_none()
                    && !self.expired_claims.contains(&c.record.id)
            })
            .map(|c| c.record.id)
            .collect();
        self.stats.claims_expired += expired.len() as u64;
        self.expired_claims.extend(expired);
    }
}
