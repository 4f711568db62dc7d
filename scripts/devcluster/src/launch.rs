//! Starting one node process and waiting until it serves: the node writes
//! `--ready-file` (JSON: its bound addresses and id) once every listener is
//! bound, so nobody polls ports or guesses with sleeps.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use serde::Deserialize;

use crate::Error;
use crate::process::tail;

/// How long a node may take to become ready: enough for a slow CI machine,
/// only ever waited out on failure.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// What a node writes to its ready file.
#[derive(Clone, Debug, Deserialize)]
pub struct Ready {
    /// The public API.
    pub http: SocketAddr,
    /// The operator listener (map, `/debug/state`, `/metrics`, `/matches`).
    pub admin: SocketAddr,
    /// The QUIC listener, if the node has peers.
    pub mesh: Option<SocketAddr>,
    /// The node's id.
    pub node: String,
}

/// The command that runs `node_bin` with `--ready-file ready_file`, under
/// `wrap` (a program and its arguments, e.g. `env LD_PRELOAD=...`) unless
/// it is empty. A stale ready file is removed first. The caller adds the
/// node's other flags and its environment.
pub fn node_command(node_bin: &Path, wrap: &[impl AsRef<OsStr>], ready_file: &Path) -> Command {
    let _ = std::fs::remove_file(ready_file);
    let mut command = match wrap.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(node_bin);
            command
        }
        None => Command::new(node_bin),
    };
    command.arg("--ready-file").arg(ready_file);
    command
}

/// Waits for `child`'s ready file. `log`, if the node's output goes to a
/// file, is quoted when the node exits first.
pub async fn wait_ready(
    child: &mut Child,
    ready_file: &Path,
    log: Option<&Path>,
) -> Result<Ready, Error> {
    let node = ready_file.parent().map_or_else(
        || ready_file.display().to_string(),
        |d| d.display().to_string(),
    );
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Ok(text) = std::fs::read_to_string(ready_file) {
            return serde_json::from_str(&text).map_err(|e| Error::Parse {
                what: ready_file.display().to_string(),
                detail: e.to_string(),
            });
        }
        let exited = child
            .try_wait()
            .map_err(Error::io(format!("waiting for node {node}")))?;
        if let Some(status) = exited {
            return Err(Error::NodeExited {
                node,
                status,
                log: log.map_or_else(String::new, |log| {
                    format!("; last lines of {}:\n{}", log.display(), tail(log, 15))
                }),
            });
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::NotReady {
                node,
                secs: PATIENCE.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
