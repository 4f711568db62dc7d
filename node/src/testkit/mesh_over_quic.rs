//! The mesh over real QUIC on loopback, several nodes in one process:
//! a cross-owner match commits once and converges everywhere, and peers
//! without the mesh's credentials, or whose frames do not decode, are
//! refused.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::net::compression::FrameCompressor;
use crate::net::tls::{self, Credentials, PemPair};
use crate::net::transport::{BoundMesh, Mesh, MeshConfig, Peer};
use crate::protocol::intake::{NewDriver, NewRider};
use crate::protocol::message::{PeerMessage, PeerMessageV1};
use crate::protocol::replica::ReplicaConfig;
use crate::runtime::node::{Node, Status};
use crate::runtime::recent_matches::Retention;
use crate::testkit::{TestCore, replica_config};
use ride_types::api::Position;
use ride_types::clock::Millis;
use ride_types::halo::Layout;
use ride_types::ids::{NodeId, RequestId};

const PATIENCE: Duration = Duration::from_secs(20);

fn node(name: &str) -> NodeId {
    NodeId(name.into())
}

fn credentials(ca: &PemPair, name: &str) -> Credentials {
    let pair = tls::issue(ca, &node(name), &["127.0.0.1".parse().unwrap()]).unwrap();
    Credentials::from_pem(&ca.cert, &pair).unwrap()
}

struct Running {
    cores: Vec<Arc<Node>>,
    /// Each node's peer list, as discovery would publish it.
    membership: Vec<watch::Sender<Vec<Peer>>>,
    everyone: Vec<Vec<Peer>>,
    /// Dropping a mesh stops it.
    _meshes: Vec<Mesh>,
    /// Each node's journal folder.
    _dirs: Vec<tempfile::TempDir>,
    addrs: Vec<SocketAddr>,
    shutdown: CancellationToken,
}

/// Starts one replica and mesh endpoint per name, all peers of each other,
/// each stepping its protocol every 20 ms.
fn start(ca: &PemPair, names: &[&str]) -> Running {
    start_knowing(ca, names, |_, _| true)
}

/// As [`start`], node `i` initially knowing node `j` as a peer only if
/// `knows(i, j)`.
fn start_knowing(ca: &PemPair, names: &[&str], knows: impl Fn(usize, usize) -> bool) -> Running {
    let shutdown = CancellationToken::new();
    let bound: Vec<BoundMesh> = names
        .iter()
        .map(|n| BoundMesh::bind("127.0.0.1:0".parse().unwrap(), &credentials(ca, n)).unwrap())
        .collect();
    let addrs: Vec<SocketAddr> = bound.iter().map(BoundMesh::local_addr).collect();
    let mut cores = Vec::new();
    let mut dirs = Vec::new();
    let mut meshes = Vec::new();
    let mut membership = Vec::new();
    let mut everyone = Vec::new();
    for (i, b) in bound.into_iter().enumerate() {
        let retention = Retention {
            ms: 60_000,
            max_matches: 1_000,
        };
        let test_core = TestCore::new(
            ReplicaConfig {
                region: names[i].into(),
                ..replica_config(names[i])
            },
            retention,
        );
        let (core, dir) = test_core.into_shared();
        dirs.push(dir);
        let peers: Vec<(usize, Peer)> = names
            .iter()
            .zip(&addrs)
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(j, (n, a))| {
                let peer = Peer {
                    node: node(n),
                    addr: *a,
                };
                (j, peer)
            })
            .collect();
        let known = peers
            .iter()
            .filter(|(j, _)| knows(i, *j))
            .map(|(_, p)| p.clone())
            .collect();
        let (publish, peer_list) = watch::channel(known);
        membership.push(publish);
        everyone.push(peers.into_iter().map(|(_, p)| p).collect());
        meshes.push(b.start(
            MeshConfig {
                node: node(names[i]),
                region: names[i].into(),
                layout: Layout::unmapped(5.0).fingerprint(),
                peers: peer_list,
                sync_interval: Duration::from_millis(10),
            },
            core.clone(),
            shutdown.clone(),
        ));
        // As the server runs it: a group committer, and the step loop.
        let _flusher = Arc::clone(&core).run_flusher(Duration::ZERO, shutdown.clone());
        let (stepping, stop) = (Arc::clone(&core), shutdown.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let _ = stepping.step(Millis::now());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        cores.push(core);
    }
    Running {
        cores,
        _dirs: dirs,
        membership,
        everyone,
        _meshes: meshes,
        addrs,
        shutdown,
    }
}

const HERE: Position = Position {
    lat: 23.78,
    lon: 90.40,
};

/// Node `i` accepts a rider at [`HERE`].
fn accept_rider(mesh: &Running, i: usize) -> RequestId {
    let to = Position {
        lat: 23.8,
        lon: 90.4,
    };
    let new = NewRider {
        name: "rider".into(),
        position: HERE,
        destination: to,
    };
    mesh.cores[i].submit_rider(new, Millis::now()).0.id
}

/// Node `i` accepts a driver at [`HERE`].
fn accept_driver(mesh: &Running, i: usize, car: &str) -> RequestId {
    let new = NewDriver {
        name: "driver".into(),
        car_number: car.into(),
        position: HERE,
    };
    mesh.cores[i].submit_driver(new, Millis::now()).0.id
}

/// Every node holds the same replicated state.
fn one_digest(mesh: &Running) -> bool {
    let digests: Vec<u64> = mesh
        .cores
        .iter()
        .map(|c| c.snapshot(Millis::now()).digest)
        .collect();
    digests.iter().all(|d| *d == digests[0])
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_owner_match_commits_once_and_converges_over_quic() {
    let ca = tls::new_ca("test mesh").unwrap();
    let mesh = start(&ca, &["a", "b", "c"]);
    let rider = accept_rider(&mesh, 0);
    let driver = accept_driver(&mesh, 2, "QUIC-1");

    eventually("every node to see the commit", || {
        mesh.cores.iter().all(|c| {
            c.match_of(&rider)
                .is_some_and(|m| m.driver.id == driver && m.committed_by == node("a"))
        })
    })
    .await;
    eventually("digests to agree", || one_digest(&mesh)).await;
    for c in &mesh.cores {
        assert_eq!(c.snapshot(Millis::now()).committed_matches, 1);
    }
    let a = mesh.cores[0].snapshot(Millis::now()).stats;
    let c = mesh.cores[2].snapshot(Millis::now()).stats;
    assert_eq!((a.claims_sent, c.transfers_granted), (1, 1));
    mesh.shutdown.cancel();
}

/// Peers found later (as discovery finds machines) are dialed and accepted:
/// a node nobody knew at first joins, and its driver is matched across
/// owners once everyone learns of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_discovered_later_joins_and_converges() {
    let ca = tls::new_ca("test mesh").unwrap();
    let newcomer = 2;
    let mesh = start_knowing(&ca, &["a", "b", "c"], |i, j| i != newcomer && j != newcomer);
    let rider = accept_rider(&mesh, 0);
    let driver = accept_driver(&mesh, newcomer, "JOIN-1");
    eventually("a and b to sync without the newcomer", || {
        mesh.cores[1].status(&rider, Millis::now()) == Status::Pending
    })
    .await;
    assert_eq!(
        mesh.cores[0].status(&driver, Millis::now()),
        Status::Unknown
    );

    for (publish, peers) in mesh.membership.iter().zip(&mesh.everyone) {
        publish.send_replace(peers.clone());
    }
    eventually("every node to see the commit", || {
        mesh.cores
            .iter()
            .all(|c| c.match_of(&rider).is_some_and(|m| m.driver.id == driver))
    })
    .await;
    eventually("digests to agree", || one_digest(&mesh)).await;
    mesh.shutdown.cancel();
}

/// A client endpoint that dials `addr` with the given credentials and, if
/// the handshake succeeds, says hello as `claims_to_be`, deflated as a node
/// would. Returns whether the node kept talking to it.
async fn intrude(
    credentials: &Credentials,
    addr: SocketAddr,
    server: &str,
    claims_to_be: &str,
) -> bool {
    let hello = hello(claims_to_be, Layout::unmapped(5.0).fingerprint());
    intrude_with(credentials, addr, server, deflated(&hello)).await
}

/// A hello frame's payload, before compression.
fn hello(claims_to_be: &str, layout: u64) -> Vec<u8> {
    postcard::to_stdvec(&PeerMessage::V1(PeerMessageV1::Hello {
        node: node(claims_to_be),
        region: claims_to_be.into(),
        layout,
    }))
    .unwrap()
}

fn deflated(payload: &[u8]) -> Vec<u8> {
    FrameCompressor::new().compress(payload).unwrap()
}

/// [`intrude`], sending `payload` as the first frame.
async fn intrude_with(
    credentials: &Credentials,
    addr: SocketAddr,
    server: &str,
    payload: Vec<u8>,
) -> bool {
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(credentials.client_config().unwrap());
    let Ok(connecting) = endpoint.connect(addr, server) else {
        return false;
    };
    let Ok(Ok(connection)) = tokio::time::timeout(PATIENCE, connecting).await else {
        return false;
    };
    let Ok((mut send, mut recv)) = connection.open_bi().await else {
        return false;
    };
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend(payload);
    if send.write_all(&frame).await.is_err() {
        return false;
    }
    // An accepted peer gets sync traffic (or, superseded by the real peer
    // reconnecting, a clean close); a refused one is closed as unknown.
    let mut buf = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(3), recv.read(&mut buf)).await {
        Ok(Ok(Some(_))) | Err(_) => true,
        Ok(_) => matches!(
            connection.close_reason(),
            Some(quinn::ConnectionError::ApplicationClosed(closed))
                if closed.error_code == quinn::VarInt::from_u32(0)
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_without_the_mesh_credentials_are_refused() {
    let ca = tls::new_ca("test mesh").unwrap();
    let mesh = start(&ca, &["b", "c"]);
    let target = mesh.addrs[1]; // c accepts connections from b

    // A certificate from another CA: the handshake fails.
    let other_ca = tls::new_ca("other mesh").unwrap();
    let foreign = tls::issue(&other_ca, &node("b"), &[]).unwrap();
    let foreign = Credentials::from_pem(&ca.cert, &foreign).unwrap();
    assert!(
        !intrude(&foreign, target, "c", "b").await,
        "foreign certificate accepted"
    );

    // A mesh certificate, but saying hello as another node: refused.
    let mallory = credentials(&ca, "a");
    assert!(
        !intrude(&mallory, target, "c", "b").await,
        "impersonation accepted"
    );

    // A mesh certificate for a node that is not c's peer: refused.
    let stranger = credentials(&ca, "a");
    assert!(
        !intrude(&stranger, target, "c", "a").await,
        "unknown peer accepted"
    );

    // b's own credentials, but another region layout: refused, since halos
    // drawn on two maps would send requests where they cannot be matched.
    let genuine = credentials(&ca, "b");
    assert!(
        !intrude_with(&genuine, target, "c", deflated(&hello("b", 0xfeed))).await,
        "another layout accepted"
    );

    // b's own credentials and layout, but a frame that is not deflated:
    // refused as a protocol error, not a panic and not a hang.
    let unmapped = Layout::unmapped(5.0).fingerprint();
    assert!(
        !intrude_with(&genuine, target, "c", hello("b", unmapped)).await,
        "an undeflated frame accepted"
    );

    // Controls: the same probe with b's real credentials is let in, and the
    // real b is still connected and syncing.
    assert!(
        intrude(&genuine, target, "c", "b").await,
        "the probe cannot tell"
    );
    let (ticket, _) = mesh.cores[0].submit_rider(
        NewRider {
            name: "still".into(),
            position: Position {
                lat: 23.8,
                lon: 90.4,
            },
            destination: Position {
                lat: 23.8,
                lon: 90.4,
            },
        },
        Millis::now(),
    );
    eventually("b's rider to reach c", || {
        mesh.cores[1].status(&ticket.id, Millis::now()) == Status::Pending
    })
    .await;
    mesh.shutdown.cancel();
}

/// Both nodes take a burst at once, so each has more to send than the
/// other's flow-control window holds. A session that only reads between
/// writes deadlocks here (each blocked sending to a peer that is itself
/// blocked sending); reading and writing at once, both drain and converge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_on_both_sides_at_once_still_converge() {
    const BURST: usize = 20_000;
    let ca = tls::new_ca("test mesh").unwrap();
    let mesh = start(&ca, &["a", "b"]);
    for i in 0..2 {
        for k in 0..BURST {
            accept_driver(&mesh, i, &format!("BURST-{k}"));
        }
    }
    let deadline = tokio::time::Instant::now() + 5 * PATIENCE;
    loop {
        let states: Vec<_> = mesh
            .cores
            .iter()
            .map(|c| c.snapshot(Millis::now()))
            .collect();
        if states
            .iter()
            .all(|s| s.pending_drivers == 2 * BURST && s.digest == states[0].digest)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no convergence after a two-sided burst: {:?}",
            states
                .iter()
                .map(|s| (s.pending_drivers, s.digest))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    mesh.shutdown.cancel();
}
