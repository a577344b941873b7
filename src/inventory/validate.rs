//! The rules an inventory must follow, one method per section, every problem collected.
//!
//! Each section is checked even when an earlier one failed, so a user sees every problem in one
//! run; a value that did not parse is carried as `None` and the rules that need it are skipped
//! rather than reported twice. Rules that need the model itself (which daemon runs on which node,
//! from [`crate::components`]) run last, on the model built from whatever parsed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use ipnet::{IpNet, Ipv4Net};

use super::raw::{RawCluster, RawInventory, RawNode, RawPki, RawSsh, RawSudo};
use super::validator::{ClusterParts, Validator};
use super::values::{self, LABEL_RULE, NAME_RULE};
use super::{
    Bastion, Cluster, Inventory, KeyAlgorithm, LoadBalancer, Node, PkiSettings, Role, SshSettings,
    Sudo, nth_addr, on_node,
};
use crate::components::{COMPONENTS, Port};

mod binaries;
mod lab;
mod runtime;

/// The load balancer listens on the API server's own port unless told otherwise, so clients
/// use the same port with or without one.
const DEFAULT_LB_PORT: u16 = 6443;

/// Kubernetes' convention: the cluster DNS service is the 10th address of the service network.
const DEFAULT_DNS_INDEX: u32 = 10;

/// Longest certificate validity accepted: 100 years. Longer is no use, and far longer (4,000,000
/// days) overflows the date arithmetic that computes a certificate's end.
const MAX_VALIDITY_DAYS: u32 = 36_500;

/// Longest SSH connect timeout accepted: an unreachable node stalls deploy for this long.
const MAX_CONNECT_TIMEOUT_SECS: u64 = 3_600;
/// `ssh.connect_attempts`: three by default (1 s and 2 s apart); six wait 31 s in all.
const DEFAULT_CONNECT_ATTEMPTS: u32 = 3;
const MAX_CONNECT_ATTEMPTS: u32 = 6;

const PORT_ZERO: &str = "port 0 is not a valid port";

fn v4_contains(net: Ipv4Net, ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if net.contains(&v4))
}

impl Validator<'_> {
    /// The inventory, when every value in it parsed; it is valid only if `problems` is empty.
    pub fn validate(&mut self, path: &Path, raw: &RawInventory) -> Option<Inventory> {
        let cluster = self.cluster(&raw.cluster);
        let mut nodes = self.nodes(&raw.nodes, &cluster);
        self.pod_cidrs(&mut nodes, cluster.pod_cidr);
        let load_balancer = self.load_balancer(raw, &nodes, &cluster);
        self.etcd_quorum(&raw.nodes);
        let ssh = self.ssh(&raw.ssh);
        let pki = self.pki(&raw.pki);
        let dir = path.parent().unwrap_or(Path::new("."));
        let binaries = self.binaries(&raw.binaries, cluster.version, dir);
        self.installers(&mut nodes, raw);
        let addons = self.addons(&raw.addons, dir, &nodes, load_balancer.as_ref(), &cluster);
        let extra_args = self.extra_args(&raw.components, cluster.version);
        let component_config = self.component_config(&raw.components, cluster.version);
        let containerd = self.containerd(
            &raw.containerd,
            crate::versions::minor_or_newest(cluster.version),
        );
        let cni = self.cni(&raw.cni);
        let lab = self.lab(&raw.lab);
        let lab_machines = self.lab_machines(&raw.lab, &raw.nodes);
        let inv = Inventory {
            source: path.to_path_buf(),
            cluster: Cluster {
                name: raw.cluster.name.clone(),
                domain: raw.cluster.domain.clone(),
                kubernetes_version: cluster.version?,
                service_cidr: cluster.service_cidr?,
                pod_cidr: cluster.pod_cidr?,
                cluster_dns: cluster.cluster_dns?,
                cluster_domain: cluster.cluster_domain,
            },
            load_balancer,
            ssh,
            pki: pki?,
            binaries,
            nodes,
            addons,
            extra_args,
            component_config,
            containerd: containerd?,
            cni,
            lab: {
                let lab = lab?;
                super::LabSettings {
                    suite: lab.suite,
                    software: lab.software,
                    ..lab_machines?
                }
            },
            warnings: Vec::new(),
        };
        // Rules over the whole model run even when other rules failed, so they are reported in
        // the same run; they only read what parsed (a node with a bad address is not in it).
        self.lb_port_is_free(&inv);
        let mut inv = inv;
        self.release_runtime(&mut inv, &raw.containerd, &raw.cni);
        self.extra_sans_name_their_node(&raw.nodes, &inv);
        Some(inv)
    }

    // -----------------------------------------------------------------------------------------
    // Sections.

    fn cluster(&mut self, c: &RawCluster) -> ClusterParts {
        self.dns_label("cluster.name", &c.name);
        if let Some(domain) = &c.domain {
            self.dns_name("cluster.domain", domain, "DNS domain");
        }
        let cluster_domain = c
            .cluster_domain
            .clone()
            .unwrap_or_else(|| "cluster.local".into());
        self.dns_name("cluster.cluster_domain", &cluster_domain, "DNS domain");
        let version = self.kubernetes_version(c.kubernetes_version.as_deref());
        let service_cidr = self.cidr4("cluster.service_cidr", &c.service_cidr);
        let pod_cidr = self.cidr4("cluster.pod_cidr", &c.pod_cidr);
        if let (Some(s), Some(p)) = (service_cidr, pod_cidr)
            && (s.contains(&p.network()) || p.contains(&s.network()))
        {
            self.error(
                "cluster.pod_cidr",
                format!("pod network {p} overlaps the service network {s}"),
            );
        }
        if let Some(s) = service_cidr
            && s.prefix_len() > 29
        {
            self.error(
                "cluster.service_cidr",
                format!("{s} is too small: it needs room for at least the API and DNS service IPs (use /29 or larger)"),
            );
        }
        let cluster_dns = self.cluster_dns(c.cluster_dns.as_deref(), service_cidr);
        ClusterParts {
            version,
            service_cidr,
            pod_cidr,
            cluster_dns,
            cluster_domain,
        }
    }

    /// The cluster DNS address: given, or the default, which the service network must hold.
    fn cluster_dns(
        &mut self,
        given: Option<&str>,
        service_cidr: Option<Ipv4Net>,
    ) -> Option<Ipv4Addr> {
        let Some(dns) = given else {
            let s = service_cidr?;
            let default = nth_addr(s, DEFAULT_DNS_INDEX);
            // Smaller than /29 is reported above; a /29 has 8 addresses, so no 10th.
            if s.prefix_len() <= 29 && (!s.contains(&default) || default == s.broadcast()) {
                self.error(
                    "cluster.service_cidr",
                    format!(
                        "{s} has no room for the default cluster DNS address, its {DEFAULT_DNS_INDEX}th ({default}): \
                         use /28 or larger, or set cluster.cluster_dns to an address inside it"
                    ),
                );
            }
            return Some(default);
        };
        let Ok(ip) = dns.parse::<Ipv4Addr>() else {
            self.error(
                "cluster.cluster_dns",
                format!("{dns:?} is not a valid IPv4 address"),
            );
            return None;
        };
        let Some(s) = service_cidr else {
            return Some(ip);
        };
        if !s.contains(&ip) {
            self.error(
                "cluster.cluster_dns",
                format!("{ip} is outside service_cidr {s}"),
            );
            return Some(ip);
        }
        // Kubernetes allocates ClusterIPs between the network and broadcast addresses, and the
        // first of them always to `kubernetes.default`: the DNS service cannot have any of those.
        let taken = if ip == s.network() {
            Some(format!("the network address of service_cidr {s}"))
        } else if ip == s.broadcast() {
            Some(format!("the broadcast address of service_cidr {s}"))
        } else if ip == nth_addr(s, 1) {
            Some(format!(
                "the first service IP of {s}, which belongs to the `kubernetes` service (kubernetes.default)"
            ))
        } else {
            None
        };
        if let Some(what) = taken {
            self.error(
                "cluster.cluster_dns",
                format!("{ip} is {what}; the DNS service needs another address in {s}"),
            );
        }
        Some(ip)
    }

    /// `[[nodes]]`: the nodes whose address parsed (the others are reported).
    fn nodes(&mut self, raw: &[RawNode], cluster: &ClusterParts) -> Vec<Node> {
        let mut nodes = Vec::new();
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        let mut addrs: BTreeMap<IpAddr, usize> = BTreeMap::new();
        for (i, n) in raw.iter().enumerate() {
            let f = |k: &str| format!("nodes[{i}].{k}");
            self.dns_label(&f("name"), &n.name);
            if let Some(first) = names.insert(&n.name, i) {
                self.error(
                    &f("name"),
                    format!("duplicate node name {:?} (also nodes[{first}])", n.name),
                );
            }
            let address = self.ip(&f("address"), &n.address);
            if let Some(a) = address {
                if let Some(first) = addrs.insert(a, i) {
                    self.error(
                        &f("address"),
                        format!("duplicate node address {a} (also nodes[{first}])"),
                    );
                }
                for (field, net) in cluster.networks().filter(|(_, net)| v4_contains(*net, a)) {
                    self.error(
                        &f("address"),
                        format!("node address {a} lies inside cluster.{field} {net}"),
                    );
                }
                if a.is_ipv6() {
                    // The pod routes, --node-ip, the kubelet's serving SANs and etcd's URLs
                    // are rendered for the node's address; the cluster networks are IPv4 only.
                    self.error(
                        &f("address"),
                        format!(
                            "{a} is an IPv6 address: the cluster's networks are IPv4 only (its pod routes need an IPv4 next hop, \
                             --node-ip an address of the node's family), so a node's address must be IPv4; reach the node over \
                             IPv6 with ssh_address"
                        ),
                    );
                }
            }
            if n.ssh_port == Some(0) {
                self.error(&f("ssh_port"), PORT_ZERO);
            }
            if let Some(s) = &n.ssh_address {
                self.ssh_address(&f("ssh_address"), s);
            }
            let roles = self.roles(&f("roles"), &n.roles);
            self.extra_sans(&f("extra_sans"), &n.extra_sans);
            if let Some(address) = address {
                nodes.push(Node {
                    name: n.name.clone(),
                    address,
                    roles,
                    ssh_address: n.ssh_address.clone(),
                    ssh_port: n.ssh_port,
                    user: n.user.clone(),
                    extra_sans: n.extra_sans.clone(),
                    pod_cidr: None,
                    install: None,
                });
            }
        }
        if !raw.iter().any(|n| n.has_role("master")) {
            self.error(
                "nodes",
                "no node has role \"master\": a cluster needs at least one control-plane node",
            );
        }
        nodes
    }

    fn roles(&mut self, field: &str, raw: &[String]) -> BTreeSet<Role> {
        if raw.is_empty() {
            self.error(
                field,
                "a node needs at least one role (master, worker, lb, etcd)",
            );
        }
        let mut roles = BTreeSet::new();
        for (j, r) in raw.iter().enumerate() {
            match Role::ALL.iter().find(|(s, _)| s == r) {
                Some((_, role)) => {
                    roles.insert(*role);
                }
                None => self.error(
                    &format!("{field}[{j}]"),
                    format!("unknown role {r:?} (known roles: master, worker, lb, etcd)"),
                ),
            }
        }
        roles
    }

    /// Extra SANs go into the node's own serving certificate (the kubelet's), so each must be
    /// one exact name or address of that node.
    fn extra_sans(&mut self, field: &str, sans: &[String]) {
        for (j, san) in sans.iter().enumerate() {
            let field = format!("{field}[{j}]");
            if san.contains('*') {
                self.error(
                    &field,
                    format!(
                        "{san:?} is a wildcard: a node's serving certificate must name that node only; \
                         list each name or address it answers to"
                    ),
                );
            } else if san.parse::<IpAddr>().is_err()
                && let Some(fault) = values::name_fault(san)
            {
                self.error(
                    &field,
                    format!("{san:?} is neither an IP address nor a DNS name: {fault} (a DNS name is {NAME_RULE})"),
                );
            }
        }
    }

    /// Per-node pod /24s, in inventory order, for the nodes that run a kubelet.
    fn pod_cidrs(&mut self, nodes: &mut [Node], pod_cidr: Option<Ipv4Net>) {
        let Some(p) = pod_cidr else { return };
        let kubelets = nodes.iter().filter(|n| n.has(Role::Worker)).count();
        if p.prefix_len() > 24 {
            self.error(
                "cluster.pod_cidr",
                format!("{p} is smaller than one /24; each worker gets a /24"),
            );
            return;
        }
        let available = 1u64 << (24 - p.prefix_len());
        if kubelets as u64 > available {
            self.error(
                "cluster.pod_cidr",
                format!("{p} holds {available} /24 node ranges but there are {kubelets} workers"),
            );
        } else if let Ok(mut subnets) = p.subnets(24) {
            for n in nodes.iter_mut().filter(|n| n.has(Role::Worker)) {
                n.pod_cidr = subnets.next();
            }
        }
    }

    fn load_balancer(
        &mut self,
        raw: &RawInventory,
        nodes: &[Node],
        cluster: &ClusterParts,
    ) -> Option<LoadBalancer> {
        let lb = self.load_balancer_section(raw, nodes, cluster);
        let lb_node = raw.load_balancer.as_ref().and_then(|l| l.node.as_ref());
        for (i, n) in raw.nodes.iter().enumerate() {
            if n.has_role("lb") && lb_node != Some(&n.name) {
                self.error(
                    &format!("nodes[{i}].roles"),
                    format!(
                        "node {:?} has role \"lb\" but load_balancer.node does not name it",
                        n.name
                    ),
                );
            }
        }
        lb
    }

    fn load_balancer_section(
        &mut self,
        raw: &RawInventory,
        nodes: &[Node],
        cluster: &ClusterParts,
    ) -> Option<LoadBalancer> {
        let Some(lb) = &raw.load_balancer else {
            let masters: Vec<usize> = (0..raw.nodes.len())
                .filter(|&i| raw.nodes[i].has_role("master"))
                .collect();
            if let [_, .., last] = masters[..] {
                self.error_near(
                    "load_balancer",
                    &format!("nodes[{last}].roles"),
                    format!(
                        "{} masters but no [load_balancer]: clients need one address for the API server",
                        masters.len()
                    ),
                );
            }
            return None;
        };
        let address = self.ip("load_balancer.address", &lb.address);
        if let Some(name) = &lb.node {
            match raw.nodes.iter().find(|n| &n.name == name) {
                None => self.error("load_balancer.node", format!("no node named {name:?}")),
                Some(n) if !n.has_role("lb") => self.error(
                    "load_balancer.node",
                    format!("node {name:?} does not have role \"lb\""),
                ),
                Some(_) => {}
            }
        }
        if let Some(dns) = &lb.dns_name {
            self.dns_name("load_balancer.dns_name", dns, "DNS name");
        }
        if let Some(a) = address {
            for (field, net) in cluster.networks().filter(|(_, net)| v4_contains(*net, a)) {
                self.error(
                    "load_balancer.address",
                    format!("{a} lies inside cluster.{field} {net}"),
                );
            }
            // Clients would reach that node instead of the load balancer.
            let why = match &lb.node {
                Some(name) => format!("load_balancer.node is {name:?}"),
                None => "the load balancer is external (no load_balancer.node)".to_string(),
            };
            for n in nodes
                .iter()
                .filter(|n| n.address == a && lb.node.as_ref() != Some(&n.name))
            {
                self.error(
                    "load_balancer.address",
                    format!(
                        "{a} is the address of node {:?}, but {why}: the load balancer needs the address of its own \
                         node, or one no node has",
                        n.name
                    ),
                );
            }
        }
        let port = lb.port.unwrap_or(DEFAULT_LB_PORT);
        if port == 0 {
            self.error("load_balancer.port", PORT_ZERO);
        }
        Some(LoadBalancer {
            node: lb.node.clone(),
            address: address?,
            dns_name: lb.dns_name.clone(),
            port,
        })
    }

    /// Allowed, but an even count of etcd members buys no extra fault tolerance.
    fn etcd_quorum(&mut self, raw: &[RawNode]) {
        let count = |role| raw.iter().filter(|n| n.has_role(role)).count();
        let members = match count("etcd") {
            0 => count("master"),
            dedicated => dedicated,
        };
        if members > 0 && members % 2 == 0 {
            self.warn(
                "nodes",
                format!(
                    "{members} etcd members: an even count tolerates no more failures than {} ({}; quorum is {})",
                    members - 1,
                    crate::etcd::fault_tolerance(members),
                    crate::etcd::quorum(members)
                ),
            );
        }
    }

    fn ssh(&mut self, s: &RawSsh) -> SshSettings {
        let user = s.user.clone().unwrap_or_else(|| "root".into());
        let bastion = s.bastion.as_ref().and_then(|b| {
            let parsed = Bastion::parse(b, &user);
            if parsed.is_none() {
                self.error(
                    "ssh.bastion",
                    format!("{b:?} is not a jump host like \"user@host:22\" ([user@]host[:port])"),
                );
            }
            parsed
        });
        let port = s.port.unwrap_or(22);
        if port == 0 {
            self.error("ssh.port", PORT_ZERO);
        }
        let timeout = s.connect_timeout_secs.unwrap_or(10);
        if timeout == 0 {
            self.error(
                "ssh.connect_timeout_secs",
                "0 seconds gives up before any node can answer; use at least 1",
            );
        } else if timeout > MAX_CONNECT_TIMEOUT_SECS {
            self.error(
                "ssh.connect_timeout_secs",
                format!(
                    "{timeout} seconds is more than an hour (at most {MAX_CONNECT_TIMEOUT_SECS}): an unreachable node \
                     would stall deploy that long"
                ),
            );
        }
        let attempts = s.connect_attempts.unwrap_or(DEFAULT_CONNECT_ATTEMPTS);
        if attempts == 0 {
            self.error(
                "ssh.connect_attempts",
                "0 attempts never connect; use at least 1",
            );
        } else if attempts > MAX_CONNECT_ATTEMPTS {
            self.error(
                "ssh.connect_attempts",
                format!(
                    "{attempts} attempts is more than {MAX_CONNECT_ATTEMPTS} (each waits twice as long as the one before, \
                     from 1 s): an unreachable node would stall deploy for minutes"
                ),
            );
        }
        SshSettings {
            user,
            port,
            identity_file: s.identity_file.as_deref().map(values::expand_home),
            known_hosts: values::expand_home(
                s.known_hosts.as_deref().unwrap_or("~/.ssh/known_hosts"),
            ),
            sudo: match &s.sudo {
                None | Some(RawSudo::Flag(false)) => Sudo::IfNotRoot,
                Some(RawSudo::Flag(true)) => Sudo::Always,
                Some(RawSudo::Mode(m)) if m == "password" => Sudo::WithPassword,
                Some(RawSudo::Mode(m)) => {
                    self.error(
                        "ssh.sudo",
                        format!("{m:?} is not a sudo mode: use true, false or \"password\""),
                    );
                    Sudo::IfNotRoot
                }
            },
            bastion,
            connect_timeout_secs: timeout,
            connect_attempts: attempts,
        }
    }

    fn pki(&mut self, p: &RawPki) -> Option<PkiSettings> {
        let algorithm = match p.algorithm.as_deref() {
            None => Some(KeyAlgorithm::EcdsaP256),
            Some(a) => {
                let parsed = KeyAlgorithm::parse(a);
                if parsed.is_none() {
                    self.error(
                        "pki.algorithm",
                        format!("unknown algorithm {a:?} (use ecdsa-p256, rsa-2048 or rsa-4096)"),
                    );
                }
                parsed
            }
        };
        let ca_validity_days = p.ca_validity_days.unwrap_or(3650);
        let cert_validity_days = p.cert_validity_days.unwrap_or(365);
        if cert_validity_days > MAX_VALIDITY_DAYS {
            self.too_long("pki.cert_validity_days", cert_validity_days);
        } else if cert_validity_days == 0 || cert_validity_days > ca_validity_days {
            self.error(
                "pki.cert_validity_days",
                format!("{cert_validity_days} must be between 1 and ca_validity_days ({ca_validity_days})"),
            );
        }
        if ca_validity_days == 0 {
            self.error("pki.ca_validity_days", "must be at least 1");
        } else if ca_validity_days > MAX_VALIDITY_DAYS {
            self.too_long("pki.ca_validity_days", ca_validity_days);
        }
        Some(PkiSettings {
            algorithm: algorithm?,
            ca_validity_days,
            cert_validity_days,
        })
    }

    fn too_long(&mut self, field: &str, days: u32) {
        self.error(
            field,
            format!("{days} days is more than 100 years (at most {MAX_VALIDITY_DAYS})"),
        );
    }

    // -----------------------------------------------------------------------------------------
    // Rules over the whole model.

    /// A node's extra SANs go into its own certificates (the kubelet's serving certificate, an
    /// etcd member's): naming another node, the load balancer or the API server's names would
    /// let that node's key pass as them to every client that trusts the CA.
    fn extra_sans_name_their_node(&mut self, raw: &[RawNode], inv: &Inventory) {
        let domain = inv.cluster.domain.as_deref();
        let fqdn = |name: &str| domain.map(|d| format!("{name}.{d}").to_ascii_lowercase());
        for (i, n) in raw.iter().enumerate() {
            for (j, san) in n.extra_sans.iter().enumerate() {
                let lower = san.trim_end_matches('.').to_ascii_lowercase();
                let ip = san.parse::<IpAddr>().ok();
                let lb = inv.load_balancer.as_ref();
                let other = |k: usize, o: &RawNode| {
                    k != i
                        && (o.name.eq_ignore_ascii_case(&lower)
                            || fqdn(&o.name).as_deref() == Some(lower.as_str()))
                };
                let other_addr = |k: usize, o: &RawNode| {
                    k != i && ip.is_some() && o.address.parse::<IpAddr>().ok() == ip
                };
                let why = if lb.is_some_and(|lb| Some(lb.address) == ip) {
                    Some("is the load balancer's address".to_string())
                } else if lb
                    .and_then(|lb| lb.dns_name.as_deref())
                    .is_some_and(|d| d.trim_end_matches('.').eq_ignore_ascii_case(&lower))
                {
                    Some("is the load balancer's DNS name".to_string())
                } else if let Some(o) = raw
                    .iter()
                    .enumerate()
                    .find(|(k, o)| other_addr(*k, o))
                    .map(|(_, o)| o)
                {
                    Some(format!("is the address of node {}", o.name))
                } else if let Some(o) = raw
                    .iter()
                    .enumerate()
                    .find(|(k, o)| other(*k, o))
                    .map(|(_, o)| o)
                {
                    Some(format!("is the name of node {}", o.name))
                } else if lower == "kubernetes" || lower.starts_with("kubernetes.default") {
                    Some("is a name of the API server (the `kubernetes` Service)".to_string())
                } else if let Some(IpAddr::V4(a)) = ip
                    && inv.cluster.service_cidr.contains(&a)
                {
                    Some(format!(
                        "is in cluster.service_cidr {}: service addresses belong to Services (the first, {}, to the API server's `kubernetes` Service)",
                        inv.cluster.service_cidr,
                        inv.cluster.first_service_ip()
                    ))
                } else if n.has_role("worker")
                    && (lower == "localhost"
                        || lower.ends_with(".localhost")
                        || ip.is_some_and(|a| a.is_loopback()))
                {
                    Some("is a loopback name or address, on a worker: its key would pass as whatever a client reaches on its own loopback (the control plane's kubeconfigs use https://127.0.0.1)".to_string())
                } else {
                    None
                };
                if let Some(why) = why {
                    self.error(
                        &format!("nodes[{i}].extra_sans[{j}]"),
                        format!("{san:?} {why}: a node's certificate must name that node only (its own names and addresses)"),
                    );
                }
            }
        }
    }

    /// HAProxy binds `load_balancer.port` on every address of its node (`bind *:port`); any
    /// other daemon there listening on the same port would fail to start, or HAProxy would.
    fn lb_port_is_free(&mut self, inv: &Inventory) {
        let Some(lb) = &inv.load_balancer else { return };
        let Some(node) = lb
            .node
            .as_ref()
            .and_then(|name| inv.nodes.iter().find(|n| &n.name == name))
        else {
            return;
        };
        let lb_daemon = COMPONENTS
            .iter()
            .find(|c| c.ports.contains(&Port::LoadBalancer))
            .map_or("the load balancer", |c| c.name);
        for c in on_node(inv, node) {
            for p in c
                .ports
                .iter()
                .filter(|p| **p != Port::LoadBalancer && p.number(inv) == lb.port)
            {
                self.error(
                    "load_balancer.port",
                    format!(
                        "{} is also the port of {} ({}), which runs on the load-balancer node {:?} too: {lb_daemon} \
                         and {} would both bind it; choose another port",
                        lb.port,
                        c.name,
                        p.key(),
                        node.name,
                        c.name
                    ),
                );
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Single values.

    fn ip(&mut self, field: &str, value: &str) -> Option<IpAddr> {
        let ip = value.parse::<IpAddr>().ok();
        if ip.is_none() {
            self.error(field, format!("{value:?} is not a valid IP address"));
        }
        ip
    }

    fn cidr4(&mut self, field: &str, value: &str) -> Option<Ipv4Net> {
        let message = match value.parse::<IpNet>() {
            Ok(IpNet::V4(net)) if net.network() == net.addr() => return Some(net),
            Ok(IpNet::V4(net)) => {
                format!("{value:?} has host bits set; did you mean {}?", net.trunc())
            }
            Ok(IpNet::V6(_)) => {
                format!("{value:?} is IPv6; only IPv4 service and pod networks are supported")
            }
            Err(_) => format!("{value:?} is not a valid CIDR (expected e.g. 10.32.0.0/24)"),
        };
        self.error(field, message);
        None
    }

    /// Names go into unit files, YAML, HAProxy's config and /etc/hosts unquoted: only a DNS
    /// label needs no escaping in all of them.
    fn dns_label(&mut self, field: &str, value: &str) {
        if let Some(fault) = values::label_fault(value) {
            self.error(
                field,
                format!("{value:?} is not a valid DNS label: {fault} (allowed: {LABEL_RULE})"),
            );
        }
    }

    /// Where SSH connects: an IP address or a host name, with the port in `ssh_port` (a
    /// `host:port` here would be looked up as a host name, and fail only when deploy connects).
    fn ssh_address(&mut self, field: &str, value: &str) {
        if value.parse::<IpAddr>().is_ok() {
            return;
        }
        if let Some((host, port)) = value.rsplit_once(':')
            && port.parse::<u16>().is_ok()
        {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            self.error(
                field,
                format!("{value:?} has a port: write ssh_address = {host:?} and ssh_port = {port}"),
            );
            return;
        }
        self.dns_name(field, value, "IP address or host name");
    }

    /// `what` names the value in the message ("DNS domain", "DNS name").
    fn dns_name(&mut self, field: &str, value: &str, what: &str) {
        if let Some(fault) = values::name_fault(value) {
            self.error(
                field,
                format!("{value:?} is not a valid {what}: {fault} (allowed: {NAME_RULE})"),
            );
        }
    }
}
