//! `bot check check`: the whole chaos run against the rules of
//! [`ride_types::history`].
//!
//! [`run`] gathers (a last snapshot, every node's state and counters, the
//! bot's record and summary, the script's logs); [`assess`] judges, without
//! any I/O, so that recorded runs can be judged in tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use reqwest::Url;
use ride_types::api::{DebugState, MatchNotice, ServerMessage};
use ride_types::history::{Commits, Double, Role, Tally, Told};
use ride_types::regions::Regions;
use serde::Deserialize;
use uuid::Uuid;

use super::converge::Convergence;
use super::nodes::{NodeUrl, Nodes, accepted_by_kind, adopted_by_region, converged, parse_node};
use super::report::{Held, Report};
use super::store::{self, Store};
use super::{CheckError, read_json, read_jsonl};
use crate::discover::mesh_endpoints;
use crate::endpoint::parse_endpoint;
use crate::record::Line;
use crate::summary::{MatchSummary, SimulationFigures};

/// How long a node may take to answer `/debug/state` for the last look.
const STATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// How many more looks at the final state, and how far apart.
const LAST_LOOKS: usize = 10;
const LAST_LOOK_GAP: std::time::Duration = std::time::Duration::from_millis(500);

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The nodes' operator listeners, as ID=URL.
    #[arg(required = true, value_name = "ID=URL", value_parser = parse_node)]
    nodes: Vec<NodeUrl>,
    /// The snapshot store (`bot check snapshot`).
    #[arg(long, value_name = "FILE")]
    store: PathBuf,
    /// The bot's `--record`: every match notice it was told.
    #[arg(long, value_name = "FILE")]
    record: PathBuf,
    /// The bot's `--summary-json`.
    #[arg(long, value_name = "FILE")]
    bot_summary: PathBuf,
    /// The convergence log (`bot check converge`).
    #[arg(long, value_name = "FILE")]
    convergence: PathBuf,
    /// The partition log the script writes.
    #[arg(long, value_name = "FILE")]
    partitions: PathBuf,
    /// The region files, to tell which region's socket told the bot.
    #[arg(long, value_name = "DIR", default_value = "regions")]
    regions: PathBuf,
    /// Longest allowed time from the last heal to one digest everywhere.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    limit: f64,
    /// Nodes restarted during the run: their counters started again.
    #[arg(long, value_name = "ID", num_args = 0..)]
    restarted: Vec<String>,
}

/// One line of the partition log, as `scripts/chaos.sh` writes it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Partition {
    pub label: String,
    /// `iptables`, `relay` or `kill -9`.
    pub method: String,
    /// Epoch seconds.
    pub start: f64,
    pub end: f64,
}

/// Everything the check judges.
#[derive(Debug)]
pub struct Inputs {
    /// Node ids, in command-line order, with their last answers.
    pub nodes: Vec<String>,
    pub states: Vec<Option<DebugState>>,
    pub metrics: Vec<Option<String>>,
    pub store: Store,
    /// Where the bot's summary was looked for, and what it held.
    pub summary_path: PathBuf,
    pub summary: Option<SimulationFigures>,
    pub told: Vec<Line<'static>>,
    pub convergence: Vec<Convergence>,
    pub partitions: Vec<Partition>,
    /// Each region's mesh HTTP endpoint, as (region id, URL).
    pub endpoints: Vec<(String, Url)>,
    pub limit: f64,
    pub restarted: Vec<String>,
}

pub async fn run(args: CheckArgs) -> Result<bool, CheckError> {
    let regions = Regions::load_dir(&args.regions)?;
    let endpoints = mesh_endpoints(&regions)?;
    let nodes = Nodes::new(args.nodes)?;
    // A last look at every node, all at once. Nodes drop old documents
    // each at its own step, up to a step apart, so a look that falls in
    // such a gap is taken again, a few times, before it counts.
    let store = store::snapshot(&nodes, &args.store).await?;
    let (mut states, metrics) = tokio::join!(nodes.states(STATE_TIMEOUT), nodes.metrics());
    for _ in 0..LAST_LOOKS {
        if converged(&states) {
            break;
        }
        tokio::time::sleep(LAST_LOOK_GAP).await;
        states = nodes.states(STATE_TIMEOUT).await;
    }
    let inputs = Inputs {
        nodes: nodes.ids().map(str::to_owned).collect(),
        states,
        metrics,
        store,
        summary: read_json(&args.bot_summary)?,
        summary_path: args.bot_summary,
        told: read_jsonl(&args.record)?,
        convergence: read_jsonl(&args.convergence)?,
        partitions: read_jsonl(&args.partitions)?,
        endpoints,
        limit: args.limit,
        restarted: args.restarted,
    };
    let report = assess(&inputs);
    print!("{report}");
    Ok(report.violations.is_empty())
}

/// Judges a run: the report, with every violation found.
pub fn assess(inputs: &Inputs) -> Report {
    let mut violations = Vec::new();
    let union = check_commits(inputs, &mut violations);
    let told = check_told(&inputs.told, &union, &mut violations);
    check_convergence(inputs, &mut violations);
    let live: Vec<&DebugState> = inputs.states.iter().flatten().collect();
    let pending = check_pending(&live, &mut violations);
    let (accounting, notes) = check_accounting(
        inputs,
        union.count() as u64,
        pending.unwrap_or((0, 0)),
        told.len() as u64,
        &mut violations,
    );
    let mut cross = BTreeMap::new();
    for notices in told.values() {
        let home = &notices[0].1.region;
        let others: BTreeSet<&str> = notices
            .iter()
            .filter_map(|(endpoint, _)| region_of(endpoint, &inputs.endpoints))
            .filter(|region| region != home)
            .collect();
        for other in others {
            *cross.entry((home.clone(), other.to_owned())).or_default() += 1;
        }
    }
    let heals: BTreeMap<&str, &Convergence> = inputs
        .convergence
        .iter()
        .map(|c| (c.label.as_str(), c))
        .collect();
    Report {
        method: inputs.partitions.first().map(|p| p.method.clone()),
        partitions: inputs
            .partitions
            .iter()
            .map(|p| Held {
                label: p.label.clone(),
                secs: p.end - p.start,
                after: heals
                    .get(format!("heal {}", p.label).as_str())
                    .or_else(|| heals.get(p.label.as_str()))
                    .map(|c| (*c).clone()),
            })
            .collect(),
        finals: inputs
            .convergence
            .iter()
            .filter(|c| c.is_final())
            .cloned()
            .collect(),
        limit: inputs.limit,
        bot: inputs.summary.clone(),
        adopted: inputs
            .nodes
            .iter()
            .zip(&inputs.metrics)
            .filter_map(|(node, metrics)| Some((node, adopted_by_region(metrics.as_deref()?))))
            .flat_map(|(node, adopted)| {
                adopted
                    .into_iter()
                    .map(move |(region, n)| (node.clone(), region, n))
            })
            .collect(),
        matches: union.count(),
        told: told.len(),
        snapshots: inputs.store.snapshots,
        cross,
        pending: (!live.is_empty()).then(|| pending.unwrap_or((0, 0))),
        accounting,
        notes,
        violations,
    }
}

/// Nobody in two committed matches, on any node or across nodes; no gap in
/// the snapshots; every match on every node that answers. Returns every
/// match any node listed.
fn check_commits(inputs: &Inputs, violations: &mut Vec<String>) -> Commits<Uuid, ()> {
    let mut union = Commits::default();
    let mut keys = BTreeSet::new();
    for (node, seen) in &inputs.store.nodes {
        let commits: Commits<Uuid, ()> = seen.values().map(pair).collect();
        for d in commits.doubles() {
            violations.push(format!("node {node}: {}", doubled(&d)));
        }
        for m in seen.values() {
            let ((), rider, driver) = pair(m);
            union.insert((), rider, driver);
        }
        keys.extend(seen.keys());
    }
    for d in union.doubles() {
        violations.push(format!("across all nodes: {}", doubled(&d)));
    }
    for gap in &inputs.store.gaps {
        violations.push(format!(
            "node {}: a /matches listing was full ({}) and older matches may have been missed; \
             snapshot more often",
            gap.node,
            ride_types::api::MAX_MATCHES_LISTED
        ));
    }
    // A match only some nodes of a region list, after convergence, is a
    // replication hole: nodes of one region hold the same documents, and
    // the committing region and every region any node lists it in hold it
    // (halo replication: regions it does not concern never do).
    let answering: Vec<(&String, &str)> = inputs
        .nodes
        .iter()
        .zip(&inputs.states)
        .filter_map(|(n, s)| Some((n, s.as_ref()?.region.as_str())))
        .collect();
    let region_of = |node: &String| answering.iter().find(|(n, _)| *n == node).map(|(_, r)| *r);
    for key in keys {
        let listing = |node: &String| inputs.store.nodes.get(node).and_then(|s| s.get(key));
        let mut concerned: BTreeSet<&str> = BTreeSet::new();
        for (node, _) in &answering {
            if let Some(notice) = listing(node) {
                concerned.insert(notice.region.as_str());
                concerned.extend(region_of(node));
            }
        }
        let missing: Vec<&str> = answering
            .iter()
            .filter(|(n, region)| concerned.contains(region) && listing(n).is_none())
            .map(|(n, _)| n.as_str())
            .collect();
        if !missing.is_empty() {
            violations.push(format!("match {key} is missing on {}", missing.join(", ")));
        }
    }
    union
}

/// `driver X committed with riders [a, b]`.
fn doubled(d: &Double<Uuid, ()>) -> String {
    format!(
        "{} {} committed with {}s {}",
        d.role,
        d.id,
        d.role.partner(),
        list(d.commits.iter().map(|(_, p)| p))
    )
}

/// A listed match as a commit.
fn pair(m: &MatchNotice) -> ((), Uuid, Uuid) {
    ((), m.rider_id, m.driver_id)
}

/// Every match notice the bot got is backed by a commit of that pair, and
/// nobody was told of two partners. Returns the notices by rider, each with
/// the endpoint whose socket delivered it.
fn check_told<'a>(
    record: &'a [Line<'static>],
    union: &Commits<Uuid, ()>,
    violations: &mut Vec<String>,
) -> BTreeMap<Uuid, Vec<(&'a str, &'a MatchNotice)>> {
    let mut told = Told::default();
    let mut by_rider: BTreeMap<Uuid, Vec<(&str, &MatchNotice)>> = BTreeMap::new();
    for line in record {
        let ServerMessage::Match(m) = line.message.as_ref() else {
            continue;
        };
        if !union.backs(&m.rider_id, &m.driver_id) {
            let committed = union.partners(Role::Rider, &m.rider_id);
            violations.push(format!(
                "bot was told rider {} got driver {} (via {}), but the nodes committed {}",
                m.rider_id,
                m.driver_id,
                line.endpoint,
                if committed.is_empty() {
                    "nothing".to_owned()
                } else {
                    list(&committed)
                }
            ));
        }
        for r in told.record(m.rider_id, m.driver_id) {
            violations.push(format!(
                "bot was told {} {} of {} after {}",
                r.role, r.id, r.now, r.before
            ));
        }
        by_rider
            .entry(m.rider_id)
            .or_default()
            .push((line.endpoint.as_ref(), m));
    }
    by_rider
}

/// Every heal converged; the last one within the limit, and the mesh
/// settled; at the end every node answers, ready, on one digest.
fn check_convergence(inputs: &Inputs, violations: &mut Vec<String>) {
    for c in &inputs.convergence {
        if !c.converged {
            violations.push(format!(
                "no convergence within {:.1} s after {}",
                c.seconds, c.label
            ));
        }
    }
    match inputs.convergence.iter().rfind(|c| c.is_final()) {
        None => violations.push("no final convergence was measured".to_owned()),
        Some(f) if f.converged && f.seconds > inputs.limit => violations.push(format!(
            "converged {:.2} s after the last heal, over the {:.0} s limit",
            f.seconds, inputs.limit
        )),
        Some(f) if f.converged && f.settled != Some(true) => violations.push(format!(
            "the replicated state kept changing for {:.0} s after the bot stopped",
            inputs.limit
        )),
        Some(_) => {}
    }
    let silent: Vec<&str> = inputs
        .nodes
        .iter()
        .zip(&inputs.states)
        .filter(|(_, s)| s.is_none())
        .map(|(n, _)| n.as_str())
        .collect();
    if !silent.is_empty() {
        violations.push(format!(
            "nodes not answering at the end: {}",
            silent.join(", ")
        ));
    }
    let live: Vec<String> = inputs
        .states
        .iter()
        .flatten()
        .map(|s| format!("{} {} ready {}", s.node, s.digest, s.ready))
        .collect();
    if !live.is_empty() && !converged(&inputs.states) {
        violations.push(format!("nodes not in step at the end: {}", live.join("; ")));
    }
}

/// Nodes of one region hold the same requests, so those that answer count
/// the same pending riders and drivers; returns the mesh's pending count,
/// each request counted once (by the node that accepted it), if any node
/// answered.
fn check_pending(live: &[&DebugState], violations: &mut Vec<String>) -> Option<(u64, u64)> {
    let mut by_region: BTreeMap<&str, BTreeSet<(usize, usize)>> = BTreeMap::new();
    for s in live {
        by_region
            .entry(&s.region)
            .or_default()
            .insert((s.pending_riders, s.pending_drivers));
    }
    for (region, counts) in by_region {
        if counts.len() > 1 {
            let each: Vec<String> = live
                .iter()
                .filter(|s| s.region == region)
                .map(|s| format!("{} {}/{}", s.node, s.pending_riders, s.pending_drivers))
                .collect();
            violations.push(format!(
                "nodes of {region} disagree on pending counts (riders/drivers): {}",
                each.join(", ")
            ));
        }
    }
    (!live.is_empty()).then(|| {
        live.iter().fold((0, 0), |(r, d), s| {
            (
                r + s.own_pending_riders as u64,
                d + s.own_pending_drivers as u64,
            )
        })
    })
}

/// No request the bot had accepted lost: each is in a committed match,
/// pending or expired ([`Tally`]), in all and, from the nodes' own
/// counters, per kind. Returns the figures for the report, and notes.
fn check_accounting(
    inputs: &Inputs,
    matches: u64,
    pending: (u64, u64),
    recorded: u64,
    violations: &mut Vec<String>,
) -> (Vec<(String, i64)>, Vec<String>) {
    let mut figures = Vec::new();
    let mut notes = Vec::new();
    let (pending_riders, pending_drivers) = pending;
    let Some(bot) = &inputs.summary else {
        violations.push(format!(
            "no bot summary at {}",
            inputs.summary_path.display()
        ));
        return (figures, notes);
    };
    let (req, mt) = (&bot.requests, &bot.matches);
    let expired = mt.expired_riders + mt.expired_drivers;
    let tally = Tally {
        accepted: req.accepted,
        matched: 2 * matches,
        pending: pending_riders + pending_drivers,
        expired,
    };
    let outstanding =
        req.accepted as i64 - mt.received as i64 - mt.driver_notices as i64 - expired as i64;
    figures.extend([
        ("accepted".to_owned(), req.accepted as i64),
        ("accounted".to_owned(), tally.accounted() as i64),
        ("transport_errors".to_owned(), req.transport_errors as i64),
        ("outstanding_at_bot_exit".to_owned(), outstanding),
    ]);
    if tally.lost() > 0 {
        violations.push(format!(
            "{} accepted requests are neither in a committed match, nor pending, nor expired \
             (bot accepted {}; nodes: 2 x {matches} matches + {pending_riders} + {pending_drivers} \
             pending; bot: {expired} expired)",
            tally.lost(),
            req.accepted
        ));
    }
    // Requests the nodes accepted but whose answer the bot never got (a
    // node killed mid-request) show up as transport errors.
    if expired == 0 && tally.surplus() > req.transport_errors {
        violations.push(format!(
            "nodes hold {} more requests than the bot had accepted ({} transport errors could \
             explain only those)",
            tally.surplus(),
            req.transport_errors
        ));
    }
    if mt.received > recorded {
        violations.push(format!(
            "bot counted {} matches but recorded {recorded}",
            mt.received
        ));
    }
    if outstanding < 0 {
        violations.push("bot summary inconsistent: more outcomes than accepted requests".into());
    }
    if (pending_riders + pending_drivers) as i64 > outstanding.max(0) {
        violations.push(format!(
            "nodes have {} requests pending, the bot was waiting on only {outstanding}",
            pending_riders + pending_drivers
        ));
    }
    if inputs.restarted.is_empty() {
        figures.extend(check_per_kind(inputs, matches, pending, mt, violations));
    } else {
        // The nodes' counters start again from zero after a restart.
        notes.push(format!(
            "per-kind accounting from node counters skipped: {} restarted (counters reset)",
            inputs.restarted.join(", ")
        ));
    }
    (figures, notes)
}

/// Per kind, from the nodes' own counters of accepted requests: each rider
/// and each driver they accepted is matched, pending or expired. Returns
/// the figures for the report (none without every node's counters).
fn check_per_kind(
    inputs: &Inputs,
    matches: u64,
    (pending_riders, pending_drivers): (u64, u64),
    mt: &MatchSummary,
    violations: &mut Vec<String>,
) -> Vec<(String, i64)> {
    let mut figures = Vec::new();
    let Some(counters) = inputs
        .metrics
        .iter()
        .map(|m| m.as_deref().map(accepted_by_kind))
        .collect::<Option<Vec<(u64, u64)>>>()
    else {
        return figures;
    };
    let riders = counters.iter().map(|c| c.0).sum();
    let drivers = counters.iter().map(|c| c.1).sum();
    for (kind, accepted, pending, expired) in [
        ("rider", riders, pending_riders, mt.expired_riders),
        ("driver", drivers, pending_drivers, mt.expired_drivers),
    ] {
        figures.push((format!("{kind}s accepted by nodes"), accepted as i64));
        let tally = Tally {
            accepted,
            matched: matches,
            pending,
            expired,
        };
        if tally.lost() > 0 {
            violations.push(format!(
                "{} {kind} requests accepted by the nodes are neither matched, pending nor expired",
                tally.lost()
            ));
        }
    }
    figures
}

/// The region whose mesh HTTP endpoint delivered a notice, if any.
fn region_of<'a>(endpoint: &str, endpoints: &'a [(String, Url)]) -> Option<&'a str> {
    let url = parse_endpoint(endpoint).ok()?;
    endpoints
        .iter()
        .find(|(_, e)| *e == url)
        .map(|(region, _)| region.as_str())
}

/// `[a, b]`.
fn list<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let items: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
mod tests;
