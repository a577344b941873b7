//! Running the measured commands (the push child, the scp loop): wall time, the process's own
//! CPU and peak RSS from `wait4`, and the whole machine's CPU time meanwhile (from /proc/stat),
//! which also counts the hosts' sshd and shells.

use std::fs;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::wait4;
use crate::teardown::resources;

pub struct Measured {
    pub wall: Duration,
    pub max_rss_kb: u64,
    /// User + system CPU of the process (and its reaped descendants).
    pub cpu: Duration,
    /// CPU time the whole machine spent meanwhile (all cores, from /proc/stat): the process,
    /// plus the hosts' sshd and shells, plus anything else running.
    pub machine_cpu: Duration,
    pub stdout: String,
    pub stderr: String,
    pub ok: bool,
}

/// Runs `cmd` in its own process group (registered, so a signal tears it down too), timing it
/// from spawn to exit and reading its peak RSS.
pub fn run_measured(cmd: &mut Command) -> Measured {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let busy0 = machine_busy();
    let t = Instant::now();
    // Reaped by wait4 below, which also yields its rusage.
    #[allow(clippy::zombie_processes)]
    let mut child = {
        let mut res = resources();
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        res.groups.push(child.id() as i32);
        child
    };
    let drain = |mut p: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = p.read_to_end(&mut v);
            String::from_utf8_lossy(&v).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let pid = child.id() as i32;
    let (status, usage) = wait4(pid);
    let wall = t.elapsed();
    let machine_cpu = machine_busy().saturating_sub(busy0);
    resources().groups.retain(|g| *g != pid);
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    Measured {
        wall,
        max_rss_kb: usage.ru_maxrss as u64,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        machine_cpu,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        ok: status == 0,
    }
}

/// Busy CPU time of the whole machine since boot (all cores; /proc/stat minus idle and iowait).
fn machine_busy() -> Duration {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_secs_f64(busy as f64 / hz as f64)
}
