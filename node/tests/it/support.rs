//! Starting node processes and talking to them.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use node::config::{TokenKey, new_key_text};
use node::runtime::access::TokenKeys;
use ride_types::api::{
    Accepted, AccessToken, ClientMessage, DriverRating, DriverRequest, Grant, MatchNotice,
    Position, RiderRequest, ServerMessage,
};
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

/// Long enough for a slow CI machine; only ever waited out on failure.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The token key every node started here shares, made up once per test
/// run, as `scripts/mesh.sh` makes one per mesh.
pub fn token_key() -> &'static str {
    static KEY: OnceLock<String> = OnceLock::new();
    KEY.get_or_init(|| new_key_text().expect("a random key"))
}

/// The token a node started here hands out with `id`: what the client that
/// posted it holds.
pub fn token_for(id: Uuid) -> AccessToken {
    let key = TokenKey::parse(token_key()).expect("a valid key");
    TokenKeys::new(&[key]).expect("one key").mint(id)
}

/// A node process, killed when dropped.
pub struct NodeProcess {
    child: Child,
    /// The public API.
    pub addr: SocketAddr,
    /// The operator surfaces (dashboard, `/debug/state`, `/metrics`,
    /// `/matches`).
    pub admin: SocketAddr,
    pub node: String,
}

impl NodeProcess {
    /// Starts `node` on 127.0.0.1:0 (both listeners) with fast rounds, the
    /// shortest TTL and the shared token key. `extra` flags override those
    /// defaults.
    pub async fn start(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_under(&[], data_dir, extra).await
    }

    /// As [`NodeProcess::start`], run under `wrap` (a command and its
    /// arguments, e.g. `env LD_PRELOAD=...`), if not empty.
    pub async fn start_under(wrap: &[&str], data_dir: &Path, extra: &[&str]) -> Self {
        let ready = data_dir.join("ready.json");
        let node_bin = Path::new(env!("CARGO_BIN_EXE_node"));
        let mut child = devcluster::launch::node_command(node_bin, wrap, &ready)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            // Region `test`, fast rounds and the shortest TTL, as defaults
            // that flags override.
            .env("NODE_REGION", "test")
            .env("NODE_MATCH_INTERVAL", "100ms")
            .env("NODE_REQUEST_TTL", "5s")
            .env("RUST_LOG", "warn")
            .env("NODE_TOKEN_KEYS", token_key())
            .env_remove("NODE_TOKEN_KEYS_FILE")
            .env_remove("NODE_RATE_LIMIT_PER_SECOND")
            // A node gets a cluster or a Fly identity only from its flags.
            .env_remove("CQL_NODES")
            .env_remove("FLY_APP_NAME")
            .stdout(Stdio::null())
            .spawn()
            .expect("start node");
        match devcluster::launch::wait_ready(&mut child, &ready, None).await {
            Ok(ready) => Self {
                child,
                addr: ready.http,
                admin: ready.admin,
                node: ready.node,
            },
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{e}");
            }
        }
    }

    /// A URL of the public API.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A URL of the operator surfaces.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node ignored SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn at(lat: f64, lon: f64) -> Position {
    Position { lat, lon }
}

pub async fn post_rider(
    http: &reqwest::Client,
    node: &NodeProcess,
    name: &str,
    from: Position,
    to: Position,
) -> Accepted {
    let body = RiderRequest {
        name: name.into(),
        position: from,
        destination: to,
    };
    post_accepted(http, node, "/rider", &body).await
}

pub async fn post_driver(
    http: &reqwest::Client,
    node: &NodeProcess,
    name: &str,
    car: &str,
    at: Position,
) -> Accepted {
    let body = DriverRequest {
        name: name.into(),
        car_number: car.into(),
        position: at,
    };
    post_accepted(http, node, "/driver", &body).await
}

/// POSTs `body` to `path` and expects a 202 with its ticket.
async fn post_accepted(
    http: &reqwest::Client,
    node: &NodeProcess,
    path: &str,
    body: &impl serde::Serialize,
) -> Accepted {
    let response = http.post(node.url(path)).json(body).send().await.unwrap();
    assert_eq!(response.status(), 202, "POST {path}");
    response.json().await.unwrap()
}

/// Subscribes each side on its own socket and waits for its notice: both
/// are told the same match, of this rider with this driver.
pub async fn told_both(
    rider_socket: &mut Socket,
    rider: &Accepted,
    driver_socket: &mut Socket,
    driver: &Accepted,
) -> MatchNotice {
    rider_socket.subscribe(&[rider]).await;
    driver_socket.subscribe(&[driver]).await;
    let told_rider = rider_socket.next_match().await;
    let told_driver = driver_socket.next_match().await;
    assert_eq!(told_rider, told_driver);
    assert_eq!(
        (told_rider.rider_id, told_rider.driver_id),
        (rider.id, driver.id)
    );
    told_rider
}

/// A `/communication` client.
pub struct Socket(WebSocketStream<MaybeTlsStream<TcpStream>>);

impl Socket {
    pub async fn connect(node: &NodeProcess) -> Self {
        let url = format!("ws://{}/communication", node.addr);
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket");
        Self(ws)
    }

    /// Subscribes to requests with the tokens their answers carried.
    pub async fn subscribe(&mut self, requests: &[&Accepted]) {
        let grants = requests
            .iter()
            .map(|a| Grant {
                id: a.id,
                token: Some(a.token.clone()),
            })
            .collect();
        self.subscribe_grants(grants).await;
    }

    /// Subscribes with whatever tokens, right or wrong.
    pub async fn subscribe_grants(&mut self, requests: Vec<Grant>) {
        let frame = serde_json::to_string(&ClientMessage::Subscribe { requests }).unwrap();
        self.send_text(&frame).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.0.send(Message::text(text)).await.unwrap();
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.0.send(Message::binary(bytes)).await.unwrap();
    }

    /// The next text frame; pings read along the way are answered by the
    /// library.
    async fn next_text(&mut self) -> String {
        loop {
            match self
                .0
                .next()
                .await
                .expect("socket closed")
                .expect("socket error")
            {
                Message::Text(text) => return text.to_string(),
                Message::Close(frame) => panic!("socket closed: {frame:?}"),
                _ => {}
            }
        }
    }

    /// The next server frame.
    pub async fn next(&mut self) -> ServerMessage {
        let text = tokio::time::timeout(PATIENCE, self.next_text())
            .await
            .expect("no frame from the server");
        serde_json::from_str(&text).expect("server frame")
    }

    /// Reads (and so answers pings) for `how_long`, expecting no frame.
    pub async fn stay_quiet_for(&mut self, how_long: Duration) {
        if let Ok(text) = tokio::time::timeout(how_long, self.next_text()).await {
            panic!("unexpected frame {text}");
        }
    }

    /// Reads frames until the server ends the connection.
    pub async fn until_closed(&mut self) {
        let read = async {
            while let Some(frame) = self.0.next().await {
                if matches!(frame, Err(_) | Ok(Message::Close(_))) {
                    return;
                }
            }
        };
        tokio::time::timeout(PATIENCE, read)
            .await
            .expect("the server never closed the socket")
    }

    /// Frames until the first match, which it returns.
    pub async fn next_match(&mut self) -> ride_types::api::MatchNotice {
        loop {
            if let ServerMessage::Match(m) = self.next().await {
                return m;
            }
        }
    }
}

/// Polls `probe` until it returns `Some`.
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A node's Prometheus metrics, as text; `None` when it does not answer.
pub async fn metrics_of(http: &reqwest::Client, node: &NodeProcess) -> Option<String> {
    let response = http.get(node.admin_url("/metrics")).send().await.ok()?;
    response.text().await.ok()
}

/// The value of an unlabelled counter in Prometheus text, 0 when absent.
pub fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

/// GETs `url` and decodes the JSON answer.
pub async fn get_json<T: serde::de::DeserializeOwned>(http: &reqwest::Client, url: &str) -> T {
    let response = http.get(url).send().await.expect("GET");
    response.json().await.expect("a JSON answer")
}

/// Posts `n` riders and `n` drivers and returns the matches the node tells
/// the riders of, in posting order; cars are named `{prefix}-{pid}-{i}`.
/// Pairs sit 1 km apart on a grid inside dhaka-north (12 rows), each driver
/// 100 m from its rider, so each rider is matched with its own driver.
pub async fn matched_pairs(
    http: &reqwest::Client,
    node: &NodeProcess,
    prefix: &str,
    n: usize,
) -> Vec<MatchNotice> {
    let mut socket = Socket::connect(node).await;
    let mut riders = Vec::new();
    for i in 0..n {
        let lat = 23.80 + 0.01 * (i % 12) as f64;
        let lon = 90.33 + 0.01 * (i / 12) as f64;
        let rider = post_rider(http, node, "Rider", at(lat, lon), at(lat, lon + 0.05)).await;
        let car = format!("{prefix}-{}-{i}", std::process::id());
        post_driver(http, node, "Driver", &car, at(lat + 0.0009, lon)).await;
        riders.push(rider);
    }
    socket.subscribe(&riders.iter().collect::<Vec<_>>()).await;
    let mut told = Vec::new();
    for _ in 0..n {
        told.push(socket.next_match().await);
    }
    told.sort_by_key(|m| riders.iter().position(|r| r.id == m.rider_id));
    told
}

/// Rates `m` as its rider; `None` when no answer came (the node is gone).
pub async fn rate(
    http: &reqwest::Client,
    node: &NodeProcess,
    m: &MatchNotice,
    stars: u8,
) -> Option<u16> {
    rate_at(http, &node.url("/rating"), m, stars).await
}

/// As [`rate`], given the node's `/rating` URL.
pub async fn rate_at(http: &reqwest::Client, url: &str, m: &MatchNotice, stars: u8) -> Option<u16> {
    let body = json!({"rider_id": m.rider_id, "token": token_for(m.rider_id), "car_number": m.car_number, "stars": stars});
    let answer = http.post(url).json(&body).send().await.ok()?;
    Some(answer.status().as_u16())
}

/// A driver's rating as the node reads it; `None` on an error answer.
pub async fn rating_of(
    http: &reqwest::Client,
    node: &NodeProcess,
    car: &str,
) -> Option<DriverRating> {
    let answer = http
        .get(node.url(&format!("/drivers/{car}/rating")))
        .send()
        .await
        .ok()?;
    if !answer.status().is_success() {
        return None;
    }
    answer.json().await.ok()
}

/// The outbox backlog a node exports on `/metrics`.
pub async fn backlog(http: &reqwest::Client, node: &NodeProcess) -> Option<f64> {
    let text = metrics_of(http, node).await?;
    text.lines()
        .find_map(|l| l.strip_prefix("ride_ratings_outbox_backlog "))
        .and_then(|v| v.trim().parse().ok())
}
