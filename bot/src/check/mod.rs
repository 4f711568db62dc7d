//! `bot check`: the history checker of `scripts/chaos.sh`.
//!
//! A chaos run partitions, kills and heals real nodes while the bot sends
//! traffic; this checks afterwards that the mesh kept its promises. It reads
//! the nodes' answers (`/debug/state`, `/matches`, `/metrics`) through the
//! node's own wire types and the bot's record and summary through the bot's
//! own, and applies the rules of [`ride_types::history`], the very rules the
//! deterministic simulation checks its runs with.
//!
//! ```text
//! bot check converge ID=URL... --label L [--since T] [--timeout S] --log FILE [--final] [--restarted ID...]
//! bot check snapshot ID=URL... --store FILE
//! bot check check ID=URL... --store FILE --record told.jsonl --bot-summary FILE
//!     --convergence FILE --partitions FILE [--regions DIR] [--limit S] [--restarted ID...]
//! ```
//!
//! Exit status: 0 when all is well, 1 when the mesh did not converge or the
//! history broke a rule, 2 when the check itself could not run (a file it
//! could not read or write, a bad argument).

mod converge;
mod nodes;
mod report;
mod store;
mod verdict;

use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ride_types::regions::RegionsError;
use serde::de::DeserializeOwned;

use crate::endpoint::EndpointError;

/// The arguments of `bot check`.
#[derive(Debug, clap::Args)]
pub struct CheckCommand {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, clap::Subcommand)]
enum Verb {
    /// Measures how long the nodes took to hold one digest.
    ///
    /// Polls every node's /debug/state every 200 ms until all answer, all
    /// are ready and all digests are equal; prints and logs (one JSON line)
    /// how long that took since --since. Exit 1 on timeout. With --final,
    /// then also waits until the state stops changing and every node's
    /// match log (--restarted ones aside) holds as many matches.
    Converge(converge::ConvergeArgs),
    /// Adds what every node lists in /matches to the snapshot store.
    ///
    /// Adds every node's /matches (at most 1000, newest first) to --store,
    /// so that matches are checked even when more than 1000 were committed
    /// in all. A full listing whose oldest match was not seen before may
    /// hide older ones: that is recorded as a gap.
    Snapshot(store::SnapshotArgs),
    /// Checks the whole run and prints the chaos report.
    ///
    /// Takes a last snapshot and checks the whole run: nobody in two
    /// matches (per node, and across all nodes); every match the bot was
    /// told of committed with the same driver; every node ready with one
    /// digest within --limit of the last heal; equal pending counts; every
    /// request the bot had accepted matched, pending or expired. Exit 1 on
    /// any violation, 2 when the check could not run.
    Check(verdict::CheckArgs),
}

/// Why a check could not run (not what it found: that is its report).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("could not set up the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: line {line} is not what was expected: {source}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("--regions: {0}")]
    Regions(#[from] RegionsError),
    #[error("--regions: {0}")]
    Endpoint(#[from] EndpointError),
}

/// Runs one verb. `Ok(false)`: it ran, and found the mesh wanting.
pub async fn run(command: CheckCommand) -> Result<bool, CheckError> {
    match command.verb {
        Verb::Converge(args) => converge::run(args).await,
        Verb::Snapshot(args) => store::run(args).await.map(|()| true),
        Verb::Check(args) => verdict::run(args).await,
    }
}

/// Wall-clock time in seconds since the epoch, as `date +%s.%N` gives the
/// script's timestamps.
pub(crate) fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One `T` per non-empty line of a JSON-lines file; a missing file is none.
fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>, CheckError> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CheckError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| CheckError::Read {
            path: path.to_owned(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line).map_err(|source| CheckError::Parse {
                path: path.to_owned(),
                line: i + 1,
                source,
            })?,
        );
    }
    Ok(out)
}

/// One JSON document, or `None` when the file does not exist.
fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, CheckError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CheckError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| CheckError::Parse {
            path: path.to_owned(),
            line: source.line(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Entry {
        n: u32,
    }

    #[test]
    fn json_lines_skip_blank_lines_and_name_the_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jsonl");
        std::fs::write(&path, "{\"n\":1}\n\n{\"n\":2}\n").unwrap();
        let entries: Vec<Entry> = read_jsonl(&path).unwrap();
        assert_eq!(entries, [Entry { n: 1 }, Entry { n: 2 }]);

        std::fs::write(&path, "{\"n\":1}\n{\"n\":\"two\"}\n").unwrap();
        let error = read_jsonl::<Entry>(&path).unwrap_err().to_string();
        assert!(error.contains("line 2"), "{error}");
    }

    #[test]
    fn missing_files_are_empty_not_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none");
        assert_eq!(read_jsonl::<Entry>(&path).unwrap(), []);
        assert_eq!(read_json::<Entry>(&path).unwrap(), None);
    }
}
