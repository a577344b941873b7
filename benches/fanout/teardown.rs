//! What the bench has created, for teardown on every path: the bench returning, panicking, or
//! getting SIGINT/SIGTERM/SIGHUP, and the leftovers of a SIGKILLed run at the next start; and
//! the end's check that nothing of the bench is left.

use std::fs;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use hardway::lab::net::HostLink;
use hardway::lab::nspawn::machine;
use hardway::lab::{net, process};

use crate::{BRIDGE, BRIDGE_ALIAS, NETNS_PREFIX, STOP_GRACE, VETH_PREFIX, host_link, target_dir};

#[derive(Default)]
pub struct Resources {
    /// systemd-nspawn processes (our children).
    pub nspawn: Vec<u32>,
    /// Process groups of measured children (push runs, the scp loop).
    pub groups: Vec<i32>,
    /// Network namespaces, each with its host-side veth.
    pub hosts: Vec<usize>,
    pub bridge: bool,
    pub dirs: Vec<PathBuf>,
}

static RESOURCES: Mutex<Resources> = Mutex::new(Resources {
    nspawn: Vec::new(),
    groups: Vec::new(),
    hosts: Vec::new(),
    bridge: false,
    dirs: Vec::new(),
});

/// Creation and teardown hold this lock, so a signal's teardown never races a creation.
pub fn resources() -> MutexGuard<'static, Resources> {
    RESOURCES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Teardown goes on past a failed step: it reports the failure, and the end's leftover check
/// fails the bench if anything stayed.
fn report(what: &str, r: hardway::lab::Result<impl Sized>) {
    if let Err(e) = r {
        eprintln!("fanout bench: {what}: {e}");
    }
}

/// Stops our nspawn children (see `STOP_GRACE`) and reaps them.
fn stop(pids: &[u32]) {
    report(
        "stopping the hosts",
        machine::stop_processes(pids, STOP_GRACE),
    );
    for &p in pids {
        let mut st = 0;
        unsafe { libc::waitpid(p as i32, &mut st, libc::WNOHANG) };
    }
}

/// Removes one host's network (whatever still runs in its namespace, the veth, the namespace)
/// and what nspawn keeps for its machine name.
fn remove_host(link: &HostLink) {
    report(
        &format!("removing {}", link.netns),
        net::remove_host_link(link),
    );
    machine::forget_machine(&link.netns);
}

/// Tears down the hosts `which` selects (all with `None`), in the caller's lock.
pub fn teardown_hosts(res: &mut Resources, which: Option<&[usize]>) {
    let selected = |i: &usize| which.is_none_or(|w| w.contains(i));
    // nspawn pids are recorded in host order, one per host.
    let hosts: Vec<usize> = res.hosts.iter().copied().filter(|i| selected(i)).collect();
    let pids: Vec<u32> = res
        .nspawn
        .iter()
        .copied()
        .filter(|p| nspawn_host(*p).is_none_or(|i| selected(&i)))
        .collect();
    stop(&pids);
    res.nspawn.retain(|p| !pids.contains(p));
    for i in &hosts {
        remove_host(&host_link(*i));
    }
    res.hosts.retain(|i| !hosts.contains(i));
}

/// The host index of one of our nspawn processes, from its network namespace.
fn nspawn_host(pid: u32) -> Option<usize> {
    let netns = machine::nspawn_netns(pid)?;
    netns
        .strip_prefix("/run/netns")
        .ok()?
        .to_str()?
        .strip_prefix(NETNS_PREFIX)?
        .parse()
        .ok()
}

/// Everything, in the caller's lock: measured children, hosts, the bridge, directories.
fn teardown_all(res: &mut Resources) {
    for g in res.groups.drain(..) {
        unsafe { libc::kill(-g, libc::SIGKILL) };
    }
    teardown_hosts(res, None);
    if res.bridge {
        if bridge_is_ours() {
            report("removing the bridge", net::remove_bridge(BRIDGE));
        }
        res.bridge = false;
    }
    for d in res.dirs.drain(..) {
        let _ = fs::remove_dir_all(d);
    }
}

fn bridge_is_ours() -> bool {
    net::bridge_owner(BRIDGE).as_deref() == Some(BRIDGE_ALIAS)
}

/// Tears everything down when the bench returns or panics.
pub struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        teardown_all(&mut resources());
    }
}

/// Blocks SIGINT, SIGTERM and SIGHUP in every thread (call first: threads inherit the mask) and
/// leaves them to one thread that tears everything down and exits.
pub fn handle_signals() {
    // SAFETY: plain libc signal-mask calls on a local sigset_t.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::spawn(move || {
        let mut sig = 0;
        while unsafe { libc::sigwait(&set, &mut sig) } != 0 {}
        eprintln!("fanout bench: signal {sig}: tearing down the bench hosts and network");
        let mut res = resources();
        teardown_all(&mut res);
        eprintln!("fanout bench: torn down");
        std::process::exit(128 + sig);
    });
}

/// Removes what a SIGKILLed earlier run left: only names of this bench, a bridge only with its
/// alias. Runs under the bench lock, so never against a live bench.
pub fn remove_stale() {
    let mut found = Vec::new();
    let stale: Vec<u32> = machine::nspawn_pids()
        .into_iter()
        .filter(|p| nspawn_host(*p).is_some())
        .collect();
    if !stale.is_empty() {
        found.push(format!("{} systemd-nspawn", stale.len()));
        report(
            "killing stale hosts",
            process::kill(&stale, || "stale bench hosts".into()),
        );
    }
    for name in net::netns_names().unwrap_or_else(|e| panic!("{e}")) {
        if let Some(i) = name.strip_prefix(NETNS_PREFIX) {
            remove_host(&HostLink {
                veth: format!("{VETH_PREFIX}{i}"),
                netns: name.clone(),
            });
            found.push(name);
        }
    }
    for name in net::link_names() {
        if name.starts_with(VETH_PREFIX) {
            report(&format!("removing {name}"), net::delete_link(&name));
            found.push(name);
        }
    }
    if net::link_exists(BRIDGE) {
        if !bridge_is_ours() {
            panic!(
                "a network interface {BRIDGE} exists that this bench did not create; remove it or pick another name"
            );
        }
        found.push(BRIDGE.to_string());
        report("removing the bridge", net::remove_bridge(BRIDGE));
    }
    for e in fs::read_dir(target_dir()).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name
            .strip_prefix("hardway-bench-fanout-")
            .and_then(|p| p.parse::<u32>().ok())
            && !process::alive(pid)
        {
            found.push(name);
            let _ = fs::remove_dir_all(e.path());
        }
    }
    if !found.is_empty() {
        eprintln!(
            "fanout bench: removed leftovers of an earlier run: {}",
            found.join(", ")
        );
    }
}

/// What of the bench is still there: namespaces, links, nspawn processes.
pub fn leftovers() -> Vec<String> {
    let mut left = Vec::new();
    for name in net::netns_names().unwrap_or_else(|e| panic!("{e}")) {
        if name.starts_with(NETNS_PREFIX) {
            left.push(format!("netns {name}"));
        }
    }
    for name in net::link_names() {
        if name.starts_with(VETH_PREFIX) || name == BRIDGE {
            left.push(format!("link {name}"));
        }
    }
    for p in machine::nspawn_pids()
        .into_iter()
        .filter(|p| nspawn_host(*p).is_some())
    {
        left.push(format!("systemd-nspawn pid {p}"));
    }
    left
}
