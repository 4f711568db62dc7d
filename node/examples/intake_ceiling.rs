//! What this machine allows a durable HTTP intake, measured without the
//! node, so that the node's intake can be quoted as a share of it
//! (`scripts/bench-ceiling.sh` runs both beside the node, alternating).
//!
//! - `bare`: axum parses the body into the node's own request types and
//!   answers `202` with an id. Nothing is kept: the most any intake on this
//!   machine can answer.
//! - `fsync`: the same, but each `202` waits until the request is appended
//!   to a file and `fdatasync`'d. One writer thread group-commits: it writes
//!   everything that arrived while the previous sync ran, then syncs once.
//!   The most a durable intake can answer on this disk.
//!
//!   cargo run --release --example intake_ceiling -- bare 127.0.0.1:18480
//!   cargo run --release --example intake_ceiling -- fsync 127.0.0.1:18480 --dir /tmp/ceiling

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use clap::{Parser, ValueEnum};
use ride_types::api::{DriverRequest, RiderRequest};
use serde::Serialize;
use tokio::sync::oneshot;
use uuid::Uuid;

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Bare,
    Fsync,
}

#[derive(Parser)]
struct Args {
    mode: Mode,
    listen: SocketAddr,
    /// Where `fsync` keeps its file.
    #[arg(long, default_value = "ceiling-data")]
    dir: PathBuf,
}

/// A request for the writer: its bytes, and whom to tell once synced.
type Append = (Vec<u8>, oneshot::Sender<()>);

#[derive(Serialize)]
struct Accepted {
    id: Uuid,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let writer = match args.mode {
        Mode::Bare => None,
        Mode::Fsync => Some(start_writer(args.dir)?),
    };
    let app = Router::new()
        .route("/rider", post(rider))
        .route("/driver", post(driver))
        .with_state(writer);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await
}

async fn rider(
    State(writer): State<Option<mpsc::Sender<Append>>>,
    Json(body): Json<RiderRequest>,
) -> Result<(StatusCode, Json<Accepted>), StatusCode> {
    accept(writer, &body).await
}

async fn driver(
    State(writer): State<Option<mpsc::Sender<Append>>>,
    Json(body): Json<DriverRequest>,
) -> Result<(StatusCode, Json<Accepted>), StatusCode> {
    accept(writer, &body).await
}

/// `202` at once, or once the writer has synced the request.
async fn accept(
    writer: Option<mpsc::Sender<Append>>,
    body: &impl Serialize,
) -> Result<(StatusCode, Json<Accepted>), StatusCode> {
    if let Some(writer) = writer {
        // Encoded for the disk as the node encodes its intake frames.
        let bytes = postcard::to_stdvec(body).map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
        let (synced, durable) = oneshot::channel();
        writer
            .send((bytes, synced))
            .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
        durable.await.map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    }
    Ok((StatusCode::ACCEPTED, Json(Accepted { id: Uuid::now_v7() })))
}

/// The group committer: waits for one request, takes every other that is
/// waiting, writes them, syncs once, and tells them all.
fn start_writer(dir: PathBuf) -> std::io::Result<mpsc::Sender<Append>> {
    std::fs::create_dir_all(&dir)?;
    let mut file = std::fs::File::create(dir.join("intake.log"))?;
    let (sender, arrivals) = mpsc::channel::<Append>();
    std::thread::spawn(move || {
        while let Ok(first) = arrivals.recv() {
            let batch: Vec<Append> = std::iter::once(first).chain(arrivals.try_iter()).collect();
            let written = batch
                .iter()
                .try_for_each(|(bytes, _)| file.write_all(bytes))
                .and_then(|()| file.sync_data());
            if written.is_ok() {
                for (_, synced) in batch {
                    let _ = synced.send(());
                }
            }
        }
    });
    Ok(sender)
}
