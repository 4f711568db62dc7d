//! The end-of-run report: plain text on stdout, and the same numbers as JSON
//! for `--summary-json` (read by scripts and the integration tests, so field
//! names are part of the bot's interface; `bot check` reads them back as
//! [`SimulationFigures`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::BotError;
use crate::load::LoadReport;
use crate::stats::{CountersSnapshot, LatencySnapshot, Snapshot, per_sec};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// `simulate` or `load`.
    pub mode: &'static str,
    /// False only when no request at all was accepted.
    pub ok: bool,
    /// One sentence saying how the run went.
    pub verdict: String,
    pub elapsed_secs: f64,
    pub endpoints: Vec<String>,
    pub requests: RequestSummary,
    /// Rider and driver POSTs (in load mode: excluding warm-up).
    pub latency_ms: LatencySnapshot,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matches: Option<MatchSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratings: Option<RatingSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub websocket: Option<WebsocketSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadSummary>,
    /// The first transport error or rejection, if any.
    pub first_problem: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestSummary {
    pub sent: u64,
    /// 2xx answers.
    pub accepted: u64,
    /// Non-2xx answers.
    pub rejected: u64,
    /// 503s with `Retry-After`: refused at the door by a node at capacity
    /// (among `rejected`), and how fast they were refused.
    pub shed: u64,
    pub shed_latency_ms: LatencySnapshot,
    /// Status code -> count (JSON keys are strings: `"202"`).
    pub by_status: BTreeMap<u16, u64>,
    pub transport_errors: u64,
    pub redirects: u64,
    /// Requests that met a dead node: a refused connection, a `502`, or a
    /// `503` `region_unavailable`. Read as 0 from a summary without it.
    #[serde(default)]
    pub failed: u64,
    /// Requests sent to another endpoint because their own was set aside
    /// as dead.
    #[serde(default)]
    pub failovers: u64,
    pub per_sec: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchSummary {
    /// Matches told to our riders (each counted once).
    pub received: u64,
    /// Matches told to our drivers.
    pub driver_notices: u64,
    pub expired_riders: u64,
    pub expired_drivers: u64,
    pub fare_total_taka: f64,
    pub fare_avg_taka: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RatingSummary {
    pub sent: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub by_status: BTreeMap<u16, u64>,
    pub transport_errors: u64,
}

/// What `bot check` reads back from a simulation run's `--summary-json`:
/// the figures a chaos run's accounting needs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SimulationFigures {
    pub elapsed_secs: f64,
    pub requests: RequestSummary,
    pub matches: MatchSummary,
    pub ratings: RatingSummary,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebsocketSummary {
    pub connects: u64,
    pub drops: u64,
    pub server_errors: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadSummary {
    pub target_per_sec: u32,
    pub achieved_per_sec: f64,
    pub kept_up: bool,
    pub concurrency: usize,
    pub window_secs: f64,
    pub warmup_requests: u64,
}

impl RequestSummary {
    fn new(c: &CountersSnapshot, shed_latency: &LatencySnapshot, elapsed: Duration) -> Self {
        RequestSummary {
            sent: c.sent,
            accepted: c.accepted,
            rejected: c.rejected,
            shed: c.shed,
            shed_latency_ms: shed_latency.clone(),
            by_status: c.by_status.clone(),
            transport_errors: c.transport_errors,
            redirects: c.redirects,
            failed: c.failed,
            failovers: c.failovers,
            per_sec: per_sec(c.sent, elapsed),
        }
    }
}

impl Summary {
    pub fn simulate(s: &Snapshot, endpoints: Vec<String>) -> Self {
        let elapsed_secs = s.elapsed.as_secs_f64();
        let fare_avg_taka = if s.matches > 0 {
            s.fare_total_taka / s.matches as f64
        } else {
            0.0
        };
        let mut summary = Summary {
            mode: "simulate",
            ok: false,
            verdict: String::new(),
            elapsed_secs,
            endpoints,
            requests: RequestSummary::new(&s.requests, &s.shed_latency, s.elapsed),
            latency_ms: s.latency.clone(),
            matches: Some(MatchSummary {
                received: s.matches,
                driver_notices: s.driver_notices,
                expired_riders: s.expired_riders,
                expired_drivers: s.expired_drivers,
                fare_total_taka: s.fare_total_taka,
                fare_avg_taka,
            }),
            ratings: Some(RatingSummary {
                sent: s.ratings.sent,
                accepted: s.ratings.accepted,
                rejected: s.ratings.rejected,
                by_status: s.ratings.by_status.clone(),
                transport_errors: s.ratings.transport_errors,
            }),
            websocket: Some(WebsocketSummary {
                connects: s.ws_connects,
                drops: s.ws_drops,
                server_errors: s.ws_server_errors,
            }),
            load: None,
            first_problem: s.first_problem.clone(),
        };
        summary.judge();
        summary
    }

    pub fn load(
        s: &Snapshot,
        report: &LoadReport,
        concurrency: usize,
        endpoints: Vec<String>,
    ) -> Self {
        let window_secs = report.window.as_secs_f64();
        let mut summary = Summary {
            mode: "load",
            ok: false,
            verdict: String::new(),
            elapsed_secs: window_secs,
            endpoints,
            requests: RequestSummary::new(&s.requests, &s.shed_latency, report.window),
            latency_ms: s.latency.clone(),
            matches: None,
            ratings: None,
            websocket: None,
            load: Some(LoadSummary {
                target_per_sec: report.target_per_sec,
                achieved_per_sec: report.achieved_per_sec,
                kept_up: report.kept_up,
                concurrency,
                window_secs,
                warmup_requests: report.warmup_requests,
            }),
            first_problem: s.first_problem.clone(),
        };
        summary.judge();
        summary
    }

    /// Sets `ok` and `verdict`. The run fails only when nothing was accepted:
    /// rejections and slow answers are results to report, not bot failures.
    fn judge(&mut self) {
        let r = &self.requests;
        self.ok = r.accepted > 0;
        self.verdict = if r.accepted > 0 {
            let mut verdict = String::from("ok");
            if let Some(load) = &self.load
                && !load.kept_up
            {
                verdict = format!(
                    "ok, but the bot could not keep up: {:.0} requests/s achieved of {} targeted \
                     (raise --concurrency, or the node is saturated)",
                    load.achieved_per_sec, load.target_per_sec
                );
            }
            verdict
        } else if r.sent == 0 {
            "FAILED: no request was sent".to_owned()
        } else if r.transport_errors == r.sent {
            format!(
                "FAILED: no node answered at {} - is it running?",
                self.endpoints.join(", ")
            )
        } else {
            "FAILED: every request was refused".to_owned()
        };
    }

    pub fn write_json(&self, path: &Path) -> Result<(), BotError> {
        let error = |source| BotError::Summary {
            path: path.to_owned(),
            source,
        };
        let mut json = serde_json::to_vec_pretty(self).map_err(|e| error(e.into()))?;
        json.push(b'\n');
        std::fs::write(path, json).map_err(error)
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.requests;
        writeln!(
            f,
            "bot {} summary: {:.1}s against {}",
            self.mode,
            self.elapsed_secs,
            self.endpoints.join(", ")
        )?;
        writeln!(
            f,
            "  requests   sent {}  accepted {}  rejected {}  transport errors {}  redirects {}  ({:.1}/s)",
            r.sent, r.accepted, r.rejected, r.transport_errors, r.redirects, r.per_sec
        )?;
        if !r.by_status.is_empty() {
            writeln!(f, "             by status: {}", statuses(&r.by_status))?;
        }
        if r.shed > 0 {
            let l = &r.shed_latency_ms;
            writeln!(
                f,
                "  shed       {} refused at capacity (503, Retry-After), answered in p50 {:.2}ms  p99 {:.2}ms",
                r.shed, l.p50, l.p99
            )?;
        }
        if r.failed > 0 || r.failovers > 0 {
            writeln!(
                f,
                "  failover   {} met a dead node (refused, 502, 503 region_unavailable), {} sent elsewhere while theirs was set aside",
                r.failed, r.failovers
            )?;
        }
        let l = &self.latency_ms;
        writeln!(
            f,
            "  latency    p50 {:.2}ms  p90 {:.2}ms  p99 {:.2}ms  p99.9 {:.2}ms  max {:.2}ms  (n={})",
            l.p50, l.p90, l.p99, l.p999, l.max, l.count
        )?;
        if let Some(load) = &self.load {
            writeln!(
                f,
                "  rate       {:.1}/s achieved of {}/s target, concurrency {}, {} warm-up requests not counted",
                load.achieved_per_sec, load.target_per_sec, load.concurrency, load.warmup_requests
            )?;
        }
        if let Some(m) = &self.matches {
            writeln!(
                f,
                "  matches    {} (drivers told {}), fares {:.2} taka total, {:.2} avg; expired unmatched: {} riders, {} drivers",
                m.received,
                m.driver_notices,
                m.fare_total_taka,
                m.fare_avg_taka,
                m.expired_riders,
                m.expired_drivers
            )?;
        }
        if let Some(rt) = &self.ratings {
            writeln!(
                f,
                "  ratings    sent {}  accepted {}  rejected {}  transport errors {}",
                rt.sent, rt.accepted, rt.rejected, rt.transport_errors
            )?;
        }
        if let Some(ws) = &self.websocket {
            writeln!(
                f,
                "  websocket  {} connects, {} drops, {} server errors",
                ws.connects, ws.drops, ws.server_errors
            )?;
        }
        if let Some(problem) = &self.first_problem {
            writeln!(f, "  first problem: {problem}")?;
        }
        write!(f, "  result     {}", self.verdict)
    }
}

fn statuses(by_status: &BTreeMap<u16, u64>) -> String {
    by_status
        .iter()
        .map(|(status, count)| format!("{status} x{count}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot {
            elapsed: Duration::from_secs(4),
            requests: CountersSnapshot {
                sent: 100,
                accepted: 98,
                rejected: 2,
                shed: 0,
                by_status: BTreeMap::from([(202, 98), (422, 2)]),
                transport_errors: 0,
                redirects: 3,
                failed: 0,
                failovers: 0,
            },
            ratings: CountersSnapshot {
                sent: 10,
                accepted: 10,
                by_status: BTreeMap::from([(201, 10)]),
                ..CountersSnapshot::default()
            },
            latency: LatencySnapshot::default(),
            shed_latency: LatencySnapshot::default(),
            matches: 4,
            driver_notices: 4,
            fare_total_taka: 50.0,
            expired_riders: 1,
            expired_drivers: 0,
            ws_connects: 1,
            ws_drops: 0,
            ws_server_errors: 0,
            first_problem: Some("422 invalid_field: nope".into()),
        }
    }

    #[test]
    fn simulate_summary_math() {
        let s = Summary::simulate(&snapshot(), vec!["http://a/".into()]);
        assert!(s.ok);
        assert_eq!(s.verdict, "ok");
        assert_eq!(s.requests.per_sec, 25.0);
        let m = s.matches.as_ref().unwrap();
        assert_eq!(m.fare_avg_taka, 12.5);
        let text = s.to_string();
        assert!(text.contains("202 x98, 422 x2"), "{text}");
        assert!(text.contains("first problem: 422"), "{text}");
    }

    #[test]
    fn failovers_are_shown_only_when_there_were_any() {
        let text = Summary::simulate(&snapshot(), vec!["http://a/".into()]).to_string();
        assert!(!text.contains("failover"), "{text}");
        let mut snap = snapshot();
        snap.requests.failed = 2;
        snap.requests.failovers = 40;
        let s = Summary::simulate(&snap, vec!["http://a/".into()]);
        let text = s.to_string();
        assert!(
            text.contains("failover   2 met a dead node") && text.contains("40 sent elsewhere"),
            "{text}"
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["requests"]["failed"], 2);
        assert_eq!(json["requests"]["failovers"], 40);
    }

    #[test]
    fn json_field_names_are_stable() {
        let s = Summary::simulate(&snapshot(), vec!["http://a/".into()]);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["requests"]["accepted"], 98);
        assert_eq!(json["requests"]["by_status"]["202"], 98);
        assert_eq!(json["matches"]["received"], 4);
        assert_eq!(json["ratings"]["accepted"], 10);
        assert_eq!(json["ratings"]["sent"], 10);
        assert!(json.get("load").is_none());
    }

    #[test]
    fn a_simulation_summary_reads_back_as_its_figures() {
        let s = Summary::simulate(&snapshot(), vec!["http://a/".into()]);
        let figures: SimulationFigures =
            serde_json::from_slice(&serde_json::to_vec_pretty(&s).unwrap()).unwrap();
        assert_eq!(figures.elapsed_secs, s.elapsed_secs);
        assert_eq!(figures.requests, s.requests);
        assert_eq!(Some(figures.matches), s.matches);
        assert_eq!(Some(figures.ratings), s.ratings);
    }

    #[test]
    fn nothing_accepted_fails_and_says_why() {
        let mut snap = snapshot();
        snap.requests = CountersSnapshot {
            sent: 7,
            transport_errors: 7,
            ..CountersSnapshot::default()
        };
        let s = Summary::simulate(&snap, vec!["http://127.0.0.1:9/".into()]);
        assert!(!s.ok);
        assert!(
            s.verdict
                .contains("no node answered at http://127.0.0.1:9/"),
            "{}",
            s.verdict
        );

        snap.requests = CountersSnapshot {
            sent: 7,
            rejected: 7,
            by_status: BTreeMap::from([(422, 7)]),
            ..CountersSnapshot::default()
        };
        let s = Summary::simulate(&snap, vec![]);
        assert!(!s.ok);
        assert!(s.verdict.contains("refused"), "{}", s.verdict);
    }

    #[test]
    fn load_summary_reports_falling_behind() {
        let report = LoadReport {
            target_per_sec: 1000,
            achieved_per_sec: 25.0,
            kept_up: false,
            window: Duration::from_secs(4),
            warmup_requests: 5,
        };
        let s = Summary::load(&snapshot(), &report, 64, vec!["http://a/".into()]);
        assert!(s.ok);
        assert!(s.verdict.contains("could not keep up"), "{}", s.verdict);
        assert!(s.matches.is_none());
        assert_eq!(s.load.as_ref().unwrap().warmup_requests, 5);
        assert_eq!(s.requests.per_sec, 25.0);
    }
}
