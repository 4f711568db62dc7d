//! Three region nodes as separate processes, replicating over real QUIC
//! with mutual TLS on loopback.

use std::path::Path;

use ride_types::api::{DebugState, MatchList};

use crate::support::*;

pub const REGIONS: [&str; 3] = ["dhaka-north", "dhaka-southeast", "dhaka-southwest"];

fn regions_dir() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../regions")
}

pub struct Mesh {
    pub nodes: Vec<Option<NodeProcess>>,
    /// Each node's QUIC port on loopback.
    pub mesh_ports: Vec<u16>,
    args: Vec<Vec<String>>,
    /// The command each node runs under, if any (see
    /// [`NodeProcess::start_under`]).
    wraps: Vec<Vec<String>>,
    dirs: Vec<tempfile::TempDir>,
}

impl Mesh {
    pub async fn start(certs: &Path) -> Self {
        Self::start_with(certs, |_| Vec::new()).await
    }

    /// Starts one node per region, node `i` with `extra(i)` added to its
    /// flags.
    pub async fn start_with(certs: &Path, extra: impl Fn(usize) -> Vec<String>) -> Self {
        Self::start_under(certs, extra, |_| Vec::new()).await
    }

    /// As [`Mesh::start_with`], node `i` run under `wrap(i)`.
    pub async fn start_under(
        certs: &Path,
        extra: impl Fn(usize) -> Vec<String>,
        wrap: impl Fn(usize) -> Vec<String>,
    ) -> Self {
        let node_bin = Path::new(env!("CARGO_BIN_EXE_node"));
        devcluster::certs::issue(node_bin, certs, &REGIONS).expect("node certs");
        // Free UDP ports on loopback, released for the nodes to take.
        let ports = devcluster::ports::free(0, REGIONS.len()).expect("free ports");
        let mut args = Vec::new();
        for (i, region) in REGIONS.iter().enumerate() {
            let mut a: Vec<String> = vec![
                "--regions".into(),
                regions_dir().into(),
                "--region".into(),
                (*region).into(),
                "--node-id".into(),
                (*region).into(),
                "--mesh-listen".into(),
                format!("127.0.0.1:{}", ports[i]),
                "--certs".into(),
                certs.display().to_string(),
                "--mesh-ready-grace".into(),
                "2s".into(),
                "--request-ttl".into(),
                "30s".into(),
            ];
            for (j, peer) in REGIONS.iter().enumerate() {
                if j != i {
                    a.push("--peer".into());
                    a.push(format!("{peer}=127.0.0.1:{}", ports[j]));
                }
            }
            a.extend(extra(i));
            args.push(a);
        }
        let dirs: Vec<_> = REGIONS
            .iter()
            .map(|_| tempfile::tempdir().unwrap())
            .collect();
        let mut mesh = Mesh {
            nodes: Vec::new(),
            mesh_ports: ports,
            args,
            wraps: (0..REGIONS.len()).map(wrap).collect(),
            dirs,
        };
        for i in 0..REGIONS.len() {
            let node = mesh.launch(i).await;
            mesh.nodes.push(Some(node));
        }
        mesh
    }

    pub async fn launch(&self, i: usize) -> NodeProcess {
        let args: Vec<&str> = self.args[i].iter().map(String::as_str).collect();
        let wrap: Vec<&str> = self.wraps[i].iter().map(String::as_str).collect();
        NodeProcess::start_under(&wrap, self.dirs[i].path(), &args).await
    }

    pub fn node(&self, i: usize) -> &NodeProcess {
        self.nodes[i].as_ref().expect("running")
    }

    pub async fn states(&self, http: &reqwest::Client) -> Option<Vec<DebugState>> {
        let mut states = Vec::new();
        for node in self.nodes.iter().flatten() {
            let state = http.get(node.admin_url("/debug/state")).send().await.ok()?;
            states.push(state.json().await.ok()?);
        }
        Some(states)
    }

    pub async fn matches(&self, http: &reqwest::Client, i: usize) -> Option<MatchList> {
        let list = http
            .get(self.node(i).admin_url("/matches?limit=1000"))
            .send()
            .await
            .ok()?;
        list.json().await.ok()
    }

    pub async fn converged(&self, http: &reqwest::Client) {
        eventually("every node to be in step on what it shares", || async {
            let states = self.states(http).await?;
            let same = states.iter().all(|s| s.ready) && DebugState::all_in_step(&states);
            same.then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_border_pair_is_matched_once_everywhere_and_survives_a_restart() {
    let certs = tempfile::tempdir().unwrap();
    let mut mesh = Mesh::start(certs.path()).await;
    let http = reqwest::Client::new();
    mesh.converged(&http).await;

    // The rider is 11 m north of the north/south-east border, the driver
    // 11 m south of it: each region accepts its own, and only a claim
    // across the border can match them. Both are 3 km from the south-west:
    // within every region's halo, so every node holds them.
    let (north, southeast) = (0, 1);
    let mut rider_socket = Socket::connect(mesh.node(north)).await;
    let mut driver_socket = Socket::connect(mesh.node(southeast)).await;
    let rider = post_rider(
        &http,
        mesh.node(north),
        "North",
        at(23.7801, 90.43),
        at(23.80, 90.43),
    )
    .await;
    let driver = post_driver(
        &http,
        mesh.node(southeast),
        "South",
        "BORDER-1",
        at(23.7799, 90.43),
    )
    .await;
    assert_eq!(
        (rider.region.as_str(), driver.region.as_str()),
        ("dhaka-north", "dhaka-southeast")
    );
    let told_rider = told_both(&mut rider_socket, &rider, &mut driver_socket, &driver).await;
    assert_eq!(
        told_rider.region, "dhaka-north",
        "the rider's owner commits"
    );

    mesh.converged(&http).await;
    for i in 0..REGIONS.len() {
        let list = eventually("the match on every node", || async {
            let list = mesh.matches(&http, i).await?;
            (!list.matches.is_empty()).then_some(list)
        })
        .await;
        assert_eq!(list.matches, vec![told_rider.clone()], "node {i}");
    }
    // Each node records the match, and only its committer counts it as
    // decided: summed over the mesh, decided matches are riders matched.
    // (The counters move just after the match log, so they are polled.)
    let counts = eventually("every node to count the match", || async {
        let mut counts = Vec::new();
        for i in 0..REGIONS.len() {
            let metrics = metrics_of(&http, mesh.node(i)).await?;
            counts.push((
                counter(&metrics, "ride_matches_committed_total"),
                counter(&metrics, "ride_matches_decided_total"),
            ));
        }
        counts
            .iter()
            .all(|&(recorded, _)| recorded >= 1.0)
            .then_some(counts)
    })
    .await;
    let decided: f64 = counts.iter().map(|&(_, decided)| decided).sum();
    assert_eq!((counts[north].1, decided), (1.0, 1.0), "{counts:?}");
    assert!(
        counts.iter().all(|&(recorded, _)| recorded == 1.0),
        "{counts:?}"
    );

    // Tokens verify on every node without asking the one that minted them:
    // the rider, accepted in the north, follows and rates its match from
    // the south-west.
    let southwest = 2;
    let mut elsewhere = Socket::connect(mesh.node(southwest)).await;
    elsewhere.subscribe(&[&rider]).await;
    assert_eq!(elsewhere.next_match().await, told_rider);
    let rated = http
        .post(mesh.node(southwest).url("/rating"))
        .json(
            &serde_json::json!({"rider_id": rider.id, "token": rider.token,
                                  "car_number": "BORDER-1", "stars": 5}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(rated.status(), 201);

    // kill -9 the south-east node, restart it: it resyncs from its peers and
    // commits nothing that conflicts.
    drop(mesh.nodes[southeast].take());
    let again = post_driver(
        &http,
        mesh.node(north),
        "Other",
        "BORDER-2",
        at(23.7900, 90.43),
    )
    .await;
    mesh.nodes[southeast] = Some(mesh.launch(southeast).await);
    mesh.converged(&http).await;
    let list = eventually("the restarted node to know the match", || async {
        let list = mesh.matches(&http, southeast).await?;
        list.matches
            .iter()
            .any(|m| m.rider_id == rider.id)
            .then_some(list)
    })
    .await;
    for m in &list.matches {
        if m.rider_id == rider.id {
            assert_eq!(m.driver_id, driver.id, "re-assigned after the restart");
        }
        assert_ne!(m.driver_id, again.id, "an unmatched driver became matched");
    }
    let states = mesh.states(&http).await.unwrap();
    assert!(
        states
            .iter()
            .all(|s| s.pending_drivers == 1 && s.pending_riders == 0),
        "{states:?}"
    );

    // Halo replication, between real processes: a driver deep inside the
    // north (over 10 km from any border, past the 5 km radius) never
    // leaves it.
    let home = post_driver(&http, mesh.node(north), "Home", "HOME-1", at(23.93, 90.35)).await;
    eventually("the north to hold its interior driver", || async {
        let states = mesh.states(&http).await?;
        (states[north].pending_drivers == 2).then_some(())
    })
    .await;
    mesh.converged(&http).await;
    let states = mesh.states(&http).await.unwrap();
    let pending: Vec<usize> = states.iter().map(|s| s.pending_drivers).collect();
    assert_eq!(pending, [2, 1, 1], "{} went beyond its region", home.id);
}
