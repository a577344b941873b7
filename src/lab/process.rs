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
        .and_then(|s| {
            s.rsplit_once(") ")
                .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<u32>().ok())
        })
}

/// Every PID in /proc that is alive.
pub(super) fn all_pids() -> Vec<u32> {
    let Ok(proc_dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    proc_dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| alive(*pid))
        .collect()
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
        return Err(LabError::Survivors {
            what: what(),
            pids: left,
        });
    }
    Ok(())
}

/// Keeps the descriptors this process inherited (a lock file of `flock(1)` wrapping hardway,
/// say) out of a long-lived child such as a machine: every descriptor from 3 up is marked
/// close-on-exec in the child before it execs. Without it a `flock LOCK hardway lab up` holds
/// LOCK for as long as the lab's machines run.
pub fn no_inherited_fds(c: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: close_range(2) is a plain system call (async-signal-safe); with
    // CLOSE_RANGE_CLOEXEC it only sets FD_CLOEXEC, so std's own exec-error pipe keeps working.
    unsafe {
        c.pre_exec(|| {
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    /// A descriptor inherited without close-on-exec (as flock(1) hands its lock to its command)
    /// reaches a plain child but not one started with `no_inherited_fds`.
    #[test]
    fn inherited_descriptors_stay_out_of_detached_children() {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("lock")).unwrap();
        let fd = file.as_raw_fd();
        // SAFETY: clearing FD_CLOEXEC on a descriptor this test owns.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
        let probe = format!("test -e /proc/self/fd/{fd} && echo open || echo closed");
        let plain = std::process::Command::new("sh")
            .args(["-c", &probe])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&plain.stdout).trim(), "open");
        let mut c = std::process::Command::new("sh");
        c.args(["-c", &probe]);
        super::no_inherited_fds(&mut c);
        let detached = c.output().unwrap();
        assert_eq!(String::from_utf8_lossy(&detached.stdout).trim(), "closed");
    }
}
