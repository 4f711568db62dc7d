//! Wires the modules into a running node and stops it cleanly.
//!
//! Every background loop watches one [`CancellationToken`]; cancelling it
//! stops intake (in-flight requests finish), closes websockets, stops the
//! matcher and finally flushes the rating store.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::communication::{Hub, SocketSettings};
use crate::config::Config;
use crate::dispatch::{Dispatch, Settings};
use crate::http::{self, AppState};
use crate::ids::NodeId;
use crate::matcher::Matcher;
use crate::matches::Retention;
use crate::ratings::{EmbeddedStore, RatingStore, StoreError};
use crate::shared::SharedDispatch;
use crate::telemetry;

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
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
    #[error("a node task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A node that is serving.
pub struct RunningNode {
    http_addr: SocketAddr,
    node: NodeId,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), NodeError>>,
}

impl RunningNode {
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
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

/// Starts a node: binds, spawns the matcher, and serves.
pub async fn start(config: Config) -> Result<RunningNode, NodeError> {
    let node = resolve_node_id(&config)?;
    let store: Arc<dyn RatingStore> = Arc::new(EmbeddedStore::open(&config.data_dir)?);
    let dispatch = Arc::new(SharedDispatch::new(Dispatch::new(Settings {
        node: node.clone(),
        region: config.region.clone(),
        request_ttl_ms: duration_ms(config.request_ttl),
        match_retention: Retention {
            ms: duration_ms(config.match_retention),
            max_matches: config.max_retained_matches.max(1),
        },
    })));
    let hub = Arc::new(Hub::default());
    let shutdown = CancellationToken::new();
    let app = Arc::new(AppState {
        region: config.region.clone(),
        node: node.0.clone(),
        dispatch: Arc::clone(&dispatch),
        hub: Arc::clone(&hub),
        ratings: Arc::clone(&store),
        metrics: telemetry::metrics(),
        sockets: SocketSettings {
            ping_interval: config.ws_ping_interval,
        },
        shutdown: shutdown.clone(),
    });

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| NodeError::Bind {
            addr: config.listen,
            source,
        })?;
    let http_addr = listener.local_addr().map_err(|source| NodeError::Bind {
        addr: config.listen,
        source,
    })?;

    let matcher = tokio::spawn(
        Matcher {
            dispatch,
            hub,
            interval: config.match_interval,
            max_pickup_km: config.max_pickup_km,
        }
        .run(shutdown.clone()),
    );
    let serve_shutdown = shutdown.clone();
    let server = axum::serve(listener, http::router(app))
        .with_graceful_shutdown(async move { serve_shutdown.cancelled().await });
    let grace = config.shutdown_grace;
    let stopping = shutdown.clone();
    let task = tokio::spawn(async move {
        let serving = tokio::spawn(server.into_future());
        stopping.cancelled().await;
        let served = match tokio::time::timeout(grace, serving).await {
            Ok(joined) => joined?.map_err(NodeError::Serve),
            Err(_) => {
                tracing::warn!(?grace, "in-flight requests outlived the shutdown grace");
                Ok(())
            }
        };
        matcher.await?;
        store.close().await?;
        tracing::info!("node stopped");
        served
    });

    if let Some(path) = &config.ready_file {
        let ready = serde_json::json!({ "http": http_addr.to_string(), "node": node.0 });
        write_atomically(path, ready.to_string().as_bytes()).map_err(|source| {
            NodeError::DataDir {
                path: path.display().to_string(),
                source,
            }
        })?;
    }
    tracing::info!(%http_addr, node = %node, region = %config.region, "node serving");
    Ok(RunningNode {
        http_addr,
        node,
        shutdown,
        task,
    })
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
            let random = uuid::Uuid::now_v7().simple().to_string();
            // The tail of a UUIDv7 is random.
            let suffix = &random[24..];
            let id = format!("{}-{suffix}", config.region);
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
