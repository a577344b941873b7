//! The checks made over one node's [`Remote`]: its units, the certificates and keys they name,
//! the encryption config on masters, and HAProxy on the load balancer. Two round trips for the
//! units and the files they name, one more per config file a unit points at.

use std::collections::BTreeMap;

use super::certs::{self, Site};
use super::{Check, Credentials, Status, check};
use crate::components::{COMPONENTS, Component, ComponentId};
use crate::inventory::{Inventory, Node, Role};
use crate::pki;
use crate::remote::{Connector, Remote, RemoteError, UnitInfo};
use crate::render;

/// A unit as found on the node, with the flags of its ExecStart (and of its config file).
#[derive(Debug, Clone, Default)]
pub(crate) struct Unit {
    pub info: UnitInfo,
    pub flags: BTreeMap<String, String>,
}

impl Unit {
    pub fn deployed(&self) -> bool {
        self.info.deployed()
    }
}

/// Everything checked over one host's session.
pub(crate) struct HostWork {
    pub node: Node,
    pub checks: Vec<Check>,
    pub units: BTreeMap<String, Unit>,
    pub encryption_sha: Option<String>,
    /// (server, address, status) from the stats socket, on LB nodes.
    pub backends: Option<Vec<(String, String, String)>>,
}

impl HostWork {
    pub fn new(node: &Node) -> HostWork {
        HostWork { node: node.clone(), checks: vec![], units: BTreeMap::new(), encryption_sha: None, backends: None }
    }

    pub fn deployed(&self, unit: &str) -> bool {
        self.units.get(unit).is_some_and(Unit::deployed)
    }

    /// A unit flag (or config-file key) as the node has it.
    pub fn flag(&self, unit: &str, flag: &str) -> Option<&str> {
        self.units.get(unit)?.flags.get(flag).map(String::as_str)
    }
}

pub(crate) fn run(inv: &Inventory, creds: &Credentials, connector: &dyn Connector, h: &mut HostWork) {
    let name = h.node.name.clone();
    let remote = match connector.connect(&h.node) {
        Ok(r) => {
            h.checks.push(check(&name, "ssh", Status::Pass, "connected", None));
            r
        }
        Err(e) => {
            h.checks.push(check(&name, "ssh", Status::Fail, e.to_string(), Some("make the node reachable over SSH; nothing else on it can be checked")));
            return;
        }
    };
    if let Err(e) = checks_on(inv, creds, h, remote.as_ref()) {
        h.checks.push(check(&name, "ssh", Status::Fail, e.to_string(), Some("the node stopped answering during the checks")));
    }
}

/// `--flag=value` and `--flag value` pairs of a unit's ExecStart (hand-written units use both).
pub(crate) fn exec_flags(unit_text: &str) -> BTreeMap<String, String> {
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

fn unit_check(node: &str, unit: &str, info: &UnitInfo) -> Check {
    let name = format!("unit {unit}");
    match (info.deployed(), info.active.as_str(), info.enabled.as_str()) {
        (false, _, _) => check(node, name, Status::Skip, format!("{unit} is not deployed on this node (no unit)"), Some("deploy it (hardway deploy), or ignore if this part is not built yet")),
        (true, "active", "enabled") => check(node, name, Status::Pass, "active, enabled", None),
        (true, "active", e) => check(node, name, Status::Warn, format!("active but {e}"), Some(&format!("systemctl enable {unit}: it will not start after a reboot"))),
        (true, a, _) => check(node, name, Status::Fail, a.to_string(), Some(&format!("journalctl -u {unit} -n 50 on {node} tells why; then systemctl restart {unit}"))),
    }
}

/// The certificate sites of the components on this node, where its units say they are.
fn sites(inv: &Inventory, h: &HostWork) -> Vec<Site> {
    let specs: BTreeMap<String, pki::CertSpec> = pki::matrix(inv).into_iter().map(|s| (s.name.clone(), s)).collect();
    let mut out = Vec::new();
    for c in COMPONENTS.iter().filter(|c| c.runs_on(inv, &h.node)) {
        let unit = c.unit.unwrap_or_default();
        // etcd is checked even where its unit is missing: a member without etcd is broken.
        if c.id != ComponentId::Etcd && !h.deployed(unit) {
            continue;
        }
        for site in c.certs {
            // Profiles the inventory does not call for (front-proxy without aggregation).
            let Some(spec) = specs.get(&site.profile.replace("{node}", &h.node.name)) else { continue };
            let path = |flag: &str, default: Option<&str>| h.flag(unit, flag).or(default).map(str::to_string);
            let (Some(cert), Some(key)) =
                (path(site.cert_flag, render::path_of_cert(site.profile)), path(site.key_flag, render::path_of_key(site.profile)))
            else {
                continue;
            };
            let sans = (!spec.sans.is_empty()).then(|| spec.sans.clone());
            out.push(Site { what: site.what, cert, key, ca: spec.ca, sans });
        }
    }
    out
}

fn checks_on(inv: &Inventory, creds: &Credentials, h: &mut HostWork, remote: &dyn Remote) -> Result<(), RemoteError> {
    let name = h.node.name.clone();
    let components: Vec<&Component> = COMPONENTS.iter().filter(|c| c.runs_on(inv, &h.node) && c.unit.is_some()).collect();
    let units: Vec<String> = components.iter().filter_map(|c| c.unit.map(str::to_string)).collect();

    // Units and their flags.
    for (u, info) in remote.units(&units)? {
        h.checks.push(unit_check(&name, &u, &info));
        let flags = exec_flags(&info.text);
        h.units.insert(u, Unit { info, flags });
    }
    // Settings that live in a config file the unit names (the kubelet's certificates).
    for c in &components {
        let (Some(flag), Some(unit)) = (c.config_flag, c.unit) else { continue };
        let Some(path) = h.flag(unit, flag).map(str::to_string) else { continue };
        if let Some(text) = remote.read_config(&path)?
            && let Ok(serde_yaml::Value::Mapping(m)) = serde_yaml::from_str::<serde_yaml::Value>(&text)
        {
            let u = h.units.get_mut(unit).expect("read above");
            for (k, v) in m {
                if let (Some(k), Some(v)) = (k.as_str(), v.as_str()) {
                    u.flags.entry(k.to_string()).or_insert_with(|| v.to_string());
                }
            }
        }
    }

    // Certificates and keys.
    let sites = sites(inv, h);
    let found = remote.read_certificates(&sites.iter().map(|s| s.cert.clone()).collect::<Vec<_>>())?;
    let keys = remote.check_keys(&sites.iter().map(|s| (s.cert.clone(), s.key.clone())).collect::<Vec<_>>())?;
    for (site, key) in sites.iter().zip(&keys) {
        let pem = found.get(&site.cert).cloned().flatten();
        h.checks.push(certs::check_site(&name, site, pem.as_deref(), key, creds));
    }

    // The encryption config, compared across masters afterwards.
    if h.node.has(Role::Master) {
        let default = render::path_of_template("encryption-config.yaml").unwrap_or_default();
        let path = h.flag("kube-apiserver", "encryption-provider-config").unwrap_or(default).to_string();
        let sha = remote.stat_files(std::slice::from_ref(&path))?.remove(&path).map(|f| f.sha256);
        if sha.is_none() {
            h.checks.push(if h.deployed("kube-apiserver") {
                check(&name, "encryption config", Status::Fail, format!("{path} is missing"), Some("secrets are stored in plain text without it: hardway deploy --phases control-plane"))
            } else {
                check(&name, "encryption config", Status::Skip, "kube-apiserver is not deployed and there is no encryption config", Some("deploy the control plane"))
            });
        }
        h.encryption_sha = sha;
    }

    if h.node.has(Role::Lb) && h.deployed("haproxy") {
        haproxy(h, remote)?;
    }
    super::faults_support::on_host(inv, creds, h, remote)
}

fn haproxy(h: &mut HostWork, remote: &dyn Remote) -> Result<(), RemoteError> {
    let name = h.node.name.clone();
    let config = render::path_of_template("haproxy.cfg").unwrap_or("/etc/haproxy/haproxy.cfg");
    match remote.haproxy_check(config)? {
        Ok(()) => h.checks.push(check(&name, "haproxy config", Status::Pass, format!("haproxy -c accepts {config}"), None)),
        Err(why) => h.checks.push(check(&name, "haproxy config", Status::Fail, why, Some("fix the config (hardway render shows the expected one)"))),
    }
    let cfg = remote.read_config(config)?.unwrap_or_default();
    let socket = cfg.lines().find_map(|l| l.trim().strip_prefix("stats socket ").and_then(|r| r.split_whitespace().next()));
    let Some(socket) = socket else {
        h.checks.push(check(&name, "haproxy backends", Status::Warn, "no `stats socket` in haproxy.cfg", Some("add `stats socket /run/haproxy/admin.sock mode 600 level admin` to global")));
        return Ok(());
    };
    match remote.socket_request(socket, b"show stat\n") {
        Err(e) => h.checks.push(check(&name, "haproxy backends", Status::Warn, format!("cannot read {socket}: {e}"), Some("the SSH user needs access to the stats socket"))),
        Ok(csv) => h.backends = Some(parse_stats(&csv)),
    }
    Ok(())
}

/// `show stat` CSV → (server name, address, status) of every backend server.
fn parse_stats(csv: &str) -> Vec<(String, String, String)> {
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
    out
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

    #[test]
    fn stats_csv_lists_servers_only() {
        let csv = "# pxname,svname,status,addr\nkube-apiservers,FRONTEND,OPEN,\nkube-apiservers,m1,UP,10.0.0.1:6443\nkube-apiservers,m2,DOWN,10.0.0.2:6443\nkube-apiservers,BACKEND,UP,\n";
        assert_eq!(
            parse_stats(csv),
            [("m1".into(), "10.0.0.1:6443".into(), "UP".into()), ("m2".into(), "10.0.0.2:6443".into(), "DOWN".into())]
        );
    }
}
