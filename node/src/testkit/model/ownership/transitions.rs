//! What an action does to the state: writes, merges, crashes, restarts,
//! links and drops.

use super::*;

impl ProtocolModel {
    /// `node` writes a record into a document of its own. A record written
    /// again (an answer to a claim still held after the first answer's
    /// document was dropped) lands in a new document, which no tombstone
    /// names.
    pub(super) fn write(&self, state: &mut State, node: u8, record: Record) {
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

    pub(super) fn apply(&self, state: &mut State, action: Action) {
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

    pub(super) fn drop_records(&self, state: &mut State, node: u8, records: Vec<Record>) {
        let n = &mut state.nodes[usize::from(node)];
        for r in records {
            n.view.remove(&r);
            n.tombstones.insert(r);
        }
    }

    pub(super) fn riders(&self) -> impl Iterator<Item = Req> + '_ {
        (0..self.bounds.requests.len() as Req).filter(|q| self.spec(*q).rider)
    }

    pub(super) fn drivers(&self) -> impl Iterator<Item = Req> + '_ {
        (0..self.bounds.requests.len() as Req).filter(|q| !self.spec(*q).rider)
    }

    /// Nothing left to send, every link up, every node up, and every
    /// cleanup done: long enough.
    pub(super) fn quiescent(&self, state: &State) -> bool {
        state.isolated.is_none()
            && (0..self.n()).all(|a| {
                state.nodes[usize::from(a)].up
                    && self.droppable(state, a).is_empty()
                    && (0..self.n()).all(|b| a == b || !self.has_sendable(state, a, b))
            })
    }

    /// The node now writing as `owner`, if that identity is still alive.
    pub(super) fn node_of<'a>(&self, state: &'a State, owner: Owner) -> Option<&'a NodeState> {
        state.nodes.iter().find(|n| n.owner == owner)
    }
}
