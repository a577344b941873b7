//! The certificate matrix, as data: [`CAS`] and [`PROFILES`] are tables, expanded against the
//! inventory by [`matrix`] into one [`CertSpec`] per certificate file. Adding a certificate
//! means adding a row, not code.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::inventory::{Inventory, Node};

/// The certificate authorities. The etcd CA is separate from the cluster CA (CIS 2.7), so a
/// kubelet or admin certificate can never authenticate to etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CaId {
    Kubernetes,
    Etcd,
    FrontProxy,
}

pub struct CaProfile {
    pub id: CaId,
    pub file: &'static str,
    pub cn: &'static str,
    /// Only created when the aggregation layer is enabled.
    pub aggregation_only: bool,
}

pub const CAS: &[CaProfile] = &[
    CaProfile {
        id: CaId::Kubernetes,
        file: "ca",
        cn: "kubernetes",
        aggregation_only: false,
    },
    CaProfile {
        id: CaId::Etcd,
        file: "etcd/ca",
        cn: "etcd-ca",
        aggregation_only: false,
    },
    CaProfile {
        id: CaId::FrontProxy,
        file: "front-proxy-ca",
        cn: "front-proxy-ca",
        aggregation_only: true,
    },
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Client,
    Server,
    ServerAndClient,
}

/// Who gets a certificate of a profile: `{node}` in names is replaced per node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Cluster,
    EachWorker,
    EachEtcdMember,
    /// One per cluster, only with the aggregation layer.
    Aggregation,
}

/// Which subject alternative names a profile carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanSet {
    None,
    /// The node's name, FQDN, address and extra_sans (kubelet serving).
    Node,
    /// Every name and address clients use for the API server.
    ApiServer,
    /// The member's name, FQDN, address, localhost and 127.0.0.1.
    EtcdMember,
}

pub struct Profile {
    pub file: &'static str,
    pub ca: CaId,
    pub scope: Scope,
    pub cn: &'static str,
    pub org: Option<&'static str>,
    pub usage: Usage,
    pub sans: SanSet,
}

/// Every leaf certificate a cluster needs (Kubernetes the hard way + kubeadm names).
pub const PROFILES: &[Profile] = &[
    Profile {
        file: "admin",
        ca: CaId::Kubernetes,
        scope: Scope::Cluster,
        cn: "admin",
        org: Some("system:masters"),
        usage: Usage::Client,
        sans: SanSet::None,
    },
    Profile {
        file: "kubelet-{node}",
        ca: CaId::Kubernetes,
        scope: Scope::EachWorker,
        cn: "system:node:{node}",
        org: Some("system:nodes"),
        usage: Usage::ServerAndClient,
        sans: SanSet::Node,
    },
    Profile {
        file: "kube-controller-manager",
        ca: CaId::Kubernetes,
        scope: Scope::Cluster,
        cn: "system:kube-controller-manager",
        org: Some("system:kube-controller-manager"),
        usage: Usage::Client,
        sans: SanSet::None,
    },
    Profile {
        file: "kube-scheduler",
        ca: CaId::Kubernetes,
        scope: Scope::Cluster,
        cn: "system:kube-scheduler",
        org: Some("system:kube-scheduler"),
        usage: Usage::Client,
        sans: SanSet::None,
    },
    Profile {
        file: "kube-proxy",
        ca: CaId::Kubernetes,
        scope: Scope::Cluster,
        cn: "system:kube-proxy",
        org: Some("system:node-proxier"),
        usage: Usage::Client,
        sans: SanSet::None,
    },
    Profile {
        file: "apiserver",
        ca: CaId::Kubernetes,
        scope: Scope::Cluster,
        cn: "kube-apiserver",
        org: None,
        usage: Usage::Server,
        sans: SanSet::ApiServer,
    },
    // No group: system:masters would make it cluster-admin, beyond what RBAC can take away. The
    // addons' ClusterRoleBinding gives its user (the CN) exactly the kubelet API.
    Profile {
        file: "apiserver-kubelet-client",
        ca: CaId::Kubernetes,
        scope: Scope::Cluster,
        cn: "kube-apiserver-kubelet-client",
        org: None,
        usage: Usage::Client,
        sans: SanSet::None,
    },
    Profile {
        file: "etcd/server-{node}",
        ca: CaId::Etcd,
        scope: Scope::EachEtcdMember,
        cn: "{node}",
        org: None,
        usage: Usage::ServerAndClient,
        sans: SanSet::EtcdMember,
    },
    Profile {
        file: "etcd/peer-{node}",
        ca: CaId::Etcd,
        scope: Scope::EachEtcdMember,
        cn: "{node}",
        org: None,
        usage: Usage::ServerAndClient,
        sans: SanSet::EtcdMember,
    },
    Profile {
        file: "apiserver-etcd-client",
        ca: CaId::Etcd,
        scope: Scope::Cluster,
        cn: "kube-apiserver-etcd-client",
        org: None,
        usage: Usage::Client,
        sans: SanSet::None,
    },
    Profile {
        file: "etcd/healthcheck-client",
        ca: CaId::Etcd,
        scope: Scope::Cluster,
        cn: "kube-etcd-healthcheck-client",
        org: None,
        usage: Usage::Client,
        sans: SanSet::None,
    },
    // HAProxy's health checks: with --anonymous-auth=false an API server answers /readyz only to
    // an authenticated client (system:public-info-viewer lets any of them read it).
    Profile {
        file: "haproxy-healthcheck",
        ca: CaId::Kubernetes,
        scope: Scope::Cluster,
        cn: "haproxy-healthcheck",
        org: None,
        usage: Usage::Client,
        sans: SanSet::None,
    },
    Profile {
        file: "front-proxy-client",
        ca: CaId::FrontProxy,
        scope: Scope::Aggregation,
        cn: "front-proxy-client",
        org: None,
        usage: Usage::Client,
        sans: SanSet::None,
    },
];

/// A subject alternative name; ordered so SAN sets compare and print deterministically.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum San {
    Dns(String),
    Ip(IpAddr),
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Dns(d) => write!(f, "DNS:{d}"),
            San::Ip(ip) => write!(f, "IP:{ip}"),
        }
    }
}

impl San {
    fn parse(s: &str) -> San {
        s.parse::<IpAddr>()
            .map(San::Ip)
            .unwrap_or_else(|_| San::Dns(s.to_string()))
    }
}

/// One leaf certificate the inventory calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    /// Path below the PKI directory without extension, e.g. `etcd/server-kmaster1`.
    pub name: String,
    pub ca: CaId,
    pub cn: String,
    pub orgs: Vec<String>,
    pub usage: Usage,
    pub sans: BTreeSet<San>,
    pub node: Option<String>,
}

/// Expands [`PROFILES`] against the inventory.
pub fn matrix(inv: &Inventory) -> Vec<CertSpec> {
    let mut out = Vec::new();
    for p in PROFILES {
        let nodes: Vec<Option<&Node>> = match p.scope {
            Scope::Cluster => vec![None],
            Scope::Aggregation if inv.addons.aggregation => vec![None],
            Scope::Aggregation => vec![],
            Scope::EachWorker => inv.workers().map(Some).collect(),
            Scope::EachEtcdMember => inv.etcd_members().into_iter().map(Some).collect(),
        };
        for node in nodes {
            let subst = |s: &str| match node {
                Some(n) => s.replace("{node}", &n.name),
                None => s.to_string(),
            };
            out.push(CertSpec {
                name: subst(p.file),
                ca: p.ca,
                cn: subst(p.cn),
                orgs: p.org.map(|o| vec![o.to_string()]).unwrap_or_default(),
                usage: p.usage,
                sans: sans_for(inv, p.sans, node),
                node: node.map(|n| n.name.clone()),
            });
        }
    }
    out
}

fn sans_for(inv: &Inventory, set: SanSet, node: Option<&Node>) -> BTreeSet<San> {
    let mut s = BTreeSet::new();
    let add_node = |s: &mut BTreeSet<San>, n: &Node| {
        s.insert(San::Dns(n.name.clone()));
        if let Some(fqdn) = inv.fqdn(n) {
            s.insert(San::Dns(fqdn));
        }
        s.insert(San::Ip(n.address));
        s.extend(n.extra_sans.iter().map(|x| San::parse(x)));
    };
    match set {
        SanSet::None => {}
        SanSet::Node => add_node(&mut s, node.expect("per-node profile")),
        SanSet::EtcdMember => {
            add_node(&mut s, node.expect("per-node profile"));
            s.insert(San::Dns("localhost".into()));
            s.insert(San::Ip(IpAddr::from([127, 0, 0, 1])));
        }
        SanSet::ApiServer => {
            if let Some(lb) = &inv.load_balancer {
                s.insert(San::Ip(lb.address));
                if let Some(d) = &lb.dns_name {
                    s.insert(San::Dns(d.clone()));
                }
            }
            for m in inv.masters() {
                add_node(&mut s, m);
            }
            s.insert(San::Ip(IpAddr::from([127, 0, 0, 1])));
            s.insert(San::Dns("localhost".into()));
            s.insert(San::Ip(IpAddr::V4(inv.cluster.first_service_ip())));
            for d in ["kubernetes", "kubernetes.default", "kubernetes.default.svc"] {
                s.insert(San::Dns(d.into()));
            }
            s.insert(San::Dns(format!(
                "kubernetes.default.svc.{}",
                inv.cluster.cluster_domain
            )));
        }
    }
    s
}

/// The CAs this inventory needs (the front-proxy CA only with the aggregation layer).
pub(crate) fn cas_for(inv: &Inventory) -> Vec<&'static CaProfile> {
    CAS.iter()
        .filter(|c| inv.addons.aggregation || !c.aggregation_only)
        .collect()
}

pub(crate) fn ca_profile(id: CaId) -> &'static CaProfile {
    CAS.iter()
        .find(|c| c.id == id)
        .expect("every CaId has a row in CAS")
}

/// The directories below the PKI directory that these files live in (`etcd`), each once.
pub(crate) fn subdirs<'a>(files: impl IntoIterator<Item = &'a str>) -> BTreeSet<PathBuf> {
    files
        .into_iter()
        .filter_map(|f| Path::new(f).parent())
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .collect()
}
