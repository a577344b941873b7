//! What the embedded templates ([`crate::templates`]) are rendered with: the context of one
//! node (the inventory's values, the ports and binaries of the component table, the cluster-wide
//! tables computed once per render), the tera engine, and one template rendered for one node —
//! by [`super::render`] for every host, by `hardway explain` one at a time without a PKI.

use std::collections::BTreeMap;

use serde::Serialize;

use super::RenderError;
use crate::components::{COMPONENTS, Port};
use crate::inventory::{Inventory, Node, host_for_url};
use crate::pki::EncryptionKey;
use crate::templates::TEMPLATES;
use crate::versions::ConfigType;

// ---------------------------------------------------------------------------------------------
// Template context.

#[derive(Serialize)]
struct HostEntry {
    address: String,
    names: Vec<String>,
}

#[derive(Serialize)]
struct EncryptionKeyCtx<'a> {
    name: &'a str,
    secret: &'a str,
}

#[derive(Serialize)]
struct Member {
    name: String,
    address: String,
    /// `address` as it goes into a URL (`[v6]`).
    url_host: String,
}

/// One line of the pod-network table: a worker's pod /24, through that worker.
#[derive(Serialize)]
struct Route {
    pod_cidr: String,
    via: String,
    node: String,
}

#[derive(Serialize)]
struct ContainerdCtx<'a> {
    /// `major.minor`, as the inventory says.
    version: String,
    config_version: u32,
    /// `cni.bin_dirs` (a list, containerd 2.1+) rather than `cni.bin_dir`.
    cni_bin_dirs: bool,
    sandbox_image: &'a str,
    restrict_oom_score_adj: bool,
}

#[derive(Serialize)]
struct CniCtx<'a> {
    bin_dir: &'a str,
    conf_dir: &'a str,
}

#[derive(Serialize)]
struct Ctx<'a> {
    cluster_name: &'a str,
    cluster_domain: &'a str,
    service_cidr: String,
    pod_cidr: String,
    cluster_dns: String,
    api_server_url: String,
    /// Each component's binary, by [`Component::key`].
    bin: BTreeMap<String, String>,
    /// Each port, by [`Port::key`].
    ports: BTreeMap<&'static str, u16>,
    /// systemd's module loader, which hardway-kernel.service runs once at deploy.
    modules_load: &'static str,
    etcd_data_dir: &'static str,
    etcd_join_env: &'static str,
    aggregation: bool,
    etcd_initial_cluster: String,
    etcd_servers: String,
    masters: Vec<Member>,
    metallb_addresses: &'a [String],
    coredns_image: &'a str,
    coredns_replicas: u32,
    /// The Secrets encryption keys, in the config's order (`pki::Pki::encryption_keys`).
    encryption_keys: Vec<EncryptionKeyCtx<'a>>,
    containerd: ContainerdCtx<'a>,
    cni: CniCtx<'a>,
    /// `[components.<name>] config` as YAML to append to the component's config file, by
    /// [`Component::key`] (`kubelet`, `kube_proxy`); empty without one.
    config_extra: BTreeMap<String, String>,
}

/// What the cluster-wide templates ([`CLUSTER_WIDE`]) add: the lists with a line per node.
#[derive(Serialize)]
struct WideCtx<'a> {
    hosts: Vec<HostEntry>,
    /// Every worker's pod /24.
    pod_routes: &'a [Route],
}

/// The host being rendered, added to [`Ctx`] for each node.
#[derive(Serialize)]
struct NodeCtx<'a> {
    node_name: &'a str,
    node_address: String,
    node_url_host: String,
    node_is_loopback: bool,
    node_pod_cidr: String,
}

/// Templates whose output is the same for every node and lists every node: rendered once, with
/// [`WideCtx`], and shared. Every other template sees only [`Ctx`] and [`NodeCtx`], whose size
/// does not grow with the cluster — so rendering stays O(n) in time and memory.
pub(super) const CLUSTER_WIDE: &[&str] = &["hosts", "pod-routes"];

#[derive(Serialize)]
pub(super) struct KubeconfigCtx<'a> {
    pub cluster_name: &'a str,
    pub server: String,
    pub user: String,
    pub ca_data: String,
    pub cert_data: String,
    pub key_data: String,
}

fn member(n: &Node) -> Member {
    Member {
        name: n.name.clone(),
        address: n.address.to_string(),
        url_host: host_for_url(n.address),
    }
}

fn hosts_entries(inv: &Inventory) -> Vec<HostEntry> {
    let mut out: Vec<HostEntry> = inv
        .nodes
        .iter()
        .map(|n| HostEntry {
            address: n.address.to_string(),
            names: inv.fqdn(n).into_iter().chain([n.name.clone()]).collect(),
        })
        .collect();
    // An external load balancer has a name but no node: give it a line of its own.
    if let Some(lb) = &inv.load_balancer
        && let Some(dns) = &lb.dns_name
        && !out.iter().any(|h| h.names.contains(dns))
    {
        let short = dns.split('.').next().unwrap_or(dns).to_string();
        let names = if short != *dns {
            vec![dns.clone(), short]
        } else {
            vec![dns.clone()]
        };
        out.push(HostEntry {
            address: lb.address.to_string(),
            names,
        });
    }
    out
}

/// The template engine with every embedded template.
pub(super) fn engine() -> Result<tera::Tera, RenderError> {
    let mut tera = tera::Tera::default();
    tera.add_raw_templates(TEMPLATES.iter().copied())
        .map_err(|source| RenderError::Template {
            template: "(all, at load)".into(),
            node: String::new(),
            source,
        })?;
    tera.autoescape_on(vec![]);
    Ok(tera)
}

fn context_err(node: &str) -> impl FnOnce(tera::Error) -> RenderError + '_ {
    move |source| RenderError::Template {
        template: "(context)".into(),
        node: node.to_string(),
        source,
    }
}

/// Each component's `[components.<name>] config` as the YAML its config file ends with.
fn config_extra(inv: &Inventory) -> Result<BTreeMap<String, String>, RenderError> {
    let mut out = BTreeMap::new();
    for t in ConfigType::USER_FIELDS {
        let c = t.component().get();
        let text = match inv.component_config.get(&c.id).filter(|t| !t.is_empty()) {
            Some(table) => {
                let yaml = serde_yaml::to_string(table).map_err(|e| RenderError::Malformed {
                    path: t.template().into(),
                    node: String::new(),
                    reason: e.to_string(),
                })?;
                format!(
                    "# From the inventory's [components.{}] config:\n{yaml}",
                    c.name
                )
            }
            None => String::new(),
        };
        out.insert(c.key(), text);
    }
    Ok(out)
}

/// The templates' contexts, built once per render: `base` for every node (each adds its
/// [`NodeCtx`]) and `wide` for the [`CLUSTER_WIDE`] templates.
pub(super) struct Contexts {
    base: tera::Context,
    pub wide: tera::Context,
}

impl Contexts {
    /// `encryption_keys` go into the encryption config, first the one that encrypts
    /// (`hardway explain` puts a shell variable there).
    pub(super) fn new(
        inv: &Inventory,
        encryption_keys: &[EncryptionKey],
    ) -> Result<Contexts, RenderError> {
        let etcd_initial_cluster = inv
            .etcd_members()
            .iter()
            .map(|m| {
                format!(
                    "{}=https://{}:{}",
                    m.name,
                    host_for_url(m.address),
                    Port::EtcdPeer.number(inv)
                )
            })
            .collect::<Vec<_>>()
            .join(",");
        let ctx = Ctx {
            cluster_name: &inv.cluster.name,
            cluster_domain: &inv.cluster.cluster_domain,
            service_cidr: inv.cluster.service_cidr.to_string(),
            pod_cidr: inv.cluster.pod_cidr.to_string(),
            cluster_dns: inv.cluster.cluster_dns.to_string(),
            api_server_url: inv.api_server_url(),
            bin: COMPONENTS
                .iter()
                .map(|c| (c.key(), c.binary_path(inv)))
                .collect(),
            ports: Port::ALL.iter().map(|p| (p.key(), p.number(inv))).collect(),
            modules_load: "/usr/lib/systemd/systemd-modules-load",
            etcd_data_dir: crate::components::ETCD_DATA_DIR,
            etcd_join_env: crate::components::ETCD_JOIN_ENV,
            aggregation: inv.addons.aggregation,
            etcd_initial_cluster,
            etcd_servers: inv.etcd_client_urls(),
            masters: inv.masters().map(member).collect(),
            metallb_addresses: &inv.addons.metallb.addresses,
            coredns_image: inv.addons.coredns.as_ref().map_or("", |c| c.image.as_str()),
            coredns_replicas: inv.addons.coredns.as_ref().map_or(0, |c| c.replicas),
            encryption_keys: encryption_keys
                .iter()
                .map(|k| EncryptionKeyCtx {
                    name: &k.name,
                    secret: &k.secret_b64,
                })
                .collect(),
            containerd: ContainerdCtx {
                version: inv.containerd.version.to_string(),
                config_version: inv.containerd.version.config_version(),
                cni_bin_dirs: inv.containerd.version.has_cni_bin_dirs(),
                sandbox_image: &inv.containerd.sandbox_image,
                restrict_oom_score_adj: inv.containerd.restrict_oom_score_adj,
            },
            cni: CniCtx {
                bin_dir: &inv.cni.bin_dir,
                conf_dir: &inv.cni.conf_dir,
            },
            config_extra: config_extra(inv)?,
        };
        let base = tera::Context::from_serialize(&ctx).map_err(context_err(""))?;
        // Once for the cluster, not per node: every node gets the same table.
        let pod_routes: Vec<Route> = inv
            .workers()
            .filter_map(|w| {
                Some(Route {
                    pod_cidr: w.pod_cidr?.to_string(),
                    via: w.address.to_string(),
                    node: w.name.clone(),
                })
            })
            .collect();
        let mut wide = base.clone();
        wide.extend(
            tera::Context::from_serialize(WideCtx {
                hosts: hosts_entries(inv),
                pod_routes: &pod_routes,
            })
            .map_err(context_err(""))?,
        );
        Ok(Contexts { base, wide })
    }

    /// The templates' context for one node.
    pub(super) fn node(&self, node: &Node) -> Result<tera::Context, RenderError> {
        let mut ctx = self.base.clone();
        ctx.extend(
            tera::Context::from_serialize(NodeCtx {
                node_name: &node.name,
                node_address: node.address.to_string(),
                node_url_host: host_for_url(node.address),
                node_is_loopback: node.address.is_loopback(),
                node_pod_cidr: node.pod_cidr.map(|c| c.to_string()).unwrap_or_default(),
            })
            .map_err(context_err(&node.name))?,
        );
        Ok(ctx)
    }
}

/// One template for one node, with the inventory's extra flags merged into units.
pub(super) fn render_one(
    tera: &tera::Tera,
    ctx: &tera::Context,
    inv: &Inventory,
    node: &Node,
    name: &str,
) -> Result<String, RenderError> {
    let text = tera
        .render(name, ctx)
        .map_err(|source| RenderError::Template {
            template: name.into(),
            node: node.name.clone(),
            source,
        })?;
    Ok(crate::flags::with_extra_args(&inv.extra_args, name, text))
}

/// One template rendered for `node` as [`super::render`] renders it, without a PKI: the
/// encryption key is `encryption_key`, its name `key_name` (`hardway explain` puts shell
/// variables there, read from `pki/encryption.key`, which names a rotated key on its second line).
pub(crate) fn render_template(
    inv: &Inventory,
    node: &Node,
    name: &str,
    key_name: &str,
    encryption_key: &str,
) -> Result<String, RenderError> {
    let keys = [EncryptionKey {
        name: key_name.into(),
        secret_b64: encryption_key.into(),
    }];
    let contexts = Contexts::new(inv, &keys)?;
    let ctx = if CLUSTER_WIDE.contains(&name) {
        contexts.wide.clone()
    } else {
        contexts.node(node)?
    };
    render_one(&engine()?, &ctx, inv, node, name)
}
