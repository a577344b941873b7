//! The VMs as QEMU processes: what a node's VM is ([`VmSpec`], also what the libvirt domain
//! XML is rendered from), whether KVM works here, starting QEMU in the background, finding it
//! again through /proc, and stopping it.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::super::error::{LabError, Result};
use super::super::process::{self, alive, signal, wait_gone};
use super::super::tools::{command, output_until, run};

pub(crate) const QEMU: &str = "qemu-system-x86_64";

/// How long a KVM guest kernel gets to print its banner in the probe; it takes well under a
/// second where KVM works, and where it does not the guest either aborts at once or hangs.
const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// How the guest CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation through /dev/kvm, with the host's CPU model.
    Kvm,
    /// QEMU's software emulation: works everywhere, an order of magnitude slower.
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
    /// QEMU's arguments for it.
    fn args(self) -> [&'static str; 4] {
        match self {
            Accel::Kvm => ["-accel", "kvm", "-cpu", "host"],
            // Multi-threaded TCG (one host thread per vCPU) is QEMU's default for x86 on x86.
            Accel::Tcg => ["-accel", "tcg", "-cpu", "max"],
        }
    }
}

/// One node's VM: every file, name and size that QEMU's command line and the libvirt domain
/// XML are made of, so that the two describe the same machine.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VmSpec {
    /// The node's name (and hostname).
    pub node: String,
    /// QEMU's `-name` and the libvirt domain's name: `hw-<cluster>-<node>`.
    pub name: String,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
    /// The node's qcow2 overlay, and the raw image it is backed by.
    pub disk: PathBuf,
    pub base_disk: PathBuf,
    /// The seed disk: a tar archive with the node's identity, read-only.
    pub seed: PathBuf,
    pub tap: String,
    pub mac: String,
    pub bridge: String,
    /// The serial console's output.
    pub console_log: PathBuf,
}

/// The kernel command line: root on the virtio disk, the console on the serial port (the
/// console log), `eth0` as the NIC's name (the seed unit configures it by that name), and the
/// node's own machine-id from the first instruction of its systemd on.
pub fn kernel_cmdline(machine_id: &str) -> String {
    format!("root=/dev/vda rw console=ttyS0 net.ifnames=0 systemd.machine_id={machine_id}")
}

/// QEMU option values are comma-separated: a comma in a path is written twice.
fn opt_path(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

/// The full command line of the node's QEMU, which daemonizes once the VM is running and
/// writes its PID to `pid_file`.
pub fn qemu_args(spec: &VmSpec, accel: Accel, pid_file: &Path) -> Vec<OsString> {
    let mut a: Vec<String> = vec![
        "-name".into(),
        spec.name.clone(),
        "-machine".into(),
        "q35".into(),
    ];
    a.extend(accel.args().map(String::from));
    a.extend([
        "-m".into(),
        spec.memory_mib.to_string(),
        "-smp".into(),
        spec.vcpus.to_string(),
        // Only the devices below: no VGA, no default NIC, no host config files.
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-kernel".into(),
        spec.kernel.display().to_string(),
        "-initrd".into(),
        spec.initrd.display().to_string(),
        "-append".into(),
        spec.cmdline.clone(),
        "-drive".into(),
        format!("file={},if=virtio,format=qcow2", opt_path(&spec.disk)),
        "-drive".into(),
        format!(
            "file={},if=virtio,format=raw,readonly=on",
            opt_path(&spec.seed)
        ),
        "-netdev".into(),
        format!("tap,id=net0,ifname={},script=no,downscript=no", spec.tap),
        "-device".into(),
        format!("virtio-net-pci,netdev=net0,mac={}", spec.mac),
        // sshd and etcd want entropy early; the guest gets it from the host.
        "-device".into(),
        "virtio-rng-pci".into(),
        "-serial".into(),
        format!("file:{}", spec.console_log.display()),
        "-pidfile".into(),
        pid_file.display().to_string(),
        "-daemonize".into(),
    ]);
    a.into_iter().map(OsString::from).collect()
}

/// Whether KVM boots a guest here: `/dev/kvm` must open, and a guest kernel under `-accel kvm
/// -cpu host` must print its banner. On some hosts (nested virtualisation) /dev/kvm exists but
/// QEMU aborts (`failed to set MSR`) or the guest hangs; then TCG. Returns the choice and why.
pub fn probe_accel(kernel: &Path) -> Result<(Accel, String)> {
    if let Err(e) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return Ok((Accel::Tcg, format!("/dev/kvm cannot be opened ({e})")));
    }
    let mut c = command(QEMU);
    c.args([
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-m",
        "256",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
    ])
    .args(["-no-reboot", "-serial", "stdio", "-kernel"])
    .arg(kernel)
    // No root file system: the kernel panics after its banner, and panic=-1 reboots, which
    // -no-reboot turns into QEMU's exit.
    .args(["-append", "console=ttyS0 panic=-1"]);
    let started = Instant::now();
    let out = output_until(&mut c, started + KVM_PROBE_TIMEOUT)?;
    let Some(out) = out else {
        return Ok((
            Accel::Tcg,
            format!(
                "a KVM guest printed nothing within {} s",
                KVM_PROBE_TIMEOUT.as_secs()
            ),
        ));
    };
    if String::from_utf8_lossy(&out.stdout).contains("Linux version") {
        return Ok((
            Accel::Kvm,
            format!("a KVM guest kernel booted in {:.1?}", started.elapsed()),
        ));
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let why = stderr
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output")
        .trim()
        .to_string();
    Ok((Accel::Tcg, format!("QEMU under KVM failed: {why}")))
}

/// Starts the node's VM in the background and returns its PID. QEMU itself daemonizes (so it
/// outlives `hardway lab up`) after the VM is set up: a bad disk or tap fails here, with QEMU's
/// message.
pub fn start(spec: &VmSpec, accel: Accel, pid_file: &Path) -> Result<u32> {
    let _ = fs::remove_file(pid_file);
    let mut c = command(QEMU);
    // QEMU outlives hardway: a lock that hardway's caller holds (`flock LOCK hardway lab up`)
    // must not stay held for the VM's lifetime.
    process::no_inherited_fds(&mut c);
    run(c.args(qemu_args(spec, accel, pid_file)))?;
    let pid = fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    pid.filter(|p| alive(*p)).ok_or_else(|| LabError::Machine {
        node: spec.node.clone(),
        reason: format!(
            "{QEMU} daemonized but {} names no live process",
            pid_file.display()
        ),
    })
}

/// The arguments of `pid` if it is a QEMU system emulator.
fn qemu_args_of(pid: u32) -> Option<Vec<String>> {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    Path::new(args.first()?)
        .file_name()?
        .to_str()?
        .starts_with("qemu-system-")
        .then_some(args)
}

/// Every live QEMU on the host with its arguments.
pub(super) fn qemu_processes() -> Vec<(u32, Vec<String>)> {
    process::all_pids()
        .into_iter()
        .filter_map(|pid| Some((pid, qemu_args_of(pid)?)))
        .collect()
}

/// The disk (first `-drive file=`) of a QEMU command line.
pub(super) fn disk_of(args: &[String]) -> Option<PathBuf> {
    let drive = args.iter().skip_while(|a| *a != "-drive").nth(1)?;
    let file = drive.strip_prefix("file=")?;
    // Undo opt_path: the value ends at the first single comma.
    let mut path = String::new();
    let mut chars = file.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            (',', Some(',')) => {
                path.push(',');
                chars.next();
            }
            (',', _) => break,
            _ => path.push(c),
        }
    }
    Some(PathBuf::from(path))
}

/// The running QEMU of the VM on `disk`: the one in `pid_file`, checked against /proc (PIDs get
/// reused), else one found by scanning for a QEMU on that disk.
pub(super) fn pid_on_disk(pid_file: &Path, disk: &Path) -> Option<u32> {
    let ours = |pid: u32| qemu_args_of(pid).is_some_and(|a| disk_of(&a).as_deref() == Some(disk));
    let recorded = fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    if let Some(pid) = recorded.filter(|p| alive(*p) && ours(*p)) {
        return Some(pid);
    }
    qemu_processes()
        .into_iter()
        .find(|(_, a)| disk_of(a).as_deref() == Some(disk))
        .map(|(p, _)| p)
}

/// The QEMUs whose disk lies under `dir` (a lab directory): those of nodes since dropped from
/// the inventory included.
pub(super) fn pids_under(dir: &Path) -> Vec<u32> {
    qemu_processes()
        .into_iter()
        .filter(|(_, a)| disk_of(a).is_some_and(|d| d.starts_with(dir)))
        .map(|(p, _)| p)
        .collect()
}

/// Stops VMs: SIGTERM (QEMU exits at once, like pulling the plug: `down` discards the disks
/// anyway), then SIGKILL after `grace`.
pub(super) fn stop(pids: &[u32], grace: Duration) -> Result<()> {
    signal(pids, "TERM");
    let left = wait_gone(pids, Instant::now() + grace);
    if left.is_empty() {
        return Ok(());
    }
    eprintln!(
        "lab: {QEMU} {left:?} still running {} s after SIGTERM; sending SIGKILL",
        grace.as_secs()
    );
    process::kill(&left, || QEMU.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        VmSpec {
            node: "qlab-m1".into(),
            name: "hw-qlab-qlab-m1".into(),
            memory_mib: 1024,
            vcpus: 2,
            kernel: "/c/trixie-vm/vmlinuz".into(),
            initrd: "/c/trixie-vm/initrd.img".into(),
            cmdline: kernel_cmdline("0123"),
            disk: "/run/a,b/qlab-m1/disk.qcow2".into(),
            base_disk: "/c/trixie-vm/disk.raw".into(),
            seed: "/run/lab/qlab-m1/seed.img".into(),
            tap: "hwt0123456789ab".into(),
            mac: "52:54:00:01:02:03".into(),
            bridge: "hw-qlab".into(),
            console_log: "/run/lab/qlab-m1/console.log".into(),
        }
    }

    #[test]
    fn the_command_line_carries_the_spec() {
        let args: Vec<String> = qemu_args(&spec(), Accel::Tcg, Path::new("/p"))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let joined = args.join(" ");
        for want in [
            "-accel tcg -cpu max",
            "-m 1024 -smp 2",
            "-drive file=/run/a,,b/qlab-m1/disk.qcow2,if=virtio,format=qcow2",
            "-drive file=/run/lab/qlab-m1/seed.img,if=virtio,format=raw,readonly=on",
            "-netdev tap,id=net0,ifname=hwt0123456789ab,script=no,downscript=no",
            "-device virtio-net-pci,netdev=net0,mac=52:54:00:01:02:03",
            "-serial file:/run/lab/qlab-m1/console.log",
            "-pidfile /p -daemonize",
        ] {
            assert!(joined.contains(want), "{want:?} missing from {joined}");
        }
        let append = args.iter().position(|a| a == "-append").unwrap();
        assert_eq!(
            args[append + 1],
            "root=/dev/vda rw console=ttyS0 net.ifnames=0 systemd.machine_id=0123"
        );
        assert!(
            qemu_args(&spec(), Accel::Kvm, Path::new("/p"))
                .iter()
                .any(|a| a == "host")
        );
        // The disk is found again from the command line, comma and all.
        assert_eq!(
            disk_of(&args),
            Some(PathBuf::from("/run/a,b/qlab-m1/disk.qcow2"))
        );
    }
}
