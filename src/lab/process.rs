//! Host processes: alive or not, signals, and waiting for them to go with a deadline.

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use super::error::{LabError, Result};
use super::tools::{command, output};

/// How long SIGKILLed processes get to disappear.
pub const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// Alive and not a zombie (a zombie keeps its /proc entry until its parent reaps it).
pub fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

/// The parent of `pid`, from /proc.
pub(super) fn parent(pid: u32) -> Option<u32> {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<u32>().ok()))
}

/// Every PID in /proc that is alive.
pub(super) fn all_pids() -> Vec<u32> {
    let Ok(proc_dir) = fs::read_dir("/proc") else { return Vec::new() };
    proc_dir.flatten().filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()).filter(|pid| alive(*pid)).collect()
}

/// Sends `signal` (a name: `TERM`, `KILL`, ...) to every process; ignores those already gone.
pub fn signal(pids: &[u32], signal: &str) {
    if pids.is_empty() {
        return;
    }
    // sh's builtin kill: procps' /bin/kill is not guaranteed to be installed.
    let _ = output(
        command("sh")
            .arg("-c")
            .arg(r#"s=$1; shift; kill -s "$s" "$@" 2>/dev/null"#)
            .arg("sh")
            .arg(signal)
            .args(pids.iter().map(|p| p.to_string())),
    );
}

/// Waits until the processes are gone; returns those still alive at the deadline.
pub fn wait_gone(pids: &[u32], deadline: Instant) -> Vec<u32> {
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// SIGKILL, then waits up to [`KILL_TIMEOUT`]; `what` says in the error which processes
/// these were.
pub fn kill(pids: &[u32], what: impl FnOnce() -> String) -> Result<()> {
    if pids.is_empty() {
        return Ok(());
    }
    signal(pids, "KILL");
    let left = wait_gone(pids, Instant::now() + KILL_TIMEOUT);
    if !left.is_empty() {
        return Err(LabError::Survivors { what: what(), pids: left });
    }
    Ok(())
}
