//! One long-lived websocket per node endpoint, delivering match notices.
//!
//! The socket task owns the ids still waiting for a match, with their
//! tokens, so that when the connection drops it can reconnect (with backoff)
//! and subscribe to all of them again in one frame: the node promises to deliver a match
//! committed before the subscription, so nothing is lost by the gap.
//! Subscriptions queued while disconnected are folded into that frame.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use ride_types::api::{AccessToken, ClientMessage, Grant, ServerMessage};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender, error::TryRecvError};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::endpoint::Endpoint;
use crate::stats::Stats;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Ids per subscribe frame: the node closes a socket whose frame exceeds
/// its limit, and an id with its token takes under 100 bytes of JSON.
const PER_FRAME: usize = ride_types::api::MAX_FRAME_BYTES / 128;

/// A match notice as received, stamped with where and when.
#[derive(Debug)]
pub struct Delivery {
    pub endpoint: Arc<Endpoint>,
    pub received_at: DateTime<Utc>,
    /// Always [`ServerMessage::Match`]; kept whole so it can be recorded
    /// exactly as the wire type.
    pub message: ServerMessage,
}

/// A request id to follow, and the token its answer carried.
pub type Followed = (Uuid, AccessToken);

enum Command {
    Subscribe(Vec<Followed>),
    Forget(Uuid),
}

/// Controls one endpoint's socket task.
#[derive(Debug)]
pub struct Socket {
    commands: UnboundedSender<Command>,
    task: JoinHandle<()>,
}

impl Socket {
    /// Starts connecting to `endpoint`'s `/communication`; match notices go to
    /// `deliveries`.
    pub fn spawn(
        endpoint: Arc<Endpoint>,
        deliveries: UnboundedSender<Delivery>,
        stats: Arc<Stats>,
    ) -> Socket {
        let (commands, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(endpoint, rx, deliveries, stats));
        Socket { commands, task }
    }

    /// Watches each id, with the token its answer carried, until it is
    /// [forgotten](Socket::forget).
    pub fn subscribe(&self, requests: Vec<Followed>) {
        // Fails only once the task has ended, i.e. during shutdown.
        let _ = self.commands.send(Command::Subscribe(requests));
    }

    /// Stops resubscribing `id` after a reconnect (its match arrived, or it
    /// expired).
    pub fn forget(&self, id: Uuid) {
        let _ = self.commands.send(Command::Forget(id));
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why a connected session ended.
enum SessionEnd {
    /// The connection failed; reconnect.
    Dropped(String),
    /// Nobody is listening any more; stop.
    Finished,
}

async fn run(
    endpoint: Arc<Endpoint>,
    mut commands: UnboundedReceiver<Command>,
    deliveries: UnboundedSender<Delivery>,
    stats: Arc<Stats>,
) {
    let url = endpoint.communication.as_str().to_owned();
    let mut watching = HashMap::new();
    let mut backoff = BACKOFF_START;
    // Log the first failure of an outage as a warning, repeats at debug.
    let mut failing = false;
    loop {
        let error = match tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_tungstenite::connect_async(url.as_str()),
        )
        .await
        {
            Ok(Ok((ws, _response))) => {
                stats.record_ws_connect();
                if failing {
                    info!(%url, "websocket reconnected");
                }
                failing = false;
                backoff = BACKOFF_START;
                let session = Session {
                    endpoint: &endpoint,
                    watching: &mut watching,
                    commands: &mut commands,
                    deliveries: &deliveries,
                    stats: &stats,
                };
                match session.run(ws).await {
                    SessionEnd::Finished => return,
                    SessionEnd::Dropped(reason) => {
                        stats.record_ws_drop();
                        format!("dropped: {reason}")
                    }
                }
            }
            Ok(Err(e)) => format!("could not connect: {}", crate::http::describe_error(&e)),
            Err(_) => format!("could not connect within {CONNECT_TIMEOUT:?}"),
        };
        if failing {
            debug!(%url, %error, "websocket still down");
        } else {
            warn!(%url, %error, waiting = watching.len(), "websocket down; reconnecting with backoff");
            failing = true;
        }
        // Jitter keeps many bots from reconnecting in lock-step.
        let jittered = backoff.mul_f64(rand::rng().random_range(0.8..1.2));
        tokio::time::sleep(jittered).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

struct Session<'a> {
    endpoint: &'a Arc<Endpoint>,
    watching: &'a mut HashMap<Uuid, AccessToken>,
    commands: &'a mut UnboundedReceiver<Command>,
    deliveries: &'a UnboundedSender<Delivery>,
    stats: &'a Stats,
}

impl Session<'_> {
    async fn run<S>(mut self, ws: tokio_tungstenite::WebSocketStream<S>) -> SessionEnd
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let (mut sink, mut stream) = ws.split();
        // Fold everything queued while disconnected into one subscribe frame.
        loop {
            match self.commands.try_recv() {
                Ok(command) => self.apply(command),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return SessionEnd::Finished,
            }
        }
        if !self.watching.is_empty() {
            let requests = self
                .watching
                .iter()
                .map(|(id, token)| (*id, token.clone()))
                .collect();
            if let Err(reason) = send_subscribe(&mut sink, requests).await {
                return SessionEnd::Dropped(reason);
            }
        }
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    None => {
                        let _ = sink.close().await;
                        return SessionEnd::Finished;
                    }
                    Some(Command::Subscribe(requests)) => {
                        self.watching.extend(requests.iter().cloned());
                        if let Err(reason) = send_subscribe(&mut sink, requests).await {
                            return SessionEnd::Dropped(reason);
                        }
                    }
                    Some(command @ Command::Forget(_)) => self.apply(command),
                },
                frame = stream.next() => match frame {
                    None => return SessionEnd::Dropped("closed by the node".into()),
                    Some(Err(e)) => return SessionEnd::Dropped(e.to_string()),
                    Some(Ok(Message::Text(text))) => {
                        if !self.on_text(text.as_str()) {
                            return SessionEnd::Finished;
                        }
                    }
                    // Pings are answered by tungstenite while we keep reading;
                    // a Close frame is followed by the end of the stream.
                    Some(Ok(_)) => {}
                },
            }
        }
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::Subscribe(requests) => self.watching.extend(requests),
            Command::Forget(id) => {
                self.watching.remove(&id);
            }
        }
    }

    /// Handles one server frame; returns false when the simulation has gone.
    fn on_text(&mut self, text: &str) -> bool {
        let url = self.endpoint.communication.as_str();
        match serde_json::from_str::<ServerMessage>(text) {
            Ok(message @ ServerMessage::Match(_)) => {
                let delivery = Delivery {
                    endpoint: Arc::clone(self.endpoint),
                    received_at: Utc::now(),
                    message,
                };
                return self.deliveries.send(delivery).is_ok();
            }
            Ok(ServerMessage::Subscribed { ids }) => {
                debug!(%url, count = ids.len(), "subscribed");
            }
            // Only the first complaint is a warning; all are counted.
            Ok(ServerMessage::Error { error }) => {
                if self.stats.record_ws_server_error() == 0 {
                    warn!(%url, code = %error.code, message = %error.message, "node refused a websocket frame");
                } else {
                    debug!(%url, code = %error.code, message = %error.message, "node refused a websocket frame");
                }
            }
            Err(e) => {
                if self.stats.record_ws_server_error() == 0 {
                    warn!(%url, error = %e, "unreadable websocket frame");
                } else {
                    debug!(%url, error = %e, "unreadable websocket frame");
                }
            }
        }
        true
    }
}

/// Subscribes in as many frames as the node's frame limit needs.
async fn send_subscribe<S>(sink: &mut S, requests: Vec<Followed>) -> Result<(), String>
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    for chunk in requests.chunks(PER_FRAME) {
        let requests = chunk
            .iter()
            .map(|(id, token)| Grant {
                id: *id,
                token: Some(token.clone()),
            })
            .collect();
        let frame = serde_json::to_string(&ClientMessage::Subscribe { requests })
            .map_err(|e| e.to_string())?;
        sink.send(Message::text(frame))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_subscribe_frame_fits_the_nodes_limit() {
        let requests = (0..PER_FRAME)
            .map(|_| {
                let id = Uuid::now_v7();
                Grant {
                    id,
                    token: Some(AccessToken::new("t".repeat(AccessToken::LEN))),
                }
            })
            .collect();
        let frame = serde_json::to_string(&ClientMessage::Subscribe { requests }).unwrap();
        assert!(
            frame.len() <= ride_types::api::MAX_FRAME_BYTES,
            "{}",
            frame.len()
        );
    }
}
