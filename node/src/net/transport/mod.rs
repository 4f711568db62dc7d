//! The mesh's network: QUIC (quinn) with mutual TLS, one connection and one
//! bidirectional stream per pair of peers, length-delimited frames, each
//! direction one deflate stream ([`super::compression`]).
//!
//! automerge's sync protocol needs a reliable, ordered channel whose two ends
//! start over together, so each pair has exactly one connection: the node
//! with the smaller id dials, the other accepts. When the connection ends,
//! both sides forget their sync state for the other and start afresh on the
//! next connection. The dialer retries with capped exponential backoff.
//!
//! A session reads and writes at once (two halves of the stream, polled
//! together): a session that only read between its writes deadlocked under
//! a burst, each peer blocked sending to the other with both flow-control
//! windows full (`bursts_on_both_sides_at_once_still_converge`).
//!
//! The mesh runs on a runtime of its own, with [`MESH_THREADS`] workers.
//! Its sessions call the core (its lock, automerge's CPU work, the journal's
//! `fdatasync`) straight from their tasks: on the node's main runtime that
//! would stall intake, and `block_in_place`, used before, hands the
//! worker's place to a new thread on every call. A node with eight
//! neighbours ran up to 56 threads that way, and its memory followed its
//! thread count (each thread keeps its own allocator heap), so nine regions
//! cost 1.7-2x the memory per node of three. Calls into the core take
//! one lock, so more threads bought no parallelism.
//!
//! Each side's hello names its region and its layout's fingerprint
//! ([`ride_types::halo`]): a peer with another layout is refused, and one whose
//! region is too far away to share anything keeps no session (and is not
//! dialled again), so a node's sessions grow with its neighbours, not with
//! the number of regions.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use super::compression::{CompressionError, FrameCompressor, FrameDecompressor};
use super::peer_sync::{PeerSync, SyncError};
use super::tls::{self, Credentials, TlsError};
pub(crate) use crate::config::Peer;
use crate::protocol::message::{PeerMessage, PeerMessageV1};
use ride_types::clock::Millis;
use ride_types::ids::NodeId;

mod frames;

use frames::{FrameReader, FrameWriter, Frames};

/// Frames larger than this end the connection: no honest sync message
/// comes near it.
pub(crate) const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// Worker threads of the mesh's runtime: two, so that one session
/// blocked in the core (waiting for its lock or a sync) never stops every
/// other session's QUIC traffic.
const MESH_THREADS: usize = 2;
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Application close codes.
const CLOSE_SHUTDOWN: u32 = 0;
const CLOSE_UNKNOWN_PEER: u32 = 1;
const CLOSE_PROTOCOL: u32 = 2;
const CLOSE_LAYOUT: u32 = 3;
const CLOSE_NOT_NEIGHBOUR: u32 = 4;

#[derive(Debug, Clone)]
pub(crate) struct MeshConfig {
    pub node: NodeId,
    pub region: String,
    /// This node's [`ride_types::halo::Layout::fingerprint`]: peers must match.
    pub layout: u64,
    /// The current peers: fixed (`--peer`), or discovered and changing.
    pub peers: watch::Receiver<Vec<Peer>>,
    /// How often each session sends what its peer is missing.
    pub sync_interval: Duration,
}

#[derive(Debug, Error)]
pub enum TransportError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot listen for peers on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the mesh's threads: {0}")]
    Runtime(std::io::Error),
}

#[derive(Debug, Error)]
enum SessionError {
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("stream: {0}")]
    Io(#[from] std::io::Error),
    #[error("undecodable frame: {0}")]
    Decode(#[from] postcard::Error),
    #[error("undecodable frame: {0}")]
    Inflate(#[from] CompressionError),
    #[error("peer broke the protocol: {0}")]
    Protocol(String),
    #[error(transparent)]
    Node(#[from] SyncError),
    #[error(
        "{peer} has another region layout or pickup radius (fingerprint {theirs:016x}, ours {ours:016x}); every node must load the same region files and --max-pickup-km"
    )]
    Layout {
        peer: NodeId,
        theirs: u64,
        ours: u64,
    },
}

impl MeshConfig {
    fn hello(&self) -> PeerMessage {
        PeerMessage::V1(PeerMessageV1::Hello {
            node: self.node.clone(),
            region: self.region.clone(),
            layout: self.layout,
        })
    }

    /// Refuses a peer whose layout differs, loudly: halos drawn on two maps
    /// would send requests where they cannot be matched.
    fn check_layout(&self, peer: &NodeId, theirs: u64) -> Result<(), SessionError> {
        if theirs == self.layout {
            return Ok(());
        }
        metrics::counter!("mesh_layout_mismatches_total", "peer" => peer.0.clone()).increment(1);
        let e = SessionError::Layout {
            peer: peer.clone(),
            theirs,
            ours: self.layout,
        };
        tracing::error!(error = %e, "refused a peer");
        Err(e)
    }
}

/// An endpoint bound to its UDP port, not yet talking to anyone (so that
/// its address can be known before peers are configured).
pub(crate) struct BoundMesh {
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    runtime: MeshRuntime,
}

impl BoundMesh {
    pub(crate) fn bind(
        listen: SocketAddr,
        credentials: &Credentials,
    ) -> Result<Self, TransportError> {
        let bind_error = |source| TransportError::Bind {
            addr: listen,
            source,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(MESH_THREADS)
            .thread_name("mesh")
            .enable_all()
            .build()
            .map_err(TransportError::Runtime)?;
        let mut endpoint = {
            // The endpoint's driver runs on the runtime it is made in.
            let _entered = runtime.enter();
            quinn::Endpoint::server(credentials.server_config()?, listen).map_err(bind_error)?
        };
        endpoint.set_default_client_config(credentials.client_config()?);
        let local_addr = endpoint.local_addr().map_err(bind_error)?;
        Ok(Self {
            endpoint,
            local_addr,
            runtime: MeshRuntime(Some(runtime)),
        })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Dials the peers it should and accepts the others, until `shutdown`.
    pub(crate) fn start(
        self,
        config: MeshConfig,
        core: Arc<dyn PeerSync>,
        shutdown: CancellationToken,
    ) -> Mesh {
        let context = Arc::new(Context {
            config,
            sessions: Sessions::default(),
        });
        let handle = self.runtime.handle();
        let mut tasks = JoinSet::new();
        tasks.spawn_on(
            follow_membership(
                self.endpoint.clone(),
                Arc::clone(&context),
                Arc::clone(&core),
                shutdown.clone(),
            ),
            handle,
        );
        tasks.spawn_on(accept(self.endpoint, context, core, shutdown), handle);
        Mesh {
            tasks,
            _runtime: self.runtime,
        }
    }
}

/// The mesh's own runtime. Dropped from async code (where tokio forbids
/// waiting for a runtime's threads), it lets them finish in the background.
struct MeshRuntime(Option<tokio::runtime::Runtime>);

impl MeshRuntime {
    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("present until dropped").handle()
    }
}

impl Drop for MeshRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// What the mesh's tasks share.
struct Context {
    config: MeshConfig,
    sessions: Sessions,
}

/// At most one session per peer. A peer that restarts dials again while
/// this side may still hold the dead connection (until its idle timeout):
/// the new session cancels the old one and waits for it to end, so the old
/// one's `peer_lost` (which resets sync state) can never land in the middle
/// of the new one.
#[derive(Default)]
struct Sessions {
    peers: parking_lot::Mutex<HashMap<NodeId, PeerSlot>>,
}

struct PeerSlot {
    current: CancellationToken,
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl Sessions {
    /// Supersedes `peer`'s current session and waits for it to end. Returns
    /// the new session's stop token and its turn, or `None` if the new
    /// session was itself superseded or stopped while waiting.
    async fn begin(
        &self,
        peer: &NodeId,
        shutdown: &CancellationToken,
    ) -> Option<(CancellationToken, tokio::sync::OwnedMutexGuard<()>)> {
        let (stop, turn) = {
            let mut peers = self.peers.lock();
            let slot = peers.entry(peer.clone()).or_insert_with(|| PeerSlot {
                current: CancellationToken::new(),
                turn: Arc::new(tokio::sync::Mutex::new(())),
            });
            slot.current.cancel();
            slot.current = shutdown.child_token();
            (slot.current.clone(), Arc::clone(&slot.turn))
        };
        tokio::select! {
            guard = turn.lock_owned() => (!stop.is_cancelled()).then_some((stop, guard)),
            () = stop.cancelled() => None,
        }
    }
}

/// A running mesh endpoint; dropping it stops its tasks.
pub(crate) struct Mesh {
    tasks: JoinSet<()>,
    /// Declared after the tasks: dropped once they are aborted.
    _runtime: MeshRuntime,
}

impl Mesh {
    /// Waits until every task has stopped (after `shutdown`).
    pub(crate) async fn stopped(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Keeps one dialer per peer this node should dial (those with larger ids),
/// starting and stopping dialers as the peer list changes.
async fn follow_membership(
    endpoint: quinn::Endpoint,
    context: Arc<Context>,
    core: Arc<dyn PeerSync>,
    shutdown: CancellationToken,
) {
    let mut peers = context.config.peers.clone();
    let mut dialers: HashMap<NodeId, (SocketAddr, CancellationToken)> = HashMap::new();
    let mut tasks = JoinSet::new();
    loop {
        let wanted: Vec<Peer> = peers
            .borrow_and_update()
            .iter()
            .filter(|p| p.node > context.config.node)
            .cloned()
            .collect();
        dialers.retain(|node, (addr, stop)| {
            let keep = wanted.iter().any(|p| p.node == *node && p.addr == *addr);
            if !keep {
                tracing::info!(peer = %node, "peer left the mesh");
                stop.cancel();
            }
            keep
        });
        for peer in wanted {
            if !dialers.contains_key(&peer.node) {
                let stop = shutdown.child_token();
                dialers.insert(peer.node.clone(), (peer.addr, stop.clone()));
                tasks.spawn(dial(
                    endpoint.clone(),
                    peer,
                    Arc::clone(&context),
                    Arc::clone(&core),
                    stop,
                ));
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            changed = peers.changed() => {
                // A fixed list's sender is gone: nothing will change.
                if changed.is_err() {
                    shutdown.cancelled().await;
                    break;
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    while tasks.join_next().await.is_some() {}
}

async fn dial(
    endpoint: quinn::Endpoint,
    peer: Peer,
    context: Arc<Context>,
    core: Arc<dyn PeerSync>,
    shutdown: CancellationToken,
) {
    let mut backoff = BACKOFF_START;
    while !shutdown.is_cancelled() {
        let attempt = async {
            let connection = endpoint.connect(peer.addr, &peer.node.0)?.await?;
            let (send, recv) = connection.open_bi().await?;
            let mut frames = Frames::new(send, recv, &peer.node);
            frames.send(&context.config.hello()).await?;
            let Some((node, region, layout)) = frames.hello().await? else {
                return Err(SessionError::Protocol("no hello back".into()));
            };
            if node != peer.node {
                return Err(SessionError::Protocol(format!(
                    "{node} answered for {}",
                    peer.node
                )));
            }
            if let Err(e) = context.config.check_layout(&node, layout) {
                connection.close(CLOSE_LAYOUT.into(), b"region layouts differ");
                return Err(e);
            }
            tracing::info!(peer = %peer.node, addr = %peer.addr, %region, "connected to peer");
            Ok::<_, SessionError>((connection, frames, region))
        };
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            outcome = attempt => outcome,
        };
        match outcome {
            Ok((connection, frames, region)) => {
                backoff = BACKOFF_START;
                let ended = session(
                    connection, frames, &peer.node, &region, &context, &*core, &shutdown,
                )
                .await;
                // Too far to share anything: no redial (the layout, which
                // decides it, cannot change under a running node).
                if ended == Ended::NotNeighbour {
                    return;
                }
            }
            Err(e) => {
                metrics::counter!("mesh_connect_failures_total", "peer" => peer.node.0.clone())
                    .increment(1);
                tracing::debug!(peer = %peer.node, error = %e, "cannot reach peer");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn accept(
    endpoint: quinn::Endpoint,
    context: Arc<Context>,
    core: Arc<dyn PeerSync>,
    shutdown: CancellationToken,
) {
    let mut sessions = JoinSet::new();
    loop {
        let incoming = tokio::select! {
            () = shutdown.cancelled() => break,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
        };
        let (context, core, shutdown) = (Arc::clone(&context), Arc::clone(&core), shutdown.clone());
        sessions.spawn(async move {
            if let Err(e) = accepted(incoming, &context, &*core, &shutdown).await {
                metrics::counter!("mesh_rejected_peers_total").increment(1);
                tracing::warn!(error = %e, "refused a peer");
            }
        });
    }
    endpoint.close(CLOSE_SHUTDOWN.into(), b"node shutting down");
    while sessions.join_next().await.is_some() {}
    endpoint.wait_idle().await;
}

/// Handshakes an incoming connection (TLS has verified the certificate
/// chain), checks that the peer is who its certificate says and one we know,
/// then serves it.
async fn accepted(
    incoming: quinn::Incoming,
    context: &Context,
    core: &dyn PeerSync,
    shutdown: &CancellationToken,
) -> Result<(), SessionError> {
    let connection = incoming.await?;
    let (send, recv) = connection.accept_bi().await?;
    let mut frames = Frames::new(send, recv, &NodeId("unidentified".into()));
    let (node, region, layout) = match frames.hello().await {
        Ok(Some(hello)) => hello,
        Ok(None) => {
            connection.close(CLOSE_PROTOCOL.into(), b"expected hello");
            return Err(SessionError::Protocol("no hello".into()));
        }
        Err(e) => {
            connection.close(CLOSE_PROTOCOL.into(), b"undecodable hello");
            return Err(e);
        }
    };
    let config = &context.config;
    let known = config.peers.borrow().iter().any(|p| p.node == node) && node < config.node;
    if !known || !tls::peer_is(&connection, &node) {
        connection.close(CLOSE_UNKNOWN_PEER.into(), b"unknown peer");
        return Err(SessionError::Protocol(format!(
            "{node} is not a peer that dials this node, or its certificate is not {node}'s"
        )));
    }
    if let Err(e) = config.check_layout(&node, layout) {
        connection.close(CLOSE_LAYOUT.into(), b"region layouts differ");
        return Err(e);
    }
    frames.name_peer(&node);
    frames.send(&config.hello()).await?;
    tracing::info!(peer = %node, %region, "peer connected");
    session(connection, frames, &node, &region, context, core, shutdown).await;
    Ok(())
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Shut down, superseded, or the connection was lost.
    Closed,
    /// The peer's region is too far away to share anything.
    NotNeighbour,
}

/// Exchanges sync messages with one peer (of `region`) until the
/// connection ends. The core learns of the peer only once the session it
/// supersedes has ended: that one's `peer_lost` must not undo this one's
/// `peer_joined`.
async fn session(
    connection: quinn::Connection,
    frames: Frames,
    peer: &NodeId,
    region: &str,
    context: &Context,
    core: &dyn PeerSync,
    shutdown: &CancellationToken,
) -> Ended {
    let Some((stop, _turn)) = context.sessions.begin(peer, shutdown).await else {
        connection.close(CLOSE_SHUTDOWN.into(), b"superseded");
        return Ended::Closed;
    };
    if let Err(e) = core.peer_joined(peer, region) {
        tracing::info!(%peer, reason = %e, "not keeping a session");
        connection.close(CLOSE_NOT_NEIGHBOUR.into(), b"not a neighbour");
        return Ended::NotNeighbour;
    }
    metrics::gauge!("mesh_peers_connected").increment(1.0);
    let Frames { writer, reader } = frames;
    let ended: Result<(), SessionError> = tokio::select! {
        () = stop.cancelled() => Ok(()),
        // Reading never waits for writing: both run at once, so a peer
        // that is itself blocked sending to this node is still drained.
        read = read_from(reader, peer, core) => read,
        written = write_to(writer, peer, core, context.config.sync_interval) => written,
    };
    match &ended {
        Ok(()) => connection.close(CLOSE_SHUTDOWN.into(), b"bye"),
        Err(
            SessionError::Decode(_)
            | SessionError::Inflate(_)
            | SessionError::Node(_)
            | SessionError::Protocol(_),
        ) => {
            metrics::counter!("mesh_rejected_peers_total").increment(1);
            connection.close(CLOSE_PROTOCOL.into(), b"protocol error");
        }
        Err(_) => {}
    }
    if let Err(e) = ended {
        metrics::counter!("mesh_sessions_lost_total", "peer" => peer.0.clone()).increment(1);
        tracing::warn!(peer = %peer, error = %e, "peer session ended");
    }
    core.peer_lost(peer);
    metrics::gauge!("mesh_peers_connected").decrement(1.0);
    Ended::Closed
}

/// Applies everything `peer` sends, as it arrives.
async fn read_from(
    mut reader: FrameReader,
    peer: &NodeId,
    core: &dyn PeerSync,
) -> Result<(), SessionError> {
    while let Some(message) = reader.next().await? {
        // Blocks this mesh thread (the core's lock, automerge): see the
        // module's doc for why that is the mesh runtime's job.
        core.receive(peer, message, Millis::now())?;
    }
    Ok(())
}

/// Every `interval`, sends `peer` what it is missing.
async fn write_to(
    mut writer: FrameWriter,
    peer: &NodeId,
    core: &dyn PeerSync,
    interval: Duration,
) -> Result<(), SessionError> {
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        let messages = core.outgoing(peer, Millis::now())?;
        for message in messages {
            writer.send(&message).await?;
        }
    }
}
