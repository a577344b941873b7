//! Stage 1 of the pipeline: read `inventory.toml` and turn it into a validated [`Inventory`].
//!
//! Parsing happens in two steps. Serde reads the file into the structs of `raw` that mirror
//! the TOML (unknown keys are refused there); then `validate` checks what serde cannot —
//! addresses, CIDRs, overlaps, roles, names, and the syntax of every value that reaches a
//! rendered file (`values`) — and collects *every* problem instead of stopping at the first,
//! because a student fixing an inventory wants the whole list at once. Each problem carries the
//! field path and the line/column it was found at (`span`).
//!
//! This file holds the validated model every later stage uses, and [`load`]/[`parse`].
//! Nothing in this module writes to disk, so bad input can never change anything.

mod addons;
mod kubernetes;
mod lab;
mod raw;
mod span;
mod topology;
mod validate;
mod validator;
mod values;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

use crate::components::{ComponentId, Port};
use crate::versions::Version;

pub use addons::{Addons, CoreDns, Manifest, Metallb};
pub use lab::{LabDriver, VmResources};
pub use topology::{on_node, units_on};
pub use values::is_dns_label;
// An `extra_args` flag is part of the model; its type lives with the code that writes it into units.
pub use crate::flags::ExtraArg;

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
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", render_problems(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn render_problems(path: &Path, problems: &[Problem]) -> String {
    let mut out = format!(
        "{}: {} problem(s) in inventory",
        path.display(),
        problems.len()
    );
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
        Self::ALL
            .iter()
            .find(|(_, r)| *r == self)
            .map(|(s, _)| *s)
            .unwrap_or("?")
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
        Self::ALL
            .iter()
            .find(|(_, a)| *a == self)
            .map(|(s, _)| *s)
            .unwrap_or("?")
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, a)| *a)
    }
}

#[derive(Debug, Clone)]
pub struct Cluster {
    pub name: String,
    pub domain: Option<String>,
    /// The release to deploy; its minor selects the flag and field lists (`crate::versions`).
    pub kubernetes_version: Version,
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
    pub sudo: Sudo,
    pub bastion: Option<Bastion>,
    pub connect_timeout_secs: u64,
    /// Tries per connection when the network fails (refused, unreachable, timed out), 1 s
    /// and then twice as long apart; a host key or authentication failure is never retried.
    pub connect_attempts: u32,
}

/// How commands become root on the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sudo {
    /// `sudo -n` when the user is not root (`ssh.sudo = false`, the default).
    IfNotRoot,
    /// Always `sudo -n` (`ssh.sudo = true`).
    Always,
    /// sudo with the user's password, given once to hardway (`ssh.sudo = "password"`).
    WithPassword,
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
        Some(Bastion {
            user,
            host: host.to_string(),
            port,
        })
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
    /// Where deploy reads the executables it pushes: `local_dir`, `source` naming a directory,
    /// or, for a release source, the directory `crate::releases` fills before deploy.
    pub local_dir: Option<PathBuf>,
    /// `source = "upstream"` or a mirror's URL: the executables come from release archives.
    pub release: Option<ReleaseSource>,
    /// `bundle = "FILE"` (relative to the inventory): executables and addon images from a
    /// `hardway bundle` archive, no network.
    pub bundle: Option<PathBuf>,
}

/// Binaries from upstream's release servers, or a mirror of the same layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseSource {
    /// `None`: upstream (dl.k8s.io, github.com); else the mirror's base URL, without a trailing
    /// slash, under which upstream's paths are the same.
    pub mirror: Option<String>,
    pub arch: Arch,
    /// The exact releases, the minor's pins with `[binaries.versions]` over them.
    pub pins: crate::versions::Pins<String>,
}

/// A node architecture upstream publishes binaries for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

    /// As Go and the release servers spell it.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    pub fn parse(s: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.name() == s)
    }
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
    /// How preflight installs the packages the node lacks (`install`, or `[binaries] install`
    /// for every node); `None`: it only names them.
    pub install: Option<Installer>,
}

/// A package manager preflight may install a node's missing packages with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installer {
    /// apt-get, from the node's own package sources (Debian, Ubuntu).
    Apt,
}

impl Node {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// containerd's `major.minor` on the workers (`containerd.version`): it decides the format of
/// the rendered config. Deploy's preflight compares it with what the nodes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContainerdVersion {
    pub major: u32,
    pub minor: u32,
}

impl ContainerdVersion {
    /// `major.minor` or `major.minor.patch`, digits only, a leading `v` tolerated (the patch
    /// level does not change the config format).
    pub fn parse(s: &str) -> Option<ContainerdVersion> {
        let parts: Vec<&str> = s.strip_prefix('v').unwrap_or(s).split('.').collect();
        // `parse::<u32>` alone would let "+1" through; every part must be plain digits.
        let number = |p: &str| {
            p.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| p.parse::<u32>().ok())
                .flatten()
        };
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| number(p).is_none()) {
            return None;
        }
        Some(ContainerdVersion {
            major: number(parts[0])?,
            minor: number(parts[1])?,
        })
    }

    /// The config format it reads: containerd 2.x reads version 3 (the `io.containerd.cri.v1.*`
    /// plugins) and only converts version 2, which is deprecated there; 1.7 refuses anything
    /// above 2.
    pub fn config_version(self) -> u32 {
        if self.major >= 2 { 3 } else { 2 }
    }

    /// containerd 2.1 replaced the CNI plugins' `bin_dir` by the list `bin_dirs` (and drops
    /// `bin_dir` in 2.3).
    pub fn has_cni_bin_dirs(self) -> bool {
        (self.major, self.minor) >= (2, 1)
    }
}

impl fmt::Display for ContainerdVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// `[containerd]`: the container runtime on the workers.
#[derive(Debug, Clone)]
pub struct Containerd {
    pub version: ContainerdVersion,
    /// Where `containerd` (and its shim, which it finds beside itself) is on the nodes.
    pub bin_dir: String,
    /// The pause image of every pod sandbox, as containerd's config names it.
    pub sandbox_image: String,
    /// containerd's `restrict_oom_score_adj`: keep pods' OOM score adjustments no lower than
    /// containerd's own, for nodes that are themselves containers without CAP_SYS_RESOURCE
    /// (LXC, systemd-nspawn, hardway's lab), where the kubelet's -998 for sandboxes is refused.
    pub restrict_oom_score_adj: bool,
}

/// `[cni]`: where the CNI plugins and their configuration live on the workers.
#[derive(Debug, Clone)]
pub struct Cni {
    pub bin_dir: String,
    pub conf_dir: String,
}

/// What a lab machine's root fs holds (`lab.software`): everything a node may run from
/// Debian's packages (etcd, HAProxy, containerd, runc, the CNI plugins, iptables, conntrack), or
/// a bare Debian with sshd, as a new machine comes, for deploys that bring their own binaries
/// (`[binaries] source`) and install the rest (`install = "apt"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum LabSoftware {
    #[default]
    Packages,
    Bare,
}

impl LabSoftware {
    pub const ALL: [LabSoftware; 2] = [LabSoftware::Packages, LabSoftware::Bare];

    pub fn as_str(self) -> &'static str {
        match self {
            LabSoftware::Packages => "packages",
            LabSoftware::Bare => "bare",
        }
    }

    pub fn parse(s: &str) -> Option<LabSoftware> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// The Debian release a lab's machines run (`lab.suite`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum LabSuite {
    Bookworm,
    /// The default: Debian's stable release (etcd 3.5, HAProxy 3.0, containerd 1.7);
    /// bookworm's etcd 3.4 is end of life.
    #[default]
    Trixie,
    /// Debian unstable: containerd 2.1, runc 1.3, CNI plugins 1.9.
    Sid,
}

impl LabSuite {
    pub const ALL: [LabSuite; 3] = [LabSuite::Bookworm, LabSuite::Trixie, LabSuite::Sid];

    pub fn as_str(self) -> &'static str {
        match self {
            LabSuite::Bookworm => "bookworm",
            LabSuite::Trixie => "trixie",
            LabSuite::Sid => "sid",
        }
    }

    pub fn parse(s: &str) -> Option<LabSuite> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl fmt::Display for LabSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[lab]`: how `hardway lab` builds this inventory's machines.
#[derive(Debug, Clone, Default)]
pub struct LabSettings {
    pub suite: LabSuite,
    /// What the machines' root fs holds besides Debian's base (`lab.software`).
    pub software: LabSoftware,
    /// What each node is (`lab.driver`).
    pub driver: LabDriver,
    /// `lab.memory_mib` and `lab.vcpus`: every node's VM unless `[lab.nodes.<name>]` says
    /// otherwise (see [`LabSettings::vm`]).
    pub vm: Option<VmResources>,
    /// `[lab.nodes.<name>]`, by node name.
    pub nodes: BTreeMap<String, VmResources>,
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
    /// Extra flags per component, sorted by flag name.
    pub extra_args: BTreeMap<ComponentId, Vec<ExtraArg>>,
    /// `[components.<name>] config`: fields added to the kubelet's and kube-proxy's config
    /// files, each checked against the cluster's release ([`crate::versions`]).
    pub component_config: BTreeMap<ComponentId, toml::Table>,
    pub containerd: Containerd,
    pub cni: Cni,
    /// `[lab]`: how `hardway lab` makes the machines.
    pub lab: LabSettings,
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
        if dedicated.is_empty() {
            self.masters().collect()
        } else {
            dedicated
        }
    }

    pub fn is_etcd_member(&self, node: &Node) -> bool {
        self.etcd_members().iter().any(|m| m.name == node.name)
    }

    /// `<name>.<domain>`, when the cluster has a domain.
    pub fn fqdn(&self, node: &Node) -> Option<String> {
        self.cluster
            .domain
            .as_ref()
            .map(|d| format!("{}.{d}", node.name))
    }

    /// Where clients outside the control plane reach the API: the load balancer, or the only
    /// master when there is none.
    pub fn api_endpoint(&self) -> (IpAddr, u16) {
        match &self.load_balancer {
            Some(lb) => (lb.address, lb.port),
            None => {
                let master = self.masters().next().expect("validated: one master");
                (master.address, Port::ApiServer.number(self))
            }
        }
    }

    pub fn api_server_url(&self) -> String {
        let (ip, port) = self.api_endpoint();
        format!("https://{}:{port}", host_for_url(ip))
    }

    pub fn etcd_client_urls(&self) -> String {
        self.etcd_members()
            .iter()
            .map(|m| {
                format!(
                    "https://{}:{}",
                    host_for_url(m.address),
                    Port::EtcdClient.number(self)
                )
            })
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

/// The `n`th address of `net`, counting its network address as the 0th.
fn nth_addr(net: Ipv4Net, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()).wrapping_add(n))
}

// ---------------------------------------------------------------------------------------------
// Loading.

/// Reads and validates an inventory file.
pub fn load(path: &Path) -> Result<Inventory, InventoryError> {
    let text = std::fs::read_to_string(path).map_err(|source| InventoryError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// Validates inventory text; `path` is only used in messages and to resolve relative paths.
/// serde's messages name Rust types (`expected u16`, `expected a sequence`); a user wrote TOML.
fn plain_serde_words(message: &str) -> String {
    const WORDS: &[(&str, &str)] = &[
        ("expected u16", "expected a whole number from 0 to 65535"),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected u64", "expected a whole number of 0 or more"),
        ("expected i64", "expected a whole number"),
        ("expected usize", "expected a whole number of 0 or more"),
        ("expected a sequence", "expected a list ([...])"),
        ("expected a boolean", "expected true or false"),
        ("expected a map", "expected a table ({ ... } or [section])"),
    ];
    WORDS
        .iter()
        .fold(message.to_string(), |m, (rust, toml)| m.replace(rust, toml))
}

pub fn parse(path: &Path, text: &str) -> Result<Inventory, InventoryError> {
    let invalid = |problems| InventoryError::Invalid {
        path: path.to_path_buf(),
        problems,
    };
    let doc = match toml_edit::Document::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let position = e.span().map(|s| span::line_col(text, s.start));
            return Err(invalid(vec![Problem {
                field: String::new(),
                position,
                message: format!("not valid TOML: {}", e.message().trim()),
            }]));
        }
    };
    let raw: raw::RawInventory = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let (field, position) = match e.span() {
                Some(s) => (
                    span::path_at(&doc, s.start),
                    Some(span::line_col(text, s.start)),
                ),
                None => (String::new(), None),
            };
            return Err(invalid(vec![Problem {
                field,
                position,
                message: plain_serde_words(e.message().trim()),
            }]));
        }
    };
    let mut v = validator::Validator::new(text, &doc);
    let inv = v.validate(path, &raw);
    if v.problems.is_empty() {
        let mut inv = inv.expect("no problems means a complete inventory");
        inv.warnings = v.warnings;
        Ok(inv)
    } else {
        Err(invalid(v.problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bastions() {
        let b = Bastion::parse("jump@203.0.113.5:2222", "root").unwrap();
        assert_eq!(
            (b.user.as_str(), b.host.as_str(), b.port),
            ("jump", "203.0.113.5", 2222)
        );
        let b = Bastion::parse("gw.example", "admin").unwrap();
        assert_eq!(
            (b.user.as_str(), b.host.as_str(), b.port),
            ("admin", "gw.example", 22)
        );
        assert!(Bastion::parse("jump@host:0", "root").is_none());
        assert!(Bastion::parse("@host", "root").is_none());
        assert!(Bastion::parse("host:ssh", "root").is_none());
    }
}
