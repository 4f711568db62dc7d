//! `devcluster`: the local mesh for scripts/mesh.sh and scripts/chaos.sh.
//! Each subcommand acts on the mesh recorded in `--dir` and exits; the mesh
//! keeps running between them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use devcluster::Error;
use devcluster::cluster::{Cluster, Layout};
use devcluster::plan::WanOptions;
use devcluster::status;
use devcluster::supervise::Supervisor;

#[derive(Parser)]
#[command(about = "Plans, starts, inspects and stops a local mesh of node processes")]
struct Cli {
    /// The mesh's folder: cluster.json, certs/, one folder per node, wan/, nginx/.
    #[arg(long, global = true, default_value = ".mesh", env = "MESH_DIR")]
    dir: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Lays the mesh out (nodes, ports, relays) and records it; refuses if
    /// another mesh holds the regions' addresses. Starts nothing.
    Plan {
        /// The node binary: it reads the regions and runs every process.
        #[arg(long)]
        node_bin: PathBuf,
        #[arg(long, default_value = "regions")]
        regions: PathBuf,
        /// Nodes per region; above 1, nginx fronts each region.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
        replicas: u16,
        /// With one node per region, its admin listener is its HTTP port
        /// plus this; replicas take free ports.
        #[arg(long, default_value_t = 100)]
        admin_offset: u16,
        /// Cross-region QUIC through `node wan-relay`.
        #[arg(long)]
        wan: bool,
        /// One-way delay for every pair (default: from the distance).
        #[arg(long)]
        wan_delay: Option<String>,
        #[arg(long, default_value = "5ms")]
        wan_jitter: String,
        #[arg(long, default_value = "0.01")]
        wan_loss: String,
        /// The least delay a computed one is raised to, in ms.
        #[arg(long, default_value_t = 20)]
        wan_min_ms: u64,
    },
    /// Starts the planned mesh: certificates, relays, nodes (until each is
    /// ready), nginx.
    Up(UpArgs),
    /// (Re)starts one node as `up` did, on the same data folder, and waits
    /// until it is ready.
    StartNode { id: String },
    /// Kills every node of one region with SIGKILL (a region outage: no
    /// goodbye, nothing flushed) and waits until they are gone. A
    /// supervisor does not start them again; `start-region` does.
    KillRegion { region: String },
    /// Starts every node of one region again, as `up` did, on the same data
    /// folders, and waits until each is ready.
    StartRegion { region: String },
    /// Prints the layout: where each node listens, the WAN's delays.
    Layout,
    /// One line per node from its /debug/state and /metrics.
    Status,
    /// Bash assignments describing the mesh (for `eval`).
    Env,
    /// Stops every process of the mesh; nothing when none is planned.
    Down,
}

#[derive(Args)]
struct UpArgs {
    /// `ID=COMMAND`: node ID runs under COMMAND (split on whitespace),
    /// e.g. `dhaka-north=env LD_PRELOAD=... FAKETIME=+3s`.
    #[arg(long, value_parser = parse_wrap)]
    wrap: Vec<(String, Vec<String>)>,
    /// Then stay in the foreground as the nodes' parent: report each
    /// node that exits (its exit status, its log, the command that
    /// starts it again) and keep the others running. Ctrl-C or SIGTERM
    /// stops the whole mesh.
    #[arg(long)]
    supervise: bool,
    /// With --supervise: start a node that died again after this many
    /// seconds. Nodes stopped on purpose (kill-region, down) are not.
    #[arg(long, value_name = "SECS", requires = "supervise")]
    restart_dead: Option<u64>,
    /// Written (devcluster's pid) once every node is ready: for a
    /// script that runs `up --supervise` in the background.
    #[arg(long, value_name = "PATH")]
    ready_file: Option<PathBuf>,
    /// Flags for every node.
    #[arg(last = true)]
    node_args: Vec<String>,
}

fn parse_wrap(text: &str) -> Result<(String, Vec<String>), String> {
    let (id, command) = text.split_once('=').ok_or("expected ID=COMMAND")?;
    Ok((
        id.into(),
        command.split_whitespace().map(Into::into).collect(),
    ))
}

async fn run(cli: Cli) -> Result<(), Error> {
    let dir = cli.dir;
    match cli.command {
        Cmd::Plan {
            node_bin,
            regions,
            replicas,
            admin_offset,
            wan,
            wan_delay,
            wan_jitter,
            wan_loss,
            wan_min_ms,
        } => {
            let wan = (wan || wan_delay.is_some()).then_some(WanOptions {
                delay: wan_delay,
                jitter: wan_jitter,
                loss: wan_loss,
                min_ms: wan_min_ms,
            });
            let layout = Layout {
                replicas: replicas.into(),
                admin_offset,
                wan,
            };
            Cluster::plan(&dir, &node_bin, &regions, layout).map(drop)
        }
        Cmd::Up(args) => up(dir, args).await,
        Cmd::StartNode { id } => Cluster::open(&dir)?.start_node(&id).await.map(drop),
        Cmd::KillRegion { region } => {
            for (id, pid) in Cluster::open(&dir)?.kill_region(&region)? {
                println!("killed node {id} (pid {pid}) with SIGKILL");
            }
            Ok(())
        }
        Cmd::StartRegion { region } => {
            for (id, child) in Cluster::open(&dir)?.start_region(&region).await? {
                println!("node {id} ready (pid {})", child.id());
            }
            Ok(())
        }
        Cmd::Layout => {
            print!("{}", Cluster::open(&dir)?.layout());
            Ok(())
        }
        Cmd::Status => {
            let cluster = Cluster::open(&dir)?;
            let nodes = cluster.plan.nodes.iter();
            let answers =
                status::gather(nodes.map(|n| (n.id.clone(), n.admin.to_string())).collect()).await;
            let stamp = chrono::Local::now().format("%H:%M:%S").to_string();
            for line in status::lines(&answers, &stamp) {
                println!("{line}");
            }
            Ok(())
        }
        Cmd::Env => {
            print!("{}", Cluster::open(&dir)?.env());
            Ok(())
        }
        Cmd::Down => match Cluster::load(&dir)? {
            Some(mut cluster) => cluster.down(),
            None => Ok(()),
        },
    }
}

/// `devcluster up`: the mesh, then, with `--supervise`, its supervision.
async fn up(dir: PathBuf, args: UpArgs) -> Result<(), Error> {
    if let Some(path) = &args.ready_file {
        // A stale one would say ready before anything started.
        let _ = std::fs::remove_file(path);
    }
    let wraps = args.wrap.into_iter().collect::<BTreeMap<_, _>>();
    let children = Cluster::open(&dir)?.up(args.node_args, wraps).await?;
    if let Some(path) = &args.ready_file {
        let pid = format!("{}\n", std::process::id());
        std::fs::write(path, pid).map_err(Error::io(format!("writing {}", path.display())))?;
    }
    if !args.supervise {
        return Ok(());
    }
    let restart_after = args.restart_dead.map(Duration::from_secs);
    Supervisor::new(dir, children, restart_after).run().await
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("[{}] error: {e}", chrono::Local::now().format("%H:%M:%S"));
            ExitCode::FAILURE
        }
    }
}
