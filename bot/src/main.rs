//! `bot`: drives ride-sharing nodes with simulated riders and drivers
//! (simulation mode) or with a fixed request rate (load mode, `--rate`), and
//! reports what happened; or checks the history of a chaos run (`bot
//! check`). See `bot --help`.
//!
//! stdout carries only the final summary, so it can be piped or diffed;
//! progress and logs (`RUST_LOG`, default `warn`) go to stderr.

mod area;
mod check;
mod cli;
mod conn;
mod discover;
mod endpoint;
mod error;
mod failover;
mod http;
mod load;
mod post_log;
mod progress;
mod record;
#[cfg(test)]
mod scripted;
mod seed;
mod simulate;
mod socket;
mod stats;
mod summary;
mod world;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ride_types::regions::Regions;
use tracing::warn;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, DEFAULT_LOAD_DURATION, LoadKind};
use crate::discover::Fate;
use crate::endpoint::Router;
use crate::error::BotError;
use crate::load::{LoadConfig, Schedule};
use crate::progress::{Progress, Style};
use crate::simulate::SimConfig;
use crate::stats::Stats;
use crate::summary::Summary;
use crate::world::RunTag;

/// The same allocator as the node's: in load mode the bot shares the
/// machine with the nodes it measures, and glibc's malloc and free were
/// about a tenth of its CPU at 20,000 requests/s (`perf`, BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Lets workers and sockets get going before the first request is due.
const LOAD_START_DELAY: Duration = Duration::from_millis(50);

#[tokio::main]
async fn main() -> ExitCode {
    let mut cli = Cli::parse_and_validate();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .init();
    if let Some(Command::Check(command)) = cli.command.take() {
        return match check::run(command).await {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("bot check: {e}");
                ExitCode::from(2)
            }
        };
    }
    match run(cli).await {
        Ok(summary) if summary.ok => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bot: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<Summary, BotError> {
    let client = http::client(cli.concurrency()).map_err(BotError::Client)?;
    let router = Arc::new(router(&cli, &client).await?);
    let endpoints: Vec<String> = router
        .endpoints()
        .iter()
        .map(|e| e.base().to_string())
        .collect();
    let run = RunTag::random(&mut rand::rng());
    let show_progress = !cli.no_progress;

    let summary = match cli.rate {
        None => {
            if show_progress {
                eprintln!(
                    "bot: run {run}: {} riders and {} drivers in {} against {}",
                    cli.riders,
                    cli.drivers,
                    cli.area,
                    endpoints.join(", ")
                );
            }
            let stats = Arc::new(Stats::new(Instant::now()));
            let progress = Progress::start(Arc::clone(&stats), Style::Simulate, show_progress);
            let duration = cli.duration;
            let stop = async move {
                match duration {
                    Some(duration) => tokio::select! {
                        () = tokio::time::sleep(duration) => {}
                        () = interrupted() => {}
                    },
                    None => interrupted().await,
                }
            };
            let config = SimConfig {
                riders: cli.riders,
                drivers: cli.drivers,
                area: cli.area,
                seed: cli.seed,
                concurrency: cli.concurrency(),
                record: cli.record.clone(),
                post_log: cli.post_log.clone(),
                settle: cli.settle,
                run,
            };
            let result = simulate::run(router, client, config, Arc::clone(&stats), stop).await;
            progress.finish();
            result?;
            Summary::simulate(&stats.snapshot(), endpoints)
        }
        Some(rate) => {
            let duration = cli.duration.unwrap_or(DEFAULT_LOAD_DURATION);
            if show_progress {
                eprintln!(
                    "bot: run {run}: {rate} requests/s for {} after {} warm-up, concurrency {}, against {}",
                    humantime::format_duration(duration),
                    humantime::format_duration(cli.warmup),
                    cli.concurrency,
                    endpoints.join(", ")
                );
            }
            let ratings = match cli.load {
                LoadKind::Requests => None,
                LoadKind::Ratings => {
                    // One match per rating sent, warm-up included.
                    let seconds = (cli.warmup + duration).as_secs_f64();
                    let count = (f64::from(rate) * seconds * 1.05).ceil() as u64 + 1;
                    if show_progress {
                        eprintln!("bot: run {run}: preparing {count} matches to rate");
                    }
                    let targets = seed::matches_to_rate(
                        &router,
                        &client,
                        &cli.area,
                        run,
                        count,
                        cli.concurrency(),
                        &mut rand::rng(),
                    )
                    .await?;
                    Some(Arc::new(targets))
                }
            };
            let schedule = Schedule::new(
                Instant::now() + LOAD_START_DELAY,
                rate,
                cli.warmup,
                duration,
            );
            let stats = Arc::new(Stats::new(schedule.measure_from));
            let style = Style::Load {
                target: rate,
                measure_from: schedule.measure_from,
            };
            let progress = Progress::start(Arc::clone(&stats), style, show_progress);
            let config = LoadConfig {
                schedule,
                concurrency: cli.concurrency(),
                area: cli.area,
                seed: cli.seed,
                run,
                ratings,
            };
            let report = load::run(router, config, Arc::clone(&stats), interrupted()).await;
            progress.finish();
            Summary::load(&stats.snapshot(), &report, cli.concurrency(), endpoints)
        }
    };

    println!("{summary}");
    if let Some(path) = &cli.summary_json {
        summary.write_json(path)?;
    }
    Ok(summary)
}

/// Where requests go: with `--regions`, to the nodes of the region that owns
/// each position; otherwise spread over the `--endpoint`s. Every endpoint
/// is asked first whether it answers: one that does not is set aside (or,
/// when its region is unknown for want of an answer, left out), and the run
/// goes on with the others.
async fn router(cli: &Cli, client: &reqwest::Client) -> Result<Router, BotError> {
    let Some(dir) = &cli.regions else {
        let bases = cli.endpoints_or_default()?;
        let probed = discover::probe(client, &bases, Fate::SetAside).await?;
        return Ok(set_aside(Router::new(&bases)?, &probed.dead));
    };
    let regions = Regions::load_dir(dir)?;
    if cli.endpoints.is_empty() {
        let served = discover::mesh_endpoints(&regions)?;
        let bases: Vec<_> = served.iter().map(|(_, base)| base.clone()).collect();
        let probed = discover::probe(client, &bases, Fate::SetAside).await?;
        return Ok(set_aside(
            Router::by_region(regions, &served)?,
            &probed.dead,
        ));
    }
    let probed = discover::probe(client, &cli.endpoints, Fate::LeftOut).await?;
    Ok(Router::by_region(regions, &probed.live)?)
}

/// `router`, with the endpoints that did not answer at start set aside.
fn set_aside(router: Router, dead: &[reqwest::Url]) -> Router {
    let now = Instant::now();
    for base in dead {
        router.set_aside(base, now);
    }
    router
}

/// Completes on Ctrl-C. If the handler cannot be installed it never
/// completes, rather than stopping the run at once.
async fn interrupted() {
    if let Err(e) = tokio::signal::ctrl_c().await {
        warn!(error = %e, "cannot listen for Ctrl-C; use --duration to stop the bot");
        std::future::pending::<()>().await;
    }
}
