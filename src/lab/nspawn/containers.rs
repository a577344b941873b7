//! What a lab node that runs containers (a worker) needs beyond the others, so that containerd,
//! runc and the kubelet work inside a systemd-nspawn machine as on a real worker.
//!
//! - **No seccomp filter and every capability**: runc sets up namespaces, mounts, keyrings and
//!   its own seccomp filters; nspawn's default filter and capability set refuse parts of that
//!   ("unable to join session keyring"). Such a machine is not a security boundary (SECURITY.md,
//!   `super::confine`); its device rules hold all the same (no block device is read or written).
//! - **/proc/sys/net writable** (nspawn's `SYSTEMD_NSPAWN_API_VFS_WRITABLE=network`): the CNI
//!   bridge plugin and kube-proxy set sysctls of the node's own network namespace. The rest of
//!   /proc/sys is the host kernel's and stays read-only: the kernel settings the kubelet insists
//!   on are the host's ([`host_sysctls`]).
//! - **/var/lib/containerd on a tmpfs of its own**: overlayfs snapshots cannot have an overlay
//!   (the node's root) as their upper layer. A tmpfs rather than a directory of the host bound
//!   in: a bind mount of a host file system lets a process with CAP_DAC_READ_SEARCH open any
//!   file of that file system by handle (`open_by_handle_at`), outside the machine.
//! - **/dev/kmsg**, read-only: the kubelet's OOM watcher reads the kernel log and does not start
//!   without it.
//! - **cgroup controllers**, in one of two ways, by what the suite's systemd boots on:
//!   - [`Cgroups::V1`] (trixie, bookworm: systemd 257 and older still boot on the hybrid
//!     hierarchy): on a host whose controllers are in cgroup v1 hierarchies, as on this kind of
//!     host, the machine boots on them like a cgroup v1 host, and a unit early in its boot
//!     mounts each controller hierarchy again read-write (nspawn mounts them read-only; through
//!     the machine's cgroup namespace each shows only the machine's own subtree). Everything on
//!     the node — its systemd, containerd, runc, the kubelet, hardway's preflight — sees one
//!     cgroup v1 host; a kubelet 1.35 or later then needs `failCgroupV1: false`, which the
//!     inventory says explicitly (the README's *cgroup v1* section).
//!   - [`Cgroups::V2ForSystemd`] (sid: systemd 258 and later support nothing but cgroup v2):
//!     the machine boots on an empty cgroup v2 hierarchy; the node joins a cgroup of its own in
//!     each v1 controller hierarchy before it starts, a unit in the node mounts those
//!     hierarchies under [`V1_DIR`], and a drop-in for containerd.service binds them over a
//!     tmpfs at /sys/fs/cgroup in containerd's own mount namespace only: containerd, its shims
//!     and runc see cgroup v1, the node's systemd keeps v2. Enough for containers through the
//!     CRI (the data-plane test); a kubelet there would see no controllers.
//!
//! On a host with the controllers in cgroup v2 nothing of this is written.
//!
//! The deploy's files (containerd's unit and config, CNI config, routes) go on top unchanged.

use std::fs;
use std::path::{Path, PathBuf};

use crate::lab::error::{Result, io_error};
use crate::lab::files::mounts;
pub(super) use crate::lab::layout::Cgroups;
use crate::lab::layout::NodeLayout;
use crate::safe_fs::{remove_beneath, symlink_beneath, write_beneath};

/// Inside the node: where the unit mounts the v1 hierarchies.
const V1_DIR: &str = "/run/hardway-lab/cgroup-v1";
const V1_UNIT: &str = "hardway-lab-cgroup-v1.service";

/// The cgroup v1 controllers the kernel knows; a v1 mount's options name those it carries.
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// The host's cgroup v1 hierarchies that carry controllers: (mount point, controllers as the
/// mount options name them, e.g. `cpu,cpuacct`). Only those under /sys/fs/cgroup: the same
/// hierarchy mounted again elsewhere (inside another container) is the same hierarchy.
pub(super) fn v1_hierarchies() -> Vec<(PathBuf, String)> {
    let mut found: Vec<(PathBuf, String)> = Vec::new();
    for (mount_point, fs_type, options) in mounts() {
        if fs_type != "cgroup"
            || !mount_point.starts_with("/sys/fs/cgroup/")
            || options.contains("name=")
        {
            continue;
        }
        let controllers: Vec<&str> = options
            .split(',')
            .filter(|o| V1_CONTROLLERS.contains(o))
            .collect();
        if !controllers.is_empty() && !found.iter().any(|(_, c)| *c == controllers.join(",")) {
            found.push((mount_point, controllers.join(",")));
        }
    }
    found
}

/// A new v1 cpuset cgroup has no CPUs and no memory nodes, and no process may join it until it
/// has: each level below the hierarchy's root takes its parent's.
pub(super) fn init_cpusets(cgroup: &Path) -> Result<()> {
    let Some(root) = v1_hierarchies()
        .into_iter()
        .map(|(m, _)| m)
        .find(|m| cgroup.starts_with(m) && m.join("cpuset.cpus").is_file())
    else {
        return Ok(());
    };
    let mut dir = root.clone();
    for part in cgroup
        .strip_prefix(&root)
        .expect("below its root")
        .components()
    {
        let parent = dir.clone();
        dir.push(part);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let own =
                fs::read_to_string(dir.join(file)).map_err(io_error("read", &dir.join(file)))?;
            if own.trim().is_empty() {
                let inherited = fs::read_to_string(parent.join(file))
                    .map_err(io_error("read", &parent.join(file)))?;
                fs::write(dir.join(file), inherited.trim())
                    .map_err(io_error("write", &dir.join(file)))?;
            }
        }
    }
    Ok(())
}

/// The kernel settings the kubelet insists on (`setupKernelTunables` in its container
/// manager: it sets them, and does not start when it cannot). A machine shares the host's
/// kernel, whose /proc/sys it may not write (see the module's documentation): the lab sets them
/// on the host for it, as the kubelet would on a machine of its own.
pub(super) const KUBELET_SYSCTLS: &[(&str, &str)] = &[
    ("vm/overcommit_memory", "1"),
    ("vm/panic_on_oom", "0"),
    ("kernel/panic", "10"),
    ("kernel/panic_on_oops", "1"),
    ("kernel/keys/root_maxkeys", "1000000"),
    ("kernel/keys/root_maxbytes", "25000000"),
];

/// Sets [`KUBELET_SYSCTLS`] on the host where they differ; returns what changed
/// (`name`, old, new) for the caller to say.
pub(super) fn host_sysctls() -> Result<Vec<(String, String, String)>> {
    let mut changed = Vec::new();
    for (name, want) in KUBELET_SYSCTLS {
        let path = Path::new("/proc/sys").join(name);
        let now = fs::read_to_string(&path).map_err(io_error("read", &path))?;
        if now.trim() != *want {
            fs::write(&path, want).map_err(io_error("write", &path))?;
            changed.push((
                name.replace('/', "."),
                now.trim().to_string(),
                want.to_string(),
            ));
        }
    }
    Ok(changed)
}

/// The environment and arguments of systemd-nspawn for a node that runs containers.
pub(super) fn nspawn_settings() -> (Vec<(&'static str, &'static str)>, Vec<String>) {
    let env = vec![
        ("SYSTEMD_SECCOMP", "0"),
        ("SYSTEMD_NSPAWN_API_VFS_WRITABLE", "network"),
    ];
    let args = [
        "--capability=all",
        "--tmpfs=/var/lib/containerd:mode=0711",
        "--bind-ro=/dev/kmsg",
    ]
    .map(String::from)
    .to_vec();
    (env, args)
}

/// Writes the node's cgroup units (and, on cgroup v2, containerd's drop-in) into its root fs;
/// nothing on a host without v1 controllers.
pub(super) fn prepare_node(node: &NodeLayout, cgroups: Cgroups) -> Result<()> {
    let root = node.rootfs();
    let hierarchies: Vec<String> = v1_hierarchies().into_iter().map(|(_, c)| c).collect();
    // Below the machine's root: written and removed without following a link (crate::safe_fs).
    let systemd = Path::new("etc/systemd/system");
    let v1_unit_path = systemd.join(V1_UNIT);
    let rw_unit_path = systemd.join(RW_UNIT);
    let rw_link = systemd.join("sysinit.target.wants").join(RW_UNIT);
    let drop_in = systemd.join("containerd.service.d/hardway-lab.conf");
    for stale in [&v1_unit_path, &rw_unit_path, &rw_link, &drop_in] {
        remove_beneath(&root, stale)?;
    }
    if hierarchies.is_empty() {
        return Ok(());
    }
    match cgroups {
        Cgroups::V1 => {
            let mounts: Vec<(String, String)> = v1_hierarchies()
                .into_iter()
                .filter_map(|(m, c)| Some((m.file_name()?.to_string_lossy().into_owned(), c)))
                .collect();
            write_beneath(
                &root,
                &rw_unit_path,
                rw_unit(&mounts).as_bytes(),
                0o644,
                0o755,
            )?;
            Ok(symlink_beneath(
                &root,
                &rw_link,
                &format!("../{RW_UNIT}"),
                0o755,
            )?)
        }
        Cgroups::V2ForSystemd => {
            write_beneath(
                &root,
                &v1_unit_path,
                v1_unit(&hierarchies).as_bytes(),
                0o644,
                0o755,
            )?;
            Ok(write_beneath(
                &root,
                &drop_in,
                containerd_drop_in(&hierarchies).as_bytes(),
                0o644,
                0o755,
            )?)
        }
    }
}

const RW_UNIT: &str = "hardway-lab-cgroup-rw.service";

/// Mounts each controller hierarchy again, read-write, where nspawn mounted it read-only:
/// (directory under /sys/fs/cgroup, controllers as the mount option names them).
fn rw_unit(mounts: &[(String, String)]) -> String {
    let mut s = String::from(
        "# Written by `hardway lab`: nspawn mounts this machine's cgroup v1 controller hierarchies\n\
         # read-only; containerd, runc and the kubelet create cgroups in them. Mounted again\n\
         # read-write: through the machine's cgroup namespace each shows only its own subtree.\n\
         [Unit]\nDescription=cgroup v1 controllers read-write (hardway lab)\nDefaultDependencies=no\n\
         Before=sysinit.target\n\n\
         [Service]\nType=oneshot\nRemainAfterExit=yes\n",
    );
    for (dir, controllers) in mounts {
        s.push_str(&format!(
            "ExecStart=/bin/umount /sys/fs/cgroup/{dir}\nExecStart=/bin/mount -t cgroup -o {controllers} cgroup /sys/fs/cgroup/{dir}\n"
        ));
    }
    s.push_str("\n[Install]\nWantedBy=sysinit.target\n");
    s
}

fn v1_unit(hierarchies: &[String]) -> String {
    let mut s = String::from(
        "# Written by `hardway lab`: this host's cgroup controllers are in cgroup v1 hierarchies, which\n\
         # the node's systemd (on cgroup v2) cannot hand to runc. Mounted here (the node's own part of\n\
         # each, through its cgroup namespace) for containerd.service.d/hardway-lab.conf to bind.\n\
         [Unit]\nDescription=cgroup v1 controllers for containerd (hardway lab)\nDefaultDependencies=no\n\
         Before=containerd.service\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\n",
    );
    for h in hierarchies {
        s.push_str(&format!("ExecStart=/bin/mkdir -p {V1_DIR}/{h}\nExecStart=/bin/mount -t cgroup -o {h} cgroup {V1_DIR}/{h}\n"));
    }
    s
}

fn containerd_drop_in(hierarchies: &[String]) -> String {
    let binds: Vec<String> = hierarchies
        .iter()
        .map(|h| format!("{V1_DIR}/{h}:/sys/fs/cgroup/{h}"))
        .collect();
    format!(
        "# Written by `hardway lab` (see {V1_UNIT}): containerd, its shims and runc see the cgroup v1\n\
         # controllers at /sys/fs/cgroup, in containerd's own mount namespace.\n\
         [Unit]\nRequires={V1_UNIT}\nAfter={V1_UNIT}\n\n[Service]\nTemporaryFileSystem=/sys/fs/cgroup\nBindPaths={}\n",
        binds.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_sees_each_hierarchy_at_its_usual_place() {
        let h = ["cpu,cpuacct".to_string(), "memory".to_string()];
        let d = containerd_drop_in(&h);
        assert!(d.contains(
            "TemporaryFileSystem=/sys/fs/cgroup\nBindPaths=/run/hardway-lab/cgroup-v1/cpu,cpuacct:/sys/fs/cgroup/cpu,cpuacct \
             /run/hardway-lab/cgroup-v1/memory:/sys/fs/cgroup/memory\n"
        ), "{d}");
        let u = v1_unit(&h);
        assert!(u.contains("ExecStart=/bin/mount -t cgroup -o cpu,cpuacct cgroup /run/hardway-lab/cgroup-v1/cpu,cpuacct\n"), "{u}");
    }
}
