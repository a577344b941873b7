//! Stage 7: is this cluster healthy and built right? Check by check, host by host.
//!
//! Verify needs no deploy state: only the inventory, the CAs and a client certificate (admin
//! and/or etcd), so it also judges clusters that students built by hand. Where a file lives is
//! read from the running units themselves (`systemctl cat etcd` → `--cert-file=…`, the kubelet's
//! `--config` → `tlsCertFile`), falling back to hardway's paths, so a hand-made layout is checked
//! where it is. Private keys never leave the nodes: a key is compared with its certificate on
//! the node, by the SHA-256 of the public key openssl derives from each.
//!
//! - `host`: what is checked over each node's [`Remote`](crate::remote::Remote): units, certificates, keys, the
//!   encryption config, HAProxy;
//! - `certs`: one certificate against its CA, SANs, expiry and key;
//! - `sans`: which names and addresses a serving certificate must cover, by what the units and
//!   their clients configure (hardway's own conventions beyond that are only a WARN);
//! - `cluster`: what is checked across nodes or through the [`Probe`]: etcd, API servers,
//!   HAProxy backends, the encryption config being the same everywhere.

pub(crate) mod certs;
mod cluster;
mod faults_support;
pub(crate) mod host;
mod sans;
mod work;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::events::{Events, Status as EventStatus};
use crate::inventory::Inventory;
use crate::pki::CaId;
use crate::probe::{EtcdAuth, NetProbe, Probe, api_tls_config};
use crate::remote::{Connector, fan_out};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    Skip,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// The node checked; `None` for a check of the whole cluster (etcd's leader, quorum,
    /// alarms), which no one node owns.
    pub host: Option<String>,
    pub check: String,
    pub status: Status,
    pub detail: String,
    /// What to do about it; absent on PASS.
    pub hint: Option<String>,
}

/// What the text report, the class's grades and the fault scenarios call the place of a
/// cluster-wide check (JSON says `"host": null`, which no node's check can).
pub const CLUSTER: &str = "cluster";

impl Check {
    /// The node's name, or [`CLUSTER`].
    pub fn place(&self) -> &str {
        self.host.as_deref().unwrap_or(CLUSTER)
    }
}

pub(crate) fn check(
    host: &str,
    name: impl Into<String>,
    status: Status,
    detail: impl Into<String>,
    hint: Option<&str>,
) -> Check {
    check_at(Some(host), name, status, detail, hint)
}

/// A check of `host`, or of the whole cluster where there is none.
pub(crate) fn check_at(
    host: Option<&str>,
    name: impl Into<String>,
    status: Status,
    detail: impl Into<String>,
    hint: Option<&str>,
) -> Check {
    Check {
        host: host.map(str::to_string),
        ..cluster_check(name, status, detail, hint)
    }
}

/// A check of the whole cluster rather than of one node.
pub(crate) fn cluster_check(
    name: impl Into<String>,
    status: Status,
    detail: impl Into<String>,
    hint: Option<&str>,
) -> Check {
    Check {
        host: None,
        check: name.into(),
        status,
        detail: detail.into(),
        hint: hint.map(str::to_string),
    }
}

/// How many checks had each status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub pass: usize,
    pub warn: usize,
    pub fail: usize,
    pub skip: usize,
}

impl Counts {
    pub fn of(checks: &[Check]) -> Counts {
        let count = |st: Status| checks.iter().filter(|c| c.status == st).count();
        Counts {
            pass: count(Status::Pass),
            warn: count(Status::Warn),
            fail: count(Status::Fail),
            skip: count(Status::Skip),
        }
    }
}

/// `verify --output json`: the verdict, the counts and every check.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The inventory's cluster name.
    pub cluster: String,
    /// No check failed.
    pub ok: bool,
    pub counts: Counts,
    /// Nodes with a failing check; `cluster` if a cluster-wide one failed.
    pub failed: Vec<String>,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn new(inv: &Inventory, checks: Vec<Check>) -> Report {
        let failed = failed_places(&checks);
        Report {
            cluster: inv.cluster.name.clone(),
            ok: failed.is_empty(),
            counts: Counts::of(&checks),
            failed,
            checks,
        }
    }
}

/// Where a check failed, each place once, in order.
fn failed_places(checks: &[Check]) -> Vec<String> {
    checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| c.place().to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Why verify could not run at all (a check that fails is a [`Check`], not an error).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where verify finds the CAs and client credentials (hardway's PKI layout by default).
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub pki_dir: PathBuf,
    pub ca: Option<PathBuf>,
    pub etcd_ca: Option<PathBuf>,
    pub etcd_cert: Option<PathBuf>,
    pub etcd_key: Option<PathBuf>,
    pub admin_cert: Option<PathBuf>,
    pub admin_key: Option<PathBuf>,
    pub parallel: usize,
}

impl VerifyOptions {
    pub fn new(pki_dir: PathBuf) -> VerifyOptions {
        VerifyOptions {
            pki_dir,
            ca: None,
            etcd_ca: None,
            etcd_cert: None,
            etcd_key: None,
            admin_cert: None,
            admin_key: None,
            parallel: 32,
        }
    }
}

/// The CAs verify checks signatures against, and the client identities it uses.
pub struct Credentials {
    pub cas: BTreeMap<CaId, String>,
    pub etcd: Option<EtcdAuth>,
    pub admin: Option<(String, String)>,
}

fn read_opt(explicit: &Option<PathBuf>, default: PathBuf) -> Result<Option<String>, VerifyError> {
    let path = explicit.clone().unwrap_or(default);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => Ok(None),
        Err(source) => Err(VerifyError::Read { path, source }),
    }
}

impl Credentials {
    pub fn load(o: &VerifyOptions) -> Result<Credentials, VerifyError> {
        let d = &o.pki_dir;
        let mut etcd_cert = read_opt(&o.etcd_cert, d.join("etcd/healthcheck-client.crt"))?;
        let mut etcd_key = read_opt(&o.etcd_key, d.join("etcd/healthcheck-client.key"))?;
        if etcd_cert.is_none() {
            // The API server's etcd client certificate works as well.
            etcd_cert = read_opt(&None, d.join("apiserver-etcd-client.crt"))?;
            etcd_key = read_opt(&None, d.join("apiserver-etcd-client.key"))?;
        }
        let mut cas = BTreeMap::new();
        for (id, explicit, default) in [
            (CaId::Kubernetes, &o.ca, d.join("ca.crt")),
            (CaId::Etcd, &o.etcd_ca, d.join("etcd/ca.crt")),
            (CaId::FrontProxy, &None, d.join("front-proxy-ca.crt")),
        ] {
            if let Some(pem) = read_opt(explicit, default)? {
                cas.insert(id, pem);
            }
        }
        let admin = read_opt(&o.admin_cert, d.join("admin.crt"))?
            .zip(read_opt(&o.admin_key, d.join("admin.key"))?);
        Ok(Credentials {
            etcd: match (cas.get(&CaId::Etcd), etcd_cert, etcd_key) {
                (Some(ca), Some(c), Some(k)) => Some(EtcdAuth::from_pem(ca.clone(), c, k)),
                _ => None,
            },
            cas,
            admin,
        })
    }

    /// The probe these credentials allow, and why the API half is missing if it is.
    pub fn probe(&self, inv: &Inventory) -> (NetProbe, Option<String>) {
        let (api, why) = match (self.cas.get(&CaId::Kubernetes), &self.admin) {
            (Some(ca), Some((cert, key))) => match api_tls_config(ca, cert, key) {
                Ok(c) => (Some(c), None),
                Err(e) => (None, Some(format!("admin credentials unusable: {e}"))),
            },
            _ => (None, None),
        };
        (NetProbe::new(inv, self.etcd.clone(), api), why)
    }
}

/// Runs every check and returns them sorted by host and check name.
pub async fn verify(
    inv: &Inventory,
    creds: Credentials,
    connector: Arc<dyn Connector>,
    probe: Arc<dyn Probe>,
    api_error: Option<String>,
    parallel: usize,
    events: Events,
) -> Vec<Check> {
    let creds = Arc::new(creds);
    let inv_arc = Arc::new(inv.clone());
    let work: Vec<work::HostWork> = inv.nodes.iter().map(work::HostWork::new).collect();
    let (i2, c2, ev) = (inv_arc.clone(), creds.clone(), events.clone());
    let mut work = fan_out(work, parallel, move |h| {
        let step = ev.start(Some(&h.node.name), None, "checks over SSH");
        host::run(&i2, &c2, connector.as_ref(), h);
        let failed = h.checks.iter().filter(|c| c.status == Status::Fail).count();
        step.done(
            if failed == 0 {
                EventStatus::Ok
            } else {
                EventStatus::Failed
            },
            Some(format!("{} checks, {failed} failed", h.checks.len())),
        );
    })
    .await;

    // Certificates last: what a server certificate must cover depends on every node's clients.
    host::add_clients(inv, &mut work);
    let mut checks: Vec<Check> = Vec::new();
    for h in &work {
        checks.extend(h.checks.iter().cloned());
        checks.extend(
            h.found.iter().map(|f| {
                certs::check_site(&h.node.name, &f.site, f.pem.as_deref(), &f.key, &creds)
            }),
        );
    }
    cluster::encryption_consistency(inv, &work, &mut checks);
    cluster::backends(inv, &work, &mut checks);
    faults_support::across(inv, &work, &mut checks);
    checks.extend(cluster::etcd(inv, probe.as_ref(), creds.etcd.is_some(), &work).await);
    checks.extend(
        cluster::api(
            inv,
            probe.as_ref(),
            creds.admin.is_some() && creds.cas.contains_key(&CaId::Kubernetes),
            api_error,
            &work,
        )
        .await,
    );
    checks.sort_by(|a, b| (&a.host, &a.check).cmp(&(&b.host, &b.check)));
    for c in &checks {
        let (status, message) = match c.status {
            Status::Pass => (EventStatus::Ok, c.detail.clone()),
            Status::Warn => (EventStatus::Ok, format!("WARN: {}", c.detail)),
            Status::Fail => (EventStatus::Failed, c.detail.clone()),
            Status::Skip => (EventStatus::Skipped, c.detail.clone()),
        };
        events.emit(
            c.host.as_deref(),
            None,
            &c.check,
            status,
            None,
            Some(message),
        );
    }
    let failed = failed_places(&checks);
    let c = Counts::of(&checks);
    let counts = [
        ("pass", c.pass),
        ("warn", c.warn),
        ("fail", c.fail),
        ("skip", c.skip),
    ];
    events.summary(
        failed.is_empty(),
        inv.nodes.len(),
        failed,
        counts
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    );
    checks
}

/// The report as text: one line per check, sorted, with hints for anything but PASS.
pub fn format_report(checks: &[Check]) -> String {
    let mut s = String::new();
    // A SKIP said the same way on several hosts (a phase not deployed yet) is one line naming
    // them all, where the first of them would stand: a lab stopped at the load balancer has two
    // dozen of them.
    let same = |a: &Check, b: &Check| {
        a.status == Status::Skip
            && b.status == Status::Skip
            && (&a.check, &a.detail, &a.hint) == (&b.check, &b.detail, &b.hint)
    };
    for (i, c) in checks.iter().enumerate() {
        if checks[..i].iter().any(|p| same(p, c)) {
            continue;
        }
        let hosts: Vec<&str> = checks[i..]
            .iter()
            .filter(|o| std::ptr::eq(*o, c) || same(c, o))
            .map(Check::place)
            .collect();
        let _ = writeln!(
            s,
            "{:<4}  {:<12} {:<34} {}",
            c.status,
            hosts.join(","),
            c.check,
            c.detail
        );
        if let Some(h) = &c.hint {
            let _ = writeln!(s, "{:<4}  {:<12} {:<34} hint: {h}", "", "", "");
        }
    }
    let c = Counts::of(checks);
    let _ = write!(
        s,
        "{} PASS, {} WARN, {} FAIL, {} SKIP",
        c.pass, c.warn, c.fail, c.skip
    );
    s
}
