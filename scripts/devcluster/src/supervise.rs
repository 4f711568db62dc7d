//! Keeping a mesh running while its nodes die. `devcluster up --supervise`
//! stays the parent of the nodes it starts, so it learns how each one ended
//! (an exit status, or the signal of a `kill -9`), which no other process
//! can. A node that exits is reported, with its log and the command that
//! starts it again, and the others keep running: a region's outage is
//! something to watch the mesh survive, not a reason to stop it. With a
//! restart delay, the supervisor starts the node again itself.
//!
//! A node is dead when it exits while the state file still records its
//! pid. A node forgotten first (`kill-region`, `down`) was stopped on
//! purpose: it is reported as such and never started again. Nodes that
//! other invocations started (`start-node`, `start-region`) are not the
//! supervisor's children: it watches their pids, and reports their end
//! without a status.
//!
//! [`Supervisor::poll`] takes the time, so that the tests drive the restart
//! delay without a clock.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};

use crate::Error;
use crate::cluster::Cluster;
use crate::process::alive;

/// How often the supervisor looks at its nodes: a death is reported within
/// this, and reading the state file this often costs nothing.
pub const POLL_EVERY: Duration = Duration::from_millis(500);

/// What the supervisor saw of one node.
#[derive(Debug)]
pub enum Report {
    /// It exited while it was meant to run.
    Died {
        id: String,
        /// `None` for a node the supervisor did not start itself.
        status: Option<ExitStatus>,
        log: PathBuf,
        /// The command that starts it again, as before.
        restart_command: String,
        /// When the supervisor starts it again itself.
        restart_in: Option<Duration>,
    },
    /// It exited after it was forgotten: stopped on purpose.
    Stopped {
        id: String,
        status: Option<ExitStatus>,
    },
    /// The supervisor started it again; it is ready.
    Restarted { id: String, pid: u32 },
    /// Starting it again failed; the supervisor tries again after `retry_in`.
    RestartFailed {
        id: String,
        error: String,
        retry_in: Duration,
    },
}

/// `exit status: 3`, `signal: 9 (SIGKILL)`, or why there is none.
fn status_text(status: Option<&ExitStatus>) -> String {
    status.map_or_else(
        || "status unknown: another devcluster started it".into(),
        ToString::to_string,
    )
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Report::Died {
                id,
                status,
                log,
                restart_command,
                restart_in,
            } => {
                let status = status_text(status.as_ref());
                write!(
                    f,
                    "node {id} exited ({status}); its log: {}; the other nodes keep running; \
                     start it again with: {restart_command}",
                    log.display()
                )?;
                match restart_in {
                    Some(delay) => write!(f, " (--restart-dead: in {}s)", delay.as_secs_f64()),
                    None => Ok(()),
                }
            }
            Report::Stopped { id, status } => {
                let status = status_text(status.as_ref());
                write!(
                    f,
                    "node {id} stopped on purpose ({status}); not started again"
                )
            }
            Report::Restarted { id, pid } => write!(f, "node {id} started again (pid {pid})"),
            Report::RestartFailed {
                id,
                error,
                retry_in,
            } => write!(
                f,
                "node {id} did not start again: {error}; trying again in {}s",
                retry_in.as_secs_f64()
            ),
        }
    }
}

/// The nodes of the mesh in `dir`, while they run.
pub struct Supervisor {
    dir: PathBuf,
    /// The command that starts a node again, before the node's id.
    start_node: String,
    restart_after: Option<Duration>,
    /// The nodes this supervisor started, by id.
    children: BTreeMap<String, Child>,
    /// Nodes another invocation started, by id: their pids.
    watched: BTreeMap<String, u32>,
    /// Dead nodes to start again, by id: when.
    due: BTreeMap<String, Instant>,
}

impl Supervisor {
    /// Supervises `children` (by node id), started by [`Cluster::up`] on
    /// the mesh in `dir`; with `restart_after`, a dead node is started
    /// again after that long.
    pub fn new(
        dir: PathBuf,
        children: BTreeMap<String, Child>,
        restart_after: Option<Duration>,
    ) -> Self {
        let exe = std::env::current_exe()
            .map_or_else(|_| "devcluster".to_owned(), |exe| exe.display().to_string());
        Supervisor {
            start_node: format!("{exe} --dir {} start-node", dir.display()),
            dir,
            restart_after,
            children,
            watched: BTreeMap::new(),
            due: BTreeMap::new(),
        }
    }

    /// Looks at every node once at `now`: reports the ones that ended,
    /// watches the ones others started, and starts again the dead ones
    /// whose delay is over.
    pub async fn poll(&mut self, now: Instant) -> Result<Vec<Report>, Error> {
        let mut cluster = Cluster::open(&self.dir)?;
        let mut reports = self.reap(&cluster, now);
        self.adopt(&cluster);
        reports.extend(self.restart_due(&mut cluster, now).await);
        Ok(reports)
    }

    /// The nodes that ended since the last poll, each as a report.
    fn reap(&mut self, cluster: &Cluster, now: Instant) -> Vec<Report> {
        let mut ended = Vec::new();
        for (id, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                ended.push((id.clone(), child.id(), Some(status)));
            }
        }
        for (id, &pid) in &self.watched {
            if !alive(pid) {
                ended.push((id.clone(), pid, None));
            }
        }
        ended
            .into_iter()
            .map(|(id, pid, status)| {
                self.children.remove(&id);
                self.watched.remove(&id);
                self.ended(cluster, id, pid, status, now)
            })
            .collect()
    }

    /// Node `id`, which ran as `pid`, ended at `now`.
    fn ended(
        &mut self,
        cluster: &Cluster,
        id: String,
        pid: u32,
        status: Option<ExitStatus>,
        now: Instant,
    ) -> Report {
        if cluster.node_pids.get(&id) != Some(&pid) {
            return Report::Stopped { id, status };
        }
        if let Some(delay) = self.restart_after {
            self.due.insert(id.clone(), now + delay);
        }
        Report::Died {
            log: cluster.node_log(&id),
            restart_command: format!("{} {id}", self.start_node),
            restart_in: self.restart_after,
            id,
            status,
        }
    }

    /// Watches the running nodes that another invocation started.
    fn adopt(&mut self, cluster: &Cluster) {
        for (id, &pid) in &cluster.node_pids {
            let ours = self.children.get(id).is_some_and(|c| c.id() == pid);
            if !ours && alive(pid) {
                self.watched.insert(id.clone(), pid);
                self.due.remove(id);
            }
        }
    }

    /// Starts again each dead node whose delay is over at `now`, unless it
    /// was started again meanwhile, or forgotten (stopped on purpose).
    async fn restart_due(&mut self, cluster: &mut Cluster, now: Instant) -> Vec<Report> {
        let ready: Vec<String> = self
            .due
            .iter()
            .filter(|&(_, &at)| at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        let mut reports = Vec::new();
        for id in ready {
            self.due.remove(&id);
            // Forgotten, or running again: nothing to start.
            if cluster.node_pids.get(&id).is_none_or(|&pid| alive(pid)) {
                continue;
            }
            match cluster.start_node(&id).await {
                Ok(child) => {
                    reports.push(Report::Restarted {
                        id: id.clone(),
                        pid: child.id(),
                    });
                    self.children.insert(id, child);
                }
                Err(e) => {
                    let retry_in = self.restart_after.unwrap_or(POLL_EVERY);
                    self.due.insert(id.clone(), now + retry_in);
                    let error = e.to_string();
                    reports.push(Report::RestartFailed {
                        id,
                        error,
                        retry_in,
                    });
                }
            }
        }
        reports
    }

    /// Polls every [`POLL_EVERY`], saying on stderr what it sees, until
    /// Ctrl-C or SIGTERM; then stops the whole mesh.
    pub async fn run(mut self) -> Result<(), Error> {
        let mut terminate =
            signal(SignalKind::terminate()).map_err(Error::io("listening for SIGTERM"))?;
        let mut every = tokio::time::interval(POLL_EVERY);
        loop {
            tokio::select! {
                _ = every.tick() => match self.poll(Instant::now()).await {
                    Ok(reports) => reports.iter().for_each(say),
                    Err(e) => say(&format!("cannot read the mesh's state: {e}")),
                },
                _ = tokio::signal::ctrl_c() => break,
                _ = terminate.recv() => break,
            }
        }
        say(&"stopping the mesh");
        Cluster::open(&self.dir)?.down()?;
        for child in self.children.values_mut() {
            // Stopped by `down`: this only reaps them.
            let _ = child.wait();
        }
        Ok(())
    }
}

fn say(what: &impl fmt::Display) {
    eprintln!("[{}] {what}", chrono::Local::now().format("%H:%M:%S"));
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::ExitStatusExt;
    use std::path::Path;

    use super::*;
    use crate::plan::{Plan, Region};
    use crate::ports;
    use crate::process::signal;

    /// Stands in for the node binary: writes its ready file (its first
    /// two arguments are `--ready-file PATH`) and sleeps until killed.
    const FAKE_NODE: &str = r#"#!/bin/sh
printf '{"http":"127.0.0.1:1","admin":"127.0.0.1:2","mesh":null,"node":"fake"}' >"$2.tmp"
mv "$2.tmp" "$2"
exec sleep 600
"#;

    /// The restart DELAY the tests give.
    const DELAY: Duration = Duration::from_secs(5);

    /// Regions `a` and `b` in a folder of their own, one fake node each,
    /// started, and a supervisor over them.
    async fn mesh(restart_after: Option<Duration>) -> (tempfile::TempDir, Supervisor) {
        let folder = tempfile::tempdir().unwrap();
        let dir = folder.path();
        let node_bin = dir.join("fake-node");
        std::fs::write(&node_bin, FAKE_NODE).unwrap();
        std::fs::set_permissions(&node_bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let regions = [("a", 1), ("b", 2)].map(|(id, port)| Region {
            id: id.into(),
            http: ([127, 0, 0, 1], port).into(),
            quic: ([127, 0, 0, 1], port + 10).into(),
        });
        let mut cluster = Cluster {
            dir: dir.to_path_buf(),
            node_bin,
            regions_dir: "regions".into(),
            plan: Plan::build(regions.to_vec(), 1, 100, None, &mut ports::free).unwrap(),
            node_args: vec![],
            wraps: BTreeMap::new(),
            node_pids: BTreeMap::new(),
            relay_pids: BTreeMap::new(),
            nginx: false,
        };
        let mut children = BTreeMap::new();
        for id in ["a", "b"] {
            children.insert(id.to_owned(), cluster.start_node(id).await.unwrap());
        }
        let supervisor = Supervisor::new(dir.to_path_buf(), children, restart_after);
        (folder, supervisor)
    }

    fn recorded_pid(dir: &Path, id: &str) -> Option<u32> {
        Cluster::open(dir).unwrap().node_pids.get(id).copied()
    }

    /// `kill -9`, as an operator would, then waits until it is gone.
    fn kill_9(pid: u32) {
        signal(pid, "KILL");
        while alive(pid) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[tokio::test]
    async fn a_dead_node_is_reported_and_the_others_keep_running() {
        let (dir, mut supervisor) = mesh(None).await;
        let (a, b) = (
            recorded_pid(dir.path(), "a").unwrap(),
            recorded_pid(dir.path(), "b").unwrap(),
        );
        kill_9(a);
        let t0 = Instant::now();
        let reports = supervisor.poll(t0).await.unwrap();
        let [
            Report::Died {
                id, status, log, ..
            },
        ] = &reports[..]
        else {
            panic!("{reports:?}");
        };
        assert_eq!(id, "a");
        assert_eq!(status.and_then(|s| s.signal()), Some(9));
        assert_eq!(log, &dir.path().join("a").join("node.log"));
        let text = reports[0].to_string();
        assert!(text.contains("signal: 9"), "{text}");
        assert!(
            text.ends_with(&format!("--dir {} start-node a", dir.path().display())),
            "{text}"
        );
        assert!(alive(b), "the other node keeps running");
        let later = supervisor
            .poll(t0 + Duration::from_secs(3600))
            .await
            .unwrap();
        assert!(
            later.is_empty(),
            "reported once, not started again: {later:?}"
        );
        assert!(alive(b));
        Cluster::open(dir.path()).unwrap().down().unwrap();
    }

    #[tokio::test]
    async fn a_dead_node_is_started_again_once_the_delay_is_over() {
        let (dir, mut supervisor) = mesh(Some(DELAY)).await;
        let dead = recorded_pid(dir.path(), "a").unwrap();
        kill_9(dead);
        let t0 = Instant::now();
        let reports = supervisor.poll(t0).await.unwrap();
        assert!(
            matches!(&reports[..], [Report::Died { restart_in: Some(d), .. }] if *d == DELAY),
            "{reports:?}"
        );
        let early = supervisor
            .poll(t0 + DELAY - Duration::from_millis(1))
            .await
            .unwrap();
        assert!(early.is_empty(), "{early:?}");
        let reports = supervisor.poll(t0 + DELAY).await.unwrap();
        let [Report::Restarted { id, pid }] = &reports[..] else {
            panic!("{reports:?}");
        };
        assert_eq!(id, "a");
        assert_ne!(*pid, dead);
        assert!(alive(*pid));
        assert_eq!(recorded_pid(dir.path(), "a"), Some(*pid));
        let pid_file = std::fs::read_to_string(dir.path().join("pids").join("a.pid")).unwrap();
        assert_eq!(pid_file.trim(), pid.to_string());
        Cluster::open(dir.path()).unwrap().down().unwrap();
        assert!(!alive(*pid), "down stops the restarted node");
    }

    #[tokio::test]
    async fn a_region_killed_on_purpose_is_not_restarted_and_is_watched_once_started_again() {
        let (dir, mut supervisor) = mesh(Some(DELAY)).await;
        let b = recorded_pid(dir.path(), "b").unwrap();
        let mut cluster = Cluster::open(dir.path()).unwrap();
        assert!(matches!(
            cluster.kill_region("mars"),
            Err(Error::UnknownRegion(_))
        ));
        let killed = cluster.kill_region("a").unwrap();
        assert_eq!(killed.len(), 1);
        assert!(!alive(killed[0].1));
        assert!(!dir.path().join("pids").join("a.pid").exists());
        let t0 = Instant::now();
        let reports = supervisor.poll(t0).await.unwrap();
        assert!(
            matches!(&reports[..], [Report::Stopped { id, .. }] if id == "a"),
            "{reports:?}"
        );
        assert!(supervisor.poll(t0 + DELAY).await.unwrap().is_empty());
        assert!(alive(b));

        // Another invocation brings the region back on the same data folder.
        let started = Cluster::open(dir.path())
            .unwrap()
            .start_region("a")
            .await
            .unwrap();
        let again = started["a"].id();
        assert_eq!(recorded_pid(dir.path(), "a"), Some(again));
        assert!(supervisor.poll(t0 + DELAY).await.unwrap().is_empty());
        kill_9(again);
        let reports = supervisor.poll(t0 + DELAY).await.unwrap();
        assert!(
            matches!(&reports[..], [Report::Died { id, status: None, .. }] if id == "a"),
            "a death of a node another invocation started, without its status: {reports:?}"
        );
        let reports = supervisor.poll(t0 + DELAY * 2).await.unwrap();
        assert!(
            matches!(&reports[..], [Report::Restarted { .. }]),
            "{reports:?}"
        );
        Cluster::open(dir.path()).unwrap().down().unwrap();
    }
}
