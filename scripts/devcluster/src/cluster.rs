//! A running mesh and its state file, `<dir>/cluster.json`: the plan, how
//! nodes are started (extra flags, wrappers) and the pids of everything
//! started, so that `devcluster up`, `start-node`, `kill-region`,
//! `start-region`, `status` and `down`, run one after another by a script,
//! act on the same mesh. Each running node's pid is also in
//! `<dir>/pids/<id>.pid`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::fs::{File, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::plan::{Plan, WanOptions};
use crate::process::{alive, signal, stop, tail};
use crate::{Error, certs, launch, nginx, plan, ports};

#[derive(Debug, Serialize, Deserialize)]
pub struct Cluster {
    /// Where everything goes: certs/, one folder per node, wan/, nginx/.
    pub dir: PathBuf,
    pub node_bin: PathBuf,
    pub regions_dir: PathBuf,
    pub plan: Plan,
    /// Flags added to every node's command line.
    pub node_args: Vec<String>,
    /// By node id: the command (and arguments) the node runs under.
    pub wraps: BTreeMap<String, Vec<String>>,
    /// By node id.
    pub node_pids: BTreeMap<String, u32>,
    /// By index into the plan's relays.
    pub relay_pids: BTreeMap<usize, u32>,
    pub nginx: bool,
}

/// Starts a process of the mesh in the background, its output to `log`.
fn spawn_logged(command: &mut Command, log: File, what: &str) -> Result<Child, Error> {
    let out = log
        .try_clone()
        .map_err(Error::io(format!("the log of {what}")))?;
    command
        // Plain log files (tracing colours them by default).
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(log)
        // Out of the terminal's process group: Ctrl-C goes to the script,
        // which stops the mesh in order.
        .process_group(0)
        .spawn()
        .map_err(Error::io(format!("starting {what}")))
}

fn state_file(dir: &Path) -> PathBuf {
    dir.join("cluster.json")
}

/// How a mesh is laid out, before anything runs.
pub struct Layout {
    pub replicas: usize,
    pub admin_offset: u16,
    pub wan: Option<WanOptions>,
}

impl Cluster {
    /// Plans a mesh of the regions in `regions_dir` and records it in `dir`,
    /// after checking that no other mesh holds the regions' addresses.
    pub fn plan(
        dir: &Path,
        node_bin: &Path,
        regions_dir: &Path,
        layout: Layout,
    ) -> Result<Self, Error> {
        let regions = plan::regions(node_bin, regions_dir)?;
        let wan = match layout.wan {
            Some(options) => Some((options, plan::distances(node_bin, regions_dir)?)),
            None => None,
        };
        let plan = Plan::build(
            regions,
            layout.replicas,
            layout.admin_offset,
            wan,
            &mut ports::free,
        )?;
        let busy = ports::busy(&plan.fixed_listeners());
        if !busy.is_empty() {
            let busy: Vec<String> = busy.iter().map(ToString::to_string).collect();
            return Err(Error::PortsBusy(busy.join(", ")));
        }
        let cluster = Self {
            dir: dir.to_path_buf(),
            node_bin: node_bin.to_path_buf(),
            regions_dir: regions_dir.to_path_buf(),
            plan,
            node_args: Vec::new(),
            wraps: BTreeMap::new(),
            node_pids: BTreeMap::new(),
            relay_pids: BTreeMap::new(),
            nginx: false,
        };
        cluster.save()?;
        Ok(cluster)
    }

    /// The mesh planned in `dir`, if any.
    pub fn load(dir: &Path) -> Result<Option<Self>, Error> {
        let path = state_file(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()))(e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::Parse {
                what: path.display().to_string(),
                detail: e.to_string(),
            })
    }

    /// As [`Cluster::load`], a missing plan being an error.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        Self::load(dir)?.ok_or_else(|| Error::NoCluster(dir.to_path_buf()))
    }

    /// Written whole, then renamed: a reader never sees half a file.
    pub(crate) fn save(&self) -> Result<(), Error> {
        let path = state_file(&self.dir);
        let io = Error::io(format!("writing {}", path.display()));
        std::fs::create_dir_all(&self.dir)
            .map_err(Error::io(format!("creating {}", self.dir.display())))?;
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Parse {
            what: "the cluster state".into(),
            detail: e.to_string(),
        })?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(io)
    }

    fn certs_dir(&self) -> PathBuf {
        self.dir.join("certs")
    }

    /// Certificates, relays, nodes (each ready), then nginx for replicas.
    /// The state file is saved after each step, so `down` stops whatever
    /// started before a failure. Returns the node processes by node id,
    /// for a caller that supervises them (a dropped `Child` leaves its
    /// process running).
    pub async fn up(
        &mut self,
        node_args: Vec<String>,
        wraps: BTreeMap<String, Vec<String>>,
    ) -> Result<BTreeMap<String, Child>, Error> {
        self.node_args = node_args;
        self.wraps = wraps;
        let ids: Vec<&str> = self.plan.nodes.iter().map(|n| n.id.as_str()).collect();
        certs::issue(&self.node_bin, &self.certs_dir(), &ids)?;
        certs::token_keys(&self.node_bin, &self.certs_dir())?;
        let relays = self.start_relays();
        self.save()?;
        relays?;
        let mut children = Vec::new();
        for i in 0..self.plan.nodes.len() {
            match self.spawn_node(i) {
                Ok(child) => children.push((i, child)),
                Err(e) => {
                    self.save()?;
                    return Err(e);
                }
            }
        }
        self.save()?;
        let mut started = BTreeMap::new();
        for (i, mut child) in children {
            self.wait_node(i, &mut child).await?;
            started.insert(self.plan.nodes[i].id.clone(), child);
        }
        if self.plan.replicas > 1 {
            self.nginx = true;
            self.save()?;
            nginx::start(&self.plan, &nginx::dir(&self.dir))?;
        }
        Ok(started)
    }

    /// One `node wan-relay` per ordered pair of nodes in different regions.
    fn start_relays(&mut self) -> Result<(), Error> {
        let Some(wan) = &self.plan.wan else {
            return Ok(());
        };
        let dir = self.dir.join("wan");
        std::fs::create_dir_all(&dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        let mut logs = Vec::new();
        for (k, relay) in wan.relays.iter().enumerate() {
            let (from, to) = (&self.plan.nodes[relay.from], &self.plan.nodes[relay.to]);
            let log = dir.join(format!("{}-to-{}.log", from.id, to.id));
            let file =
                File::create(&log).map_err(Error::io(format!("creating {}", log.display())))?;
            let mut command = Command::new(&self.node_bin);
            command
                .arg("wan-relay")
                .arg("--listen")
                .arg(relay.listen.to_string())
                .arg("--forward")
                .arg(to.quic.to_string())
                .args(["--delay", &relay.delay])
                .args(["--jitter", &wan.options.jitter])
                .args(["--loss", &wan.options.loss]);
            let child = spawn_logged(&mut command, file, "a relay")?;
            self.relay_pids.insert(k, child.id());
            logs.push((k, log));
        }
        std::thread::sleep(Duration::from_millis(300));
        for (k, log) in logs {
            if !self.relay_pids.get(&k).is_some_and(|&pid| alive(pid)) {
                let r = &wan.relays[k];
                return Err(Error::RelayExited {
                    relay: format!("{}>{}", r.from, r.to),
                    tail: tail(&log, 3),
                });
            }
        }
        Ok(())
    }

    fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.join(&self.plan.nodes[i].id)
    }

    /// Node `id`'s log, which every start of it appends to.
    pub fn node_log(&self, id: &str) -> PathBuf {
        self.dir.join(id).join("node.log")
    }

    /// `<dir>/pids/<id>.pid`: node `id`'s pid while it runs, for a script
    /// that kills it (`kill -9 $(cat …)`) without parsing the state file.
    pub fn pid_file(&self, id: &str) -> PathBuf {
        self.dir.join("pids").join(format!("{id}.pid"))
    }

    /// Records that node `id` runs as `pid`, in the state (saved by the
    /// caller) and in its pid file.
    fn record_pid(&mut self, id: &str, pid: u32) -> Result<(), Error> {
        self.node_pids.insert(id.to_owned(), pid);
        let path = self.pid_file(id);
        let io = Error::io(format!("writing {}", path.display()));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(Error::io(format!("creating {}", dir.display())))?;
        }
        std::fs::write(&path, format!("{pid}\n")).map_err(io)
    }

    /// Forgets node `id`'s pid, in the state (saved by the caller) and its
    /// pid file, before it is stopped on purpose: a supervisor that sees it
    /// exit then knows it was not a death. Returns the pid it had.
    pub(crate) fn forget_pid(&mut self, id: &str) -> Option<u32> {
        let _ = std::fs::remove_file(self.pid_file(id));
        self.node_pids.remove(id)
    }

    /// Starts node `i` in the background, its output appended to
    /// `<dir>/<id>/node.log`, and records its pid.
    pub(crate) fn spawn_node(&mut self, i: usize) -> Result<Child, Error> {
        let node = &self.plan.nodes[i];
        let dir = self.node_dir(i);
        let data = dir.join("data");
        std::fs::create_dir_all(&data)
            .map_err(Error::io(format!("creating {}", data.display())))?;
        let certs = self.certs_dir();
        let mut args: Vec<String> = vec![
            "--regions".into(),
            self.regions_dir.display().to_string(),
            "--region".into(),
            node.region.clone(),
            "--node-id".into(),
            node.id.clone(),
            "--listen".into(),
            node.http.to_string(),
            "--admin-listen".into(),
            node.admin.to_string(),
            "--mesh-listen".into(),
            node.quic.to_string(),
            "--certs".into(),
            certs.display().to_string(),
            "--token-keys-file".into(),
            certs.join("token.keys").display().to_string(),
            "--data-dir".into(),
            data.display().to_string(),
        ];
        for (j, peer) in self.plan.nodes.iter().enumerate() {
            if j != i {
                args.push("--peer".into());
                args.push(format!("{}={}", peer.id, self.plan.peer_addr(i, j)));
            }
        }
        args.extend(self.node_args.iter().cloned());
        let wrap = self.wraps.get(&node.id).cloned().unwrap_or_default();
        let log_path = dir.join("node.log");
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(Error::io(format!("opening {}", log_path.display())))?;
        let ready = dir.join("ready.json");
        let mut command = launch::node_command(&self.node_bin, &wrap, &ready);
        command.args(&args);
        // Each start, with its whole command line, in the log it appends to.
        let header = format!("=== {} {command:?}\n", chrono::Local::now().to_rfc3339());
        std::io::Write::write_all(&mut log, header.as_bytes())
            .map_err(Error::io(format!("writing {}", log_path.display())))?;
        let id = node.id.clone();
        let child = spawn_logged(&mut command, log, &format!("node {id}"))?;
        self.record_pid(&id, child.id())?;
        Ok(child)
    }

    pub(crate) async fn wait_node(
        &self,
        i: usize,
        child: &mut Child,
    ) -> Result<launch::Ready, Error> {
        let dir = self.node_dir(i);
        launch::wait_ready(child, &dir.join("ready.json"), Some(&dir.join("node.log"))).await
    }

    /// (Re)starts node `id` with the flags `up` gave it, on the same data
    /// folder, and waits until it is ready. Returns its process.
    pub async fn start_node(&mut self, id: &str) -> Result<Child, Error> {
        let i = self.plan.node_index(id)?;
        let spawned = self.spawn_node(i);
        self.save()?;
        let mut child = spawned?;
        self.wait_node(i, &mut child).await?;
        Ok(child)
    }

    /// Stops everything `up` and `start-node` started: nodes first (SIGTERM,
    /// 15 s), while their peers' relays still pass their goodbyes, then the
    /// relays (a stopped relay is continued so that it sees SIGTERM), then
    /// nginx. The nodes are forgotten before they are signalled, so that a
    /// supervisor does not take their exits for deaths.
    pub fn down(&mut self) -> Result<(), Error> {
        let ids: Vec<String> = self.node_pids.keys().cloned().collect();
        let nodes: Vec<u32> = ids.iter().filter_map(|id| self.forget_pid(id)).collect();
        self.save()?;
        stop(&nodes, "TERM", Duration::from_secs(15));
        let relays: Vec<u32> = self.relay_pids.values().copied().collect();
        for &pid in &relays {
            signal(pid, "CONT");
        }
        stop(&relays, "TERM", Duration::from_secs(5));
        self.relay_pids.clear();
        if self.nginx {
            nginx::stop(&nginx::dir(&self.dir));
            self.nginx = false;
        }
        self.save()
    }

    /// Where each region listens: its public API and, per node, the admin
    /// listener (the map at its root), QUIC and log; then the WAN's delays.
    pub fn layout(&self) -> String {
        let plan = &self.plan;
        let mut out = String::new();
        for r in &plan.regions {
            if plan.replicas > 1 {
                let _ = writeln!(out, "region {}: http://{} (nginx) ->", r.id, r.http);
            } else {
                let _ = writeln!(out, "region {}:", r.id);
            }
            for n in plan.nodes.iter().filter(|n| n.region == r.id) {
                let _ = writeln!(
                    out,
                    "  node {:<18} http://{:<16} admin (map) http://{:<16} quic {:<16} log {}",
                    n.id,
                    n.http.to_string(),
                    n.admin.to_string(),
                    n.quic.to_string(),
                    self.node_log(&n.id).display()
                );
            }
        }
        if plan.replicas > 1 {
            let conf = nginx::dir(&self.dir).join("nginx.conf");
            let _ = writeln!(out, "nginx: {} (logs next to it)", conf.display());
        }
        let Some(wan) = &plan.wan else { return out };
        let _ = writeln!(
            out,
            "WAN relays: {} (one per ordered pair of nodes in different regions), jitter {}, loss {}",
            wan.relays.len(),
            wan.options.jitter,
            wan.options.loss
        );
        for p in &wan.pairs {
            if wan.options.delay.is_some() {
                let _ = writeln!(
                    out,
                    "  {:<16} <-> {:<16} one-way {} (--wan-delay)",
                    p.a, p.b, p.delay
                );
            } else {
                let _ = writeln!(
                    out,
                    "  {:<16} <-> {:<16} {:>6} km between centroids: {:.1} ms computed, one-way {} (at least {}ms)",
                    p.a,
                    p.b,
                    format!("{:.1}", p.km),
                    p.computed_ms,
                    p.delay,
                    wan.options.min_ms
                );
            }
        }
        out
    }

    /// Bash assignments for the scripts: the regions (ids, public URLs),
    /// the nodes (ids, regions, QUIC addresses for iptables, pids, admin
    /// URLs for `bot check`), and the relays by `i>j` with their pids
    /// (partitions freeze them).
    pub fn env(&self) -> String {
        let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
        let array = |name: &str, items: Vec<String>| {
            let items: Vec<String> = items.iter().map(|s| quote(s)).collect();
            format!("{name}=({})\n", items.join(" "))
        };
        let nodes = &self.plan.nodes;
        let mut out = String::new();
        out += &array(
            "REGION_IDS",
            self.plan.regions.iter().map(|r| r.id.clone()).collect(),
        );
        out += &array(
            "REGION_HTTP",
            self.plan
                .regions
                .iter()
                .map(|r| format!("http://{}", r.http))
                .collect(),
        );
        out += &array("NODE_IDS", nodes.iter().map(|n| n.id.clone()).collect());
        out += &array(
            "NODE_REGION",
            nodes.iter().map(|n| n.region.clone()).collect(),
        );
        out += &array(
            "NODE_QUIC",
            nodes.iter().map(|n| n.quic.to_string()).collect(),
        );
        let pid = |id: &str| {
            self.node_pids
                .get(id)
                .map_or_else(String::new, u32::to_string)
        };
        out += &array("NODE_PID", nodes.iter().map(|n| pid(&n.id)).collect());
        let urls = nodes.iter().map(|n| format!("{}=http://{}", n.id, n.admin));
        out += &array("NODE_URLS", urls.collect());
        let relays = self
            .plan
            .wan
            .iter()
            .flat_map(|w| w.relays.iter().enumerate());
        let keyed: Vec<(String, Option<u32>)> = relays
            .map(|(k, r)| {
                (
                    format!("{}>{}", r.from, r.to),
                    self.relay_pids.get(&k).copied(),
                )
            })
            .collect();
        out += &array(
            "RELAY_KEYS",
            keyed.iter().map(|(key, _)| key.clone()).collect(),
        );
        let pids: Vec<String> = keyed
            .iter()
            .filter_map(|(key, pid)| Some(format!("[{}]={pid}", quote(key), pid = (*pid)?)))
            .collect();
        let _ = writeln!(out, "declare -gA RELAY_PID=({})", pids.join(" "));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Region;

    fn cluster(dir: &Path) -> Cluster {
        let regions = ["a", "b"].map(|id| Region {
            id: id.into(),
            http: if id == "a" {
                "127.0.0.1:8081"
            } else {
                "127.0.0.1:8082"
            }
            .parse()
            .unwrap(),
            quic: if id == "a" {
                "127.0.0.1:9081"
            } else {
                "127.0.0.1:9082"
            }
            .parse()
            .unwrap(),
        });
        let options = WanOptions {
            delay: None,
            jitter: "5ms".into(),
            loss: "0.01".into(),
            min_ms: 20,
        };
        let wan = Some((options, vec![("a".into(), "b".into(), 4.0)]));
        let plan = Plan::build(regions.to_vec(), 1, 100, wan, &mut ports::free).unwrap();
        Cluster {
            dir: dir.to_path_buf(),
            node_bin: "node".into(),
            regions_dir: "regions".into(),
            plan,
            node_args: vec![],
            wraps: BTreeMap::new(),
            node_pids: BTreeMap::from([("b".into(), 42)]),
            relay_pids: BTreeMap::from([(1, 7)]),
            nginx: false,
        }
    }

    #[test]
    fn the_state_file_reads_back_what_was_saved() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Cluster::load(dir.path()).unwrap().is_none());
        let saved = cluster(dir.path());
        saved.save().unwrap();
        let loaded = Cluster::open(dir.path()).unwrap();
        assert_eq!(loaded.plan, saved.plan);
        assert_eq!(loaded.node_pids, saved.node_pids);
        assert_eq!(loaded.relay_pids, saved.relay_pids);
    }

    #[test]
    fn env_gives_bash_the_nodes_and_the_relays_by_pair() {
        let dir = tempfile::tempdir().unwrap();
        let env = cluster(dir.path()).env();
        assert!(env.contains("NODE_IDS=('a' 'b')\n"), "{env}");
        assert!(
            env.contains("REGION_HTTP=('http://127.0.0.1:8081' 'http://127.0.0.1:8082')\n"),
            "{env}"
        );
        assert!(env.contains("NODE_PID=('' '42')\n"), "{env}");
        assert!(env.contains("NODE_URLS=('a=http://127.0.0.1:8181' 'b=http://127.0.0.1:8182')\n"));
        assert!(env.contains("RELAY_KEYS=('0>1' '1>0')\n"), "{env}");
        assert!(env.contains("declare -gA RELAY_PID=(['1>0']=7)\n"), "{env}");
    }

    #[test]
    fn the_layout_shows_each_node_and_the_delay_s_lower_bound() {
        let dir = tempfile::tempdir().unwrap();
        let layout = cluster(dir.path()).layout();
        assert!(layout.starts_with("region a:\n  node a "), "{layout}");
        assert!(
            layout.contains("admin (map) http://127.0.0.1:8181"),
            "{layout}"
        );
        assert!(
            layout.contains(
                "4.0 km between centroids: 10.0 ms computed, one-way 20ms (at least 20ms)"
            ),
            "{layout}"
        );
    }
}
