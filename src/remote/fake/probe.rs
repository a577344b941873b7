//! [`FakeCluster`] as a [`Probe`]: etcd members and API servers answer while their units are
//! active on the fake nodes; member changes edit the shared member list and are logged.

use std::net::IpAddr;
use std::time::Duration;

use super::{Event, FakeCluster};
use crate::etcd::{EtcdError, Operation};
use crate::probe::{ApiRequest, BoxFuture, EtcdMember, MemberStatus, Membership, Probe};

/// The namespaces of the fake cluster.
const FAKE_NAMESPACES: &[&str] = &["default", "kube-system"];

/// The controller-manager's `--root-ca-file` (its unit's template).
const ROOT_CA_FILE: &str = "/etc/kubernetes/pki/ca.crt";

impl FakeCluster {
    /// Records what the etcd cluster did (not one node) in the shared event log.
    fn etcd_event(&self, what: impl Into<String>) {
        self.log.lock().expect("not poisoned").push(Event {
            node: "etcd".into(),
            what: what.into(),
        });
    }

    /// A request that needs the leader, sent to the member at `address`: it fails as etcd's
    /// does while there is no leader or that member is down.
    fn leader_through(&self, operation: Operation, address: IpAddr) -> Result<(), EtcdError> {
        if self.etcd_leader().is_none()
            || !self
                .by_address(address)
                .is_some_and(|n| n.unit_active("etcd"))
        {
            return Err(EtcdError::refused(
                operation,
                "etcdserver: no leader (fake)",
            ));
        }
        Ok(())
    }
}

impl FakeCluster {
    fn api_event(&self, what: String) {
        self.log.lock().expect("not poisoned").push(Event {
            node: "api".into(),
            what,
        });
    }

    /// The pods bound to `node` (none: every pod) as the API lists them.
    fn pods_json(&self, node: Option<&str>) -> String {
        let kube = self.kube.lock().expect("not poisoned");
        let items: Vec<serde_json::Value> = kube
            .pods
            .iter()
            .filter(|p| node.is_none_or(|n| p.node == n))
            .map(|p| {
                let owners: Vec<serde_json::Value> = p
                    .controller
                    .iter()
                    .map(|k| serde_json::json!({"kind": k, "controller": true}))
                    .collect();
                serde_json::json!({
                    "metadata": {"namespace": p.namespace, "name": p.name,
                                 "uid": format!("uid-{}", p.name), "ownerReferences": owners},
                    "status": {"phase": "Running"},
                })
            })
            .collect();
        serde_json::json!({ "items": items }).to_string()
    }

    /// `GET /apis/apps/v1/<resource>` (a list) and `…/namespaces/<ns>/<resource>/<name>`.
    fn workloads_json(&self, path: &str) -> Option<(u16, String)> {
        let rest = path.strip_prefix("/apis/apps/v1/")?;
        let kind = |resource: &str| match resource {
            "deployments" => Some("Deployment"),
            "daemonsets" => Some("DaemonSet"),
            "statefulsets" => Some("StatefulSet"),
            _ => None,
        };
        let kube = self.kube.lock().expect("not poisoned");
        let segments: Vec<&str> = rest.split('/').collect();
        match segments.as_slice() {
            [resource] => {
                let kind = kind(resource)?;
                let items: Vec<serde_json::Value> = kube
                    .workloads
                    .iter()
                    .filter(|w| w.kind == kind)
                    .map(super::FakeWorkload::json)
                    .collect();
                Some((200, serde_json::json!({ "items": items }).to_string()))
            }
            ["namespaces", ns, resource, name] => {
                let kind = kind(resource)?;
                Some(
                    match kube
                        .workloads
                        .iter()
                        .find(|w| w.kind == kind && w.namespace == *ns && w.name == *name)
                    {
                        Some(w) => (200, w.json().to_string()),
                        None => (404, r#"{"kind":"Status","message":"not found"}"#.into()),
                    },
                )
            }
            _ => None,
        }
    }

    /// PATCH (cordon), POST (eviction) and DELETE (pods, nodes), logged as `api` events.
    fn api_write(&self, request: &ApiRequest<'_>) -> (u16, String) {
        let mut kube = self.kube.lock().expect("not poisoned");
        let segments: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
        let not_found = (
            404,
            r#"{"kind":"Status","message":"not found"}"#.to_string(),
        );
        match (request.method, segments.as_slice()) {
            ("PATCH", ["api", "v1", "nodes", name]) => {
                let body: serde_json::Value = request
                    .body
                    .and_then(|(_, b)| serde_json::from_str(b).ok())
                    .unwrap_or_default();
                let on = body["spec"]["unschedulable"] == true;
                if on {
                    kube.cordoned.insert(name.to_string());
                } else {
                    kube.cordoned.remove(*name);
                }
                drop(kube);
                self.api_event(format!("{} {name}", if on { "cordon" } else { "uncordon" }));
                (200, "{}".into())
            }
            ("POST", ["api", "v1", "namespaces", ns, "pods", name, "eviction"]) => {
                let Some(i) = kube
                    .pods
                    .iter()
                    .position(|p| p.namespace == *ns && p.name == *name)
                else {
                    return not_found;
                };
                if kube.pods[i].refusals > 0 {
                    kube.pods[i].refusals -= 1;
                    return (429, r#"{"kind":"Status","message":"Cannot evict pod as it would violate the pod's disruption budget."}"#.into());
                }
                kube.pods.remove(i);
                drop(kube);
                self.api_event(format!("evict {ns}/{name}"));
                (201, "{}".into())
            }
            ("DELETE", ["api", "v1", "namespaces", ns, "pods", name]) => {
                let before = kube.pods.len();
                kube.pods
                    .retain(|p| !(p.namespace == *ns && p.name == *name));
                if kube.pods.len() == before {
                    return not_found;
                }
                drop(kube);
                self.api_event(format!("delete pod {ns}/{name}"));
                (200, "{}".into())
            }
            // Services: a canary the drain makes and deletes (EndpointSlices are always there).
            ("POST", ["api", "v1", "namespaces", _, "services"]) => {
                drop(kube);
                self.api_event("create service".into());
                (201, "{}".into())
            }
            ("DELETE", ["api", "v1", "namespaces", _, "services", _]) => {
                drop(kube);
                self.api_event("delete service".into());
                (200, "{}".into())
            }
            ("PATCH", ["apis", "apps", "v1", "namespaces", ns, _, name]) => {
                let Some(w) = kube
                    .workloads
                    .iter_mut()
                    .find(|w| w.namespace == *ns && w.name == *name)
                else {
                    return not_found;
                };
                w.restarts += 1;
                let what = format!("restart {} {ns}/{name}", w.kind);
                drop(kube);
                self.api_event(what);
                (200, "{}".into())
            }
            ("DELETE", ["api", "v1", "nodes", name]) => {
                if !self.nodes.contains_key(*name) || !kube.deleted_nodes.insert(name.to_string()) {
                    return not_found;
                }
                drop(kube);
                self.api_event(format!("delete node {name}"));
                (200, "{}".into())
            }
            _ => (
                405,
                r#"{"kind":"Status","message":"not modelled by the fake"}"#.into(),
            ),
        }
    }
}

impl Probe for FakeCluster {
    fn etcd_member<'a>(
        &'a self,
        name: &'a str,
        address: IpAddr,
        _timeout: Duration,
    ) -> BoxFuture<'a, MemberStatus> {
        Box::pin(async move {
            if !self.node(name).unit_active("etcd") {
                return MemberStatus::no_answer(
                    name,
                    address,
                    format!("https://{address}:2379: connection refused (fake)"),
                );
            }
            let leader = self.etcd_leader();
            let id = self.members().iter().find(|m| m.name == name).map(|m| m.id);
            MemberStatus {
                name: name.to_string(),
                address,
                member_id: id,
                leader: Some(leader.unwrap_or(0)),
                raft_index: Some(10),
                db_size: Some(20480),
                version: Some("3.5.0-fake".into()),
                errors: vec![],
                error: None,
            }
        })
    }

    fn etcd_membership(
        &self,
        address: IpAddr,
        _timeout: Duration,
    ) -> BoxFuture<'_, Result<(Membership, Vec<String>), EtcdError>> {
        Box::pin(async move {
            if !self
                .by_address(address)
                .is_some_and(|n| n.unit_active("etcd"))
            {
                return Err(EtcdError::Unreachable {
                    url: format!("https://{address}:2379"),
                    message: "connection refused (fake)".into(),
                });
            }
            Ok((self.members(), vec![]))
        })
    }

    fn etcd_member_add<'a>(
        &'a self,
        address: IpAddr,
        peer_url: &'a str,
    ) -> BoxFuture<'a, Result<u64, EtcdError>> {
        Box::pin(async move {
            self.leader_through(Operation::MemberAdd, address)?;
            use std::sync::atomic::Ordering;
            if self
                .unhealthy_adds
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                self.etcd_event(format!("member add {peer_url} refused"));
                return Err(EtcdError::refused(
                    Operation::MemberAdd,
                    "etcdserver: unhealthy cluster (fake)",
                ));
            }
            let mut members = self.membership.lock().expect("not poisoned");
            if members.iter().any(|m| m.peer_url == peer_url) {
                return Err(EtcdError::refused(
                    Operation::MemberAdd,
                    "etcdserver: Peer URLs already exists (fake)",
                ));
            }
            let id = FakeCluster::member_id(peer_url) ^ 0x5a5a;
            members.push(EtcdMember {
                id,
                name: String::new(),
                peer_url: peer_url.to_string(),
                learner: true,
            });
            drop(members);
            self.etcd_event(format!("member add {peer_url} (learner)"));
            Ok(id)
        })
    }

    fn etcd_member_promote(
        &self,
        _address: IpAddr,
        id: u64,
    ) -> BoxFuture<'_, Result<(), EtcdError>> {
        Box::pin(async move {
            // Never a node lock under the member-list lock: systemctl takes them the other way.
            let name = self
                .members()
                .into_iter()
                .find(|m| m.id == id)
                .ok_or(EtcdError::refused(
                    Operation::MemberPromote,
                    "etcdserver: member not found (fake)",
                ))?
                .name;
            let started = !name.is_empty()
                && self
                    .nodes
                    .get(&name)
                    .is_some_and(|n| n.lock().expect("not poisoned").unit_active("etcd"));
            if !started {
                return Err(EtcdError::refused(
                    Operation::MemberPromote,
                    "etcdserver: can only promote a learner member which is in sync with leader (fake)",
                ));
            }
            if let Some(m) = self
                .membership
                .lock()
                .expect("not poisoned")
                .iter_mut()
                .find(|m| m.id == id)
            {
                m.learner = false;
            }
            self.etcd_event(format!("member promote {name}"));
            Ok(())
        })
    }

    fn etcd_snapshot<'a>(
        &'a self,
        address: IpAddr,
        out: &'a mut (dyn std::io::Write + Send),
    ) -> BoxFuture<'a, Result<(u64, i64), EtcdError>> {
        Box::pin(async move {
            self.leader_through(Operation::Snapshot, address)?;
            // The fake keyspace: the member list, which is all the fake keeps.
            let bytes = format!("fake etcd snapshot: {:?}\n", self.members()).into_bytes();
            out.write_all(&bytes)
                .map_err(|e| EtcdError::Write(e.to_string()))?;
            self.etcd_event("snapshot");
            Ok((bytes.len() as u64, 42))
        })
    }

    fn etcd_move_leader(&self, leader: IpAddr, to: u64) -> BoxFuture<'_, Result<(), EtcdError>> {
        Box::pin(async move {
            let current = self.etcd_leader().ok_or(EtcdError::refused(
                Operation::MoveLeader,
                "etcdserver: no leader (fake)",
            ))?;
            let asked = self
                .members()
                .into_iter()
                .find(|m| self.by_address(leader).is_some_and(|n| n.name == m.name))
                .map(|m| m.id);
            if asked != Some(current) {
                return Err(EtcdError::refused(
                    Operation::MoveLeader,
                    "etcdserver: not leader (fake)",
                ));
            }
            let target = self
                .members()
                .into_iter()
                .find(|m| m.id == to && !m.learner)
                .ok_or(EtcdError::refused(
                    Operation::MoveLeader,
                    "etcdserver: bad leader transferee (fake)",
                ))?;
            *self.moved_leader.lock().expect("not poisoned") = Some(to);
            self.etcd_event(format!("move leader to {}", target.name));
            Ok(())
        })
    }

    fn etcd_member_remove(
        &self,
        _address: IpAddr,
        id: u64,
    ) -> BoxFuture<'_, Result<(), EtcdError>> {
        Box::pin(async move {
            let mut members = self.membership.lock().expect("not poisoned");
            let at = members
                .iter()
                .position(|m| m.id == id)
                .ok_or(EtcdError::refused(
                    Operation::MemberRemove,
                    "etcdserver: member not found (fake)",
                ))?;
            let m = members.remove(at);
            drop(members);
            if let Some(n) = self.nodes.get(&m.name) {
                // A removed member's etcd stops: it is no longer part of the cluster.
                if let Some(u) = n.lock().expect("not poisoned").units.get_mut("etcd") {
                    u.active = false;
                }
            }
            self.etcd_event(format!("member remove {}", m.name));
            Ok(())
        })
    }

    fn api_request<'a>(
        &'a self,
        address: IpAddr,
        _port: u16,
        request: ApiRequest<'a>,
    ) -> BoxFuture<'a, Result<(u16, String), String>> {
        let path = request.path;
        Box::pin(async move {
            let Some(node) = self.by_address(address) else {
                return Err(format!("connecting to {address}: no route (fake)"));
            };
            // What a node's Kubernetes binary says of its release (`Kubernetes v1.37.2`), when
            // a test set one in its versions.
            let release = |n: &super::NodeState, bin: &str| {
                n.versions
                    .iter()
                    .find(|(p, _)| p.ends_with(&format!("/{bin}")))
                    .and_then(|(_, l)| l.split_whitespace().find(|w| w.starts_with('v')))
                    .map(str::to_string)
            };
            let api_version = release(&node, "kube-apiserver");
            let (direct, proxied) = (
                node.unit_active("kube-apiserver"),
                node.unit_active("haproxy"),
            );
            // The node's lock is let go before any other node's is taken.
            drop(node);
            let serving = if direct {
                true
            } else if proxied {
                self.nodes.values().any(|n| {
                    n.lock()
                        .expect("not poisoned")
                        .unit_active("kube-apiserver")
                })
            } else {
                false
            };
            if !serving {
                return Err(format!(
                    "connecting to {address}: connection refused (fake)"
                ));
            }
            if request.method != "GET" {
                return Ok(self.api_write(&request));
            }
            if let Some(pods) = path.strip_prefix("/api/v1/pods?fieldSelector=spec.nodeName%3D") {
                return Ok((200, self.pods_json(Some(pods))));
            }
            if path == "/api/v1/pods" {
                return Ok((200, self.pods_json(None)));
            }
            if let Some(answer) = self.workloads_json(path) {
                return Ok(answer);
            }
            if path == "/api/v1/namespaces" {
                let items: Vec<serde_json::Value> = FAKE_NAMESPACES
                    .iter()
                    .map(|n| serde_json::json!({"metadata": {"name": n}, "status": {"phase": "Active"}}))
                    .collect();
                return Ok((200, serde_json::json!({ "items": items }).to_string()));
            }
            // What the controller-manager publishes: its --root-ca-file, from a master where
            // it runs.
            if path == "/api/v1/configmaps?fieldSelector=metadata.name%3Dkube-root-ca.crt" {
                let ca = self.nodes.values().find_map(|n| {
                    let n = n.lock().expect("not poisoned");
                    n.unit_active("kube-controller-manager")
                        .then(|| n.files.get(ROOT_CA_FILE).map(|f| f.contents.clone()))
                        .flatten()
                });
                let items: Vec<serde_json::Value> = ca
                    .iter()
                    .flat_map(|ca| {
                        FAKE_NAMESPACES.iter().map(move |ns| {
                            serde_json::json!({
                                "metadata": {"namespace": ns, "name": "kube-root-ca.crt"},
                                "data": {"ca.crt": String::from_utf8_lossy(ca)},
                            })
                        })
                    })
                    .collect();
                return Ok((200, serde_json::json!({ "items": items }).to_string()));
            }
            if path == "/version" {
                return Ok(match api_version {
                    Some(v) => (200, serde_json::json!({ "gitVersion": v }).to_string()),
                    None => (404, "{}".into()),
                });
            }
            if let Some(rest) = path.strip_prefix("/api/v1/nodes")
                && (rest.is_empty() || rest.starts_with('/') && !rest[1..].contains('/'))
            {
                let kube = self.kube.lock().expect("not poisoned");
                let ready: Vec<serde_json::Value> = self
                    .nodes
                    .values()
                    .map(|n| n.lock().expect("not poisoned"))
                    .filter(|n| n.unit_active("kubelet"))
                    .filter(|n| !kube.deleted_nodes.contains(&n.name))
                    .filter(|n| rest.is_empty() || rest[1..] == n.name)
                    .map(|n| {
                        let mut conditions = vec![serde_json::json!({"type": "Ready", "status": "True"})];
                        conditions.extend(n.pressure.iter().map(|p| serde_json::json!({"type": p, "status": "True", "message": format!("kubelet has {p} (fake)")})));
                        let mut status = serde_json::json!({ "conditions": conditions });
                        if let Some(v) = release(&n, "kubelet") {
                            status["nodeInfo"] = serde_json::json!({ "kubeletVersion": v });
                        }
                        let spec = serde_json::json!({"unschedulable": kube.cordoned.contains(&n.name)});
                        serde_json::json!({"metadata": {"name": n.name}, "spec": spec, "status": status})
                    })
                    .collect();
                if !rest.is_empty() {
                    return Ok(match ready.into_iter().next() {
                        Some(n) => (200, n.to_string()),
                        None => (404, r#"{"kind":"Status","message":"not found"}"#.into()),
                    });
                }
                return Ok((200, serde_json::json!({ "items": ready }).to_string()));
            }
            let any_active = |unit: &str| {
                self.nodes
                    .values()
                    .any(|n| n.lock().expect("not poisoned").unit_active(unit))
            };
            // A leader-elected component's lease: renewed now while one of its units runs.
            if let Some(lease) =
                path.strip_prefix("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/")
            {
                let now = time::OffsetDateTime::now_utc()
                    .format(&time::format_description::well_known::Rfc3339)
                    .expect("formats");
                if !any_active(lease) {
                    // Stopped cleanly, a leader releases its lease (no holder); never started,
                    // there is none.
                    let ran = self.nodes.values().any(|n| {
                        n.lock()
                            .expect("not poisoned")
                            .units
                            .get(lease)
                            .is_some_and(|u| u.starts + u.restarts > 0)
                    });
                    return Ok(if ran {
                        (200, serde_json::json!({"spec": {"holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": now}}).to_string())
                    } else {
                        (404, "{}".into())
                    });
                }
                // The first node running it leads; each (re)start is a new process, a new
                // identity.
                let holder = self
                    .nodes
                    .values()
                    .map(|n| n.lock().expect("not poisoned"))
                    .find(|n| n.unit_active(lease))
                    .map(|n| {
                        let u = &n.units[lease];
                        format!("{}_{}", n.name, u.starts + u.restarts)
                    })
                    .unwrap_or_default();
                return Ok((200, serde_json::json!({"spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": now}}).to_string()));
            }
            // kube-dns is served while a kubelet runs (CoreDNS runs on the workers).
            if path.starts_with("/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices") {
                let endpoints: Vec<serde_json::Value> = if any_active("kubelet") {
                    vec![
                        serde_json::json!({"addresses": ["10.200.0.2"], "conditions": {"ready": true}}),
                    ]
                } else {
                    vec![]
                };
                return Ok((
                    200,
                    serde_json::json!({"items": [{"endpoints": endpoints}]}).to_string(),
                ));
            }
            Ok((200, "ok".into()))
        })
    }
}
