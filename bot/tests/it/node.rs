//! Real node processes for the bot to talk to: the `node` binary, built by
//! cargo if it is not yet, started on ephemeral loopback ports and killed
//! when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::OnceLock;

/// The node binary of this workspace. `cargo test --workspace` builds it
/// next to this test's own binary, with the features the workspace's tests
/// unify; that one is used unless a source file is newer. Otherwise (`cargo
/// test -p bot` after a change to the node) cargo builds it.
fn node_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let beside = std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.join("node")));
        if let Some(bin) = beside.filter(|bin| is_current(bin)) {
            return bin;
        }
        escargot::CargoBuild::new()
            .package("node")
            .bin("node")
            .run()
            .expect("building the node binary")
            .path()
            .to_path_buf()
    })
}

/// Whether `bin` exists and no source file of the node (or of the types it
/// uses) changed after it was built.
fn is_current(bin: &Path) -> bool {
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else {
        return false;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    ["node/src", "types/src", "Cargo.lock"]
        .iter()
        .all(|p| newest(&root.join(p)).is_some_and(|newest| newest <= built))
}

/// The newest modification time under `path`.
fn newest(path: &Path) -> Option<std::time::SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .flatten()
        .map(|entry| newest(&entry.path()))
        .try_fold(meta.modified().ok()?, |a, b| Some(a.max(b?)))
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
