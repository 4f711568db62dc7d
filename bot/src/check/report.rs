//! The chaos report `bot check check` prints: partitions and how soon each
//! heal converged, what the bot did, the matches, the accounting, and every
//! violation (the first 50 of them).

use std::collections::BTreeMap;
use std::fmt;

use super::converge::Convergence;
use crate::summary::SimulationFigures;

/// Violations printed at most; the rest are counted.
const SHOWN: usize = 50;

/// A judged run, as [`super::verdict::assess`] found it.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// How the partitions were made (of the first one).
    pub method: Option<String>,
    pub partitions: Vec<Held>,
    /// The `final ...` convergence measurements.
    pub finals: Vec<Convergence>,
    /// Longest allowed time from the last heal to one digest, in seconds.
    pub limit: f64,
    pub bot: Option<SimulationFigures>,
    /// Committed matches, over every node.
    pub matches: usize,
    /// Riders the bot was told of a match.
    pub told: usize,
    pub snapshots: u64,
    /// Requests accepted for a region whose nodes were down, from the
    /// nodes' counters: (node, region adopted, count).
    pub adopted: Vec<(String, String, u64)>,
    /// (rider's region, other region whose socket told the driver) → count.
    pub cross: BTreeMap<(String, String), usize>,
    /// Pending riders and drivers at the end, when any node answered.
    pub pending: Option<(u64, u64)>,
    pub accounting: Vec<(String, i64)>,
    pub notes: Vec<String>,
    pub violations: Vec<String>,
}

/// One partition (or kill), and the convergence measured after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub label: String,
    pub secs: f64,
    pub after: Option<Convergence>,
}

const FINAL_LABEL: &str = "final (bot stopped)";

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_convergence(f)?;
        self.write_traffic(f)?;
        self.write_verdict(f)
    }
}

impl Report {
    /// Each partition held, and how soon the nodes were in step after it.
    fn write_convergence(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f)?;
        writeln!(f, "== chaos report")?;
        writeln!(
            f,
            "partitions ({}):",
            self.method.as_deref().unwrap_or("none")
        )?;
        let width = self
            .partitions
            .iter()
            .map(|p| p.label.len())
            .chain([FINAL_LABEL.len()])
            .max()
            .unwrap_or_default();
        for p in &self.partitions {
            let after = match &p.after {
                None => "not measured".to_owned(),
                Some(c) if c.converged => format!("converged {:.2} s after heal", c.seconds),
                Some(c) => format!("NOT converged ({:.1} s)", c.seconds),
            };
            writeln!(f, "  {:<width$}  held {:>5.1} s   {after}", p.label, p.secs)?;
        }
        for c in &self.finals {
            let outcome = if c.converged {
                let last = match (c.settled, c.settled_after) {
                    (Some(true), Some(after)) => format!("; last change {after:.2} s after it"),
                    _ => String::new(),
                };
                format!(
                    "converged {:.2} s after the last heal{last} (limit {:.0} s)",
                    c.seconds, self.limit
                )
            } else {
                "NOT converged".to_owned()
            };
            writeln!(f, "  {:<width$}  {outcome}", c.label)?;
        }
        Ok(())
    }

    /// What the bot sent and was told, and what the nodes committed.
    fn write_traffic(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(bot) = &self.bot {
            let (req, mt, rt) = (&bot.requests, &bot.matches, &bot.ratings);
            writeln!(
                f,
                "bot: {} requests sent, {} accepted, {} rejected, {} transport errors; {} met a \
                 dead node, {} sent elsewhere as their own node was; told {} matches ({} drivers \
                 told), expired {} riders / {} drivers; ratings {}/{} accepted; {:.0} s",
                req.sent,
                req.accepted,
                req.rejected,
                req.transport_errors,
                req.failed,
                req.failovers,
                mt.received,
                mt.driver_notices,
                mt.expired_riders,
                mt.expired_drivers,
                rt.accepted,
                rt.sent,
                bot.elapsed_secs
            )?;
        }
        if !self.adopted.is_empty() {
            let each: Vec<String> = self
                .adopted
                .iter()
                .map(|(node, region, n)| format!("{node} for {region}: {n}"))
                .collect();
            writeln!(
                f,
                "accepted for a region whose nodes were down: {}",
                each.join(", ")
            )?;
        }
        writeln!(
            f,
            "committed matches (union of all nodes): {}; told to the bot: {}; snapshots: {}",
            self.matches, self.told, self.snapshots
        )?;
        let n_cross: usize = self.cross.values().sum();
        write!(f, "cross-border matches: {n_cross} of {} told", self.told)?;
        if !self.cross.is_empty() {
            let each: Vec<String> = self
                .cross
                .iter()
                .map(|((rider, driver), n)| format!("{rider} rider <- {driver} driver: {n}"))
                .collect();
            write!(f, " ({})", each.join(", "))?;
        }
        writeln!(f)?;
        if let Some((riders, drivers)) = self.pending {
            writeln!(
                f,
                "pending at the end (all nodes, each counted once): {riders} riders, {drivers} drivers"
            )?;
        }
        Ok(())
    }

    /// The accounting, the notes, and the violations found.
    fn write_verdict(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.accounting.is_empty() {
            let each: Vec<String> = self
                .accounting
                .iter()
                .map(|(what, n)| format!("{what} {n}"))
                .collect();
            writeln!(f, "accounting: {}", each.join(", "))?;
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        if self.violations.is_empty() {
            return writeln!(f, "no violations");
        }
        writeln!(f, "VIOLATIONS ({}):", self.violations.len())?;
        for v in self.violations.iter().take(SHOWN) {
            writeln!(f, "  - {v}")?;
        }
        if self.violations.len() > SHOWN {
            writeln!(f, "  ... and {} more", self.violations.len() - SHOWN)?;
        }
        Ok(())
    }
}
