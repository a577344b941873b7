//! Checks that name the causes troubleshooting lessons break on purpose (`hardway lab break`,
//! `crate::class::scenarios`), where the other checks only see the effect:
//!
//! - `ports`: a port of a component held by another process (the component cannot bind);
//! - `clock`: a node's clock against this machine's (etcd warns of drift beyond 1 s);
//! - `etcd CA files`: the CA files etcd's unit names are the etcd CA;
//! - `etcd initial-cluster`: every member's `--initial-cluster` (on the command line or from
//!   its environment files) names each member with its own peer URL;
//! - `haproxy backend port`: each master's backend server points at its API server's port.
//!
//! [`on_host`] runs over the node's session after the host checks (two round trips: facts,
//! and the files a unit names); [`across`] compares hosts afterwards.

use std::collections::{BTreeMap, BTreeSet};

use super::work::HostWork;
use super::{Check, Credentials, Status, check};
use crate::components::{COMPONENTS, Port};
use crate::inventory::{Inventory, host_for_url};
use crate::pki::CaId;
use crate::remote::{FactsQuery, Remote, RemoteError};

/// etcd reports members whose clocks differ by more than this (its prober's threshold).
pub(crate) const CLOCK_TOLERANCE_SECS: f64 = 1.0;

pub(crate) fn on_host(
    inv: &Inventory,
    creds: &Credentials,
    h: &mut HostWork,
    remote: &dyn Remote,
) -> Result<(), RemoteError> {
    let name = h.node.name.clone();
    let facts = remote.facts(&FactsQuery::default())?;
    h.checks.push(clock_check(
        &name,
        facts.clock_offset,
        facts.clock_uncertainty,
    ));

    // A port of a deployed component held by some other process.
    let mut foreign = Vec::new();
    for c in COMPONENTS.iter().filter(|c| c.runs_on(inv, &h.node)) {
        let Some(unit) = c.unit.filter(|u| h.deployed(u)) else {
            continue;
        };
        for port in c.ports {
            let number = port.number(inv);
            for l in facts.listeners.iter().filter(|l| l.port == number) {
                if l.unit.as_deref() != Some(unit) && l.process != c.process_name() {
                    let holder = l
                        .unit
                        .as_deref()
                        .map(|u| format!(" (unit {u})"))
                        .unwrap_or_default();
                    foreign.push((
                        format!("port {number} is held by {}{holder}, not {unit}", l.process),
                        format!("{}{holder}", l.process),
                        unit,
                    ));
                }
            }
        }
    }
    h.checks.push(match foreign.first() {
        None => check(&name, "ports", Status::Pass, "every component's ports are its own", None),
        Some((_, holder, unit)) => {
            let detail: Vec<&str> = foreign.iter().map(|f| f.0.as_str()).collect();
            check(&name, "ports", Status::Fail, detail.join("; "), Some(&format!("stop {holder}, which holds the port {unit} must bind, then systemctl restart {unit}")))
        }
    });

    // etcd's flags from its environment files are in `h.units` already (`host::read_units`).
    if inv.is_etcd_member(&h.node)
        && h.deployed("etcd")
        && let Some(ca) = creds.cas.get(&CaId::Etcd)
    {
        let c = etcd_ca_files(h, ca, remote)?;
        h.checks.push(c);
    }
    Ok(())
}

/// `offset` (node minus this machine) is known to within `uncertainty` seconds; a clock FAILs
/// only when it is off by more than the tolerance even at the near end of that range.
fn clock_check(host: &str, offset: f64, uncertainty: f64) -> Check {
    if offset.is_nan() {
        return check(
            host,
            "clock",
            Status::Warn,
            "the node did not tell its time",
            Some("is `date` on the node's PATH?"),
        );
    }
    let way = if offset > 0.0 { "ahead of" } else { "behind" };
    if offset.abs() - uncertainty <= CLOCK_TOLERANCE_SECS {
        check(
            host,
            "clock",
            Status::Pass,
            format!(
                "within {:.2} s (±{uncertainty:.2} s) of this machine's",
                offset.abs()
            ),
            None,
        )
    } else {
        check(
            host,
            "clock",
            Status::Fail,
            format!(
                "the clock is {:.1} s (±{uncertainty:.2} s) {way} this machine's (etcd tolerates {CLOCK_TOLERANCE_SECS} s between members)",
                offset.abs()
            ),
            Some(
                "clock skew: synchronise the node's clock (timedatectl set-ntp true, or date -s); etcd peers report the drift, certificates and leases depend on it",
            ),
        )
    }
}

/// The CA files of etcd's unit hold the etcd CA (the one clients' and peers' certificates
/// chain to); else etcd refuses every client.
fn etcd_ca_files(h: &HostWork, ca_pem: &str, remote: &dyn Remote) -> Result<Check, RemoteError> {
    let name = h.node.name.as_str();
    let flags: Vec<(&str, String)> = ["trusted-ca-file", "peer-trusted-ca-file"]
        .into_iter()
        .filter_map(|f| Some((f, h.flag("etcd", f)?.to_string())))
        .collect();
    let found =
        remote.read_certificates(&flags.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>())?;
    let want = der_blocks(ca_pem);
    let mut bad = Vec::new();
    for (flag, path) in &flags {
        match found.get(path).cloned().flatten() {
            None => bad.push((*flag, format!("--{flag}={path} does not exist"))),
            Some(pem) if der_blocks(&pem).intersection(&want).next().is_none() => {
                bad.push((*flag, format!("--{flag}={path} is not the etcd CA (no certificate in it is the CA the cluster's certificates chain to)")))
            }
            Some(_) => {}
        }
    }
    Ok(match bad.first() {
        None => check(
            name,
            "etcd CA files",
            Status::Pass,
            format!(
                "{} name the etcd CA",
                flags
                    .iter()
                    .map(|(f, _)| format!("--{f}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None,
        ),
        Some((flag, _)) => check(
            name,
            "etcd CA files",
            Status::Fail,
            bad.iter()
                .map(|b| b.1.as_str())
                .collect::<Vec<_>>()
                .join("; "),
            Some(&format!(
                "wrong CA file: point --{flag} in etcd's unit at the etcd CA certificate, then systemctl daemon-reload and restart etcd"
            )),
        ),
    })
}

/// The DER of every certificate block, to compare CAs whatever their PEM line breaks.
fn der_blocks(pem: &str) -> BTreeSet<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .flatten()
        .map(|c| c.to_vec())
        .collect()
}

/// Checks across hosts: every member's `--initial-cluster`, and HAProxy's backend ports.
pub(crate) fn across(inv: &Inventory, work: &[HostWork], checks: &mut Vec<Check>) {
    initial_cluster(inv, work, checks);
    backend_ports(inv, work, checks);
}

/// `name=url,...` as a set.
fn parse_initial_cluster(s: &str) -> BTreeSet<(String, String)> {
    s.split(',')
        .filter_map(|e| e.split_once('='))
        .map(|(n, u)| (n.trim().to_string(), u.trim().to_string()))
        .collect()
}

fn initial_cluster(inv: &Inventory, work: &[HostWork], checks: &mut Vec<Check>) {
    let members = inv.etcd_members();
    let peer = Port::EtcdPeer.number(inv);
    // Each member's peer URL as its own unit advertises it, or the inventory's.
    let expected: BTreeMap<String, String> = members
        .iter()
        .map(|m| {
            let own = work
                .iter()
                .find(|h| h.node.name == m.name)
                .and_then(|h| h.flag("etcd", "initial-advertise-peer-urls"));
            (
                m.name.clone(),
                own.map(str::to_string)
                    .unwrap_or_else(|| format!("https://{}:{peer}", host_for_url(m.address))),
            )
        })
        .collect();
    for h in work
        .iter()
        .filter(|h| inv.is_etcd_member(&h.node) && h.deployed("etcd"))
    {
        let Some(value) = h.flag("etcd", "initial-cluster") else {
            continue;
        };
        let listed = parse_initial_cluster(value);
        let mut wrong: Vec<String> = Vec::new();
        for (n, u) in &listed {
            match expected.get(n) {
                None => wrong.push(format!("{n}={u} is not a member")),
                Some(want) if want != u => {
                    wrong.push(format!("{n}={u}, but {n}'s peer URL is {want}"))
                }
                Some(_) => {}
            }
        }
        let names: BTreeSet<&String> = listed.iter().map(|(n, _)| n).collect();
        let new_cluster = h
            .flag("etcd", "initial-cluster-state")
            .is_none_or(|s| s == "new");
        for m in expected.keys().filter(|m| !names.contains(m)) {
            if new_cluster || *m == h.node.name {
                wrong.push(format!("{m} is missing"));
            }
        }
        let running = h
            .units
            .get("etcd")
            .is_some_and(|u| u.info.active == "active");
        checks.push(if wrong.is_empty() {
            check(&h.node.name, "etcd initial-cluster", Status::Pass, format!("names the {} members with their peer URLs", listed.len()), None)
        } else {
            // A member with data ignores it; it bites when the data dir is new.
            let status = if running { Status::Warn } else { Status::Fail };
            check(
                &h.node.name,
                "etcd initial-cluster",
                status,
                format!("--initial-cluster: {}", wrong.join("; ")),
                Some("etcd bootstraps from --initial-cluster (ETCD_INITIAL_CLUSTER): it must name every member with the peer URL that member advertises; fix it, then move the empty data dir aside and start etcd"),
            )
        });
    }
}

fn backend_ports(inv: &Inventory, work: &[HostWork], checks: &mut Vec<Check>) {
    let default_port = Port::ApiServer.number(inv);
    for lb in work.iter().filter(|h| h.backends.is_some()) {
        let servers = lb.backends.as_ref().expect("filtered");
        let mut wrong = Vec::new();
        for m in inv.masters() {
            let port = work
                .iter()
                .find(|h| h.node.name == m.name)
                .and_then(|h| h.flag("kube-apiserver", "secure-port"))
                .and_then(|p| p.parse::<u16>().ok())
                .unwrap_or(default_port);
            let host = host_for_url(m.address);
            let server = servers.iter().find(|(n, a, _)| {
                *n == m.name || a.rsplit_once(':').is_some_and(|(h, _)| h == host)
            });
            if let Some((n, addr, _)) = server
                && !addr.ends_with(&format!(":{port}"))
            {
                wrong.push(format!(
                    "server {n} is {addr}, but kube-apiserver on {} serves port {port}",
                    m.name
                ));
            }
        }
        let host = lb.node.name.as_str();
        checks.push(if wrong.is_empty() {
            check(host, "haproxy backend port", Status::Pass, "every backend server points at its API server's port", None)
        } else {
            check(
                host,
                "haproxy backend port",
                Status::Fail,
                wrong.join("; "),
                Some(&format!("wrong backend port: the server lines of haproxy.cfg must use port {default_port} (the API servers' --secure-port), then systemctl reload haproxy")),
            )
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_within_and_beyond_etcds_tolerance() {
        assert_eq!(clock_check("m1", 0.3, 0.01).status, Status::Pass);
        assert_eq!(clock_check("m1", 1.5, 0.01).status, Status::Fail);
        // A slow round trip: 1.5 s off could be 0.9 s.
        assert_eq!(clock_check("m1", 1.5, 0.6).status, Status::Pass);
        let c = clock_check("m1", -90.0, 0.6);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("90.0 s (±0.60 s) behind"), "{c:?}");
        assert!(c.hint.unwrap().contains("clock skew"));
        assert_eq!(clock_check("m1", f64::NAN, 0.0).status, Status::Warn);
    }

    /// On in-memory nodes after a deploy of etcd and the LB: each injected cause is named.
    #[test]
    fn each_cause_is_named_on_its_host() {
        use crate::components::Phase;
        use crate::deploy::{DeployOptions, deploy};
        use crate::remote::Listener;
        use crate::testing::{Fixture, block_on};
        use std::sync::Arc;
        let f = Fixture::new();
        let o = DeployOptions {
            phases: vec![Phase::Etcd, Phase::Lb],
            ..DeployOptions::default()
        };
        let (c, p): (
            Arc<dyn crate::remote::Connector>,
            Arc<dyn crate::probe::Probe>,
        ) = (f.fake.clone(), f.fake.clone());
        block_on(deploy(
            &f.inv,
            f.rendered(),
            c.clone(),
            p.clone(),
            &o,
            crate::events::Events::none("deploy"),
        ))
        .unwrap();
        f.fake.node("lb").sockets.insert(
            "/run/haproxy/admin.sock".into(),
            "# pxname,svname,status,addr\nkube-apiservers,m1,DOWN,10.0.0.11:6444\nkube-apiservers,m2,DOWN,10.0.0.12:6443\n".into(),
        );
        {
            let mut m1 = f.fake.node("m1");
            m1.listeners.push(Listener {
                port: 2379,
                process: "socat".into(),
                unit: Some("etcd-grpc-proxy".into()),
            });
            m1.clock_offset = 90.0;
            let env = m1.files.get_mut("/etc/etcd/etcd.env").expect("deployed");
            env.contents = String::from_utf8_lossy(&env.contents)
                .replace("m1=https://10.0.0.11:2380", "m1=https://10.0.0.11:2390")
                .into_bytes();
            m1.units.get_mut("etcd").unwrap().active = false;
        }
        let creds = Credentials::load(&crate::verify::VerifyOptions::new(f.pki_dir())).unwrap();
        let cs = block_on(crate::verify::verify(
            &f.inv,
            creds,
            c,
            p,
            None,
            8,
            crate::events::Events::none("verify"),
        ));
        let get = |host: &str, name: &str| {
            cs.iter()
                .find(|c| c.place() == host && c.check == name)
                .cloned()
                .unwrap_or_else(|| panic!("no {name} on {host}"))
        };
        let ports = get("m1", "ports");
        assert_eq!(ports.status, Status::Fail);
        assert!(
            ports.detail.contains("port 2379 is held by socat")
                && ports.hint.unwrap().contains("systemctl restart etcd")
        );
        assert_eq!(get("m2", "ports").status, Status::Pass);
        assert_eq!(get("m1", "clock").status, Status::Fail);
        assert_eq!(get("m2", "clock").status, Status::Pass);
        let ic = get("m1", "etcd initial-cluster");
        assert_eq!(ic.status, Status::Fail, "{ic:?}");
        assert!(ic.detail.contains("m1=https://10.0.0.11:2390"), "{ic:?}");
        assert_eq!(get("m2", "etcd initial-cluster").status, Status::Pass);
        assert_eq!(get("m1", "etcd CA files").status, Status::Pass);
        let b = get("lb", "haproxy backend port");
        assert_eq!(b.status, Status::Fail);
        assert!(
            b.detail.contains("server m1 is 10.0.0.11:6444") && !b.detail.contains("m2"),
            "{b:?}"
        );
    }

    #[test]
    fn initial_cluster_entries() {
        let s = parse_initial_cluster("m1=https://10.0.0.1:2380, m2=https://10.0.0.2:2380");
        assert!(s.contains(&("m2".to_string(), "https://10.0.0.2:2380".to_string())));
        assert_eq!(s.len(), 2);
    }
}
