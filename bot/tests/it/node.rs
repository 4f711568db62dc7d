//! Real node processes for the bot to talk to: the `node` binary, built by
//! cargo if it is not yet, started on ephemeral loopback ports and killed
//! when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::OnceLock;

/// The node binary of this workspace, built by cargo if it is not up to
/// date (`cargo test --workspace` has built it already, for the node's own
/// end-to-end tests).
fn node_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        escargot::CargoBuild::new()
            .package("node")
            .bin("node")
            .run()
            .expect("building the node binary")
            .path()
            .to_path_buf()
    })
}

/// One node process; its data folder lives as long as it does.
pub struct NodeProcess {
    child: Child,
    /// The public API's base URL.
    pub endpoint: String,
    /// The operator listener's base URL.
    pub admin: String,
    _dir: tempfile::TempDir,
}

impl NodeProcess {
    /// Region `test` with default settings unless `extra` flags say
    /// otherwise, alone: no CQL cluster, no Fly identity.
    pub async fn start(extra: &[&str]) -> Result<Self, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let ready = dir.path().join("ready.json");
        let mut command = devcluster::launch::node_command(node_bin(), &[] as &[&str], &ready);
        // A node takes its settings from these flags only, whatever the
        // environment says (a CQL cluster for other tests, a Fly machine).
        for (name, _) in std::env::vars_os() {
            let name_text = name.to_string_lossy();
            if ["NODE_", "FLY_", "CQL_"]
                .iter()
                .any(|p| name_text.starts_with(p))
            {
                command.env_remove(&name);
            }
        }
        let mut child = command
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path())
            .args(extra)
            // A default that `--region` in `extra` overrides.
            .env("NODE_REGION", "test")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()?;
        match devcluster::launch::wait_ready(&mut child, &ready, None).await {
            Ok(ready) => Ok(Self {
                child,
                endpoint: format!("http://{}", ready.http),
                admin: format!("http://{}", ready.admin),
                _dir: dir,
            }),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e.into())
            }
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
