//! Live progress on stderr, so stdout carries only the summary.
//!
//! On a terminal a spinner line is redrawn twice a second; elsewhere (CI logs,
//! redirected output) a redrawn line would be noise, so a plain line is
//! printed every 5 seconds instead. `--no-progress` silences both.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;

use crate::stats::{Snapshot, Stats, per_sec};

const TERMINAL_EVERY: Duration = Duration::from_millis(500);
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// What the line shows.
#[derive(Debug, Clone, Copy)]
pub enum Style {
    Simulate,
    /// Before `measure_from` the line says it is warming up.
    Load {
        target: u32,
        measure_from: Instant,
    },
}

/// A running progress display; [`Progress::finish`] removes it.
pub struct Progress {
    task: Option<JoinHandle<()>>,
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn start(stats: Arc<Stats>, style: Style, enabled: bool) -> Self {
        if !enabled {
            return Progress {
                task: None,
                bar: None,
            };
        }
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(100));
            let shown = bar.clone();
            let task = tokio::spawn(async move {
                let mut every = tokio::time::interval(TERMINAL_EVERY);
                loop {
                    every.tick().await;
                    shown.set_message(line(&stats.snapshot(), style));
                }
            });
            Progress {
                task: Some(task),
                bar: Some(bar),
            }
        } else {
            let task = tokio::spawn(async move {
                let mut every = tokio::time::interval(PLAIN_EVERY);
                every.tick().await; // the first tick is immediate: nothing to say yet
                loop {
                    every.tick().await;
                    eprintln!("bot: {}", line(&stats.snapshot(), style));
                }
            });
            Progress {
                task: Some(task),
                bar: None,
            }
        }
    }

    /// Stops updating and erases the live line before the summary prints.
    pub fn finish(self) {
        if let Some(task) = &self.task {
            task.abort();
        }
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// One progress line, kept under 80 columns for typical counts (a dead
/// node's failovers lengthen it only while there are any).
fn line(s: &Snapshot, style: Style) -> String {
    let counts = counts(s, style);
    let r = &s.requests;
    if r.failed == 0 && r.failovers == 0 {
        return counts;
    }
    format!("{counts} dead {} failover {}", r.failed, r.failovers)
}

fn counts(s: &Snapshot, style: Style) -> String {
    let r = &s.requests;
    let latency = format!("p50/p99 {:.1}/{:.1}ms", s.latency.p50, s.latency.p99);
    match style {
        Style::Simulate => format!(
            "{}s sent {} ok {} rejected {} errors {} matches {} ratings {} {latency}",
            s.elapsed.as_secs(),
            r.sent,
            r.accepted,
            r.rejected,
            r.transport_errors,
            s.matches,
            s.ratings.sent,
        ),
        Style::Load {
            target,
            measure_from,
        } => {
            if Instant::now() < measure_from {
                return format!("warming up at {target}/s ...");
            }
            format!(
                "{}s sent {} ({:.0}/s of {target}/s) 2xx {} other {} errors {} {latency}",
                s.elapsed.as_secs(),
                r.sent,
                per_sec(r.sent, s.elapsed),
                r.accepted,
                r.rejected,
                r.transport_errors,
            )
        }
    }
}
