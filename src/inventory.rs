//! Stage 1 of the pipeline: read `inventory.toml` and turn it into a validated [`Inventory`].
//!
//! Parsing happens in two steps. Serde reads the file into "raw" structs that mirror the TOML
//! (unknown keys are refused there); then [`validate`] checks what serde cannot — addresses,
//! CIDRs, overlaps, roles, names — and collects *every* problem instead of stopping at the first,
//! because a student fixing an inventory wants the whole list at once. Each problem carries the
//! field path and the line/column it was found at, looked up in a span-preserving `toml_edit`
//! parse of the same text.
//!
//! Nothing in this module writes to disk, so bad input can never change anything.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use ipnet::{IpNet, Ipv4Net};
use serde::Deserialize;

/// One problem found in an inventory, with where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the offending field, e.g. `nodes[2].address`; empty when unknown.
    pub field: String,
    /// 1-based line and column, when the field could be located in the file.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

/// Why an inventory could not be loaded. Callers branch on `Invalid` to print every problem.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("{path}: cannot read inventory: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}", render_problems(path, problems))]
    Invalid { path: PathBuf, problems: Vec<Problem> },
}

fn render_problems(path: &Path, problems: &[Problem]) -> String {
    let mut out = format!("{}: {} problem(s) in inventory", path.display(), problems.len());
    for p in problems {
        out.push('\n');
        out.push_str(&p.display_in(path));
    }
    out
}

impl Problem {
    /// `file:line:col: field: message`, the shape editors and compilers use.
    pub fn display_in(&self, path: &Path) -> String {
        let pos = match self.position {
            Some((l, c)) => format!("{}:{l}:{c}", path.display()),
            None => path.display().to_string(),
        };
        if self.field.is_empty() {
            format!("{pos}: {}", self.message)
        } else {
            format!("{pos}: {}: {}", self.field, self.message)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw, serde-facing shape of the file.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInventory {
    cluster: RawCluster,
    load_balancer: Option<RawLoadBalancer>,
    #[serde(default)]
    ssh: RawSsh,
    #[serde(default)]
    pki: RawPki,
    #[serde(default)]
    binaries: RawBinaries,
    #[serde(default)]
    nodes: Vec<RawNode>,
    #[serde(default)]
    addons: RawAddons,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: String,
    domain: Option<String>,
    kubernetes_version: String,
    service_cidr: String,
    pod_cidr: String,
    cluster_dns: Option<String>,
    cluster_domain: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLoadBalancer {
    node: Option<String>,
    address: String,
    dns_name: Option<String>,
    port: Option<u16>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSsh {
    user: Option<String>,
    port: Option<u16>,
    identity_file: Option<String>,
    known_hosts: Option<String>,
    sudo: Option<bool>,
    bastion: Option<String>,
    connect_timeout_secs: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPki {
    algorithm: Option<String>,
    ca_validity_days: Option<u32>,
    cert_validity_days: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBinaries {
    remote_dir: Option<String>,
    local_dir: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: String,
    address: String,
    roles: Vec<String>,
    ssh_address: Option<String>,
    ssh_port: Option<u16>,
    user: Option<String>,
    #[serde(default)]
    extra_sans: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAddons {
    metallb: Option<RawMetallb>,
    aggregation: Option<RawAggregation>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetallb {
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    addresses: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAggregation {
    #[serde(default)]
    enabled: bool,
}

// ---------------------------------------------------------------------------------------------
// Validated model, used by every later stage.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Master,
    Worker,
    Lb,
    Etcd,
}

impl Role {
    const ALL: [(&'static str, Role); 4] = [
        ("master", Role::Master),
        ("worker", Role::Worker),
        ("lb", Role::Lb),
        ("etcd", Role::Etcd),
    ];

    pub fn as_str(self) -> &'static str {
        Self::ALL.iter().find(|(_, r)| *r == self).map(|(s, _)| *s).unwrap_or("?")
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    EcdsaP256,
    Rsa2048,
    Rsa4096,
}

impl KeyAlgorithm {
    const ALL: [(&'static str, KeyAlgorithm); 3] = [
        ("ecdsa-p256", KeyAlgorithm::EcdsaP256),
        ("rsa-2048", KeyAlgorithm::Rsa2048),
        ("rsa-4096", KeyAlgorithm::Rsa4096),
    ];

    pub fn as_str(self) -> &'static str {
        Self::ALL.iter().find(|(_, a)| *a == self).map(|(s, _)| *s).unwrap_or("?")
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, a)| *a)
    }
}

#[derive(Debug, Clone)]
pub struct Cluster {
    pub name: String,
    pub domain: Option<String>,
    pub kubernetes_version: String,
    pub service_cidr: Ipv4Net,
    pub pod_cidr: Ipv4Net,
    pub cluster_dns: Ipv4Addr,
    pub cluster_domain: String,
}

impl Cluster {
    /// The first usable service address: the ClusterIP of `kubernetes.default`, which must be in
    /// the API server certificate.
    pub fn first_service_ip(&self) -> Ipv4Addr {
        nth_addr(self.service_cidr, 1)
    }
}

#[derive(Debug, Clone)]
pub struct LoadBalancer {
    pub node: Option<String>,
    pub address: IpAddr,
    pub dns_name: Option<String>,
    pub port: u16,
}

#[derive(Debug, Clone)]
pub struct SshSettings {
    pub user: String,
    pub port: u16,
    pub identity_file: Option<PathBuf>,
    pub known_hosts: PathBuf,
    pub sudo: bool,
    pub bastion: Option<Bastion>,
    pub connect_timeout_secs: u64,
}

/// A jump host: `[user@]host[:port]`; the user defaults to `ssh.user`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bastion {
    pub user: String,
    pub host: String,
    pub port: u16,
}

impl Bastion {
    pub fn parse(s: &str, default_user: &str) -> Option<Bastion> {
        let (user, rest) = match s.split_once('@') {
            Some((u, r)) if !u.is_empty() => (u.to_string(), r),
            Some(_) => return None,
            None => (default_user.to_string(), s),
        };
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().ok().filter(|p| *p != 0)?),
            None => (rest, 22),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(char::is_whitespace) {
            return None;
        }
        Some(Bastion { user, host: host.to_string(), port })
    }
}

#[derive(Debug, Clone)]
pub struct PkiSettings {
    pub algorithm: KeyAlgorithm,
    pub ca_validity_days: u32,
    pub cert_validity_days: u32,
}

#[derive(Debug, Clone)]
pub struct Binaries {
    pub remote_dir: String,
    pub local_dir: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub address: IpAddr,
    pub roles: BTreeSet<Role>,
    pub ssh_address: Option<String>,
    pub ssh_port: Option<u16>,
    pub user: Option<String>,
    pub extra_sans: Vec<String>,
    /// The node's slice of the pod network (a /24), for nodes that run a kubelet.
    pub pod_cidr: Option<Ipv4Net>,
}

impl Node {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Metallb {
    pub enabled: bool,
    /// As written by the user (ranges `a-b` or CIDRs); already checked.
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Addons {
    pub metallb: Metallb,
    pub aggregation: bool,
}

/// A validated inventory. Every address, CIDR and role in here has been checked.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub source: PathBuf,
    pub cluster: Cluster,
    pub load_balancer: Option<LoadBalancer>,
    pub ssh: SshSettings,
    pub pki: PkiSettings,
    pub binaries: Binaries,
    pub nodes: Vec<Node>,
    pub addons: Addons,
    /// Things that are allowed but probably wrong (an even number of etcd members).
    pub warnings: Vec<Problem>,
}

impl Inventory {
    pub fn masters(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.has(Role::Master))
    }

    pub fn workers(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.has(Role::Worker))
    }

    /// etcd runs on the nodes with role `etcd`, or on the masters when no node has that role
    /// (stacked etcd, as in the seed and kubeadm's default).
    pub fn etcd_members(&self) -> Vec<&Node> {
        let dedicated: Vec<&Node> = self.nodes.iter().filter(|n| n.has(Role::Etcd)).collect();
        if dedicated.is_empty() { self.masters().collect() } else { dedicated }
    }

    pub fn is_etcd_member(&self, node: &Node) -> bool {
        self.etcd_members().iter().any(|m| m.name == node.name)
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// `<name>.<domain>`, when the cluster has a domain.
    pub fn fqdn(&self, node: &Node) -> Option<String> {
        self.cluster.domain.as_ref().map(|d| format!("{}.{d}", node.name))
    }

    /// Where clients outside the control plane reach the API: the load balancer, or the only
    /// master when there is none.
    pub fn api_endpoint(&self) -> (IpAddr, u16) {
        match &self.load_balancer {
            Some(lb) => (lb.address, lb.port),
            None => (self.masters().next().map(|m| m.address).expect("validated: one master"), 6443),
        }
    }

    pub fn api_server_url(&self) -> String {
        let (ip, port) = self.api_endpoint();
        format!("https://{}:{port}", host_for_url(ip))
    }

    pub fn etcd_client_urls(&self) -> String {
        self.etcd_members()
            .iter()
            .map(|m| format!("https://{}:2379", host_for_url(m.address)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// `[v6]` in URLs, plain for v4.
pub fn host_for_url(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

fn v4_contains(net: Ipv4Net, ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if net.contains(&v4))
}

fn nth_addr(net: Ipv4Net, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()).wrapping_add(n))
}

// ---------------------------------------------------------------------------------------------
// Loading.

/// Reads and validates an inventory file.
pub fn load(path: &Path) -> Result<Inventory, InventoryError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| InventoryError::Read { path: path.to_path_buf(), source })?;
    parse(path, &text)
}

/// Validates inventory text; `path` is only used in messages and to resolve relative paths.
pub fn parse(path: &Path, text: &str) -> Result<Inventory, InventoryError> {
    let invalid = |problems| InventoryError::Invalid { path: path.to_path_buf(), problems };
    let doc = match toml_edit::Document::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let position = e.span().map(|s| line_col(text, s.start));
            return Err(invalid(vec![Problem {
                field: String::new(),
                position,
                message: format!("not valid TOML: {}", e.message().trim()),
            }]));
        }
    };
    let raw: RawInventory = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let (field, position) = match e.span() {
                Some(span) => (path_at(&doc, span.start), Some(line_col(text, span.start))),
                None => (String::new(), None),
            };
            return Err(invalid(vec![Problem { field, position, message: e.message().trim().to_string() }]));
        }
    };
    let mut v = Validator { text, doc: &doc, problems: Vec::new(), warnings: Vec::new() };
    let inv = v.validate(path, raw);
    if v.problems.is_empty() {
        let mut inv = inv.expect("no problems means a complete inventory");
        inv.warnings = v.warnings;
        Ok(inv)
    } else {
        Err(invalid(v.problems))
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, col)
}

/// Finds the dotted path of the innermost key or value whose span covers `offset`.
fn path_at(doc: &toml_edit::Document<&str>, offset: usize) -> String {
    fn walk(item: &toml_edit::Item, prefix: &str, offset: usize, best: &mut Option<String>) {
        let covers = |span: Option<std::ops::Range<usize>>| span.is_some_and(|s| s.contains(&offset));
        if let Some(t) = item.as_table_like() {
            for (k, v) in t.iter() {
                let p = if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
                if covers(t.get_key_value(k).and_then(|(k, _)| k.span())) || covers(v.span()) {
                    *best = Some(p.clone());
                }
                walk(v, &p, offset, best);
            }
        } else if let toml_edit::Item::ArrayOfTables(a) = item {
            for (i, t) in a.iter().enumerate() {
                let p = format!("{prefix}[{i}]");
                if covers(t.span()) {
                    *best = Some(p.clone());
                }
                walk(&toml_edit::Item::Table(t.clone()), &p, offset, best);
            }
        }
    }
    let mut best = None;
    walk(doc.as_item(), "", offset, &mut best);
    best.unwrap_or_default()
}

/// Looks up a dotted path like `nodes[2].roles[0]` in the parsed document and returns the span
/// of the deepest part of it that exists (so a missing key points at its table).
fn span_of(doc: &toml_edit::Document<&str>, field: &str) -> Option<std::ops::Range<usize>> {
    let mut item: &toml_edit::Item = doc.as_item();
    let mut span = None;
    for seg in field.split('.') {
        let (key, index) = match seg.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (seg, None),
        };
        let key_span = item.as_table_like().and_then(|t| t.get_key_value(key)).and_then(|(k, _)| k.span());
        let Some(next) = item.get(key) else { break };
        item = next;
        span = item.span().or(key_span).or(span);
        if let Some(i) = index {
            let Some(next) = item.get(i) else { break };
            item = next;
            span = item.span().or(span);
        }
    }
    span
}

struct Validator<'a> {
    text: &'a str,
    doc: &'a toml_edit::Document<&'a str>,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Validator<'_> {
    fn problem(&self, field: &str, message: String) -> Problem {
        let position = span_of(self.doc, field).map(|s| line_col(self.text, s.start));
        Problem { field: field.to_string(), position, message }
    }

    fn error(&mut self, field: &str, message: impl Into<String>) {
        let p = self.problem(field, message.into());
        self.problems.push(p);
    }

    fn warn(&mut self, field: &str, message: impl Into<String>) {
        let p = self.problem(field, message.into());
        self.warnings.push(p);
    }

    fn ip(&mut self, field: &str, value: &str) -> Option<IpAddr> {
        match value.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.error(field, format!("{value:?} is not a valid IP address"));
                None
            }
        }
    }

    fn cidr4(&mut self, field: &str, value: &str) -> Option<Ipv4Net> {
        match value.parse::<IpNet>() {
            Ok(IpNet::V4(net)) if net.network() == net.addr() => Some(net),
            Ok(IpNet::V4(net)) => {
                self.error(field, format!("{value:?} has host bits set; did you mean {}?", net.trunc()));
                None
            }
            Ok(IpNet::V6(_)) => {
                self.error(field, format!("{value:?} is IPv6; only IPv4 service and pod networks are supported"));
                None
            }
            Err(_) => {
                self.error(field, format!("{value:?} is not a valid CIDR (expected e.g. 10.32.0.0/24)"));
                None
            }
        }
    }

    fn dns_label(&mut self, field: &str, value: &str) {
        if !is_dns_label(value) {
            self.error(
                field,
                format!(
                    "{value:?} is not a valid DNS label (1-63 lowercase letters, digits or '-', \
                     starting and ending with a letter or digit)"
                ),
            );
        }
    }

    fn validate(&mut self, path: &Path, raw: RawInventory) -> Option<Inventory> {

        // [cluster]
        let c = &raw.cluster;
        self.dns_label("cluster.name", &c.name);
        if let Some(domain) = &c.domain
            && (domain.is_empty() || !domain.split('.').all(is_dns_label)) {
                self.error("cluster.domain", format!("{domain:?} is not a valid DNS domain"));
            }
        let cluster_domain = c.cluster_domain.clone().unwrap_or_else(|| "cluster.local".into());
        if !cluster_domain.split('.').all(is_dns_label) {
            self.error("cluster.cluster_domain", format!("{cluster_domain:?} is not a valid DNS domain"));
        }
        let version = c.kubernetes_version.trim_start_matches('v');
        let parts: Vec<&str> = version.split('.').collect();
        if parts.len() != 3 || parts.iter().any(|p| p.parse::<u32>().is_err()) {
            self.error(
                "cluster.kubernetes_version",
                format!("{:?} is not a version like \"1.31.2\"", c.kubernetes_version),
            );
        }
        let service_cidr = self.cidr4("cluster.service_cidr", &c.service_cidr);
        let pod_cidr = self.cidr4("cluster.pod_cidr", &c.pod_cidr);
        if let (Some(s), Some(p)) = (service_cidr, pod_cidr)
            && (s.contains(&p.network()) || p.contains(&s.network())) {
                self.error("cluster.pod_cidr", format!("pod network {p} overlaps the service network {s}"));
            }
        if let Some(s) = service_cidr
            && s.prefix_len() > 29 {
                self.error("cluster.service_cidr", format!("{s} is too small: it needs room for at least the API and DNS service IPs (use /29 or larger)"));
            }
        let cluster_dns = match (&c.cluster_dns, service_cidr) {
            (Some(dns), svc) => match dns.parse::<Ipv4Addr>() {
                Ok(ip) => {
                    if let Some(s) = svc
                        && !s.contains(&ip) {
                            self.error("cluster.cluster_dns", format!("{ip} is outside service_cidr {s}"));
                        }
                    Some(ip)
                }
                Err(_) => {
                    self.error("cluster.cluster_dns", format!("{dns:?} is not a valid IPv4 address"));
                    None
                }
            },
            (None, Some(s)) => Some(nth_addr(s, 10)),
            (None, None) => None,
        };

        // [[nodes]]
        let mut nodes = Vec::new();
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        let mut addrs: BTreeMap<IpAddr, usize> = BTreeMap::new();
        for (i, n) in raw.nodes.iter().enumerate() {
            let f = |k: &str| format!("nodes[{i}].{k}");
            self.dns_label(&f("name"), &n.name);
            if let Some(first) = names.insert(n.name.clone(), i) {
                self.error(&f("name"), format!("duplicate node name {:?} (also nodes[{first}])", n.name));
            }
            let address = self.ip(&f("address"), &n.address);
            if let Some(a) = address {
                if let Some(first) = addrs.insert(a, i) {
                    self.error(&f("address"), format!("duplicate node address {a} (also nodes[{first}])"));
                }
                for (field, net) in [("service_cidr", service_cidr), ("pod_cidr", pod_cidr)] {
                    if let Some(net) = net
                        && v4_contains(net, a) {
                            self.error(&f("address"), format!("node address {a} lies inside cluster.{field} {net}"));
                        }
                }
            }
            let mut roles = BTreeSet::new();
            if n.roles.is_empty() {
                self.error(&f("roles"), "a node needs at least one role (master, worker, lb, etcd)");
            }
            for (j, r) in n.roles.iter().enumerate() {
                match Role::ALL.iter().find(|(s, _)| s == r) {
                    Some((_, role)) => {
                        roles.insert(*role);
                    }
                    None => self.error(
                        &format!("nodes[{i}].roles[{j}]"),
                        format!("unknown role {r:?} (known roles: master, worker, lb, etcd)"),
                    ),
                }
            }
            for (j, san) in n.extra_sans.iter().enumerate() {
                if san.parse::<IpAddr>().is_err() && !san.split('.').all(|l| is_dns_label(l) || l == "*") {
                    self.error(&format!("nodes[{i}].extra_sans[{j}]"), format!("{san:?} is neither an IP address nor a DNS name"));
                }
            }
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
                });
            }
        }
        let masters = raw.nodes.iter().filter(|n| n.roles.iter().any(|r| r == "master")).count();
        if masters == 0 {
            self.error("nodes", "no node has role \"master\": a cluster needs at least one control-plane node");
        }

        // Per-node pod /24s, in inventory order, for the nodes that run a kubelet.
        if let Some(p) = pod_cidr {
            let kubelets = nodes.iter().filter(|n| n.has(Role::Worker)).count();
            if p.prefix_len() > 24 {
                self.error("cluster.pod_cidr", format!("{p} is smaller than one /24; each worker gets a /24"));
            } else {
                let available = 1u64 << (24 - p.prefix_len());
                if kubelets as u64 > available {
                    self.error("cluster.pod_cidr", format!("{p} holds {available} /24 node ranges but there are {kubelets} workers"));
                } else if let Ok(mut subnets) = p.subnets(24) {
                    for n in nodes.iter_mut().filter(|n| n.has(Role::Worker)) {
                        n.pod_cidr = subnets.next();
                    }
                }
            }
        }

        // [load_balancer]
        let load_balancer = match &raw.load_balancer {
            None => {
                if masters > 1 {
                    self.error(
                        "load_balancer",
                        format!("{masters} masters but no [load_balancer]: clients need one address for the API server"),
                    );
                }
                None
            }
            Some(lb) => {
                let address = self.ip("load_balancer.address", &lb.address);
                if let Some(name) = &lb.node {
                    match raw.nodes.iter().find(|n| &n.name == name) {
                        None => self.error("load_balancer.node", format!("no node named {name:?}")),
                        Some(n) if !n.roles.iter().any(|r| r == "lb") => {
                            self.error("load_balancer.node", format!("node {name:?} does not have role \"lb\""))
                        }
                        Some(_) => {}
                    }
                }
                if let Some(dns) = &lb.dns_name
                    && !dns.split('.').all(is_dns_label) {
                        self.error("load_balancer.dns_name", format!("{dns:?} is not a valid DNS name"));
                    }
                if let Some(a) = address {
                    for (field, net) in [("service_cidr", service_cidr), ("pod_cidr", pod_cidr)] {
                        if let Some(net) = net
                            && v4_contains(net, a) {
                                self.error("load_balancer.address", format!("{a} lies inside cluster.{field} {net}"));
                            }
                    }
                }
                let port = lb.port.unwrap_or(6443);
                if port == 0 {
                    self.error("load_balancer.port", "port 0 is not a valid port");
                }
                address.map(|address| LoadBalancer { node: lb.node.clone(), address, dns_name: lb.dns_name.clone(), port })
            }
        };
        for (i, n) in raw.nodes.iter().enumerate() {
            if n.roles.iter().any(|r| r == "lb") && raw.load_balancer.as_ref().and_then(|l| l.node.as_ref()) != Some(&n.name) {
                self.error(
                    &format!("nodes[{i}].roles"),
                    format!("node {:?} has role \"lb\" but load_balancer.node does not name it", n.name),
                );
            }
        }

        // etcd quorum sizing: allowed, but an even count buys no extra fault tolerance.
        let dedicated = raw.nodes.iter().filter(|n| n.roles.iter().any(|r| r == "etcd")).count();
        let members = if dedicated > 0 { dedicated } else { masters };
        if members > 0 && members % 2 == 0 {
            self.warn(
                "nodes",
                format!(
                    "{members} etcd members: an even count tolerates no more failures than {} (quorum is {})",
                    members - 1,
                    members / 2 + 1
                ),
            );
        }

        // [ssh]
        let s = &raw.ssh;
        let user = s.user.clone().unwrap_or_else(|| "root".into());
        let bastion = match &s.bastion {
            None => None,
            Some(b) => {
                let parsed = Bastion::parse(b, &user);
                if parsed.is_none() {
                    self.error("ssh.bastion", format!("{b:?} is not a jump host like \"user@host:22\" ([user@]host[:port])"));
                }
                parsed
            }
        };
        let ssh = SshSettings {
            user,
            port: s.port.unwrap_or(22),
            identity_file: s.identity_file.as_deref().map(expand_home),
            known_hosts: expand_home(s.known_hosts.as_deref().unwrap_or("~/.ssh/known_hosts")),
            sudo: s.sudo.unwrap_or(false),
            bastion,
            connect_timeout_secs: s.connect_timeout_secs.unwrap_or(10),
        };

        // [pki]
        let algorithm = match raw.pki.algorithm.as_deref() {
            None => Some(KeyAlgorithm::EcdsaP256),
            Some(a) => {
                let parsed = KeyAlgorithm::parse(a);
                if parsed.is_none() {
                    self.error("pki.algorithm", format!("unknown algorithm {a:?} (use ecdsa-p256, rsa-2048 or rsa-4096)"));
                }
                parsed
            }
        };
        let ca_validity_days = raw.pki.ca_validity_days.unwrap_or(3650);
        let cert_validity_days = raw.pki.cert_validity_days.unwrap_or(365);
        if cert_validity_days == 0 || cert_validity_days > ca_validity_days {
            self.error(
                "pki.cert_validity_days",
                format!("{cert_validity_days} must be between 1 and ca_validity_days ({ca_validity_days})"),
            );
        }
        if ca_validity_days == 0 {
            self.error("pki.ca_validity_days", "must be at least 1");
        }

        // [binaries]
        let remote_dir = raw.binaries.remote_dir.clone().unwrap_or_else(|| "/usr/local/bin".into());
        if !remote_dir.starts_with('/') {
            self.error("binaries.remote_dir", format!("{remote_dir:?} must be an absolute path on the nodes"));
        }

        // [addons]
        let mut metallb = Metallb::default();
        if let Some(m) = &raw.addons.metallb {
            metallb.enabled = m.enabled;
            metallb.addresses = m.addresses.clone();
            if m.enabled && m.addresses.is_empty() {
                self.error("addons.metallb.addresses", "MetalLB is enabled but has no address pool");
            }
            for (i, a) in m.addresses.iter().enumerate() {
                let field = format!("addons.metallb.addresses[{i}]");
                let Some((lo, hi)) = parse_pool(a) else {
                    self.error(&field, format!("{a:?} is neither an IPv4 range \"a.b.c.d-a.b.c.e\" nor a CIDR"));
                    continue;
                };
                if lo > hi {
                    self.error(&field, format!("{a:?}: range start is after its end"));
                    continue;
                }
                let in_pool = |ip: IpAddr| match ip {
                    IpAddr::V4(v4) => (lo..=hi).contains(&u32::from(v4)),
                    IpAddr::V6(_) => false,
                };
                for n in &nodes {
                    if in_pool(n.address) {
                        self.error(&field, format!("pool {a} contains node {}'s address {}", n.name, n.address));
                    }
                }
                if let Some(lb) = &load_balancer
                    && in_pool(lb.address) {
                        self.error(&field, format!("pool {a} contains the load balancer address {}", lb.address));
                    }
                for (name, net) in [("service_cidr", service_cidr), ("pod_cidr", pod_cidr)] {
                    if let Some(net) = net {
                        let (nlo, nhi) = (u32::from(net.network()), u32::from(net.broadcast()));
                        if lo <= nhi && nlo <= hi {
                            self.error(&field, format!("pool {a} overlaps cluster.{name} {net}"));
                        }
                    }
                }
            }
        }
        let addons = Addons { metallb, aggregation: raw.addons.aggregation.as_ref().is_some_and(|a| a.enabled) };

        if !self.problems.is_empty() {
            return None;
        }
        Some(Inventory {
            source: path.to_path_buf(),
            cluster: Cluster {
                name: c.name.clone(),
                domain: c.domain.clone(),
                kubernetes_version: version.to_string(),
                service_cidr: service_cidr?,
                pod_cidr: pod_cidr?,
                cluster_dns: cluster_dns?,
                cluster_domain,
            },
            load_balancer,
            ssh,
            pki: PkiSettings { algorithm: algorithm?, ca_validity_days, cert_validity_days },
            binaries: Binaries { remote_dir, local_dir: raw.binaries.local_dir.as_deref().map(expand_home) },
            nodes,
            addons,
            warnings: Vec::new(),
        })
    }
}

/// RFC 1123 label, lowercase as Kubernetes node names must be.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Parses a MetalLB pool entry into an inclusive IPv4 range.
fn parse_pool(s: &str) -> Option<(u32, u32)> {
    if let Some((a, b)) = s.split_once('-') {
        let a: Ipv4Addr = a.trim().parse().ok()?;
        let b: Ipv4Addr = b.trim().parse().ok()?;
        return Some((u32::from(a), u32::from(b)));
    }
    let net: Ipv4Net = s.trim().parse().ok()?;
    Some((u32::from(net.network()), u32::from(net.broadcast())))
}

/// `~/x` → `$HOME/x`. Other paths stay as written: relative ones are relative to the directory
/// hardway runs in, as users expect of paths they type.
fn expand_home(p: &str) -> PathBuf {
    if let Some(rest) = p.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    PathBuf::from(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("a\nbc\n", 0), (1, 1));
        assert_eq!(line_col("a\nbc\n", 3), (2, 2));
    }

    #[test]
    fn pools_parse_ranges_and_cidrs() {
        assert_eq!(parse_pool("10.0.0.1-10.0.0.3"), Some((0x0a000001, 0x0a000003)));
        assert_eq!(parse_pool("10.0.0.0/30"), Some((0x0a000000, 0x0a000003)));
        assert_eq!(parse_pool("nonsense"), None);
    }

    #[test]
    fn bastions() {
        let b = Bastion::parse("jump@203.0.113.5:2222", "root").unwrap();
        assert_eq!((b.user.as_str(), b.host.as_str(), b.port), ("jump", "203.0.113.5", 2222));
        let b = Bastion::parse("gw.example", "admin").unwrap();
        assert_eq!((b.user.as_str(), b.host.as_str(), b.port), ("admin", "gw.example", 22));
        assert!(Bastion::parse("jump@host:0", "root").is_none());
        assert!(Bastion::parse("@host", "root").is_none());
        assert!(Bastion::parse("host:ssh", "root").is_none());
    }

    #[test]
    fn dns_labels() {
        assert!(is_dns_label("kmaster1"));
        assert!(!is_dns_label("KMaster"));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label(""));
        assert!(!is_dns_label(&"a".repeat(64)));
    }
}
