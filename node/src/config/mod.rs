//! Configuration, from flags or the environment (every flag has an `NODE_*`
//! variable). Defaults let `node` run with none.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};

use crate::protocol::replica::MIN_REQUEST_TTL_MS;
pub use token_key::{KeyError, MIN_KEY_BYTES, TokenKey, new_key_text, read_key_file};

mod token_key;

/// A peer as `--peer` names it: its node id and mesh address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub node: NodeId,
    pub addr: SocketAddr,
}
use ride_types::ids::NodeId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "node",
    version,
    about = "A ride-sharing region node: rider and driver intake, matching, fares, websocket delivery and ratings."
)]
pub struct Config {
    /// Address for the public API and the websocket, and nothing else.
    #[arg(long, env = "NODE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Address for the operator surfaces: the dashboard and its events,
    /// `/debug/state`, `/metrics` and `/matches`. Loopback by default, since
    /// they show where every waiting rider is; on Fly it moves to the
    /// machine's private (6PN) address.
    #[arg(long, env = "NODE_ADMIN_LISTEN", default_value = "127.0.0.1:9100")]
    pub admin_listen: SocketAddr,
    /// Keys for request tokens, the signing key first (any of them
    /// verifies; see `deploy/README.md` for rotating). Every node of the mesh
    /// needs the same list. Without it (and without
    /// `--token-keys-file`) a node that runs alone makes up a key at start;
    /// a node with peers refuses to start.
    #[arg(
        long,
        env = "NODE_TOKEN_KEYS",
        value_delimiter = ',',
        hide_env_values = true,
        value_parser = parse_token_key
    )]
    pub token_keys: Vec<TokenKey>,
    /// A file with the token keys, one per line, the signing key first.
    /// It takes the place of `--token-keys` (which may still be in the
    /// environment, e.g. for other tools).
    #[arg(long, env = "NODE_TOKEN_KEYS_FILE", value_name = "PATH")]
    pub token_keys_file: Option<PathBuf>,
    /// Requests per second each client may send to the public API, on
    /// average; beyond it (and `--rate-limit-burst`) the answer is `429`
    /// with `Retry-After`. 0, the default, turns the limit off.
    #[arg(long, env = "NODE_RATE_LIMIT_PER_SECOND", default_value_t = 0)]
    pub rate_limit_per_second: u32,
    /// Requests a client may send at once before the rate applies.
    #[arg(long, env = "NODE_RATE_LIMIT_BURST", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_burst: u32,
    /// A header that holds the client's IP address, set by a trusted proxy in
    /// front of the node (`fly-client-ip` on Fly). Without it, clients are
    /// told apart by the connection's peer address.
    #[arg(long, env = "NODE_CLIENT_IP_HEADER", value_name = "HEADER")]
    pub client_ip_header: Option<String>,
    /// The region this node serves; it is reported with every request and match.
    #[arg(long, env = "NODE_REGION", default_value = "local")]
    pub region: String,
    /// Folder of region files (one JSON file per region; see
    /// `regions/README.md`). With it, `--region` must name one of them, and
    /// riders and drivers positioned in another region are redirected there
    /// (307). Without it, this node serves every position.
    #[arg(long, env = "NODE_REGIONS", value_name = "DIR")]
    pub regions: Option<PathBuf>,
    /// This node's id: the owner recorded on every request it accepts.
    /// Default: kept in `<data-dir>/node-id`, made up on first start.
    #[arg(long, env = "NODE_ID")]
    pub node_id: Option<String>,
    /// Folder for the node's durable state (the embedded rating store).
    #[arg(long, env = "NODE_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// How long a rider or driver request waits for a match (at least 5s).
    #[arg(long, env = "NODE_REQUEST_TTL", default_value = "30s", value_parser = parse_ttl)]
    pub request_ttl: Duration,
    /// How often the matcher runs (shorter rounds: earlier matches and
    /// shorter bursts of CPU for intake to wait behind). Default: 25ms for
    /// a node alone, 250ms with --mesh-listen.
    #[arg(long, env = "NODE_MATCH_INTERVAL", value_parser = parse_positive)]
    pub match_interval: Option<Duration>,
    /// The farthest a driver may be from a rider to be matched, in km.
    #[arg(long, env = "NODE_MAX_PICKUP_KM", default_value_t = 5.0, value_parser = parse_km)]
    pub max_pickup_km: f64,
    /// How long a committed match is kept: a late subscriber still gets it,
    /// and it can be rated, until then.
    #[arg(long, env = "NODE_MATCH_RETENTION", default_value = "1m", value_parser = parse_positive)]
    pub match_retention: Duration,
    /// The most committed matches kept (the oldest go first), so memory
    /// stays bounded at any match rate.
    #[arg(long, env = "NODE_MAX_RETAINED_MATCHES", default_value_t = 200_000)]
    pub max_retained_matches: usize,
    /// How often idle websockets are pinged; a client that misses a ping is dropped.
    #[arg(long, env = "NODE_WS_PING_INTERVAL", default_value = "15s", value_parser = parse_positive)]
    pub ws_ping_interval: Duration,
    /// How long shutdown waits for in-flight requests before it stops anyway.
    #[arg(long, env = "NODE_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Log line format.
    #[arg(long, env = "NODE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Once listening, write `{"http": "<addr>", "mesh": "<addr>", "node": "<id>"}`
    /// here (for scripts and tests that start the node on port 0).
    #[arg(long, env = "NODE_READY_FILE")]
    pub ready_file: Option<PathBuf>,

    #[command(flatten)]
    pub mesh: MeshArgs,

    #[command(flatten)]
    pub admission: AdmissionArgs,

    #[command(flatten)]
    pub cql: CqlArgs,

    #[command(flatten)]
    pub fly: FlyArgs,
}

/// The mesh: peers over QUIC, documents and commits.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Mesh")]
pub struct MeshArgs {
    /// UDP address for QUIC connections from peers. Without it the node runs
    /// alone (a mesh of one).
    #[arg(id = "mesh_listen", long = "mesh-listen", env = "NODE_MESH_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// A peer, as `<node-id>=<host:port>` of its mesh address; repeat, or
    /// separate with commas.
    #[arg(long = "peer", env = "NODE_PEERS", value_delimiter = ',', value_parser = parse_peer)]
    pub peers: Vec<Peer>,
    /// Folder with `ca.pem`, `<node-id>.pem` and `<node-id>.key` (see `node certs`).
    #[arg(long, env = "NODE_CERTS", default_value = "certs")]
    pub certs: PathBuf,
    /// How long a claim on another node's driver waits for an answer before
    /// the rider returns to the pool.
    #[arg(long, env = "NODE_CLAIM_TTL", default_value = "2s", value_parser = parse_positive)]
    pub claim_ttl: Duration,
    /// Each node starts a new replicated document this often; whole
    /// documents are dropped once everything in them has expired.
    #[arg(long, env = "NODE_EPOCH", default_value = "5s", value_parser = parse_positive)]
    pub epoch: Duration,
    /// How often each peer is sent what it is missing.
    #[arg(
        id = "mesh_sync_interval",
        long = "mesh-sync-interval", env = "NODE_MESH_SYNC_INTERVAL", default_value = "10ms", value_parser = parse_positive)]
    pub sync_interval: Duration,
    /// Accepted requests are journaled for their 202 at once, and written
    /// into the replicated (automerge) documents at most this often. Each
    /// automerge change costs every peer that applies it about the same
    /// whatever it holds, so fewer and larger changes make replication
    /// cheap per request, for up to this much more replication lag. A
    /// matching round writes them first, whenever it runs.
    #[arg(long, env = "NODE_INTAKE_FLUSH_INTERVAL", default_value = "20ms", value_parser = humantime::parse_duration)]
    pub intake_flush_interval: Duration,
    /// With a mesh (`--mesh-listen`), under load, group commits start at
    /// least this far apart, so that each carries more requests: every
    /// commit is a journal sync, and three nodes syncing as fast as the disk
    /// answers cost a mesh on one machine about a quarter more CPU per
    /// request (BENCHMARKS.md), for up to this much more latency. Only after
    /// a busy commit (8 requests or more): otherwise, and once the last
    /// commit is older than this, a request is committed at once. A node
    /// alone commits as soon as the previous sync returns.
    #[arg(
        id = "mesh_commit_interval",
        long = "mesh-commit-interval", env = "NODE_MESH_COMMIT_INTERVAL", default_value = "5ms", value_parser = humantime::parse_duration)]
    pub commit_interval: Duration,
    /// At start, matching waits until this node holds everything every
    /// peer held when their sessions began, or this long at most.
    #[arg(
        id = "mesh_ready_grace",
        long = "mesh-ready-grace", env = "NODE_MESH_READY_GRACE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub ready_grace: Duration,
    /// A peer whose clock differs from this node's by more than this is
    /// reported (log, `/metrics`, `/debug/state`, dashboard). Safety never
    /// depends on clocks; only liveness may suffer past it.
    #[arg(long, env = "NODE_MAX_CLOCK_SKEW", default_value = "1s", value_parser = humantime::parse_duration)]
    pub max_clock_skew: Duration,
    /// A neighbour region none of whose nodes was heard from for this long
    /// is down, and the region that adopts it serves its area. Longer than the QUIC idle timeout (5 s) plus a redial, so
    /// a lossy link or a short partition adopts nothing.
    #[arg(long, env = "NODE_ADOPT_AFTER", default_value = "10s", value_parser = humantime::parse_duration)]
    pub adopt_after: Duration,
    /// How long an adopter goes on serving a region after it is back and
    /// ready, before it redirects its area home again.
    #[arg(long, env = "NODE_HANDBACK_AFTER", default_value = "5s", value_parser = humantime::parse_duration)]
    pub handback_after: Duration,
}

/// Admission control: when intake answers 503 `overloaded`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Admission")]
pub struct AdmissionArgs {
    /// Admission control: intake answers 503 `overloaded` (with
    /// `Retry-After`) while this many requests wait to be journaled...
    #[arg(long, env = "NODE_MAX_INTAKE_QUEUE", default_value_t = 4_096)]
    pub max_intake_queue: usize,
    /// ...or while replication to a connected peer is this far behind (a
    /// status message's round trip through both nodes' streams)...
    #[arg(long, env = "NODE_MAX_MESH_LAG", default_value = "2s", value_parser = humantime::parse_duration)]
    pub max_mesh_lag: Duration,
    /// ...or while the last matching round took longer than this.
    #[arg(long, env = "NODE_MAX_ROUND_TIME", default_value = "800ms", value_parser = humantime::parse_duration)]
    pub max_round_time: Duration,
}

/// The CQL cluster that stores ratings.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Ratings cluster (CQL)")]
pub struct CqlArgs {
    /// CQL contact points (`host:port`, comma-separated; list some in every
    /// datacenter). Unset: ratings live in the embedded store only.
    #[arg(
        id = "cql_nodes",
        long = "cql-nodes",
        env = "CQL_NODES",
        value_delimiter = ','
    )]
    pub nodes: Vec<String>,
    /// This node's CQL datacenter; defaults to its region's `datacenter`
    /// in `--regions`.
    #[arg(
        id = "cql_datacenter",
        long = "cql-datacenter",
        env = "NODE_CQL_DATACENTER"
    )]
    pub datacenter: Option<String>,
    #[arg(
        id = "cql_keyspace",
        long = "cql-keyspace",
        env = "NODE_CQL_KEYSPACE",
        default_value = "ride"
    )]
    pub keyspace: String,
    /// Replicas per datacenter when the keyspace is created, as
    /// `<datacenter>=<factor>` (comma-separated); defaults to 1 in every
    /// region's datacenter. An existing keyspace is left as it is.
    #[arg(
        id = "cql_replication",
        long = "cql-replication", env = "NODE_CQL_REPLICATION", value_delimiter = ',', value_parser = parse_replication)]
    pub replication: Vec<(String, u32)>,
    /// Let requests go to another datacenter while this one is down.
    #[arg(
        id = "cql_dc_failover",
        long = "cql-dc-failover", env = "NODE_CQL_DC_FAILOVER", default_value_t = true, action = clap::ArgAction::Set)]
    pub dc_failover: bool,
    /// Limit on one CQL request, retries included.
    #[arg(
        id = "cql_timeout",
        long = "cql-timeout", env = "NODE_CQL_TIMEOUT", default_value = "2s", value_parser = parse_positive)]
    pub timeout: Duration,
}

/// Running on Fly.io.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Fly.io")]
pub struct FlyArgs {
    /// The Fly.io app this node runs in (Fly sets `FLY_APP_NAME`). On Fly,
    /// the node id, region, mesh certificate and peers come from the
    /// platform (see the `fly` module and deploy/README.md).
    #[arg(id = "fly_app", long = "fly-app", env = "FLY_APP_NAME")]
    pub app: Option<String>,
    #[arg(
        id = "fly_machine_id",
        long = "fly-machine-id",
        env = "FLY_MACHINE_ID",
        requires = "fly_app"
    )]
    pub machine_id: Option<String>,
    #[arg(
        id = "fly_region",
        long = "fly-region",
        env = "FLY_REGION",
        requires = "fly_app"
    )]
    pub region: Option<String>,
    #[arg(
        id = "fly_private_ip",
        long = "fly-private-ip",
        env = "FLY_PRIVATE_IP",
        requires = "fly_app"
    )]
    pub private_ip: Option<IpAddr>,
    /// How often a Fly node asks DNS for the app's machines.
    #[arg(long, env = "NODE_DISCOVERY_INTERVAL", default_value = "10s", value_parser = parse_positive)]
    pub discovery_interval: Duration,
    /// The mesh CA certificate (PEM). With `--mesh-ca-key`, the node issues
    /// itself a certificate into `--certs` at start.
    #[arg(
        long,
        env = "MESH_CA_CERT",
        hide_env_values = true,
        requires = "mesh_ca_key"
    )]
    pub mesh_ca_cert: Option<String>,
    /// The mesh CA key (PEM); keep it in a secret store.
    #[arg(
        long,
        env = "MESH_CA_KEY",
        hide_env_values = true,
        requires = "mesh_ca_cert"
    )]
    pub mesh_ca_key: Option<String>,
}

/// A lone node's default round interval: its rounds cost nothing but
/// their CPU, and small ones keep the bursts that intake waits behind short
/// (at 20,000 requests/s on two cores, a 250 ms round was a 15-30 ms burst;
/// BENCHMARKS.md).
const LONE_ROUND_INTERVAL: Duration = Duration::from_millis(25);
/// In a mesh every round's commits are automerge changes that each peer
/// decodes and applies, so fewer, larger rounds cost less per match (CPU per
/// request at 15,000/s: 84 us with 250 ms rounds, 99 us with 25 ms ones).
const MESH_ROUND_INTERVAL: Duration = Duration::from_millis(250);

impl Config {
    /// How often the matcher runs: `--match-interval`, or by default 25 ms
    /// for a node alone and 250 ms for a node with a mesh.
    pub fn round_interval(&self) -> Duration {
        self.match_interval
            .unwrap_or(if self.mesh.listen.is_some() {
                MESH_ROUND_INTERVAL
            } else {
                LONE_ROUND_INTERVAL
            })
    }
}

fn parse_peer(raw: &str) -> Result<Peer, String> {
    let (node, addr) = raw
        .split_once('=')
        .ok_or_else(|| format!("expected <node-id>=<host:port>, got {raw}"))?;
    let addr = addr
        .parse()
        .map_err(|e| format!("{addr} is not a host:port address: {e}"))?;
    if node.is_empty() {
        return Err(format!("no node id in {raw}"));
    }
    Ok(Peer {
        node: NodeId(node.to_owned()),
        addr,
    })
}

fn parse_token_key(raw: &str) -> Result<TokenKey, String> {
    TokenKey::parse(raw).map_err(|e| e.to_string())
}

fn parse_replication(raw: &str) -> Result<(String, u32), String> {
    let (dc, factor) = raw
        .split_once('=')
        .ok_or_else(|| format!("expected <datacenter>=<factor>, got {raw}"))?;
    let factor: u32 = factor
        .parse()
        .map_err(|e| format!("{factor} is not a replication factor: {e}"))?;
    if dc.is_empty() || factor == 0 {
        return Err(format!(
            "expected a datacenter and a factor of 1 or more, got {raw}"
        ));
    }
    Ok((dc.to_owned(), factor))
}

fn parse_ttl(raw: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(raw).map_err(|e| e.to_string())?;
    if ttl < Duration::from_millis(MIN_REQUEST_TTL_MS) {
        return Err(format!("must be at least 5s, got {raw}"));
    }
    Ok(ttl)
}

fn parse_positive(raw: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(raw).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(d)
}

fn parse_km(raw: &str) -> Result<f64, String> {
    let km: f64 = raw.parse().map_err(|e| format!("{e}"))?;
    if !km.is_finite() || km <= 0.0 || km > 20_000.0 {
        return Err(format!(
            "must be a distance in km above 0 and at most 20000, got {raw}"
        ));
    }
    Ok(km)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_with_no_flags() {
        let c = Config::try_parse_from(["node"]).unwrap();
        assert_eq!(c.request_ttl, Duration::from_secs(30));
        assert_eq!(c.max_pickup_km, 5.0);
    }

    #[test]
    fn rounds_are_short_alone_and_longer_in_a_mesh_unless_set() {
        let alone = Config::try_parse_from(["node"]).unwrap();
        assert_eq!(alone.round_interval(), Duration::from_millis(25));
        let meshed = Config::try_parse_from(["node", "--mesh-listen", "127.0.0.1:0"]).unwrap();
        assert_eq!(meshed.round_interval(), Duration::from_millis(250));
        for c in [
            Config::try_parse_from(["node", "--match-interval", "1s"]).unwrap(),
            Config::try_parse_from([
                "node",
                "--match-interval",
                "1s",
                "--mesh-listen",
                "127.0.0.1:0",
            ])
            .unwrap(),
        ] {
            assert_eq!(c.round_interval(), Duration::from_secs(1));
        }
        assert!(Config::try_parse_from(["node", "--match-interval", "0s"]).is_err());
    }

    #[test]
    fn reads_cql_settings() {
        let c = Config::try_parse_from([
            "node",
            "--cql-nodes",
            "127.0.0.1:9042,127.0.0.2:9042",
            "--cql-replication",
            "dhaka_north=3,dhaka_southeast=2",
            "--cql-dc-failover",
            "false",
        ])
        .unwrap();
        assert_eq!(c.cql.nodes, ["127.0.0.1:9042", "127.0.0.2:9042"]);
        assert_eq!(
            c.cql.replication,
            [
                ("dhaka_north".to_owned(), 3),
                ("dhaka_southeast".to_owned(), 2)
            ]
        );
        assert!(!c.cql.dc_failover);
        for bad in ["dhaka_north", "dhaka_north=0", "=3", "dhaka_north=x"] {
            assert!(
                Config::try_parse_from(["node", "--cql-replication", bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn reads_token_keys_and_refuses_short_ones() {
        let (a, b) = ("a".repeat(32), "b".repeat(44));
        let c = Config::try_parse_from(["node", "--token-keys", &format!("{a},{b}")]).unwrap();
        assert_eq!(c.token_keys.len(), 2);
        assert!(
            !format!("{c:?}").contains(&a),
            "a key in the config's Debug"
        );
        assert!(Config::try_parse_from(["node", "--token-keys", "short"]).is_err());
    }

    #[test]
    fn refuses_a_ttl_below_five_seconds_and_bad_radii() {
        assert!(Config::try_parse_from(["node", "--request-ttl", "4s"]).is_err());
        assert!(Config::try_parse_from(["node", "--request-ttl", "5s"]).is_ok());
        for km in ["0", "-1", "NaN", "inf", "x"] {
            assert!(
                Config::try_parse_from(["node", "--max-pickup-km", km]).is_err(),
                "{km}"
            );
        }
    }
}
