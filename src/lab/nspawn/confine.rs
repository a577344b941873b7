//! What a lab machine (nspawn driver) may do to this host and to other labs: the threat is root
//! inside a machine (a student on their own lab), the assets this host and every other lab
//! (SECURITY.md, "The classroom").
//!
//! A machine is one of three kinds, by what it runs ([`Confinement::for_node`]):
//!
//! - **Privileged** — a worker, which runs containerd, runc and the kubelet: every capability
//!   and no seccomp filter (`super::containers` says why). It is **not a boundary**: root on it
//!   holds CAP_SYS_ADMIN, CAP_SYS_MODULE and the rest in the host's user namespace.
//! - **Confined, with CAP_NET_ADMIN** — a master: nspawn's seccomp filter and its default
//!   capability set without [`DROPPED`], plus CAP_NET_ADMIN for its own network namespace (pod
//!   routes, kube-proxy's iptables rules).
//! - **Confined** — the load balancer and etcd-only members, which change nothing of their
//!   network: the same without CAP_NET_ADMIN.
//!
//! **No user namespace.** A master's network namespace is created by the lab, so the host's
//! user namespace owns it, and CAP_NET_ADMIN inside a user namespace of the machine's own would
//! not reach it. For the others nspawn's `--private-users=pick --private-users-ownership=map`
//! was tried (nspawn 252, kernel 6.18): nspawn stops with "ID mapped mounts are apparently not
//! available, sorry." — the machine's root is an overlay, and `mount_setattr(MOUNT_ATTR_IDMAP)`
//! of an overlayfs mount fails with EINVAL (of an ext4 or tmpfs directory it succeeds).
//! `--private-users-ownership=chown` does boot (with `metacopy=on` the overlay copies up only
//! the metadata of the root fs: 0.8 s and 37 MB for trixie's), but then every file hardway
//! writes into a running machine from the host (the lab key, host key, hostname) is owned by a
//! uid the machine does not map unless written as the machine's own uids, and a saved machine
//! would hold metadata-only copies of every file. Not done: see SECURITY.md. Without a user
//! namespace root inside is uid 0 of the host's, held back by the capabilities it lacks and by
//! the seccomp filter.
//!
//! Every machine, workers too, runs in a cgroup of its own in the host's cgroup v1 `devices`
//! hierarchy that denies every device but [`MACHINE_DEVICES`] (and, on a worker,
//! [`WORKER_DEVICES`]). nspawn would ask systemd for that (`DeviceAllow=` on the machine's
//! scope), but runs with `--register=no --keep-unit` here, where PID 1 is not systemd: without
//! it nothing restricts devices, and root with CAP_SYS_ADMIN mounts a devtmpfs and opens the
//! host's disks. The rules sit on `<lab>/<node>`, which no process joins; the machine runs in
//! `<lab>/<node>/machine` below it (its cgroup namespace's root), so that even root holding
//! CAP_SYS_ADMIN inside (a worker) can allow itself nothing beyond them: the kernel checks a
//! cgroup's new rules against its parent's.
//!
//! **On a host whose controllers are in cgroup v2** there is no v1 `devices` hierarchy:
//! device access is a BPF program attached to a cgroup, which only systemd as the host's PID 1
//! attaches for nspawn (`DeviceAllow=`); the lab attaches none. There, nothing but the
//! capabilities restricts devices: confined machines hold no CAP_MKNOD and no CAP_SYS_ADMIN, so
//! they can neither make nor mount device nodes; a worker can ([`devices_enforced`] tells
//! which; `class up` says so).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use super::containers;
use crate::lab::error::{LabError, Result, io_error};
use crate::lab::files::create_dir_all;
pub use crate::lab::layout::Confinement;
use crate::lab::layout::NodeLayout;
use crate::safe_fs::{remove_beneath, symlink_beneath};

/// Capabilities of nspawn's default set that a confined machine does not get:
///
/// - CAP_SYS_ADMIN: `mount` in the host's user namespace: a fresh procfs or sysfs, writable, is
///   the host kernel's (`kernel.core_pattern` runs a program as the host's root), a devtmpfs
///   holds the host's disks, a cgroup v1 hierarchy mounted again lets it rewrite its own
///   device rules. No user namespace makes it harmless on a master.
/// - CAP_DAC_READ_SEARCH: `open_by_handle_at` opens any file of a file system by its inode
///   number, through any mount of it the machine can see (nspawn binds host directories at
///   /run/host); nspawn's seccomp filter allows the call to whoever holds the capability.
/// - CAP_MKNOD: device nodes (of the host's disks) anywhere the machine can write.
/// - CAP_SYS_BOOT: nothing a machine needs (its systemd exits when it may not reboot).
/// - CAP_AUDIT_CONTROL: the kernel's audit rules are the host's, not per machine.
///
/// CAP_SYS_MODULE, CAP_SYS_RAWIO, CAP_SYS_TIME, CAP_SYSLOG, CAP_SYS_PACCT, CAP_MAC_*, CAP_BPF,
/// CAP_PERFMON are not in nspawn's default set (systemd-nspawn(1), `--capability=`); the lab
/// test reads the bounding set inside a machine and checks that none of these is there.
pub const DROPPED: &[&str] = &[
    "CAP_SYS_ADMIN",
    "CAP_DAC_READ_SEARCH",
    "CAP_MKNOD",
    "CAP_SYS_BOOT",
    "CAP_AUDIT_CONTROL",
];

/// Every machine's devices, as cgroup v1 rules: what its systemd, journald, sshd, etcd,
/// HAProxy and the deploy's shells open, and what nspawn creates in its /dev (null, zero, full,
/// random, urandom, tty, net/tun, ptmx; the console is a pty of the host's).
pub const MACHINE_DEVICES: &[&str] = &[
    "c 1:3 rwm",    // /dev/null
    "c 1:5 rwm",    // /dev/zero
    "c 1:7 rwm",    // /dev/full
    "c 1:8 rwm",    // /dev/random
    "c 1:9 rwm",    // /dev/urandom
    "c 5:0 rwm",    // /dev/tty
    "c 5:1 rwm",    // /dev/console (containerd's default rule for a container's)
    "c 5:2 rwm",    // /dev/ptmx
    "c 136:* rwm",  // /dev/pts/*: the machine's own ptys, and its console (--console=passive)
    "c 10:200 rwm", // /dev/net/tun
];

/// A worker's devices beyond [`MACHINE_DEVICES`]: runc writes its default rules into each
/// container's devices cgroup, below the machine's, and the kernel refuses a rule its parent
/// lacks; they include making any device node (`c *:* m`, `b *:* m`: mknod, never read or
/// write). The kubelet's OOM watcher reads /dev/kmsg. No block device is read or written.
pub const WORKER_DEVICES: &[&str] = &["c *:* m", "b *:* m", "c 1:11 r"];

/// systemd-nspawn's environment and arguments for a machine of this kind.
pub(super) fn nspawn_settings(
    confinement: Confinement,
) -> (Vec<(&'static str, &'static str)>, Vec<String>) {
    let drop = format!("--drop-capability={}", DROPPED.join(","));
    match confinement {
        Confinement::Privileged => containers::nspawn_settings(),
        // The network namespace is the node's own, as a machine's network is: its routes
        // (pod-routes on masters and workers) and iptables rules are its to change.
        Confinement::ConfinedNetAdmin => {
            (Vec::new(), vec!["--capability=CAP_NET_ADMIN".into(), drop])
        }
        Confinement::Confined => (Vec::new(), vec![drop]),
    }
}

/// What a machine without CAP_SYS_ADMIN cannot start: Debian's `run-lock.mount` mounts a tmpfs
/// at /run/lock, which leaves the machine `degraded`; /run/lock is then a directory of /run, a
/// tmpfs nspawn mounted, which is what the unit is for.
const NO_MOUNT_UNITS: &[&str] = &["run-lock.mount"];

/// Masks [`NO_MOUNT_UNITS`] in a confined machine's root, unmasks them in a privileged one's
/// (a node whose roles changed); never through a link the machine planted.
pub(super) fn prepare_node(node: &NodeLayout) -> Result<()> {
    let root = node.rootfs();
    for unit in NO_MOUNT_UNITS {
        let mask = Path::new("etc/systemd/system").join(unit);
        match node.confinement {
            Confinement::Privileged => remove_beneath(&root, &mask)?,
            _ => symlink_beneath(&root, &mask, "/dev/null", 0o755)?,
        }
    }
    Ok(())
}

/// The devices rules of a machine of this kind, as `devices.list` shows them.
pub fn device_rules(confinement: Confinement) -> Vec<&'static str> {
    let extra: &[&str] = if confinement == Confinement::Privileged {
        WORKER_DEVICES
    } else {
        &[]
    };
    MACHINE_DEVICES.iter().chain(extra).copied().collect()
}

/// The mount point of the host's cgroup v1 hierarchy that carries the `devices` controller.
pub(super) fn devices_hierarchy() -> Option<PathBuf> {
    containers::v1_hierarchies()
        .into_iter()
        .find(|(_, c)| c.split(',').any(|c| c == "devices"))
        .map(|(m, _)| m)
}

/// Whether this host restricts the machines' devices (it has a v1 `devices` hierarchy).
pub fn devices_enforced() -> bool {
    devices_hierarchy().is_some()
}

/// The child of a node's devices cgroup that its machine runs in.
pub(super) const DEVICES_CHILD: &str = "machine";

/// Makes `ceiling` (a node's cgroup in the devices hierarchy, new and empty) deny every device
/// but `rules`, then the cgroup below it that the machine joins, which inherits them; reads
/// both back. Returns the child.
pub(super) fn restrict_devices(ceiling: &Path, rules: &[&str]) -> Result<PathBuf> {
    create_dir_all(ceiling)?;
    write(&ceiling.join("devices.deny"), "a")?;
    for rule in rules {
        write(&ceiling.join("devices.allow"), rule)?;
    }
    let child = ceiling.join(DEVICES_CHILD);
    create_dir_all(&child)?;
    for cg in [ceiling, child.as_path()] {
        let list = fs::read_to_string(cg.join("devices.list"))
            .map_err(io_error("read", &cg.join("devices.list")))?;
        let have: BTreeSet<&str> = list
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let want: BTreeSet<&str> = rules.iter().copied().collect();
        if have != want {
            return Err(LabError::BadPath {
                path: cg.join("devices.list"),
                reason: format!(
                    "the kernel holds the device rules {have:?}, not those written ({want:?})"
                ),
            });
        }
    }
    Ok(child)
}

fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(io_error("write", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{Node, Role};

    fn node(roles: &[Role]) -> Node {
        Node {
            name: "n".into(),
            address: "10.0.0.1".parse().unwrap(),
            ssh_address: None,
            ssh_port: None,
            user: None,
            roles: roles.iter().copied().collect(),
            extra_sans: vec![],
            pod_cidr: None,
            install: None,
        }
    }

    #[test]
    fn what_a_node_runs_decides_its_confinement() {
        assert_eq!(
            Confinement::for_node(&node(&[Role::Worker])),
            Confinement::Privileged
        );
        assert_eq!(
            Confinement::for_node(&node(&[Role::Master, Role::Worker])),
            Confinement::Privileged
        );
        assert_eq!(
            Confinement::for_node(&node(&[Role::Master])),
            Confinement::ConfinedNetAdmin
        );
        assert_eq!(
            Confinement::for_node(&node(&[Role::Master, Role::Etcd])),
            Confinement::ConfinedNetAdmin
        );
        assert_eq!(
            Confinement::for_node(&node(&[Role::Lb])),
            Confinement::Confined
        );
        assert_eq!(
            Confinement::for_node(&node(&[Role::Etcd])),
            Confinement::Confined
        );
    }

    #[test]
    fn confined_machines_drop_what_reaches_the_host_and_keep_the_seccomp_filter() {
        for c in [Confinement::ConfinedNetAdmin, Confinement::Confined] {
            let (env, args) = nspawn_settings(c);
            assert!(
                env.is_empty(),
                "{env:?}: SYSTEMD_SECCOMP=0 would turn nspawn's filter off"
            );
            let drop = args
                .iter()
                .find_map(|a| a.strip_prefix("--drop-capability="))
                .unwrap();
            for cap in [
                "CAP_SYS_ADMIN",
                "CAP_DAC_READ_SEARCH",
                "CAP_MKNOD",
                "CAP_SYS_BOOT",
            ] {
                assert!(
                    drop.split(',').any(|d| d == cap),
                    "{cap} not dropped: {args:?}"
                );
            }
            assert!(
                !args.iter().any(|a| a.contains("capability=all")),
                "{args:?}"
            );
        }
        let (_, master) = nspawn_settings(Confinement::ConfinedNetAdmin);
        assert!(master.contains(&"--capability=CAP_NET_ADMIN".to_string()));
        let (_, lb) = nspawn_settings(Confinement::Confined);
        assert!(!lb.iter().any(|a| a.contains("CAP_NET_ADMIN")), "{lb:?}");
        let (env, worker) = nspawn_settings(Confinement::Privileged);
        assert!(
            env.contains(&("SYSTEMD_SECCOMP", "0"))
                && worker.contains(&"--capability=all".to_string())
        );
    }

    #[test]
    fn no_machine_may_read_or_write_a_block_device() {
        for c in [
            Confinement::Privileged,
            Confinement::ConfinedNetAdmin,
            Confinement::Confined,
        ] {
            for rule in device_rules(c) {
                let mut f = rule.split(' ');
                let (kind, _, access) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
                assert!(
                    kind == "c" || access == "m",
                    "{c:?}: {rule} lets the machine at a block device"
                );
                assert!(kind != "a", "{c:?}: {rule}");
            }
        }
        assert!(
            !device_rules(Confinement::ConfinedNetAdmin)
                .iter()
                .any(|r| r.contains('*') && !r.starts_with("c 136:"))
        );
    }
}
