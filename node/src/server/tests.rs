use std::time::Duration;

use clap::Parser;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use super::*;
use crate::net::tls;
use ride_types::api::DebugState;

/// Only waited out when something is wrong.
const PATIENCE: Duration = Duration::from_secs(30);

/// Fly's resolver as the Fly node sees it: its peer is a machine of the
/// app (machine ids are alphanumeric).
struct FlyDns;

#[async_trait::async_trait]
impl Dns for FlyDns {
    async fn txt(&self, _name: &str) -> Result<Vec<String>, DiscoveryError> {
        Ok(vec!["bnode sin,zmachine sin".into()])
    }

    async fn aaaa(&self, _name: &str) -> Result<Vec<std::net::Ipv6Addr>, DiscoveryError> {
        Ok(vec![std::net::Ipv6Addr::LOCALHOST])
    }
}

/// A node on loopback ports, its data in `dir/<name>`.
fn config(dir: &Path, key: &str, name: &str, extra: &[&str]) -> Config {
    let data = dir.join(name);
    let mut args = vec![
        "node".to_owned(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--admin-listen".into(),
        "127.0.0.1:0".into(),
        "--mesh-listen".into(),
        "127.0.0.1:0".into(),
        "--certs".into(),
        dir.join("certs").display().to_string(),
        "--token-keys".into(),
        key.into(),
        "--data-dir".into(),
        data.display().to_string(),
        "--ready-file".into(),
        data.join("ready.json").display().to_string(),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let mut config = Config::try_parse_from(args).expect("valid flags");
    // The CQL cluster that other tests use (`CQL_NODES`, set by the
    // test command) is not these nodes' store.
    config.cql.nodes.clear();
    config
}

async fn state(http: &reqwest::Client, node: &RunningNode) -> Option<DebugState> {
    let url = format!("http://{}/debug/state", node.admin_addr());
    http.get(url).send().await.ok()?.json().await.ok()
}

/// A node on Fly (so with peer discovery running), a peer in session
/// with it, a rate limit (its sweep task) and a websocket client: its
/// shutdown ends within the grace, every task it started has ended by
/// then, and the client was told the node is going away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_joins_every_task_within_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let key = crate::config::new_key_text().unwrap();
    // The Fly machine has the larger id, so the peer dials it.
    let (fly_id, peer_id) = ("zmachine", "bnode");
    tls::write_certificates(
        &dir.path().join("certs"),
        &[NodeId(fly_id.into()), NodeId(peer_id.into())],
        &["127.0.0.1".parse().unwrap()],
    )
    .unwrap();
    let fly_config = config(
        dir.path(),
        &key,
        "fly",
        &[
            "--fly-app",
            "ride-test",
            "--fly-machine-id",
            fly_id,
            "--fly-private-ip",
            "127.0.0.1",
            "--discovery-interval",
            "20ms",
            "--rate-limit-per-second",
            "1000",
        ],
    );
    let grace = fly_config.shutdown_grace;
    let ready_file = fly_config.ready_file.clone().unwrap();
    let fly = start_with_dns(fly_config, || Ok(FlyDns))
        .await
        .expect("the Fly node starts");
    let ready: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ready_file).unwrap()).unwrap();
    let fly_mesh = ready["mesh"].as_str().unwrap().to_owned();
    let peer = start(config(
        dir.path(),
        &key,
        "peer",
        &[
            "--node-id",
            peer_id,
            "--peer",
            &format!("{fly_id}={fly_mesh}"),
        ],
    ))
    .await
    .expect("the peer starts");

    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let in_session = state(&http, &fly).await.is_some_and(|s| {
            s.peers
                .iter()
                .any(|p| p.node == peer_id && p.reachable && p.in_sync)
        });
        if in_session {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no session between the nodes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let url = format!("ws://{}/communication", fly.http_addr());
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();

    let tasks = fly.tasks.clone();
    // Discovery, the rate limit's sweep and the websocket session.
    assert_eq!(tasks.len(), 3);
    tokio::time::timeout(grace, fly.shutdown())
        .await
        .expect("the node stops within its shutdown grace")
        .expect("the node stops cleanly");
    assert!(tasks.is_closed());
    assert!(tasks.is_empty(), "{} tasks still running", tasks.len());
    let close = loop {
        match socket.next().await {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(u16::from(close.expect("a close frame").code), 1001);
    peer.shutdown().await.expect("the peer stops cleanly");
}
