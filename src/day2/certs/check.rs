//! `hardway certs check`: every certificate on every node, read where the running units say
//! they are — the certificates and keys their flags name (verify's sites), the CA bundles they
//! trust, the kubeconfigs they use (the client certificate and CA embedded in each), HAProxy's
//! `crt` and `ca-file` — plus the local PKI; with issuer, SANs, serial, expiry and days left.
//! Like `kubeadm certs check-expiration`, for the whole cluster at once. Only certificate
//! blocks leave the nodes (`Remote::read_certificates`), never a key.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use time::OffsetDateTime;

use crate::components::{COMPONENTS, ComponentId};
use crate::inventory::{Inventory, Node, Role};
use crate::pki::{self, CertInfo, CheckRow};
use crate::remote::{Connector, Remote, RemoteError, fan_out};
use crate::render::{self, Rendered};
use crate::verify::host::{Unit, read_units, sites};

/// The flags that name the CA bundles a component trusts. `rotate-ca` turns exactly these
/// files into bundles; `certs check` lists each certificate in them.
pub(crate) const TRUST_FLAGS: &[(ComponentId, &[&str])] = &[
    (
        ComponentId::Etcd,
        &["trusted-ca-file", "peer-trusted-ca-file"],
    ),
    (
        ComponentId::KubeApiserver,
        &[
            "client-ca-file",
            "etcd-cafile",
            "kubelet-certificate-authority",
            "requestheader-client-ca-file",
        ],
    ),
    (
        ComponentId::KubeControllerManager,
        &[
            "client-ca-file",
            "cluster-signing-cert-file",
            "root-ca-file",
            "requestheader-client-ca-file",
        ],
    ),
    (ComponentId::KubeScheduler, &["client-ca-file"]),
];

/// Flags that name kubeconfigs.
const KUBECONFIG_FLAGS: &[&str] = &[
    "kubeconfig",
    "authentication-kubeconfig",
    "authorization-kubeconfig",
];

/// One certificate found on a node (a bundle or a kubeconfig gives several rows).
#[derive(Debug, Clone, Serialize)]
pub struct NodeCert {
    pub node: String,
    pub path: String,
    /// What names the file: `etcd --cert-file`, `kubeconfig`, `haproxy.cfg crt`.
    pub named_by: Vec<String>,
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub sans: Vec<String>,
    pub ca: bool,
    pub not_after: String,
    pub days_left: i64,
    /// Missing, unreadable, expired or expiring within the warning; none when fine.
    pub problem: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CertsReport {
    pub warn_days: i64,
    /// The PKI directory on this machine (`pki check` with the same warning).
    pub local: Vec<CheckRow>,
    pub nodes: Vec<NodeCert>,
    /// Nodes that could not be read, and why.
    pub unreachable: Vec<(String, String)>,
}

impl CertsReport {
    /// Nothing expires within the warning, nothing is missing, every node answered.
    pub fn ok(&self) -> bool {
        self.unreachable.is_empty()
            && self.local.iter().all(|r| r.problems.is_empty())
            && self.nodes.iter().all(|c| c.problem.is_none())
    }

    /// The rows of one node, by path.
    pub fn of(&self, node: &str) -> impl Iterator<Item = &NodeCert> {
        self.nodes.iter().filter(move |c| c.node == node)
    }
}

/// Every kubeconfig hardway renders, per node: looked for besides those the units name (the
/// scheduler's and kube-proxy's are named in their config files, the admin's by nothing).
pub fn rendered_kubeconfigs(rendered: &Rendered) -> BTreeMap<String, Vec<String>> {
    rendered
        .hosts
        .iter()
        .map(|(h, fs)| {
            (
                h.clone(),
                fs.iter()
                    .filter(|f| f.path.ends_with("kubeconfig"))
                    .map(|f| f.path.clone())
                    .collect(),
            )
        })
        .collect()
}

/// Lists every certificate on every node and in the local PKI directory `pki_dir`.
pub async fn check(
    inv: &Inventory,
    pki_dir: &Path,
    connector: Arc<dyn Connector>,
    kubeconfigs: BTreeMap<String, Vec<String>>,
    warn_days: i64,
    parallel: usize,
) -> Result<CertsReport, pki::PkiError> {
    let now = OffsetDateTime::now_utc();
    let mut local = pki::check_within(inv, pki_dir, warn_days)?;
    for r in local
        .iter_mut()
        .filter(|r| !r.issuer.is_empty() && r.days_left >= 0 && r.days_left < warn_days)
    {
        // pki check flags a CA only once it has expired; here the warning counts for CAs too.
        if !r.problems.iter().any(|p| p.starts_with("expires in")) {
            r.problems.push(format!("expires in {} days", r.days_left));
        }
    }
    type Work = (Node, Vec<String>, Result<Vec<NodeCert>, String>);
    let inv_arc = Arc::new(inv.clone());
    let work: Vec<Work> = inv
        .nodes
        .iter()
        .map(|n| {
            (
                n.clone(),
                kubeconfigs.get(&n.name).cloned().unwrap_or_default(),
                Ok(vec![]),
            )
        })
        .collect();
    let done = fan_out(work, parallel, move |(node, kcs, out): &mut Work| {
        *out = connector
            .connect(node)
            .and_then(|r| on_node(&inv_arc, node, r.as_ref(), kcs, warn_days, now))
            .map_err(|e| e.to_string());
    })
    .await;
    let mut report = CertsReport {
        warn_days,
        local,
        nodes: vec![],
        unreachable: vec![],
    };
    for (node, _, out) in done {
        match out {
            Ok(rows) => report.nodes.extend(rows),
            Err(e) => report.unreachable.push((node.name, e)),
        }
    }
    Ok(report)
}

/// Where `node` keeps certificates, by what names each file; `required` files must exist.
fn files_on(
    inv: &Inventory,
    node: &Node,
    units: &BTreeMap<String, Unit>,
    haproxy_cfg: Option<&str>,
    kubeconfigs: &[String],
) -> BTreeMap<String, (Vec<String>, bool)> {
    let mut files: BTreeMap<String, (Vec<String>, bool)> = BTreeMap::new();
    let mut add = |path: &str, by: String, required: bool| {
        let e = files.entry(path.to_string()).or_default();
        e.0.push(by);
        e.1 |= required;
    };
    for site in sites(inv, node, units) {
        add(&site.cert, site.what.to_string(), true);
    }
    for c in COMPONENTS.iter().filter(|c| c.runs_on(inv, node)) {
        let Some(unit) = c.unit.and_then(|u| units.get(u)).filter(|u| u.deployed()) else {
            continue;
        };
        let trust = TRUST_FLAGS
            .iter()
            .filter(|(id, _)| *id == c.id)
            .flat_map(|(_, f)| f.iter());
        for flag in trust.chain(KUBECONFIG_FLAGS.iter()) {
            if let Some(path) = unit.flags.get(*flag) {
                add(path, format!("{} --{flag}", c.name), true);
            }
        }
    }
    if let Some(cfg) = haproxy_cfg {
        for (word, path) in haproxy_files(cfg) {
            add(&path, format!("haproxy.cfg {word}"), true);
        }
    }
    for k in kubeconfigs {
        add(k, "kubeconfig".into(), false);
    }
    for (by, _) in files.values_mut() {
        by.dedup();
    }
    files
}

/// The `crt` and `ca-file` of HAProxy's configuration, each once.
fn haproxy_files(cfg: &str) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = Vec::new();
    for line in cfg.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let words: Vec<&str> = line.split_whitespace().collect();
        for (i, w) in words.iter().enumerate() {
            let key = match *w {
                "crt" => "crt",
                "ca-file" => "ca-file",
                _ => continue,
            };
            if let Some(p) = words
                .get(i + 1)
                .filter(|p| !out.iter().any(|(_, q)| q == *p))
            {
                out.push((key, p.to_string()));
            }
        }
    }
    out
}

fn on_node(
    inv: &Inventory,
    node: &Node,
    remote: &dyn Remote,
    kubeconfigs: &[String],
    warn_days: i64,
    now: OffsetDateTime,
) -> Result<Vec<NodeCert>, RemoteError> {
    let units = read_units(inv, node, remote)?;
    let haproxy_cfg = match node.has(Role::Lb) && units.get("haproxy").is_some_and(Unit::deployed) {
        true => remote.read_config(
            render::path_of_template("haproxy.cfg").unwrap_or("/etc/haproxy/haproxy.cfg"),
        )?,
        false => None,
    };
    let files = files_on(inv, node, &units, haproxy_cfg.as_deref(), kubeconfigs);
    let found = remote.read_certificates(&files.keys().cloned().collect::<Vec<_>>())?;
    let mut rows = Vec::new();
    for (path, (named_by, required)) in files {
        let row = |problem: String| NodeCert {
            node: node.name.clone(),
            path: path.clone(),
            named_by: named_by.clone(),
            subject: String::new(),
            issuer: String::new(),
            serial: String::new(),
            sans: vec![],
            ca: false,
            not_after: String::new(),
            days_left: 0,
            problem: Some(problem),
        };
        let pems = match found.get(&path).cloned().flatten() {
            None if required => {
                rows.push(row("missing".into()));
                continue;
            }
            None => continue,
            Some(text) => pki::pem_certificates(&text),
        };
        if pems.is_empty() {
            rows.push(row("holds no certificate".into()));
        }
        for pem in pems {
            let info = match CertInfo::parse(&pem) {
                Ok(i) => i,
                Err(e) => {
                    rows.push(row(format!("unreadable: {e}")));
                    continue;
                }
            };
            let mut subject = format!("CN={}", info.cn);
            for o in &info.orgs {
                subject.push_str(&format!(",O={o}"));
            }
            rows.push(NodeCert {
                subject,
                issuer: info.issuer_cn.clone(),
                serial: info.serial.clone(),
                sans: info.sans.iter().map(|s| s.to_string()).collect(),
                ca: info.is_ca,
                not_after: pki::fmt_seconds(info.not_after),
                days_left: info.days_left(now),
                problem: info.expiry_within(now, warn_days),
                ..row(String::new())
            });
        }
    }
    Ok(rows)
}

/// The report as text: the local PKI, then every node's certificates; problems last.
pub fn format(report: &CertsReport) -> String {
    let mut s = format!(
        "{:<14} {:<44} {:<36} {:<26} {:<20} {:>5}  STATUS\n",
        "NODE", "FILE", "SUBJECT", "ISSUER", "EXPIRES", "DAYS"
    );
    let line = |node: &str,
                file: &str,
                subject: &str,
                issuer: &str,
                expires: &str,
                days: i64,
                status: &str| {
        format!(
            "{node:<14} {file:<44} {subject:<36} {issuer:<26} {expires:<20} {days:>5}  {status}\n"
        )
    };
    for r in &report.local {
        let status = if r.problems.is_empty() {
            "ok".to_string()
        } else {
            r.problems.join("; ")
        };
        s.push_str(&line(
            "(pki)",
            &r.name,
            &r.subject,
            &r.issuer,
            &r.not_after,
            r.days_left,
            &status,
        ));
    }
    for c in &report.nodes {
        s.push_str(&line(
            &c.node,
            &c.path,
            &c.subject,
            &c.issuer,
            &c.not_after,
            c.days_left,
            c.problem.as_deref().unwrap_or("ok"),
        ));
    }
    for (n, e) in &report.unreachable {
        s.push_str(&format!("{n:<14} unreachable: {e}\n"));
    }
    let bad = report
        .local
        .iter()
        .filter(|r| !r.problems.is_empty())
        .count()
        + report.nodes.iter().filter(|c| c.problem.is_some()).count();
    s.push_str(&format!(
        "{} certificates in the PKI, {} on {} nodes; {bad} expire within {} days or have problems, {} nodes unreachable",
        report.local.len(),
        report.nodes.len(),
        inv_nodes(report),
        report.warn_days,
        report.unreachable.len()
    ));
    s
}

fn inv_nodes(report: &CertsReport) -> usize {
    let mut n: Vec<&str> = report.nodes.iter().map(|c| c.node.as_str()).collect();
    n.dedup();
    n.len()
}
