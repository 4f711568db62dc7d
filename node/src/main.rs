//! `node`: runs one region node until SIGINT or SIGTERM.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use node::config::new_key_text;
use node::config::{Config, LogFormat};
use node::net::tls;
use node::net::wan_relay::{Impairment, WanRelay};
use node::{server, telemetry};
use ride_types::ids::NodeId;
use tokio_util::sync::CancellationToken;

mod cli;

/// mimalloc keeps fragmentation lower across the node's threads: over 10
/// minutes of steady load, RSS grew 23% with it against 35% with glibc's
/// per-thread arenas, while the live data stayed flat (BENCHMARKS.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process. mimalloc asks for
/// them on its arenas, and every first touch of a huge page then zeroes
/// 2 MiB: in a profile of a mesh node under a burst, 5% of its CPU went to
/// zeroing pages. At 20,000 requests/s on one node, interleaved runs with
/// huge pages off took 4% less CPU, a matching round's median fell from
/// 30-33 to 21-26 ms, and the load generator's p99 from 32-91 to 17-29 ms
/// (BENCHMARKS.md). Memory already faulted stays as it is.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes one integer flag and touches no
    // memory of ours; on failure the process keeps the system's default.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

#[derive(Parser)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Subcommand)]
enum Command {
    /// Creates the mesh CA in --dir (unless it exists) and a certificate for
    /// each --node, for mutual TLS between peers.
    Certs {
        /// Folder for `ca.pem`, `ca.key`, `<node>.pem` and `<node>.key`.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// A node id to certify; repeat for several.
        #[arg(long = "node", required = true)]
        nodes: Vec<String>,
        /// An IP address the certificates should also be valid for.
        #[arg(long = "ip")]
        ips: Vec<IpAddr>,
    },
    /// Prints a new token key (32 random bytes, base64) for --token-keys or
    /// a --token-keys-file line.
    TokenKey,
    /// The region files, as the node reads them: `check`, `list`,
    /// `distances`, `route` (for scripts: tab-separated output).
    #[command(subcommand)]
    Regions(cli::regions::RegionsCommand),
    /// Prints the public API's OpenAPI 3.1 document (JSON), as the node
    /// serves it at `/openapi.json`: to generate a client from.
    Openapi,
    /// A CQL cluster as the node's driver sees it: `status`, `wait`.
    #[command(subcommand)]
    Cql(cli::cql::CqlCommand),
    /// Relays UDP between a node and one peer with a WAN's delay, jitter
    /// and loss (see `scripts/mesh.sh --wan`); runs until SIGINT or SIGTERM.
    WanRelay {
        /// Where the relay listens: the address the node is given for its
        /// peer.
        #[arg(long)]
        listen: SocketAddr,
        /// The peer's real QUIC address.
        #[arg(long)]
        forward: SocketAddr,
        /// One-way delay added to every datagram.
        #[arg(long, default_value = "30ms", value_parser = humantime::parse_duration)]
        delay: Duration,
        /// Each datagram's delay varies by up to this much either way.
        #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
        jitter: Duration,
        /// Probability that a datagram is dropped (0 to 1).
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    no_transparent_huge_pages();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Certs { dir, nodes, ips }) => certs(&dir, nodes, &ips),
        Some(Command::TokenKey) => token_key(),
        Some(Command::Openapi) => openapi(),
        Some(Command::Regions(command)) => regions(command),
        Some(Command::Cql(command)) => cql(command).await,
        Some(Command::WanRelay {
            listen,
            forward,
            delay,
            jitter,
            loss,
        }) => wan_relay(listen, forward, delay, jitter, loss).await,
        None => serve(cli.config).await,
    }
}

fn certs(dir: &std::path::Path, nodes: Vec<String>, ips: &[IpAddr]) -> ExitCode {
    let nodes: Vec<NodeId> = nodes.into_iter().map(NodeId).collect();
    match tls::write_certificates(dir, &nodes, ips) {
        Ok(written) => {
            for path in written {
                println!("wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("node certs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn token_key() -> ExitCode {
    match new_key_text() {
        Ok(key) => {
            println!("{key}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("node token-key: {e}");
            ExitCode::FAILURE
        }
    }
}

fn openapi() -> ExitCode {
    let written = server::openapi_json()
        .map_err(std::io::Error::other)
        .and_then(|document| writeln!(std::io::stdout(), "{document}"));
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("node openapi: {e}");
            ExitCode::FAILURE
        }
    }
}

fn regions(command: cli::regions::RegionsCommand) -> ExitCode {
    match cli::regions::run(command, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("node regions: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn cql(command: cli::cql::CqlCommand) -> ExitCode {
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    match cli::cql::run(command, &mut out, &mut err).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("node cql: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn wan_relay(
    listen: SocketAddr,
    forward: SocketAddr,
    delay: Duration,
    jitter: Duration,
    loss: f64,
) -> ExitCode {
    telemetry::init_logging(LogFormat::Text);
    let relay = match Impairment::new(delay, jitter, loss) {
        Ok(path) => WanRelay::bind(listen, forward, path).await,
        Err(e) => Err(e),
    };
    let relay = match relay {
        Ok(relay) => relay,
        Err(e) => {
            eprintln!("node wan-relay: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(%listen, %forward, ?delay, ?jitter, loss, "relaying");
    let stop = CancellationToken::new();
    let running = tokio::spawn(relay.run(stop.clone()));
    shutdown_signal().await;
    stop.cancel();
    match running.await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("node wan-relay: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("node wan-relay: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> ExitCode {
    telemetry::init_logging(config.log_format);
    let running = match server::start(config).await {
        Ok(running) => running,
        Err(e) => {
            tracing::error!(error = %e, "node failed to start");
            return ExitCode::FAILURE;
        }
    };
    match running.run_until(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "node failed");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGTERM; Ctrl-C only");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down");
}
