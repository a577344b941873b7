//! A local lab: one booted systemd "machine" per inventory node, on this host, so that the
//! deploy can be exercised end to end without VMs or a cloud account.
//!
//! Each node is a `systemd-nspawn --boot` container on its own overlay of a Debian root fs
//! (`lab.suite` in the inventory: trixie by default, or sid, or bookworm), in its
//! own cgroups, with its own network namespace plugged into a bridge. Workers also get what
//! containerd and runc need to run containers in them (`containers`). The host
//! reaches every node at its inventory address on port 22, as root with the lab's key, exactly
//! like a real machine — so the later stages need no lab-specific code path.
//!
//! With `lab.driver = "qemu"` each node is a QEMU VM instead ([`qemu`]): same root fs, bridge,
//! key and known_hosts, but its own kernel, disks and NIC (a tap on the bridge).
//!
//! Where things live:
//!
//! ```text
//! <cache_dir>/<suite>-rootfs           built once per suite by debootstrap, never booted nor written to
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
//!
//! The modules:
//!
//! | module | holds |
//! |---|---|
//! | this one | the lab's life cycle: [`preflight`], [`up`], [`status`], [`down`], [`cache_rootfs`], through the driver |
//! | `driver` | the [`driver::Driver`] trait the two drivers implement, and which driver made a lab (recorded in its directory) |
//! | [`nspawn`] | the nspawn driver: systemd-nspawn machines ([`nspawn::machine`]), their confinement ([`nspawn::confine`]), what workers need for containers |
//! | [`qemu`] | the qemu driver: the VM image and per-node disks, QEMU, the KVM probe, taps |
//! | `boot` | the boot wait and the probe over ssh, for either driver's machines |
//! | `layout` | every name and path above, and each node's kind, derived from the inventory and [`LabOptions`] |
//! | [`tools`] | finding and running host tools, the [`tools::REQUIRED_TOOLS`] table, ssh keys |
//! | `rootfs` | the debootstrap cache and its customisation, each node's overlay and identity |
//! | [`net`] | bridge, namespaces, veths, addresses, subnet conflicts, teardown |
//! | [`process`] | liveness, signals and deadlines for host processes |
//! | `files` | symlink-safe writes, locks, overlay mounts, the mount table, `rm -rf` |
//! | [`named`] | named labs beside the base one (the classroom's) |
//! | [`libvirt`] | libvirt domain and network XML of a qemu lab |
//!
//! [`net`], [`nspawn::machine`], [`process`] and [`tools`] are public building blocks: the fan-out bench
//! sets up its own hosts with them, on the lab's root fs.

mod boot;
mod driver;
mod error;
mod files;
mod layout;
pub mod libvirt;
pub mod limits;
pub mod named;
pub mod net;
pub mod nspawn;
pub mod process;
pub mod qemu;
mod rootfs;
pub mod tools;

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;

pub use error::{LabError, Problem, Result};

use crate::inventory::{Inventory, LabDriver, LabSoftware, LabSuite};
use driver::Driver;
use files::{create_dir_all, lock, remove_tree};
use layout::{CacheLayout, Layout, NodeLayout};

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
    /// Overrides the inventory's `lab.driver` for `up` (`hardway lab up --driver`).
    pub driver: Option<LabDriver>,
    /// The qemu driver's accelerator; by default KVM if a guest boots under it, else TCG.
    pub accel: Option<qemu::vm::Accel>,
    /// Memory and CPU limits of every machine (none by default).
    pub limits: limits::MachineLimits,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            cache_dir: "/var/cache/hardway/lab".into(),
            state_dir: "/run/hardway/lab".into(),
            driver: None,
            accel: None,
            limits: Default::default(),
        }
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
        tools::ssh_command(&self.ssh_key, &self.known_hosts, address)
    }
}

/// The cached Debian root fs of `suite` the lab's machines boot from, built with debootstrap
/// the first time (from the host's own apt mirror). Never written to afterwards, so other
/// tools (the fan-out bench, tests) may use it read-only as the lower layer of their own
/// machines.
pub fn cache_rootfs(opts: &LabOptions, suite: LabSuite, software: LabSoftware) -> Result<PathBuf> {
    rootfs::ensure_cache_rootfs(&CacheLayout::new(opts, suite, software)?)
}

/// Checks that this process can run a lab of `suite`: root, and every tool present. The error
/// lists every missing piece with the Debian package that provides it.
pub fn preflight(suite: LabSuite) -> Result<()> {
    let mut problems = Vec::new();
    match effective_uid() {
        Some(0) => {}
        Some(uid) => problems.push(Problem::NotRoot { uid }),
        None => problems.push(Problem::UnknownUid),
    }
    problems.extend(tools::missing_tools(tools::find_tool));
    if tools::find_tool("debootstrap").is_some()
        && !Path::new("/usr/share/debootstrap/scripts")
            .join(suite.as_str())
            .exists()
    {
        problems.push(Problem::UnknownSuite {
            suite: suite.as_str(),
        });
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(LabError::Preflight { problems })
    }
}

/// Brings up every node of the inventory and waits until each answers ssh with a finished boot.
///
/// Idempotent: a node that is already running is left alone, and only missing pieces (cache,
/// key, root fs, bridge, namespace, veth, address, route, machine) are created. On error what
/// was created stays in place; [`down`] removes it.
pub fn up(inv: &Inventory, opts: &LabOptions) -> Result<Lab> {
    let driver = opts.driver.unwrap_or(inv.lab.driver);
    if driver == LabDriver::Qemu && inv.lab.software == LabSoftware::Bare {
        // The VM image is built once per suite from the full root fs: a bare one would need
        // an image of its own.
        return Err(LabError::Inventory(format!(
            "{}: lab.software = \"bare\" is for the nspawn driver only (the qemu driver's image has Debian's packages)",
            inv.source.display()
        )));
    }
    preflight(inv.lab.suite)?;
    driver_of(driver).preflight(opts)?;
    let layout = Layout::new(inv, opts)?;
    let net = net::lab_network(inv)?;
    create_dir_all(&layout.state_root)?;
    let _lock = lock(&layout.lock_file())?;
    // Before the slow steps, so that a clash with another lab or host network fails at once.
    net::check_bridge_available(&layout, &net)?;

    create_dir_all(&layout.dir)?;
    driver::claim(&layout, driver)?;
    driver_of(driver).up(inv, opts, &layout, &net)
}

/// The driver of `kind`.
fn driver_of(kind: LabDriver) -> &'static dyn Driver {
    match kind {
        LabDriver::Nspawn => &nspawn::Nspawn,
        LabDriver::Qemu => &qemu::Qemu,
    }
}

/// Every driver, for `down`, which removes whatever any of them left.
const DRIVERS: [LabDriver; 2] = [LabDriver::Nspawn, LabDriver::Qemu];

/// Stops every machine of the lab, whichever driver made it.
fn stop_machines(layout: &Layout, nodes: &[NodeLayout]) -> Result<()> {
    DRIVERS
        .iter()
        .try_for_each(|d| driver_of(*d).stop(layout, nodes))
}

/// Makes room on this host for `machines` booted machines in all (see
/// [`limits::reserve_inotify`]), saying so when a limit had to be raised.
pub fn reserve_machines(machines: usize) -> Result<()> {
    if let Some((old, new)) = limits::reserve_inotify(machines)? {
        eprintln!(
            "lab: raised fs.inotify.max_user_instances from {old} to {new} for {machines} machines (each machine's systemd needs its own)"
        );
    }
    Ok(())
}

/// Reports every node of the inventory without changing anything.
pub fn status(inv: &Inventory, opts: &LabOptions) -> Result<Lab> {
    let layout = Layout::new(inv, opts)?;
    let ours = net::bridge_owner(&layout.bridge).as_deref() == Some(layout.owner.as_str());
    let driver = driver_of(driver::current(
        &layout,
        opts.driver.unwrap_or(inv.lab.driver),
    ));
    let nodes = parallel(&layout.nodes, |node| Ok(driver.probe(&layout, node, ours)))?;
    Ok(Lab {
        ssh_key: layout.key(),
        known_hosts: layout.known_hosts(),
        nodes,
    })
}

/// The memory each running machine of the lab uses now, by node name (none for a machine
/// that is not running or whose cgroups account no memory).
pub fn memory_usage(inv: &Inventory, opts: &LabOptions) -> Result<Vec<(String, Option<u64>)>> {
    let layout = Layout::new(inv, opts)?;
    let driver = driver_of(driver::current(&layout, inv.lab.driver));
    Ok(layout
        .nodes
        .iter()
        .map(|n| (n.name.clone(), driver.memory_usage(&layout, n)))
        .collect())
}

/// Stops every machine of the lab and removes its network and state (not the root fs cache).
/// Idempotent; also cleans up after a crashed or half-finished `up`.
pub fn down(inv: &Inventory, opts: &LabOptions) -> Result<()> {
    let layout = Layout::new(inv, opts)?;
    create_dir_all(&layout.state_root)?;
    let lock_file = layout.lock_file();
    let _lock = lock(&lock_file)?;

    // Nodes dropped from the inventory since `up` still have a directory, and must go too.
    let mut nodes = layout.nodes.clone();
    if let Ok(entries) = fs::read_dir(&layout.dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() && !nodes.iter().any(|n| n.name == name) {
                nodes.push(layout.node(&name, IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
            }
        }
    }

    stop_machines(&layout, &nodes)?;

    // Network names are the cluster's, not the lab directory's: with another lab of the same
    // cluster name up, its namespaces (and the processes in them) must be left alone.
    let owner = net::bridge_owner(&layout.bridge);
    let foreign =
        net::link_exists(&layout.bridge) && owner.as_deref() != Some(layout.owner.as_str());
    for d in DRIVERS {
        driver_of(d).release(&layout, &nodes, !foreign)?;
    }
    if foreign {
        let other = owner.unwrap_or_default();
        eprintln!(
            "lab: bridge {} belongs to another lab ({other:?}); leaving the network alone",
            layout.bridge
        );
    } else {
        net::teardown_network(&layout, &nodes)?;
    }
    remove_tree(&layout.dir)?;
    let _ = fs::remove_file(&lock_file);
    // Only if empty: other clusters' labs may live there too.
    let _ = fs::remove_dir(&layout.state_root);
    Ok(())
}

/// Runs `f` on every node in its own thread; results in node order, or the first error.
fn parallel<T: Send>(
    nodes: &[NodeLayout],
    f: impl Fn(&NodeLayout) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    thread::scope(|s| {
        let handles: Vec<_> = nodes.iter().map(|n| s.spawn(|| f(n))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Err(LabError::Panicked)))
            .collect()
    })
}

fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}
