//! Conformance: the shipped core must only take steps the model allows.
//! The deterministic simulation records what each real `Node` did (its
//! own writes, what it absorbed from which peer, crashes, restarts,
//! readiness, dropped documents: [`TraceEvent`]) and each step is replayed
//! against the model's transition relation ([`ProtocolModel::step`]). Every
//! seed the simulation runs in CI is replayed
//! (`invariants_hold_for_hundreds_of_seeds`).
//!
//! How real steps map onto the model's:
//! - an own rider or driver record is `Accept`, an own claim `Claim`, an own
//!   decision `Answer`, an own commit `Commit`, each with the model's guard
//!   (the claimant owns the rider, names the driver's owner and hand-over
//!   its view shows; only that owner answers, and transfers only a driver it
//!   owns at that hand-over and has not seen committed; a commit needs both
//!   sides owned and uncommitted; nothing is decided before readiness);
//! - a record absorbed from a peer must be one that a peer it heard from
//!   since it started had ever held (automerge holds back a change until
//!   the changes it builds on arrive, so a message from one peer can
//!   complete a change another peer sent), and one the receiver takes
//!   (never its own, never one it dropped; the model's tombstones name
//!   records, the node's name documents, so a record written again into a
//!   new document is let through);
//! - a crash keeps exactly the node's own records, unless the disk is
//!   wiped; a restart loads exactly them and writes as the same owner, or
//!   as a new owner after a wipe (a request answered 202 that no document
//!   held yet is read back from the journal's intake and written after the
//!   restart: an `Accept` then, like any new request);
//! - a dropped document's records must be droppable together: the rule
//!   about riders and drivers still held is checked; their expiry is taken
//!   as given (the replay marks them expired when they are dropped, since
//!   the model has no clock).
//!
//! Not covered: message contents and order on a link (automerge's sync
//! messages are not decoded; a received record is checked against
//! everything the peers it heard from held), partitions (they only lose messages), the
//! claims' deadlines and the requests' expiry times (clock checks that the
//! model leaves free), and the convergence property (the replay never
//! waits for quiescence; the simulation checks it itself). The safety
//! properties other than convergence are evaluated on the replayed states.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use stateright::Model;

use super::ownership::{
    Action, Bounds, ClaimKey, Defect, Owner, ProtocolModel, Record, Req, RequestSpec, State,
    no_double_commit,
};
use crate::protocol::documents::DocId;
use crate::protocol::record::{ClaimId, Record as Shipped};
use crate::testkit::trace::TraceEvent;
use ride_types::ids::{NodeId, RequestId};

/// What kind of steps a replay took, to show the traces exercise the
/// protocol.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Covered {
    pub(crate) steps: usize,
    pub(crate) claims: usize,
    pub(crate) transfers: usize,
    pub(crate) commits: usize,
    pub(crate) received: usize,
    pub(crate) restarts: usize,
    pub(crate) drops: usize,
}

impl Covered {
    pub(crate) fn add(&mut self, other: &Covered) {
        self.steps += other.steps;
        self.claims += other.claims;
        self.transfers += other.transfers;
        self.commits += other.commits;
        self.received += other.received;
        self.restarts += other.restarts;
        self.drops += other.drops;
    }
}

struct Replay {
    model: ProtocolModel,
    state: State,
    owners: HashMap<NodeId, Owner>,
    requests: HashMap<RequestId, Req>,
    claims: HashMap<ClaimId, ClaimKey>,
    attempts: HashMap<(Owner, Req, Req, u8, Owner), u8>,
    /// Per node, every record it ever held (a change it sent before a crash
    /// may still complete one at a peer).
    ever_held: Vec<BTreeSet<Record>>,
    /// Per node, the peers it received messages from since it started.
    heard_from: Vec<BTreeSet<usize>>,
    /// Per node, the records it absorbed from each document it holds.
    docs: Vec<BTreeMap<DocId, Vec<Record>>>,
    /// Per node, the document each dropped record was dropped with.
    dropped_from: Vec<HashMap<Record, DocId>>,
    booted: Vec<bool>,
    covered: Covered,
}

impl Replay {
    /// The model of the run: its nodes, its owner identities (numbered per
    /// node in the order they appear) and every request any node accepted.
    fn new(trace: &[TraceEvent]) -> Self {
        let mut owners: HashMap<NodeId, Owner> = HashMap::new();
        let mut lineages: BTreeMap<usize, u8> = BTreeMap::new();
        let mut specs = Vec::new();
        let mut requests = HashMap::new();
        let mut nodes = 0;
        for event in trace {
            let (node, records) = match event {
                TraceEvent::Boot {
                    node,
                    owner,
                    loaded,
                } => {
                    if !owners.contains_key(owner) {
                        let lineage = lineages.entry(*node).or_default();
                        let id = Owner {
                            node: u8::try_from(*node).expect("few nodes"),
                            lineage: *lineage,
                        };
                        *lineage += 1;
                        owners.insert(owner.clone(), id);
                    }
                    (*node, loaded)
                }
                TraceEvent::Absorbed { node, records, .. } => (*node, records),
                _ => continue,
            };
            nodes = nodes.max(node + 1);
            for (doc, record) in records {
                let Some(request) = record.request() else {
                    continue;
                };
                requests.entry(request.id).or_insert_with(|| {
                    specs.push(RequestSpec {
                        home: owners[&doc.owner],
                        rider: request.rider,
                    });
                    Req::try_from(specs.len() - 1).expect("fewer than 65,536 requests")
                });
            }
        }
        let model = ProtocolModel {
            bounds: Bounds {
                nodes: u8::try_from(nodes).expect("few nodes"),
                requests: specs,
                accepted_at_start: false,
                ready_at_start: false,
                crashes: u8::MAX,
                partitions: 0,
                max_generation: u8::MAX,
                max_attempts: u8::MAX,
                broadcast: false,
                cleanup_together: false,
                fair: false,
            },
            defect: Defect::None,
        };
        let state = model.init_states().remove(0);
        Self {
            model,
            state,
            owners,
            requests,
            claims: HashMap::new(),
            attempts: HashMap::new(),
            ever_held: vec![BTreeSet::new(); nodes],
            heard_from: vec![BTreeSet::new(); nodes],
            docs: vec![BTreeMap::new(); nodes],
            dropped_from: vec![HashMap::new(); nodes],
            booted: vec![false; nodes],
            covered: Covered::default(),
        }
    }

    fn owner(&self, id: &NodeId) -> Result<Owner, String> {
        self.owners
            .get(id)
            .copied()
            .ok_or_else(|| format!("a record of {id}, who never started"))
    }

    fn req(&self, id: &RequestId) -> Result<Req, String> {
        self.requests
            .get(id)
            .copied()
            .ok_or_else(|| format!("request {id} was never accepted"))
    }

    /// The model's record for a real one (claims are numbered as they
    /// first appear, which is when their claimant writes them).
    fn record(&mut self, doc: &DocId, record: &Shipped) -> Result<Record, String> {
        Ok(match record {
            Shipped::Rider(r) => Record::Request(self.req(&r.id)?),
            Shipped::Driver(d) => Record::Request(self.req(&d.id)?),
            Shipped::Claim(c) => {
                if let Some(key) = self.claims.get(&c.id) {
                    return Ok(Record::Claim(*key));
                }
                let claimant = self.owner(&doc.owner)?;
                let (rider, driver) = (self.req(&c.rider)?, self.req(&c.driver)?);
                let generation = u8::try_from(c.generation).map_err(|e| e.to_string())?;
                let owner = self.owner(&c.driver_owner)?;
                let attempt = self
                    .attempts
                    .entry((claimant, rider, driver, generation, owner))
                    .or_default();
                let key = ClaimKey {
                    claimant,
                    rider,
                    driver,
                    generation,
                    owner,
                    attempt: *attempt,
                };
                *attempt += 1;
                self.claims.insert(c.id, key);
                Record::Claim(key)
            }
            Shipped::Decision(x) => Record::Decision {
                claim: *self
                    .claims
                    .get(&x.claim)
                    .ok_or("a decision on a claim never written")?,
                transfer: x.transfer,
            },
            Shipped::Commit(m) => Record::Commit {
                writer: self.owner(&doc.owner)?,
                rider: self.req(&m.rider)?,
                driver: self.req(&m.driver)?,
            },
        })
    }

    fn take(&mut self, action: Action) -> Result<(), String> {
        // A step the model refuses leaves the state as it was, so it is
        // described only then (most steps are allowed).
        if !self.model.step(&mut self.state, action.clone()) {
            let text = self.model.describe(&self.state, &action);
            return Err(format!("the model does not allow: {text}"));
        }
        self.covered.steps += 1;
        Ok(())
    }

    /// The model's safety properties (but convergence) on the state now.
    fn check_safety(&self) -> Result<(), String> {
        if !no_double_commit(&self.state) {
            return Err("a rider or driver in two commits".into());
        }
        if !self.model.told_backed(&self.state) {
            return Err("a notification without a commit that survives".into());
        }
        if !self.model.acked_kept(&self.state) {
            return Err("an acknowledged request lost before it expired".into());
        }
        Ok(())
    }

    fn event(&mut self, event: &TraceEvent) -> Result<(), String> {
        match event {
            TraceEvent::Boot {
                node,
                owner,
                loaded,
            } => {
                let i = u8::try_from(*node).expect("few nodes");
                let owner = self.owner(owner)?;
                if self.booted[*node] {
                    self.take(Action::Restart(i))?;
                    self.covered.restarts += 1;
                }
                self.booted[*node] = true;
                let n = &self.state.nodes[*node];
                if n.owner != owner {
                    return Err(format!(
                        "n{node} restarted as {owner}, the model says {}",
                        n.owner
                    ));
                }
                let mut held = BTreeSet::new();
                self.docs[*node].clear();
                for (doc, record) in loaded {
                    let record = self.record(doc, record)?;
                    held.insert(record);
                    self.docs[*node]
                        .entry(doc.clone())
                        .or_default()
                        .push(record);
                }
                let n = &self.state.nodes[*node];
                if held != n.view {
                    return Err(format!(
                        "{owner} loaded {} records, its journal should hold {}",
                        held.len(),
                        n.view.len()
                    ));
                }
                self.ever_held[*node].extend(held);
                self.heard_from[*node].clear();
                self.check_safety()
            }
            TraceEvent::Crash { node, wipe } => {
                self.take(Action::Crash {
                    node: u8::try_from(*node).expect("few nodes"),
                    wipe: *wipe,
                })?;
                self.check_safety()
            }
            TraceEvent::Absorbed {
                node,
                from,
                records,
            } => {
                // Every message counts, also one that brought nothing yet:
                // it may carry a change held back for one it builds on.
                if let Some(from) = from {
                    self.heard_from[*node].insert(*from);
                }
                for (doc, record) in records {
                    self.absorbed(*node, *from, doc, record)?;
                }
                Ok(())
            }
            TraceEvent::Ready { node } => {
                self.take(Action::Ready(u8::try_from(*node).expect("few nodes")))
            }
            TraceEvent::Dropped { node, docs } => {
                // A record can sit in two documents (an answer written again
                // after its first document was dropped): it leaves the view
                // with the last of them.
                let mut records = BTreeSet::new();
                for doc in docs {
                    let held = self.docs[*node].remove(doc).unwrap_or_default();
                    for record in &held {
                        self.dropped_from[*node].insert(*record, doc.clone());
                    }
                    records.extend(held);
                }
                let view = &self.state.nodes[*node].view;
                let still: BTreeSet<Record> =
                    self.docs[*node].values().flatten().copied().collect();
                records.retain(|r| view.contains(r) && !still.contains(r));
                if records.is_empty() {
                    return Ok(());
                }
                let mut referents = BTreeSet::new();
                for record in &records {
                    referents.extend(ProtocolModel::referents(record));
                    if let Record::Request(q) = record {
                        referents.insert(*q);
                    }
                }
                let unexpired: Vec<Req> = referents
                    .into_iter()
                    .filter(|q| !self.state.expired[usize::from(*q)])
                    .collect();
                if !unexpired.is_empty() {
                    self.take(Action::Expire(unexpired))?;
                }
                self.covered.drops += 1;
                let view = &self.state.nodes[*node].view;
                let blockers: Vec<String> = records
                    .iter()
                    .filter(|r| {
                        !view.contains(r)
                            || ProtocolModel::referents(r).iter().any(|q| {
                                let home = Record::Request(*q);
                                view.contains(&home) && !records.contains(&home)
                            })
                    })
                    .map(|r| format!("{} (held: {})", self.model.record_text(r), view.contains(r)))
                    .collect();
                if !blockers.is_empty() {
                    return Err(format!(
                        "n{node} dropped what the model keeps: {blockers:?}"
                    ));
                }
                self.take(Action::Drop {
                    node: u8::try_from(*node).expect("few nodes"),
                    records: records.into_iter().collect(),
                })?;
                self.check_safety()
            }
        }
    }

    fn absorbed(
        &mut self,
        node: usize,
        from: Option<usize>,
        doc: &DocId,
        real: &Shipped,
    ) -> Result<(), String> {
        let record = self.record(doc, real)?;
        let i = u8::try_from(node).expect("few nodes");
        let me = self.state.nodes[node].owner;
        if self.owner(&doc.owner)? == me {
            let action = match record {
                Record::Request(q) => Action::Accept(q),
                Record::Claim(claim) => {
                    self.covered.claims += 1;
                    Action::Claim { node: i, claim }
                }
                Record::Decision { claim, transfer } => {
                    self.covered.transfers += usize::from(transfer);
                    Action::Answer {
                        node: i,
                        claim,
                        transfer,
                    }
                }
                Record::Commit { rider, driver, .. } => {
                    self.covered.commits += 1;
                    Action::Commit {
                        node: i,
                        rider,
                        driver,
                    }
                }
            };
            self.take(action)?;
        } else {
            let text = self.model.record_text(&record);
            let Some(from) = from else {
                return Err(format!("{me} absorbed {text} from no message"));
            };
            // automerge holds back a change until the changes it builds on
            // arrive, so a message can complete one an earlier message (from
            // another peer) brought.
            if !self.heard_from[node]
                .iter()
                .any(|peer| self.ever_held[*peer].contains(&record))
            {
                return Err(format!(
                    "{me} received {text} from n{from}, and no peer it heard from held it"
                ));
            }
            // Tombstones name documents: the same record in another
            // document (written again) is a new copy, not a resurrection.
            if self.dropped_from[node]
                .get(&record)
                .is_some_and(|d| d != doc)
            {
                self.state.nodes[node].tombstones.remove(&record);
            }
            if !self.model.accepts(&self.state.nodes[node], &record) {
                return Err(format!("{me} took {text}, which it must refuse"));
            }
            self.model.merge(&mut self.state, i, &[record]);
            self.covered.received += 1;
            self.covered.steps += 1;
        }
        self.ever_held[node].insert(record);
        self.docs[node].entry(doc.clone()).or_default().push(record);
        Ok(())
    }
}

/// Replays a run's trace; the first step the model does not allow, with
/// where.
pub(crate) fn replay(trace: &[TraceEvent]) -> Result<Covered, String> {
    let mut replay = Replay::new(trace);
    for (at, event) in trace.iter().enumerate() {
        replay
            .event(event)
            .map_err(|e| format!("event {at} of {} ({event:?}): {e}", trace.len()))?;
    }
    replay.check_safety()?;
    Ok(replay.covered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::record::RiderRecord;
    use ride_types::api::Position;
    use ride_types::clock::Millis;
    use ride_types::halo::Scope;

    /// n2 writes a rider; n0 hears from n2 (a message whose change automerge
    /// holds back) and from n1, whose message completes it.
    fn relayed(n0_heard_from_n2: bool) -> Vec<TraceEvent> {
        let owner = |i: usize| NodeId(format!("region-{i}@{i}"));
        let doc = DocId {
            owner: owner(2),
            epoch: 1,
            scope: Scope::of([0, 1, 2]),
        };
        let here = Position {
            lat: 23.8,
            lon: 90.4,
        };
        let rider = Shipped::Rider(RiderRecord {
            id: RequestId::generate(),
            name: "rider".into(),
            position: here,
            destination: here,
            accepted_at: Millis(0),
            expires_at: Millis(5_000),
        });
        let mut trace: Vec<TraceEvent> = (0..3)
            .map(|node| TraceEvent::Boot {
                node,
                owner: owner(node),
                loaded: Vec::new(),
            })
            .collect();
        trace.push(TraceEvent::Absorbed {
            node: 2,
            from: None,
            records: vec![(doc.clone(), rider.clone())],
        });
        if n0_heard_from_n2 {
            trace.push(TraceEvent::Absorbed {
                node: 0,
                from: Some(2),
                records: Vec::new(),
            });
        }
        trace.push(TraceEvent::Absorbed {
            node: 0,
            from: Some(1),
            records: vec![(doc, rider)],
        });
        trace
    }

    #[test]
    fn a_change_completed_by_another_peer_counts_the_message_that_brought_it() {
        replay(&relayed(true)).expect("n2's own message brought the change");
        let refused = replay(&relayed(false)).expect_err("nobody n0 heard from held it");
        assert!(
            refused.contains("no peer it heard from held it"),
            "{refused}"
        );
    }
}
