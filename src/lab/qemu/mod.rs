//! The lab's qemu driver (`[lab] driver = "qemu"`): one QEMU virtual machine per inventory
//! node, where the nspawn driver makes a container. A VM has its own kernel (Debian's
//! `linux-image-amd64`), its own disks and a virtio NIC on the lab's bridge — what a KVM guest
//! made with virt-manager has, and what a container sharing the host's kernel lacks (its own
//! kernel modules, a real reboot, block devices).
//!
//! Everything around the machines is the nspawn lab's: the same cached Debian root fs (the VM
//! image is built from it, `image`), the same bridge and addresses, the same lab key and
//! known_hosts, the same boot wait over ssh. Per node:
//!
//! ```text
//! <state_dir>/<cluster>/<node>/disk.qcow2    copy-on-write overlay on <cache_dir>/<suite>-vm/disk.raw
//! <state_dir>/<cluster>/<node>/seed.img      host key, hostname, address, root's authorized_keys
//! <state_dir>/<cluster>/<node>/console.log   the serial console
//! <state_dir>/<cluster>/<node>/pid           QEMU's PID
//! tap hwt<hash> on bridge hw-<cluster>       the VM's NIC (`tap`)
//! ```
//!
//! Each VM's clock is set from this machine's once it has booted (`clock`): the lab has no NTP.
//!
//! KVM is used when a guest boots under it (probed once per `up`), else QEMU's software
//! emulation (TCG), which works everywhere but boots a node in about a minute instead of
//! seconds.

mod clock;
pub(crate) mod image;
mod tap;
pub mod vm;

use std::fs;
use std::time::{Duration, Instant};

use super::boot::{self, Kind};
use super::driver;
use super::driver::Driver;
use super::error::{LabError, Problem, Result, io_error};
use super::files::{create_dir_all, lock, resolve, write_file};
use super::layout::{Layout, NodeLayout, fnv1a};
use super::net::{self, Net};
use super::tools::{find_tool, known_hosts_line};
use super::{Lab, LabOptions, NodeStatus, cache_rootfs, parallel, rootfs};
use crate::inventory::{Inventory, LabDriver};
use image::VmImage;
use vm::{Accel, QEMU, VmSpec};

/// The tools the qemu driver runs besides the nspawn lab's (which still builds the root fs
/// and, with systemd-nspawn, installs the kernel into the image): (tool, Debian package).
pub const REQUIRED_TOOLS: &[(&str, &str)] = &[
    (QEMU, "qemu-system-x86"),
    ("qemu-img", "qemu-utils"),
    ("mkfs.ext4", "e2fsprogs"),
    ("tar", "tar"),
];

/// QEMU exits on SIGTERM at once; the margin is for a loaded host.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a node may take from QEMU's start to a finished boot. Under TCG a Debian guest
/// takes about a minute alone on a 2-core host, and several boot at once share the cores.
const fn boot_timeout(accel: Accel) -> Duration {
    match accel {
        Accel::Kvm => Duration::from_secs(180),
        Accel::Tcg => Duration::from_secs(900),
    }
}

/// A qemu lab's machines, for `lab status` (which waits for no boot).
pub(super) const KIND: Kind = Kind {
    pid_of: node_pid,
    process: QEMU,
    boot_timeout: boot_timeout(Accel::Tcg),
};

fn kind(accel: Accel) -> Kind {
    Kind {
        boot_timeout: boot_timeout(accel),
        ..KIND
    }
}

/// The node's running QEMU (the one on its disk).
fn node_pid(node: &NodeLayout) -> Option<u32> {
    vm::pid_on_disk(&node.pid_file(), &image::node_disk(node))
}

/// Checks that the qemu driver's tools are here (beside [`super::preflight`]'s); the error
/// names every missing one with its Debian package.
pub fn preflight() -> Result<()> {
    let problems: Vec<Problem> = REQUIRED_TOOLS
        .iter()
        .filter(|(t, _)| find_tool(t).is_none())
        .map(|&(tool, package)| Problem::MissingTool { tool, package })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(LabError::Preflight { problems })
    }
}

/// Where the VM image of this lab's suite lives.
pub(in crate::lab) fn vm_image(inv: &Inventory, opts: &LabOptions) -> Result<VmImage> {
    Ok(VmImage::new(
        &resolve(&opts.cache_dir)?,
        inv.lab.suite.as_str(),
    ))
}

/// Everything about a node's VM, from the inventory and the lab's layout.
pub(in crate::lab) fn vm_spec(
    inv: &Inventory,
    layout: &Layout,
    node: &NodeLayout,
    img: &VmImage,
) -> VmSpec {
    let size = inv.lab.vm(&node.name);
    VmSpec {
        node: node.name.clone(),
        name: format!("hw-{}-{}", layout.cluster, node.name),
        memory_mib: size.memory_mib,
        vcpus: size.vcpus,
        kernel: img.kernel(),
        initrd: img.initrd(),
        cmdline: vm::kernel_cmdline(&machine_id(layout, &node.name)),
        disk: image::node_disk(node),
        base_disk: img.disk(),
        seed: image::seed_disk(node),
        tap: tap::tap_name(&layout.cluster, &node.name),
        mac: tap::mac_address(&layout.cluster, &node.name),
        bridge: layout.bridge.clone(),
        console_log: node.console_log(),
    }
}

/// The node's machine-id, derived from the lab directory and the node's name: unique per node
/// and per lab, and the same for `up` and for the libvirt XML, which is rendered without
/// touching the lab.
fn machine_id(layout: &Layout, node: &str) -> String {
    let key = format!("{}/{node}", layout.dir.display());
    format!(
        "{:016x}{:016x}",
        fnv1a(&format!("machine-id a {key}")),
        fnv1a(&format!("machine-id b {key}"))
    )
}

/// Makes what the VMs boot from: the image and, for the nodes in `build`, their disks (not for
/// the others: a running VM's disk and image stay as they are); every node's seed and the lab's
/// known_hosts. Returns every node's VM.
fn prepare(
    inv: &Inventory,
    opts: &LabOptions,
    layout: &Layout,
    net: &Net,
    build: &[&NodeLayout],
) -> Result<Vec<VmSpec>> {
    let lab_pub = rootfs::ensure_lab_key(layout)?;
    let img = vm_image(inv, opts)?;
    let recipe = if build.is_empty() {
        None
    } else {
        Some(image::ensure_image(
            &img,
            &cache_rootfs(opts, inv.lab.suite, inv.lab.software)?,
        )?)
    };
    let hosts = rootfs::hosts_file(inv);
    let mut known_hosts = String::new();
    let mut specs = Vec::new();
    for node in &layout.nodes {
        create_dir_all(&node.dir)?;
        let seed = image::Seed {
            hosts: &hosts,
            authorized_key: &lab_pub,
            address: format!("{}/{}", node.address, net.subnet.prefix_len()),
            gateway: net.gateway.to_string(),
        };
        image::write_seed(node, &seed)?;
        known_hosts.push_str(&known_hosts_line(
            node.address,
            &node.dir.join("seed"),
            image::HOST_KEY_PUB.as_ref(),
        )?);
        specs.push(vm_spec(inv, layout, node, &img));
    }
    if let Some(recipe) = &recipe {
        build
            .iter()
            .try_for_each(|node| image::ensure_node_disk(node, &img, recipe))?;
    }
    let tmp = layout.dir.join("known_hosts.tmp");
    write_file(&tmp, known_hosts)?;
    fs::rename(&tmp, layout.known_hosts()).map_err(io_error("rename", &tmp))?;
    Ok(specs)
}

/// Brings up the lab's VMs ([`Driver::up`]). Idempotent: running VMs are left alone.
fn up(inv: &Inventory, opts: &LabOptions, layout: &Layout, net: &Net) -> Result<Lab> {
    let to_start: Vec<&NodeLayout> = layout
        .nodes
        .iter()
        .filter(|n| node_pid(n).is_none())
        .collect();
    let specs = prepare(inv, opts, layout, net, &to_start)?;
    net::ensure_lab_bridge(layout, net)?;
    for spec in &specs {
        tap::ensure_tap(&spec.tap, &spec.bridge)?;
    }
    let accel_file = layout.dir.join("accel");
    let accel = if to_start.is_empty() {
        // For the boot timeout only: the VMs are up already.
        if fs::read_to_string(&accel_file).is_ok_and(|a| a == Accel::Kvm.as_str()) {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    } else {
        let (accel, why) = match opts.accel {
            Some(accel) => (accel, "as asked".to_string()),
            None => vm::probe_accel(&vm_image(inv, opts)?.kernel())?,
        };
        eprintln!("lab: {why}: the VMs run with {}", accel.as_str());
        write_file(&accel_file, accel.as_str())?;
        for node in &to_start {
            let spec = specs
                .iter()
                .find(|s| s.node == node.name)
                .expect("a spec per node");
            vm::start(spec, accel, &node.pid_file())?;
        }
        accel
    };
    let kind = kind(accel);
    let deadline = Instant::now() + kind.boot_timeout;
    let nodes = parallel(&layout.nodes, |node| {
        boot::wait_ready(&kind, layout, node, deadline)
    })?;
    // A VM just booted has its RTC's whole seconds and no NTP server to reach (`clock`).
    let offsets = parallel(
        &to_start.iter().map(|n| (*n).clone()).collect::<Vec<_>>(),
        |node| clock::sync(layout, node),
    )?;
    for (node, offset) in to_start.iter().zip(offsets) {
        if offset.abs() >= 0.1 {
            eprintln!(
                "lab: {}'s clock was {:.2} s {} this machine's; set from it",
                node.name,
                offset.abs(),
                if offset > 0.0 { "ahead of" } else { "behind" }
            );
        }
    }
    Ok(Lab {
        ssh_key: layout.key(),
        known_hosts: layout.known_hosts(),
        nodes,
    })
}

/// Whether KVM boots a guest here ([`vm::probe_accel`] with the lab image's kernel, which must
/// have been built): the accelerator `up` would pick, and why.
pub fn probe_accel(inv: &Inventory, opts: &LabOptions) -> Result<(Accel, String)> {
    vm::probe_accel(&vm_image(inv, opts)?.kernel())
}

/// What `hardway lab render-libvirt --images` adds to the XML: the disks of every node whose VM
/// is not running (the image built first if need be), the seeds and the lab's key and
/// known_hosts; no network, no VM. `hardway lab down` removes them.
pub fn prepare_images(inv: &Inventory, opts: &LabOptions) -> Result<()> {
    super::preflight(inv.lab.suite)?;
    preflight()?;
    let layout = Layout::new(inv, opts)?;
    let net = net::lab_network(inv)?;
    create_dir_all(&layout.state_root)?;
    let _lock = lock(&layout.lock_file())?;
    create_dir_all(&layout.dir)?;
    driver::claim(&layout, LabDriver::Qemu)?;
    let build: Vec<&NodeLayout> = layout
        .nodes
        .iter()
        .filter(|n| node_pid(n).is_none())
        .collect();
    prepare(inv, opts, &layout, &net, &build).map(drop)
}

/// The qemu driver.
pub(super) struct Qemu;

impl Driver for Qemu {
    fn preflight(&self, opts: &LabOptions) -> Result<()> {
        if !opts.limits.is_none() {
            // A VM's size is the inventory's [lab] memory and vcpus, enforced by QEMU itself.
            return Err(LabError::Inventory(format!(
                "machine limits ({}) are for nspawn machines; a qemu lab's VMs take their size from [lab] memory_mib and vcpus",
                opts.limits.properties()
            )));
        }
        preflight()
    }

    fn up(&self, inv: &Inventory, opts: &LabOptions, layout: &Layout, net: &Net) -> Result<Lab> {
        up(inv, opts, layout, net)
    }

    fn probe(&self, layout: &Layout, node: &NodeLayout, bridge_is_ours: bool) -> NodeStatus {
        boot::probe(&KIND, layout, node, bridge_is_ours)
    }

    /// QEMU's resident memory: the guest's RAM as far as it has touched it, and QEMU's own.
    fn memory_usage(&self, _layout: &Layout, node: &NodeLayout) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", node_pid(node)?)).ok()?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    }

    /// Every VM whose disk is in the lab directory (nodes since dropped from the inventory
    /// included).
    fn stop(&self, layout: &Layout, _nodes: &[NodeLayout]) -> Result<()> {
        vm::stop(&vm::pids_under(&layout.dir), STOP_TIMEOUT)
    }

    /// The nodes' taps; the bridge's teardown would only take those still plugged in.
    fn release(&self, layout: &Layout, nodes: &[NodeLayout], network_ours: bool) -> Result<()> {
        if !network_ours {
            return Ok(());
        }
        nodes
            .iter()
            .try_for_each(|n| tap::remove_tap(&tap::tap_name(&layout.cluster, &n.name)))
    }
}
