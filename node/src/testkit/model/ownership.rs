//! The ownership protocol as a `stateright` model: nodes, the riders and
//! drivers they own, claims, answers (transfers or refusals), commits,
//! replication over links, partitions, crashes and restarts, and cleanup.
//!
//! What is abstracted, and why it is sound for safety:
//! - **Records, not automerge.** A node's view is the set of records it
//!   holds. Every record has one writer (the owner of the document holding
//!   it), so merging views is set union; documents shrink to single records
//!   (a record is dropped alone, with the same rule the node applies to a
//!   document's records).
//! - **Messages.** A message carries the records the receiver lacks when
//!   it is sent (what automerge's sync state works out) and arrives as it
//!   is sent. A message's effect depends only on what its sender held when
//!   sending, and merging is set union, so holding it in flight adds only
//!   orders that commuting independent steps already give; a message lost
//!   (a link down, a crash at either end) is one never sent; a duplicate
//!   changes nothing; order within a link holds trivially, and across links
//!   any order is explored. Sends go link by link (`Send`), or, in the
//!   normal bound, to every reachable peer at once (`Broadcast`).
//! - **Time.** No clock at all. Whatever a deadline or an expiry decides
//!   only ever makes a node refuse or not act, so every check that a clock
//!   could fail is a free choice here: an owner may refuse any claim, a
//!   claimant need not claim, and, because a slow clock sees a request alive
//!   after its owner's clock saw it expire, nodes may still act on an
//!   expired request. `Expire` marks a request expired on its owner's clock
//!   (the one that stamps `expires_at`); only cleanup and the promise about
//!   acknowledged requests depend on it. Claims' deadlines vanish: their
//!   only effect is a refusal, or a claimant that stops waiting, which a
//!   free claimant already covers. Clocks beyond the skew bound are thus the
//!   general case; clocks within the bound are [`Bounds::fair`].
//! - **Readiness.** A restarted node waits to be in sync, or for a grace
//!   that can end at any moment: `Ready` may happen at any time after a
//!   restart (in the checker, at once: see [`Bounds::ready_at_start`]), so
//!   safety never leans on readiness.
//! - **Matching.** A node may claim or commit any pair of its own rider and
//!   a driver its view shows free (a round on a stale view can propose
//!   anything), except within the bound, where it follows one shared greedy
//!   order, as converged nodes do.
//! - **Cleanup.** A record may be dropped once the riders and drivers it
//!   is about have expired, and never while one of them is still held and
//!   not dropped with it (the node's rule for a document's records); a
//!   dropped record is refused if offered again.
//! - **Bounds.** Crashes and partitions are counted; a claimant makes at
//!   most `max_attempts` claims for one rider, driver and believed owner,
//!   and none beyond `max_generation` hand-overs.

use std::collections::BTreeSet;
use std::fmt;

use stateright::{Model, Property};

/// An owner identity: a node and how many times it came back on an empty
/// disk (each time it writes as a new owner).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Owner {
    pub node: u8,
    pub lineage: u8,
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.node)?;
        for _ in 0..self.lineage {
            write!(f, "'")?;
        }
        Ok(())
    }
}

/// A rider or driver: an index into [`Bounds::requests`].
pub(crate) type Req = u16;

/// A claim: who asks whom for which driver, for which rider, at which
/// hand-over; `attempt` tells apart claims a claimant repeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ClaimKey {
    pub claimant: Owner,
    pub rider: Req,
    pub driver: Req,
    pub generation: u8,
    pub owner: Owner,
    pub attempt: u8,
}

/// A replicated record, as [`crate::protocol::record::Record`] without
/// payload. The derived order sorts by kind first (in this order), so a
/// view's claims, decisions or commits are one range of it
/// ([`kind_range`]): the guards read them without walking every request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Record {
    Request(Req),
    Claim(ClaimKey),
    Decision {
        claim: ClaimKey,
        transfer: bool,
    },
    Commit {
        writer: Owner,
        rider: Req,
        driver: Req,
    },
}

const FIRST_OWNER: Owner = Owner {
    node: 0,
    lineage: 0,
};
const FIRST_CLAIM: ClaimKey = ClaimKey {
    claimant: FIRST_OWNER,
    rider: 0,
    driver: 0,
    generation: 0,
    owner: FIRST_OWNER,
    attempt: 0,
};
const FIRST_DECISION: Record = Record::Decision {
    claim: FIRST_CLAIM,
    transfer: false,
};
const FIRST_COMMIT: Record = Record::Commit {
    writer: FIRST_OWNER,
    rider: 0,
    driver: 0,
};

/// The records of one kind in a view (`Record`'s order puts each kind
/// together).
#[derive(Clone, Copy)]
enum Kind {
    Claims,
    Decisions,
    Commits,
}

fn kind_range(view: &BTreeSet<Record>, kind: Kind) -> impl Iterator<Item = &Record> {
    let first_claim = Record::Claim(FIRST_CLAIM);
    match kind {
        Kind::Claims => view.range(first_claim..FIRST_DECISION),
        Kind::Decisions => view.range(FIRST_DECISION..FIRST_COMMIT),
        Kind::Commits => view.range(FIRST_COMMIT..),
    }
}

/// A defect of an earlier protocol, put back for the tests that show the
/// checker finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Defect {
    None,
    /// The owner answers from the driver's home, not from who owns it now:
    /// it hands over a driver it already handed over.
    TransferWithoutOwnership,
    /// A node restarts with its old identity having kept its requests but
    /// not its answers: it forgets its own transfers, and trusts peers'
    /// copies of its documents (it has no journal of them to trust).
    ForgetfulRestart,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RequestSpec {
    pub home: Owner,
    pub rider: bool,
}

/// The size of the world to explore.
#[derive(Clone, Debug)]
pub(crate) struct Bounds {
    pub nodes: u8,
    pub requests: Vec<RequestSpec>,
    /// Every request accepted (answered 202) and replicated to every node
    /// before anything else.
    pub accepted_at_start: bool,
    /// Nodes are ready as they start and restart: the grace ends at once.
    /// A node that waits only receives meanwhile, which a ready node that
    /// decides nothing for a while also does, so this loses no behaviour
    /// and saves the checker a step.
    pub ready_at_start: bool,
    pub crashes: u8,
    pub partitions: u8,
    pub max_generation: u8,
    pub max_attempts: u8,
    /// A node sends to every peer it reaches at once (the checker's
    /// `Broadcast`), rather than link by link: what one peer learns before
    /// another then needs a crash or a partition, which the bound has;
    /// link by link is the large bound.
    pub broadcast: bool,
    /// Every node up drops what it can at one step (the checker's
    /// `Cleanup`), rather than each on its own clock: a node that misses a
    /// cleanup then needs a crash; node by node is the large bound.
    pub cleanup_together: bool,
    /// Links up and clocks within the bound: no crash, no partition,
    /// nothing expires, an owner refuses only a claim it cannot grant, and
    /// a node claims and commits only what its matching round proposes
    /// (otherwise it may claim any pair: a round on a stale view can
    /// propose anything).
    pub fair: bool,
}

pub(crate) struct ProtocolModel {
    pub bounds: Bounds,
    pub defect: Defect,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct NodeState {
    pub owner: Owner,
    pub up: bool,
    pub ready: bool,
    /// What the node holds; while it is down, what its disk holds.
    pub view: BTreeSet<Record>,
    /// Records dropped here, refused if offered again (kept with the
    /// journal).
    pub tombstones: BTreeSet<Record>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct State {
    pub nodes: Vec<NodeState>,
    /// The node cut off from all others, if any.
    pub isolated: Option<u8>,
    /// Answered 202.
    pub accepted: Vec<bool>,
    /// Expired on its owner's clock.
    pub expired: Vec<bool>,
    pub crashes_left: u8,
    pub partitions_left: u8,
    /// History, for the properties: every commit ever written (rider,
    /// driver, writer), whether one was written twice, and every match a
    /// client was told of (a node told its clients once it held the commit).
    pub commits: BTreeSet<(Req, Req, Owner)>,
    pub rewritten: bool,
    pub told: BTreeSet<(Req, Req, Owner)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Action {
    /// The home node journals a request and answers 202.
    Accept(Req),
    Commit {
        node: u8,
        rider: Req,
        driver: Req,
    },
    Claim {
        node: u8,
        claim: ClaimKey,
    },
    Answer {
        node: u8,
        claim: ClaimKey,
        transfer: bool,
    },
    /// `from` sends `to` what it lacks, which arrives.
    Send {
        from: u8,
        to: u8,
    },
    /// `Send` to every peer that `from` reaches.
    Broadcast(u8),
    /// Memory is lost; the journal is kept unless `wipe` (an empty disk: the
    /// node comes back as a new owner).
    Crash {
        node: u8,
        wipe: bool,
    },
    Restart(u8),
    Ready(u8),
    Isolate(u8),
    Heal,
    /// These requests' TTL passes on their owners' clocks.
    Expire(Vec<Req>),
    Drop {
        node: u8,
        records: Vec<Record>,
    },
    /// Every node up drops what it can (see [`Bounds::cleanup_together`]).
    Cleanup,
}

pub(crate) const NO_DOUBLE_COMMIT: &str = "no rider or driver in two commits";
pub(crate) const TOLD_BACKED: &str = "every notification is backed by a commit that survives";
pub(crate) const ACKED_KEPT: &str = "no acknowledged request is lost before it expires";
pub(crate) const CONVERGED: &str = "views are equal once links have been up long enough";
pub(crate) const LIVE: &str = "with links up and clocks within the bound, every rider is committed";
pub(crate) const HANDED_OVER: &str = "a driver is committed by the node it was handed to";

impl ProtocolModel {
    fn spec(&self, q: Req) -> RequestSpec {
        self.bounds.requests[usize::from(q)]
    }

    fn n(&self) -> u8 {
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

    fn committed(view: &BTreeSet<Record>, q: Req) -> bool {
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

    fn deciding(node: &NodeState) -> bool {
        node.up && node.ready
    }

    /// The pairs a matching round proposes on this view: riders and
    /// drivers neither committed nor in a claim still waiting for its
    /// answer, each rider in turn with the first driver left (every
    /// pickup within reach; greedy by distance, abstracted to a fixed
    /// order, so that nodes with one view propose the same pairs).
    fn round(&self, node: &NodeState) -> Vec<(Req, Req)> {
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
    fn proposed(&self, node: &NodeState, rider: Req, driver: Req) -> bool {
        !self.bounds.fair
            || self.round(node).contains(&(rider, driver))
            || kind_range(&node.view, Kind::Decisions).any(|r| {
                matches!(r, Record::Decision { claim, transfer: true }
                    if claim.claimant == node.owner && claim.rider == rider && claim.driver == driver)
            })
    }

    fn may_commit(&self, node: &NodeState, rider: Req, driver: Req) -> bool {
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
    fn claim_for(&self, node: &NodeState, rider: Req, driver: Req) -> Option<ClaimKey> {
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

    fn may_claim(&self, node: &NodeState, claim: &ClaimKey) -> bool {
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
    fn may_transfer(&self, node: &NodeState, claim: &ClaimKey) -> bool {
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

    fn undecided(node: &NodeState, claim: &ClaimKey) -> bool {
        !node.view.contains(&Record::Decision {
            claim: *claim,
            transfer: true,
        }) && !node.view.contains(&Record::Decision {
            claim: *claim,
            transfer: false,
        })
    }

    fn may_answer(&self, node: &NodeState, claim: &ClaimKey, transfer: bool) -> bool {
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

    fn link_up(&self, state: &State, from: u8, to: u8) -> bool {
        from != to
            && state.nodes[usize::from(from)].up
            && state.nodes[usize::from(to)].up
            && state.isolated.is_none_or(|i| i != from && i != to)
    }

    /// What `from` would send `to` now: the records `to` lacks and takes.
    fn sendable(&self, state: &State, from: u8, to: u8) -> Vec<Record> {
        self.unsent(state, from, to).copied().collect()
    }

    /// Whether `from` has anything to send `to` (the guards ask this for
    /// every state the checker explores: no list is built).
    fn has_sendable(&self, state: &State, from: u8, to: u8) -> bool {
        self.unsent(state, from, to).next().is_some()
    }

    fn unsent<'a>(
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

    fn expired_enough(&self, state: &State, record: &Record) -> bool {
        match record {
            Record::Request(q) => state.expired[usize::from(*q)],
            other => Self::referents(other)
                .iter()
                .all(|q| state.expired[usize::from(*q)]),
        }
    }

    fn closed(&self, node: &NodeState, dropping: &BTreeSet<Record>, record: &Record) -> bool {
        Self::referents(record).iter().all(|q| {
            let home = Record::Request(*q);
            !node.view.contains(&home) || dropping.contains(&home)
        })
    }

    fn may_drop(&self, state: &State, node: u8, records: &[Record]) -> bool {
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

    /// `node` writes a record into a document of its own. A record written
    /// again (an answer to a claim still held after the first answer's
    /// document was dropped) lands in a new document, which no tombstone
    /// names.
    fn write(&self, state: &mut State, node: u8, record: Record) {
        for n in &mut state.nodes {
            n.tombstones.remove(&record);
        }
        let owner = state.nodes[usize::from(node)].owner;
        if let Record::Commit { rider, driver, .. } = record {
            if !state.commits.insert((rider, driver, owner)) {
                state.rewritten = true;
            }
            state.told.insert((rider, driver, owner));
        }
        state.nodes[usize::from(node)].view.insert(record);
    }

    /// `node` takes what it accepts of `records` from a peer.
    pub(crate) fn merge(&self, state: &mut State, node: u8, records: &[Record]) {
        for record in records {
            let n = &mut state.nodes[usize::from(node)];
            if self.accepts(n, record)
                && n.view.insert(*record)
                && let Record::Commit {
                    rider,
                    driver,
                    writer,
                } = record
            {
                state.told.insert((*rider, *driver, *writer));
            }
        }
    }

    /// Takes the action in place if the model allows it; `false` if not.
    pub(crate) fn step(&self, state: &mut State, action: Action) -> bool {
        if !self.allowed(state, &action) {
            return false;
        }
        self.apply(state, action);
        true
    }

    fn apply(&self, state: &mut State, action: Action) {
        match action {
            Action::Accept(q) => {
                state.accepted[usize::from(q)] = true;
                let home = self.spec(q).home.node;
                state.nodes[usize::from(home)]
                    .view
                    .insert(Record::Request(q));
            }
            Action::Commit {
                node,
                rider,
                driver,
            } => {
                let writer = state.nodes[usize::from(node)].owner;
                self.write(
                    state,
                    node,
                    Record::Commit {
                        writer,
                        rider,
                        driver,
                    },
                );
            }
            Action::Claim { node, claim } => self.write(state, node, Record::Claim(claim)),
            Action::Answer {
                node,
                claim,
                transfer,
            } => self.write(state, node, Record::Decision { claim, transfer }),
            Action::Send { from, to } => {
                let message = self.sendable(state, from, to);
                self.merge(state, to, &message);
            }
            Action::Broadcast(from) => {
                for to in 0..self.n() {
                    if self.link_up(state, from, to) {
                        let message = self.sendable(state, from, to);
                        self.merge(state, to, &message);
                    }
                }
            }
            Action::Crash { node, wipe } => {
                state.crashes_left -= 1;
                let forgetful = self.defect == Defect::ForgetfulRestart;
                let n = &mut state.nodes[usize::from(node)];
                let owner = n.owner;
                if wipe {
                    n.view.clear();
                    n.tombstones.clear();
                } else {
                    let writer = |r: &Record| self.writer(r);
                    n.view.retain(|r| {
                        writer(r) == owner && !(forgetful && matches!(r, Record::Decision { .. }))
                    });
                }
                if wipe {
                    n.owner.lineage += 1;
                }
                n.up = false;
                n.ready = false;
            }
            Action::Restart(node) => {
                let n = &mut state.nodes[usize::from(node)];
                n.up = true;
                n.ready = self.bounds.ready_at_start;
            }
            Action::Ready(node) => state.nodes[usize::from(node)].ready = true,
            Action::Isolate(node) => {
                state.partitions_left -= 1;
                state.isolated = Some(node);
            }
            Action::Heal => state.isolated = None,
            Action::Expire(qs) => {
                for q in qs {
                    state.expired[usize::from(q)] = true;
                }
            }
            Action::Drop { node, records } => self.drop_records(state, node, records),
            Action::Cleanup => {
                for node in 0..self.n() {
                    if state.nodes[usize::from(node)].up {
                        let records = self.droppable(state, node);
                        self.drop_records(state, node, records);
                    }
                }
            }
        }
    }

    fn drop_records(&self, state: &mut State, node: u8, records: Vec<Record>) {
        let n = &mut state.nodes[usize::from(node)];
        for r in records {
            n.view.remove(&r);
            n.tombstones.insert(r);
        }
    }

    fn riders(&self) -> impl Iterator<Item = Req> + '_ {
        (0..self.bounds.requests.len() as Req).filter(|q| self.spec(*q).rider)
    }

    fn drivers(&self) -> impl Iterator<Item = Req> + '_ {
        (0..self.bounds.requests.len() as Req).filter(|q| !self.spec(*q).rider)
    }

    /// Nothing left to send, every link up, every node up, and every
    /// cleanup done: long enough.
    fn quiescent(&self, state: &State) -> bool {
        state.isolated.is_none()
            && (0..self.n()).all(|a| {
                state.nodes[usize::from(a)].up
                    && self.droppable(state, a).is_empty()
                    && (0..self.n()).all(|b| a == b || !self.has_sendable(state, a, b))
            })
    }

    /// The node now writing as `owner`, if that identity is still alive.
    fn node_of<'a>(&self, state: &'a State, owner: Owner) -> Option<&'a NodeState> {
        state.nodes.iter().find(|n| n.owner == owner)
    }

    /// A short name for a rider or driver: r0, r1, ..., d0, d1, ...
    pub(crate) fn name(&self, q: Req) -> String {
        let spec = self.spec(q);
        let rank = (0..q).filter(|p| self.spec(*p).rider == spec.rider).count();
        format!("{}{rank}", if spec.rider { 'r' } else { 'd' })
    }

    fn claim_text(&self, k: &ClaimKey) -> String {
        let again = if k.attempt > 0 { " (again)" } else { "" };
        format!(
            "{}'s claim on {} for {} (hand-over {}, asking {}){again}",
            k.claimant,
            self.name(k.driver),
            self.name(k.rider),
            k.generation,
            k.owner
        )
    }

    pub(crate) fn record_text(&self, r: &Record) -> String {
        match r {
            Record::Request(q) => self.name(*q),
            Record::Claim(k) => self.claim_text(k),
            Record::Decision { claim, transfer } => format!(
                "{}'s {} of {}",
                claim.owner,
                if *transfer { "transfer" } else { "refusal" },
                self.claim_text(claim)
            ),
            Record::Commit {
                writer,
                rider,
                driver,
            } => format!(
                "{writer}'s commit {}+{}",
                self.name(*rider),
                self.name(*driver)
            ),
        }
    }

    /// One step of a trace, in words.
    pub(crate) fn describe(&self, state: &State, action: &Action) -> String {
        let owner = |i: &u8| state.nodes[usize::from(*i)].owner;
        match action {
            Action::Accept(q) => format!("{} accepts {}", self.spec(*q).home, self.name(*q)),
            Action::Commit {
                node,
                rider,
                driver,
            } => format!(
                "{} commits {} with {}",
                owner(node),
                self.name(*rider),
                self.name(*driver)
            ),
            Action::Claim { node, claim } => {
                format!("{} writes {}", owner(node), self.claim_text(claim))
            }
            Action::Answer {
                node,
                claim,
                transfer,
            } => format!(
                "{} {} {}",
                owner(node),
                if *transfer {
                    "transfers, answering"
                } else {
                    "refuses"
                },
                self.claim_text(claim)
            ),
            Action::Send { from, to } => {
                let records: Vec<String> = self
                    .sendable(state, *from, *to)
                    .iter()
                    .map(|r| self.record_text(r))
                    .collect();
                format!(
                    "{} sends {} [{}]",
                    owner(from),
                    owner(to),
                    records.join(", ")
                )
            }
            Action::Broadcast(from) => {
                let sent: Vec<String> = (0..self.n())
                    .filter(|to| self.link_up(state, *from, *to))
                    .map(|to| {
                        let records: Vec<String> = self
                            .sendable(state, *from, to)
                            .iter()
                            .map(|r| self.record_text(r))
                            .collect();
                        format!("{} [{}]", owner(&to), records.join(", "))
                    })
                    .collect();
                format!("{} sends {}", owner(from), sent.join(", "))
            }
            Action::Crash { node, wipe } => format!(
                "{} crashes{}",
                owner(node),
                if *wipe {
                    " and loses its disk (it comes back as a new owner)"
                } else if self.defect == Defect::ForgetfulRestart {
                    " (its journal keeps its requests, not its answers)"
                } else {
                    " (its journal is kept)"
                }
            ),
            Action::Restart(node) => format!("n{node} restarts"),
            Action::Ready(node) => format!("{} is ready", owner(node)),
            Action::Isolate(node) => format!("{} is cut off from every peer", owner(node)),
            Action::Heal => "every link is up again".into(),
            Action::Expire(qs) => {
                let names: Vec<String> = qs.iter().map(|q| self.name(*q)).collect();
                format!("{} expire", names.join(", "))
            }
            Action::Drop { node, records } => {
                let records: Vec<String> = records.iter().map(|r| self.record_text(r)).collect();
                format!("{} drops [{}]", owner(node), records.join(", "))
            }
            Action::Cleanup => {
                let drops: Vec<String> = (0..self.n())
                    .filter(|i| state.nodes[usize::from(*i)].up)
                    .map(|i| format!("{} {}", owner(&i), self.droppable(state, i).len()))
                    .collect();
                format!("cleanup drops records at {}", drops.join(", "))
            }
        }
    }
}

impl Model for ProtocolModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let requests = self.bounds.requests.len();
        let mut nodes: Vec<NodeState> = (0..self.n())
            .map(|node| NodeState {
                owner: Owner { node, lineage: 0 },
                up: true,
                ready: self.bounds.ready_at_start,
                view: BTreeSet::new(),
                tombstones: BTreeSet::new(),
            })
            .collect();
        if self.bounds.accepted_at_start {
            for node in &mut nodes {
                node.view = (0..requests as Req).map(Record::Request).collect();
            }
        }
        vec![State {
            nodes,
            isolated: None,
            accepted: vec![self.bounds.accepted_at_start; requests],
            expired: vec![false; requests],
            crashes_left: if self.bounds.fair {
                0
            } else {
                self.bounds.crashes
            },
            partitions_left: if self.bounds.fair {
                0
            } else {
                self.bounds.partitions
            },
            commits: BTreeSet::new(),
            rewritten: false,
            told: BTreeSet::new(),
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        let mut candidates = Vec::new();
        for q in 0..self.bounds.requests.len() as Req {
            candidates.push(Action::Accept(q));
        }
        for (i, node) in state.nodes.iter().enumerate() {
            let i = i as u8;
            for rider in self.riders() {
                for driver in self.drivers() {
                    candidates.push(Action::Commit {
                        node: i,
                        rider,
                        driver,
                    });
                    if let Some(claim) = self.claim_for(node, rider, driver) {
                        candidates.push(Action::Claim { node: i, claim });
                    }
                }
            }
            for record in &node.view {
                if let Record::Claim(claim) = record {
                    for transfer in [true, false] {
                        candidates.push(Action::Answer {
                            node: i,
                            claim: *claim,
                            transfer,
                        });
                    }
                }
            }
            if !self.bounds.cleanup_together {
                let records = self.droppable(state, i);
                if !records.is_empty() {
                    candidates.push(Action::Drop { node: i, records });
                }
            }
        }
        for from in 0..self.n() {
            if self.bounds.broadcast {
                candidates.push(Action::Broadcast(from));
                continue;
            }
            for to in 0..self.n() {
                if from != to {
                    candidates.push(Action::Send { from, to });
                }
            }
        }
        for node in 0..self.n() {
            for wipe in [false, true] {
                candidates.push(Action::Crash { node, wipe });
            }
            candidates.push(Action::Restart(node));
            candidates.push(Action::Ready(node));
            candidates.push(Action::Isolate(node));
        }
        candidates.push(Action::Heal);
        if self.bounds.cleanup_together {
            candidates.push(Action::Cleanup);
        }
        // Requests accepted together expire together.
        let unexpired: Vec<Req> = (0..self.bounds.requests.len() as Req)
            .filter(|q| !state.expired[usize::from(*q)])
            .collect();
        if !unexpired.is_empty() {
            candidates.push(Action::Expire(unexpired));
        }
        actions.extend(candidates.into_iter().filter(|a| self.allowed(state, a)));
    }

    fn next_state(&self, state: &State, action: Action) -> Option<State> {
        let mut next = state.clone();
        self.step(&mut next, action).then_some(next)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut properties = vec![
            Property::always(NO_DOUBLE_COMMIT, |_: &Self, s: &State| no_double_commit(s)),
            Property::always(TOLD_BACKED, |m: &Self, s: &State| m.told_backed(s)),
            Property::always(ACKED_KEPT, |m: &Self, s: &State| m.acked_kept(s)),
            Property::always(CONVERGED, |m: &Self, s: &State| {
                !m.quiescent(s) || views_equal(s)
            }),
            Property::sometimes(HANDED_OVER, |m: &Self, s: &State| {
                s.commits
                    .iter()
                    .any(|(_, d, writer)| *writer != m.spec(*d).home)
            }),
        ];
        if self.bounds.fair {
            properties.push(Property::eventually(LIVE, |m: &Self, s: &State| {
                m.riders()
                    .all(|r| s.commits.iter().any(|(rider, _, _)| *rider == r))
            }));
        }
        properties
    }
}

/// No rider and no driver in two commit records (nor one written twice).
pub(crate) fn no_double_commit(state: &State) -> bool {
    let riders: BTreeSet<Req> = state.commits.iter().map(|c| c.0).collect();
    let drivers: BTreeSet<Req> = state.commits.iter().map(|c| c.1).collect();
    !state.rewritten && riders.len() == state.commits.len() && drivers.len() == state.commits.len()
}

fn views_equal(state: &State) -> bool {
    state.nodes.windows(2).all(|w| w[0].view == w[1].view)
}

impl ProtocolModel {
    /// Every match told has no rival commit, and while its rider is
    /// unexpired, its writer (if that identity lives) still holds it.
    pub(crate) fn told_backed(&self, state: &State) -> bool {
        state.told.iter().all(|(r, d, writer)| {
            let rivals = state
                .commits
                .iter()
                .any(|(r2, d2, w2)| (r2 == r || d2 == d) && (r2, d2, w2) != (r, d, writer));
            let kept = state.expired[usize::from(*r)]
                || self.node_of(state, *writer).is_none_or(|n| {
                    n.view.contains(&Record::Commit {
                        writer: *writer,
                        rider: *r,
                        driver: *d,
                    })
                });
            !rivals && kept
        })
    }

    /// Until it expires, an accepted request is held by its owner (crashed
    /// or not) while that owner identity lives.
    pub(crate) fn acked_kept(&self, state: &State) -> bool {
        (0..self.bounds.requests.len()).all(|q| {
            !state.accepted[q]
                || state.expired[q]
                || self
                    .node_of(state, self.bounds.requests[q].home)
                    .is_none_or(|n| n.view.contains(&Record::Request(q as Req)))
        })
    }
}
