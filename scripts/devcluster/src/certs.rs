//! The mesh's CA, node certificates and token key, made by the node binary
//! (`node certs`, `node token-key`) so there is one implementation of each.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;
use crate::process::output;

/// A certificate for each of `ids` that has none yet in `dir`, under the
/// CA there (made on first use). The CA is kept, so certificates made
/// earlier stay valid.
pub fn issue(node_bin: &Path, dir: &Path, ids: &[&str]) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    let missing: Vec<&str> = ids
        .iter()
        .copied()
        .filter(|id| {
            !(dir.join(format!("{id}.pem")).is_file() && dir.join(format!("{id}.key")).is_file())
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut command = Command::new(node_bin);
    command.arg("certs").arg("--dir").arg(dir);
    for id in missing {
        command.args(["--node", id]);
    }
    output(command.args(["--ip", "127.0.0.1"]))?;
    Ok(())
}

/// The mesh's token key file in `dir`, made on first use (owner-only) and
/// kept, so that tokens outlive a restart.
pub fn token_keys(node_bin: &Path, dir: &Path) -> Result<PathBuf, Error> {
    let path = dir.join("token.keys");
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > 0) {
        return Ok(path);
    }
    let key = output(Command::new(node_bin).arg("token-key"))?;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut file| file.write_all(key.as_bytes()))
        .map_err(Error::io(format!("writing {}", path.display())))?;
    Ok(path)
}
