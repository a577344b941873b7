//! `[addons]`: what the addons phase installs once the API server answers — CoreDNS (rendered
//! by hardway), MetalLB and metrics-server (upstream's manifests, from a pinned URL or a local
//! copy), the aggregation layer, and container images to import on every node first (for
//! air-gapped labs and classrooms). The raw shape, the model and the rules are all here.
//!
//! Relative paths (`images_dir`, a manifest file) are relative to the inventory file's
//! directory, so an inventory can travel with its images.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::validator::{ClusterParts, Validator};
use super::{LoadBalancer, Node};
use crate::versions::{self, AddonRelease, Minor};

// ---------------------------------------------------------------------------------------------
// Raw.

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAddons {
    /// A directory of image tarballs (`docker save` / OCI archives, `*.tar`).
    pub images_dir: Option<String>,
    pub coredns: Option<RawCoreDns>,
    pub metallb: Option<RawMetallb>,
    pub metrics_server: Option<RawMetricsServer>,
    pub aggregation: Option<RawAggregation>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCoreDns {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub image: Option<String>,
    pub replicas: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetallb {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub addresses: Vec<String>,
    pub manifest: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetricsServer {
    #[serde(default)]
    pub enabled: bool,
    pub manifest: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAggregation {
    #[serde(default)]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

// ---------------------------------------------------------------------------------------------
// Model.

/// Where an upstream manifest comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    /// Applied by kubectl on the first master straight from the URL (https only).
    Url(String),
    /// A local file, rendered into the first master's addons directory.
    File(PathBuf),
}

impl std::fmt::Display for Manifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Manifest::Url(u) => f.write_str(u),
            Manifest::File(p) => write!(f, "{}", p.display()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreDns {
    /// `registry.k8s.io/coredns/coredns:v1.14.2`: kubeadm's pin for the cluster's minor unless
    /// the inventory names one.
    pub image: String,
    pub replicas: u32,
}

#[derive(Debug, Clone, Default)]
pub struct Metallb {
    pub enabled: bool,
    /// Ranges `a-b` or CIDRs, checked and rewritten without the user's spacing (they go into
    /// the pool's YAML as they are).
    pub addresses: Vec<String>,
    /// MetalLB itself; `None` when MetalLB is off.
    pub manifest: Option<Manifest>,
}

#[derive(Debug, Clone, Default)]
pub struct Addons {
    /// Image tarballs to import into containerd on every node that runs it, sorted by name.
    pub images: Vec<PathBuf>,
    /// `None` when `[addons.coredns] enabled = false`.
    pub coredns: Option<CoreDns>,
    pub metallb: Metallb,
    /// metrics-server's manifest, when it is enabled.
    pub metrics_server: Option<Manifest>,
    pub aggregation: bool,
}

/// Most CoreDNS replicas accepted: more than one per node gains nothing.
const MAX_COREDNS_REPLICAS: u32 = 10;

// ---------------------------------------------------------------------------------------------
// Rules.

impl Validator<'_> {
    pub(super) fn addons(
        &mut self,
        a: &RawAddons,
        dir: &Path,
        nodes: &[Node],
        lb: Option<&LoadBalancer>,
        cluster: &ClusterParts,
    ) -> Addons {
        let mut metallb = Metallb::default();
        if let Some(m) = &a.metallb {
            metallb.enabled = m.enabled;
            if m.enabled && m.addresses.is_empty() {
                self.error(
                    "addons.metallb.addresses",
                    "MetalLB is enabled but has no address pool",
                );
            }
            for (i, pool) in m.addresses.iter().enumerate() {
                if let Some(normalized) = self.metallb_pool(
                    &format!("addons.metallb.addresses[{i}]"),
                    pool,
                    nodes,
                    lb,
                    cluster,
                ) {
                    metallb.addresses.push(normalized);
                }
            }
            if m.enabled {
                metallb.manifest = self.manifest(
                    "addons.metallb.manifest",
                    m.manifest.as_deref(),
                    dir,
                    &versions::METALLB,
                    versions::minor_or_newest(cluster.version),
                );
            }
        }
        let aggregation = a.aggregation.as_ref().is_some_and(|a| a.enabled);
        let metrics_server = match &a.metrics_server {
            Some(m) if m.enabled => {
                if !aggregation {
                    self.error(
                        "addons.metrics_server.enabled",
                        "metrics-server is served through the aggregation layer: set [addons.aggregation] enabled = true too",
                    );
                }
                self.manifest(
                    "addons.metrics_server.manifest",
                    m.manifest.as_deref(),
                    dir,
                    &versions::METRICS_SERVER,
                    versions::minor_or_newest(cluster.version),
                )
            }
            _ => None,
        };
        Addons {
            images: self.images(a.images_dir.as_deref(), dir),
            coredns: self.coredns(a.coredns.as_ref(), cluster),
            metallb,
            metrics_server,
            aggregation,
        }
    }

    fn coredns(&mut self, c: Option<&RawCoreDns>, cluster: &ClusterParts) -> Option<CoreDns> {
        if c.is_some_and(|c| !c.enabled) {
            return None;
        }
        let replicas = c.and_then(|c| c.replicas).unwrap_or(2);
        if !(1..=MAX_COREDNS_REPLICAS).contains(&replicas) {
            self.error(
                "addons.coredns.replicas",
                format!("{replicas}: must be 1 to {MAX_COREDNS_REPLICAS}"),
            );
        }
        let image = match c.and_then(|c| c.image.clone()) {
            Some(image) => {
                if let Some(fault) = image_fault(&image) {
                    self.error(
                        "addons.coredns.image",
                        format!("{image:?} is not an image reference: {fault}"),
                    );
                }
                image
            }
            None => versions::minor_or_newest(cluster.version)
                .pins
                .coredns_image(),
        };
        Some(CoreDns { image, replicas })
    }

    /// A manifest: an https URL, or a file that exists (relative to the inventory's directory).
    fn manifest(
        &mut self,
        field: &str,
        given: Option<&str>,
        dir: &Path,
        release: &AddonRelease,
        minor: &Minor,
    ) -> Option<Manifest> {
        let Some(given) = given else {
            return Some(Manifest::Url(release.manifest_url(minor)));
        };
        if given.starts_with("https://") {
            return Some(Manifest::Url(given.to_string()));
        }
        if given.starts_with("http://") {
            self.error(field, format!("{given:?}: plain http lets anyone on the path change what runs in the cluster; use https or a local file"));
            return None;
        }
        let path = dir.join(super::values::expand_home(given));
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => Some(Manifest::File(path)),
            Ok(_) => {
                self.error(
                    field,
                    format!(
                        "{} is not a file ({} {} manifest expected)",
                        path.display(),
                        release.name,
                        release.version(minor)
                    ),
                );
                None
            }
            Err(e) => {
                self.error(
                    field,
                    format!(
                        "{}: {e} (an https URL or a local copy of {}'s manifest)",
                        path.display(),
                        release.name
                    ),
                );
                None
            }
        }
    }

    fn images(&mut self, given: Option<&str>, dir: &Path) -> Vec<PathBuf> {
        let Some(given) = given else { return vec![] };
        const FIELD: &str = "addons.images_dir";
        let path = dir.join(super::values::expand_home(given));
        let entries = match std::fs::read_dir(&path) {
            Ok(e) => e,
            Err(e) => {
                self.error(FIELD, format!("{}: {e}", path.display()));
                return vec![];
            }
        };
        let mut images: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "tar"))
            .collect();
        images.sort();
        if images.is_empty() {
            self.error(FIELD, format!("{} has no image tarballs (*.tar, as `docker save`, `skopeo copy ... docker-archive:` or `ctr images export` write them)", path.display()));
        }
        images
    }

    /// One pool entry: it must parse and must not hand out addresses that are already in use.
    fn metallb_pool(
        &mut self,
        field: &str,
        a: &str,
        nodes: &[Node],
        lb: Option<&LoadBalancer>,
        cluster: &ClusterParts,
    ) -> Option<String> {
        let Some((lo, hi, normalized)) = super::values::parse_pool(a) else {
            self.error(
                field,
                format!("{a:?} is neither an IPv4 range \"a.b.c.d-a.b.c.e\" nor a CIDR"),
            );
            return None;
        };
        if lo > hi {
            self.error(field, format!("{a:?}: range start is after its end"));
            return None;
        }
        let in_pool = |ip: std::net::IpAddr| match ip {
            std::net::IpAddr::V4(v4) => (lo..=hi).contains(&u32::from(v4)),
            std::net::IpAddr::V6(_) => false,
        };
        for n in nodes.iter().filter(|n| in_pool(n.address)) {
            self.error(
                field,
                format!("pool {a} contains node {}'s address {}", n.name, n.address),
            );
        }
        if let Some(lb) = lb.filter(|lb| in_pool(lb.address)) {
            self.error(
                field,
                format!("pool {a} contains the load balancer address {}", lb.address),
            );
        }
        for (name, net) in cluster.networks() {
            if lo <= u32::from(net.broadcast()) && u32::from(net.network()) <= hi {
                self.error(field, format!("pool {a} overlaps cluster.{name} {net}"));
            }
        }
        Some(normalized)
    }
}

/// Why `image` is not a `[registry/]repository[:tag][@digest]` reference, if it is not one. It
/// goes into a YAML string, so anything but the reference grammar's characters is refused.
fn image_fault(image: &str) -> Option<&'static str> {
    if image.is_empty() {
        return Some("it is empty");
    }
    if !image.bytes().all(|b| {
        b.is_ascii_lowercase()
            || b.is_ascii_digit()
            || b"._-/:@".contains(&b)
            || b.is_ascii_uppercase()
    }) {
        return Some("only letters, digits and . _ - / : @ are allowed");
    }
    let name = image.split('@').next().unwrap_or(image);
    let last = name.rsplit('/').next().unwrap_or(name);
    if !last.contains(':') && !image.contains('@') {
        return Some("it has no tag or digest (pin a version: repository:tag)");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::image_fault;

    #[test]
    fn image_references_need_a_pin_and_plain_characters() {
        assert_eq!(image_fault("registry.k8s.io/coredns/coredns:v1.14.2"), None);
        assert_eq!(image_fault("localhost:5000/coredns@sha256:abc"), None);
        assert!(
            image_fault("registry.k8s.io/coredns/coredns")
                .unwrap()
                .contains("no tag")
        );
        assert!(
            image_fault("localhost:5000/coredns")
                .unwrap()
                .contains("no tag")
        );
        assert!(image_fault("coredns:v1 \"x").unwrap().contains("only"));
        assert!(image_fault("").is_some());
    }
}
