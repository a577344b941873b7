//! Stage 3: every file every host gets, rendered in memory from the inventory and the PKI.
//!
//! What goes where is one table, `FILES`: for each role, the final path on the node, where the
//! bytes come from (a template in `templates/`, a certificate, a key), its mode, and which units
//! must restart when it changes — deploy needs that last column to restart only what changed.
//! Templates are tera files embedded in the binary, so a release carries them; `context` holds
//! them and what they are rendered with.
//!
//! The output depends only on the inventory and the PKI: no clocks, no randomness, stable
//! ordering everywhere, so rendering twice gives the same bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize as _;

use crate::components::{ComponentId, Phase, Port, RunsOn};
use crate::inventory::{Inventory, Manifest, Node};
use crate::pki::{CaId, Pki};
use crate::templates::ENCRYPTION_CONFIG;

mod context;

pub(crate) use context::render_template;
use context::{CLUSTER_WIDE, Contexts, KubeconfigCtx, engine, render_one};

/// Why rendering failed. Every case is a bug in a template or in hardway, or a directory that
/// is not render's to replace: the inventory and the PKI were validated before.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("rendering {template} for {node}")]
    Template {
        template: String,
        node: String,
        #[source]
        source: tera::Error,
    },
    #[error("rendered {path} for {node} is malformed: {reason}")]
    Malformed {
        path: String,
        node: String,
        reason: String,
    },
    #[error("{} exists and was not written by `hardway render`; refusing to overwrite it", .path.display())]
    NotOurs { path: PathBuf },
    #[error("{op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> RenderError + 'a {
    move |source| RenderError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A file's bytes, shared by every host that gets the same ones.
pub type Contents = std::sync::Arc<[u8]>;

/// One file destined for one host.
#[derive(Clone, PartialEq, Eq)]
pub struct File {
    /// Absolute path on the node.
    pub path: String,
    pub mode: u32,
    /// Shared between the hosts that get the same bytes (a CA, the hosts block, the pod-routes
    /// table): a 1000-node cluster holds each such file once, and `write_to` hard-links it.
    pub contents: Contents,
    /// systemd units to restart when this file changes.
    pub units: Vec<&'static str>,
    /// What of the cluster's identity the file carries, if anything.
    pub anchor: Option<Anchor>,
    /// A change restarts `units` (false for files read only at a first start).
    pub restarts: bool,
    /// The phase that places a file no unit reads, from the components that read it (the
    /// addon manifests, the admin kubeconfig and kubectl: `addons`); `None`: the files phase.
    pub phase: Option<crate::components::Phase>,
}

/// Files their unit reads only when it first starts on an empty data dir: a change to them
/// needs no restart (etcd's initial cluster: a new member in the inventory must not restart
/// every running member).
const READ_AT_FIRST_START: &[&str] = &["/etc/etcd/etcd.env"];

/// Files that tie a node to one particular cluster. Replacing one with another PKI's breaks the
/// cluster: clients and kubelets stop trusting each other (a CA), every token is invalid (the
/// service-account key), or every Secret in etcd is unreadable (the encryption key). Deploy
/// refuses to replace them (see `deploy::preflight`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    Ca(CaId),
    ServiceAccountKey,
    /// Compared by [`key_hashes`], not by its bytes: the file is a config that may change
    /// around the same keys.
    EncryptionKey,
}

impl Anchor {
    pub fn describe(self) -> &'static str {
        match self {
            Anchor::Ca(CaId::Kubernetes) => "cluster CA",
            Anchor::Ca(CaId::Etcd) => "etcd CA",
            Anchor::Ca(CaId::FrontProxy) => "front-proxy CA",
            Anchor::ServiceAccountKey => "service-account key",
            Anchor::EncryptionKey => "Secrets encryption key",
        }
    }
}

/// Fields whose values are secrets in the files hardway writes (kubeconfig credentials, the
/// encryption key): [`mask_secrets`] hides their values. A kubeconfig's certificates
/// (`client-certificate-data`, `certificate-authority-data`) are public, and stay.
pub const SECRET_FIELDS: &[&str] = &["client-key-data", "secret", "token", "password"];

/// The one PEM block that is not masked: a certificate is public, and a diff of a renewed one
/// must say what changed.
pub const PUBLIC_PEM: &str = "-----BEGIN CERTIFICATE-----";

/// A file's text with every PEM block but certificates and every [`SECRET_FIELDS`] value
/// replaced, for diffs. `remote::ShellRemote::read_masked` does the same on the node with awk,
/// so what is compared never carries a key.
pub fn mask_secrets(text: &str) -> String {
    let mut out = String::new();
    let mut in_block = false;
    for line in text.lines() {
        if in_block {
            in_block = !line.starts_with("-----END ");
            continue;
        }
        if line == PUBLIC_PEM {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        if let Some(rest) = line.strip_prefix("-----BEGIN ") {
            out.push_str(&format!(
                "<{} masked>\n",
                rest.strip_suffix("-----").unwrap_or(rest)
            ));
            in_block = true;
            continue;
        }
        let trimmed = line.trim_start_matches([' ', '\t']);
        let secret = SECRET_FIELDS.iter().find_map(|f| {
            let value = trimmed.strip_prefix(f)?.strip_prefix(':')?;
            (!value.trim_start_matches([' ', '\t']).is_empty()).then_some(f)
        });
        match secret {
            Some(f) => out.push_str(&format!(
                "{}{f}: <masked>\n",
                &line[..line.len() - trimmed.len()]
            )),
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// The SHA-256 of each `secret:` value of an encryption config: names its keys without giving
/// them away, whatever providers use them. `remote::ShellRemote` computes the same on the node
/// with sed and sha256sum, so the keys never leave it.
pub fn key_hashes(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter_map(|l| {
            l.trim_start()
                .strip_prefix("secret:")
                .map(|v| v.trim_start())
        })
        .filter(|v| !v.is_empty())
        .map(|v| crate::digest::sha256_hex(v.as_bytes()))
        .collect()
}

/// Where the addons' manifests go on the masters.
pub const ADDONS_DIR: &str = "/etc/kubernetes/addons";

/// Where the inventory's image tarballs go on every node that runs containerd, to be imported.
pub const IMAGES_DIR: &str = "/var/lib/hardway/images";

impl std::fmt::Debug for File {
    // File contents include private keys: never print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "File({} {:o} {} bytes, units {:?})",
            self.path,
            self.mode,
            self.contents.len(),
            self.units
        )
    }
}

impl File {
    pub fn is_unit(&self) -> bool {
        self.path.starts_with("/etc/systemd/system/")
    }
}

/// All hosts' files, by node name, each list sorted by path.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub hosts: BTreeMap<String, Vec<File>>,
    /// Files for the operator's machine (the admin kubeconfig).
    pub local: Vec<File>,
}

/// Marks a directory as written by `render`, so a later render may replace it wholesale.
const MARKER: &str = ".hardway-render";

impl Rendered {
    /// Writes `out/<host>/<path>` for every file, and `out/<name>` for local files. A previous
    /// render in `out` is replaced; any other non-empty directory is refused.
    pub fn write_to(&self, out: &Path) -> Result<usize, RenderError> {
        if out.exists() {
            let empty = std::fs::read_dir(out)
                .map_err(io("reading", out))?
                .next()
                .is_none();
            if !empty && !out.join(MARKER).exists() {
                return Err(RenderError::NotOurs {
                    path: out.to_path_buf(),
                });
            }
            std::fs::remove_dir_all(out).map_err(io("removing", out))?;
        }
        std::fs::create_dir_all(out).map_err(io("creating", out))?;
        write_new(
            &out.join(MARKER),
            b"written by hardway render; replaced on every render\n",
            0o644,
        )?;
        let mut n = 0;
        // Contents shared by several hosts are written once and hard-linked: the tree of a
        // 1000-node cluster holds one hosts block, not a thousand.
        let mut first: std::collections::HashMap<(*const u8, u32), PathBuf> =
            std::collections::HashMap::new();
        for (host, files) in &self.hosts {
            for f in files {
                let path = out.join(host).join(f.path.trim_start_matches('/'));
                let key = (f.contents.as_ptr(), f.mode);
                match first.get(&key) {
                    Some(existing) if std::sync::Arc::strong_count(&f.contents) > 1 => {
                        link_new(existing, &path)?
                    }
                    _ => {
                        write_new(&path, &f.contents, f.mode)?;
                        first.insert(key, path);
                    }
                }
                n += 1;
            }
        }
        for f in &self.local {
            write_new(&out.join(&f.path), &f.contents, f.mode)?;
            n += 1;
        }
        Ok(n)
    }
}

/// A second name for a file written by [`write_new`] (same bytes, same mode).
fn link_new(existing: &Path, path: &Path) -> Result<(), RenderError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
    }
    std::fs::hard_link(existing, path).map_err(io("linking", path))
}

/// Creates a file in the freshly emptied tree. No temp-and-rename as in the PKI directory: the
/// tree is new, and on ext4 every extra inode is measurable (render of 200 nodes: 6,000 inodes).
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), RenderError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io("creating", path))?;
    f.write_all(data).map_err(io("writing", path))?;
    // The umask may have narrowed the mode; keys stay 0600 either way.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io("setting the mode of", path))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The table.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum When {
    Always,
    Aggregation,
    Metallb,
    CoreDns,
    /// MetalLB from a local copy of its manifest (not a URL).
    MetallbFile,
    MetricsServerFile,
}

/// An upstream manifest the inventory points at a local copy of.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Upstream {
    Metallb,
    MetricsServer,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Server {
    /// The load balancer (or the only master).
    Cluster,
    /// The API server on the same host.
    Local,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Source {
    Template(&'static str),
    CaCert(CaId),
    /// The CA certificate alone that signs with [`Source::CaKey`]: the first of the bundle,
    /// which holds two during a rotation (a file the controller-manager's
    /// `--cluster-signing-cert-file` reads: it refuses more than one certificate).
    CaSigner(CaId),
    CaKey(CaId),
    /// A leaf certificate or its key, by matrix name (`{node}` is the host's name).
    Cert(&'static str),
    Key(&'static str),
    /// Certificate then key in one file, as HAProxy's `crt` wants it.
    CertAndKey(&'static str),
    SaKey,
    SaPub,
    Kubeconfig {
        cert: &'static str,
        user: &'static str,
        server: Server,
    },
    /// The bytes of a local manifest file the inventory names.
    Manifest(Upstream),
}

pub(crate) struct FileRule {
    pub(crate) who: RunsOn,
    pub(crate) when: When,
    pub(crate) path: &'static str,
    pub(crate) source: Source,
    pub(crate) mode: u32,
    /// The components whose units must restart when this file changes.
    pub(crate) units: &'static [ComponentId],
    /// The phase that places it, when not its units' (an addon's manifest, which kubectl
    /// reads in the addons phase though kubectl comes with the control plane).
    pub(crate) phase: Option<crate::components::Phase>,
}

impl When {
    fn enabled(self, inv: &Inventory) -> bool {
        match self {
            When::Always => true,
            When::Aggregation => inv.addons.aggregation,
            When::Metallb => inv.addons.metallb.enabled,
            When::CoreDns => inv.addons.coredns.is_some(),
            When::MetallbFile => matches!(inv.addons.metallb.manifest, Some(Manifest::File(_))),
            When::MetricsServerFile => matches!(inv.addons.metrics_server, Some(Manifest::File(_))),
        }
    }
}

impl FileRule {
    /// Does `node` get this file with this inventory?
    pub(crate) fn applies(&self, inv: &Inventory, node: &Node) -> bool {
        self.who.includes(inv, node) && self.when.enabled(inv)
    }

    /// Its path on the nodes.
    pub(crate) fn path(&self, inv: &Inventory) -> String {
        self.path.replace("{cni_conf_dir}", &inv.cni.conf_dir)
    }

    /// The deploy phase that places it: the earliest of its units' phases, or `files` (as
    /// `plan::phase_of_file` decides for a rendered file).
    pub(crate) fn phase(&self) -> crate::components::Phase {
        self.phase.unwrap_or_else(|| {
            self.units
                .iter()
                .map(|c| c.get().phase)
                .min()
                .unwrap_or(crate::components::Phase::Files)
        })
    }
}

impl Server {
    /// The API server URL a kubeconfig of this kind points at.
    pub(crate) fn url(self, inv: &Inventory) -> String {
        match self {
            Server::Cluster => inv.api_server_url(),
            Server::Local => format!("https://127.0.0.1:{}", Port::ApiServer.number(inv)),
        }
    }
}

const APISERVER: &[ComponentId] = &[ComponentId::KubeApiserver];
const CM: &[ComponentId] = &[ComponentId::KubeControllerManager];
const ETCD: &[ComponentId] = &[ComponentId::Etcd];
const KUBELET: &[ComponentId] = &[ComponentId::Kubelet];
const PROXY: &[ComponentId] = &[ComponentId::KubeProxy];
const KERNEL: &[ComponentId] = &[ComponentId::KernelSettings];
/// kubectl reads its kubeconfig and the manifests on the first master: the admin kubeconfig and
/// the kubelet access RBAC come with it in the control-plane phase, which applies the RBAC last;
/// the addons' manifests are the addons phase's (their rules say so).
const KUBECTL: &[ComponentId] = &[ComponentId::Kubectl];

#[rustfmt::skip]
pub(crate) const FILES: &[FileRule] = &[
    FileRule { who: RunsOn::AllNodes, when: When::Always, path: "/etc/hardway/hosts", source: Source::Template("hosts"), mode: 0o644, units: &[], phase: None },
    // etcd members
    FileRule { who: RunsOn::EtcdMembers, when: When::Always, path: "/etc/etcd/pki/ca.crt", source: Source::CaCert(CaId::Etcd), mode: 0o644, units: ETCD, phase: None },
    FileRule { who: RunsOn::EtcdMembers, when: When::Always, path: "/etc/etcd/pki/server.crt", source: Source::Cert("etcd/server-{node}"), mode: 0o644, units: ETCD, phase: None },
    FileRule { who: RunsOn::EtcdMembers, when: When::Always, path: "/etc/etcd/pki/server.key", source: Source::Key("etcd/server-{node}"), mode: 0o600, units: ETCD, phase: None },
    FileRule { who: RunsOn::EtcdMembers, when: When::Always, path: "/etc/etcd/pki/peer.crt", source: Source::Cert("etcd/peer-{node}"), mode: 0o644, units: ETCD, phase: None },
    FileRule { who: RunsOn::EtcdMembers, when: When::Always, path: "/etc/etcd/pki/peer.key", source: Source::Key("etcd/peer-{node}"), mode: 0o600, units: ETCD, phase: None },
    FileRule { who: RunsOn::EtcdMembers, when: When::Always, path: "/etc/etcd/pki/healthcheck-client.crt", source: Source::Cert("etcd/healthcheck-client"), mode: 0o644, units: &[], phase: None },
    FileRule { who: RunsOn::EtcdMembers, when: When::Always, path: "/etc/etcd/pki/healthcheck-client.key", source: Source::Key("etcd/healthcheck-client"), mode: 0o600, units: &[], phase: None },
    FileRule { who: RunsOn::EtcdMembers, when: When::Always, path: "/etc/systemd/system/etcd.service", source: Source::Template("etcd.service"), mode: 0o644, units: ETCD, phase: None },
    FileRule { who: RunsOn::EtcdMembers, when: When::Always, path: "/etc/etcd/etcd.env", source: Source::Template("etcd.env"), mode: 0o644, units: ETCD, phase: None },
    // control plane
    FileRule { who: RunsOn::Masters, when: When::Always, path: "/etc/kubernetes/pki/ca.crt", source: Source::CaCert(CaId::Kubernetes), mode: 0o644, units: &[ComponentId::KubeApiserver, ComponentId::KubeControllerManager], phase: None },
    FileRule { who: RunsOn::Masters, when: When::Always, path: "/etc/kubernetes/pki/ca.key", source: Source::CaKey(CaId::Kubernetes), mode: 0o600, units: CM, phase: None },
    FileRule { who: RunsOn::Masters, when: When::Always, path: "/etc/kubernetes/pki/ca-signer.crt", source: Source::CaSigner(CaId::Kubernetes), mode: 0o644, units: CM, phase: None },
    FileRule { who: RunsOn::Masters, when: When::Always, path: "/etc/kubernetes/pki/apiserver.crt", source: Source::Cert("apiserver"), mode: 0o644, units: APISERVER, phase: None },
    FileRule { who: RunsOn::Masters, when: When::Always, path: "/etc/kubernetes/pki/apiserver.key", source: Source::Key("apiserver"), mode: 0o600, units: APISERVER, phase: None },
    FileRule { who: RunsOn::Masters, when: When::Always, path: "/etc/kubernetes/pki/apiserver-kubelet-client.crt", source: Source::Cert("apiserver-kubelet-client"), mode: 0o644, units: APISERVER, phase: None },
    FileRule { who: RunsOn::Masters, when: When::Always, path: "/etc/kubernetes/pki/apiserver-kubelet-client.key", source: Source::Key("apiserver-kubelet-client"), mode: 0o600, units: APISERVER, phase: None },
    FileRule { who: RunsOn::Masters, when: When::Always, path: "/etc/kubernetes/pki/apiserver-etcd-client.crt", source: Source::Cert("apiserver-etcd-client"), mode: 0o644, units: APISERVER, phase: None },
    FileRule { who: RunsOn::Masters, when: When::Always, path: "/etc/kubernetes/pki/apiserver-etcd-client.key", source: Source::Key("apiserver-etcd-client"), mode: 0o600, units: APISERVER, phase: None },
    FileRule { who: RunsOn::Masters, when: When::Always, path: "/etc/kubernetes/pki/etcd/ca.crt", source: Source::CaCert(CaId::Etcd), mode: 0o644, units: APISERVER, phase: None },
    FileRule { who: RunsOn::Masters, when: When::Always, path: "/etc/kubernetes/pki/sa.key", source: Source::SaKey, mode: 0o600, units: &[ComponentId::KubeApiserver, ComponentId::KubeControllerManager], phase: None },
    FileRule { who: RunsOn::Masters, when: When::Always, path: "/etc/kubernetes/pki/sa.pub", source: Source::SaPub, mode: 0o644, units: APISERVER, phase: None },
    FileRule { who: RunsOn::Masters, when: When::Aggregation, path: "/etc/kubernetes/pki/front-proxy-ca.crt", source: Source::CaCert(CaId::FrontProxy), mode: 0o644, units: &[ComponentId::KubeApiserver, ComponentId::KubeControllerManager], phase: None },
    FileRule { who: RunsOn::Masters, when: When::Aggregation, path: "/etc/kubernetes/pki/front-proxy-client.crt", source: Source::Cert("front-proxy-client"), mode: 0o644, units: APISERVER, phase: None },
    FileRule { who: RunsOn::Masters, when: When::Aggregation, path: "/etc/kubernetes/pki/front-proxy-client.key", source: Source::Key("front-proxy-client"), mode: 0o600, units: APISERVER, phase: None },
    FileRule { who: RunsOn::Masters, when: When::Always, path: "/etc/kubernetes/encryption-config.yaml", source: Source::Template(ENCRYPTION_CONFIG), mode: 0o600, units: APISERVER, phase: None },
    FileRule { who: RunsOn::Masters, when: When::Always, path: "/etc/kubernetes/audit-policy.yaml", source: Source::Template("audit-policy.yaml"), mode: 0o644, units: APISERVER, phase: None },
    FileRule { who: RunsOn::Masters, when: When::Always, path: "/etc/kubernetes/admin.kubeconfig", source: Source::Kubeconfig { cert: "admin", user: "admin", server: Server::Cluster }, mode: 0o600, units: KUBECTL, phase: None },
    FileRule { who: RunsOn::Masters, when: When::Always, path: "/etc/kubernetes/controller-manager.kubeconfig", source: Source::Kubeconfig { cert: "kube-controller-manager", user: "system:kube-controller-manager", server: Server::Local }, mode: 0o600, units: CM, phase: None },
    FileRule { who: RunsOn::Masters, when: When::Always, path: "/etc/kubernetes/scheduler.kubeconfig", source: Source::Kubeconfig { cert: "kube-scheduler", user: "system:kube-scheduler", server: Server::Local }, mode: 0o600, units: &[ComponentId::KubeScheduler], phase: None },
    FileRule { who: RunsOn::Masters, when: When::Always, path: "/etc/kubernetes/kube-scheduler.yaml", source: Source::Template("kube-scheduler.yaml"), mode: 0o644, units: &[ComponentId::KubeScheduler], phase: None },
    FileRule { who: RunsOn::Masters, when: When::Always, path: "/etc/kubernetes/addons/apiserver-to-kubelet-rbac.yaml", source: Source::Template("apiserver-to-kubelet-rbac.yaml"), mode: 0o644, units: KUBECTL, phase: None },
    FileRule { who: RunsOn::Masters, when: When::CoreDns, path: "/etc/kubernetes/addons/coredns.yaml", source: Source::Template("coredns.yaml"), mode: 0o644, units: KUBECTL, phase: Some(Phase::Addons) },
    FileRule { who: RunsOn::Masters, when: When::MetallbFile, path: "/etc/kubernetes/addons/metallb-native.yaml", source: Source::Manifest(Upstream::Metallb), mode: 0o644, units: KUBECTL, phase: Some(Phase::Addons) },
    FileRule { who: RunsOn::Masters, when: When::Metallb, path: "/etc/kubernetes/addons/metallb-pool.yaml", source: Source::Template("metallb-pool.yaml"), mode: 0o644, units: KUBECTL, phase: Some(Phase::Addons) },
    FileRule { who: RunsOn::Masters, when: When::MetricsServerFile, path: "/etc/kubernetes/addons/metrics-server.yaml", source: Source::Manifest(Upstream::MetricsServer), mode: 0o644, units: KUBECTL, phase: Some(Phase::Addons) },
    FileRule { who: RunsOn::Masters, when: When::Always, path: "/etc/systemd/system/kube-apiserver.service", source: Source::Template("kube-apiserver.service"), mode: 0o644, units: APISERVER, phase: None },
    FileRule { who: RunsOn::Masters, when: When::Always, path: "/etc/systemd/system/kube-controller-manager.service", source: Source::Template("kube-controller-manager.service"), mode: 0o644, units: CM, phase: None },
    FileRule { who: RunsOn::Masters, when: When::Always, path: "/etc/systemd/system/kube-scheduler.service", source: Source::Template("kube-scheduler.service"), mode: 0o644, units: &[ComponentId::KubeScheduler], phase: None },
    // workers
    FileRule { who: RunsOn::Workers, when: When::Always, path: "/etc/kubernetes/pki/ca.crt", source: Source::CaCert(CaId::Kubernetes), mode: 0o644, units: &[ComponentId::Kubelet, ComponentId::KubeProxy], phase: None },
    FileRule { who: RunsOn::Workers, when: When::Always, path: "/var/lib/kubelet/pki/kubelet.crt", source: Source::Cert("kubelet-{node}"), mode: 0o644, units: KUBELET, phase: None },
    FileRule { who: RunsOn::Workers, when: When::Always, path: "/var/lib/kubelet/pki/kubelet.key", source: Source::Key("kubelet-{node}"), mode: 0o600, units: KUBELET, phase: None },
    FileRule { who: RunsOn::Workers, when: When::Always, path: "/var/lib/kubelet/kubeconfig", source: Source::Kubeconfig { cert: "kubelet-{node}", user: "system:node:{node}", server: Server::Cluster }, mode: 0o600, units: KUBELET, phase: None },
    FileRule { who: RunsOn::Workers, when: When::Always, path: "/var/lib/kubelet/kubelet-config.yaml", source: Source::Template("kubelet-config.yaml"), mode: 0o644, units: KUBELET, phase: None },
    FileRule { who: RunsOn::Workers, when: When::Always, path: "/var/lib/kube-proxy/kubeconfig", source: Source::Kubeconfig { cert: "kube-proxy", user: "system:kube-proxy", server: Server::Cluster }, mode: 0o600, units: PROXY, phase: None },
    FileRule { who: RunsOn::Workers, when: When::Always, path: "/var/lib/kube-proxy/kube-proxy-config.yaml", source: Source::Template("kube-proxy-config.yaml"), mode: 0o644, units: PROXY, phase: None },
    FileRule { who: RunsOn::Workers, when: When::Always, path: "/etc/modules-load.d/hardway.conf", source: Source::Template("kernel-modules.conf"), mode: 0o644, units: KERNEL, phase: None },
    FileRule { who: RunsOn::Workers, when: When::Always, path: "/etc/sysctl.d/90-hardway.conf", source: Source::Template("kernel-sysctl.conf"), mode: 0o644, units: KERNEL, phase: None },
    FileRule { who: RunsOn::Workers, when: When::Always, path: "/etc/systemd/system/hardway-kernel.service", source: Source::Template("hardway-kernel.service"), mode: 0o644, units: KERNEL, phase: None },
    FileRule { who: RunsOn::Workers, when: When::Always, path: "/etc/containerd/config.toml", source: Source::Template("containerd-config.toml"), mode: 0o644, units: &[ComponentId::Containerd], phase: None },
    // containerd's CRI plugin loads one configuration (the first in name order) and adds the
    // loopback interface itself; the file goes with containerd's phase (workers).
    FileRule { who: RunsOn::Workers, when: When::Always, path: "{cni_conf_dir}/10-bridge.conf", source: Source::Template("10-bridge.conf"), mode: 0o644, units: &[ComponentId::Containerd], phase: None },
    FileRule { who: RunsOn::Workers, when: When::Always, path: "/etc/systemd/system/containerd.service", source: Source::Template("containerd.service"), mode: 0o644, units: &[ComponentId::Containerd], phase: None },
    FileRule { who: RunsOn::Workers, when: When::Always, path: "/etc/systemd/system/kubelet.service", source: Source::Template("kubelet.service"), mode: 0o644, units: KUBELET, phase: None },
    FileRule { who: RunsOn::Workers, when: When::Always, path: "/etc/systemd/system/kube-proxy.service", source: Source::Template("kube-proxy.service"), mode: 0o644, units: PROXY, phase: None },
    // every node that reaches pods: one table of every worker's pod /24, the same bytes on
    // every node (each node skips its own line when the unit starts)
    FileRule { who: RunsOn::PodNetwork, when: When::Always, path: "/etc/hardway/pod-routes", source: Source::Template("pod-routes"), mode: 0o644, units: &[ComponentId::PodRoutes], phase: None },
    FileRule { who: RunsOn::PodNetwork, when: When::Always, path: "/etc/systemd/system/pod-routes.service", source: Source::Template("pod-routes.service"), mode: 0o644, units: &[ComponentId::PodRoutes], phase: None },
    // load balancer
    FileRule { who: RunsOn::Lb, when: When::Always, path: "/etc/haproxy/pki/ca.crt", source: Source::CaCert(CaId::Kubernetes), mode: 0o644, units: &[ComponentId::Haproxy], phase: None },
    FileRule { who: RunsOn::Lb, when: When::Always, path: "/etc/haproxy/pki/healthcheck.pem", source: Source::CertAndKey("haproxy-healthcheck"), mode: 0o600, units: &[ComponentId::Haproxy], phase: None },
    FileRule { who: RunsOn::Lb, when: When::Always, path: "/etc/haproxy/haproxy.cfg", source: Source::Template("haproxy.cfg"), mode: 0o644, units: &[ComponentId::Haproxy], phase: None },
    FileRule { who: RunsOn::Lb, when: When::Always, path: "/etc/systemd/system/haproxy.service", source: Source::Template("haproxy.service"), mode: 0o644, units: &[ComponentId::Haproxy], phase: None },
];

/// Where hardway puts the certificate of a PKI profile (`etcd/server-{node}`) on the nodes.
pub fn path_of_cert(profile: &str) -> Option<&'static str> {
    FILES
        .iter()
        .find(|r| matches!(r.source, Source::Cert(p) if p == profile))
        .map(|r| r.path)
}

/// Where hardway puts the private key of a PKI profile on the nodes.
pub fn path_of_key(profile: &str) -> Option<&'static str> {
    FILES
        .iter()
        .find(|r| matches!(r.source, Source::Key(p) if p == profile))
        .map(|r| r.path)
}

/// Where hardway puts the kubeconfig of a PKI profile's certificate on the masters (`admin`).
pub fn path_of_kubeconfig(cert: &str) -> Option<&'static str> {
    FILES
        .iter()
        .find(|r| matches!(r.source, Source::Kubeconfig { cert: c, .. } if c == cert))
        .map(|r| r.path)
}

/// Where hardway puts the file rendered from a template.
pub fn path_of_template(template: &str) -> Option<&'static str> {
    FILES
        .iter()
        .find(|r| matches!(r.source, Source::Template(t) if t == template))
        .map(|r| r.path)
}

/// The components' units a rule's file restarts.
fn units_of(rule: &FileRule) -> Vec<&'static str> {
    rule.units.iter().filter_map(|c| c.get().unit).collect()
}

/// One copy of each distinct file content: the CA that every node gets, the containerd config
/// that every worker gets, the kube-proxy kubeconfig, are one allocation each.
#[derive(Default)]
struct Interner(std::collections::HashSet<Contents>);

impl Interner {
    fn intern(&mut self, bytes: Vec<u8>) -> Contents {
        if let Some(c) = self.0.get(bytes.as_slice()) {
            return c.clone();
        }
        let c: Contents = bytes.into();
        self.0.insert(c.clone());
        c
    }
}

/// The name of the operator's admin kubeconfig: in [`Rendered::local`], and beside the PKI,
/// where deploy writes it and day 2 keeps it current.
pub const ADMIN_KUBECONFIG_FILE: &str = "admin.kubeconfig";

/// The operator's admin kubeconfig (`build/admin.kubeconfig` of [`render`]): the admin
/// certificate and key, the cluster CA, the API through the load balancer.
pub fn admin_kubeconfig(inv: &Inventory, pki: &Pki) -> Result<String, RenderError> {
    let tera = engine()?;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let admin = pki.cert("admin");
    let ctx = KubeconfigCtx {
        cluster_name: &inv.cluster.name,
        server: inv.api_server_url(),
        user: "admin".into(),
        ca_data: b64(&pki.ca(CaId::Kubernetes).cert_pem),
        cert_data: b64(&admin.cert_pem),
        key_data: b64(&admin.key_pem),
    };
    let err = |source| RenderError::Template {
        template: "kubeconfig".into(),
        node: "admin".into(),
        source,
    };
    tera.render(
        "kubeconfig",
        &tera::Context::from_serialize(&ctx).map_err(err)?,
    )
    .map_err(err)
}

/// Renders every host's files.
pub fn render(inv: &Inventory, pki: &Pki) -> Result<Rendered, RenderError> {
    let tera = engine()?;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let contexts = Contexts::new(inv, &pki.encryption_keys)?;

    let kubeconfig = |tera: &tera::Tera,
                      cert: &str,
                      user: &str,
                      server: String|
     -> Result<Vec<u8>, RenderError> {
        let kc = pki.cert(cert);
        let ctx = KubeconfigCtx {
            cluster_name: &inv.cluster.name,
            server,
            user: user.to_string(),
            ca_data: b64(&pki.ca(CaId::Kubernetes).cert_pem),
            cert_data: b64(&kc.cert_pem),
            key_data: b64(&kc.key_pem),
        };
        let err = |source| RenderError::Template {
            template: "kubeconfig".into(),
            node: user.to_string(),
            source,
        };
        Ok(tera
            .render(
                "kubeconfig",
                &tera::Context::from_serialize(&ctx).map_err(err)?,
            )
            .map_err(err)?
            .into_bytes())
    };

    // Local files the inventory names, read once: the upstream manifests, by `Upstream`, and
    // the image tarballs for every node that runs containerd.
    let read = |p: &Path| std::fs::read(p).map_err(io("reading", p));
    let local_manifest = |m: &Option<Manifest>| match m {
        Some(Manifest::File(p)) => read(p).map(Some),
        _ => Ok(None),
    };
    let upstream = [
        local_manifest(&inv.addons.metallb.manifest)?,
        local_manifest(&inv.addons.metrics_server)?,
    ];
    let images: Vec<(String, Contents)> = inv
        .addons
        .images
        .iter()
        .map(|p| {
            Ok((
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                read(p)?.into(),
            ))
        })
        .collect::<Result<_, RenderError>>()?;
    let containerd = ComponentId::Containerd.get();

    let mut interned = Interner::default();
    let mut wide_done: BTreeMap<&str, Contents> = BTreeMap::new();

    let mut hosts = BTreeMap::new();
    for node in &inv.nodes {
        let tctx = contexts.node(node)?;
        let subst = |s: &str| s.replace("{node}", &node.name);

        let mut files: Vec<File> = Vec::new();
        for rule in FILES.iter().filter(|r| r.applies(inv, node)) {
            let path = rule.path(inv);
            // A node with several roles (a master that is also a worker) gets shared files once.
            if let Some(f) = files.iter_mut().find(|f| f.path == path) {
                f.phase = f.phase.min(Some(rule.phase()));
                for u in rule.units.iter().filter_map(|c| c.get().unit) {
                    if !f.units.contains(&u) {
                        f.units.push(u);
                    }
                }
                continue;
            }
            let contents = match rule.source {
                Source::Template(name) if CLUSTER_WIDE.contains(&name) => {
                    if let Some(c) = wide_done.get(name) {
                        files.push(File {
                            path,
                            mode: rule.mode,
                            contents: c.clone(),
                            units: units_of(rule),
                            anchor: None,
                            restarts: true,
                            phase: Some(rule.phase()),
                        });
                        continue;
                    }
                    let c = interned
                        .intern(render_one(&tera, &contexts.wide, inv, node, name)?.into_bytes());
                    wide_done.insert(name, c.clone());
                    files.push(File {
                        path,
                        mode: rule.mode,
                        contents: c,
                        units: units_of(rule),
                        anchor: None,
                        restarts: true,
                        phase: Some(rule.phase()),
                    });
                    continue;
                }
                Source::Template(name) => render_one(&tera, &tctx, inv, node, name)?.into_bytes(),
                Source::CaCert(id) => pki.ca(id).cert_pem.clone().into_bytes(),
                Source::CaKey(id) => pki.ca(id).key_pem.clone().into_bytes(),
                Source::CaSigner(id) => crate::pki::pem_certificates(&pki.ca(id).cert_pem)
                    .into_iter()
                    .next()
                    .unwrap_or_default()
                    .into_bytes(),
                Source::Cert(name) => pki.cert(&subst(name)).cert_pem.clone().into_bytes(),
                Source::Key(name) => pki.cert(&subst(name)).key_pem.clone().into_bytes(),
                Source::CertAndKey(name) => {
                    let kc = pki.cert(&subst(name));
                    format!("{}{}", kc.cert_pem, kc.key_pem).into_bytes()
                }
                Source::SaKey => pki.sa_key_pem.clone().into_bytes(),
                Source::SaPub => pki.sa_pub_pem.clone().into_bytes(),
                Source::Kubeconfig { cert, user, server } => {
                    kubeconfig(&tera, &subst(cert), &subst(user), server.url(inv))?
                }
                Source::Manifest(which) => upstream[which as usize].clone().unwrap_or_default(),
            };
            let contents = interned.intern(contents);
            let units = units_of(rule);
            let anchor = match rule.source {
                Source::CaCert(id) | Source::CaSigner(id) | Source::CaKey(id) => {
                    Some(Anchor::Ca(id))
                }
                Source::SaKey | Source::SaPub => Some(Anchor::ServiceAccountKey),
                Source::Template(ENCRYPTION_CONFIG) => Some(Anchor::EncryptionKey),
                _ => None,
            };
            let restarts = !READ_AT_FIRST_START.contains(&path.as_str());
            files.push(File {
                path,
                mode: rule.mode,
                contents,
                units,
                anchor,
                restarts,
                phase: Some(rule.phase()),
            });
        }
        if containerd.runs_on(inv, node) {
            for (name, bytes) in &images {
                // Imported by the addons phase.
                files.push(File {
                    path: format!("{IMAGES_DIR}/{name}"),
                    mode: 0o644,
                    contents: bytes.clone(),
                    units: vec![],
                    anchor: None,
                    restarts: true,
                    phase: Some(crate::components::Phase::Addons),
                });
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        for f in &files {
            check_syntax(f, &inv.cni.conf_dir).map_err(|reason| RenderError::Malformed {
                path: f.path.clone(),
                node: node.name.clone(),
                reason,
            })?;
        }
        hosts.insert(node.name.clone(), files);
    }

    let local = vec![File {
        path: ADMIN_KUBECONFIG_FILE.into(),
        mode: 0o600,
        contents: admin_kubeconfig(inv, pki)?.into_bytes().into(),
        units: vec![],
        anchor: None,
        restarts: true,
        phase: None,
    }];
    Ok(Rendered { hosts, local })
}

/// Parses what has a machine-readable syntax, so a template bug fails here and not on a node.
fn check_syntax(f: &File, cni_conf_dir: &str) -> Result<(), String> {
    // Binaries and image archives are not text.
    if f.path.starts_with(IMAGES_DIR) {
        return Ok(());
    }
    let text = std::str::from_utf8(&f.contents).map_err(|e| format!("not UTF-8: {e}"))?;
    if f.path.ends_with(".yaml") || f.path.ends_with("kubeconfig") {
        for doc in serde_yaml::Deserializer::from_str(text) {
            serde_yaml::Value::deserialize(doc).map_err(|e| e.to_string())?;
        }
    } else if f.path.ends_with(".conf")
        && Path::new(&f.path).parent() == Some(Path::new(cni_conf_dir))
    {
        serde_json::from_str::<serde_json::Value>(text).map_err(|e| e.to_string())?;
    } else if f.path.ends_with(".toml") {
        text.parse::<toml::Table>().map_err(|e| e.to_string())?;
    }
    Ok(())
}
