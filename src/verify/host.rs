//! The checks made over one node's [`Remote`]: its units, the certificates and keys they name,
//! the encryption config on masters, and HAProxy on the load balancer. Two round trips for the
//! units and the files they name, one more per config file a unit points at.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::certs::{Found, Site};
use super::sans::{CLIENTS, Sans, endpoints, san_of_host};
pub(crate) use super::work::{HostWork, Unit};
use super::{Check, Credentials, Status, check};
use crate::components::{COMPONENTS, Component, ComponentId};
use crate::inventory::{Inventory, Node, Role};
use crate::pki::{self, San};
use crate::remote::{Connector, Remote, RemoteError, UnitInfo};
use crate::render;

pub(crate) fn run(
    inv: &Inventory,
    creds: &Credentials,
    connector: &dyn Connector,
    h: &mut HostWork,
) {
    let name = h.node.name.clone();
    let remote = match connector.connect(&h.node) {
        Ok(r) => {
            h.checks
                .push(check(&name, "ssh", Status::Pass, "connected", None));
            r
        }
        Err(e) => {
            h.checks.push(check(
                &name,
                "ssh",
                Status::Fail,
                e.to_string(),
                Some("make the node reachable over SSH; nothing else on it can be checked"),
            ));
            return;
        }
    };
    match checks_on(inv, creds, h, remote.as_ref()) {
        Ok(()) => {}
        Err(e @ RemoteError::TooLarge { .. }) => h.checks.push(check(
            &name,
            "read limit",
            Status::Fail,
            e.to_string(),
            Some("shrink it: verify reads at most 1 MiB of a file a node names"),
        )),
        Err(e) => h.checks.push(check(
            &name,
            "ssh",
            Status::Fail,
            e.to_string(),
            Some("the node stopped answering during the checks"),
        )),
    }
}

/// `--flag=value` and `--flag value` pairs of a unit's ExecStart (hand-written units use both).
pub(crate) fn exec_flags(unit_text: &str) -> BTreeMap<String, String> {
    let joined = unit_text.replace("\\\n", " ");
    let mut flags = BTreeMap::new();
    if let Some(line) = joined
        .lines()
        .find_map(|l| l.trim().strip_prefix("ExecStart="))
    {
        let args: Vec<&str> = line.split_whitespace().collect();
        for (i, arg) in args.iter().enumerate() {
            let Some(flag) = arg.strip_prefix("--") else {
                continue;
            };
            match flag.split_once('=') {
                Some((k, v)) => {
                    flags.insert(k.to_string(), v.to_string());
                }
                None => {
                    let value = args
                        .get(i + 1)
                        .filter(|v| !v.starts_with("--"))
                        .copied()
                        .unwrap_or("true");
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
        (false, _, _) => check(
            node,
            name,
            Status::Skip,
            format!("{unit} is not deployed on this node (no unit)"),
            Some("deploy it (hardway deploy), or ignore if this part is not built yet"),
        ),
        (true, "active", "enabled") => check(node, name, Status::Pass, "active, enabled", None),
        (true, "active", e) => check(
            node,
            name,
            Status::Warn,
            format!("active but {e}"),
            Some(&format!(
                "systemctl enable {unit}: it will not start after a reboot"
            )),
        ),
        (true, a, _) => check(
            node,
            name,
            Status::Fail,
            a.to_string(),
            Some(&format!(
                "journalctl -u {unit} -n 50 on {node} tells why; then systemctl restart {unit}"
            )),
        ),
    }
}

/// The certificate sites of the components on `node`, where its units (as [`read_units`] found
/// them) say they are. `certs check` lists the same sites.
pub(crate) fn sites(inv: &Inventory, node: &Node, units: &BTreeMap<String, Unit>) -> Vec<Site> {
    let specs: BTreeMap<String, pki::CertSpec> = pki::matrix(inv)
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    let flag = |unit: &str, flag: &str| units.get(unit)?.flags.get(flag).map(String::as_str);
    let mut out = Vec::new();
    for c in COMPONENTS.iter().filter(|c| c.runs_on(inv, node)) {
        let unit = c.unit.unwrap_or_default();
        // etcd is checked even where its unit is missing: a member without etcd is broken.
        if c.id != ComponentId::Etcd && !units.get(unit).is_some_and(Unit::deployed) {
            continue;
        }
        for site in c.certs {
            // Profiles the inventory does not call for (front-proxy without aggregation).
            let Some(spec) = specs.get(&site.profile.replace("{node}", &node.name)) else {
                continue;
            };
            let path =
                |f: &str, default: Option<&str>| flag(unit, f).or(default).map(str::to_string);
            let (Some(cert), Some(key)) = (
                path(site.cert_flag, render::path_of_cert(site.profile)),
                path(site.key_flag, render::path_of_key(site.profile)),
            ) else {
                continue;
            };
            let sans = (!spec.sans.is_empty() || !site.urls.is_empty())
                .then(|| required_sans(inv, node, &flag, unit, site.urls, spec));
            out.push(Site {
                what: site.what,
                cert,
                key,
                ca: spec.ca,
                sans,
            });
        }
    }
    out
}

/// What a serving certificate on this node must cover by its own unit and the inventory (its
/// clients elsewhere are added later), and hardway's convention for it.
fn required_sans<'u>(
    inv: &Inventory,
    node: &Node,
    flag: &dyn Fn(&str, &str) -> Option<&'u str>,
    unit: &str,
    url_flags: &[&str],
    spec: &pki::CertSpec,
) -> Sans {
    let mut s = Sans {
        conventional: spec.sans.clone(),
        ..Sans::default()
    };
    for url_flag in url_flags {
        for e in endpoints(flag(unit, url_flag).unwrap_or_default()) {
            if s.scheme_port.is_none()
                && let Some(port) = e.port
            {
                s.scheme_port = Some((e.scheme.clone().unwrap_or_else(|| "https".into()), port));
            }
            if let Some(san) = san_of_host(&e.host) {
                s.require(san, format!("--{url_flag}"));
            }
        }
    }
    s.require(
        pki::San::Ip(node.address),
        "the inventory's address of the node",
    );
    if unit == "kube-apiserver" {
        // Kubeconfigs reach the API through the load balancer (TCP: the API server's
        // certificate is what clients check), and pods at the first service address.
        if let Some(lb) = &inv.load_balancer {
            s.require(pki::San::Ip(lb.address), "the load balancer's address");
            if let Some(d) = &lb.dns_name {
                s.require(
                    pki::San::Dns(d.to_ascii_lowercase()),
                    "the load balancer's name",
                );
            }
        }
        let first = flag(unit, "service-cluster-ip-range")
            .and_then(|r| r.split(',').next()?.parse::<ipnet::IpNet>().ok());
        if let Some(ip) = first.and_then(|net| net.hosts().next()) {
            s.require(
                pki::San::Ip(ip),
                "the first address of --service-cluster-ip-range (kubernetes.default)",
            );
        }
        if s.scheme_port.is_none() {
            let port = flag(unit, "secure-port")
                .and_then(|p| p.parse().ok())
                .unwrap_or(crate::components::Port::ApiServer.number(inv));
            s.scheme_port = Some(("https".into(), port));
        }
    }
    s
}

/// The units of the components `node` runs, each with the flags of its ExecStart (and of its
/// environment) and the top-level settings of the config file it names (the kubelet's
/// certificates): where the node really keeps things, whoever built it.
pub(crate) fn read_units(
    inv: &Inventory,
    node: &Node,
    remote: &dyn Remote,
) -> Result<BTreeMap<String, Unit>, RemoteError> {
    let components: Vec<&Component> = COMPONENTS
        .iter()
        .filter(|c| c.runs_on(inv, node) && c.unit.is_some())
        .collect();
    let names: Vec<String> = components
        .iter()
        .filter_map(|c| c.unit.map(str::to_string))
        .collect();
    let mut units: BTreeMap<String, Unit> = remote
        .units(&names)?
        .into_iter()
        .map(|(u, info)| {
            (
                u,
                Unit {
                    flags: exec_flags(&info.text),
                    info,
                    unread: Vec::new(),
                },
            )
        })
        .collect();
    env_flags(&mut units, remote)?;
    for c in &components {
        let (Some(flag), Some(unit)) = (c.config_flag, c.unit) else {
            continue;
        };
        let Some(path) = units.get(unit).and_then(|u| u.flags.get(flag)).cloned() else {
            continue;
        };
        let text = match remote.read_config(&path) {
            Err(e @ RemoteError::TooLarge { .. }) => {
                units
                    .get_mut(unit)
                    .expect("read above")
                    .unread
                    .push(e.to_string());
                continue;
            }
            r => r?,
        };
        if let Some(text) = text
            && let Ok(serde_yaml::Value::Mapping(m)) =
                serde_yaml::from_str::<serde_yaml::Value>(&text)
        {
            let u = units.get_mut(unit).expect("read above");
            for (k, v) in m {
                let v = match v {
                    serde_yaml::Value::String(s) => s,
                    serde_yaml::Value::Bool(b) => b.to_string(),
                    serde_yaml::Value::Number(n) => n.to_string(),
                    _ => continue,
                };
                if let Some(k) = k.as_str() {
                    u.flags.entry(k.to_string()).or_insert(v);
                }
            }
        }
    }
    Ok(units)
}

fn checks_on(
    inv: &Inventory,
    creds: &Credentials,
    h: &mut HostWork,
    remote: &dyn Remote,
) -> Result<(), RemoteError> {
    let name = h.node.name.clone();
    h.units = read_units(inv, &h.node, remote)?;
    for (u, unit) in &h.units {
        h.checks.push(unit_check(&name, u, &unit.info));
        for why in &unit.unread {
            h.checks.push(check(&name, format!("unit {u} files"), Status::Fail, why.clone(), Some("a file the unit names is larger than any config hardway knows: shrink it (verify reads at most 1 MiB of a file)")));
        }
    }

    // Certificates and keys.
    let sites = sites(inv, &h.node, &h.units);
    let found =
        remote.read_certificates(&sites.iter().map(|s| s.cert.clone()).collect::<Vec<_>>())?;
    let keys = remote.check_keys(
        &sites
            .iter()
            .map(|s| (s.cert.clone(), s.key.clone()))
            .collect::<Vec<_>>(),
    )?;
    for (site, key) in sites.into_iter().zip(keys) {
        let pem = found.get(&site.cert).cloned().flatten();
        h.found.push(Found { site, pem, key });
    }

    // The encryption config, compared across masters afterwards.
    if h.node.has(Role::Master) {
        let default = render::path_of_template("encryption-config.yaml").unwrap_or_default();
        let path = h
            .flag("kube-apiserver", "encryption-provider-config")
            .unwrap_or(default)
            .to_string();
        let sha = remote
            .stat_files(std::slice::from_ref(&path))?
            .remove(&path)
            .map(|f| f.sha256);
        if sha.is_none() {
            h.checks.push(if h.deployed("kube-apiserver") {
                check(&name, "encryption config", Status::Fail, format!("{path} is missing"), Some("secrets are stored in plain text without it: hardway deploy --phases control-plane"))
            } else {
                check(&name, "encryption config", Status::Skip, "kube-apiserver is not deployed and there is no encryption config", Some("deploy the control plane"))
            });
        }
        h.encryption_sha = sha;
    }

    // A lab-only deviation the inventory had to ask for (the README's cgroup v1 section).
    if h.deployed("kubelet") && h.flag("kubelet", "failCgroupV1") == Some("false") {
        let file = h
            .flag("kubelet", "config")
            .unwrap_or("the kubelet's config")
            .to_string();
        h.checks.push(check(
            &name,
            "kubelet cgroup v1",
            Status::Warn,
            format!("failCgroupV1: false in {file}: the kubelet may run on cgroup v1, deprecated since Kubernetes 1.35 and removed in 1.38 (KEP-5573)"),
            Some("boot the node on cgroup v2 (systemd.unified_cgroup_hierarchy=1) and drop failCgroupV1 from [components.kubelet] config"),
        ));
    }

    if h.node.has(Role::Lb) && h.deployed("haproxy") {
        haproxy(h, remote)?;
    }
    super::faults_support::on_host(inv, creds, h, remote)
}

/// The variables a unit's `Environment=` lines set (assignments separated by spaces, each
/// optionally in double quotes), and the files its `EnvironmentFile=` lines name (a leading `-`:
/// the file may be missing).
pub(crate) fn environment(unit_text: &str) -> (BTreeMap<String, String>, Vec<String>) {
    let mut env = BTreeMap::new();
    let mut files = Vec::new();
    for line in unit_text.lines().map(str::trim) {
        if let Some(f) = line.strip_prefix("EnvironmentFile=") {
            files.push(f.trim_start_matches('-').to_string());
        }
        let Some(line) = line.strip_prefix("Environment=") else {
            continue;
        };
        let (mut quoted, mut word) = (false, String::new());
        for c in line.chars().chain(std::iter::once(' ')) {
            match c {
                '"' => quoted = !quoted,
                ' ' if !quoted => {
                    if let Some((k, v)) = word.split_once('=') {
                        env.insert(k.to_string(), v.to_string());
                    }
                    word.clear();
                }
                c => word.push(c),
            }
        }
    }
    (env, files)
}

/// `KEY=value` lines of an environment file (quotes around the value dropped, comments skipped).
fn env_file(text: &str) -> impl Iterator<Item = (String, String)> + '_ {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.strip_prefix("export ").unwrap_or(l).split_once('=')?;
            Some((
                k.trim().to_string(),
                v.trim().trim_matches(|c| c == '"' || c == '\'').to_string(),
            ))
        })
}

/// Units whose daemon also reads its flags from `PREFIX_FLAG_NAME` variables (etcd: a
/// hand-built or packaged unit may set `ETCD_CERT_FILE` in an environment file).
const ENV_FLAGS: &[(&str, &str)] = &[("etcd", "ETCD_")];

/// The flags a unit sets through its environment ([`ENV_FLAGS`]), added where its ExecStart
/// has none (a command-line flag wins, as in etcd).
fn env_flags(units: &mut BTreeMap<String, Unit>, remote: &dyn Remote) -> Result<(), RemoteError> {
    for (unit, prefix) in ENV_FLAGS {
        let Some(u) = units.get(*unit) else { continue };
        let (mut vars, files) = environment(&u.info.text);
        let mut unread = Vec::new();
        for f in files {
            match remote.read_config(&f) {
                Ok(Some(text)) => vars.extend(env_file(&text)),
                Ok(None) => {}
                Err(e @ RemoteError::TooLarge { .. }) => unread.push(e.to_string()),
                Err(e) => return Err(e),
            }
        }
        let u = units.get_mut(*unit).expect("read above");
        u.unread.extend(unread);
        for (k, v) in vars {
            if let Some(flag) = k.strip_prefix(prefix) {
                u.flags
                    .entry(flag.to_ascii_lowercase().replace('_', "-"))
                    .or_insert(v);
            }
        }
    }
    Ok(())
}

/// The value of a short option (`-f`) on a unit's ExecStart, with `$VAR` and `${VAR}` taken
/// from its `Environment=` lines (HAProxy's units say `-f $CONFIG`).
pub(crate) fn exec_option(unit_text: &str, option: &str) -> Option<String> {
    let joined = unit_text.replace("\\\n", " ");
    let (env, _) = environment(&joined);
    let exec = joined
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ExecStart="))
        .next_back()?;
    let mut args = exec.split_whitespace();
    args.find(|a| *a == option)?;
    let value = args.next()?;
    let var = value
        .strip_prefix("${")
        .and_then(|v| v.strip_suffix('}'))
        .or_else(|| value.strip_prefix('$'));
    match var {
        Some(v) => env.get(v).cloned(),
        None => Some(value.to_string()),
    }
}

fn haproxy(h: &mut HostWork, remote: &dyn Remote) -> Result<(), RemoteError> {
    let name = h.node.name.clone();
    // Where the running unit says its config is; hardway's place otherwise.
    let from_unit = h
        .units
        .get("haproxy")
        .and_then(|u| exec_option(&u.info.text, "-f"));
    let config = from_unit
        .as_deref()
        .or(render::path_of_template("haproxy.cfg"))
        .unwrap_or("/etc/haproxy/haproxy.cfg");
    match remote.haproxy_check(config)? {
        Ok(()) => h.checks.push(check(
            &name,
            "haproxy config",
            Status::Pass,
            format!("haproxy -c accepts {config}"),
            None,
        )),
        Err(why) => h.checks.push(check(
            &name,
            "haproxy config",
            Status::Fail,
            why,
            Some("fix the config (hardway render shows the expected one)"),
        )),
    }
    let cfg = remote.read_config(config)?.unwrap_or_default();
    let socket = cfg.lines().find_map(|l| {
        l.trim()
            .strip_prefix("stats socket ")
            .and_then(|r| r.split_whitespace().next())
    });
    let Some(socket) = socket else {
        h.checks.push(check(
            &name,
            "haproxy backends",
            Status::Warn,
            "no `stats socket` in haproxy.cfg",
            Some("add `stats socket /run/haproxy/admin.sock mode 600 level admin` to global"),
        ));
        return Ok(());
    };
    match remote.socket_request(socket, b"show stat\n") {
        Err(e) => h.checks.push(check(
            &name,
            "haproxy backends",
            Status::Warn,
            format!("cannot read {socket}: {e}"),
            Some("the SSH user needs access to the stats socket"),
        )),
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
        let col = |n: &str| {
            header
                .iter()
                .position(|h| h == n)
                .and_then(|i| f.get(i))
                .map(|s| s.to_string())
                .unwrap_or_default()
        };
        let sv = col("svname");
        if sv.is_empty() || sv == "FRONTEND" || sv == "BACKEND" {
            continue;
        }
        out.push((sv, col("addr"), col("status")));
    }
    out
}

/// The node a client on `from` reaches by dialing `host`: itself for a loopback address, else
/// the node with that address, name or FQDN. None when the inventory does not know the host.
fn node_named<'a>(inv: &'a Inventory, from: &'a Node, host: &str) -> Option<&'a Node> {
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_loopback() => Some(from),
        Ok(ip) => inv.nodes.iter().find(|n| n.address == ip),
        Err(_) if host.eq_ignore_ascii_case("localhost") => Some(from),
        Err(_) => inv.nodes.iter().find(|n| {
            n.name.eq_ignore_ascii_case(host)
                || inv.fqdn(n).is_some_and(|f| f.eq_ignore_ascii_case(host))
        }),
    }
}

/// Adds to every server certificate what its clients on other units dial ([`CLIENTS`](super::sans::CLIENTS)), once
/// every host's units are read.
pub(crate) fn add_clients(inv: &Inventory, work: &mut [HostWork]) {
    let mut needs: Vec<(String, &'static str, San, String)> = Vec::new();
    for h in work.iter() {
        for (unit, flag, what) in CLIENTS {
            if !h.deployed(unit) {
                continue;
            }
            for e in endpoints(h.flag(unit, flag).unwrap_or_default()) {
                let (Some(target), Some(san)) =
                    (node_named(inv, &h.node, &e.host), san_of_host(&e.host))
                else {
                    continue;
                };
                needs.push((
                    target.name.clone(),
                    what,
                    san,
                    format!("{unit} --{flag} on {}", h.node.name),
                ));
            }
        }
    }
    for (target, what, san, why) in needs {
        let Some(h) = work.iter_mut().find(|h| h.node.name == target) else {
            continue;
        };
        for found in h.found.iter_mut().filter(|f| f.site.what == what) {
            if let Some(s) = found.site.sans.as_mut() {
                s.require(san.clone(), why.clone());
            }
        }
    }
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
    fn haproxy_config_from_the_unit_with_its_environment() {
        // Debian's haproxy.service.
        let debian = "[Service]\nEnvironmentFile=-/etc/default/haproxy\nEnvironment=\"CONFIG=/etc/haproxy/haproxy.cfg\" \"PIDFILE=/run/haproxy.pid\" \"EXTRAOPTS=-S /run/haproxy-master.sock\"\nExecStart=/usr/sbin/haproxy -Ws -f $CONFIG -p $PIDFILE $EXTRAOPTS\n";
        assert_eq!(
            exec_option(debian, "-f").as_deref(),
            Some("/etc/haproxy/haproxy.cfg")
        );
        let by_hand = "[Service]\nEnvironment=CFG=/srv/lb.cfg\nExecStart=/usr/sbin/haproxy -Ws \\\n  -f ${CFG}\n";
        assert_eq!(exec_option(by_hand, "-f").as_deref(), Some("/srv/lb.cfg"));
        assert_eq!(
            exec_option("ExecStart=/usr/sbin/haproxy -f /etc/lb.cfg\n", "-f").as_deref(),
            Some("/etc/lb.cfg")
        );
        assert_eq!(exec_option("ExecStart=/usr/sbin/haproxy\n", "-f"), None);
    }

    #[test]
    fn environment_lines_and_files_of_a_unit() {
        let unit = "[Service]\nEnvironmentFile=-/etc/default/etcd\nEnvironmentFile=/etc/etcd/etcd.env\nEnvironment=ETCD_NAME=m1 \"ETCD_DATA_DIR=/var/lib/a b\"\n";
        let (env, files) = environment(unit);
        assert_eq!(files, ["/etc/default/etcd", "/etc/etcd/etcd.env"]);
        assert_eq!(env["ETCD_NAME"], "m1");
        assert_eq!(env["ETCD_DATA_DIR"], "/var/lib/a b");
        let vars: Vec<(String, String)> = env_file("# Debian's\nETCD_CERT_FILE=\"/etc/etcd/c.pem\"\nexport ETCD_KEY_FILE='/etc/etcd/k.pem'\n\n").collect();
        assert_eq!(
            vars,
            [
                ("ETCD_CERT_FILE".into(), "/etc/etcd/c.pem".into()),
                ("ETCD_KEY_FILE".into(), "/etc/etcd/k.pem".into())
            ]
        );
    }

    #[test]
    fn stats_csv_lists_servers_only() {
        let csv = "# pxname,svname,status,addr\nkube-apiservers,FRONTEND,OPEN,\nkube-apiservers,m1,UP,10.0.0.1:6443\nkube-apiservers,m2,DOWN,10.0.0.2:6443\nkube-apiservers,BACKEND,UP,\n";
        assert_eq!(
            parse_stats(csv),
            [
                ("m1".into(), "10.0.0.1:6443".into(), "UP".into()),
                ("m2".into(), "10.0.0.2:6443".into(), "DOWN".into())
            ]
        );
    }
}
