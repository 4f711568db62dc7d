//! The Fly.io deployment (`fly.toml`, `deploy/Dockerfile`,
//! `deploy/README.md`) agrees with `regions/`, with itself and with the
//! node: a region added without a volume, a port or path changed in one file
//! only, or a route that does not exist fails here rather than on Fly.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use ride_types::regions::Regions;
use toml::{Table, Value};

use crate::support::NodeProcess;

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const FLY_TOML: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fly.toml");
const DEPLOY_README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/README.md");
const REGIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../regions");

/// The node's `--shutdown-grace` default, when fly.toml does not set it.
const DEFAULT_SHUTDOWN_GRACE: &str = "10s";

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn fly_toml() -> Table {
    toml::from_str(&read(Path::new(FLY_TOML))).expect("fly.toml is not valid TOML")
}

/// Every region's `fly_region`, as the node loads them.
fn fly_regions() -> BTreeSet<String> {
    let regions = Regions::load_dir(Path::new(REGIONS)).expect("regions/ loads");
    regions.iter().map(|r| r.fly_region.clone()).collect()
}

/// `fly.toml` `[env]` value.
fn env<'a>(fly: &'a Table, key: &str) -> &'a str {
    fly.get("env")
        .and_then(|env| env.get(key))
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("fly.toml [env] has no string {key}"))
}

/// The value at a dotted path such as `http_service.internal_port`.
fn at<'a>(fly: &'a Table, path: &str) -> &'a Value {
    let mut parts = path.split('.');
    let first = parts.next().unwrap();
    let mut value = fly
        .get(first)
        .unwrap_or_else(|| panic!("fly.toml has no {path}"));
    for part in parts {
        value = value
            .get(part)
            .unwrap_or_else(|| panic!("fly.toml has no {path}"));
    }
    value
}

/// A table or an array of tables (`[mounts]` or `[[mounts]]`), as a list.
fn tables(value: &Value) -> Vec<&Table> {
    match value {
        Value::Table(t) => vec![t],
        Value::Array(items) => items.iter().filter_map(Value::as_table).collect(),
        other => panic!("expected a table or an array of tables, got {other}"),
    }
}

fn socket_addr(fly: &Table, key: &str) -> SocketAddr {
    let raw = env(fly, key);
    raw.parse()
        .unwrap_or_else(|e| panic!("fly.toml [env] {key} = {raw:?} is not an ip:port address: {e}"))
}

/// `kill_timeout` as Fly reads it: seconds, or a duration string.
fn duration(value: &Value) -> Duration {
    match value {
        Value::Integer(secs) => Duration::from_secs(u64::try_from(*secs).expect("negative")),
        Value::String(s) => humantime::parse_duration(s).unwrap_or_else(|e| panic!("{s:?}: {e}")),
        other => panic!("expected seconds or a duration, got {other}"),
    }
}

/// The Dockerfile that fly.toml's `[build]` names, as instructions
/// (upper-case keyword, arguments), continuation lines joined and comments
/// dropped.
fn dockerfile(fly: &Table) -> Vec<(String, Vec<String>)> {
    let name = at(fly, "build.dockerfile")
        .as_str()
        .expect("[build] dockerfile is a string");
    let text = read(&Path::new(REPO).join(name));
    let mut instructions = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && pending.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head);
                pending.push(' ');
            }
            None => {
                pending.push_str(line);
                let mut words = pending.split_whitespace().map(str::to_owned);
                if let Some(keyword) = words.next() {
                    instructions.push((keyword.to_uppercase(), words.collect()));
                }
                pending.clear();
            }
        }
    }
    instructions
}

#[test]
fn primary_region_is_one_of_the_regions() {
    let fly = fly_toml();
    let primary = at(&fly, "primary_region").as_str().unwrap();
    let known = fly_regions();
    assert!(
        known.contains(primary),
        "fly.toml primary_region {primary:?} is no region's fly_region in regions/ ({known:?})"
    );
}

#[test]
fn node_regions_is_where_the_dockerfile_copies_regions() {
    let fly = fly_toml();
    let copied_to: Vec<String> = dockerfile(&fly)
        .into_iter()
        .filter(|(keyword, _)| keyword == "COPY")
        .filter_map(|(_, args)| {
            let paths: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
            let (destination, sources) = paths.split_last()?;
            let copies_regions = sources
                .iter()
                .any(|s| s.trim_start_matches("./").trim_end_matches('/') == "regions");
            copies_regions.then(|| destination.trim_end_matches('/').to_owned())
        })
        .collect();
    let node_regions = env(&fly, "NODE_REGIONS").trim_end_matches('/');
    assert_eq!(
        copied_to,
        [node_regions],
        "NODE_REGIONS must name the folder the Dockerfile's one `COPY regions` line copies to"
    );
}

#[test]
fn http_service_serves_the_node_listen_port() {
    let fly = fly_toml();
    let listen = socket_addr(&fly, "NODE_LISTEN");
    let internal_port = at(&fly, "http_service.internal_port").as_integer();
    assert_eq!(
        internal_port,
        Some(i64::from(listen.port())),
        "http_service.internal_port must be NODE_LISTEN's port ({listen})"
    );
}

/// The operator listener's address: `NODE_ADMIN_LISTEN`, or the node's
/// default (which a Fly machine moves to its private address, same port).
fn admin_listen(fly: &Table) -> SocketAddr {
    match fly.get("env").and_then(|e| e.get("NODE_ADMIN_LISTEN")) {
        Some(_) => socket_addr(fly, "NODE_ADMIN_LISTEN"),
        None => {
            use clap::Parser;
            node::config::Config::parse_from(["node"]).admin_listen
        }
    }
}

#[tokio::test]
async fn health_checks_are_public_and_metrics_on_the_private_admin_port() {
    let fly = fly_toml();
    let internal_port = at(&fly, "http_service.internal_port").as_integer().unwrap();
    let check_paths: Vec<&str> = tables(at(&fly, "http_service.checks"))
        .iter()
        .map(|check| {
            check
                .get("path")
                .and_then(Value::as_str)
                .expect("a check path")
        })
        .collect();
    assert!(
        check_paths.contains(&"/healthz"),
        "http_service.checks must GET /healthz, has {check_paths:?}"
    );
    let metrics = tables(at(&fly, "metrics"));
    let metrics_port = metrics[0].get("port").and_then(Value::as_integer);
    let metrics_path = metrics[0].get("path").and_then(Value::as_str).unwrap();
    assert_eq!(
        metrics_path, "/metrics",
        "[metrics] path must be the node's /metrics"
    );
    let admin_port = admin_listen(&fly).port();
    assert_eq!(
        metrics_port,
        Some(i64::from(admin_port)),
        "[metrics] port must be the admin listener's, where the node serves /metrics"
    );
    assert_ne!(
        i64::from(admin_port),
        internal_port,
        "the admin listener must not be the port Fly's public proxy carries"
    );

    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &[]).await;
    let http = reqwest::Client::new();
    for url in check_paths
        .iter()
        .map(|path| node.url(path))
        .chain([node.admin_url(metrics_path)])
    {
        let status = http.get(&url).send().await.unwrap().status();
        assert_eq!(status, StatusCode::OK, "GET {url} must answer 200");
    }
}

#[test]
fn mesh_port_is_exposed_as_udp_and_http_ports_as_tcp() {
    let fly = fly_toml();
    let exposed: BTreeSet<String> = dockerfile(&fly)
        .into_iter()
        .filter(|(keyword, _)| keyword == "EXPOSE")
        .flat_map(|(_, ports)| ports)
        .map(|p| {
            if p.contains('/') {
                p
            } else {
                format!("{p}/tcp")
            }
        })
        .collect();
    let mesh = format!("{}/udp", socket_addr(&fly, "NODE_MESH_LISTEN").port());
    let http = format!("{}/tcp", socket_addr(&fly, "NODE_LISTEN").port());
    let admin = format!("{}/tcp", admin_listen(&fly).port());
    assert!(
        exposed.contains(&mesh) && exposed.contains(&http) && exposed.contains(&admin),
        "the Dockerfile must EXPOSE {http} (NODE_LISTEN), {admin} (the admin listener) \
         and {mesh} (NODE_MESH_LISTEN), exposes {exposed:?}"
    );
}

#[test]
fn the_volume_holds_the_data_dir_and_the_certificates() {
    let fly = fly_toml();
    let data_dir = env(&fly, "NODE_DATA_DIR");
    let destinations: Vec<&str> = tables(at(&fly, "mounts"))
        .iter()
        .filter_map(|m| m.get("destination").and_then(Value::as_str))
        .collect();
    assert!(
        destinations.contains(&data_dir),
        "NODE_DATA_DIR {data_dir:?} must be a mount destination, mounts are {destinations:?}"
    );
    let certs = env(&fly, "NODE_CERTS");
    assert!(
        Path::new(certs).starts_with(data_dir),
        "NODE_CERTS {certs:?} must lie on the volume, under NODE_DATA_DIR {data_dir:?}"
    );
}

#[test]
fn machines_are_never_auto_stopped_and_stop_gracefully() {
    let fly = fly_toml();
    let auto_stop = at(&fly, "http_service.auto_stop_machines");
    assert!(
        matches!(auto_stop, Value::String(s) if s == "off") || auto_stop.as_bool() == Some(false),
        "http_service.auto_stop_machines must be \"off\": a stopped Machine drops out of the mesh"
    );
    assert_eq!(
        at(&fly, "kill_signal").as_str(),
        Some("SIGTERM"),
        "kill_signal must be SIGTERM, the signal the node shuts down gracefully on"
    );
    let grace = fly
        .get("env")
        .and_then(|e| e.get("NODE_SHUTDOWN_GRACE"))
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_SHUTDOWN_GRACE);
    let grace = humantime::parse_duration(grace).expect("NODE_SHUTDOWN_GRACE is a duration");
    let kill_timeout = duration(at(&fly, "kill_timeout"));
    assert!(
        kill_timeout > grace,
        "kill_timeout ({kill_timeout:?}) must exceed the node's shutdown grace ({grace:?}), \
         or Fly kills it before the rating store is flushed"
    );
}

#[test]
fn deploy_readme_creates_a_volume_in_every_region() {
    let fly = fly_toml();
    let mounts = tables(at(&fly, "mounts"));
    let source = mounts[0].get("source").and_then(Value::as_str).unwrap();
    let create = format!("fly volumes create {source} ");
    let documented: BTreeSet<String> = read(Path::new(DEPLOY_README))
        .lines()
        .filter(|line| line.contains(&create))
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "--region")?;
            words.next().map(str::to_owned)
        })
        .collect();
    let missing: Vec<String> = fly_regions().difference(&documented).cloned().collect();
    assert!(
        missing.is_empty(),
        "deploy/README.md must show `{create}--region <fly_region>` for every region; missing {missing:?}"
    );
}
