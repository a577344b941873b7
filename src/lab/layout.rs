//! Names and paths of a lab, all derived here from the inventory and [`LabOptions`]: the lab
//! directory and its files, the bridge and its owner alias, each node's network namespace,
//! veth, directory and cgroup. `down` finds what an older `up` created only because these
//! derivations never change; anything that names a lab (a lab name next to the cluster, a
//! machine-name prefix) belongs here.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::LabOptions;
use super::error::Result;
use super::files::resolve;
use super::limits::MachineLimits;
use crate::inventory::{Inventory, LabSoftware, LabSuite, Node, Role};

#[derive(Debug, Clone)]
pub(super) struct Layout {
    pub cluster: String,
    /// `LabOptions::state_dir`, resolved.
    pub state_root: PathBuf,
    /// The lab directory, `<state_root>/<cluster>`.
    pub dir: PathBuf,
    pub bridge: String,
    /// The bridge's alias: proves that a bridge of this name was created by this lab.
    pub owner: String,
    pub nodes: Vec<NodeLayout>,
    /// Every machine's memory and CPU limits (`super::limits`).
    pub limits: MachineLimits,
}

#[derive(Debug, Clone)]
pub(super) struct NodeLayout {
    pub name: String,
    pub address: IpAddr,
    pub link: HostLink,
    pub dir: PathBuf,
    /// It runs containers (a worker): its machine gets what containerd, runc and the kubelet
    /// need, and its cgroup controllers this way (`super::containers`).
    pub containers: Option<Cgroups>,
    /// What its machine may do to the host (`super::confine`).
    pub confinement: Confinement,
}

impl NodeLayout {
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("pid")
    }
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }
}

impl Layout {
    pub fn new(inv: &Inventory, opts: &LabOptions) -> Result<Layout> {
        let cluster = inv.cluster.name.clone();
        let state_root = resolve(&opts.state_dir)?;
        let dir = state_root.join(&cluster);
        let mut layout = Layout {
            bridge: bridge_name(&cluster),
            owner: format!("hardway-lab {}", dir.display()),
            cluster,
            state_root,
            dir,
            nodes: Vec::new(),
            limits: opts.limits,
        };
        layout.nodes = inv
            .nodes
            .iter()
            .map(|n| NodeLayout {
                containers: n
                    .has(Role::Worker)
                    .then(|| Cgroups::for_suite(inv.lab.suite)),
                confinement: Confinement::for_node(n),
                ..layout.node(&n.name, n.address)
            })
            .collect();
        Ok(layout)
    }

    pub fn node(&self, name: &str, address: IpAddr) -> NodeLayout {
        NodeLayout {
            name: name.to_string(),
            address,
            link: HostLink {
                netns: format!("hw-{}-{name}", self.cluster),
                veth: veth_name(&self.cluster, name),
            },
            dir: self.dir.join(name),
            containers: None,
            // A node dropped from the inventory, seen only by `down`: its kind does not matter.
            confinement: Confinement::ConfinedNetAdmin,
        }
    }

    pub fn key(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }
    pub fn public_key(&self) -> PathBuf {
        self.dir.join("id_ed25519.pub")
    }
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }
    /// Relative to a hierarchy's root; it names the lab directory, unlike the network names, so
    /// that a lab never touches the processes of another lab of the same cluster name.
    pub fn cgroup(&self) -> PathBuf {
        Path::new(CGROUP_ROOT).join(format!(
            "{}-{:08x}",
            self.cluster,
            fnv1a(&self.dir.display().to_string()) & 0xffff_ffff
        ))
    }

    /// Outside `dir`, so that `down` can hold it while deleting `dir`.
    pub fn lock_file(&self) -> PathBuf {
        self.state_root.join(format!(".{}.lock", self.cluster))
    }
}

/// The parent of every lab's cgroup, in each hierarchy.
pub(super) const CGROUP_ROOT: &str = "hardway-lab";

/// The root fs cache of one Debian suite, shared by every lab.
pub(super) struct CacheLayout {
    /// `LabOptions::cache_dir`, resolved.
    pub dir: PathBuf,
    pub suite: LabSuite,
    pub software: LabSoftware,
}

impl CacheLayout {
    pub fn new(opts: &LabOptions, suite: LabSuite, software: LabSoftware) -> Result<CacheLayout> {
        Ok(CacheLayout {
            dir: resolve(&opts.cache_dir)?,
            suite,
            software,
        })
    }
    /// `trixie-rootfs`, `trixie-bare-rootfs`: the name of the finished root fs.
    fn name(&self) -> String {
        match self.software {
            LabSoftware::Packages => format!("{}-rootfs", self.suite),
            LabSoftware::Bare => format!("{}-bare-rootfs", self.suite),
        }
    }
    /// The finished root fs.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join(self.name())
    }
    /// Where debootstrap builds it.
    pub fn build_dir(&self) -> PathBuf {
        self.dir.join(format!("{}.tmp", self.name()))
    }
    /// Where an outdated root fs goes while it is removed.
    pub fn old_dir(&self) -> PathBuf {
        self.dir.join(format!("{}.old", self.name()))
    }
    /// debootstrap's output.
    pub fn log(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.name()))
    }
    pub fn lock_file(&self) -> PathBuf {
        self.dir.join(".lock")
    }
}

/// FNV-1a: stable across Rust releases (unlike `DefaultHasher`), which matters because `down`
/// must find the names an older binary's `up` created.
pub(super) fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Interface names are limited to 15 bytes (IFNAMSIZ - 1).
pub(super) fn bridge_name(cluster: &str) -> String {
    let name = format!("hw-{cluster}");
    if name.len() <= 15 {
        name
    } else {
        // A hash keeps two long names with the same prefix apart.
        format!("hw-{}-{:04x}", &cluster[..7], fnv1a(cluster) & 0xffff)
    }
}

fn veth_name(cluster: &str, node: &str) -> String {
    format!(
        "hwv{:012x}",
        fnv1a(&format!("{cluster}/{node}")) & 0xffff_ffff_ffff
    )
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

    /// Names already on hosts (labs and caches of earlier binaries) must keep matching.
    #[test]
    fn names_are_those_of_earlier_releases() {
        let inv = crate::inventory::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lab-etcd.toml"),
        )
        .unwrap();
        let opts = LabOptions {
            state_dir: "/run/hardway/lab".into(),
            ..LabOptions::default()
        };
        let l = Layout::new(&inv, &opts).unwrap();
        let n = &l.nodes[0];
        assert_eq!(l.dir, Path::new("/run/hardway/lab/lab"));
        assert_eq!(l.bridge, "hw-lab");
        assert_eq!(l.owner, "hardway-lab /run/hardway/lab/lab");
        assert_eq!(
            (n.name.as_str(), n.link.netns.as_str(), n.link.veth.as_str()),
            ("lab-m1", "hw-lab-lab-m1", "hwv77f27cafa64d")
        );
        assert_eq!(n.link.netns_path(), Path::new("/run/netns/hw-lab-lab-m1"));
        assert_eq!(n.dir, Path::new("/run/hardway/lab/lab/lab-m1"));
        assert_eq!(l.lock_file(), Path::new("/run/hardway/lab/.lab.lock"));
        assert_eq!(l.cgroup(), Path::new("hardway-lab/lab-d660042c"));
        assert_eq!(bridge_name("a-rather-long-cluster-name"), "hw-a-rathe-8597");
        let cache = CacheLayout::new(
            &LabOptions::default(),
            LabSuite::Bookworm,
            LabSoftware::Packages,
        )
        .unwrap();
        assert_eq!(
            cache.rootfs(),
            Path::new("/var/cache/hardway/lab/bookworm-rootfs")
        );
        assert_eq!(
            cache.build_dir(),
            Path::new("/var/cache/hardway/lab/bookworm-rootfs.tmp")
        );
        let sid =
            CacheLayout::new(&LabOptions::default(), LabSuite::Sid, LabSoftware::Packages).unwrap();
        assert_eq!(sid.rootfs(), Path::new("/var/cache/hardway/lab/sid-rootfs"));
    }
}

// ---------------------------------------------------------------------------------------------
// What a node is, for the modules that act on it: its host link (`super::net`), its
// confinement (`super::confine`) and its cgroups (`super::containers`). Defined here, where the
// layout derives them, so that the layout needs none of those modules.

/// One host's plug into a bridge: the network namespace `netns` (`/run/netns/<netns>`), whose
/// `eth0` is the peer of the host-side veth `veth`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLink {
    pub netns: String,
    pub veth: String,
}

impl HostLink {
    pub fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.netns)
    }
}

/// How a machine is confined (see `super::confine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confinement {
    /// Runs containers: every capability, no seccomp filter. Not a boundary.
    Privileged,
    /// nspawn's seccomp filter, its default capabilities without [`DROPPED`], and CAP_NET_ADMIN
    /// in its own network namespace (owned by the host's user namespace).
    ConfinedNetAdmin,
    /// nspawn's seccomp filter, its default capabilities without [`DROPPED`].
    Confined,
}

impl Confinement {
    /// A worker runs containers; a master changes its network namespace; anything else (the
    /// load balancer, etcd-only members) needs nothing of the host.
    pub fn for_node(node: &Node) -> Confinement {
        if node.has(Role::Worker) {
            Confinement::Privileged
        } else if node.has(Role::Master) {
            Confinement::ConfinedNetAdmin
        } else {
            Confinement::Confined
        }
    }
}

/// How a container machine gets its cgroup controllers (see `super::containers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cgroups {
    /// The machine boots on the host's cgroup v1 hierarchies, read-write.
    V1,
    /// The machine boots on cgroup v2; containerd alone sees the v1 controllers.
    V2ForSystemd,
}

impl Cgroups {
    /// What a machine of `suite` boots on: systemd 258 and later (sid's) refuse the hybrid
    /// hierarchy ("Detected unsupported legacy cgroup hierarchy").
    pub(super) fn for_suite(suite: LabSuite) -> Cgroups {
        match suite {
            LabSuite::Bookworm | LabSuite::Trixie => Cgroups::V1,
            LabSuite::Sid => Cgroups::V2ForSystemd,
        }
    }

    /// Whether nspawn mounts the unified (cgroup v2) hierarchy alone for this machine.
    pub(super) fn unified(self) -> bool {
        self == Cgroups::V2ForSystemd
    }
}
