//! Command-line flags. Every flag can also come from a `BOT_*` environment
//! variable, so the bot can run unchanged in a container or CI job.

use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use reqwest::Url;

use crate::area::Area;
use crate::check::CheckCommand;
use crate::endpoint::{EndpointError, parse_endpoint};

/// Load mode runs this long when `--duration` is not given.
pub const DEFAULT_LOAD_DURATION: Duration = Duration::from_secs(10);
/// The node asked when neither `--endpoint` nor `--regions` is given.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:8080";

const LONG_ABOUT: &str = "\
Drives ride-sharing nodes with simulated riders and drivers.

Simulation mode (the default): every second, each idle rider and driver asks \
a node for a ride (or a fare) at a random position inside --area, listens on \
the node's websocket for its match, and riders rate their driver. Runs until \
--duration passes or Ctrl-C, then prints a summary.

Load mode (--rate N): sends N rider/driver requests per second in total, \
without websockets, and reports latency percentiles measured from each \
request's scheduled start (so a slow node cannot hide its queueing delay).

Every endpoint is asked GET /healthz first: one that does not answer is \
reported and set aside, and only none answering stops the bot. While it runs, \
an endpoint that refuses connections, answers 502, or answers 503 \
region_unavailable is set aside for 3 s, and its requests go to a live one \
(which serves them or redirects them to the region that adopted the area); \
the summary counts these failovers.

The exit status is non-zero only when no request at all was accepted.

`bot check` checks the history of a chaos run (scripts/chaos.sh) instead: see \
`bot check --help`.";

/// Drives ride-sharing nodes with simulated riders and drivers.
#[derive(Debug, Parser)]
#[command(
    name = "bot",
    version,
    long_about = LONG_ABOUT,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Node to send requests to [default: http://127.0.0.1:8080]. Repeat the
    /// flag or separate with commas to spread riders and drivers over several
    /// nodes.
    #[arg(
        long = "endpoint",
        visible_alias = "endpoints",
        value_name = "URL",
        env = "BOT_ENDPOINT",
        value_delimiter = ',',
        value_parser = parse_endpoint
    )]
    pub endpoints: Vec<Url>,

    /// Region files (the nodes' --regions folder): send each rider and
    /// driver to a node of the region that owns its position. Each
    /// --endpoint is asked its region (GET /healthz); without --endpoint,
    /// each region's mesh HTTP address is used.
    #[arg(long, value_name = "DIR", env = "BOT_REGIONS")]
    pub regions: Option<PathBuf>,

    /// Simulated riders (simulation mode).
    #[arg(long, value_name = "N", env = "BOT_RIDERS", default_value_t = 50)]
    pub riders: usize,

    /// Simulated drivers (simulation mode).
    #[arg(long, value_name = "N", env = "BOT_DRIVERS", default_value_t = 50)]
    pub drivers: usize,

    /// Rectangle in which positions and destinations are drawn, in degrees.
    #[arg(
        long,
        value_name = "MIN_LAT,MIN_LON,MAX_LAT,MAX_LON",
        env = "BOT_AREA",
        default_value_t = Area::DHAKA,
        allow_hyphen_values = true
    )]
    pub area: Area,

    /// How long to run, e.g. `60s`, `5m`, `1h 30m`. Simulation mode runs
    /// until Ctrl-C by default; load mode runs 10s (after --warmup).
    #[arg(long, value_name = "DURATION", env = "BOT_DURATION", value_parser = parse_positive_duration)]
    pub duration: Option<Duration>,

    /// Seed for positions and destinations, to replay the same trips.
    /// Names and car numbers stay unique per run regardless.
    #[arg(long, value_name = "N", env = "BOT_SEED")]
    pub seed: Option<u64>,

    /// Print no progress at all. Without it, progress is a live line on a
    /// terminal, or a plain line every 5 s on stderr otherwise.
    #[arg(long, env = "BOT_NO_PROGRESS")]
    pub no_progress: bool,

    /// Also write the final summary as JSON to this file.
    #[arg(long, value_name = "PATH", env = "BOT_SUMMARY_JSON")]
    pub summary_json: Option<PathBuf>,

    /// Append every match notice received, with the endpoint it came from,
    /// as one JSON line to this file (simulation mode), for offline checks.
    #[arg(long, value_name = "PATH", env = "BOT_RECORD", conflicts_with = "rate")]
    pub record: Option<PathBuf>,

    /// Append one JSON line per rider and driver POST to this file
    /// (simulation mode): when it was sent and answered (epoch seconds), the
    /// endpoint asked and the one it ended at after any redirect, the status,
    /// and, when accepted, the id and the region and node that accepted it.
    #[arg(
        long,
        value_name = "PATH",
        env = "BOT_POST_LOG",
        conflicts_with = "rate"
    )]
    pub post_log: Option<PathBuf>,

    /// Simulation mode: once stopped, post nothing new but wait up to this
    /// long until every accepted request has its outcome (matched, or
    /// expired by its `expires_at`), so that the summary accounts for every
    /// one (what `bot check` needs when a node restarts and its counters
    /// start again). 0: wait only for requests in flight.
    #[arg(long, value_name = "DURATION", env = "BOT_SETTLE", default_value = "0s",
          value_parser = humantime::parse_duration, conflicts_with = "rate")]
    pub settle: Duration,

    /// Load mode: target requests per second, over all endpoints.
    #[arg(
        long,
        value_name = "N",
        env = "BOT_RATE",
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub rate: Option<u32>,

    /// Load mode: what to send. `ratings` first posts rider-driver pairs at
    /// the same spots, waits for their matches, then rates one match per
    /// request (latency of `POST /rating`, through the node's store).
    #[arg(long, value_enum, env = "BOT_LOAD", default_value_t = LoadKind::Requests, requires = "rate")]
    pub load: LoadKind,

    /// Most requests in flight at once. In load mode, too low a value shows
    /// up as an achieved rate below --rate.
    #[arg(
        long,
        value_name = "C",
        env = "BOT_CONCURRENCY",
        default_value_t = 64,
        value_parser = clap::value_parser!(u32).range(1..=100_000)
    )]
    pub concurrency: u32,

    /// Load mode: time spent sending at --rate before measuring, so that
    /// connection set-up does not count.
    #[arg(long, value_name = "DURATION", env = "BOT_WARMUP", default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Checks the history of a chaos run (scripts/chaos.sh): convergence
    /// times, nobody in two matches, every notice backed by a commit, no
    /// accepted request lost.
    Check(CheckCommand),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadKind {
    /// Riders and drivers, alternately.
    Requests,
    /// Ratings of matches prepared before the run.
    Ratings,
}

impl Cli {
    /// Parses the command line, exiting with a usage error (status 2) on bad
    /// input, as clap does for its own checks.
    pub fn parse_and_validate() -> Cli {
        let cli = Cli::parse();
        if let Err(message) = cli.validate() {
            Cli::command()
                .error(clap::error::ErrorKind::ValueValidation, message)
                .exit();
        }
        cli
    }

    /// Checks that need more than one flag.
    fn validate(&self) -> Result<(), String> {
        if self.command.is_none() && self.rate.is_none() && self.riders == 0 && self.drivers == 0 {
            return Err("--riders and --drivers are both 0: nothing to simulate".into());
        }
        Ok(())
    }

    /// The `--endpoint`s, or the default one when none was given.
    pub fn endpoints_or_default(&self) -> Result<Vec<Url>, EndpointError> {
        if self.endpoints.is_empty() {
            Ok(vec![parse_endpoint(DEFAULT_ENDPOINT)?])
        } else {
            Ok(self.endpoints.clone())
        }
    }

    pub fn concurrency(&self) -> usize {
        // Bounded to 100 000 by the value parser.
        self.concurrency as usize
    }
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (try e.g. 30s, 5m, 1h)"))?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("bot").chain(args.iter().copied()))
    }

    #[test]
    fn command_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let cli = parse(&[]).unwrap();
        assert!(cli.endpoints.is_empty());
        let endpoints = cli.endpoints_or_default().unwrap();
        let urls: Vec<&str> = endpoints.iter().map(Url::as_str).collect();
        assert_eq!(urls, ["http://127.0.0.1:8080/"]);
        assert_eq!(cli.regions, None);
        assert_eq!((cli.riders, cli.drivers), (50, 50));
        assert_eq!(cli.area, Area::DHAKA);
        assert_eq!(cli.duration, None);
        assert_eq!(cli.rate, None);
        assert_eq!(cli.concurrency(), 64);
        assert_eq!(cli.warmup, Duration::from_secs(2));
    }

    #[test]
    fn endpoints_repeat_and_split_on_commas() {
        let cli = parse(&["--endpoint", "a:1", "--endpoints", "http://b:2,c:3"]).unwrap();
        let urls: Vec<&str> = cli.endpoints.iter().map(Url::as_str).collect();
        assert_eq!(urls, ["http://a:1/", "http://b:2/", "http://c:3/"]);
        assert_eq!(cli.endpoints_or_default().unwrap(), cli.endpoints);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["--endpoint", "ftp://a:1"][..],
            &["--area", "1,2,3"],
            &["--area", "23.9,90.35,23.7,90.5"],
            &["--duration", "soon"],
            &["--duration", "0s"],
            &["--rate", "0"],
            &["--concurrency", "0"],
            &["--rate", "10", "--record", "x.jsonl"],
            &["--rate", "10", "--post-log", "x.jsonl"],
            &["--load", "ratings"],
            &["--rate", "10", "--load", "everything"],
        ] {
            assert!(parse(args).is_err(), "{args:?} was accepted");
        }
        let message = parse(&["--area", "23.9,90.35,23.7,90.5"])
            .unwrap_err()
            .to_string();
        assert!(message.contains("swapped"), "{message}");
    }

    #[test]
    fn load_mode_sends_requests_unless_told_to_rate() {
        assert_eq!(parse(&["--rate", "5"]).unwrap().load, LoadKind::Requests);
        let cli = parse(&["--rate", "5", "--load", "ratings"]).unwrap();
        assert_eq!(cli.load, LoadKind::Ratings);
    }

    #[test]
    fn accepts_negative_areas_and_human_durations() {
        let cli = parse(&["--area", "-34,-58.6,-33.5,-58.2", "--duration", "1m 30s"]).unwrap();
        assert_eq!(cli.area.min_lat, -34.0);
        assert_eq!(cli.duration, Some(Duration::from_secs(90)));
    }

    #[test]
    fn check_is_a_subcommand_that_takes_no_driving_flags() {
        let cli = parse(&[
            "check",
            "snapshot",
            "a=http://127.0.0.1:1",
            "--store",
            "s.json",
        ])
        .unwrap();
        assert!(matches!(cli.command, Some(Command::Check(_))));
        assert!(
            parse(&[
                "--riders",
                "5",
                "check",
                "snapshot",
                "a=http://127.0.0.1:1",
                "--store",
                "s"
            ])
            .is_err()
        );
        assert!(parse(&["check"]).is_err(), "a verb is needed");
        assert!(parse(&["check", "verify"]).is_err());
        // Riders and drivers are irrelevant to a check.
        let cli = parse(&["--riders", "0", "--drivers", "0"]).unwrap();
        assert!(cli.validate().is_err());
        let cli = parse(&["check", "snapshot", "a=http://127.0.0.1:1", "--store", "s"]).unwrap();
        assert!(cli.validate().is_ok());
    }

    #[test]
    fn nothing_to_simulate_is_refused() {
        let cli = parse(&["--riders", "0", "--drivers", "0"]).unwrap();
        assert!(cli.validate().is_err());
        let cli = parse(&["--riders", "0", "--drivers", "0", "--rate", "5"]).unwrap();
        assert!(cli.validate().is_ok());
    }
}
