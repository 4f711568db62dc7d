//! Words for states and actions, for counterexamples and conformance
//! failures.

use super::*;

impl ProtocolModel {
    /// A short name for a rider or driver: r0, r1, ..., d0, d1, ...
    pub(crate) fn name(&self, q: Req) -> String {
        let spec = self.spec(q);
        let rank = (0..q).filter(|p| self.spec(*p).rider == spec.rider).count();
        format!("{}{rank}", if spec.rider { 'r' } else { 'd' })
    }

    pub(super) fn claim_text(&self, k: &ClaimKey) -> String {
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
