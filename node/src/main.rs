//! `node`: runs one region node until SIGINT or SIGTERM.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use node::config::Config;
use node::ids::NodeId;
use node::mesh::tls;
use node::{server, telemetry};

/// mimalloc keeps fragmentation lower across the node's threads: over 10
/// minutes of steady load, RSS grew 23% with it against 35% with glibc's
/// per-thread arenas, while the live data stayed flat (BENCHMARKS.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Certs { dir, nodes, ips }) = cli.command {
        let nodes: Vec<NodeId> = nodes.into_iter().map(NodeId).collect();
        return match tls::write_certificates(&dir, &nodes, &ips) {
            Ok(written) => {
                for path in written {
                    println!("wrote {}", path.display());
                }
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("node certs: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let config = cli.config;
    telemetry::init_logging(config.log_format);
    let running = match server::start(config).await {
        Ok(running) => running,
        Err(e) => {
            tracing::error!(error = %e, "node failed to start");
            return std::process::ExitCode::FAILURE;
        }
    };
    match running.run_until(shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "node failed");
            std::process::ExitCode::FAILURE
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
