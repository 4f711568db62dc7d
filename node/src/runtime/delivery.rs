//! `/communication`: the websocket that tells riders and drivers their match.
//!
//! The [`Hub`] maps request ids to the sockets watching them. Publishing never
//! waits for a client: each socket has a bounded outbox, and a socket whose
//! outbox is full is cut off (it can reconnect and resubscribe), so one slow
//! or dead client can hold up neither matching nor other clients.
//!
//! A match committed before its subscription arrives is still delivered:
//! subscribing looks the id up in the dispatch core while holding the hub's
//! lock, and the matcher records a match in the core before it publishes, so
//! each match reaches each subscriber exactly once, whichever comes first.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::runtime::access::{TokenError, TokenKeys};
use crate::runtime::node::{Node, Status};
use crate::runtime::recent_matches::Match;
use ride_types::api::{ClientMessage, ErrorDetail, Grant, ServerMessage};
use ride_types::clock::Millis;
use ride_types::ids::RequestId;

/// Ids one socket may watch at once.
pub(crate) const MAX_WATCHED_PER_SOCKET: usize = 10_000;
/// Matches remembered per socket as told; far more than it may watch, and
/// a match is retained (and so republished) for much less time than it
/// takes a busy socket to be told this many.
const MAX_TOLD_REMEMBERED: usize = 4 * MAX_WATCHED_PER_SOCKET;
/// Frames queued for one socket before it counts as too slow.
const OUTBOX_DEPTH: usize = 1_024;

/// Close code 1008 (policy violation) for a client that does not keep up.
const CLOSE_TOO_SLOW: u16 = 1008;
/// Close code 1001 (going away) when the node shuts down.
const CLOSE_GOING_AWAY: u16 = 1001;

type SocketId = u64;

struct Socket {
    outbox: mpsc::Sender<Utf8Bytes>,
    watching: HashSet<RequestId>,
    /// Riders whose match this socket was told, oldest first: each match
    /// is told once per socket, however often it is published or
    /// subscribed to (by the rider's id and the driver's, say).
    told: HashSet<RequestId>,
    told_order: VecDeque<RequestId>,
}

impl Socket {
    fn new(outbox: mpsc::Sender<Utf8Bytes>) -> Self {
        Self {
            outbox,
            watching: HashSet::new(),
            told: HashSet::new(),
            told_order: VecDeque::new(),
        }
    }

    /// Marks a match told; `false` if it was already.
    fn first_telling(&mut self, m: &Match) -> bool {
        if !self.told.insert(m.rider.id) {
            return false;
        }
        self.told_order.push_back(m.rider.id);
        if self.told_order.len() > MAX_TOLD_REMEMBERED
            && let Some(oldest) = self.told_order.pop_front()
        {
            self.told.remove(&oldest);
        }
        true
    }
}

#[derive(Default)]
struct Registry {
    sockets: HashMap<SocketId, Socket>,
    watchers: HashMap<RequestId, Vec<SocketId>>,
}

impl Registry {
    fn unwatch(&mut self, id: &RequestId) -> Vec<SocketId> {
        let sockets = self.watchers.remove(id).unwrap_or_default();
        for socket in &sockets {
            if let Some(s) = self.sockets.get_mut(socket) {
                s.watching.remove(id);
            }
        }
        sockets
    }

    fn remove_socket(&mut self, socket: SocketId) {
        let Some(s) = self.sockets.remove(&socket) else {
            return;
        };
        for id in s.watching {
            if let Some(list) = self.watchers.get_mut(&id) {
                list.retain(|w| *w != socket);
                if list.is_empty() {
                    self.watchers.remove(&id);
                }
            }
        }
    }

    /// Queues a match for a socket unless it was told it already.
    fn tell(&mut self, socket: SocketId, m: &Match) -> bool {
        let Some(s) = self.sockets.get_mut(&socket) else {
            return false;
        };
        s.first_telling(m) && self.send(socket, &match_frame(m))
    }

    /// Queues a frame; a socket whose outbox is full is cut off.
    fn send(&mut self, socket: SocketId, frame: &Utf8Bytes) -> bool {
        let Some(s) = self.sockets.get(&socket) else {
            return false;
        };
        match s.outbox.try_send(frame.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("ride_ws_dropped_slow_total").increment(1);
                tracing::warn!(socket, "websocket client too slow, disconnecting");
                self.remove_socket(socket);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.remove_socket(socket);
                false
            }
        }
    }
}

/// What a `subscribe` frame achieved.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Subscription {
    /// Ids now watched, or whose match was sent at once.
    pub accepted: Vec<Uuid>,
    /// Ids this node knows nothing of (never issued, expired, or forgotten).
    pub unknown: Vec<Uuid>,
    /// Ids refused because the socket watches too many already.
    pub over_limit: Vec<Uuid>,
}

#[derive(Default)]
pub(crate) struct Hub {
    registry: Mutex<Registry>,
    next_socket: AtomicU64,
}

impl Hub {
    /// Registers a socket; its frames arrive on the receiver.
    pub(crate) fn connect(&self) -> (SocketId, mpsc::Receiver<Utf8Bytes>) {
        let id = self.next_socket.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(OUTBOX_DEPTH);
        self.registry.lock().sockets.insert(id, Socket::new(tx));
        metrics::gauge!("ride_ws_connections").increment(1.0);
        (id, rx)
    }

    pub(crate) fn disconnect(&self, socket: SocketId) {
        self.registry.lock().remove_socket(socket);
        metrics::gauge!("ride_ws_connections").decrement(1.0);
    }

    /// Watches each id, sending at once the matches already committed.
    pub(crate) fn subscribe(
        &self,
        socket: SocketId,
        ids: &[Uuid],
        core: &Node,
        now: Millis,
    ) -> Subscription {
        let mut registry = self.registry.lock();
        let mut outcome = Subscription::default();
        let mut ready = Vec::new();
        let mut watch = Vec::new();
        {
            let Some(s) = registry.sockets.get(&socket) else {
                return outcome;
            };
            let mut room = MAX_WATCHED_PER_SOCKET.saturating_sub(s.watching.len());
            for &raw in ids {
                let id = RequestId(raw);
                match core.status(&id, now) {
                    Status::Matched(m) => {
                        ready.push(m);
                        outcome.accepted.push(raw);
                    }
                    Status::Pending if room > 0 => {
                        room -= 1;
                        watch.push(id);
                        outcome.accepted.push(raw);
                    }
                    // Possibly accepted by another node and on its way here.
                    Status::Unknown if id.may_still_arrive(now) && room > 0 => {
                        room -= 1;
                        watch.push(id);
                        outcome.accepted.push(raw);
                    }
                    Status::Pending => outcome.over_limit.push(raw),
                    Status::Unknown if id.may_still_arrive(now) => outcome.over_limit.push(raw),
                    Status::Unknown | Status::Over => outcome.unknown.push(raw),
                }
            }
        }
        for m in ready {
            registry.tell(socket, &m);
        }
        let registry = &mut *registry;
        if let Some(s) = registry.sockets.get_mut(&socket) {
            for id in watch {
                if s.watching.insert(id) {
                    registry.watchers.entry(id).or_default().push(socket);
                }
            }
        }
        outcome
    }

    /// Sends each match to every socket watching its rider or its driver.
    /// Returns how many frames were queued.
    pub(crate) fn publish(&self, matches: &[Arc<Match>]) -> usize {
        let mut registry = self.registry.lock();
        let mut queued = 0;
        for m in matches {
            let mut sockets = registry.unwatch(&m.rider.id);
            sockets.extend(registry.unwatch(&m.driver.id));
            sockets.sort_unstable();
            sockets.dedup();
            if sockets.is_empty() {
                continue;
            }
            for socket in sockets {
                queued += usize::from(registry.tell(socket, m));
            }
        }
        metrics::counter!("ride_ws_deliveries_total").increment(queued as u64);
        queued
    }

    /// Every id some socket watches.
    pub(crate) fn watched(&self) -> Vec<RequestId> {
        self.registry.lock().watchers.keys().copied().collect()
    }

    /// Stops watching ids (expired unmatched, or otherwise gone).
    pub(crate) fn forget(&self, ids: &[RequestId]) {
        if ids.is_empty() {
            return;
        }
        let mut registry = self.registry.lock();
        for id in ids {
            registry.unwatch(id);
        }
    }

    /// Sockets connected now.
    #[cfg(test)]
    pub(crate) fn connections(&self) -> usize {
        self.registry.lock().sockets.len()
    }
}

fn match_frame(m: &Match) -> Utf8Bytes {
    frame(&ServerMessage::Match(m.notice()))
}

fn frame(message: &ServerMessage) -> Utf8Bytes {
    // Serializing these plain structs cannot fail.
    serde_json::to_string(message)
        .unwrap_or_else(|e| {
            format!(r#"{{"type":"error","error":{{"code":"internal","message":"{e}"}}}}"#)
        })
        .into()
}

fn error_frame(code: &str, message: String) -> Utf8Bytes {
    frame(&ServerMessage::Error {
        error: ErrorDetail {
            code: code.into(),
            message,
        },
    })
}

/// How one socket is served.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SocketSettings {
    /// A ping is sent this often; a client that has not answered the
    /// previous one by then is disconnected.
    pub ping_interval: Duration,
}

/// Serves one upgraded websocket until the client leaves, falls behind, stops
/// answering pings, or the node shuts down.
pub(crate) async fn serve(
    socket: WebSocket,
    hub: Arc<Hub>,
    core: Arc<Node>,
    settings: SocketSettings,
    shutdown: CancellationToken,
    tokens: Arc<TokenKeys>,
) {
    let (id, mut outbox) = hub.connect();
    let (mut sink, mut stream) = socket.split();
    let mut ping = tokio::time::interval(settings.ping_interval);
    ping.reset();
    let mut awaiting_pong = false;
    let close = loop {
        tokio::select! {
            () = shutdown.cancelled() => break Some((CLOSE_GOING_AWAY, "node shutting down")),
            queued = outbox.recv() => match queued {
                Some(text) => {
                    if sink.send(Message::Text(text)).await.is_err() {
                        break None;
                    }
                }
                None => break Some((CLOSE_TOO_SLOW, "client too slow; reconnect and resubscribe")),
            },
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let reply = handle_frame(&text, id, &hub, &core, &tokens);
                    let mut failed = false;
                    for frame in reply {
                        failed |= sink.send(Message::Text(frame)).await.is_err();
                    }
                    if failed {
                        break None;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    let frame = error_frame("unsupported_frame", "send JSON text frames".into());
                    if sink.send(Message::Text(frame)).await.is_err() {
                        break None;
                    }
                }
                Some(Ok(Message::Pong(_))) => awaiting_pong = false,
                Some(Ok(Message::Ping(_))) => {}
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break None,
            },
            _ = ping.tick() => {
                if awaiting_pong {
                    tracing::debug!(socket = id, "websocket client stopped answering pings");
                    break None;
                }
                awaiting_pong = true;
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    break None;
                }
            }
        }
    };
    hub.disconnect(id);
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = sink.send(Message::Close(Some(frame))).await;
    }
}

/// Answers one client frame. Ids without their token are refused one by
/// one (`missing_token`, `invalid_token`); the others are subscribed.
fn handle_frame(
    text: &str,
    socket: SocketId,
    hub: &Hub,
    core: &Node,
    tokens: &TokenKeys,
) -> Vec<Utf8Bytes> {
    let requests = match serde_json::from_str::<ClientMessage>(text) {
        Ok(ClientMessage::Subscribe { requests }) => requests,
        Err(e) => {
            return vec![error_frame(
                "malformed_message",
                format!(
                    r#"expected {{"type":"subscribe","requests":[{{"id":...,"token":...}}]}}: {e}"#
                ),
            )];
        }
    };
    let mut ids = Vec::with_capacity(requests.len());
    let (mut missing, mut invalid) = (Vec::new(), Vec::new());
    for Grant { id, token } in requests {
        match tokens.verify(id, token.as_ref()) {
            Ok(()) => ids.push(id),
            Err(TokenError::Missing) => missing.push(id),
            Err(TokenError::Invalid) => invalid.push(id),
        }
    }
    let outcome = hub.subscribe(socket, &ids, core, Millis::now());
    let mut replies = vec![frame(&ServerMessage::Subscribed {
        ids: outcome.accepted,
    })];
    for (refused, error) in [
        (missing, TokenError::Missing),
        (invalid, TokenError::Invalid),
    ] {
        if !refused.is_empty() {
            replies.push(error_frame(
                error.code().as_str(),
                format!("{error}; not watching {refused:?}"),
            ));
        }
    }
    if !outcome.unknown.is_empty() {
        replies.push(error_frame(
            "unknown_id",
            format!(
                "no pending request or retained match has these ids: {:?}",
                outcome.unknown
            ),
        ));
    }
    if !outcome.over_limit.is_empty() {
        replies.push(error_frame(
            "too_many_subscriptions",
            format!(
                "a socket may watch {MAX_WATCHED_PER_SOCKET} ids at once; not watching {:?}",
                outcome.over_limit
            ),
        ));
    }
    replies
}

#[cfg(test)]
mod tests;
