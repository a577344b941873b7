//! The checks across nodes and through the [`Probe`]: etcd's members, leader, membership,
//! raft indexes and alarms; the API servers' /livez and /readyz on each master and through the
//! load balancer, nodes Ready, the API server reaching each kubelet, the scheduler and the
//! controller-manager holding their leases, CoreDNS serving kube-dns, aggregated APIs Available
//! (or why not); each master's state in HAProxy; one encryption config on every master.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use super::work::HostWork;
use super::{Check, Status, check, check_at, cluster_check, sans};
use crate::components::Port;
use crate::inventory::{Inventory, Role, host_for_url};
use crate::probe::{self, Probe};

pub(crate) fn encryption_consistency(inv: &Inventory, work: &[HostWork], checks: &mut Vec<Check>) {
    let shas: Vec<(&str, &String)> = work
        .iter()
        .filter(|h| h.node.has(Role::Master))
        .filter_map(|h| h.encryption_sha.as_ref().map(|s| (h.node.name.as_str(), s)))
        .collect();
    if shas.is_empty() {
        return;
    }
    let distinct: BTreeSet<&String> = shas.iter().map(|(_, s)| *s).collect();
    let masters = inv.masters().count();
    for (host, sha) in &shas {
        let c = if distinct.len() == 1 && shas.len() == masters {
            check(
                host,
                "encryption config",
                Status::Pass,
                format!("identical on all {masters} masters"),
                None,
            )
        } else if distinct.len() == 1 {
            check(
                host,
                "encryption config",
                Status::Fail,
                format!(
                    "present here, missing on {} of {masters} masters",
                    masters - shas.len()
                ),
                Some("every API server needs the same key: hardway deploy --phases control-plane"),
            )
        } else {
            check(
                host,
                "encryption config",
                Status::Fail,
                format!("differs between masters (sha256 {}…)", &sha[..12]),
                Some(
                    "API servers with different keys cannot read each other's Secrets: deploy one config to all",
                ),
            )
        };
        checks.push(c);
    }
}

/// One check per master for each LB's backend state. A master without an API server is DOWN
/// by design, which is a SKIP (not deployed), not a failure.
pub(crate) fn backends(inv: &Inventory, work: &[HostWork], checks: &mut Vec<Check>) {
    let api_deployed: BTreeSet<&str> = work
        .iter()
        .filter(|h| h.deployed("kube-apiserver"))
        .map(|h| h.node.name.as_str())
        .collect();
    for lb in work.iter().filter(|h| h.backends.is_some()) {
        let servers = lb.backends.as_ref().expect("filtered");
        for m in inv.masters() {
            let name = format!("haproxy backend {}", m.name);
            let addr = format!("{}:", host_for_url(m.address));
            let status = servers
                .iter()
                .find(|(n, a, _)| *n == m.name || a.starts_with(&addr))
                .map(|s| s.2.clone());
            let host = lb.node.name.as_str();
            checks.push(match status {
                None => check(
                    host,
                    name,
                    Status::Fail,
                    "not in any backend",
                    Some("haproxy.cfg must list every master (hardway render)"),
                ),
                // Whatever HAProxy says, a master without an API server cannot be UP for long.
                Some(s) if !api_deployed.contains(m.name.as_str()) => check(
                    host,
                    name,
                    Status::Skip,
                    format!("{s}: kube-apiserver is not deployed on {}", m.name),
                    Some("deploy the control plane"),
                ),
                Some(s) if s == "UP" => check(host, name, Status::Pass, s, None),
                // "UP 1/3": still in rotation but failing its health checks, on its way down.
                Some(s) if s.starts_with("UP") => check(
                    host,
                    name,
                    Status::Warn,
                    format!("{s}: failing health checks"),
                    Some(&format!(
                        "the API server on {} stopped answering /readyz",
                        m.name
                    )),
                ),
                Some(s) => check(
                    host,
                    name,
                    Status::Fail,
                    s,
                    Some(&format!("the API server on {} is not ready", m.name)),
                ),
            });
        }
    }
}

/// A member's URL as its own unit advertises it (`flag`): the one on the node's address, else
/// the first; none where the unit was not read.
fn advertised(work: &[HostWork], node: &str, flag: &str) -> Option<String> {
    let h = work.iter().find(|h| h.node.name == node)?;
    let value = h.flag("etcd", flag)?;
    let urls: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    let own = format!("://{}:", host_for_url(h.node.address));
    urls.iter()
        .find(|u| u.contains(&own))
        .or(urls.first())
        .map(|u| u.trim_end_matches('/').to_string())
}

pub(crate) async fn etcd(
    inv: &Inventory,
    probe: &dyn Probe,
    have_auth: bool,
    work: &[HostWork],
) -> Vec<Check> {
    let members = inv.etcd_members();
    // The client port each member's unit advertises, where it is not etcd's default.
    for m in &members {
        let port = advertised(work, &m.name, "advertise-client-urls")
            .and_then(|u| sans::endpoints(&u).first()?.port);
        if let Some(port) = port.filter(|p| *p != Port::EtcdClient.number(inv)) {
            probe.set_etcd_port(m.address, port);
        }
    }
    if !have_auth {
        return members
            .iter()
            .map(|m| {
                check(
                    &m.name,
                    "etcd member",
                    Status::Skip,
                    "no etcd client certificate",
                    Some("pass --etcd-ca/--etcd-cert/--etcd-key or --pki"),
                )
            })
            .collect();
    }
    let statuses = probe::cluster_status(probe, &members, Duration::from_secs(3)).await;
    let answering = statuses.iter().filter(|s| s.answered()).count();
    let quorum = crate::etcd::quorum(members.len());
    let held = if answering >= quorum {
        format!(
            "quorum held: {answering} of {} members answer, quorum is {quorum}",
            members.len()
        )
    } else {
        format!(
            "QUORUM LOST: {answering} of {} members answer, quorum is {quorum}",
            members.len()
        )
    };
    let mut out = Vec::new();
    for s in &statuses {
        out.push(match &s.error {
            None if s.errors.is_empty() => check(
                &s.name,
                "etcd member",
                Status::Pass,
                probe::describe(s),
                None,
            ),
            None => check(
                &s.name,
                "etcd member",
                Status::Fail,
                probe::describe(s),
                Some("see journalctl -u etcd on the member"),
            ),
            Some(e) => check(
                &s.name,
                "etcd member",
                Status::Fail,
                format!("no answer ({e}); {held}"),
                Some(&format!(
                    "systemctl status etcd and journalctl -u etcd on {}",
                    s.name
                )),
            ),
        });
    }
    let leaders: BTreeSet<u64> = statuses
        .iter()
        .filter_map(|s| s.leader)
        .filter(|l| *l != 0)
        .collect();
    out.push(match leaders.len() {
        1 => cluster_check(
            "etcd leader",
            Status::Pass,
            format!(
                "one leader ({:x}); {held}",
                leaders.iter().next().expect("one")
            ),
            None,
        ),
        0 => cluster_check(
            "etcd leader",
            Status::Fail,
            format!("no leader; {held}"),
            Some("etcd needs a majority of members up to elect a leader"),
        ),
        n => cluster_check(
            "etcd leader",
            Status::Fail,
            format!("{n} different leaders reported (split brain?)"),
            Some("check --initial-cluster on every member"),
        ),
    });
    let indexes: Vec<u64> = statuses.iter().filter_map(|s| s.raft_index).collect();
    if let (Some(min), Some(max)) = (indexes.iter().min(), indexes.iter().max()) {
        out.push(if max - min <= 100 {
            cluster_check(
                "etcd raft index",
                Status::Pass,
                format!("within {} of each other", max - min),
                None,
            )
        } else {
            cluster_check(
                "etcd raft index",
                Status::Warn,
                format!("spread {} (from {min} to {max})", max - min),
                Some("a member is lagging: check its disk and network"),
            )
        });
    }
    // Membership and alarms, asked of any member that answers.
    if let Some(first) = statuses.iter().find(|s| s.answered()) {
        match probe
            .etcd_membership(first.address, Duration::from_secs(3))
            .await
        {
            Ok((listed, alarms)) => {
                let peer = Port::EtcdPeer.number(inv);
                // The peer URL each member's unit advertises; hardway's where none was read.
                let want: BTreeSet<(String, String)> = members
                    .iter()
                    .map(|m| {
                        let url = advertised(work, &m.name, "initial-advertise-peer-urls")
                            .unwrap_or_else(|| {
                                format!("https://{}:{peer}", host_for_url(m.address))
                            });
                        (m.name.clone(), url)
                    })
                    .collect();
                let have: BTreeSet<(String, String)> =
                    listed.into_iter().map(|m| (m.name, m.peer_url)).collect();
                out.push(if want == have {
                    cluster_check(
                        "etcd membership",
                        Status::Pass,
                        format!("{} members as in the inventory", want.len()),
                        None,
                    )
                } else {
                    let missing: Vec<String> = want
                        .difference(&have)
                        .map(|(n, u)| format!("{n} {u}"))
                        .collect();
                    let extra: Vec<String> = have
                        .difference(&want)
                        .map(|(n, u)| format!("{n} {u}"))
                        .collect();
                    cluster_check(
                        "etcd membership",
                        Status::Fail,
                        format!(
                            "missing: [{}], not in inventory: [{}]",
                            missing.join(", "),
                            extra.join(", ")
                        ),
                        Some("etcdctl member add/remove to match the inventory"),
                    )
                });
                out.push(if alarms.is_empty() {
                    cluster_check("etcd alarms", Status::Pass, "none", None)
                } else {
                    cluster_check(
                        "etcd alarms",
                        Status::Fail,
                        alarms.join(", "),
                        Some("NOSPACE: compact and defragment, then etcdctl alarm disarm"),
                    )
                });
            }
            Err(e) => out.push(cluster_check(
                "etcd membership",
                Status::Fail,
                e.to_string(),
                None,
            )),
        }
    }
    out
}

pub(crate) async fn api(
    inv: &Inventory,
    probe: &dyn Probe,
    have_auth: bool,
    auth_error: Option<String>,
    work: &[HostWork],
) -> Vec<Check> {
    let mut out = Vec::new();
    let deployed: Vec<&HostWork> = work
        .iter()
        .filter(|h| h.node.has(Role::Master) && h.deployed("kube-apiserver"))
        .collect();
    let (lb_ip, lb_port) = inv.api_endpoint();
    // Checks through the API's address are the load balancer node's, or the cluster's where no
    // node is one (an external load balancer, a single master's address).
    let lb_host: Option<String> = inv.load_balancer.as_ref().and_then(|l| l.node.clone());
    let lb = lb_host.as_deref();
    if deployed.is_empty() {
        let masters: Vec<&HostWork> = work.iter().filter(|h| h.node.has(Role::Master)).collect();
        out.push(if masters.iter().all(|h| !h.reached()) {
            // Not "not deployed": nothing is known of masters that did not answer.
            check_at(lb, "api /readyz", Status::Fail, "no master answered over SSH: whether kube-apiserver runs on any is unknown", Some("make the masters reachable over SSH (their ssh checks say why)"))
        } else {
            check_at(lb, "api /readyz", Status::Skip, "kube-apiserver is not deployed on any master", Some("hardway deploy --phases control-plane (needs the Kubernetes binaries on the masters)"))
        });
        return out;
    }
    if let Some(e) = auth_error {
        out.push(check_at(lb, "api /readyz", Status::Fail, e, None));
        return out;
    }
    if !have_auth {
        out.push(check_at(
            lb,
            "api /readyz",
            Status::Skip,
            "no cluster CA or admin certificate",
            Some("pass --pki, or --ca/--admin-cert/--admin-key"),
        ));
        return out;
    }
    let default_port = Port::ApiServer.number(inv);
    let masters: Vec<(&str, IpAddr, u16)> = deployed
        .iter()
        .map(|h| {
            // The port the API server was told to serve on, as a hand-built one may differ.
            let port = h
                .flag("kube-apiserver", "secure-port")
                .and_then(|p| p.parse().ok())
                .unwrap_or(default_port);
            (h.node.name.as_str(), h.node.address, port)
        })
        .collect();
    let targets = masters
        .iter()
        .map(|&(name, ip, port)| (Some(name), ip, port))
        .chain([(lb, lb_ip, lb_port)]);
    for (host, ip, port) in targets {
        for path in ["/livez", "/readyz"] {
            out.push(match probe.api_get(ip, port, path).await {
                Ok((200, _)) => check_at(
                    host,
                    format!("api {path}"),
                    Status::Pass,
                    format!("https://{}:{port}{path}: 200", host_for_url(ip)),
                    None,
                ),
                Ok((code, body)) => check_at(
                    host,
                    format!("api {path}"),
                    Status::Fail,
                    format!(
                        "{code}: {}",
                        body.lines()
                            .filter(|l| l.contains("failed"))
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                    Some("kubectl get --raw '/readyz?verbose' names the failing check"),
                ),
                Err(e) => check_at(
                    host,
                    format!("api {path}"),
                    Status::Fail,
                    e,
                    Some(&format!(
                        "is kube-apiserver running, and port {port} reachable?"
                    )),
                ),
            });
        }
    }
    // What each API server runs, against the inventory's release: an upgrade half done, or a
    // master left behind, is named here.
    for &(host, ip, port) in masters.iter().filter(|(h, ..)| Some(*h) != lb) {
        if let Ok((200, body)) = probe.api_get(ip, port, "/version").await
            && let Some(v) = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["gitVersion"].as_str().map(str::to_string))
        {
            out.push(release(inv, host, "kube-apiserver", &v));
        }
    }
    // Cluster state, through the load balancer.
    let kubelet_deployed = |name: &str| {
        work.iter()
            .any(|h| h.node.name == name && h.deployed("kubelet"))
    };
    match probe.api_get(lb_ip, lb_port, "/api/v1/nodes").await {
        Ok((200, body)) => {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            // Each node's conditions, read once: Ready, then the pressures of a Ready one.
            let conditions: BTreeMap<&str, &[serde_json::Value]> = v["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| {
                    Some((
                        n["metadata"]["name"].as_str()?,
                        n["status"]["conditions"]
                            .as_array()
                            .map(Vec::as_slice)
                            .unwrap_or_default(),
                    ))
                })
                .collect();
            // The kubelet each registered node reports.
            let kubelets: BTreeMap<&str, &str> = v["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| {
                    Some((
                        n["metadata"]["name"].as_str()?,
                        n["status"]["nodeInfo"]["kubeletVersion"].as_str()?,
                    ))
                })
                .collect();
            let ready: BTreeSet<&str> = conditions
                .iter()
                .filter(|(_, cs)| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
                .map(|(n, _)| *n)
                .collect();
            for w in inv.workers() {
                out.push(if ready.contains(w.name.as_str()) {
                    check(&w.name, "node Ready", Status::Pass, "Ready", None)
                } else if !kubelet_deployed(&w.name) {
                    check(
                        &w.name,
                        "node Ready",
                        Status::Skip,
                        "the kubelet is not deployed on this node",
                        Some("hardway deploy --phases workers"),
                    )
                } else {
                    check(
                        &w.name,
                        "node Ready",
                        Status::Fail,
                        "not registered or not Ready",
                        Some("journalctl -u kubelet on the node"),
                    )
                });
                if let Some(v) = kubelets.get(w.name.as_str()) {
                    out.push(release(inv, &w.name, "kubelet", v));
                }
                if ready.contains(w.name.as_str()) {
                    out.push(pressure(&w.name, conditions[w.name.as_str()]));
                    out.push(kubelet_api(probe, lb_ip, lb_port, &w.name).await);
                }
            }
            for (lease, unit) in [
                ("kube-scheduler", "kube-scheduler"),
                ("kube-controller-manager", "kube-controller-manager"),
            ] {
                if deployed.iter().any(|h| h.deployed(unit)) {
                    out.push(leader(probe, lb_ip, lb_port, lb, lease).await);
                }
            }
            // CoreDNS runs on the workers: nothing to ask before a kubelet is deployed.
            if inv.addons.coredns.is_some() && inv.workers().any(|w| kubelet_deployed(&w.name)) {
                out.push(cluster_dns(probe, lb_ip, lb_port, lb).await);
            }
        }
        Ok((code, _)) => out.push(check_at(
            lb,
            "nodes Ready",
            Status::Fail,
            format!("listing nodes answered {code}"),
            Some("the admin certificate needs O=system:masters"),
        )),
        Err(e) => out.push(check_at(
            lb,
            "nodes Ready",
            Status::Fail,
            format!("listing nodes: {e}"),
            None,
        )),
    }
    if inv.addons.aggregation
        && let Ok((200, body)) = probe
            .api_get(
                lb_ip,
                lb_port,
                "/apis/apiregistration.k8s.io/v1/apiservices",
            )
            .await
    {
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        // Each APIService that is not Available: its name, its service and why (the condition's
        // reason: MissingEndpoints when no pod serves it, FailedDiscoveryCheck when the API
        // server cannot reach the pods that do).
        let bad: Vec<(String, String, String)> = v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| {
                let available = a["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|c| c["type"] == "Available");
                if available.is_some_and(|c| c["status"] == "True") {
                    return None;
                }
                let name = a["metadata"]["name"].as_str()?.to_string();
                let svc = format!(
                    "{}/{}",
                    a["spec"]["service"]["namespace"].as_str().unwrap_or("?"),
                    a["spec"]["service"]["name"].as_str().unwrap_or("?")
                );
                let why = available
                    .map(|c| {
                        format!(
                            "{}: {}",
                            c["reason"].as_str().unwrap_or(""),
                            c["message"].as_str().unwrap_or("")
                        )
                    })
                    .unwrap_or_else(|| "no Available condition yet".into());
                Some((name, svc, why))
            })
            .collect();
        out.push(if bad.is_empty() {
            check_at(lb, "aggregated APIs", Status::Pass, "all APIServices Available", None)
        } else {
            let detail: Vec<String> = bad.iter().map(|(n, svc, why)| format!("{n} (service {svc}): {why}")).collect();
            let hint = if bad.iter().any(|(_, _, why)| why.starts_with("MissingEndpoints")) {
                let svc = &bad.iter().find(|(_, _, w)| w.starts_with("MissingEndpoints")).expect("found above").1;
                let (ns, name) = svc.split_once('/').unwrap_or(("kube-system", svc));
                format!("no pod serves it: kubectl -n {ns} get deployment,pods -o wide | grep {name} (scaled to zero, or its pods not Ready)")
            } else {
                "the API server dials the service's pod IPs (--enable-aggregator-routing): every master needs a route to every pod network".into()
            };
            check_at(lb, "aggregated APIs", Status::Fail, format!("not Available: {}", detail.join("; ")), Some(&hint))
        });
    }
    out
}

/// The API server reaches the kubelet (what `kubectl logs`, `exec` and metrics-server's
/// scrapes go through): its `/healthz` through the API server's node proxy, which dials the
/// kubelet at its address and checks its serving certificate against the cluster CA.
async fn kubelet_api(probe: &dyn Probe, lb_ip: IpAddr, lb_port: u16, node: &str) -> Check {
    let path = format!("/api/v1/nodes/{node}/proxy/healthz");
    match probe.api_get(lb_ip, lb_port, &path).await {
        Ok((200, _)) => check(
            node,
            "kubelet API",
            Status::Pass,
            "the API server reaches the kubelet (logs, exec, metrics)",
            None,
        ),
        Ok((code, body)) => {
            let why: String = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| body.trim().chars().take(300).collect());
            let hint = if why.contains("x509") || why.contains("certificate") {
                "the kubelet's serving certificate must name the address the API server dials (the node's InternalIP): \
                 see `cert kubelet`; hardway pki generate re-issues it, hardway deploy --phases workers places it"
            } else {
                "kubectl logs and exec go this way: is the kubelet's port 10250 reachable from the masters?"
            };
            check(
                node,
                "kubelet API",
                Status::Fail,
                format!("{path}: {code}: {why}"),
                Some(hint),
            )
        }
        Err(e) => check(
            node,
            "kubelet API",
            Status::Fail,
            format!("{path}: {e}"),
            None,
        ),
    }
}

/// A leader-elected control-plane component holds its lease: without one, nothing schedules
/// new pods (they stay Pending) or runs the controllers.
async fn leader(
    probe: &dyn Probe,
    lb_ip: IpAddr,
    lb_port: u16,
    host: Option<&str>,
    lease: &str,
) -> Check {
    let name = format!("{} leader", lease.trim_start_matches("kube-"));
    let path = format!("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{lease}");
    let v = match probe.api_get(lb_ip, lb_port, &path).await {
        Ok((200, body)) => serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default(),
        Ok((404, _)) => {
            return check_at(
                host,
                name,
                Status::Fail,
                format!("no {lease} lease: no {lease} ever became leader"),
                Some(&format!("systemctl status {lease} on the masters")),
            );
        }
        Ok((code, _)) => {
            return check_at(host, name, Status::Fail, format!("{path}: {code}"), None);
        }
        Err(e) => return check_at(host, name, Status::Fail, format!("{path}: {e}"), None),
    };
    let holder = v["spec"]["holderIdentity"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let what = if lease == "kube-scheduler" {
        "new pods stay Pending"
    } else {
        "no controller runs (Deployments, Endpoints, node lifecycle)"
    };
    let start = format!(
        "systemctl start {lease} on the masters (journalctl -u {lease} says why it stopped)"
    );
    // A leader that stops cleanly releases the lease (no holder) rather than letting it lapse.
    if holder.is_empty() {
        return check_at(
            host,
            name,
            Status::Fail,
            format!(
                "no {lease} holds the lease: the last leader released it as it stopped; {what}"
            ),
            Some(&start),
        );
    }
    let duration = v["spec"]["leaseDurationSeconds"].as_i64().unwrap_or(15);
    let renewed = v["spec"]["renewTime"].as_str().and_then(|t| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
    });
    let age = renewed.map(|t| (time::OffsetDateTime::now_utc() - t).whole_seconds());
    match age {
        Some(age) if age <= duration + 5 => check_at(
            host,
            name,
            Status::Pass,
            format!("{holder}, renewed {age} s ago"),
            None,
        ),
        Some(age) => check_at(
            host,
            name,
            Status::Fail,
            format!(
                "no {lease} holds the lease: last renewed {age} s ago by {holder} (it lapses after {duration} s); {what}"
            ),
            Some(&start),
        ),
        None => check_at(
            host,
            name,
            Status::Fail,
            format!("the {lease} lease has no renew time ({holder})"),
            None,
        ),
    }
}

/// CoreDNS answers for the cluster: the kube-dns Service has ready endpoints.
async fn cluster_dns(probe: &dyn Probe, lb_ip: IpAddr, lb_port: u16, host: Option<&str>) -> Check {
    let path = "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dkube-dns";
    let v = match probe.api_get(lb_ip, lb_port, path).await {
        Ok((200, body)) => serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default(),
        Ok((code, _)) => {
            return check_at(
                host,
                "cluster DNS",
                Status::Fail,
                format!("kube-dns's EndpointSlices: {code}"),
                None,
            );
        }
        Err(e) => {
            return check_at(
                host,
                "cluster DNS",
                Status::Fail,
                format!("kube-dns's EndpointSlices: {e}"),
                None,
            );
        }
    };
    // No EndpointSlice at all: no kube-dns Service (one with a selector always has a slice,
    // empty while no pod is Ready) — the addons are not deployed yet.
    if v["items"].as_array().is_none_or(|i| i.is_empty()) {
        return check_at(
            host,
            "cluster DNS",
            Status::Skip,
            "CoreDNS is not deployed (no kube-dns Service)",
            Some("hardway deploy --phases addons"),
        );
    }
    let ready: Vec<String> = v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
        .filter(|e| e["conditions"]["ready"] != serde_json::Value::Bool(false))
        .filter_map(|e| e["addresses"][0].as_str().map(str::to_string))
        .collect();
    if ready.is_empty() {
        check_at(
            host,
            "cluster DNS",
            Status::Fail,
            "the kube-dns Service has no ready endpoints: names do not resolve in pods (no CoreDNS pod is Ready)",
            Some(
                "kubectl -n kube-system get deployment coredns (scaled to zero? kubectl -n kube-system scale deployment coredns --replicas=2), and its pods' logs",
            ),
        )
    } else {
        check_at(
            host,
            "cluster DNS",
            Status::Pass,
            format!(
                "kube-dns served by {} CoreDNS pods ({})",
                ready.len(),
                ready.join(", ")
            ),
            None,
        )
    }
}

/// `component` on `host` reports `running` (`v1.37.2`): PASS at the inventory's release; FAIL on
/// another minor (an upgrade not finished, a node left behind), WARN on another patch.
fn release(inv: &Inventory, host: &str, component: &str, running: &str) -> Check {
    let want = inv.cluster.kubernetes_version;
    let name = format!("{component} version");
    match crate::versions::Version::parse(running) {
        Some(v) if v == want => check(host, &name, Status::Pass, running.to_string(), None),
        Some(v) if (v.major, v.minor) == (want.major, want.minor) => check(
            host,
            &name,
            Status::Warn,
            format!("{running}; the inventory's kubernetes_version is {want}"),
            Some("hardway deploy puts every node on the inventory's release"),
        ),
        _ => check(
            host,
            &name,
            Status::Fail,
            format!("{running}, not the inventory's kubernetes_version {want}"),
            Some("hardway deploy: an upgrade rolls the masters one at a time, then the workers"),
        ),
    }
}

/// A Ready node may still be under pressure: the kubelet then evicts pods and admits no new
/// ones (the first thing a user sees is pods `Evicted` or `Pending`). Reads the node's
/// MemoryPressure, DiskPressure and PIDPressure conditions.
fn pressure(node: &str, conditions: &[serde_json::Value]) -> Check {
    let under: Vec<String> = conditions
        .iter()
        .filter(|c| {
            c["status"] == "True"
                && matches!(
                    c["type"].as_str(),
                    Some("MemoryPressure" | "DiskPressure" | "PIDPressure")
                )
        })
        .map(|c| {
            format!(
                "{}: {}",
                c["type"].as_str().unwrap_or_default(),
                c["message"].as_str().unwrap_or_default()
            )
        })
        .collect();
    if under.is_empty() {
        return check(
            node,
            "node pressure",
            Status::Pass,
            "no memory, disk or PID pressure",
            None,
        );
    }
    check(
        node,
        "node pressure",
        Status::Fail,
        under.join("; "),
        Some(
            "the kubelet evicts pods while it lasts: free disk (its default evictionHard: nodefs.available<10%, imagefs.available<15%) or memory on the node; kubectl describe node shows it",
        ),
    )
}
