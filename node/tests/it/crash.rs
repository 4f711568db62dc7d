//! Crashes and clocks, with real processes over real QUIC: a node killed
//! with `kill -9` and restarted next to a stale peer never commits a driver
//! it handed over, and a node whose wall clock is shifted (`faketime`) is
//! reported as skewed while every rider and driver is still matched once.
//!
//! Partitions are packet drops on the nodes' QUIC ports (iptables on
//! loopback, tagged and removed when the test ends). Without root and
//! iptables, or without faketime, the tests return at once, except under
//! CI, where they are required.

use std::process::Command;
use std::time::Duration;

use ride_types::api::{DebugState, ServerMessage};

use crate::mesh::{Mesh, REGIONS};
use crate::support::*;

const TAG: &str = "ride-it";

fn have(program: &str, probe: &[&str]) -> bool {
    Command::new(program)
        .args(probe)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether a test that needs `what` may run; panics under CI if not.
fn required(available: bool, what: &str) -> bool {
    assert!(
        available || std::env::var_os("CI").is_none(),
        "{what} is required under CI"
    );
    if !available {
        eprintln!("no {what}: skipping");
    }
    available
}

/// UDP between two loopback ports dropped both ways, until dropped.
struct Cut {
    rules: Vec<Vec<String>>,
}

impl Cut {
    fn between(a: u16, b: u16) -> Self {
        let rules: Vec<Vec<String>> = [(a, b), (b, a)]
            .iter()
            .map(|(from, to)| {
                [
                    "INPUT",
                    "-i",
                    "lo",
                    "-p",
                    "udp",
                    "--sport",
                    &from.to_string(),
                    "--dport",
                    &to.to_string(),
                    "-m",
                    "comment",
                    "--comment",
                    TAG,
                    "-j",
                    "DROP",
                ]
                .map(String::from)
                .to_vec()
            })
            .collect();
        for rule in &rules {
            let status = Command::new("iptables")
                .arg("-I")
                .args(rule)
                .status()
                .expect("iptables");
            assert!(status.success(), "iptables -I {rule:?}");
        }
        Self { rules }
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        for rule in &self.rules {
            let _ = Command::new("iptables").arg("-D").args(rule).status();
        }
    }
}

async fn state(http: &reqwest::Client, node: &NodeProcess) -> DebugState {
    get_json(http, &node.admin_url("/debug/state")).await
}

/// The scenario, step by step. Before the journal, the restarted
/// node learnt its own old document from the stale peer (the driver open,
/// no transfer) and committed the driver a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_and_restarted_next_to_a_stale_peer_never_commits_a_driver_twice() {
    let iptables = running_as_root() && have("iptables", &["-S", "INPUT"]);
    if !required(iptables, "root and iptables") {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    // Requests live 30 s: long enough for every step below.
    let mut mesh = Mesh::start(certs.path()).await;
    let http = reqwest::Client::new();
    mesh.converged(&http).await;
    let (a, b, c) = (0, 1, 2); // north, south-east, south-west
    let port = |i: usize| mesh.mesh_ports[i];

    // A driver 10 m south of the north/south-east border, owned by B,
    // replicated to C.
    let driver = post_driver(&http, mesh.node(b), "Driver", "TWICE-1", at(23.7799, 90.43)).await;
    assert_eq!(driver.region, REGIONS[b]);
    let mut driver_socket = Socket::connect(mesh.node(b)).await;
    driver_socket.subscribe(&[&driver]).await;
    eventually("C to hold the driver", || async {
        (state(&http, mesh.node(c)).await.pending_drivers == 1).then_some(())
    })
    .await;

    // C is cut off; a rider 10 m north of the driver: A claims, B hands the
    // driver over, A commits, both are told.
    let c_from_a = Cut::between(port(c), port(a));
    let c_from_b = Cut::between(port(c), port(b));
    let first = post_rider(
        &http,
        mesh.node(a),
        "First",
        at(23.7801, 90.43),
        at(23.80, 90.43),
    )
    .await;
    let mut rider_socket = Socket::connect(mesh.node(a)).await;
    rider_socket.subscribe(&[&first]).await;
    let told = rider_socket.next_match().await;
    assert_eq!((told.rider_id, told.driver_id), (first.id, driver.id));
    assert_eq!(driver_socket.next_match().await, told);

    // B is killed; A is cut off from B (and still from C); B and C can talk
    // again; B restarts with its id and data folder.
    drop(mesh.nodes[b].take());
    let a_from_b = Cut::between(port(a), port(b));
    drop(c_from_b);
    mesh.nodes[b] = Some(mesh.launch(b).await);
    eventually(
        "B to be ready (in sync with C, or past its grace)",
        || async { state(&http, mesh.node(b)).await.ready.then_some(()) },
    )
    .await;

    // A second rider next to the driver, at B.
    let second = post_rider(
        &http,
        mesh.node(b),
        "Second",
        at(23.7798, 90.43),
        at(23.70, 90.43),
    )
    .await;
    let mut second_socket = Socket::connect(mesh.node(b)).await;
    second_socket.subscribe(&[&second]).await;
    assert!(matches!(
        second_socket.next().await,
        ServerMessage::Subscribed { .. }
    ));
    second_socket.stay_quiet_for(Duration::from_secs(3)).await;

    // Heal everything: every node in step, and the driver in one match everywhere.
    drop((a_from_b, c_from_a));
    mesh.converged(&http).await;
    for i in 0..REGIONS.len() {
        let list = eventually("the first match everywhere", || async {
            let list = mesh.matches(&http, i).await?;
            list.matches
                .iter()
                .any(|m| m.rider_id == first.id)
                .then_some(list)
        })
        .await;
        let with_driver: Vec<_> = list
            .matches
            .iter()
            .filter(|m| m.driver_id == driver.id)
            .collect();
        assert_eq!(with_driver.len(), 1, "node {i}: {:?}", list.matches);
        assert_eq!(with_driver[0].rider_id, first.id, "node {i}");
        let s = state(&http, mesh.node(i)).await;
        assert_eq!(s.conflicting_commits, 0, "node {i}: {s:?}");
    }
    second_socket
        .stay_quiet_for(Duration::from_millis(500))
        .await;
}

/// A node whose wall clock runs 3 s ahead (beyond the 1 s bound) is shown
/// as skewed by its peers, and cross-border matching stays single.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skewed_clock_is_reported_and_changes_no_match() {
    // Preloaded through env, which execs the node, so that killing the
    // process kills the node (the faketime wrapper forks).
    let lib = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|arch| arch.path().join("faketime/libfaketime.so.1"))
        .find(|lib| lib.exists());
    if !required(lib.is_some(), "libfaketime") {
        return;
    }
    let preload = format!("LD_PRELOAD={}", lib.unwrap().display());
    let certs = tempfile::tempdir().unwrap();
    let skewed = 1;
    let mesh = Mesh::start_under(
        certs.path(),
        |_| Vec::new(),
        |i| {
            if i == skewed {
                vec![
                    "env".into(),
                    preload.clone(),
                    "FAKETIME=+3s".into(),
                    "FAKETIME_DONT_FAKE_MONOTONIC=1".into(),
                ]
            } else {
                Vec::new()
            }
        },
    )
    .await;
    let http = reqwest::Client::new();
    mesh.converged(&http).await;

    let north = state(&http, mesh.node(0)).await;
    let peer = eventually("north to measure south-east's clock", || async {
        let s = state(&http, mesh.node(0)).await;
        s.peers
            .into_iter()
            .find(|p| p.node == REGIONS[skewed] && p.clock_offset_ms.is_some())
    })
    .await;
    let offset = peer.clock_offset_ms.unwrap();
    assert!(
        (2_500.0..3_500.0).contains(&offset),
        "south-east is 3 s ahead, measured {offset} ms"
    );
    assert!(peer.clock_skewed, "{peer:?}");
    assert!(
        north
            .peers
            .iter()
            .all(|p| p.node == REGIONS[skewed] || !p.clock_skewed),
        "{north:?}"
    );
    let metrics = metrics_of(&http, mesh.node(0))
        .await
        .expect("/metrics answers");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("mesh_peer_clock_skewed{")
                && l.contains(REGIONS[skewed])
                && l.ends_with(" 1")),
        "no skew in /metrics"
    );

    // Riders and drivers on both sides of the north/south-east border: each
    // is told at most one partner, the same on both sides.
    let mut riders = Vec::new();
    let mut drivers = Vec::new();
    for k in 0..4 {
        let lon = 90.44 + f64::from(k) * 0.004;
        riders.push(
            post_rider(&http, mesh.node(0), "R", at(23.7801, lon), at(23.8, lon))
                .await
                .id,
        );
        drivers.push(
            post_driver(
                &http,
                mesh.node(skewed),
                "D",
                &format!("SKEW-{k}"),
                at(23.7799, lon),
            )
            .await
            .id,
        );
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    mesh.converged(&http).await;
    let mut seen = std::collections::HashMap::new();
    for i in 0..REGIONS.len() {
        let list = mesh.matches(&http, i).await.unwrap();
        for m in list.matches {
            for id in [m.rider_id, m.driver_id] {
                let pair = (m.rider_id, m.driver_id);
                assert_eq!(*seen.entry(id).or_insert(pair), pair, "{id} in two matches");
            }
        }
        assert_eq!(state(&http, mesh.node(i)).await.conflicting_commits, 0);
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"))
}
