//! Wires the modules into a running node and stops it cleanly.
//!
//! Every background loop watches one [`CancellationToken`]; cancelling it
//! stops intake (in-flight requests finish), closes websockets, stops the
//! step loop and finally flushes the rating store. Nothing runs detached: the
//! listeners, and every other task the node starts (peer discovery, the
//! rate limit's sweep, websocket sessions, in a [`TaskTracker`]), are
//! waited for, the listeners and the tracked tasks within the shutdown
//! grace, so that when the node says it stopped, nothing of it still runs.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::config::KeyError;
use crate::disk::journal::Durability;
use crate::disk::ratings::{ClusterConfig, ClusterStore, EmbeddedStore, RatingStore, StoreError};
use crate::http::{self, AppState, LimitError, RateLimit};
use crate::net::discovery::{DiscoveryError, Dns, FlyDiscovery, SystemDns};
use crate::net::fly::{FlyError, FlyMachine};
use crate::net::tls::{Credentials, TlsError};
use crate::net::transport::{BoundMesh, Mesh, MeshConfig, Peer, TransportError};
use crate::protocol::replica::{Hooks, ReplicaConfig};
use crate::runtime::access::TokenKeys;
use crate::runtime::admission::Limits;
use crate::runtime::availability::Timing;
use crate::runtime::delivery::{Hub, SocketSettings};
use crate::runtime::node::{CoreError, Node};
use crate::runtime::recent_matches::Retention;
use crate::runtime::step_loop::StepLoop;
use crate::telemetry;
use shutdown::Stopping;

mod shutdown;
use ride_types::clock::Millis;
use ride_types::halo::Layout;
use ride_types::ids::{Entropy, NodeId};
use ride_types::regions::{Regions, RegionsError};

#[derive(Debug, Error)]
pub enum NodeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("mesh credentials: {0}")]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Mesh(#[from] TransportError),
    #[error(transparent)]
    Regions(#[from] RegionsError),
    #[error("own documents: {0}")]
    Core(#[from] CoreError),
    #[error("on Fly: {0}")]
    Fly(#[from] FlyError),
    #[error("--region {region} is not one of the regions in {dir} ({known})")]
    UnknownRegion {
        region: String,
        dir: String,
        known: String,
    },
    #[error("token keys: {0}")]
    TokenKeys(#[from] KeyError),
    #[error(
        "a node with peers needs the mesh's token keys (--token-keys or --token-keys-file), \
         or tokens minted on one node would not verify on another"
    )]
    NoTokenKeys,
    #[error(transparent)]
    RateLimit(#[from] LimitError),
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
    #[error("a node task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A node that is serving.
pub struct RunningNode {
    http_addr: SocketAddr,
    admin_addr: SocketAddr,
    node: NodeId,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), NodeError>>,
    /// The node's tasks besides its listeners and core loops; closed and
    /// empty once the node has stopped (unless some outlived the grace).
    #[cfg_attr(not(test), expect(dead_code, reason = "read by the shutdown test"))]
    tasks: TaskTracker,
}

impl RunningNode {
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Where the dashboard, `/debug/state`, `/metrics` and `/matches` are.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn node_id(&self) -> &NodeId {
        &self.node
    }

    /// Stops the node and waits until it has.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        self.shutdown.cancel();
        self.task.await?
    }

    /// Waits until the node stops by itself or `stop` resolves, then stops it.
    pub async fn run_until(self, stop: impl Future<Output = ()>) -> Result<(), NodeError> {
        tokio::select! {
            () = stop => self.shutdown().await,
            () = self.shutdown.cancelled() => self.task.await?,
        }
    }
}

/// Starts a node: binds, spawns the step loop, and serves.
pub async fn start(config: Config) -> Result<RunningNode, NodeError> {
    start_with_dns(config, SystemDns::new).await
}

/// The public API's OpenAPI document, as `/openapi.json` serves it.
pub fn openapi_json() -> Result<String, serde_json::Error> {
    http::public_document().to_pretty_json()
}

/// As [`start`], discovering peers on Fly through the resolver `dns` makes
/// (a stub in tests: no resolver answers for `.internal` names off Fly).
async fn start_with_dns<D: Dns>(
    mut config: Config,
    dns: impl Fn() -> Result<D, DiscoveryError>,
) -> Result<RunningNode, NodeError> {
    let fly = FlyMachine::from_config(&config);
    let regions = load_regions(&config)?;
    let (node, layout) = identify(&mut config, fly.as_ref(), regions.as_deref())?;
    let neighbours = neighbour_fly_regions(regions.as_deref(), &layout, &config.region);
    let (publish_peers, peers) =
        mesh_peers(&config, fly.as_ref(), &node, &neighbours, &dns).await?;
    let tokens = token_keys(&config)?;
    // The recorder first: the rating store reports its outbox as it opens.
    let metrics = telemetry::metrics();
    let store = open_ratings(&config, regions.as_deref()).await?;
    let core = Arc::new(open_core(&config, &node, &layout)?);
    if config.mesh.listen.is_some() {
        core.expect_peers(peers.borrow().iter().map(|p| &p.node));
    }
    let hub = Arc::new(Hub::default());
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let app = Arc::new(AppState {
        region: config.region.clone(),
        node: node.0.clone(),
        core: Arc::clone(&core),
        hub: Arc::clone(&hub),
        ratings: Arc::clone(&store),
        metrics,
        sockets: SocketSettings {
            ping_interval: config.ws_ping_interval,
        },
        shutdown: shutdown.clone(),
        tasks: tasks.clone(),
        regions,
        tokens: Arc::new(tokens),
    });

    let (listener, http_addr) = bind(config.listen).await?;
    let (admin_listener, admin_addr) = bind(config.admin_listen).await?;
    let public = http::public_router(Arc::clone(&app), rate_limit(&config).as_ref())?;

    let mesh = start_mesh(&config, &node, &layout, peers, &core, &shutdown)?;
    if let Some(discovery) = fly_discovery(&config, fly.as_ref(), &dns, &node, neighbours)? {
        let every = config.fly.discovery_interval;
        tasks.spawn(discovery.watch(every, publish_peers, shutdown.clone()));
    }
    let mesh_addr = mesh.as_ref().map(|(addr, _)| *addr);
    let (flusher, step_loop) = spawn_core_loops(&config, core, hub, &shutdown);
    let admin = http::admin_router(app);
    let task = tokio::spawn(
        Stopping {
            serving: serve(listener, public, admin_listener, admin, &shutdown),
            tasks: tasks.clone(),
            step_loop,
            mesh: mesh.map(|(_, mesh)| mesh),
            flusher,
            store,
            grace: config.shutdown_grace,
        }
        .after(shutdown.clone()),
    );
    if let Some(path) = &config.ready_file {
        write_ready_file(path, http_addr, admin_addr, mesh_addr, &node)?;
    }
    tracing::info!(%http_addr, %admin_addr, ?mesh_addr, node = %node, region = %config.region, "node serving");
    Ok(RunningNode {
        http_addr,
        admin_addr,
        node,
        shutdown,
        task,
        tasks,
    })
}

/// On Fly, with a mesh, peers come and go: the mesh follows what DNS says.
fn fly_discovery<D: Dns>(
    config: &Config,
    fly: Option<&FlyMachine>,
    dns: &impl Fn() -> Result<D, DiscoveryError>,
    node: &NodeId,
    neighbours: Option<BTreeSet<String>>,
) -> Result<Option<FlyDiscovery<D>>, NodeError> {
    let (Some(fly), Some(listen)) = (fly, config.mesh.listen) else {
        return Ok(None);
    };
    let dns = dns().map_err(FlyError::from)?;
    Ok(Some(fly.discovery(dns, node, listen.port(), neighbours)))
}

/// The two loops that drive the core: the flusher (group commits) and the
/// step loop (matching rounds, expiry, peers).
fn spawn_core_loops(
    config: &Config,
    core: Arc<Node>,
    hub: Arc<Hub>,
    shutdown: &CancellationToken,
) -> (std::thread::JoinHandle<()>, JoinHandle<()>) {
    // A node alone commits as soon as the previous sync returns.
    let commit_gap = config
        .mesh
        .listen
        .map_or(std::time::Duration::ZERO, |_| config.mesh.commit_interval);
    let flusher = Arc::clone(&core).run_flusher(commit_gap, shutdown.clone());
    let step_loop = tokio::spawn(
        StepLoop {
            owner: core.owner(),
            core,
            hub,
            interval: config.round_interval(),
        }
        .run(shutdown.clone()),
    );
    (flusher, step_loop)
}

/// Who this node is and the map it draws halos on: on Fly, the platform's
/// word first (region, id, certificate); then the region checked against
/// the region files.
fn identify(
    config: &mut Config,
    fly: Option<&FlyMachine>,
    regions: Option<&Regions>,
) -> Result<(NodeId, Arc<Layout>), NodeError> {
    if let Some(fly) = fly {
        fly.adapt(config, regions)?;
    }
    check_region(config, regions)?;
    let node = resolve_node_id(config)?;
    if let Some(fly) = fly {
        fly.issue_certificate(config, &node)?;
    }
    let layout = Arc::new(match regions {
        Some(regions) => Layout::new(regions, config.max_pickup_km),
        None => Layout::unmapped(config.max_pickup_km),
    });
    Ok((node, layout))
}

/// The per-client rate limit, if `--rate-limit-per-second` sets one.
fn rate_limit(config: &Config) -> Option<RateLimit> {
    (config.rate_limit_per_second > 0).then(|| RateLimit {
        per_second: config.rate_limit_per_second,
        burst: config.rate_limit_burst,
        client_ip_header: config.client_ip_header.clone(),
    })
}

/// The public and admin servers, each stopping gracefully on `shutdown`.
fn serve(
    listener: TcpListener,
    public: axum::Router,
    admin_listener: TcpListener,
    admin: axum::Router,
    shutdown: &CancellationToken,
) -> JoinHandle<std::io::Result<()>> {
    let (serve_shutdown, admin_shutdown) = (shutdown.clone(), shutdown.clone());
    // The peer address is what the rate limit tells clients apart by.
    let public = axum::serve(
        listener,
        public.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { serve_shutdown.cancelled().await });
    let admin = axum::serve(admin_listener, admin)
        .with_graceful_shutdown(async move { admin_shutdown.cancelled().await });
    tokio::spawn(async move {
        let (public, admin) = tokio::join!(public.into_future(), admin.into_future());
        public.and(admin)
    })
}

/// Tells scripts and tests that start the node on port 0 where it listens.
fn write_ready_file(
    path: &Path,
    http: SocketAddr,
    admin: SocketAddr,
    mesh: Option<SocketAddr>,
    node: &NodeId,
) -> Result<(), NodeError> {
    let ready = serde_json::json!({
        "http": http.to_string(),
        "admin": admin.to_string(),
        "mesh": mesh.map(|a| a.to_string()),
        "node": node.0,
    });
    write_atomically(path, ready.to_string().as_bytes()).map_err(|source| NodeError::DataDir {
        path: path.display().to_string(),
        source,
    })
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), NodeError> {
    let bind_error = |source| NodeError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    Ok((listener, bound))
}

/// The mesh's token keys; a node alone may make up its own, a node with
/// peers may not (its tokens would fail everywhere else).
fn token_keys(config: &Config) -> Result<TokenKeys, NodeError> {
    let keys = match &config.token_keys_file {
        Some(path) => crate::config::read_key_file(path)?,
        None => config.token_keys.clone(),
    };
    if let Some(keys) = TokenKeys::new(&keys) {
        return Ok(keys);
    }
    if config.mesh.listen.is_some() {
        return Err(NodeError::NoTokenKeys);
    }
    tracing::info!("no --token-keys: tokens are signed with a key of this process only");
    Ok(TokenKeys::ephemeral()?)
}

/// The embedded store, or with `--cql-nodes` the cluster store with the
/// embedded store as its outbox.
async fn open_ratings(
    config: &Config,
    regions: Option<&Regions>,
) -> Result<Arc<dyn RatingStore>, NodeError> {
    if config.cql.nodes.is_empty() {
        return Ok(Arc::new(EmbeddedStore::open(&config.data_dir)?));
    }
    let own_datacenter = regions
        .and_then(|r| r.get(&config.region))
        .map(|r| r.datacenter.clone());
    let datacenter = config
        .cql
        .datacenter
        .clone()
        .or(own_datacenter)
        .ok_or_else(|| {
            StoreError::Config("name the datacenter with --cql-datacenter or --regions".into())
        })?;
    let replication = if config.cql.replication.is_empty() {
        let mut all: Vec<(String, u32)> = regions
            .map(|r| r.iter().map(|r| (r.datacenter.clone(), 1)).collect())
            .unwrap_or_default();
        if !all.iter().any(|(dc, _)| *dc == datacenter) {
            all.push((datacenter.clone(), 1));
        }
        all
    } else {
        config.cql.replication.clone()
    };
    let cluster = ClusterConfig {
        nodes: config.cql.nodes.clone(),
        datacenter,
        keyspace: config.cql.keyspace.clone(),
        replication,
        dc_failover: config.cql.dc_failover,
        request_timeout: config.cql.timeout,
    };
    let outbox = EmbeddedStore::open_outbox(&config.data_dir)?;
    Ok(Arc::new(
        ClusterStore::start(cluster, outbox, config.cql.timeout * 5).await?,
    ))
}

/// The `--regions` directory; `None` without `--regions`.
fn load_regions(config: &Config) -> Result<Option<Arc<Regions>>, NodeError> {
    let Some(dir) = &config.regions else {
        return Ok(None);
    };
    Ok(Some(Arc::new(Regions::load_dir(dir)?)))
}

/// With `--regions`, this node's `--region` must be one of them.
fn check_region(config: &Config, regions: Option<&Regions>) -> Result<(), NodeError> {
    let (Some(regions), Some(dir)) = (regions, &config.regions) else {
        return Ok(());
    };
    if regions.get(&config.region).is_none() {
        let known: Vec<&str> = regions.iter().map(|r| r.id.as_str()).collect();
        return Err(NodeError::UnknownRegion {
            region: config.region.clone(),
            dir: dir.display().to_string(),
            known: known.join(", "),
        });
    }
    Ok(())
}

/// The Fly regions of this node's region and of its neighbours: on Fly,
/// discovery dials only their machines (see [`ride_types::halo`]). `None`
/// without region files.
fn neighbour_fly_regions(
    regions: Option<&Regions>,
    layout: &Layout,
    region: &str,
) -> Option<BTreeSet<String>> {
    let me = layout.index_of(region)?;
    let neighbours = regions?
        .iter()
        .filter(|r| {
            layout
                .index_of(&r.id)
                .is_some_and(|i| layout.are_neighbours(me, i))
        })
        .map(|r| r.fly_region.clone())
        .collect();
    Some(neighbours)
}

/// The peers to start with: the `--peer` list, or on Fly the machines
/// discovered now (later changes are published to the same channel).
async fn mesh_peers<D: Dns>(
    config: &Config,
    fly: Option<&FlyMachine>,
    node: &NodeId,
    neighbours: &Option<BTreeSet<String>>,
    dns: impl Fn() -> Result<D, DiscoveryError>,
) -> Result<(watch::Sender<Vec<Peer>>, watch::Receiver<Vec<Peer>>), NodeError> {
    let initial = match (fly, config.mesh.listen) {
        (Some(fly), Some(listen)) => {
            let dns = dns().map_err(FlyError::from)?;
            let discovery = fly.discovery(dns, node, listen.port(), neighbours.clone());
            match discovery.peers().await {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(error = %e, "no peers discovered yet");
                    Vec::new()
                }
            }
        }
        _ => config.mesh.peers.clone(),
    };
    Ok(watch::channel(initial))
}

/// Binds the mesh endpoint and starts talking to peers, when `--mesh-listen`
/// is set.
fn start_mesh(
    config: &Config,
    node: &NodeId,
    layout: &Layout,
    peers: watch::Receiver<Vec<Peer>>,
    core: &Arc<Node>,
    shutdown: &CancellationToken,
) -> Result<Option<(SocketAddr, Mesh)>, NodeError> {
    let Some(listen) = config.mesh.listen else {
        return Ok(None);
    };
    let credentials = Credentials::load(&config.mesh.certs, node)?;
    let bound = BoundMesh::bind(listen, &credentials)?;
    let addr = bound.local_addr();
    let mesh = bound.start(
        MeshConfig {
            node: node.clone(),
            region: config.region.clone(),
            layout: layout.fingerprint(),
            peers,
            sync_interval: config.mesh.sync_interval,
        },
        Arc::clone(core) as Arc<dyn crate::net::peer_sync::PeerSync>,
        shutdown.clone(),
    );
    Ok(Some((addr, mesh)))
}

/// The core, holding this node's own documents as its journal kept them
/// (under `<data dir>/mesh`).
fn open_core(config: &Config, node: &NodeId, layout: &Arc<Layout>) -> Result<Node, NodeError> {
    let now = Millis::now();
    let started = std::time::Instant::now();
    let core = Node::open(
        &config.data_dir.join("mesh"),
        node,
        ReplicaConfig {
            node: node.clone(),
            region: config.region.clone(),
            layout: Arc::clone(layout),
            incarnation: now.0,
            request_ttl_ms: duration_ms(config.request_ttl),
            claim_ttl_ms: duration_ms(config.mesh.claim_ttl),
            epoch_ms: duration_ms(config.mesh.epoch).max(1),
            intake_flush_ms: duration_ms(config.mesh.intake_flush_interval),
            max_pickup_km: config.max_pickup_km,
            match_interval_ms: duration_ms(config.round_interval()).max(1),
            ready_grace_ms: duration_ms(config.mesh.ready_grace),
            hooks: Hooks::default(),
        },
        Retention {
            ms: duration_ms(config.match_retention),
            max_matches: config.max_retained_matches.max(1),
        },
        config.mesh.max_clock_skew,
        Durability::Fsync,
        now,
        Entropy::Os,
    )?
    .with_limits(Limits {
        max_queue: config.admission.max_intake_queue.max(1),
        max_mesh_lag: config.admission.max_mesh_lag,
        max_round: config.admission.max_round_time,
    });
    // Only a node in a mesh can tell that a region died.
    let core = match config.mesh.listen {
        Some(_) => core.with_adoption(
            Timing {
                adopt_after: config.mesh.adopt_after,
                handback_after: config.mesh.handback_after,
            },
            now,
        ),
        None => core,
    };
    tracing::info!(took = ?started.elapsed(), "own documents loaded");
    Ok(core)
}

fn duration_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The configured id, or the one kept in the data directory (made up and
/// kept on first start), so a restarted node keeps owning what it accepted.
fn resolve_node_id(config: &Config) -> Result<NodeId, NodeError> {
    if let Some(id) = &config.node_id {
        return Ok(NodeId(id.clone()));
    }
    let dir = &config.data_dir;
    let io = |source| NodeError::DataDir {
        path: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let path = dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(NodeId(id.trim().to_owned())),
        _ => {
            let id = format!("{}-{}", config.region, Entropy::Os.suffix());
            write_atomically(&path, id.as_bytes()).map_err(io)?;
            Ok(NodeId(id))
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests;
