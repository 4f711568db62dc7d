//! What the simulation checks its runs with: every commit any node
//! absorbed, what clients were told and what was acknowledged.

use super::*;

/// One accepted (answered 202) request.
#[derive(Debug, Clone)]
pub(super) struct Acked {
    pub(super) node: usize,
    pub(super) owner: NodeId,
    /// On the owner's clock.
    pub(super) expires_at: Millis,
    /// The regions it replicates to: nodes of others never hear of it.
    pub(super) scope: Scope,
}

/// The invariants, over raw records and what clients were told; the
/// rules themselves are [`ride_types::history`]'s, shared with `bot check`.
#[derive(Default)]
pub(super) struct Checker {
    /// Every commit record any node absorbed, by the document holding it.
    pub(super) commits: BTreeMap<(RequestId, DocId), CommitRecord>,
    /// What any client was told: rider → driver, and driver → rider.
    pub(super) told: Told<RequestId>,
    pub(super) acked: HashMap<RequestId, Acked>,
    pub(super) violations: Vec<String>,
}

/// Whether every node (none down) is ready and in step with every other on
/// what they share ([`ride_types::convergence::in_step`]).
pub(super) fn ready_and_in_step(states: &[Option<(&str, Snapshot)>]) -> bool {
    let Some(states) = states
        .iter()
        .map(|s| s.as_ref().filter(|(_, s)| s.ready))
        .collect::<Option<Vec<_>>>()
    else {
        return false;
    };
    let nodes: Vec<(&str, &BTreeMap<String, u64>)> =
        states.iter().map(|(r, s)| (*r, &s.digests)).collect();
    all_in_step(&nodes)
}

/// A node's word on a request, as the history rules name it.
pub(super) fn fate(status: &Status) -> Fate {
    match status {
        Status::Pending => Fate::Pending,
        Status::Matched(_) => Fate::Matched,
        Status::Over => Fate::Expired,
        Status::Unknown => Fate::Unknown,
    }
}

impl Checker {
    pub(super) fn observe(&mut self, records: Vec<(DocId, Record)>) {
        for (doc, record) in records {
            if let Record::Commit(c) = record {
                self.commits.entry((c.rider, doc)).or_insert(c);
            }
        }
    }

    pub(super) fn told(&mut self, node: usize, rider: RequestId, driver: RequestId) {
        for r in self.told.record(rider, driver) {
            self.violations.push(format!(
                "node {node} told {} {} of {} after {}",
                r.role, r.id, r.now, r.before
            ));
        }
    }

    /// No rider or driver in two commit records, and every notification
    /// backed by a commit record for that very pair.
    pub(super) fn check_commits(&mut self) {
        let commits: Commits<RequestId, DocId> = self
            .commits
            .iter()
            .map(|((rider, doc), c)| (doc.clone(), *rider, c.driver))
            .collect();
        for double in commits.doubles() {
            self.violations.push(format!(
                "{} {} is in {} commit records: {:?}",
                double.role,
                double.id,
                double.commits.len(),
                double.commits
            ));
        }
        for u in commits.unbacked(self.told.matches()) {
            self.violations.push(format!(
                "rider {} was told of driver {} without a commit of that pair",
                u.rider, u.driver
            ));
        }
    }
}
