//! What the model allows: who writes what, what a node may decide from its
//! view, what may be sent and dropped, and the guard of every action.

use super::*;

impl ProtocolModel {
    pub(super) fn spec(&self, q: Req) -> RequestSpec {
        self.bounds.requests[usize::from(q)]
    }

    pub(super) fn n(&self) -> u8 {
        self.bounds.nodes
    }

    pub(crate) fn writer(&self, record: &Record) -> Owner {
        match record {
            Record::Request(q) => self.spec(*q).home,
            Record::Claim(k) => k.claimant,
            Record::Decision { claim, .. } => claim.owner,
            Record::Commit { writer, .. } => *writer,
        }
    }

    /// The riders and drivers a record decides about (the node's
    /// `refers_to`).
    pub(crate) fn referents(record: &Record) -> Vec<Req> {
        match record {
            Record::Request(_) => Vec::new(),
            Record::Claim(k) => vec![k.rider, k.driver],
            Record::Decision { claim, .. } => vec![claim.driver],
            Record::Commit { rider, driver, .. } => vec![*rider, *driver],
        }
    }

    /// Whether `node` takes `record` from a peer: never one it dropped, and
    /// never one of its own (its journal has them all; a peer's copy may be
    /// stale), unless it has no journal.
    pub(crate) fn accepts(&self, node: &NodeState, record: &Record) -> bool {
        !node.tombstones.contains(record)
            && (self.defect == Defect::ForgetfulRestart || self.writer(record) != node.owner)
    }

    pub(super) fn committed(view: &BTreeSet<Record>, q: Req) -> bool {
        kind_range(view, Kind::Commits).any(
            |r| matches!(r, Record::Commit { rider, driver, .. } if *rider == q || *driver == q),
        )
    }

    /// The driver's owner now and the number of hand-overs, as `node`'s
    /// view says (the ledger's `driver_owner`). Of two transfers at one
    /// hand-over, which only a defect writes, the ledger keeps the first it
    /// absorbed, in an order the model does not track: a node counts one
    /// to itself, as some order would, and otherwise the lower claimant.
    pub(crate) fn driver_owner(&self, node: &NodeState, d: Req) -> Option<(Owner, u8)> {
        let view = &node.view;
        if !view.contains(&Record::Request(d)) {
            return None;
        }
        let mut owner = self.spec(d).home;
        let mut generation = 0u8;
        loop {
            let next = kind_range(view, Kind::Decisions)
                .filter_map(|r| match r {
                    Record::Decision {
                        claim,
                        transfer: true,
                    } if claim.driver == d && claim.generation == generation => {
                        Some(claim.claimant)
                    }
                    _ => None,
                })
                .min_by_key(|to| (*to != node.owner, *to));
            match next {
                Some(to) => {
                    owner = to;
                    generation = generation.saturating_add(1);
                }
                None => return Some((owner, generation)),
            }
        }
    }

    pub(super) fn deciding(node: &NodeState) -> bool {
        node.up && node.ready
    }

    /// The pairs a matching round proposes on this view: riders and
    /// drivers neither committed nor in a claim still waiting for its
    /// answer, each rider in turn with the first driver left (every
    /// pickup within reach; greedy by distance, abstracted to a fixed
    /// order, so that nodes with one view propose the same pairs).
    pub(super) fn round(&self, node: &NodeState) -> Vec<(Req, Req)> {
        let v = &node.view;
        let mut waiting = BTreeSet::new();
        for r in kind_range(v, Kind::Claims) {
            if let Record::Claim(k) = r
                && Self::undecided(node, k)
            {
                waiting.extend([k.rider, k.driver]);
            }
        }
        let free = |q: &Req| {
            v.contains(&Record::Request(*q)) && !waiting.contains(q) && !Self::committed(v, *q)
        };
        let mut drivers: Vec<Req> = self.drivers().filter(free).collect();
        let mut pairs = Vec::new();
        for rider in self.riders().filter(free) {
            if drivers.is_empty() {
                break;
            }
            pairs.push((rider, drivers.remove(0)));
        }
        pairs
    }

    /// Within the bound, a node acts on its round's pairs, and commits a
    /// pair whose claim was granted.
    pub(super) fn proposed(&self, node: &NodeState, rider: Req, driver: Req) -> bool {
        !self.bounds.fair
            || self.round(node).contains(&(rider, driver))
            || kind_range(&node.view, Kind::Decisions).any(|r| {
                matches!(r, Record::Decision { claim, transfer: true }
                    if claim.claimant == node.owner && claim.rider == rider && claim.driver == driver)
            })
    }

    pub(super) fn may_commit(&self, node: &NodeState, rider: Req, driver: Req) -> bool {
        let v = &node.view;
        Self::deciding(node)
            && self.proposed(node, rider, driver)
            && self.spec(rider).rider
            && !self.spec(driver).rider
            && v.contains(&Record::Request(rider))
            && self.spec(rider).home == node.owner
            && self.driver_owner(node, driver).map(|(o, _)| o) == Some(node.owner)
            && !Self::committed(v, rider)
            && !Self::committed(v, driver)
    }

    /// The claim `node` would make for this pair now, if any.
    pub(super) fn claim_for(&self, node: &NodeState, rider: Req, driver: Req) -> Option<ClaimKey> {
        let v = &node.view;
        if !(Self::deciding(node)
            && self.proposed(node, rider, driver)
            && self.spec(rider).rider
            && !self.spec(driver).rider
            && v.contains(&Record::Request(rider))
            && self.spec(rider).home == node.owner
            && !Self::committed(v, rider)
            && !Self::committed(v, driver))
        {
            return None;
        }
        let (owner, generation) = self.driver_owner(node, driver)?;
        if owner == node.owner || generation > self.bounds.max_generation {
            return None;
        }
        (0..self.bounds.max_attempts)
            .map(|attempt| ClaimKey {
                claimant: node.owner,
                rider,
                driver,
                generation,
                owner,
                attempt,
            })
            .find(|k| {
                !v.contains(&Record::Claim(*k)) && !node.tombstones.contains(&Record::Claim(*k))
            })
    }

    pub(super) fn may_claim(&self, node: &NodeState, claim: &ClaimKey) -> bool {
        let v = &node.view;
        Self::deciding(node)
            && self.proposed(node, claim.rider, claim.driver)
            && claim.claimant == node.owner
            && claim.attempt < self.bounds.max_attempts
            && claim.generation <= self.bounds.max_generation
            && self.spec(claim.rider).rider
            && !self.spec(claim.driver).rider
            && v.contains(&Record::Request(claim.rider))
            && self.spec(claim.rider).home == node.owner
            && !Self::committed(v, claim.rider)
            && !Self::committed(v, claim.driver)
            && claim.owner != node.owner
            && self.driver_owner(node, claim.driver) == Some((claim.owner, claim.generation))
            && !v.contains(&Record::Claim(*claim))
    }

    /// Whether the owner may hand the driver over for this claim.
    pub(super) fn may_transfer(&self, node: &NodeState, claim: &ClaimKey) -> bool {
        let v = &node.view;
        let owns = match self.defect {
            Defect::TransferWithoutOwnership => {
                v.contains(&Record::Request(claim.driver))
                    && self.spec(claim.driver).home == node.owner
            }
            _ => self.driver_owner(node, claim.driver) == Some((node.owner, claim.generation)),
        };
        owns && !Self::committed(v, claim.driver)
    }

    pub(super) fn undecided(node: &NodeState, claim: &ClaimKey) -> bool {
        !node.view.contains(&Record::Decision {
            claim: *claim,
            transfer: true,
        }) && !node.view.contains(&Record::Decision {
            claim: *claim,
            transfer: false,
        })
    }

    pub(super) fn may_answer(&self, node: &NodeState, claim: &ClaimKey, transfer: bool) -> bool {
        Self::deciding(node)
            && claim.owner == node.owner
            && node.view.contains(&Record::Claim(*claim))
            && Self::undecided(node, claim)
            && if transfer {
                self.may_transfer(node, claim)
            } else {
                // Within the bound the owner answers before the deadline.
                !self.bounds.fair || !self.may_transfer(node, claim)
            }
    }

    pub(super) fn link_up(&self, state: &State, from: u8, to: u8) -> bool {
        from != to
            && state.nodes[usize::from(from)].up
            && state.nodes[usize::from(to)].up
            && state.isolated.is_none_or(|i| i != from && i != to)
    }

    /// What `from` would send `to` now: the records `to` lacks and takes.
    pub(super) fn sendable(&self, state: &State, from: u8, to: u8) -> Vec<Record> {
        self.unsent(state, from, to).copied().collect()
    }

    /// Whether `from` has anything to send `to` (the guards ask this for
    /// every state the checker explores: no list is built).
    pub(super) fn has_sendable(&self, state: &State, from: u8, to: u8) -> bool {
        self.unsent(state, from, to).next().is_some()
    }

    pub(super) fn unsent<'a>(
        &'a self,
        state: &'a State,
        from: u8,
        to: u8,
    ) -> impl Iterator<Item = &'a Record> + 'a {
        let (a, b) = (
            &state.nodes[usize::from(from)],
            &state.nodes[usize::from(to)],
        );
        a.view
            .iter()
            .filter(move |r| !b.view.contains(r) && self.accepts(b, r))
    }

    /// Every record whose referents have expired, less those that refer to
    /// a rider or driver held and not dropped with them (the node's
    /// `drop_old`), as one maximal drop.
    pub(crate) fn droppable(&self, state: &State, node: u8) -> Vec<Record> {
        let n = &state.nodes[usize::from(node)];
        let mut dropping: BTreeSet<Record> = n
            .view
            .iter()
            .filter(|r| self.expired_enough(state, r))
            .copied()
            .collect();
        loop {
            let needed: Vec<Record> = dropping
                .iter()
                .filter(|r| !self.closed(n, &dropping, r))
                .copied()
                .collect();
            if needed.is_empty() {
                return dropping.into_iter().collect();
            }
            for r in needed {
                dropping.remove(&r);
            }
        }
    }

    pub(super) fn expired_enough(&self, state: &State, record: &Record) -> bool {
        match record {
            Record::Request(q) => state.expired[usize::from(*q)],
            other => Self::referents(other)
                .iter()
                .all(|q| state.expired[usize::from(*q)]),
        }
    }

    pub(super) fn closed(
        &self,
        node: &NodeState,
        dropping: &BTreeSet<Record>,
        record: &Record,
    ) -> bool {
        Self::referents(record).iter().all(|q| {
            let home = Record::Request(*q);
            !node.view.contains(&home) || dropping.contains(&home)
        })
    }

    pub(super) fn may_drop(&self, state: &State, node: u8, records: &[Record]) -> bool {
        let n = &state.nodes[usize::from(node)];
        let set: BTreeSet<Record> = records.iter().copied().collect();
        !records.is_empty()
            && n.up
            && set.len() == records.len()
            && records.iter().all(|r| {
                n.view.contains(r) && self.expired_enough(state, r) && self.closed(n, &set, r)
            })
    }

    /// Whether the action may happen in `state`: the transition relation's
    /// guard, shared by the checker and the conformance replay.
    pub(crate) fn allowed(&self, state: &State, action: &Action) -> bool {
        let node = |i: u8| &state.nodes[usize::from(i)];
        match action {
            Action::Accept(q) => {
                let home = self.spec(*q).home;
                let n = node(home.node);
                !state.accepted[usize::from(*q)] && n.up && n.owner == home
            }
            Action::Commit {
                node: i,
                rider,
                driver,
            } => self.may_commit(node(*i), *rider, *driver),
            Action::Claim { node: i, claim } => self.may_claim(node(*i), claim),
            Action::Answer {
                node: i,
                claim,
                transfer,
            } => self.may_answer(node(*i), claim, *transfer),
            Action::Send { from, to } => {
                self.link_up(state, *from, *to) && self.has_sendable(state, *from, *to)
            }
            Action::Broadcast(from) => (0..self.n())
                .any(|to| self.link_up(state, *from, to) && self.has_sendable(state, *from, to)),
            Action::Crash { node: i, .. } => state.crashes_left > 0 && node(*i).up,
            Action::Restart(i) => !node(*i).up,
            Action::Ready(i) => node(*i).up && !node(*i).ready,
            Action::Isolate(_) => state.partitions_left > 0 && state.isolated.is_none(),
            Action::Heal => state.isolated.is_some(),
            Action::Expire(qs) => {
                !self.bounds.fair
                    && !qs.is_empty()
                    && qs.iter().all(|q| !state.expired[usize::from(*q)])
            }
            Action::Drop { node: i, records } => self.may_drop(state, *i, records),
            Action::Cleanup => (0..self.n())
                .any(|i| state.nodes[usize::from(i)].up && !self.droppable(state, i).is_empty()),
        }
    }
}
