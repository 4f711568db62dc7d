//! What can go wrong while starting, inspecting or stopping a mesh.

use std::path::PathBuf;
use std::process::ExitStatus;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
    #[error("cannot read {what}: {detail}")]
    Parse { what: String, detail: String },
    /// `node` names the node by its folder; `log` quotes its log, if any.
    #[error("node {node} exited before it was ready ({status}){log}")]
    NodeExited {
        node: String,
        status: ExitStatus,
        log: String,
    },
    #[error("node {node} not ready after {secs} s")]
    NotReady { node: String, secs: u64 },
    #[error("relay {relay} did not start: {tail}")]
    RelayExited { relay: String, tail: String },
    #[error("ports in use ({0}): is another mesh (scripts/mesh.sh, scripts/chaos.sh) running?")]
    PortsBusy(String),
    #[error("no mesh planned in {}: run `devcluster plan` first", .0.display())]
    NoCluster(PathBuf),
    #[error("no node {0} in the plan")]
    UnknownNode(String),
    #[error("no region {0} in the plan")]
    UnknownRegion(String),
    #[error("nginx: {0}")]
    Nginx(String),
}

impl Error {
    /// An I/O error, with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}
