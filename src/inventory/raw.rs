//! The serde-facing shape of `inventory.toml`: one struct per table, fields as written.
//!
//! Serde only checks structure here (types, required keys). `deny_unknown_fields` is on every
//! struct because a misspelt optional key (`adress`, `algorythm`) would otherwise be ignored
//! silently and its default used. Everything about the values themselves is checked in
//! [`super::validate`], which can report all problems at once and point at each.

use std::collections::BTreeMap;

use serde::Deserialize;

pub(super) use super::addons::RawAddons;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInventory {
    pub cluster: RawCluster,
    pub load_balancer: Option<RawLoadBalancer>,
    #[serde(default)]
    pub ssh: RawSsh,
    #[serde(default)]
    pub pki: RawPki,
    #[serde(default)]
    pub binaries: RawBinaries,
    #[serde(default)]
    pub nodes: Vec<RawNode>,
    #[serde(default)]
    pub addons: RawAddons,
    /// `[components.<name>]`, by component name (`kube-apiserver`); names are checked in
    /// validation, which can list the known ones.
    #[serde(default)]
    pub components: BTreeMap<String, RawComponent>,
    #[serde(default)]
    pub containerd: RawContainerd,
    #[serde(default)]
    pub cni: RawCni,
    #[serde(default)]
    pub lab: RawLab,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub name: String,
    pub domain: Option<String>,
    pub kubernetes_version: Option<String>,
    pub service_cidr: String,
    pub pod_cidr: String,
    pub cluster_dns: Option<String>,
    pub cluster_domain: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLoadBalancer {
    pub node: Option<String>,
    pub address: String,
    pub dns_name: Option<String>,
    pub port: Option<u16>,
}

/// `sudo = true | false | "password"`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawSudo {
    Flag(bool),
    Mode(String),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSsh {
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_file: Option<String>,
    pub known_hosts: Option<String>,
    pub sudo: Option<RawSudo>,
    pub bastion: Option<String>,
    pub connect_timeout_secs: Option<u64>,
    pub connect_attempts: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPki {
    pub algorithm: Option<String>,
    pub ca_validity_days: Option<u32>,
    pub cert_validity_days: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBinaries {
    pub remote_dir: Option<String>,
    pub local_dir: Option<String>,
    pub source: Option<String>,
    pub bundle: Option<String>,
    pub arch: Option<String>,
    pub install: Option<String>,
    #[serde(default)]
    pub versions: RawBinaryVersions,
}

/// `[binaries.versions]`: a release other than the minor's pin (`versions::Pins`).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBinaryVersions {
    pub containerd: Option<String>,
    pub runc: Option<String>,
    pub cni_plugins: Option<String>,
    pub crictl: Option<String>,
    pub etcd: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNode {
    pub name: String,
    pub address: String,
    pub roles: Vec<String>,
    pub ssh_address: Option<String>,
    pub ssh_port: Option<u16>,
    pub user: Option<String>,
    #[serde(default)]
    pub extra_sans: Vec<String>,
    pub install: Option<String>,
}

impl RawNode {
    /// Role checks on the raw node, before roles are parsed: rules that count masters or find
    /// the LB node must see every node, also those with a bad address or an unknown role.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawComponent {
    /// Flag name (without `--`) to value; a value is a string, number or boolean.
    #[serde(default)]
    pub extra_args: BTreeMap<String, toml::Value>,
    /// Fields of the component's config file (the kubelet's `KubeletConfiguration`,
    /// kube-proxy's `KubeProxyConfiguration`) that hardway does not set, in the file's own
    /// camelCase names.
    #[serde(default)]
    pub config: toml::Table,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawContainerd {
    pub version: Option<String>,
    pub bin_dir: Option<String>,
    pub sandbox_image: Option<String>,
    pub restrict_oom_score_adj: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCni {
    pub bin_dir: Option<String>,
    pub conf_dir: Option<String>,
}

/// `[lab]`: `memory_mib` and `vcpus` for every node's VM, `[lab.nodes.<name>]` per node.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLab {
    pub suite: Option<String>,
    pub software: Option<String>,
    pub driver: Option<String>,
    pub memory_mib: Option<i64>,
    pub vcpus: Option<i64>,
    #[serde(default)]
    pub nodes: BTreeMap<String, RawLabVm>,
}

/// Integers as TOML has them, so that a negative or huge value is reported by validation with
/// its limits rather than by serde.
#[derive(Deserialize, Default, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLabVm {
    pub memory_mib: Option<i64>,
    pub vcpus: Option<i64>,
}
