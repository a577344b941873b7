//! Stage 7: is this cluster healthy and built right? Check by check, host by host.
//!
//! Verify needs no deploy state: only the inventory, the CAs and a client certificate (admin
//! and/or etcd), so it also judges clusters that students built by hand. Where a file lives is
//! read from the running units themselves (`systemctl cat etcd` → `--cert-file=…`, the kubelet's
//! `--config` → `tlsCertFile`), falling back to hardway's paths, so a hand-made layout is checked
//! where it is. Private keys never leave the nodes: a key is compared with its certificate on
//! the node, by the SHA-256 of the public key openssl derives from each.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::bootstrap::{self, EtcdAuth};
use crate::inventory::{Inventory, Node, Role, host_for_url};
use crate::pki::{self, CertInfo, San};
use crate::ssh::{Conn, HostKeyPolicy, Target, fan_out, sh_quote};

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
    pub host: String,
    pub check: String,
    pub status: Status,
    pub detail: String,
    /// What to do about it; absent on PASS.
    pub hint: Option<String>,
}

fn check(host: &str, name: impl Into<String>, status: Status, detail: impl Into<String>, hint: Option<&str>) -> Check {
    Check { host: host.to_string(), check: name.into(), status, detail: detail.into(), hint: hint.map(str::to_string) }
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
    pub accept_new_host_keys: bool,
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
            accept_new_host_keys: false,
        }
    }
}

struct Credentials {
    cluster_ca: Option<String>,
    etcd_ca: Option<String>,
    front_proxy_ca: Option<String>,
    etcd: Option<EtcdAuth>,
    admin: Option<(String, String)>,
}

fn read_opt(explicit: &Option<PathBuf>, default: PathBuf) -> Result<Option<String>> {
    let path = explicit.clone().unwrap_or(default);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn credentials(o: &VerifyOptions) -> Result<Credentials> {
    let d = &o.pki_dir;
    let etcd_ca = read_opt(&o.etcd_ca, d.join("etcd/ca.crt"))?;
    let mut etcd_cert = read_opt(&o.etcd_cert, d.join("etcd/healthcheck-client.crt"))?;
    let mut etcd_key = read_opt(&o.etcd_key, d.join("etcd/healthcheck-client.key"))?;
    if etcd_cert.is_none() {
        // The API server's etcd client certificate works as well.
        etcd_cert = read_opt(&None, d.join("apiserver-etcd-client.crt"))?;
        etcd_key = read_opt(&None, d.join("apiserver-etcd-client.key"))?;
    }
    let admin_cert = read_opt(&o.admin_cert, d.join("admin.crt"))?;
    let admin_key = read_opt(&o.admin_key, d.join("admin.key"))?;
    Ok(Credentials {
        cluster_ca: read_opt(&o.ca, d.join("ca.crt"))?,
        etcd: match (&etcd_ca, etcd_cert, etcd_key) {
            (Some(ca), Some(c), Some(k)) => Some(EtcdAuth::from_pem(ca.clone(), c, k)),
            _ => None,
        },
        etcd_ca,
        front_proxy_ca: read_opt(&None, d.join("front-proxy-ca.crt"))?,
        admin: admin_cert.zip(admin_key),
    })
}

/// The units a node should run, by role.
fn expected_units(inv: &Inventory, node: &Node) -> Vec<&'static str> {
    let mut u = Vec::new();
    if inv.is_etcd_member(node) {
        u.push("etcd");
    }
    if node.has(Role::Master) {
        u.extend(["kube-apiserver", "kube-controller-manager", "kube-scheduler"]);
    }
    if node.has(Role::Worker) {
        u.extend(["containerd", "kubelet", "kube-proxy"]);
    }
    if node.has(Role::Lb) {
        u.push("haproxy");
    }
    u
}

/// What one unit looks like on a node.
#[derive(Debug, Clone, Default)]
struct UnitInfo {
    load: String,
    active: String,
    enabled: String,
    /// `--flag=value` pairs of ExecStart.
    flags: BTreeMap<String, String>,
}

impl UnitInfo {
    fn deployed(&self) -> bool {
        self.load == "loaded"
    }
}

const MARK: &str = "@@hardway:";

/// Splits a script's output into `MARK`-named sections.
fn sections(out: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let mut cur = String::new();
    for line in out.lines() {
        if let Some(name) = line.strip_prefix(MARK) {
            cur = name.to_string();
            map.entry(cur.clone()).or_insert_with(String::new);
        } else if let Some(body) = map.get_mut(&cur) {
            body.push_str(line);
            body.push('\n');
        }
    }
    map
}

/// `--flag=value` and `--flag value` pairs of a unit's ExecStart (hand-written units use both).
fn exec_flags(unit_text: &str) -> BTreeMap<String, String> {
    let joined = unit_text.replace("\\\n", " ");
    let mut flags = BTreeMap::new();
    if let Some(line) = joined.lines().find_map(|l| l.trim().strip_prefix("ExecStart=")) {
        let args: Vec<&str> = line.split_whitespace().collect();
        for (i, arg) in args.iter().enumerate() {
            let Some(flag) = arg.strip_prefix("--") else { continue };
            match flag.split_once('=') {
                Some((k, v)) => {
                    flags.insert(k.to_string(), v.to_string());
                }
                None => {
                    let value = args.get(i + 1).filter(|v| !v.starts_with("--")).copied().unwrap_or("true");
                    flags.insert(flag.to_string(), value.to_string());
                }
            }
        }
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_in_both_spellings() {
        let unit = "[Service]\nExecStart=/usr/bin/etcd \\\n  --name m1 \\\n  --cert-file=/etc/etcd/k.pem \\\n  --client-cert-auth \\\n  --data-dir=/var/lib/etcd\nRestart=always\n";
        let f = exec_flags(unit);
        assert_eq!(f["name"], "m1");
        assert_eq!(f["cert-file"], "/etc/etcd/k.pem");
        assert_eq!(f["client-cert-auth"], "true");
        assert_eq!(f["data-dir"], "/var/lib/etcd");
    }
}

/// A certificate file a node should have, and what it must satisfy.
#[derive(Debug, Clone)]
struct CertSite {
    what: &'static str,
    cert: String,
    key: Option<String>,
    ca: CaKind,
    /// SANs the inventory requires; None for client certificates.
    sans: Option<BTreeSet<San>>,
}

#[derive(Debug, Clone, Copy)]
enum CaKind {
    Cluster,
    Etcd,
    FrontProxy,
}

/// Where each certificate a node needs is named: the unit and its flags (hand-built clusters
/// put them anywhere), hardway's path when the unit does not say, the CA that must have signed
/// it, and the matrix entry whose SANs it must carry (`{node}` = this node).
struct SiteRule {
    what: &'static str,
    role: SiteRole,
    unit: &'static str,
    cert_flag: &'static str,
    key_flag: &'static str,
    cert_default: &'static str,
    key_default: &'static str,
    ca: CaKind,
    sans_of: Option<&'static str>,
    aggregation_only: bool,
}

#[derive(Clone, Copy)]
enum SiteRole {
    EtcdMember,
    Master,
    Worker,
}

#[rustfmt::skip]
const SITES: &[SiteRule] = &[
    SiteRule { what: "etcd server", role: SiteRole::EtcdMember, unit: "etcd", cert_flag: "cert-file", key_flag: "key-file", cert_default: "/etc/etcd/pki/server.crt", key_default: "/etc/etcd/pki/server.key", ca: CaKind::Etcd, sans_of: Some("etcd/server-{node}"), aggregation_only: false },
    SiteRule { what: "etcd peer", role: SiteRole::EtcdMember, unit: "etcd", cert_flag: "peer-cert-file", key_flag: "peer-key-file", cert_default: "/etc/etcd/pki/peer.crt", key_default: "/etc/etcd/pki/peer.key", ca: CaKind::Etcd, sans_of: Some("etcd/peer-{node}"), aggregation_only: false },
    SiteRule { what: "API server", role: SiteRole::Master, unit: "kube-apiserver", cert_flag: "tls-cert-file", key_flag: "tls-private-key-file", cert_default: "/etc/kubernetes/pki/apiserver.crt", key_default: "/etc/kubernetes/pki/apiserver.key", ca: CaKind::Cluster, sans_of: Some("apiserver"), aggregation_only: false },
    SiteRule { what: "API server kubelet client", role: SiteRole::Master, unit: "kube-apiserver", cert_flag: "kubelet-client-certificate", key_flag: "kubelet-client-key", cert_default: "/etc/kubernetes/pki/apiserver-kubelet-client.crt", key_default: "/etc/kubernetes/pki/apiserver-kubelet-client.key", ca: CaKind::Cluster, sans_of: None, aggregation_only: false },
    SiteRule { what: "API server etcd client", role: SiteRole::Master, unit: "kube-apiserver", cert_flag: "etcd-certfile", key_flag: "etcd-keyfile", cert_default: "/etc/kubernetes/pki/apiserver-etcd-client.crt", key_default: "/etc/kubernetes/pki/apiserver-etcd-client.key", ca: CaKind::Etcd, sans_of: None, aggregation_only: false },
    SiteRule { what: "front-proxy client", role: SiteRole::Master, unit: "kube-apiserver", cert_flag: "proxy-client-cert-file", key_flag: "proxy-client-key-file", cert_default: "/etc/kubernetes/pki/front-proxy-client.crt", key_default: "/etc/kubernetes/pki/front-proxy-client.key", ca: CaKind::FrontProxy, sans_of: None, aggregation_only: true },
    // The kubelet names its certificate in its config file; those keys are merged into its flags.
    SiteRule { what: "kubelet", role: SiteRole::Worker, unit: "kubelet", cert_flag: "tlsCertFile", key_flag: "tlsPrivateKeyFile", cert_default: "/var/lib/kubelet/pki/kubelet.crt", key_default: "/var/lib/kubelet/pki/kubelet.key", ca: CaKind::Cluster, sans_of: Some("kubelet-{node}"), aggregation_only: false },
];

fn cert_sites(inv: &Inventory, node: &Node, units: &BTreeMap<String, UnitInfo>) -> Vec<CertSite> {
    let specs: BTreeMap<String, pki::CertSpec> = pki::matrix(inv).into_iter().map(|s| (s.name.clone(), s)).collect();
    SITES
        .iter()
        .filter(|r| match r.role {
            // etcd is checked even where its unit is missing: a member without etcd is broken.
            SiteRole::EtcdMember => inv.is_etcd_member(node),
            SiteRole::Master => node.has(Role::Master) && units.get(r.unit).is_some_and(UnitInfo::deployed),
            SiteRole::Worker => node.has(Role::Worker) && units.get(r.unit).is_some_and(UnitInfo::deployed),
        })
        .filter(|r| inv.addons.aggregation || !r.aggregation_only)
        .map(|r| {
            let flag = |f: &str, default: &str| units.get(r.unit).and_then(|u| u.flags.get(f).cloned()).unwrap_or_else(|| default.to_string());
            CertSite {
                what: r.what,
                cert: flag(r.cert_flag, r.cert_default),
                key: Some(flag(r.key_flag, r.key_default)),
                ca: r.ca,
                sans: r.sans_of.and_then(|n| specs.get(&n.replace("{node}", &node.name))).map(|s| s.sans.clone()),
            }
        })
        .collect()
}

/// Everything checked over one host's SSH session.
struct HostWork {
    node: Node,
    target: Target,
    checks: Vec<Check>,
    units: BTreeMap<String, UnitInfo>,
    encryption_sha: Option<String>,
    /// (server, address, status) from the stats socket, on LB nodes.
    backends: Option<Vec<(String, String, String)>>,
}

fn host_checks(inv: &Inventory, creds: &Credentials, h: &mut HostWork, policy: HostKeyPolicy) {
    let name = h.node.name.clone();
    let conn = match Conn::connect(&h.target, policy) {
        Ok(c) => {
            h.checks.push(check(&name, "ssh", Status::Pass, format!("{}@{}:{}", h.target.user, h.target.host, h.target.port), None));
            c
        }
        Err(e) => {
            h.checks.push(check(&name, "ssh", Status::Fail, e.to_string(), Some("make the node reachable over SSH; nothing else on it can be checked")));
            return;
        }
    };
    if let Err(e) = host_checks_on(inv, creds, h, &conn) {
        h.checks.push(check(&name, "ssh", Status::Fail, format!("{e:#}"), Some("the node stopped answering during the checks")));
    }
}

fn host_checks_on(inv: &Inventory, creds: &Credentials, h: &mut HostWork, conn: &Conn) -> Result<()> {
    let name = h.node.name.clone();
    let units = expected_units(inv, &h.node);

    // Round trip 1: units and their files.
    let mut s = String::from("export LC_ALL=C\n");
    for u in &units {
        let q = sh_quote(&format!("{u}.service"));
        let _ = writeln!(s, "echo {MARK}state:{u}; systemctl show -p LoadState -p ActiveState -p UnitFileState --value {q} 2>/dev/null");
        let _ = writeln!(s, "echo {MARK}cat:{u}; systemctl cat {q} 2>/dev/null; true");
    }
    let out = conn.script(&s)?;
    let sec = sections(&out.stdout);
    for u in &units {
        let state: Vec<String> = sec.get(&format!("state:{u}")).map(|s| s.lines().map(str::to_string).collect()).unwrap_or_default();
        let info = UnitInfo {
            load: state.first().cloned().unwrap_or_default(),
            active: state.get(1).cloned().unwrap_or_default(),
            enabled: state.get(2).cloned().unwrap_or_default(),
            flags: exec_flags(sec.get(&format!("cat:{u}")).map(String::as_str).unwrap_or("")),
        };
        let c = match (info.deployed(), info.active.as_str(), info.enabled.as_str()) {
            (false, _, _) => check(&name, format!("unit {u}"), Status::Skip, format!("{u} is not deployed on this node (no unit)"), Some("deploy it (hardway deploy), or ignore if this part is not built yet")),
            (true, "active", "enabled") => check(&name, format!("unit {u}"), Status::Pass, "active, enabled", None),
            (true, "active", e) => check(&name, format!("unit {u}"), Status::Warn, format!("active but {e}"), Some(&format!("systemctl enable {u}: it will not start after a reboot"))),
            (true, a, _) => check(&name, format!("unit {u}"), Status::Fail, a.to_string(), Some(&format!("journalctl -u {u} -n 50 on {name} tells why; then systemctl restart {u}"))),
        };
        h.checks.push(c);
        h.units.insert(u.to_string(), info);
    }

    // The kubelet's certificate is named in its config file, not on its command line.
    if let Some(cfg) = h.units.get("kubelet").and_then(|u| u.flags.get("config")).cloned() {
        let out = conn.script(&format!("cat {} 2>/dev/null; true", sh_quote(&cfg)))?;
        if let Ok(v) = serde_yaml::from_str::<serde_yaml::Value>(&out.stdout) {
            let kubelet = h.units.get_mut("kubelet").expect("has a config flag");
            for k in ["tlsCertFile", "tlsPrivateKeyFile"] {
                if let Some(p) = v[k].as_str() {
                    kubelet.flags.insert(k.to_string(), p.to_string());
                }
            }
        }
    }
    let sites = cert_sites(inv, &h.node, &h.units);
    let enc_path = h
        .units
        .get("kube-apiserver")
        .and_then(|u| u.flags.get("encryption-provider-config").cloned())
        .unwrap_or_else(|| "/etc/kubernetes/encryption-config.yaml".into());

    // Round trip 2: certificate files, key modes, key/cert pairing, encryption config, haproxy.
    let mut s = String::from("export LC_ALL=C\n");
    for (i, site) in sites.iter().enumerate() {
        let c = sh_quote(&site.cert);
        let _ = writeln!(s, "echo {MARK}cert:{i}; cat {c} 2>/dev/null; true");
        if let Some(k) = &site.key {
            let k = sh_quote(k);
            let _ = writeln!(s, "echo {MARK}keystat:{i}; stat -c '%a %U' {k} 2>/dev/null; true");
            let _ = writeln!(
                s,
                "echo {MARK}pair:{i}; if command -v openssl >/dev/null; then a=$(openssl x509 -in {c} -noout -pubkey 2>/dev/null | sha256sum); \
                 b=$(openssl pkey -in {k} -pubout 2>/dev/null | sha256sum); [ \"$a\" = \"$b\" ] && echo match || echo differ; else echo no-openssl; fi"
            );
        }
    }
    if h.node.has(Role::Master) {
        let _ = writeln!(s, "echo {MARK}enc; sha256sum {} 2>/dev/null; true", sh_quote(&enc_path));
    }
    if h.node.has(Role::Lb) {
        let _ = writeln!(s, "echo {MARK}haproxy-c; haproxy -c -q -f /etc/haproxy/haproxy.cfg 2>&1 && echo valid; true");
        let _ = writeln!(s, "echo {MARK}haproxy-cfg; cat /etc/haproxy/haproxy.cfg 2>/dev/null; true");
    }
    let out = conn.script(&s)?;
    let sec = sections(&out.stdout);
    for (i, site) in sites.iter().enumerate() {
        cert_checks(&name, site, &sec, creds, &mut h.checks, i);
    }
    if h.node.has(Role::Master) {
        let enc = sec.get("enc").and_then(|s| s.split_whitespace().next().map(str::to_string));
        match &enc {
            Some(_) => {}
            None if !h.units.get("kube-apiserver").is_some_and(UnitInfo::deployed) => h.checks.push(check(
                &name,
                "encryption config",
                Status::Skip,
                "kube-apiserver is not deployed and there is no encryption config",
                Some("deploy the control plane"),
            )),
            None => h.checks.push(check(&name, "encryption config", Status::Fail, format!("{enc_path} is missing"), Some("secrets are stored in plain text without it: hardway deploy --phases control-plane"))),
        }
        h.encryption_sha = enc;
    }
    if h.node.has(Role::Lb) {
        haproxy_checks(h, conn, &sec);
    }
    Ok(())
}

fn parse_pem_cert(pem: &str) -> Option<(CertInfo, Vec<u8>)> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    Some((CertInfo::parse(pem).ok()?, p.contents))
}

/// Verifies `cert_der`'s signature with the public key of `ca_pem`.
fn signed_by(cert_der: &[u8], ca_pem: &str) -> bool {
    let Ok((_, ca_p)) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()) else { return false };
    let Ok(ca) = ca_p.parse_x509() else { return false };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert_der) else { return false };
    cert.verify_signature(Some(ca.public_key())).is_ok()
}

fn cert_checks(host: &str, site: &CertSite, sec: &BTreeMap<String, String>, creds: &Credentials, out: &mut Vec<Check>, i: usize) {
    let name = format!("cert {}", site.what);
    let pem = sec.get(&format!("cert:{i}")).cloned().unwrap_or_default();
    let Some((info, der)) = parse_pem_cert(&pem) else {
        out.push(check(host, name, Status::Fail, format!("{} is missing or not a certificate", site.cert), Some("hardway deploy puts it in place")));
        return;
    };
    let (ca, ca_name) = match site.ca {
        CaKind::Cluster => (&creds.cluster_ca, "cluster CA"),
        CaKind::Etcd => (&creds.etcd_ca, "etcd CA"),
        CaKind::FrontProxy => (&creds.front_proxy_ca, "front-proxy CA"),
    };
    let mut problems: Vec<(Status, String, String)> = Vec::new();
    match ca {
        Some(ca) if !signed_by(&der, ca) => problems.push((
            Status::Fail,
            format!("{} is not signed by the {ca_name}", site.cert),
            "re-issue it from the right CA (hardway pki generate) and redeploy".into(),
        )),
        Some(_) => {}
        None => problems.push((Status::Warn, format!("no {ca_name} given, chain not checked"), "pass the CA (--pki or --ca/--etcd-ca)".into())),
    }
    if let Some(want) = &site.sans {
        let missing: Vec<String> = want.difference(&info.sans).map(|s| s.to_string()).collect();
        if !missing.is_empty() {
            problems.push((
                Status::Fail,
                format!("{} lacks SAN {}", site.cert, missing.join(", ")),
                "clients using that name or address will be refused: re-issue (hardway pki generate) and redeploy".into(),
            ));
        }
    }
    let days = info.days_left(time::OffsetDateTime::now_utc());
    if days < 0 {
        problems.push((Status::Fail, format!("{} expired {} days ago", site.cert, -days), "renew: hardway pki generate, then deploy".into()));
    } else if days < pki::RENEW_BEFORE_DAYS {
        problems.push((Status::Warn, format!("{} expires in {days} days", site.cert), "renew soon: hardway pki generate, then deploy".into()));
    }
    if let Some(key) = &site.key {
        match sec.get(&format!("keystat:{i}")).map(|s| s.trim().to_string()).unwrap_or_default().as_str() {
            "" => problems.push((Status::Fail, format!("key {key} is missing"), "hardway deploy puts it in place".into())),
            "600 root" | "400 root" => {}
            other => problems.push((Status::Fail, format!("key {key} is {other} (mode, owner); must be 600 root"), format!("chmod 600 {key}; chown root:root {key}"))),
        }
        match sec.get(&format!("pair:{i}")).map(|s| s.trim()) {
            Some("match") => {}
            Some("no-openssl") => problems.push((Status::Warn, "openssl is not on the node: key/cert pairing not checked".into(), "apt-get install openssl on the node".into())),
            _ => problems.push((Status::Fail, format!("key {key} does not belong to {}", site.cert), "deploy the matching key and certificate together".into())),
        }
    }
    if problems.is_empty() {
        out.push(check(host, name, Status::Pass, format!("{}: {}, {} days left", site.cert, info.cn, days), None));
    } else {
        let worst = problems.iter().map(|p| p.0).max().expect("not empty");
        let detail: Vec<&str> = problems.iter().map(|p| p.1.as_str()).collect();
        out.push(check(host, name, worst, detail.join("; "), Some(&problems[0].2)));
    }
}

fn haproxy_checks(h: &mut HostWork, conn: &Conn, sec: &BTreeMap<String, String>) {
    let name = h.node.name.clone();
    if !h.units.get("haproxy").is_some_and(UnitInfo::deployed) {
        return;
    }
    if sec.get("haproxy-c").is_some_and(|s| s.contains("valid")) {
        h.checks.push(check(&name, "haproxy config", Status::Pass, "haproxy -c accepts /etc/haproxy/haproxy.cfg", None));
    } else {
        let why = sec.get("haproxy-c").map(|s| s.trim().to_string()).unwrap_or_default();
        h.checks.push(check(&name, "haproxy config", Status::Fail, why, Some("fix /etc/haproxy/haproxy.cfg (hardway render shows the expected one)")));
    }
    let cfg = sec.get("haproxy-cfg").cloned().unwrap_or_default();
    let socket = cfg.lines().find_map(|l| l.trim().strip_prefix("stats socket ").and_then(|r| r.split_whitespace().next()));
    let Some(socket) = socket else {
        h.checks.push(check(&name, "haproxy backends", Status::Warn, "no `stats socket` in haproxy.cfg", Some("add `stats socket /run/haproxy/admin.sock mode 660 level admin` to global")));
        return;
    };
    match read_stats(conn, socket) {
        Err(e) => h.checks.push(check(&name, "haproxy backends", Status::Warn, format!("cannot read {socket}: {e}"), Some("the SSH user needs access to the stats socket"))),
        Ok(servers) => h.backends = Some(servers),
    }
}

/// One check per master for each LB's backend state. A master without an API server is DOWN
/// by design, which is a SKIP (not deployed), not a failure.
fn backend_checks(inv: &Inventory, work: &[HostWork], checks: &mut Vec<Check>) {
    let api_deployed: BTreeSet<&str> = work
        .iter()
        .filter(|h| h.units.get("kube-apiserver").is_some_and(UnitInfo::deployed))
        .map(|h| h.node.name.as_str())
        .collect();
    for lb in work.iter().filter(|h| h.backends.is_some()) {
        let servers = lb.backends.as_ref().expect("filtered");
        for m in inv.masters() {
            let name = format!("haproxy backend {}", m.name);
            let addr = format!("{}:", host_for_url(m.address));
            let status = servers.iter().find(|(n, a, _)| *n == m.name || a.starts_with(&addr)).map(|s| s.2.clone());
            let host = lb.node.name.as_str();
            checks.push(match status {
                None => check(host, name, Status::Fail, "not in any backend", Some("haproxy.cfg must list every master (hardway render)")),
                // Whatever HAProxy says, a master without an API server cannot be UP for long.
                Some(s) if !api_deployed.contains(m.name.as_str()) => {
                    check(host, name, Status::Skip, format!("{s}: kube-apiserver is not deployed on {}", m.name), Some("deploy the control plane"))
                }
                Some(s) if s == "UP" => check(host, name, Status::Pass, s, None),
                // "UP 1/3": still in rotation but failing its health checks, on its way down.
                Some(s) if s.starts_with("UP") => {
                    check(host, name, Status::Warn, format!("{s}: failing health checks"), Some(&format!("the API server on {} stopped answering /readyz", m.name)))
                }
                Some(s) => check(host, name, Status::Fail, s, Some(&format!("the API server on {} is not ready", m.name))),
            });
        }
    }
}

/// `show stat` through the stats socket, over an SSH stream-local channel: no tool is needed on
/// the node. Returns (server name, address, status) of every backend server.
fn read_stats(conn: &Conn, socket: &str) -> Result<Vec<(String, String, String)>> {
    let csv = conn.unix_socket_request(socket, b"show stat\n")?;
    let mut header: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for line in csv.lines() {
        if let Some(h) = line.strip_prefix("# ") {
            header = h.split(',').map(str::to_string).collect();
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        let col = |n: &str| header.iter().position(|h| h == n).and_then(|i| f.get(i)).map(|s| s.to_string()).unwrap_or_default();
        let sv = col("svname");
        if sv.is_empty() || sv == "FRONTEND" || sv == "BACKEND" {
            continue;
        }
        out.push((sv, col("addr"), col("status")));
    }
    Ok(out)
}

/// Runs every check and returns them sorted by host and check name.
pub fn verify(inv: &Inventory, opts: &VerifyOptions) -> Result<Vec<Check>> {
    let creds = Arc::new(credentials(opts)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(opts.parallel.max(1) + 2)
        .enable_all()
        .build()?;
    let inv_arc = Arc::new(inv.clone());
    let policy = if opts.accept_new_host_keys { HostKeyPolicy::AcceptNew } else { HostKeyPolicy::Strict };
    let work: Vec<HostWork> = inv
        .nodes
        .iter()
        .map(|n| HostWork { node: n.clone(), target: Target::for_node(inv, n), checks: vec![], units: BTreeMap::new(), encryption_sha: None, backends: None })
        .collect();
    let (i2, c2) = (inv_arc.clone(), creds.clone());
    let work = rt.block_on(fan_out(work, opts.parallel, move |h| host_checks(&i2, &c2, h, policy)));

    let mut checks: Vec<Check> = work.iter().flat_map(|h| h.checks.clone()).collect();
    encryption_consistency(inv, &work, &mut checks);
    backend_checks(inv, &work, &mut checks);
    checks.extend(rt.block_on(etcd_checks(inv, &creds)));
    checks.extend(api_checks(inv, &creds, &work));
    checks.sort_by(|a, b| (&a.host, &a.check).cmp(&(&b.host, &b.check)));
    Ok(checks)
}

fn encryption_consistency(inv: &Inventory, work: &[HostWork], checks: &mut Vec<Check>) {
    let shas: Vec<(&str, &String)> =
        work.iter().filter(|h| h.node.has(Role::Master)).filter_map(|h| h.encryption_sha.as_ref().map(|s| (h.node.name.as_str(), s))).collect();
    if shas.is_empty() {
        return;
    }
    let distinct: BTreeSet<&String> = shas.iter().map(|(_, s)| *s).collect();
    let masters = inv.masters().count();
    for (host, sha) in &shas {
        let c = if distinct.len() == 1 && shas.len() == masters {
            check(host, "encryption config", Status::Pass, format!("identical on all {masters} masters"), None)
        } else if distinct.len() == 1 {
            check(host, "encryption config", Status::Fail, format!("present here, missing on {} of {masters} masters", masters - shas.len()), Some("every API server needs the same key: hardway deploy --phases control-plane"))
        } else {
            check(host, "encryption config", Status::Fail, format!("differs between masters (sha256 {}…)", &sha[..12]), Some("API servers with different keys cannot read each other's Secrets: deploy one config to all"))
        };
        checks.push(c);
    }
}

async fn etcd_checks(inv: &Inventory, creds: &Credentials) -> Vec<Check> {
    let members = inv.etcd_members();
    let Some(auth) = &creds.etcd else {
        return members
            .iter()
            .map(|m| check(&m.name, "etcd member", Status::Skip, "no etcd client certificate", Some("pass --etcd-ca/--etcd-cert/--etcd-key or --pki")))
            .collect();
    };
    let statuses = bootstrap::cluster_status(inv, auth, Duration::from_secs(3)).await;
    let answering = statuses.iter().filter(|s| s.answered()).count();
    let quorum = members.len() / 2 + 1;
    let held = if answering >= quorum {
        format!("quorum held: {answering} of {} members answer, quorum is {quorum}", members.len())
    } else {
        format!("QUORUM LOST: {answering} of {} members answer, quorum is {quorum}", members.len())
    };
    let mut out = Vec::new();
    for s in &statuses {
        out.push(match &s.error {
            None if s.errors.is_empty() => check(&s.name, "etcd member", Status::Pass, bootstrap::describe(s), None),
            None => check(&s.name, "etcd member", Status::Fail, bootstrap::describe(s), Some("see journalctl -u etcd on the member")),
            Some(e) => check(&s.name, "etcd member", Status::Fail, format!("no answer ({e}); {held}"), Some(&format!("systemctl status etcd and journalctl -u etcd on {}", s.name))),
        });
    }
    let cluster = "etcd";
    let leaders: BTreeSet<u64> = statuses.iter().filter_map(|s| s.leader).filter(|l| *l != 0).collect();
    out.push(match leaders.len() {
        1 => check(cluster, "etcd leader", Status::Pass, format!("one leader ({:x}); {held}", leaders.iter().next().expect("one")), None),
        0 => check(cluster, "etcd leader", Status::Fail, format!("no leader; {held}"), Some("etcd needs a majority of members up to elect a leader")),
        n => check(cluster, "etcd leader", Status::Fail, format!("{n} different leaders reported (split brain?)"), Some("check --initial-cluster on every member")),
    });
    let indexes: Vec<u64> = statuses.iter().filter_map(|s| s.raft_index).collect();
    if let (Some(min), Some(max)) = (indexes.iter().min(), indexes.iter().max()) {
        out.push(if max - min <= 100 {
            check(cluster, "etcd raft index", Status::Pass, format!("within {} of each other", max - min), None)
        } else {
            check(cluster, "etcd raft index", Status::Warn, format!("spread {} (from {min} to {max})", max - min), Some("a member is lagging: check its disk and network"))
        });
    }
    // Membership and alarms, asked of any member that answers.
    if let Some(first) = statuses.iter().find(|s| s.answered()) {
        match bootstrap::members_and_alarms(first.address, auth, Duration::from_secs(3)).await {
            Ok((listed, alarms)) => {
                let want: BTreeSet<(String, String)> =
                    members.iter().map(|m| (m.name.clone(), format!("https://{}:2380", host_for_url(m.address)))).collect();
                let have: BTreeSet<(String, String)> = listed.into_iter().collect();
                out.push(if want == have {
                    check(cluster, "etcd membership", Status::Pass, format!("{} members as in the inventory", want.len()), None)
                } else {
                    let missing: Vec<String> = want.difference(&have).map(|(n, u)| format!("{n} {u}")).collect();
                    let extra: Vec<String> = have.difference(&want).map(|(n, u)| format!("{n} {u}")).collect();
                    check(cluster, "etcd membership", Status::Fail, format!("missing: [{}], not in inventory: [{}]", missing.join(", "), extra.join(", ")), Some("etcdctl member add/remove to match the inventory"))
                });
                out.push(if alarms.is_empty() {
                    check(cluster, "etcd alarms", Status::Pass, "none", None)
                } else {
                    check(cluster, "etcd alarms", Status::Fail, alarms.join(", "), Some("NOSPACE: compact and defragment, then etcdctl alarm disarm"))
                });
            }
            Err(e) => out.push(check(cluster, "etcd membership", Status::Fail, format!("{e:#}"), None)),
        }
    }
    out
}

/// GET over TLS with the admin certificate; HTTP/1.0 so the answer is never chunked.
fn https_get(addr: IpAddr, port: u16, path: &str, config: &Arc<rustls::ClientConfig>) -> Result<(u16, String)> {
    let sock = std::net::SocketAddr::new(addr, port);
    let tcp = TcpStream::connect_timeout(&sock, Duration::from_secs(3)).with_context(|| format!("connecting to {sock}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let server = rustls::pki_types::ServerName::IpAddress(addr.into());
    let conn = rustls::ClientConnection::new(config.clone(), server)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(tls, "GET {path} HTTP/1.0\r\nHost: {}\r\nAccept: application/json\r\n\r\n", host_for_url(addr))?;
    let mut buf = Vec::new();
    match tls.read_to_end(&mut buf) {
        Ok(_) => {}
        // Servers that close without close_notify still sent a whole HTTP/1.0 answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => {}
        Err(e) => return Err(e).with_context(|| format!("reading {path} from {sock}")),
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((code, body.to_string()))
}

fn tls_config(creds: &Credentials) -> Result<Option<Arc<rustls::ClientConfig>>> {
    let (Some(ca), Some((cert, key))) = (&creds.cluster_ca, &creds.admin) else { return Ok(None) };
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c?)?;
    }
    let chain: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<_, _>>()?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    Ok(Some(Arc::new(config)))
}

fn api_checks(inv: &Inventory, creds: &Credentials, work: &[HostWork]) -> Vec<Check> {
    let mut out = Vec::new();
    let deployed: Vec<&HostWork> =
        work.iter().filter(|h| h.node.has(Role::Master) && h.units.get("kube-apiserver").is_some_and(UnitInfo::deployed)).collect();
    let (lb_ip, lb_port) = inv.api_endpoint();
    let lb_host = inv.load_balancer.as_ref().and_then(|l| l.node.clone()).unwrap_or_else(|| "load-balancer".into());
    if deployed.is_empty() {
        out.push(check(&lb_host, "api /readyz", Status::Skip, "kube-apiserver is not deployed on any master", Some("hardway deploy --phases control-plane (needs the Kubernetes binaries on the masters)")));
        return out;
    }
    let config = match tls_config(creds) {
        Ok(Some(c)) => c,
        Ok(None) => {
            out.push(check(&lb_host, "api /readyz", Status::Skip, "no cluster CA or admin certificate", Some("pass --pki, or --ca/--admin-cert/--admin-key")));
            return out;
        }
        Err(e) => {
            out.push(check(&lb_host, "api /readyz", Status::Fail, format!("admin credentials unusable: {e:#}"), None));
            return out;
        }
    };
    let probe = |host: &str, ip: IpAddr, port: u16, out: &mut Vec<Check>| {
        for path in ["/livez", "/readyz"] {
            out.push(match https_get(ip, port, path, &config) {
                Ok((200, _)) => check(host, format!("api {path}"), Status::Pass, format!("https://{}:{port}{path}: 200", host_for_url(ip)), None),
                Ok((code, body)) => check(host, format!("api {path}"), Status::Fail, format!("{code}: {}", body.lines().filter(|l| l.contains("failed")).collect::<Vec<_>>().join("; ")), Some("kubectl get --raw '/readyz?verbose' names the failing check")),
                Err(e) => check(host, format!("api {path}"), Status::Fail, format!("{e:#}"), Some("is kube-apiserver running, and port 6443 reachable?")),
            });
        }
    };
    for h in &deployed {
        probe(&h.node.name, h.node.address, 6443, &mut out);
    }
    probe(&lb_host, lb_ip, lb_port, &mut out);
    // Cluster state, through the load balancer.
    let kubelet_deployed = |name: &str| work.iter().any(|h| h.node.name == name && h.units.get("kubelet").is_some_and(UnitInfo::deployed));
    match https_get(lb_ip, lb_port, "/api/v1/nodes", &config) {
        Ok((200, body)) => {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let ready: BTreeSet<String> = v["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|n| n["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True"))
                .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
                .collect();
            for w in inv.workers() {
                out.push(if ready.contains(&w.name) {
                    check(&w.name, "node Ready", Status::Pass, "Ready", None)
                } else if !kubelet_deployed(&w.name) {
                    check(&w.name, "node Ready", Status::Skip, "the kubelet is not deployed on this node", Some("hardway deploy --phases workers"))
                } else {
                    check(&w.name, "node Ready", Status::Fail, "not registered or not Ready", Some("journalctl -u kubelet on the node"))
                });
            }
        }
        Ok((code, _)) => out.push(check(&lb_host, "nodes Ready", Status::Fail, format!("listing nodes answered {code}"), Some("the admin certificate needs O=system:masters"))),
        Err(e) => out.push(check(&lb_host, "nodes Ready", Status::Fail, format!("listing nodes: {e:#}"), None)),
    }
    if inv.addons.aggregation
        && let Ok((200, body)) = https_get(lb_ip, lb_port, "/apis/apiregistration.k8s.io/v1/apiservices", &config) {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let bad: Vec<String> = v["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| !a["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Available" && c["status"] == "True"))
                .filter_map(|a| a["metadata"]["name"].as_str().map(str::to_string))
                .collect();
            out.push(if bad.is_empty() {
                check(&lb_host, "aggregated APIs", Status::Pass, "all APIServices Available", None)
            } else {
                check(&lb_host, "aggregated APIs", Status::Fail, format!("not Available: {}", bad.join(", ")), Some("with kube-proxy off the masters, --enable-aggregator-routing=true is needed (the seed's metrics-server timeout)"))
            });
        }
    out
}

/// The report as text: one line per check, sorted, with hints for anything but PASS.
pub fn format_report(checks: &[Check]) -> String {
    let mut s = String::new();
    for c in checks {
        let _ = writeln!(s, "{:<4}  {:<12} {:<34} {}", c.status, c.host, c.check, c.detail);
        if let Some(h) = &c.hint {
            let _ = writeln!(s, "{:<4}  {:<12} {:<34} hint: {h}", "", "", "");
        }
    }
    let count = |st: Status| checks.iter().filter(|c| c.status == st).count();
    let _ = write!(s, "{} PASS, {} WARN, {} FAIL, {} SKIP", count(Status::Pass), count(Status::Warn), count(Status::Fail), count(Status::Skip));
    s
}
