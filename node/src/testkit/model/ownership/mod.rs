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

mod describe;
mod rules;
mod transitions;

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
