//! The component table: every daemon hardway runs, and everything the other stages need to know
//! about it, in one place.
//!
//! For each component: its systemd unit, the nodes it runs on, the deploy phase that starts it,
//! its binary and where that lives, the ports it listens on, how it is restarted when its files
//! change, and the certificates it serves or presents (by the unit flag that names them, so a
//! hand-built cluster is checked where its files really are). `render` takes ports and binary
//! paths from here, `plan` the phase of each unit, deploy's preflight the binaries and ports,
//! deploy's phases the restart policy, `verify` the units per node and the certificate sites.
//!
//! Adding a component is one row in [`COMPONENTS`] (plus its templates and its rows in
//! `render::FILES`).
//!
//! The table knows no inventory: the inventory names components (`extra_args` per
//! [`ComponentId`], ports it must not reuse), so it sits above this catalog. What needs a
//! cluster's inventory to answer — which nodes run a component ([`RunsOn`] applied to a node),
//! a port's number in this cluster, a binary's absolute path — is in `inventory/topology.rs`, as methods of
//! these same types (`Component::runs_on`, `Component::binary_path`, `Component::executables`,
//! `Port::number`, `RunsOn::includes`) and `inventory::on_node`/`inventory::units_on`.

use std::fmt;

use serde::Serialize;

/// Deploy phases, in the order they run (named after kubeadm's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Preflight,
    Files,
    Etcd,
    Lb,
    ControlPlane,
    Workers,
    Addons,
}

impl Phase {
    pub const ALL: [Phase; 7] = [
        Phase::Preflight,
        Phase::Files,
        Phase::Etcd,
        Phase::Lb,
        Phase::ControlPlane,
        Phase::Workers,
        Phase::Addons,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Preflight => "preflight",
            Phase::Files => "files",
            Phase::Etcd => "etcd",
            Phase::Lb => "lb",
            Phase::ControlPlane => "control-plane",
            Phase::Workers => "workers",
            Phase::Addons => "addons",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        Phase::ALL.iter().copied().find(|p| p.name() == s)
    }

    /// Every phase up to and including this one (preflight aside), for `--to PHASE`.
    pub fn up_to(self) -> Vec<Phase> {
        Phase::ALL
            .iter()
            .copied()
            .filter(|p| *p != Phase::Preflight && *p <= self)
            .collect()
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// etcd's data: moved aside (never deleted) by restore, reset and a member that rejoins.
/// containerd's CRI socket, as the kubelet's config names it (`containerRuntimeEndpoint`).
pub const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";

pub const ETCD_DATA_DIR: &str = "/var/lib/etcd";

/// How a member joining a running cluster first meets it: written by deploy for that first
/// start only (`ETCD_INITIAL_CLUSTER_STATE=existing` and the members it joins); etcd.service
/// reads it after the rendered `/etc/etcd/etcd.env`, so its values win.
pub const ETCD_JOIN_ENV: &str = "/var/lib/hardway/etcd-join.env";

/// A component, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ComponentId {
    Etcd,
    Haproxy,
    KubeApiserver,
    KubeControllerManager,
    KubeScheduler,
    /// br_netfilter, overlay and the sysctls pods need, applied by a oneshot unit.
    KernelSettings,
    Containerd,
    /// The CNI plugins containerd runs (not a daemon).
    CniPlugins,
    Kubelet,
    KubeProxy,
    PodRoutes,
    /// Not a daemon: the client the addons phase runs on the first master.
    Kubectl,
}

/// Which nodes run a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunsOn {
    /// Every node (files only: no component runs everywhere).
    AllNodes,
    /// Nodes with role `etcd`, or the masters when no node has it (stacked etcd).
    EtcdMembers,
    Masters,
    Workers,
    Lb,
    /// The first master in inventory order.
    FirstMaster,
    /// Nodes that must reach every pod IP: the workers, whose pods talk to each other, and the
    /// masters, whose API servers dial pods (aggregated APIs, admission webhooks).
    PodNetwork,
}

/// Where a component's binary is on the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinDir {
    /// `binaries.remote_dir` from the inventory (Kubernetes release binaries, etcd).
    Inventory,
    /// A distribution package's fixed place.
    Fixed(&'static str),
    /// `containerd.bin_dir` from the inventory (by default where Debian's package puts it).
    Containerd,
    /// `cni.bin_dir` from the inventory.
    Cni,
}

/// A port a component listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Port {
    /// etcd's gRPC, for its clients (the API servers, etcdctl, hardway's probe).
    EtcdClient,
    /// etcd's HTTP (`/health`, `/metrics`, `/version`), on loopback, apart from its gRPC:
    /// served on one port, an API server's gRPC request to a member that is shutting down can
    /// get an empty HTTP 200 instead of a gRPC error it would retry elsewhere, and fail
    /// (seen in a `certs renew` here); upstream recommends the split (etcd 3.5.8+,
    /// `--listen-client-http-urls`, etcd-io/etcd#15402).
    EtcdClientHttp,
    EtcdPeer,
    ApiServer,
    /// The load balancer's frontend: `load_balancer.port` in the inventory.
    LoadBalancer,
    ControllerManager,
    Scheduler,
    Kubelet,
    KubeProxyHealth,
}

impl Port {
    pub const ALL: [Port; 9] = [
        Port::EtcdClient,
        Port::EtcdClientHttp,
        Port::EtcdPeer,
        Port::ApiServer,
        Port::LoadBalancer,
        Port::ControllerManager,
        Port::Scheduler,
        Port::Kubelet,
        Port::KubeProxyHealth,
    ];

    /// Upstream's default port number; a cluster's may differ (`Port::number`, in
    /// `inventory/topology.rs`, takes the load balancer's from the inventory).
    pub fn default_number(self) -> u16 {
        match self {
            Port::EtcdClient => 2379,
            Port::EtcdClientHttp => 2382,
            Port::EtcdPeer => 2380,
            Port::ApiServer | Port::LoadBalancer => 6443,
            Port::ControllerManager => 10257,
            Port::Scheduler => 10259,
            Port::Kubelet => 10250,
            Port::KubeProxyHealth => 10256,
        }
    }

    /// The key templates use (`{{ ports.etcd_client }}`).
    pub fn key(self) -> &'static str {
        match self {
            Port::EtcdClient => "etcd_client",
            Port::EtcdClientHttp => "etcd_client_http",
            Port::EtcdPeer => "etcd_peer",
            Port::ApiServer => "api_server",
            Port::LoadBalancer => "load_balancer",
            Port::ControllerManager => "controller_manager",
            Port::Scheduler => "scheduler",
            Port::Kubelet => "kubelet",
            Port::KubeProxyHealth => "kube_proxy_health",
        }
    }
}

/// How a component's units are restarted when one of their files changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// One node at a time, each healthy again before the next: the cluster keeps its quorum
    /// (etcd) or its serving capacity (API servers behind the load balancer).
    Rolling,
    /// Everywhere at once: per-node daemons that share no state.
    Parallel,
    /// Reloaded in place when only what it reads changed (its config, its certificates), so
    /// that it never stops listening — HAProxy's master hands its sockets to the new workers,
    /// and a restart would refuse every client for a moment; restarted, everywhere at once,
    /// when its unit file changed.
    Reload,
}

/// A certificate a component serves or presents, named by one of its unit's flags.
#[derive(Debug, Clone, Copy)]
pub struct CertSite {
    /// How reports name it ("etcd server").
    pub what: &'static str,
    /// The flags (or config-file keys, see [`Component::config_flag`]) naming the files.
    pub cert_flag: &'static str,
    pub key_flag: &'static str,
    /// The PKI profile it is issued from (`pki::PROFILES`; `{node}` = this node): its CA, its
    /// SANs, and through `render::FILES` the place hardway puts it.
    pub profile: &'static str,
    /// The flags (or config-file keys) whose URLs or addresses clients reach this certificate
    /// at: it must cover every host named there (a wildcard address names none). Empty for
    /// client certificates.
    pub urls: &'static [&'static str],
}

pub struct Component {
    pub id: ComponentId,
    pub name: &'static str,
    /// The systemd unit (without `.service`); none for client tools.
    pub unit: Option<&'static str>,
    pub runs_on: RunsOn,
    pub phase: Phase,
    /// Its executable: file name and directory. The process name `ss` reports is the file
    /// name cut to 15 characters, as the kernel does.
    pub binary: (&'static str, BinDir),
    pub ports: &'static [Port],
    pub restart: Restart,
    /// Where the unit's settings may also live in a YAML file named by this flag (the
    /// kubelet's `--config`): verify reads certificate paths from there too.
    pub config_flag: Option<&'static str>,
    pub certs: &'static [CertSite],
    /// Tools it needs on the node besides its binary, with the Debian package of each:
    /// preflight names the missing ones.
    pub needs: &'static [Need],
    /// The argument that makes its binary print its version, when the version matters
    /// (preflight compares it with what the cluster's Kubernetes version supports).
    pub version_arg: Option<&'static str>,
    /// Executables that ship with its binary and go into the same directory: deploy uploads
    /// them with it from `binaries.local_dir` (containerd's shim, ctr and runc, which it finds on
    /// the PATH there).
    pub companions: &'static [&'static str],
}

/// A tool a component needs on the node, looked up on the node's PATH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    pub tool: &'static str,
    pub package: &'static str,
}

/// The distribution packages that install a component's own binary, where they put it: apt is
/// asked about these before preflight installs them (`install = "apt"`), as the binary must be
/// where the inventory's units look for it.
pub const BINARY_PACKAGES: &[(&str, &str)] = &[
    ("containerd", "/usr/bin"),
    ("containernetworking-plugins", "/usr/lib/cni"),
];

/// Every component, in the order units start and restart across phases.
#[rustfmt::skip]
pub const COMPONENTS: &[Component] = &[
    Component {
        id: ComponentId::Etcd, name: "etcd", unit: Some("etcd"), runs_on: RunsOn::EtcdMembers, phase: Phase::Etcd,
        binary: ("etcd", BinDir::Inventory), ports: &[Port::EtcdClient, Port::EtcdClientHttp, Port::EtcdPeer], restart: Restart::Rolling,
        config_flag: None,
        certs: &[
            CertSite { what: "etcd server", cert_flag: "cert-file", key_flag: "key-file", profile: "etcd/server-{node}", urls: &["advertise-client-urls", "listen-client-urls", "listen-client-http-urls"] },
            CertSite { what: "etcd peer", cert_flag: "peer-cert-file", key_flag: "peer-key-file", profile: "etcd/peer-{node}", urls: &["initial-advertise-peer-urls", "listen-peer-urls"] },
        ],
        needs: &[], version_arg: Some("--version"), companions: &[],
    },
    Component {
        id: ComponentId::Haproxy, name: "haproxy", unit: Some("haproxy"), runs_on: RunsOn::Lb, phase: Phase::Lb,
        // HAProxy is a distribution package on the LB host, not a Kubernetes release binary.
        binary: ("haproxy", BinDir::Fixed("/usr/sbin")), ports: &[Port::LoadBalancer], restart: Restart::Reload,
        config_flag: None, certs: &[],
        needs: &[Need { tool: "haproxy", package: "haproxy" }], version_arg: None, companions: &[],
    },
    Component {
        id: ComponentId::KubeApiserver, name: "kube-apiserver", unit: Some("kube-apiserver"), runs_on: RunsOn::Masters, phase: Phase::ControlPlane,
        binary: ("kube-apiserver", BinDir::Inventory), ports: &[Port::ApiServer], restart: Restart::Rolling,
        config_flag: None,
        certs: &[
            CertSite { what: "API server", cert_flag: "tls-cert-file", key_flag: "tls-private-key-file", profile: "apiserver", urls: &["advertise-address", "bind-address"] },
            CertSite { what: "API server kubelet client", cert_flag: "kubelet-client-certificate", key_flag: "kubelet-client-key", profile: "apiserver-kubelet-client", urls: &[] },
            CertSite { what: "API server etcd client", cert_flag: "etcd-certfile", key_flag: "etcd-keyfile", profile: "apiserver-etcd-client", urls: &[] },
            CertSite { what: "front-proxy client", cert_flag: "proxy-client-cert-file", key_flag: "proxy-client-key-file", profile: "front-proxy-client", urls: &[] },
        ],
        needs: &[], version_arg: Some("--version"), companions: &[],
    },
    Component {
        id: ComponentId::KubeControllerManager, name: "kube-controller-manager", unit: Some("kube-controller-manager"), runs_on: RunsOn::Masters, phase: Phase::ControlPlane,
        // Leader-elected: a restart everywhere at once only pauses the controllers.
        binary: ("kube-controller-manager", BinDir::Inventory), ports: &[Port::ControllerManager], restart: Restart::Parallel,
        config_flag: None, certs: &[],
        needs: &[], version_arg: None, companions: &[],
    },
    Component {
        id: ComponentId::KubeScheduler, name: "kube-scheduler", unit: Some("kube-scheduler"), runs_on: RunsOn::Masters, phase: Phase::ControlPlane,
        binary: ("kube-scheduler", BinDir::Inventory), ports: &[Port::Scheduler], restart: Restart::Parallel,
        config_flag: None, certs: &[],
        needs: &[], version_arg: None, companions: &[],
    },
    Component {
        // Placed with the control plane, whose last step applies the API server's kubelet access
        // RBAC with it (`addons::control_plane_plan`): `kubectl logs` works from the workers on.
        id: ComponentId::Kubectl, name: "kubectl", unit: None, runs_on: RunsOn::FirstMaster, phase: Phase::ControlPlane,
        binary: ("kubectl", BinDir::Inventory), ports: &[], restart: Restart::Parallel,
        config_flag: None, certs: &[],
        needs: &[], version_arg: None, companions: &[],
    },
    Component {
        id: ComponentId::KernelSettings, name: "kernel-settings", unit: Some("hardway-kernel"), runs_on: RunsOn::Workers, phase: Phase::Workers,
        // systemd's own tools: nothing to install.
        binary: ("systemd-sysctl", BinDir::Fixed("/usr/lib/systemd")), ports: &[], restart: Restart::Parallel,
        config_flag: None, certs: &[],
        needs: &[], version_arg: None, companions: &[],
    },
    Component {
        id: ComponentId::Containerd, name: "containerd", unit: Some("containerd"), runs_on: RunsOn::Workers, phase: Phase::Workers,
        binary: ("containerd", BinDir::Containerd), ports: &[], restart: Restart::Parallel,
        config_flag: None, certs: &[],
        // The bridge CNI plugin masquerades pod traffic with iptables. containerd itself is the
        // distribution's package where nothing uploads it, if that package fits the version
        // table (preflight asks apt first).
        needs: &[Need { tool: "containerd", package: "containerd" }, Need { tool: "runc", package: "runc" }, Need { tool: "iptables", package: "iptables" }], version_arg: Some("--version"),
        companions: &["containerd-shim-runc-v2", "ctr", "runc"],
    },
    Component {
        // Not a daemon: the plugins containerd runs for every pod sandbox (the bridge plugin
        // with host-local addresses, loopback, and portmap for hostPort), in `cni.bin_dir`.
        id: ComponentId::CniPlugins, name: "cni-plugins", unit: None, runs_on: RunsOn::Workers, phase: Phase::Workers,
        binary: ("bridge", BinDir::Cni), ports: &[], restart: Restart::Parallel,
        config_flag: None, certs: &[],
        // Debian's package puts them in /usr/lib/cni, `cni.bin_dir`'s default.
        needs: &[Need { tool: "bridge", package: "containernetworking-plugins" }], version_arg: None,
        companions: &["host-local", "loopback", "portmap"],
    },
    Component {
        id: ComponentId::Kubelet, name: "kubelet", unit: Some("kubelet"), runs_on: RunsOn::Workers, phase: Phase::Workers,
        binary: ("kubelet", BinDir::Inventory), ports: &[Port::Kubelet], restart: Restart::Parallel,
        // The kubelet names its serving certificate in its config file, not on its command line.
        config_flag: Some("config"),
        certs: &[CertSite { what: "kubelet", cert_flag: "tlsCertFile", key_flag: "tlsPrivateKeyFile", profile: "kubelet-{node}", urls: &["address"] }],
        // crictl: the CRI's command-line client, as kubernetes-the-hard-way installs it.
        needs: &[], version_arg: Some("--version"), companions: &["crictl"],
    },
    Component {
        id: ComponentId::KubeProxy, name: "kube-proxy", unit: Some("kube-proxy"), runs_on: RunsOn::Workers, phase: Phase::Workers,
        binary: ("kube-proxy", BinDir::Inventory), ports: &[Port::KubeProxyHealth], restart: Restart::Parallel,
        config_flag: None, certs: &[],
        needs: &[Need { tool: "iptables", package: "iptables" }, Need { tool: "conntrack", package: "conntrack" }], version_arg: None,
        companions: &[],
    },
    Component {
        // Started with the workers, whose pods it routes to, on the masters too.
        id: ComponentId::PodRoutes, name: "pod-routes", unit: Some("pod-routes"), runs_on: RunsOn::PodNetwork, phase: Phase::Workers,
        binary: ("ip", BinDir::Fixed("/sbin")), ports: &[], restart: Restart::Parallel,
        config_flag: None, certs: &[],
        needs: &[], version_arg: None, companions: &[],
    },
];

impl ComponentId {
    pub fn get(self) -> &'static Component {
        COMPONENTS
            .iter()
            .find(|c| c.id == self)
            .expect("every ComponentId has a row in COMPONENTS")
    }
}

impl Component {
    /// The component whose unit is `unit`.
    pub fn by_unit(unit: &str) -> Option<&'static Component> {
        COMPONENTS.iter().find(|c| c.unit == Some(unit))
    }

    /// The name `ss -p` shows for its process (the kernel keeps 15 bytes of it).
    pub fn process_name(&self) -> &'static str {
        let name = self.binary.0;
        &name[..name.len().min(15)]
    }

    /// The key templates use for its binary and unit (`{{ bin.kube_apiserver }}`).
    pub fn key(&self) -> String {
        self.name.replace('-', "_")
    }
}

/// The phase that starts `unit`; units hardway does not know start in no phase.
pub fn phase_of_unit(unit: &str) -> Option<Phase> {
    Component::by_unit(unit).map(|c| c.phase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_has_one_row_and_every_unit_one_component() {
        let ids: std::collections::BTreeSet<ComponentId> =
            COMPONENTS.iter().map(|c| c.id).collect();
        assert_eq!(ids.len(), COMPONENTS.len());
        let units: Vec<&str> = COMPONENTS.iter().filter_map(|c| c.unit).collect();
        let distinct: std::collections::BTreeSet<&&str> = units.iter().collect();
        assert_eq!(distinct.len(), units.len());
    }

    #[test]
    fn rows_are_in_phase_order() {
        // Restart order follows the table; a row out of phase order would restart a unit
        // before the one it depends on.
        let phases: Vec<Phase> = COMPONENTS.iter().map(|c| c.phase).collect();
        let mut sorted = phases.clone();
        sorted.sort();
        assert_eq!(phases, sorted);
    }

    #[test]
    fn process_names_are_cut_like_the_kernel_cuts_them() {
        assert_eq!(
            ComponentId::KubeControllerManager.get().process_name(),
            "kube-controller"
        );
        assert_eq!(ComponentId::Etcd.get().process_name(), "etcd");
    }

    #[test]
    fn phases_round_trip_and_up_to_stops_at_the_phase() {
        for p in Phase::ALL {
            assert_eq!(Phase::parse(p.name()), Some(p));
        }
        assert_eq!(Phase::Etcd.up_to(), [Phase::Files, Phase::Etcd]);
    }
}
