//! A local lab: one booted systemd "machine" per inventory node, on this host, so that the
//! deploy can be exercised end to end without VMs or a cloud account.
//!
//! Each node is a `systemd-nspawn --boot` container on its own overlay of a Debian bookworm
//! root fs, in its own cgroups, with its own network namespace plugged into a bridge. The host
//! reaches every node at its inventory address on port 22, as root with the lab's key, exactly
//! like a real machine — so the later stages need no lab-specific code path.
//!
//! Where things live:
//!
//! ```text
//! <cache_dir>/bookworm-rootfs          built once by debootstrap, never booted nor written to
//! <state_dir>/<cluster>/id_ed25519     the lab's ssh key (root on every node trusts it)
//! <state_dir>/<cluster>/known_hosts    `<address> <host key>` for every node
//! <state_dir>/<cluster>/<node>/        rootfs/ (overlay: the cache + upper/), pid, console.log
//! ```
//!
//! Host-wide network names are derived from the cluster name: bridge `hw-<cluster>`, network
//! namespaces `hw-<cluster>-<node>`, host-side veths `hwv<hash>`. The bridge carries an alias
//! naming the lab directory that owns it, so two labs of one cluster name (say a developer's
//! and a test's) refuse to share the network instead of tearing down each other's. Cgroups are
//! `hardway-lab/<cluster>-<hash of the lab directory>/<node>` in each systemd hierarchy.
//!
//! Everything here shells out to the standard tools (debootstrap, systemd-nspawn, ip,
//! ssh-keygen, ssh): they are what a student would type by hand, and error messages then name
//! a command that can be rerun.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use ipnet::Ipv4Net;

use crate::inventory::Inventory;

const SUITE: &str = "bookworm";
const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "iproute2",
    "etcd-server",
    "etcd-client",
    "haproxy",
    "ca-certificates",
    "sudo",
    "procps",
];
/// Bump whenever `customize_rootfs` changes, so that existing caches are rebuilt, not reused.
const ROOTFS_REVISION: u32 = 1;
/// Written last into a finished cache, holding [`recipe`]: a cache without it is never used.
const ROOTFS_MARKER: &str = "etc/hardway-lab-rootfs";

/// Five systemd instances booting at once on a 2-core machine take well under 30 s; the margin
/// is for slow CI disks.
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// systemd-nspawn turns SIGTERM into an orderly poweroff of the container.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(200);

/// Appended to `$PATH` because `cargo test` or `sudo` often run without the sbin directories,
/// where debootstrap and ip live (and debootstrap itself needs chroot and mount from there).
const SYSTEM_PATH: &[&str] = &["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// Tool, Debian package that provides it.
const REQUIRED_TOOLS: &[(&str, &str)] = &[
    ("debootstrap", "debootstrap"),
    ("systemd-nspawn", "systemd-container"),
    ("ip", "iproute2"),
    ("ssh-keygen", "openssh-client"),
    ("ssh", "openssh-client"),
    ("setsid", "util-linux"),
    ("chroot", "coreutils"),
    ("mount", "mount"),
];

/// Where the lab keeps its files.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// The debootstrapped root fs, shared by all labs and kept across `down` (default
    /// `/var/cache/hardway/lab`).
    pub cache_dir: PathBuf,
    /// Parent of the per-cluster lab directories: the lab of cluster `C` lives in
    /// `state_dir/C` (default `/run/hardway/lab`, hence `/run/hardway/lab/<cluster>`, which is
    /// where `inventory/lab.toml` expects the key and known_hosts).
    pub state_dir: PathBuf,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions { cache_dir: "/var/cache/hardway/lab".into(), state_dir: "/run/hardway/lab".into() }
    }
}

/// One node of the lab as seen from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub name: String,
    pub address: IpAddr,
    /// Its systemd-nspawn process is alive.
    pub running: bool,
    /// TCP port 22 answers (only probed when `running`, so no foreign host is ever touched).
    pub reachable: bool,
    /// `systemctl is-system-running` on the node, over ssh: `running`, `degraded`, ...
    pub system_state: Option<String>,
    /// PID of the node's systemd-nspawn on the host.
    pub pid: Option<u32>,
}

/// A lab and how to reach it.
#[derive(Debug, Clone)]
pub struct Lab {
    /// Private key that root on every node accepts (mode 0600).
    pub ssh_key: PathBuf,
    /// Host keys of every node, by address.
    pub known_hosts: PathBuf,
    pub nodes: Vec<NodeStatus>,
}

impl Lab {
    /// `ssh root@address` with the lab's key and strict host key checking against the lab's
    /// known_hosts; append the remote command as arguments.
    pub fn ssh(&self, address: IpAddr) -> Command {
        ssh_command(&self.ssh_key, &self.known_hosts, address)
    }
}

/// The cached Debian root fs the lab's machines boot from, built with debootstrap the first
/// time (from the host's own apt mirror). Never written to afterwards, so other tools (the
/// fan-out bench) may use it read-only as the lower layer of their own machines.
pub fn cache_rootfs(opts: &LabOptions) -> Result<PathBuf> {
    ensure_cache_rootfs(&opts.cache_dir)
}

/// Checks that this process can run a lab: root, and every tool present. The error lists every
/// missing piece with the Debian package that provides it.
pub fn preflight() -> Result<()> {
    let mut problems = Vec::new();
    match effective_uid() {
        Some(0) => {}
        Some(uid) => problems.push(format!(
            "running as uid {uid}: the lab needs root (bridges, network namespaces, systemd-nspawn, debootstrap)"
        )),
        None => problems.push("cannot read the effective uid from /proc/self/status".to_string()),
    }
    for (tool, package) in REQUIRED_TOOLS {
        if find_tool(tool).is_none() {
            problems.push(format!("{tool} not found: apt-get install {package}"));
        }
    }
    if find_tool("debootstrap").is_some() && !Path::new("/usr/share/debootstrap/scripts").join(SUITE).exists() {
        problems.push(format!("this debootstrap does not know {SUITE}: apt-get install debootstrap (a newer one)"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("cannot run the lab:\n  {}", problems.join("\n  "))
    }
}

/// Brings up every node of the inventory and waits until each answers ssh with a finished boot.
///
/// Idempotent: a node that is already running is left alone, and only missing pieces (cache,
/// key, root fs, bridge, namespace, veth, address, route, machine) are created. On error what
/// was created stays in place; [`down`] removes it.
pub fn up(inv: &Inventory, opts: &LabOptions) -> Result<Lab> {
    preflight()?;
    let plan = Plan::new(inv, opts)?;
    let net = lab_network(inv)?;
    fs::create_dir_all(&plan.state_root).with_context(|| format!("cannot create {}", plan.state_root.display()))?;
    let _lock = lock(&plan.lock_file())?;
    // Before the slow steps, so that a clash with another lab or host network fails at once.
    check_bridge_available(&plan, &net)?;

    fs::create_dir_all(&plan.dir).with_context(|| format!("cannot create {}", plan.dir.display()))?;
    let lab_pub = ensure_lab_key(&plan)?;
    let cache = if plan.nodes.iter().any(|n| !is_mount_point(&n.rootfs())) {
        Some(ensure_cache_rootfs(&opts.cache_dir)?)
    } else {
        None
    };
    let hosts = hosts_file(inv);
    parallel(&plan.nodes, |node| ensure_node_rootfs(cache.as_deref(), node, &hosts, &lab_pub))?;
    write_known_hosts(&plan)?;

    ensure_bridge(&plan, &net)?;
    for node in &plan.nodes {
        ensure_node_network(&plan, &net, node)?;
    }

    let deadline = Instant::now() + BOOT_TIMEOUT;
    for node in &plan.nodes {
        match node_pid(node) {
            // Rewritten in case it was found by scanning rather than through the pid file.
            Some(pid) => write_file(&node.pid_file(), format!("{pid}\n"))?,
            None => {
                // check_bridge_available has made sure that the namespace is this lab's.
                kill_leftovers(&plan, node, true)?;
                start_node(&plan, node)?;
            }
        }
    }
    let nodes = parallel(&plan.nodes, |node| wait_ready(&plan, node, deadline))?;
    Ok(Lab { ssh_key: plan.key(), known_hosts: plan.known_hosts(), nodes })
}

/// Reports every node of the inventory without changing anything.
pub fn status(inv: &Inventory, opts: &LabOptions) -> Result<Lab> {
    let plan = Plan::new(inv, opts)?;
    let ours = bridge_owner(&plan.bridge).as_deref() == Some(plan.owner.as_str());
    let nodes = parallel(&plan.nodes, |node| Ok(probe(&plan, node, ours)))?;
    Ok(Lab { ssh_key: plan.key(), known_hosts: plan.known_hosts(), nodes })
}

/// Stops every machine of the lab and removes its network and state (not the root fs cache).
/// Idempotent; also cleans up after a crashed or half-finished `up`.
pub fn down(inv: &Inventory, opts: &LabOptions) -> Result<()> {
    let plan = Plan::new(inv, opts)?;
    fs::create_dir_all(&plan.state_root).with_context(|| format!("cannot create {}", plan.state_root.display()))?;
    let lock_file = plan.lock_file();
    let _lock = lock(&lock_file)?;

    // Nodes dropped from the inventory since `up` still have a directory, and must go too.
    let mut nodes = plan.nodes.clone();
    if let Ok(entries) = fs::read_dir(&plan.dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() && !nodes.iter().any(|n| n.name == name) {
                nodes.push(plan.node(&name, IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
            }
        }
    }

    let mut pids: BTreeSet<u32> =
        nspawn_processes().into_iter().filter(|(_, root)| root.starts_with(&plan.dir)).map(|(p, _)| p).collect();
    pids.extend(nodes.iter().filter_map(node_pid));
    stop_processes(&pids.into_iter().collect::<Vec<_>>())?;

    // Network names are the cluster's, not the lab directory's: with another lab of the same
    // cluster name up, its namespaces (and the processes in them) must be left alone.
    let foreign = link_exists(&plan.bridge) && bridge_owner(&plan.bridge).as_deref() != Some(plan.owner.as_str());
    for node in &nodes {
        kill_leftovers(&plan, node, !foreign)?;
    }
    if foreign {
        let other = bridge_owner(&plan.bridge).unwrap_or_default();
        eprintln!("lab: bridge {} belongs to another lab ({other:?}); leaving the network alone", plan.bridge);
    } else {
        teardown_network(&plan, &nodes)?;
    }
    for node in &nodes {
        for cg in node_cgroups(&plan, node) {
            remove_cgroup(&cg)?;
        }
    }
    for root in systemd_cgroup_roots() {
        let _ = fs::remove_dir(root.join(plan.cgroup()));
        let _ = fs::remove_dir(root.join("hardway-lab"));
    }
    remove_tree(&plan.dir)?;
    let _ = fs::remove_file(&lock_file);
    // Only if empty: other clusters' labs may live there too.
    let _ = fs::remove_dir(&plan.state_root);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Names and paths.

#[derive(Debug, Clone)]
struct Plan {
    cluster: String,
    state_root: PathBuf,
    dir: PathBuf,
    bridge: String,
    /// The bridge's alias: proves that a bridge of this name was created by this lab.
    owner: String,
    nodes: Vec<NodePlan>,
}

#[derive(Debug, Clone)]
struct NodePlan {
    name: String,
    address: IpAddr,
    netns: String,
    veth: String,
    dir: PathBuf,
}

impl NodePlan {
    fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
    fn pid_file(&self) -> PathBuf {
        self.dir.join("pid")
    }
    fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.netns)
    }
}

impl Plan {
    fn new(inv: &Inventory, opts: &LabOptions) -> Result<Plan> {
        let cluster = inv.cluster.name.clone();
        let state_root = resolve(&opts.state_dir)?;
        let dir = state_root.join(&cluster);
        let mut plan = Plan {
            bridge: bridge_name(&cluster),
            owner: format!("hardway-lab {}", dir.display()),
            cluster,
            state_root,
            dir,
            nodes: Vec::new(),
        };
        plan.nodes = inv.nodes.iter().map(|n| plan.node(&n.name, n.address)).collect();
        Ok(plan)
    }

    fn node(&self, name: &str, address: IpAddr) -> NodePlan {
        NodePlan {
            name: name.to_string(),
            address,
            netns: format!("hw-{}-{name}", self.cluster),
            veth: veth_name(&self.cluster, name),
            dir: self.dir.join(name),
        }
    }

    fn key(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }
    fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }
    /// Relative to a hierarchy's root; it names the lab directory, unlike the network names, so
    /// that a lab never touches the processes of another lab of the same cluster name.
    fn cgroup(&self) -> PathBuf {
        Path::new("hardway-lab").join(format!("{}-{:08x}", self.cluster, fnv1a(&self.dir.display().to_string()) & 0xffff_ffff))
    }

    /// Outside `dir`, so that `down` can hold it while deleting `dir`.
    fn lock_file(&self) -> PathBuf {
        self.state_root.join(format!(".{}.lock", self.cluster))
    }
}

/// FNV-1a: stable across Rust releases (unlike `DefaultHasher`), which matters because `down`
/// must find the names an older binary's `up` created.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Interface names are limited to 15 bytes (IFNAMSIZ - 1).
fn bridge_name(cluster: &str) -> String {
    let name = format!("hw-{cluster}");
    if name.len() <= 15 {
        name
    } else {
        // A hash keeps two long names with the same prefix apart.
        format!("hw-{}-{:04x}", &cluster[..7], fnv1a(cluster) & 0xffff)
    }
}

fn veth_name(cluster: &str, node: &str) -> String {
    format!("hwv{:012x}", fnv1a(&format!("{cluster}/{node}")) & 0xffff_ffff_ffff)
}

struct Net {
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
}

/// The one /24 every node sits on, and the bridge's address in it.
fn lab_network(inv: &Inventory) -> Result<Net> {
    let mut addrs = Vec::new();
    for n in &inv.nodes {
        match n.address {
            IpAddr::V4(a) => addrs.push((n.name.as_str(), a)),
            IpAddr::V6(a) => bail!("node {}: the lab supports IPv4 node addresses only, {a} is IPv6", n.name),
        }
    }
    let (first_name, first) = *addrs.first().ok_or_else(|| anyhow!("the inventory has no nodes"))?;
    let subnet = Ipv4Net::new(first, 24).expect("24 is a valid prefix").trunc();
    for (name, a) in &addrs {
        if !subnet.contains(a) {
            bail!("the lab puts all nodes on one /24 bridge, but node {name} ({a}) is outside {subnet} (where {first_name} is)");
        }
        if *a == subnet.network() || *a == subnet.broadcast() {
            bail!("node {name}: {a} is the network or broadcast address of {subnet}");
        }
    }
    let mut used: BTreeSet<Ipv4Addr> = addrs.iter().map(|(_, a)| *a).collect();
    if let Some(IpAddr::V4(lb)) = inv.load_balancer.as_ref().map(|l| l.address) {
        used.insert(lb);
    }
    let octets = subnet.network().octets();
    let gateway = [1u8, 254]
        .into_iter()
        .map(|last| Ipv4Addr::new(octets[0], octets[1], octets[2], last))
        .find(|g| !used.contains(g))
        .ok_or_else(|| anyhow!("the bridge needs .1 or .254 of {subnet}, but nodes use both"))?;
    Ok(Net { subnet, gateway })
}

// ---------------------------------------------------------------------------------------------
// Running tools.

fn search_path() -> OsString {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    for d in SYSTEM_PATH {
        if !dirs.iter().any(|x| x == Path::new(d)) {
            dirs.push(PathBuf::from(d));
        }
    }
    std::env::join_paths(dirs).unwrap_or_else(|_| SYSTEM_PATH.join(":").into())
}

fn find_tool(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&search_path()).map(|d| d.join(name)).find(|p| {
        fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

fn command(name: &str) -> Command {
    let mut c = Command::new(find_tool(name).unwrap_or_else(|| PathBuf::from(name)));
    c.env("PATH", search_path()).stdin(Stdio::null());
    c
}

fn describe(c: &Command) -> String {
    std::iter::once(c.get_program()).chain(c.get_args()).map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
}

fn output(c: &mut Command) -> Result<Output> {
    c.output().with_context(|| format!("cannot run {}", describe(c)))
}

/// Runs to completion; stdout on success, an error quoting the command and its stderr otherwise.
fn run(c: &mut Command) -> Result<String> {
    let out = output(c)?;
    if !out.status.success() {
        bail!("`{}` failed ({}): {}", describe(c), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Like `output`, but kills the command at `deadline` and returns `None`: ssh can hang on a
/// half-booted machine, and nothing here may wait without a bound.
fn output_until(c: &mut Command, deadline: Instant) -> Result<Option<Output>> {
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", describe(c)))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    Ok(status.map(|status| Output { status, stdout, stderr }))
}

fn ssh_command(key: &Path, known_hosts: &Path, address: IpAddr) -> Command {
    let mut c = command("ssh");
    // -F /dev/null: the operator's ~/.ssh/config (ControlMaster, User, ...) must not leak in.
    c.args(["-F", "/dev/null", "-i"])
        .arg(key)
        .args(["-o", "IdentitiesOnly=yes", "-o"])
        .arg(format!("UserKnownHostsFile=\"{}\"", known_hosts.display()))
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg(format!("root@{address}"));
    c
}

/// Runs `f` on every node in its own thread; results in node order, or the first error.
fn parallel<T: Send>(nodes: &[NodePlan], f: impl Fn(&NodePlan) -> Result<T> + Sync) -> Result<Vec<T>> {
    thread::scope(|s| {
        let handles: Vec<_> = nodes.iter().map(|n| s.spawn(|| f(n))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("a lab worker thread panicked")))).collect()
    })
}

fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn lock(path: &Path) -> Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    f.lock().with_context(|| format!("cannot lock {}", path.display()))?;
    Ok(f)
}

/// Writes a file, replacing rather than following a symlink: paths inside a node's root fs
/// must never resolve to the host's files.
fn write_file(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        fs::remove_file(path)?;
    }
    fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))
}

fn write_file_mode(path: &Path, contents: impl AsRef<[u8]>, mode: u32) -> Result<()> {
    write_file(path, contents)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).with_context(|| format!("cannot chmod {}", path.display()))
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// An absolute path without symlinks (as far as it exists), because paths are compared with
/// /proc/*/cmdline and /proc/self/mountinfo, which show them resolved.
fn resolve(p: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(p).with_context(|| format!("bad path {}", p.display()))?;
    for base in abs.ancestors() {
        if let Ok(real) = fs::canonicalize(base) {
            return Ok(real.join(abs.strip_prefix(base).expect("an ancestor is a prefix")));
        }
    }
    Ok(abs)
}

/// (mount point, file system type, super options) of every mount.
fn mounts() -> Vec<(PathBuf, String, String)> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let (before, after) = l.split_once(" - ")?;
            let mount_point = PathBuf::from(unescape_mountinfo(before.split(' ').nth(4)?));
            let mut after = after.split(' ');
            let fs_type = after.next()?.to_string();
            let options = unescape_mountinfo(after.nth(1).unwrap_or(""));
            Some((mount_point, fs_type, options))
        })
        .collect()
}

fn is_mount_point(p: &Path) -> bool {
    mounts().iter().any(|(m, _, _)| m == p)
}

/// Mount points of the overlays that have `lower` as their lower layer.
fn overlays_on(lower: &Path) -> Vec<PathBuf> {
    let want = format!("lowerdir={}", lower.display());
    mounts().into_iter().filter(|(_, t, o)| t == "overlay" && o.split(',').any(|x| x == want)).map(|(m, _, _)| m).collect()
}

/// Mount points at or below `dir`, deepest first.
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let mut mounts: Vec<PathBuf> = mounts().into_iter().map(|(m, _, _)| m).filter(|m| m.starts_with(dir)).collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    mounts.dedup();
    mounts
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal escapes.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `rm -rf` that first unmounts what an interrupted debootstrap may have left mounted inside
/// (its proc and sys), and that never crosses into another file system.
fn remove_tree(dir: &Path) -> Result<()> {
    if fs::symlink_metadata(dir).is_err() {
        return Ok(());
    }
    for m in mounts_below(dir) {
        run(command("umount").arg("-l").arg(&m))?;
    }
    run(command("rm").args(["-rf", "--one-file-system", "--"]).arg(dir))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The root fs cache.

fn recipe() -> String {
    format!("hardway lab root fs, revision {ROOTFS_REVISION}\nsuite: {SUITE}\npackages: {}\n", PACKAGES.join(","))
}

/// The cached root fs, built first if missing or from an older recipe. Built in a temporary
/// directory and renamed into place, so a half-built root fs is never used.
fn ensure_cache_rootfs(cache_dir: &Path) -> Result<PathBuf> {
    let cache_dir = resolve(cache_dir)?;
    fs::create_dir_all(&cache_dir).with_context(|| format!("cannot create {}", cache_dir.display()))?;
    // Two labs coming up at once would otherwise debootstrap into the same temporary directory.
    let _lock = lock(&cache_dir.join(".lock"))?;
    let rootfs = cache_dir.join(format!("{SUITE}-rootfs"));
    if fs::read_to_string(rootfs.join(ROOTFS_MARKER)).is_ok_and(|r| r == recipe()) {
        return Ok(rootfs);
    }
    let tmp = cache_dir.join(format!("{SUITE}-rootfs.tmp"));
    remove_tree(&tmp)?;
    let mirror = debian_mirror()?;
    let log_path = cache_dir.join(format!("{SUITE}-rootfs.log"));
    let log = File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
    eprintln!("lab: building the {SUITE} root fs from {mirror} into {} (once; about a minute)", rootfs.display());
    let mut c = command("debootstrap");
    c.arg("--variant=minbase")
        .arg(format!("--include={}", PACKAGES.join(",")))
        .arg(SUITE)
        .arg(&tmp)
        .arg(&mirror)
        .stdout(log.try_clone()?)
        .stderr(log);
    let status = c.status().with_context(|| format!("cannot run {}", describe(&c)))?;
    if !status.success() {
        let inner = tmp.join("debootstrap/debootstrap.log");
        bail!(
            "debootstrap of {SUITE} from {mirror} failed ({status}); end of {}:\n{}\nend of {}:\n{}",
            log_path.display(),
            tail(&log_path, 15),
            inner.display(),
            tail(&inner, 15)
        );
    }
    customize_rootfs(&tmp)?;
    write_file(&tmp.join(ROOTFS_MARKER), recipe())?;
    if fs::symlink_metadata(&rootfs).is_ok() {
        let users = overlays_on(&rootfs);
        if !users.is_empty() {
            bail!(
                "the root fs cache {} is out of date, but running nodes are built on it ({}): take their labs down first",
                rootfs.display(),
                users.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            );
        }
        let old = cache_dir.join(format!("{SUITE}-rootfs.old"));
        remove_tree(&old)?;
        fs::rename(&rootfs, &old)?;
        remove_tree(&old)?;
    }
    fs::rename(&tmp, &rootfs).with_context(|| format!("cannot rename {} to {}", tmp.display(), rootfs.display()))?;
    Ok(rootfs)
}

const SSHD_DROP_IN: &str = "\
# Written by `hardway lab`: root logs in with the lab key only, and each node has exactly one
# host key of its own, generated when the node is created.
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
HostKey /etc/ssh/ssh_host_ed25519_key
";

/// What every node has in common; per-node identity (hostname, machine-id, host key) is added
/// to each node's overlay by `ensure_node_rootfs`.
fn customize_rootfs(root: &Path) -> Result<()> {
    run(command("chroot").arg(root).args(["systemctl", "enable", "ssh.service"]))?;
    // Disabled, not masked: a mask is a symlink to /dev/null at the very path where the deploy
    // writes its own etcd.service and haproxy.service.
    run(command("chroot").arg(root).args(["systemctl", "disable", "etcd.service", "haproxy.service"]))?;

    for e in fs::read_dir(root.join("etc/ssh"))?.flatten() {
        if e.file_name().to_string_lossy().starts_with("ssh_host_") {
            fs::remove_file(e.path())?;
        }
    }
    write_file(&root.join("etc/ssh/sshd_config.d/hardway-lab.conf"), SSHD_DROP_IN)?;

    // Each node gets its own id on its overlay; dbus must read that one, not this empty one.
    write_file(&root.join("etc/machine-id"), "")?;
    let dbus_id = root.join("var/lib/dbus/machine-id");
    if fs::symlink_metadata(&dbus_id).is_ok() {
        fs::remove_file(&dbus_id)?;
    }
    if root.join("var/lib/dbus").is_dir() {
        std::os::unix::fs::symlink("/etc/machine-id", &dbus_id)?;
    }
    Ok(())
}

/// The mirror the host's own apt uses for the suite, from deb822 `.sources` files first, then
/// one-line `.list` files.
fn debian_mirror() -> Result<String> {
    let mut files: Vec<PathBuf> = fs::read_dir("/etc/apt/sources.list.d")
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for f in files.iter().filter(|f| f.extension().is_some_and(|e| e == "sources")) {
        if let Some(uri) = fs::read_to_string(f).ok().and_then(|t| mirror_from_deb822(&t, SUITE)) {
            return Ok(uri);
        }
    }
    let lists = std::iter::once(PathBuf::from("/etc/apt/sources.list"))
        .chain(files.iter().filter(|f| f.extension().is_some_and(|e| e == "list")).cloned());
    for f in lists {
        if let Some(uri) = fs::read_to_string(&f).ok().and_then(|t| mirror_from_one_line(&t, SUITE)) {
            return Ok(uri);
        }
    }
    bail!(
        "no `deb` source for suite {SUITE} in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list: \
         the lab's root fs is debootstrapped from the same mirror as the host's apt"
    )
}

fn mirror_from_deb822(text: &str, suite: &str) -> Option<String> {
    let mut stanzas: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for line in text.lines() {
        if line.trim().is_empty() {
            stanzas.push(Vec::new());
        } else if line.starts_with('#') {
            continue;
        } else if line.starts_with([' ', '\t']) {
            let stanza = stanzas.last_mut().expect("never empty");
            if let Some((_, value)) = stanza.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            stanzas.last_mut().expect("never empty").push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    stanzas.iter().find_map(|s| {
        let get = |k: &str| s.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str()).unwrap_or("");
        let enabled = !get("enabled").eq_ignore_ascii_case("no");
        let deb = get("types").split_whitespace().any(|t| t == "deb");
        let has_suite = get("suites").split_whitespace().any(|t| t == suite);
        (enabled && deb && has_suite).then(|| get("uris").split_whitespace().next().map(str::to_string)).flatten()
    })
}

fn mirror_from_one_line(text: &str, suite: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or("");
        let mut tokens = line.split_whitespace();
        if tokens.next() != Some("deb") {
            return None;
        }
        let mut uri = tokens.next()?;
        if uri.starts_with('[') {
            while !uri.ends_with(']') {
                uri = tokens.next()?;
            }
            uri = tokens.next()?;
        }
        (tokens.next()? == suite).then(|| uri.to_string())
    })
}

// ---------------------------------------------------------------------------------------------
// Per-node files.

/// The lab key pair, created once per lab; returns the public key line.
fn ensure_lab_key(plan: &Plan) -> Result<String> {
    let key = plan.key();
    let public = plan.dir.join("id_ed25519.pub");
    if !key.is_file() || !public.is_file() {
        let _ = fs::remove_file(&key);
        let _ = fs::remove_file(&public);
        run(command("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C"])
            .arg(format!("hardway-lab-{}", plan.cluster))
            .arg("-f")
            .arg(&key))?;
    }
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600))?;
    Ok(fs::read_to_string(&public)?.trim().to_string())
}

fn hosts_file(inv: &Inventory) -> String {
    let mut s = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\n# The lab's nodes.\n");
    for n in &inv.nodes {
        match inv.fqdn(n) {
            Some(fqdn) => s.push_str(&format!("{}\t{fqdn} {}\n", n.address, n.name)),
            None => s.push_str(&format!("{}\t{}\n", n.address, n.name)),
        }
    }
    s
}

fn new_machine_id() -> Result<String> {
    let uuid = fs::read_to_string("/proc/sys/kernel/random/uuid").context("cannot read a random uuid from /proc")?;
    Ok(uuid.trim().replace('-', ""))
}

/// The node's root fs is an overlay: the cache below, read-only, and the node's own changes in
/// `<node>/upper`. Mounting takes milliseconds where a copy took seconds per node, and the upper
/// layer keeps the node's identity and data across `up`s, as a real machine's disk would.
fn ensure_node_rootfs(cache: Option<&Path>, node: &NodePlan, hosts: &str, lab_pub: &str) -> Result<()> {
    let root = node.rootfs();
    if !is_mount_point(&root) {
        let cache = cache.ok_or_else(|| anyhow!("{}: no root fs cache to mount", node.name))?;
        let (upper, work) = (node.dir.join("upper"), node.dir.join("work"));
        for d in [&upper, &work, &root] {
            fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        let dirs = [cache, upper.as_path(), work.as_path()].map(|p| p.display().to_string());
        // The option string has no quoting: these characters would split or misparse it.
        if let Some(bad) = dirs.iter().find(|d| d.contains([',', ':', '\\']) || d.contains(char::is_whitespace)) {
            bail!("{bad}: the lab cannot mount an overlay on a path with ',', ':', '\\' or white space");
        }
        let [lower, upper, work] = dirs;
        run(command("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!("lowerdir={lower},upperdir={upper},workdir={work}"))
            .arg(&root))?;
    }
    // The cache's is empty; a node's is written once and then kept.
    let machine_id = root.join("etc/machine-id");
    if fs::read_to_string(&machine_id).map(|s| s.trim().is_empty()).unwrap_or(true) {
        write_file(&machine_id, format!("{}\n", new_machine_id()?))?;
    }
    write_file(&root.join("etc/hostname"), format!("{}\n", node.name))?;
    write_file(&root.join("etc/hosts"), hosts)?;
    let ssh_dir = root.join("root/.ssh");
    fs::create_dir_all(&ssh_dir)?;
    fs::set_permissions(&ssh_dir, fs::Permissions::from_mode(0o700))?;
    write_file_mode(&ssh_dir.join("authorized_keys"), format!("{lab_pub}\n"), 0o600)?;
    let host_key = root.join("etc/ssh/ssh_host_ed25519_key");
    if !host_key.is_file() || !host_key.with_extension("pub").is_file() {
        let _ = fs::remove_file(&host_key);
        let _ = fs::remove_file(host_key.with_extension("pub"));
        run(command("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C"])
            .arg(format!("root@{}", node.name))
            .arg("-f")
            .arg(&host_key))?;
    }
    Ok(())
}

fn write_known_hosts(plan: &Plan) -> Result<()> {
    let mut text = String::new();
    for node in &plan.nodes {
        let path = node.rootfs().join("etc/ssh/ssh_host_ed25519_key.pub");
        let public = fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut fields = public.split_whitespace();
        let (Some(kind), Some(key)) = (fields.next(), fields.next()) else {
            bail!("{} is not an ssh public key", path.display());
        };
        text.push_str(&format!("{} {kind} {key}\n", node.address));
    }
    let tmp = plan.dir.join("known_hosts.tmp");
    write_file(&tmp, text)?;
    fs::rename(&tmp, plan.known_hosts())?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Network.

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn bridge_owner(bridge: &str) -> Option<String> {
    fs::read_to_string(Path::new("/sys/class/net").join(bridge).join("ifalias")).ok().map(|s| s.trim().to_string())
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Refuses a bridge of this name that some other lab (or anyone else) created, and a subnet
/// the host already uses elsewhere: both would mean routing someone else's traffic into the lab.
fn check_bridge_available(plan: &Plan, net: &Net) -> Result<()> {
    let sys = Path::new("/sys/class/net").join(&plan.bridge);
    if sys.exists() {
        if !sys.join("bridge").is_dir() {
            bail!("network interface {} exists and is not a bridge; the lab of cluster {:?} needs that name", plan.bridge, plan.cluster);
        }
        let owner = bridge_owner(&plan.bridge).unwrap_or_default();
        if owner != plan.owner {
            bail!(
                "bridge {} is not this lab's (its alias is {owner:?}, this lab is {:?}): \
                 take the other lab down first, or use another cluster name",
                plan.bridge,
                plan.owner
            );
        }
    }
    for line in run(command("ip").args(["-o", "-4", "addr", "show"]))?.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        if let (Some(dev), Some(Ok(a))) = (t.get(1), t.get(3).map(|a| a.parse::<Ipv4Net>()))
            && *dev != plan.bridge
            && overlaps(a.trunc(), net.subnet)
        {
            bail!("{} is already in use on this host: {dev} has address {a}; the lab needs that /24 to itself", net.subnet);
        }
    }
    for line in run(command("ip").args(["-o", "-4", "route", "show"]))?.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        let Some(dest) = t.iter().find_map(|w| w.parse::<Ipv4Net>().ok().or_else(|| w.parse::<Ipv4Addr>().ok().map(Ipv4Net::from))) else {
            continue;
        };
        let dev = t.iter().position(|w| *w == "dev").and_then(|i| t.get(i + 1)).copied().unwrap_or("");
        if dev != plan.bridge && overlaps(dest, net.subnet) {
            bail!("{} is already routed on this host ({line}); the lab needs that /24 to itself", net.subnet);
        }
    }
    Ok(())
}

fn ensure_bridge(plan: &Plan, net: &Net) -> Result<()> {
    if !link_exists(&plan.bridge) {
        run(command("ip").args(["link", "add", &plan.bridge, "type", "bridge"]))?;
        run(command("ip").args(["link", "set", "dev", &plan.bridge, "alias", &plan.owner]))?;
    }
    let cidr = format!("{}/{}", net.gateway, net.subnet.prefix_len());
    let have = run(command("ip").args(["-o", "-4", "addr", "show", "dev", &plan.bridge]))?;
    if !have.split_whitespace().any(|w| w == cidr) {
        run(command("ip").args(["addr", "add", &cidr, "dev", &plan.bridge]))?;
    }
    run(command("ip").args(["link", "set", "dev", &plan.bridge, "up"]))?;
    Ok(())
}

fn ensure_node_network(plan: &Plan, net: &Net, node: &NodePlan) -> Result<()> {
    let ns = node.netns.as_str();
    if !node.netns_path().exists() {
        run(command("ip").args(["netns", "add", ns]))?;
    }
    let peer_ok = output(command("ip").args(["-n", ns, "link", "show", "dev", "eth0"]))?.status.success();
    if !(peer_ok && link_exists(&node.veth)) {
        // Half a pair (the namespace recreated, or a leftover eth0) cannot be repaired; redo both.
        if link_exists(&node.veth) {
            run(command("ip").args(["link", "del", &node.veth]))?;
        }
        let _ = output(command("ip").args(["-n", ns, "link", "del", "eth0"]));
        run(command("ip").args(["link", "add", &node.veth, "type", "veth", "peer", "name", "eth0", "netns", ns]))?;
    }
    run(command("ip").args(["link", "set", "dev", &node.veth, "master", &plan.bridge, "up"]))?;
    let cidr = format!("{}/{}", node.address, net.subnet.prefix_len());
    let have = run(command("ip").args(["-n", ns, "-o", "-4", "addr", "show", "dev", "eth0"]))?;
    if !have.split_whitespace().any(|w| w == cidr) {
        run(command("ip").args(["-n", ns, "addr", "add", &cidr, "dev", "eth0"]))?;
    }
    run(command("ip").args(["-n", ns, "link", "set", "dev", "eth0", "up"]))?;
    run(command("ip").args(["-n", ns, "link", "set", "dev", "lo", "up"]))?;
    run(command("ip").args(["-n", ns, "route", "replace", "default", "via", &net.gateway.to_string(), "dev", "eth0"]))?;
    Ok(())
}

fn teardown_network(plan: &Plan, nodes: &[NodePlan]) -> Result<()> {
    let mut links: Vec<String> = Vec::new();
    for node in nodes {
        if link_exists(&node.veth) {
            run(command("ip").args(["link", "del", &node.veth]))?;
        }
        links.push(node.veth.clone());
        if node.netns_path().exists() {
            // A namespace outlives its file while any process is inside, and keeps its veth.
            let pids = run(command("ip").args(["netns", "pids", &node.netns]))?;
            let pids: Vec<u32> = pids.split_whitespace().filter_map(|p| p.parse().ok()).collect();
            signal(&pids, "KILL");
            if !wait_gone(&pids, Instant::now() + KILL_TIMEOUT).is_empty() {
                bail!("processes {pids:?} in network namespace {} survive SIGKILL", node.netns);
            }
            run(command("ip").args(["netns", "del", &node.netns]))?;
        }
    }
    if link_exists(&plan.bridge) {
        // Ports the inventory no longer names are still this lab's: the bridge is.
        if let Ok(ports) = fs::read_dir(Path::new("/sys/class/net").join(&plan.bridge).join("brif")) {
            for p in ports.flatten() {
                let name = p.file_name().to_string_lossy().into_owned();
                if link_exists(&name) {
                    let _ = output(command("ip").args(["link", "del", &name]));
                }
                links.push(name);
            }
        }
        run(command("ip").args(["link", "del", &plan.bridge]))?;
    }
    links.push(plan.bridge.clone());
    // Namespace teardown happens asynchronously in the kernel.
    let deadline = Instant::now() + KILL_TIMEOUT;
    while links.iter().any(|l| link_exists(l)) {
        if Instant::now() >= deadline {
            bail!("network interfaces still present after teardown: {:?}", links.iter().filter(|l| link_exists(l)).collect::<Vec<_>>());
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Machines.

/// Alive and not a zombie (a zombie keeps its /proc entry until its parent reaps it).
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

/// The `-D` directory of a systemd-nspawn process.
fn nspawn_root(pid: u32) -> Option<PathBuf> {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    if Path::new(args.first()?).file_name()? != "systemd-nspawn" {
        return None;
    }
    args.iter().enumerate().find_map(|(i, a)| match a.as_str() {
        "-D" | "--directory" => args.get(i + 1).map(PathBuf::from),
        _ => a.strip_prefix("--directory=").map(PathBuf::from),
    })
}

/// Every systemd-nspawn on the host with its root directory.
fn nspawn_processes() -> Vec<(u32, PathBuf)> {
    let Ok(proc_dir) = fs::read_dir("/proc") else { return Vec::new() };
    proc_dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, nspawn_root(pid)?)))
        .filter(|(pid, _)| alive(*pid))
        .collect()
}

/// The node's running systemd-nspawn: the one in the pid file, checked against /proc (pids get
/// reused), else one found by scanning (a pid file lost between spawn and write).
fn node_pid(node: &NodePlan) -> Option<u32> {
    let root = node.rootfs();
    let recorded = fs::read_to_string(node.pid_file()).ok().and_then(|s| s.trim().parse::<u32>().ok());
    if let Some(pid) = recorded
        && alive(pid)
        && nspawn_root(pid).as_deref() == Some(root.as_path())
    {
        return Some(pid);
    }
    let found: Vec<u32> = nspawn_processes().into_iter().filter(|(_, r)| *r == root).map(|(p, _)| p).collect();
    // While starting, nspawn briefly has children with its own command line; want the parent.
    found.iter().copied().find(|pid| {
        let ppid = fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<u32>().ok()));
        !ppid.is_some_and(|pp| found.contains(&pp))
    })
}

/// The cgroup hierarchies systemd tracks processes in: every cgroup2 mount (the unified one of
/// a hybrid host included) and the v1 `name=systemd` one.
fn systemd_cgroup_roots() -> Vec<PathBuf> {
    mounts()
        .into_iter()
        .filter(|(_, t, o)| t == "cgroup2" || (t == "cgroup" && o.split(',').any(|x| x == "name=systemd")))
        .map(|(m, _, _)| m)
        .collect()
}

/// The node's own cgroup in each of those hierarchies. It must have one: with --keep-unit and
/// no systemd on the host, nspawn puts its `payload` cgroup under the caller's, so machines
/// started from one process would share it and their systemds would remove each other's unit
/// cgroups (units failing at random with status 219/CGROUP).
fn node_cgroups(plan: &Plan, node: &NodePlan) -> Vec<PathBuf> {
    systemd_cgroup_roots().into_iter().map(|r| r.join(plan.cgroup()).join(&node.name)).collect()
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
fn kill_leftovers(plan: &Plan, node: &NodePlan, netns: bool) -> Result<()> {
    let mut pids: BTreeSet<u32> = node_cgroups(plan, node).iter().flat_map(|cg| cgroup_pids(cg)).collect();
    if netns && node.netns_path().exists() {
        let out = run(command("ip").args(["netns", "pids", &node.netns]))?;
        pids.extend(out.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
    }
    let pids: Vec<u32> = pids.into_iter().collect();
    if pids.is_empty() {
        return Ok(());
    }
    signal(&pids, "KILL");
    let left = wait_gone(&pids, Instant::now() + KILL_TIMEOUT);
    if !left.is_empty() {
        bail!("{}: processes {left:?} left from an earlier machine survive SIGKILL", node.name);
    }
    Ok(())
}

/// Removes a cgroup and the ones its machine's systemd made below it, deepest first (cgroupfs
/// only allows rmdir, and only of empty cgroups).
fn remove_cgroup(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    for e in fs::read_dir(dir)?.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup(&e.path())?;
        }
    }
    fs::remove_dir(dir).with_context(|| format!("cannot remove cgroup {}", dir.display()))
}

/// Starts the node's machine in the background, in its own cgroups, and records its PID.
fn start_node(plan: &Plan, node: &NodePlan) -> Result<u32> {
    let nspawn = find_tool("systemd-nspawn").ok_or_else(|| anyhow!("systemd-nspawn not found: apt-get install systemd-container"))?;
    let cgroups = node_cgroups(plan, node);
    for cg in &cgroups {
        fs::create_dir_all(cg).with_context(|| format!("cannot create cgroup {}", cg.display()))?;
    }
    let cgroups: Vec<String> = cgroups.iter().map(|p| p.display().to_string()).collect();
    if cgroups.iter().any(|p| p.contains(char::is_whitespace)) {
        bail!("cgroup paths with white space are not supported: {cgroups:?}");
    }
    // Started through sh so that it is not our child: it outlives `hardway lab up`, and whoever
    // inherits it reaps it. setsid detaches it from our terminal and its signals. sh joins the
    // node's cgroups first so that nspawn starts inside them.
    let mut c = command("sh");
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
        .arg(format!("--network-namespace-path={}", node.netns_path().display()))
        .arg("--console=passive");
    let pid: u32 = run(&mut c)?.trim().parse().with_context(|| format!("{}: no PID from {}", node.name, describe(&c)))?;
    write_file(&node.pid_file(), format!("{pid}\n"))?;
    // `$!` is known before the background shell has exec'd setsid and then nspawn; until it
    // has, the PID does not look like the node's machine yet.
    let deadline = Instant::now() + Duration::from_secs(10);
    while nspawn_root(pid).as_deref() != Some(node.rootfs().as_path()) {
        if !alive(pid) {
            bail!(
                "{}: systemd-nspawn exited at once; end of {}:\n{}",
                node.name,
                node.console_log().display(),
                tail(&node.console_log(), 20)
            );
        }
        if Instant::now() >= deadline {
            bail!("{}: process {pid} did not become systemd-nspawn within 10 s", node.name);
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(pid)
}

fn tcp_open(address: IpAddr, port: u16, timeout: Duration) -> bool {
    TcpStream::connect_timeout(&SocketAddr::new(address, port), timeout).is_ok()
}

fn wait_ready(plan: &Plan, node: &NodePlan, deadline: Instant) -> Result<NodeStatus> {
    let mut last = String::from("TCP port 22 never answered");
    loop {
        let Some(pid) = node_pid(node) else {
            bail!(
                "{}: systemd-nspawn exited while booting; end of {}:\n{}",
                node.name,
                node.console_log().display(),
                tail(&node.console_log(), 20)
            );
        };
        if tcp_open(node.address, 22, Duration::from_millis(500)) {
            let mut ssh = ssh_command(&plan.key(), &plan.known_hosts(), node.address);
            ssh.args(["systemctl", "is-system-running", "--wait"]);
            match output_until(&mut ssh, deadline)? {
                None => last = "`systemctl is-system-running --wait` did not return".into(),
                Some(out) if out.status.code() == Some(255) => {
                    last = format!("ssh failed: {}", String::from_utf8_lossy(&out.stderr).trim())
                }
                Some(out) => {
                    let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
                    if state == "running" || state == "degraded" {
                        return Ok(NodeStatus {
                            name: node.name.clone(),
                            address: node.address,
                            running: true,
                            reachable: true,
                            system_state: Some(state),
                            pid: Some(pid),
                        });
                    }
                    bail!("{}: booted into state {state:?}; `systemctl --failed` on the node says why", node.name);
                }
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "{}: not ready after {} s: {last}; end of {}:\n{}",
                node.name,
                BOOT_TIMEOUT.as_secs(),
                node.console_log().display(),
                tail(&node.console_log(), 20)
            );
        }
        thread::sleep(POLL);
    }
}

fn probe(plan: &Plan, node: &NodePlan, bridge_is_ours: bool) -> NodeStatus {
    let pid = node_pid(node);
    // Only addresses this lab is known to own are ever contacted.
    let reachable = pid.is_some() && bridge_is_ours && tcp_open(node.address, 22, Duration::from_secs(1));
    let system_state = if reachable && plan.key().is_file() {
        let mut ssh = ssh_command(&plan.key(), &plan.known_hosts(), node.address);
        ssh.args(["systemctl", "is-system-running"]);
        match output_until(&mut ssh, Instant::now() + Duration::from_secs(15)) {
            Ok(Some(out)) if out.status.code() != Some(255) => Some(String::from_utf8_lossy(&out.stdout).trim().to_string()),
            _ => None,
        }
    } else {
        None
    };
    NodeStatus { name: node.name.clone(), address: node.address, running: pid.is_some(), reachable, system_state, pid }
}

fn signal(pids: &[u32], signal: &str) {
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
fn wait_gone(pids: &[u32], deadline: Instant) -> Vec<u32> {
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM (an orderly poweroff of the container), then SIGKILL after a deadline.
fn stop_processes(pids: &[u32]) -> Result<()> {
    signal(pids, "TERM");
    let left = wait_gone(pids, Instant::now() + STOP_TIMEOUT);
    if left.is_empty() {
        return Ok(());
    }
    eprintln!("lab: systemd-nspawn {left:?} still running {} s after SIGTERM; sending SIGKILL", STOP_TIMEOUT.as_secs());
    signal(&left, "KILL");
    let left = wait_gone(&left, Instant::now() + KILL_TIMEOUT);
    if !left.is_empty() {
        bail!("systemd-nspawn processes {left:?} survive SIGKILL");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_fit_ifnamsiz() {
        assert_eq!(bridge_name("lab"), "hw-lab");
        assert_eq!(bridge_name("twelve-chars"), "hw-twelve-chars");
        let long = bridge_name("a-rather-long-cluster-name");
        assert_eq!(long.len(), 15);
        assert_ne!(long, bridge_name("a-rather-long-cluster-other"));
        let v = veth_name("lab", "lab-m1");
        assert_eq!(v.len(), 15);
        assert_eq!(v, veth_name("lab", "lab-m1"));
        assert_ne!(v, veth_name("lab", "lab-m2"));
        assert_ne!(v, veth_name("lab2", "lab-m1"));
    }

    #[test]
    fn deb822_sources() {
        let text = "Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\nURIs: http://deb.debian.org/debian\n\
                    Suites: bookworm bookworm-updates\nComponents: main\n\n\
                    Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n";
        assert_eq!(mirror_from_deb822(text, "bookworm").as_deref(), Some("http://deb.debian.org/debian"));
        assert_eq!(mirror_from_deb822(text, "bookworm-security").as_deref(), Some("http://deb.debian.org/debian-security"));
        let disabled = "Types: deb\nURIs: http://a/debian\nSuites: bookworm\nEnabled: no\n\nTypes: deb-src deb\nURIs:\n http://b/debian\nSuites: bookworm\n";
        assert_eq!(mirror_from_deb822(disabled, "bookworm").as_deref(), Some("http://b/debian"));
        assert_eq!(mirror_from_deb822("Types: deb-src\nURIs: http://a\nSuites: bookworm\n", "bookworm"), None);
    }

    #[test]
    fn one_line_sources() {
        let text = "# deb http://old bookworm main\ndeb-src http://src bookworm main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://mirror/debian bookworm main contrib\n";
        assert_eq!(mirror_from_one_line(text, "bookworm").as_deref(), Some("http://mirror/debian"));
        assert_eq!(mirror_from_one_line("deb http://m/debian bookworm-updates main\n", "bookworm"), None);
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/a\040b\134c"), r"/a b\c");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
    }

    #[test]
    fn gateway_is_a_free_end_of_the_nodes_24() {
        let inv = crate::inventory::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("inventory/lab.toml")).unwrap();
        let net = lab_network(&inv).unwrap();
        assert_eq!(net.subnet.to_string(), "10.213.0.0/24");
        assert_eq!(net.gateway, Ipv4Addr::new(10, 213, 0, 1));
    }
}
