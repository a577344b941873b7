//! The machines, as systemd-nspawn processes: starting a node's booted machine in its own
//! cgroups and waiting for its boot, finding it again through /proc, probing and stopping it;
//! and the light sshd-only hosts other local fleets (the fan-out bench) run on the same root
//! fs. Everything specific to systemd-nspawn lives here.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use super::{confine, containers};
use crate::lab::boot::{self, Kind};
use crate::lab::error::{LabError, Problem, Result, io_error};
use crate::lab::files::{create_dir_all, mounts, write_file};
use crate::lab::layout::{CGROUP_ROOT, Layout, NodeLayout};
use crate::lab::limits;
use crate::lab::net::{self, HostLink};
use crate::lab::process::{self, alive, signal, wait_gone};
use crate::lab::tools::{command, describe, find_tool, run};

/// Five systemd instances booting at once on a 2-core machine take well under 30 s; the margin
/// is for slow CI disks.
pub(super) const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// systemd-nspawn turns SIGTERM into an orderly poweroff of the container.
pub(super) const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The arguments of `pid` if it is a systemd-nspawn.
fn nspawn_args(pid: u32) -> Option<Vec<String>> {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    (Path::new(args.first()?).file_name()? == "systemd-nspawn").then_some(args)
}

/// The `-D` directory of a systemd-nspawn process.
pub fn nspawn_root(pid: u32) -> Option<PathBuf> {
    let args = nspawn_args(pid)?;
    args.iter().enumerate().find_map(|(i, a)| match a.as_str() {
        "-D" | "--directory" => args.get(i + 1).map(PathBuf::from),
        _ => a.strip_prefix("--directory=").map(PathBuf::from),
    })
}

/// The `--network-namespace-path` of a systemd-nspawn process.
pub fn nspawn_netns(pid: u32) -> Option<PathBuf> {
    nspawn_args(pid)?.iter().find_map(|a| {
        a.strip_prefix("--network-namespace-path=")
            .map(PathBuf::from)
    })
}

/// Every live systemd-nspawn on the host.
pub fn nspawn_pids() -> Vec<u32> {
    process::all_pids()
        .into_iter()
        .filter(|pid| nspawn_args(*pid).is_some())
        .collect()
}

/// Every systemd-nspawn on the host with its root directory.
pub(super) fn nspawn_processes() -> Vec<(u32, PathBuf)> {
    nspawn_pids()
        .into_iter()
        .filter_map(|pid| Some((pid, nspawn_root(pid)?)))
        .collect()
}

/// The node's running systemd-nspawn: the one in the pid file, checked against /proc (pids get
/// reused), else one found by scanning (a pid file lost between spawn and write).
pub(super) fn node_pid(node: &NodeLayout) -> Option<u32> {
    let root = node.rootfs();
    let recorded = fs::read_to_string(node.pid_file())
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    if let Some(pid) = recorded
        && alive(pid)
        && nspawn_root(pid).as_deref() == Some(root.as_path())
    {
        return Some(pid);
    }
    let found: Vec<u32> = nspawn_processes()
        .into_iter()
        .filter(|(_, r)| *r == root)
        .map(|(p, _)| p)
        .collect();
    // While starting, nspawn briefly has children with its own command line; want the parent.
    found
        .iter()
        .copied()
        .find(|pid| !process::parent(*pid).is_some_and(|pp| found.contains(&pp)))
}

// ---------------------------------------------------------------------------------------------
// Cgroups.

/// The cgroup hierarchies systemd tracks processes in: every cgroup2 mount (the unified one of
/// a hybrid host included) and the v1 `name=systemd` one.
fn systemd_cgroup_roots() -> Vec<PathBuf> {
    mounts()
        .into_iter()
        .filter(|(_, t, o)| {
            t == "cgroup2" || (t == "cgroup" && o.split(',').any(|x| x == "name=systemd"))
        })
        .map(|(m, _, _)| m)
        .collect()
}

/// The node's own cgroup in each of those hierarchies. It must have one: with --keep-unit and
/// no systemd on the host, nspawn puts its `payload` cgroup under the caller's, so machines
/// started from one process would share it and their systemds would remove each other's unit
/// cgroups (units failing at random with status 219/CGROUP). With `controllers`, also in each
/// cgroup v1 controller hierarchy (where runc puts a container node's containers). Always in
/// the v1 `devices` hierarchy when the host has one, one level below the cgroup that holds the
/// node's device rules ([`devices_ceiling`], `confine`).
fn node_cgroups(layout: &Layout, node: &NodeLayout, controllers: bool) -> Vec<PathBuf> {
    let devices = confine::devices_hierarchy();
    let v1: Vec<PathBuf> = if controllers {
        containers::v1_hierarchies()
            .into_iter()
            .map(|(m, _)| m)
            .filter(|m| Some(m) != devices.as_ref())
            .collect()
    } else {
        Vec::new()
    };
    let mut cgroups: Vec<PathBuf> = systemd_cgroup_roots()
        .into_iter()
        .chain(v1)
        .map(|r| r.join(layout.cgroup()).join(&node.name))
        .collect();
    cgroups.extend(devices_ceiling(layout, node).map(|c| c.join(confine::DEVICES_CHILD)));
    cgroups
}

/// The node's cgroup in the v1 `devices` hierarchy, which holds its device rules and which no
/// process joins (its machine runs in the child [`confine::DEVICES_CHILD`]).
fn devices_ceiling(layout: &Layout, node: &NodeLayout) -> Option<PathBuf> {
    confine::devices_hierarchy().map(|d| d.join(layout.cgroup()).join(&node.name))
}

/// The memory the node's machine uses now, as its cgroups account it.
pub(super) fn memory_usage(layout: &Layout, node: &NodeLayout) -> Option<u64> {
    limits::memory_usage(&node_cgroups(layout, node, true))
}

/// PIDs in a cgroup and all cgroups below it.
fn cgroup_pids(dir: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            pids.extend(cgroup_pids(&e.path()));
        }
    }
    pids
}

/// Kills what is left of a node's machine once its systemd-nspawn is gone: a SIGKILLed nspawn
/// leaves the container's init and services running, and a new machine started next to them
/// would share their network namespace (the old sshd answering for the new node) and cgroups.
/// Only processes in this node's own cgroups, and in its namespace when `netns` says the
/// namespace is this lab's, are touched.
pub(super) fn kill_leftovers(layout: &Layout, node: &NodeLayout, netns: bool) -> Result<()> {
    let mut pids: BTreeSet<u32> = node_cgroups(layout, node, true)
        .iter()
        .flat_map(|cg| cgroup_pids(cg))
        .collect();
    if netns && node.link.netns_path().exists() {
        pids.extend(net::netns_pids(&node.link)?);
    }
    let pids: Vec<u32> = pids.into_iter().collect();
    process::kill(&pids, || {
        format!("left from an earlier machine of {}", node.name)
    })
}

/// Removes a cgroup and the ones its machine's systemd made below it, deepest first (cgroupfs
/// only allows rmdir, and only of empty cgroups).
fn remove_cgroup(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    for e in fs::read_dir(dir)
        .map_err(io_error("read cgroup", dir))?
        .flatten()
    {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup(&e.path())?;
        }
    }
    fs::remove_dir(dir).map_err(io_error("remove cgroup", dir))
}

/// Removes the nodes' cgroups, then the lab's and the common parent if empty.
pub(super) fn remove_cgroups(layout: &Layout, nodes: &[NodeLayout]) -> Result<()> {
    for node in nodes {
        for cg in node_cgroups(layout, node, true)
            .into_iter()
            .chain(devices_ceiling(layout, node))
        {
            remove_cgroup(&cg)?;
        }
    }
    for root in systemd_cgroup_roots()
        .into_iter()
        .chain(containers::v1_hierarchies().into_iter().map(|(m, _)| m))
    {
        let _ = fs::remove_dir(root.join(layout.cgroup()));
        let _ = fs::remove_dir(root.join(CGROUP_ROOT));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// A node's machine.

/// Starts the node's machine in the background, in its own cgroups, and records its PID.
pub(super) fn start_node(layout: &Layout, node: &NodeLayout) -> Result<u32> {
    let nspawn = find_tool("systemd-nspawn").ok_or_else(|| LabError::Preflight {
        problems: vec![Problem::MissingTool {
            tool: "systemd-nspawn",
            package: "systemd-container",
        }],
    })?;
    // Limits live in the controllers' hierarchies, which a machine then joins too.
    let cgroups = node_cgroups(
        layout,
        node,
        node.containers.is_some() || !layout.limits.is_none(),
    );
    if let Some(ceiling) = devices_ceiling(layout, node) {
        // Rules that deny by default can only be set on a cgroup without children: an earlier
        // machine's (its processes killed by `kill_leftovers`) goes first.
        remove_cgroup(&ceiling)?;
        confine::restrict_devices(&ceiling, &confine::device_rules(node.confinement))?;
    }
    for cg in &cgroups {
        create_dir_all(cg)?;
        containers::init_cpusets(cg)?;
    }
    limits::apply(&cgroups, &layout.limits)?;
    let cgroups: Vec<String> = cgroups.iter().map(|p| p.display().to_string()).collect();
    if let Some(bad) = cgroups.iter().find(|p| p.contains(char::is_whitespace)) {
        return Err(LabError::BadPath {
            path: bad.into(),
            reason: "cgroup paths with white space are not supported".into(),
        });
    }
    // Started through sh so that it is not our child: it outlives `hardway lab up`, and whoever
    // inherits it reaps it. setsid detaches it from our terminal and its signals. sh joins the
    // node's cgroups first so that nspawn starts inside them.
    // Capabilities, seccomp filter and user namespace by what the machine runs (`confine`).
    let (env, extra_args) = confine::nspawn_settings(node.confinement);
    let mut c = command("sh");
    process::no_inherited_fds(&mut c);
    // SAFETY: `root_namespace_at_chroot` makes system calls only, safe between fork and exec.
    unsafe { c.pre_exec(root_namespace_at_chroot) };
    // Machines on cgroup v2 (systemd 258 and later, Debian sid's, support nothing else), but
    // those that run containers on a suite whose systemd still boots on the host's cgroup v1
    // hierarchies (`containers::Cgroups`).
    if node.containers.is_none_or(|c| c.unified()) {
        c.env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1");
    }
    c.envs(env);
    c.env("HW_CGROUPS", cgroups.join(" "))
        .arg("-c")
        .arg(
            r#"for cg in $HW_CGROUPS; do echo $$ >"$cg/cgroup.procs" || exit 1; done
               log=$1; shift; setsid "$@" </dev/null >>"$log" 2>&1 & echo $!"#,
        )
        .arg("sh")
        .arg(node.console_log())
        .arg(nspawn)
        .args(["--boot", "-D"])
        .arg(node.rootfs())
        .args(["-M", &node.name])
        // Without it nspawn asks systemd-machined, and this host's PID 1 is not systemd.
        .arg("--register=no")
        .arg("--keep-unit")
        .arg(format!(
            "--network-namespace-path={}",
            node.link.netns_path().display()
        ))
        .arg("--console=passive")
        .args(extra_args);
    let machine_error = |reason: String| LabError::Machine {
        node: node.name.clone(),
        reason,
    };
    let pid: u32 = run(&mut c)?
        .trim()
        .parse()
        .map_err(|_| machine_error(format!("no PID from {}", describe(&c))))?;
    write_file(&node.pid_file(), format!("{pid}\n"))?;
    // `$!` is known before the background shell has exec'd setsid and then nspawn; until it
    // has, the PID does not look like the node's machine yet.
    let deadline = Instant::now() + Duration::from_secs(10);
    while nspawn_root(pid).as_deref() != Some(node.rootfs().as_path()) {
        if !alive(pid) {
            return Err(boot::boot_error(
                node,
                "systemd-nspawn exited at once".into(),
            ));
        }
        if Instant::now() >= deadline {
            return Err(machine_error(format!(
                "process {pid} did not become systemd-nspawn within 10 s"
            )));
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(pid)
}

/// In the child that becomes a machine's systemd-nspawn: when started from a chroot, a mount
/// namespace of its own whose root **is** the chroot; elsewhere nothing.
///
/// Why: a machine's mount namespace is a copy of its starter's, and a chroot is not the root of
/// that namespace. runc pivots a container into its root file system below the machine's, but
/// `runc exec` (and so `kubectl exec`) joins the container with setns(2), which puts the new
/// process at the *namespace's* root: from a chroot, **the host's root file system**. That
/// happened in fresh-ci's chroot: `kubectl exec pod -- cat /etc/resolv.conf` printed the host's.
///
/// How: setns(2) into our own mount namespace shows where a joiner lands (its root). If that is
/// not our root, we are in a chroot, and its path seen from there is `/proc/self/cwd` after
/// `fchdir` back into it. Then, as runc does for a container: a namespace of our own (receiving
/// the host's unmounts, sending nothing back), the chroot bound onto itself (a mount point even
/// where the chroot is a plain directory), `pivot_root(".", ".")` and the old root detached.
/// PID 1's `/proc/1/root` would have been simpler, but a CI's sandbox may refuse to show it.
///
/// Runs between fork and exec: system calls only, no allocation.
pub fn root_namespace_at_chroot() -> std::io::Result<()> {
    let check = |r: libc::c_int| {
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    let fd = |r: libc::c_int| {
        if r >= 0 {
            Ok(r)
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    let mut path = [0u8; 4096];
    // SAFETY: every pointer is to a NUL-terminated literal, to `path` (with its length, and NUL
    // terminated before use) or null, as each call allows; the descriptors are ours.
    unsafe {
        let chroot = fd(libc::open(
            c"/".as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        ))?;
        let own = fd(libc::open(
            c"/proc/self/ns/mnt".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        ))?;
        check(libc::setns(own, libc::CLONE_NEWNS))?;
        libc::close(own);
        check(libc::fchdir(chroot))?;
        libc::close(chroot);
        let n = libc::readlink(
            c"/proc/self/cwd".as_ptr(),
            path.as_mut_ptr().cast(),
            path.len() - 1,
        );
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if n == 1 && path[0] == b'/' {
            // Not in a chroot: setns changed nothing.
            return Ok(());
        }
        path[n as usize] = 0;
        let path = path.as_ptr().cast::<libc::c_char>();
        check(libc::unshare(libc::CLONE_NEWNS))?;
        check(libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_SLAVE,
            std::ptr::null(),
        ))?;
        check(libc::mount(
            path,
            path,
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        ))?;
        check(libc::chdir(path))?;
        check(libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as libc::c_int)?;
        check(libc::umount2(c".".as_ptr(), libc::MNT_DETACH))?;
        check(libc::chdir(c"/".as_ptr()))
    }
}

/// systemd-nspawn machines, to the boot wait and the probe (`crate::lab::boot`).
pub(super) const NSPAWN: Kind = Kind {
    pid_of: node_pid,
    process: "systemd-nspawn",
    boot_timeout: BOOT_TIMEOUT,
};

/// Stops systemd-nspawn processes: SIGTERM (an orderly poweroff of a booted container; a
/// light host's payload gets SIGKILL), then SIGKILL after `grace`. Children of the caller
/// stay zombies until it reaps them.
pub fn stop_processes(pids: &[u32], grace: Duration) -> Result<()> {
    signal(pids, "TERM");
    let left = wait_gone(pids, Instant::now() + grace);
    if left.is_empty() {
        return Ok(());
    }
    eprintln!(
        "lab: systemd-nspawn {left:?} still running {} s after SIGTERM; sending SIGKILL",
        grace.as_secs()
    );
    process::kill(&left, || "systemd-nspawn".into())
}

// ---------------------------------------------------------------------------------------------
// Light hosts.

/// A light host: `systemd-nspawn --volatile=overlay` on a root fs with only sshd in it (no
/// systemd; ~10 MB), in the network namespace of `link`, named after that namespace.
pub struct LightSshd<'a> {
    /// Used read-only, as the lower layer of a throwaway overlay.
    pub rootfs: &'a Path,
    pub link: &'a HostLink,
    /// Bound read-only as root's `~/.ssh` (its `authorized_keys` decides who gets in).
    pub root_ssh_dir: &'a Path,
    /// The host's private ed25519 key, with its `.pub` beside it; both bound read-only.
    pub host_key: &'a Path,
    /// Receives systemd-nspawn's and sshd's output.
    pub log: &'a Path,
}

/// Starts a light host as a child of the calling thread, in its own process group, and
/// returns its systemd-nspawn's PID. If that thread dies, even by SIGKILL, nspawn gets SIGTERM
/// and kills its container; so call it from a thread that lives as long as the host should.
/// Stop it with [`stop_processes`], then reap it (waitpid), and [`forget_machine`] it.
pub fn spawn_light_sshd(host: &LightSshd) -> Result<u32> {
    let log = File::create(host.log).map_err(io_error("create", host.log))?;
    let log2 = log.try_clone().map_err(io_error("open", host.log))?;
    let machine = host.link.netns.as_str();
    let mut c = command("systemd-nspawn");
    c.args(["-q", "-D"])
        .arg(host.rootfs)
        .args(["--volatile=overlay", "--register=no", "--keep-unit", "-M", machine])
        .arg(format!("--network-namespace-path={}", host.link.netns_path().display()))
        .arg("--console=pipe")
        .arg(format!("--bind-ro={}:/root/.ssh", host.root_ssh_dir.display()))
        .arg(format!("--bind-ro={}:/etc/ssh/ssh_host_ed25519_key", host.host_key.display()))
        .arg(format!("--bind-ro={}:/etc/ssh/ssh_host_ed25519_key.pub", host.host_key.with_extension("pub").display()))
        .args([
            "/bin/sh",
            "-c",
            "mkdir -p /run/sshd; [ -e /etc/hosts ] || echo '127.0.0.1 localhost' > /etc/hosts; exec /usr/sbin/sshd -D -e -o PermitRootLogin=prohibit-password -o PasswordAuthentication=no -o UseDNS=no",
        ])
        .stdin(Stdio::null())
        .stdout(log2)
        .stderr(log)
        // Its own group: a Ctrl-C reaches only the caller, which stops nspawn in order.
        .process_group(0);
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        c.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    // Reaped by the caller (waitpid) after `stop_processes`, not through the Child handle.
    #[allow(clippy::zombie_processes)]
    let child = c.spawn().map_err(|error| LabError::Spawn {
        command: describe(&c),
        error,
    })?;
    Ok(child.id())
}

/// Waits until sshd at `address` sends its banner; false if it has not by `deadline`.
pub fn wait_sshd(address: IpAddr, deadline: Instant) -> bool {
    loop {
        let banner =
            TcpStream::connect_timeout(&SocketAddr::new(address, 22), Duration::from_millis(500))
                .ok()
                .and_then(|mut s| {
                    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                    let mut b = [0u8; 4];
                    s.read_exact(&mut b).ok()?;
                    Some(b)
                });
        if banner.as_ref() == Some(b"SSH-") {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Removes what systemd-nspawn keeps per machine name on the host (normally removed by nspawn
/// itself, but not when it was SIGKILLed).
pub fn forget_machine(name: &str) {
    let _ = fs::remove_dir(Path::new("/run/systemd/nspawn/propagate").join(name));
}
