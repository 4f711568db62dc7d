//! Processes by pid: a mesh outlives the `devcluster` invocation that
//! started it, so later invocations signal its processes by the pids in the
//! state file. Nothing is ever killed by name.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::Error;

/// Running and not a zombie, from /proc (CI images may lack `ps`).
pub fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows "(comm) "; comm may itself hold ") ".
    stat.rsplit_once(") ")
        .is_some_and(|(_, rest)| !rest.starts_with('Z'))
}

/// Sends `signal` (a name such as `TERM` or `STOP`) with kill(1); a process
/// already gone is not an error.
pub fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stderr(std::process::Stdio::null())
        .status();
}

/// Signals every pid, waits up to `patience` for them to go, then SIGKILLs
/// whatever is left (saying so on stderr).
pub fn stop(pids: &[u32], sig: &str, patience: Duration) {
    for &pid in pids {
        signal(pid, sig);
    }
    let deadline = Instant::now() + patience;
    while pids.iter().any(|&pid| alive(pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    for &pid in pids {
        if alive(pid) {
            eprintln!(
                "pid {pid} did not stop after SIG{sig} in {}s; killing it",
                patience.as_secs()
            );
            signal(pid, "KILL");
        }
    }
}

/// Runs `command` to completion; its stdout, or an error with its stderr.
pub fn output(command: &mut Command) -> Result<String, Error> {
    let shown = format!("{command:?}");
    let out = command.output().map_err(Error::io(shown.clone()))?;
    if !out.status.success() {
        return Err(Error::Command {
            command: shown,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The last `n` lines of a log file (empty if there is none).
pub fn tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_child_is_no_longer_alive() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        assert!(alive(child.id()));
        stop(&[child.id()], "TERM", Duration::from_secs(5));
        // Until reaped it is a zombie, which does not count as alive.
        assert!(!alive(child.id()));
        child.wait().unwrap();
    }
}
