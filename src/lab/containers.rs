//! What a lab node that runs containers (a worker) needs beyond the others, so that Debian's
//! containerd and runc work inside a systemd-nspawn machine as on a real worker.
//!
//! - **No seccomp filter and every capability**: runc sets up namespaces, mounts, keyrings and
//!   its own seccomp filters; nspawn's default filter and capability set refuse parts of that
//!   ("unable to join session keyring").
//! - **/proc/sys/net writable** (nspawn's `SYSTEMD_NSPAWN_API_VFS_WRITABLE=network`): the CNI
//!   bridge plugin turns on forwarding in the node's own network namespace.
//! - **/var/lib/containerd outside the node's overlay root**: overlayfs snapshots cannot have
//!   an overlay as their upper layer; it is a directory of the lab on the host, bound in.
//! - **cgroup controllers for runc**. Every machine boots on cgroup v2 (systemd 258 and later,
//!   Debian sid's, support nothing else). On a host whose controllers (cpu, memory, pids, ...)
//!   are bound to cgroup v1 hierarchies, as on this kind of hybrid host, the v2 hierarchy has
//!   none, and runc cannot set a container's CPU weight. So the node joins a cgroup of its own
//!   in each v1 controller hierarchy before it starts (its cgroup namespace then shows it only
//!   that subtree), a unit in the node mounts those hierarchies under [`V1_DIR`], and a drop-in
//!   for containerd.service binds them over a tmpfs at /sys/fs/cgroup in containerd's own mount
//!   namespace only: containerd, its shims and runc see cgroup v1, the node's systemd keeps v2
//!   (runc's systemd cgroup driver still asks it for each container's scope). On a host with
//!   the controllers in cgroup v2 nothing of this is written.
//!
//! The deploy's files (containerd's unit and config, CNI config, routes) go on top unchanged.

use std::fs;
use std::path::{Path, PathBuf};

use super::error::{Result, io_error};
use super::files::{create_dir_all, mounts};
use crate::safe_fs::{remove_beneath, write_beneath};
use super::layout::NodeLayout;

/// Inside the node: where the unit mounts the v1 hierarchies.
const V1_DIR: &str = "/run/hardway-lab/cgroup-v1";
const V1_UNIT: &str = "hardway-lab-cgroup-v1.service";

/// The cgroup v1 controllers the kernel knows; a v1 mount's options name those it carries.
const V1_CONTROLLERS: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls", "net_prio", "blkio", "perf_event", "hugetlb",
    "pids", "rdma", "misc",
];

/// The host's cgroup v1 hierarchies that carry controllers: (mount point, controllers as the
/// mount options name them, e.g. `cpu,cpuacct`). Only those under /sys/fs/cgroup: the same
/// hierarchy mounted again elsewhere (inside another container) is the same hierarchy.
pub(super) fn v1_hierarchies() -> Vec<(PathBuf, String)> {
    let mut found: Vec<(PathBuf, String)> = Vec::new();
    for (mount_point, fs_type, options) in mounts() {
        if fs_type != "cgroup" || !mount_point.starts_with("/sys/fs/cgroup/") || options.contains("name=") {
            continue;
        }
        let controllers: Vec<&str> = options.split(',').filter(|o| V1_CONTROLLERS.contains(o)).collect();
        if !controllers.is_empty() && !found.iter().any(|(_, c)| *c == controllers.join(",")) {
            found.push((mount_point, controllers.join(",")));
        }
    }
    found
}

/// A new v1 cpuset cgroup has no CPUs and no memory nodes, and no process may join it until it
/// has: each level below the hierarchy's root takes its parent's.
pub(super) fn init_cpusets(cgroup: &Path) -> Result<()> {
    let Some(root) = v1_hierarchies().into_iter().map(|(m, _)| m).find(|m| cgroup.starts_with(m) && m.join("cpuset.cpus").is_file())
    else {
        return Ok(());
    };
    let mut dir = root.clone();
    for part in cgroup.strip_prefix(&root).expect("below its root").components() {
        let parent = dir.clone();
        dir.push(part);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let own = fs::read_to_string(dir.join(file)).map_err(io_error("read", &dir.join(file)))?;
            if own.trim().is_empty() {
                let inherited = fs::read_to_string(parent.join(file)).map_err(io_error("read", &parent.join(file)))?;
                fs::write(dir.join(file), inherited.trim()).map_err(io_error("write", &dir.join(file)))?;
            }
        }
    }
    Ok(())
}

/// The environment and arguments of systemd-nspawn for a node that runs containers.
pub(super) fn nspawn_settings(node: &NodeLayout) -> (Vec<(&'static str, &'static str)>, Vec<String>) {
    let env = vec![("SYSTEMD_SECCOMP", "0"), ("SYSTEMD_NSPAWN_API_VFS_WRITABLE", "network")];
    let args = vec!["--capability=all".to_string(), format!("--bind={}:/var/lib/containerd", node.containerd_dir().display())];
    (env, args)
}

/// Writes the node's cgroup v1 unit and containerd's drop-in into its root fs (nothing on a
/// host without v1 controllers), and creates its containerd directory.
pub(super) fn prepare_node(node: &NodeLayout) -> Result<()> {
    create_dir_all(&node.containerd_dir())?;
    let root = node.rootfs();
    let hierarchies: Vec<String> = v1_hierarchies().into_iter().map(|(_, c)| c).collect();
    // Below the machine's root: written and removed without following a link (crate::safe_fs).
    let unit = Path::new("etc/systemd/system").join(V1_UNIT);
    let drop_in = Path::new("etc/systemd/system/containerd.service.d/hardway-lab.conf");
    if hierarchies.is_empty() {
        remove_beneath(&root, &unit)?;
        remove_beneath(&root, drop_in)?;
        return Ok(());
    }
    write_beneath(&root, &unit, v1_unit(&hierarchies).as_bytes(), 0o644, 0o755)?;
    write_beneath(&root, drop_in, containerd_drop_in(&hierarchies).as_bytes(), 0o644, 0o755)?;
    Ok(())
}

fn v1_unit(hierarchies: &[String]) -> String {
    let mut s = String::from(
        "# Written by `hardway lab`: this host's cgroup controllers are in cgroup v1 hierarchies, which\n\
         # the node's systemd (on cgroup v2) cannot hand to runc. Mounted here (the node's own part of\n\
         # each, through its cgroup namespace) for containerd.service.d/hardway-lab.conf to bind.\n\
         [Unit]\nDescription=cgroup v1 controllers for containerd (hardway lab)\nDefaultDependencies=no\n\
         Before=containerd.service\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\n"
    );
    for h in hierarchies {
        s.push_str(&format!("ExecStart=/bin/mkdir -p {V1_DIR}/{h}\nExecStart=/bin/mount -t cgroup -o {h} cgroup {V1_DIR}/{h}\n"));
    }
    s
}

fn containerd_drop_in(hierarchies: &[String]) -> String {
    let binds: Vec<String> = hierarchies.iter().map(|h| format!("{V1_DIR}/{h}:/sys/fs/cgroup/{h}")).collect();
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
