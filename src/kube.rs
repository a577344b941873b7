//! The Kubernetes API as a capability of deploy and day 2: a node cordoned, drained the way
//! `kubectl drain --ignore-daemonsets --delete-emptydir-data` drains it (through the Eviction
//! API, so PodDisruptionBudgets are respected), waited for until Ready, uncordoned, deleted.
//!
//! Every request goes through the [`Probe`] as the cluster admin, to the address clients use
//! (the load balancer), so the same code runs against a real API server and the fake cluster.
//! Nothing here knows about SSH or units: callers decide when a node is drained (an upgrade of
//! its kubelet, `node remove`) and what happens between drain and uncordon.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::probe::{ApiRequest, Probe};

/// What went wrong talking to the API or draining a node.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("the API server at {endpoint} did not answer {what}: {error}")]
    Unreachable {
        endpoint: String,
        what: String,
        error: String,
    },
    #[error("{what}: the API server answered {code}: {message}")]
    Status {
        what: String,
        code: u16,
        message: String,
    },
    #[error(
        "draining {node}: {} not managed by a controller (nothing would recreate {}): {}; --force deletes {}",
        if .pods.len() == 1 { "a pod is" } else { "pods are" },
        if .pods.len() == 1 { "it" } else { "them" },
        .pods.join(", "),
        if .pods.len() == 1 { "it" } else { "them" }
    )]
    Unmanaged { node: String, pods: Vec<String> },
    #[error(
        "draining {node}: not evicted within {secs} s, as a PodDisruptionBudget allows no disruption: {}{}; --force deletes them anyway",
        .pods.join(", "),
        .reason.as_ref().map(|r| format!(" (the API server: {r})")).unwrap_or_default()
    )]
    Blocked {
        node: String,
        secs: u64,
        pods: Vec<String>,
        reason: Option<String>,
    },
    #[error("draining {node}: still on the node after {secs} s: {}", .pods.join(", "))]
    NotGone {
        node: String,
        secs: u64,
        pods: Vec<String>,
    },
    #[error(
        "the controller-manager has not published the cluster CA's new trust bundle within {secs} s: the kube-root-ca.crt ConfigMap (the ca.crt pods trust) lacks it in {}",
        .namespaces.join(", ")
    )]
    NotPublished { secs: u64, namespaces: Vec<String> },
    #[error("not rolled out within {secs} s after the restart: {}", .workloads.join("; "))]
    NotRolledOut { secs: u64, workloads: Vec<String> },
    #[error("{node} is not Ready after {secs} s: {last}")]
    NotReady {
        node: String,
        secs: u64,
        last: String,
    },
    #[error(
        "{name} has had no new leader for {secs} s since it restarted (the lease is {}): its controllers (the EndpointSlices', the disruption budgets') are not running, and pods moved now would stay in Services' endpoints",
        .holder.as_deref().map(|h| format!("still {h}'s")).unwrap_or_else(|| "not held".into())
    )]
    NoLeader {
        name: String,
        secs: u64,
        holder: Option<String>,
    },
}

/// A pod as a drain sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The kind of its controller (`ReplicaSet`, `DaemonSet`), if it has one.
    pub controller: Option<String>,
    /// A static pod's mirror: the kubelet runs it from a file; the API cannot evict it.
    pub mirror: bool,
    /// It has finished (Succeeded or Failed): nothing runs to disturb.
    pub finished: bool,
}

impl Pod {
    /// `namespace/name`, as kubectl prints it.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Still running and nothing would recreate it: a drain refuses it, or with `--force`
    /// deletes it instead of evicting it.
    pub fn unmanaged(&self) -> bool {
        !self.stays() && self.controller.is_none() && !self.finished
    }

    /// A drain leaves DaemonSet pods (the DaemonSet would put them back at once, and the
    /// node's networking and logging run as them) and mirror pods alone.
    pub fn stays(&self) -> bool {
        self.mirror || self.controller.as_deref() == Some("DaemonSet")
    }
}

/// How a drain goes.
#[derive(Debug, Clone, Copy)]
pub struct DrainOptions {
    /// How long evictions may be refused (by a PodDisruptionBudget) and pods take to go.
    pub timeout: Duration,
    /// Pods no controller manages, and pods a budget keeps at the deadline, are deleted
    /// instead of refusing the drain.
    pub force: bool,
    /// Between refused evictions.
    pub retry: Duration,
}

impl Default for DrainOptions {
    fn default() -> Self {
        DrainOptions {
            timeout: Duration::from_secs(180),
            force: false,
            retry: Duration::from_secs(1),
        }
    }
}

/// What a drain did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Drained {
    /// Evicted through the Eviction API (budgets respected).
    pub evicted: Vec<String>,
    /// Deleted without asking a budget (`--force`).
    pub deleted: Vec<String>,
    /// Left on the node: DaemonSet and mirror pods.
    pub left: Vec<String>,
}

/// What a restart of the cluster's workloads did (`kubectl rollout restart`, everywhere).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Restarted {
    /// `Kind namespace/name` of each Deployment, DaemonSet and StatefulSet restarted and rolled
    /// out.
    pub workloads: Vec<String>,
    /// Running pods no controller manages: nothing restarts them, so they keep what they read
    /// when they started until someone recreates them.
    pub unmanaged: Vec<String>,
}

/// The workloads whose pods a restart replaces: (resource, kind).
const WORKLOADS: &[(&str, &str)] = &[
    ("deployments", "Deployment"),
    ("daemonsets", "DaemonSet"),
    ("statefulsets", "StatefulSet"),
];

/// The annotation `kubectl rollout restart` sets on a pod template: a new value is a new
/// template, so the controller replaces every pod in its own rolling way.
const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// The API as the admin, at one address.
pub struct Api<'a> {
    probe: &'a dyn Probe,
    address: IpAddr,
    port: u16,
}

impl<'a> Api<'a> {
    pub fn new(probe: &'a dyn Probe, (address, port): (IpAddr, u16)) -> Api<'a> {
        Api {
            probe,
            address,
            port,
        }
    }

    async fn call(&self, what: &str, request: ApiRequest<'_>) -> Result<(u16, String), KubeError> {
        self.probe
            .api_request(self.address, self.port, request)
            .await
            .map_err(|error| KubeError::Unreachable {
                endpoint: format!("{}:{}", self.address, self.port),
                what: what.to_string(),
                error,
            })
    }

    /// A request that must succeed (2xx); its body as JSON.
    async fn ok(
        &self,
        what: &str,
        request: ApiRequest<'_>,
    ) -> Result<serde_json::Value, KubeError> {
        let (code, body) = self.call(what, request).await?;
        if !(200..300).contains(&code) {
            return Err(status(what, code, &body));
        }
        Ok(serde_json::from_str(&body).unwrap_or_default())
    }

    /// A request about an object that may not exist: its answer's body on 2xx, none on 404.
    async fn found(
        &self,
        what: &str,
        request: ApiRequest<'_>,
    ) -> Result<Option<String>, KubeError> {
        match self.call(what, request).await? {
            (200..=299, body) => Ok(Some(body)),
            (404, _) => Ok(None),
            (code, body) => Err(status(what, code, &body)),
        }
    }

    /// The Node object, or None when the cluster has no such node.
    pub async fn node(&self, node: &str) -> Result<Option<serde_json::Value>, KubeError> {
        let path = format!("/api/v1/nodes/{node}");
        let body = self
            .found(&format!("GET {path}"), ApiRequest::get(&path))
            .await?;
        Ok(body.map(|b| serde_json::from_str(&b).unwrap_or_default()))
    }

    /// Marks the node (un)schedulable; whether that changed anything.
    pub async fn cordon(&self, node: &str, unschedulable: bool) -> Result<bool, KubeError> {
        let Some(n) = self.node(node).await? else {
            return Ok(false);
        };
        if n["spec"]["unschedulable"].as_bool().unwrap_or(false) == unschedulable {
            return Ok(false);
        }
        let path = format!("/api/v1/nodes/{node}");
        let body = serde_json::json!({"spec": {"unschedulable": unschedulable}}).to_string();
        let what = format!(
            "{} {node}",
            if unschedulable { "cordon" } else { "uncordon" }
        );
        self.ok(
            &what,
            ApiRequest {
                method: "PATCH",
                path: &path,
                body: Some(("application/strategic-merge-patch+json", &body)),
            },
        )
        .await?;
        Ok(true)
    }

    /// The pods bound to `node`.
    pub async fn pods_on(&self, node: &str) -> Result<Vec<Pod>, KubeError> {
        let path = format!("/api/v1/pods?fieldSelector=spec.nodeName%3D{node}");
        let list = self
            .ok(&format!("list the pods on {node}"), ApiRequest::get(&path))
            .await?;
        Ok(items(&list).map(pod).collect())
    }

    /// What a drain of `node` would evict (and, with `force`, delete) and leave, without
    /// changing anything: the dry run's list.
    pub async fn drain_plan(&self, node: &str, force: bool) -> Result<Drained, KubeError> {
        let pods = self.pods_on(node).await?;
        let mut plan = Drained::default();
        for p in pods {
            if p.stays() {
                plan.left.push(p.id());
            } else if p.unmanaged() {
                plan.deleted.push(p.id());
            } else {
                plan.evicted.push(p.id());
            }
        }
        if !force && !plan.deleted.is_empty() {
            return Err(KubeError::Unmanaged {
                node: node.to_string(),
                pods: plan.deleted,
            });
        }
        Ok(plan)
    }

    /// Cordons `node` and empties it: every pod but DaemonSet and mirror pods evicted (a
    /// budget's refusal retried until `opts.timeout`), then waits until they are gone. Pods no
    /// controller manages are refused, all of them named, before anything is evicted, unless
    /// `opts.force`. The node stays cordoned, also on error: the caller uncordons.
    pub async fn drain(&self, node: &str, opts: &DrainOptions) -> Result<Drained, KubeError> {
        let deadline = Instant::now() + opts.timeout;
        let pods = self.pods_on(node).await?;
        let unmanaged: Vec<String> = pods.iter().filter(|p| p.unmanaged()).map(Pod::id).collect();
        if !unmanaged.is_empty() && !opts.force {
            return Err(KubeError::Unmanaged {
                node: node.to_string(),
                pods: unmanaged,
            });
        }
        self.cordon(node, true).await?;
        let mut out = Drained::default();
        let (stay, mut go): (Vec<Pod>, Vec<Pod>) = pods.into_iter().partition(Pod::stays);
        out.left = stay.iter().map(Pod::id).collect();
        let mut gone: Vec<Pod> = Vec::new();
        let mut reason = None;
        // Each round asks for every pod still here; a budget that refuses one now may allow it
        // once a replacement elsewhere is Ready.
        while !go.is_empty() {
            let mut refused = Vec::new();
            for p in go {
                if opts.force && p.unmanaged() {
                    self.delete_pod(&p).await?;
                    out.deleted.push(p.id());
                    gone.push(p);
                    continue;
                }
                match self.evict(&p).await? {
                    Eviction::Done => {
                        out.evicted.push(p.id());
                        gone.push(p);
                    }
                    Eviction::Refused(why) => {
                        reason = Some(why);
                        refused.push(p);
                    }
                }
            }
            go = refused;
            if go.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                if !opts.force {
                    return Err(KubeError::Blocked {
                        node: node.to_string(),
                        secs: opts.timeout.as_secs(),
                        pods: go.iter().map(Pod::id).collect(),
                        reason,
                    });
                }
                for p in go.drain(..) {
                    self.delete_pod(&p).await?;
                    out.deleted.push(p.id());
                    gone.push(p);
                }
                break;
            }
            tokio::time::sleep(opts.retry).await;
        }
        // An evicted pod terminates gracefully; the node is empty when none is left.
        loop {
            let here: Vec<String> = self
                .pods_on(node)
                .await?
                .into_iter()
                .filter(|p| gone.iter().any(|g| g.uid == p.uid))
                .map(|p| p.id())
                .collect();
            if here.is_empty() {
                return Ok(out);
            }
            if Instant::now() >= deadline {
                return Err(KubeError::NotGone {
                    node: node.to_string(),
                    secs: opts.timeout.as_secs(),
                    pods: here,
                });
            }
            tokio::time::sleep(opts.retry).await;
        }
    }

    async fn evict(&self, p: &Pod) -> Result<Eviction, KubeError> {
        let path = format!(
            "/api/v1/namespaces/{}/pods/{}/eviction",
            p.namespace, p.name
        );
        let body = serde_json::json!({
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": p.name, "namespace": p.namespace},
        })
        .to_string();
        let what = format!("evict {}", p.id());
        let (code, text) = self
            .call(
                &what,
                ApiRequest {
                    method: "POST",
                    path: &path,
                    body: Some(("application/json", &body)),
                },
            )
            .await?;
        match code {
            200..=299 | 404 => Ok(Eviction::Done),
            // 429: a budget allows no disruption now (the API server's words say which).
            429 => Ok(Eviction::Refused(message(&text))),
            _ => Err(status(&what, code, &text)),
        }
    }

    async fn delete_pod(&self, p: &Pod) -> Result<(), KubeError> {
        let path = format!("/api/v1/namespaces/{}/pods/{}", p.namespace, p.name);
        // Gone already is as good.
        self.found(&format!("delete {}", p.id()), delete(&path))
            .await
            .map(|_| ())
    }

    /// Who holds the leader-election lease `kube-system/<name>` (`kube-controller-manager`),
    /// if anyone does.
    pub async fn lease_holder(&self, name: &str) -> Result<Option<String>, KubeError> {
        let path = format!("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{name}");
        let body = self
            .found(&format!("GET {path}"), ApiRequest::get(&path))
            .await?;
        Ok(body
            .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
            .and_then(|v| v["spec"]["holderIdentity"].as_str().map(str::to_string))
            .filter(|h| !h.is_empty()))
    }

    /// Polls until lease `name` is held by another identity than `before`: a restarted
    /// component's new process leads (each process has an identity of its own).
    pub async fn wait_new_leader(
        &self,
        name: &str,
        before: Option<&str>,
        timeout: Duration,
    ) -> Result<(), KubeError> {
        let deadline = Instant::now() + timeout;
        loop {
            let holder = self.lease_holder(name).await.ok().flatten();
            if holder.is_some() && holder.as_deref() != before {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(KubeError::NoLeader {
                    name: name.to_string(),
                    secs: timeout.as_secs(),
                    holder,
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Proves that the EndpointSlice controller works (its caches synced, its leader running):
    /// a headless Service that selects nothing, made in kube-system, gets its EndpointSlice
    /// within `timeout`; the Service is deleted again either way. A pod moved before that
    /// would stay in its Services' endpoints after it stopped.
    pub async fn endpoint_slices_follow(&self, timeout: Duration) -> Result<(), KubeError> {
        let name = format!("hardway-canary-{}", crate::events::stamp().to_lowercase());
        let body = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "hardway"}},
            "spec": {"clusterIP": "None", "selector": {"hardway.io/canary": name}, "ports": [{"port": 1}]},
        })
        .to_string();
        self.ok(
            &format!("create Service kube-system/{name}"),
            ApiRequest {
                method: "POST",
                path: "/api/v1/namespaces/kube-system/services",
                body: Some(("application/json", &body)),
            },
        )
        .await?;
        let slices = format!(
            "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3D{name}"
        );
        let deadline = Instant::now() + timeout;
        let found = loop {
            let listed = self
                .ok("list the canary's EndpointSlices", ApiRequest::get(&slices))
                .await;
            if listed
                .as_ref()
                .is_ok_and(|l| l["items"].as_array().is_some_and(|i| !i.is_empty()))
            {
                break Ok(());
            }
            if Instant::now() >= deadline {
                break Err(KubeError::Status {
                    what: format!("the EndpointSlice of a new Service (kube-system/{name})"),
                    code: 0,
                    message: format!(
                        "none within {} s: the controller-manager's EndpointSlice controller is not working yet",
                        timeout.as_secs()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let path = format!("/api/v1/namespaces/kube-system/services/{name}");
        let _ = self.call("delete the canary Service", delete(&path)).await;
        found
    }

    /// Polls until every namespace's `kube-root-ca.crt` ConfigMap — what the
    /// controller-manager publishes from its `--root-ca-file`, and every pod reads as its
    /// service account's `ca.crt` — holds each certificate of `certs` (PEM blocks): how many
    /// namespaces there are.
    pub async fn root_ca_published(
        &self,
        certs: &[String],
        timeout: Duration,
    ) -> Result<usize, KubeError> {
        let want: Vec<String> = certs.iter().map(|c| squeeze(c)).collect();
        let deadline = Instant::now() + timeout;
        loop {
            let lacking = match self.root_ca_lacking(&want).await {
                Ok((n, lacking)) if lacking.is_empty() && n > 0 => return Ok(n),
                Ok((_, lacking)) => lacking,
                Err(e) => vec![e.to_string()],
            };
            if Instant::now() >= deadline {
                return Err(KubeError::NotPublished {
                    secs: timeout.as_secs(),
                    namespaces: lacking,
                });
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// How many namespaces there are, and those whose kube-root-ca.crt lacks one of `want`
    /// (squeezed PEM blocks) or is not there yet.
    async fn root_ca_lacking(&self, want: &[String]) -> Result<(usize, Vec<String>), KubeError> {
        let namespaces = self
            .ok("list the namespaces", ApiRequest::get("/api/v1/namespaces"))
            .await?;
        let maps = self
            .ok(
                "list the kube-root-ca.crt ConfigMaps",
                ApiRequest::get(
                    "/api/v1/configmaps?fieldSelector=metadata.name%3Dkube-root-ca.crt",
                ),
            )
            .await?;
        let held: std::collections::BTreeMap<&str, Vec<String>> = items(&maps)
            .map(|m| {
                let pem = m["data"]["ca.crt"].as_str().unwrap_or("");
                (
                    m["metadata"]["namespace"].as_str().unwrap_or(""),
                    crate::pki::pem_certificates(pem)
                        .iter()
                        .map(|c| squeeze(c))
                        .collect(),
                )
            })
            .collect();
        let names: Vec<&str> = items(&namespaces)
            .filter(|n| n["status"]["phase"] != "Terminating")
            .filter_map(|n| n["metadata"]["name"].as_str())
            .collect();
        let lacking = names
            .iter()
            .filter(|ns| {
                held.get(*ns)
                    .is_none_or(|certs| want.iter().any(|w| !certs.contains(w)))
            })
            .map(|ns| ns.to_string())
            .collect();
        Ok((names.len(), lacking))
    }

    /// `kubectl rollout restart` of every Deployment, DaemonSet and StatefulSet in every
    /// namespace, then polls until each has rolled out (its new pods available, none of the old
    /// left) — the way kubernetes.io's manual CA rotation has pods take up a new `ca.crt`,
    /// which most clients read only when they start. Pods no controller manages are named, not
    /// touched.
    pub async fn restart_workloads(&self, timeout: Duration) -> Result<Restarted, KubeError> {
        let deadline = Instant::now() + timeout;
        let at = crate::events::now_rfc3339();
        let patch = serde_json::json!({
            "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: at}}}}
        })
        .to_string();
        let mut out = Restarted::default();
        // (kind, namespace/name, the object's path) of each workload restarted.
        let mut pending: Vec<(&str, String, String)> = Vec::new();
        for (resource, kind) in WORKLOADS {
            let list = self
                .ok(
                    &format!("list the {resource}"),
                    ApiRequest::get(&format!("/apis/apps/v1/{resource}")),
                )
                .await?;
            for w in items(&list) {
                let ns = w["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                let name = w["metadata"]["name"].as_str().unwrap_or("").to_string();
                let path = format!("/apis/apps/v1/namespaces/{ns}/{resource}/{name}");
                self.ok(
                    &format!("restart {kind} {ns}/{name}"),
                    ApiRequest {
                        method: "PATCH",
                        path: &path,
                        body: Some(("application/strategic-merge-patch+json", &patch)),
                    },
                )
                .await?;
                pending.push((kind, format!("{ns}/{name}"), path));
            }
        }
        while !pending.is_empty() {
            let mut still = Vec::new();
            let mut why = Vec::new();
            for (kind, id, path) in pending {
                let w = self
                    .found(&format!("GET {path}"), ApiRequest::get(&path))
                    .await?
                    .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok());
                match w.as_ref().map(|w| rolled_out(kind, w)) {
                    // Deleted meanwhile: nothing left to roll out.
                    None => {}
                    Some(Ok(())) => out.workloads.push(format!("{kind} {id}")),
                    Some(Err(left)) => {
                        why.push(format!("{kind} {id}: {left}"));
                        still.push((kind, id, path));
                    }
                }
            }
            pending = still;
            if pending.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(KubeError::NotRolledOut {
                    secs: timeout.as_secs(),
                    workloads: why,
                });
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        out.workloads.sort();
        let pods = self
            .ok("list the pods", ApiRequest::get("/api/v1/pods"))
            .await?;
        out.unmanaged = items(&pods)
            .map(pod)
            .filter(Pod::unmanaged)
            .map(|p| p.id())
            .collect();
        Ok(out)
    }

    /// Deletes the Node object; whether there was one.
    pub async fn delete_node(&self, node: &str) -> Result<bool, KubeError> {
        let path = format!("/api/v1/nodes/{node}");
        let gone = self
            .found(&format!("delete node {node}"), delete(&path))
            .await?;
        Ok(gone.is_some())
    }

    /// Polls until the node's Ready condition is True and, when `version` is given, its
    /// kubelet reports it (a restarted kubelet has posted its status since).
    pub async fn wait_ready(
        &self,
        node: &str,
        version: Option<&str>,
        timeout: Duration,
    ) -> Result<(), KubeError> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.node(node).await {
                Ok(Some(n)) => {
                    let ready = n["status"]["conditions"]
                        .as_array()
                        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                        .map(|c| c["status"].as_str().unwrap_or("").to_string())
                        .unwrap_or_default();
                    let at = n["status"]["nodeInfo"]["kubeletVersion"]
                        .as_str()
                        .unwrap_or("")
                        .to_string();
                    if ready == "True" && version.is_none_or(|v| v == at) {
                        return Ok(());
                    }
                    format!("Ready={ready:?}, kubelet {at:?}")
                }
                Ok(None) => "no such Node object".to_string(),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(KubeError::NotReady {
                    node: node.to_string(),
                    secs: timeout.as_secs(),
                    last,
                });
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

enum Eviction {
    Done,
    Refused(String),
}

fn delete(path: &str) -> ApiRequest<'_> {
    ApiRequest {
        method: "DELETE",
        path,
        body: None,
    }
}

/// A list's items.
fn items(list: &serde_json::Value) -> impl Iterator<Item = &serde_json::Value> {
    list["items"].as_array().into_iter().flatten()
}

/// A PEM block without its whitespace: the same certificate however it was wrapped.
fn squeeze(pem: &str) -> String {
    pem.split_whitespace().collect()
}

/// Whether a restarted workload has rolled out, as `kubectl rollout status` judges it; if not,
/// what it still waits for.
fn rolled_out(kind: &str, w: &serde_json::Value) -> Result<(), String> {
    let n = |v: &serde_json::Value| v.as_i64().unwrap_or(0);
    let (spec, st) = (&w["spec"], &w["status"]);
    if n(&st["observedGeneration"]) < n(&w["metadata"]["generation"]) {
        return Err("the controller has not seen the restart yet".into());
    }
    let (want, updated, available, total) = match kind {
        "DaemonSet" => (
            n(&st["desiredNumberScheduled"]),
            n(&st["updatedNumberScheduled"]),
            n(&st["numberAvailable"]),
            n(&st["currentNumberScheduled"]),
        ),
        "StatefulSet" => (
            spec["replicas"].as_i64().unwrap_or(1),
            n(&st["updatedReplicas"]),
            n(&st["readyReplicas"]),
            n(&st["replicas"]),
        ),
        _ => (
            spec["replicas"].as_i64().unwrap_or(1),
            n(&st["updatedReplicas"]),
            n(&st["availableReplicas"]),
            n(&st["replicas"]),
        ),
    };
    if kind == "StatefulSet" && st["updateRevision"] != st["currentRevision"] {
        return Err(format!("{updated} of {want} pods at the new revision"));
    }
    if updated < want || available < want || total > want {
        return Err(format!(
            "{updated} of {want} pods new, {available} available, {total} in all"
        ));
    }
    Ok(())
}

/// A pod from the API's JSON.
fn pod(v: &serde_json::Value) -> Pod {
    let s = |x: &serde_json::Value| x.as_str().unwrap_or("").to_string();
    let controller = v["metadata"]["ownerReferences"]
        .as_array()
        .and_then(|refs| refs.iter().find(|r| r["controller"] == true))
        .map(|r| s(&r["kind"]));
    Pod {
        namespace: s(&v["metadata"]["namespace"]),
        name: s(&v["metadata"]["name"]),
        uid: s(&v["metadata"]["uid"]),
        controller,
        mirror: v["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string(),
        finished: matches!(v["status"]["phase"].as_str(), Some("Succeeded" | "Failed")),
    }
}

/// A Status object's message, or the body as it came.
fn message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string())
}

fn status(what: &str, code: u16, body: &str) -> KubeError {
    KubeError::Status {
        what: what.to_string(),
        code,
        message: message(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::Phase;
    use crate::remote::fake::FakePod;
    use crate::testing::block_on;

    fn opts(force: bool) -> DrainOptions {
        DrainOptions {
            timeout: Duration::from_millis(300),
            force,
            retry: Duration::from_millis(20),
        }
    }

    /// A deployed fixture (w1 Ready) with pods on w1.
    fn cluster(pods: Vec<FakePod>) -> crate::testing::Fixture {
        let f = crate::day2::tests::deployed(&[
            Phase::Etcd,
            Phase::Lb,
            Phase::ControlPlane,
            Phase::Workers,
        ]);
        f.fake.kube.lock().unwrap().pods = pods;
        f.fake.clear_events();
        f
    }

    fn api_events(f: &crate::testing::Fixture) -> Vec<String> {
        f.fake
            .events()
            .into_iter()
            .filter(|e| e.node == "api")
            .map(|e| e.what)
            .collect()
    }

    #[test]
    fn a_drain_cordons_evicts_all_but_daemonset_pods_and_waits_out_a_budget() {
        let mut web = FakePod::new("w1", "web-1", Some("ReplicaSet"));
        web.refusals = 3;
        let f = cluster(vec![
            web,
            FakePod::new("w1", "dns-1", Some("ReplicaSet")),
            FakePod::new("w1", "proxy-1", Some("DaemonSet")),
        ]);
        let api = Api::new(f.fake.as_ref(), f.inv.api_endpoint());
        let plan = block_on(api.drain_plan("w1", false)).unwrap();
        assert_eq!(plan.evicted, ["default/web-1", "default/dns-1"]);
        assert!(api_events(&f).is_empty(), "a plan changes nothing");
        let d = block_on(api.drain("w1", &opts(false))).unwrap();
        assert_eq!(d.evicted, ["default/dns-1", "default/web-1"], "{d:?}");
        assert_eq!(d.left, ["default/proxy-1"]);
        assert!(d.deleted.is_empty());
        assert_eq!(
            api_events(&f),
            ["cordon w1", "evict default/dns-1", "evict default/web-1"]
        );
        assert!(f.fake.kube.lock().unwrap().cordoned.contains("w1"));
        // Twice is safe: nothing left to evict, already cordoned.
        let again = block_on(api.drain("w1", &opts(false))).unwrap();
        assert!(again.evicted.is_empty());
        assert!(block_on(api.cordon("w1", false)).unwrap());
        assert!(!block_on(api.cordon("w1", false)).unwrap());
        assert_eq!(api_events(&f).last().unwrap(), "uncordon w1");
    }

    #[test]
    fn a_bare_pod_refuses_the_drain_before_anything_changes_unless_forced() {
        let f = cluster(vec![
            FakePod::new("w1", "web-1", Some("ReplicaSet")),
            FakePod::new("w1", "debug", None),
        ]);
        let api = Api::new(f.fake.as_ref(), f.inv.api_endpoint());
        let e = block_on(api.drain("w1", &opts(false))).unwrap_err();
        assert!(matches!(&e, KubeError::Unmanaged { pods, .. } if pods == &["default/debug"]));
        assert!(e.to_string().contains("--force deletes it"), "{e}");
        assert!(api_events(&f).is_empty(), "refused before cordoning");
        assert!(matches!(
            block_on(api.drain_plan("w1", false)),
            Err(KubeError::Unmanaged { .. })
        ));
        let d = block_on(api.drain("w1", &opts(true))).unwrap();
        assert_eq!(
            (d.evicted, d.deleted),
            (
                vec!["default/web-1".to_string()],
                vec!["default/debug".to_string()]
            )
        );
    }

    #[test]
    fn a_budget_that_never_allows_names_the_pod_and_force_deletes_it() {
        let mut web = FakePod::new("w1", "web-1", Some("ReplicaSet"));
        web.refusals = usize::MAX;
        let f = cluster(vec![web]);
        let api = Api::new(f.fake.as_ref(), f.inv.api_endpoint());
        let e = block_on(api.drain("w1", &opts(false))).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, KubeError::Blocked { .. }), "{text}");
        assert!(
            text.contains("default/web-1") && text.contains("disruption budget"),
            "{text}"
        );
        assert_eq!(f.fake.kube.lock().unwrap().pods.len(), 1, "nothing evicted");
        let d = block_on(api.drain("w1", &opts(true))).unwrap();
        assert_eq!(d.deleted, ["default/web-1"]);
        assert_eq!(api_events(&f).last().unwrap(), "delete pod default/web-1");
    }

    #[test]
    fn a_new_leader_is_one_with_another_identity() {
        let f = cluster(vec![]);
        let api = Api::new(f.fake.as_ref(), f.inv.api_endpoint());
        let lease = "kube-controller-manager";
        let before = block_on(api.lease_holder(lease)).unwrap();
        assert!(before.is_some());
        let quick = Duration::from_millis(100);
        let e = block_on(api.wait_new_leader(lease, before.as_deref(), quick)).unwrap_err();
        assert!(
            e.to_string().contains("no new leader") && e.to_string().contains("still"),
            "{e}"
        );
        // Restarted everywhere: a new process, a new identity, leads.
        for m in ["m1", "m2", "m3"] {
            f.fake.node(m).units.get_mut(lease).unwrap().restarts += 1;
        }
        block_on(api.wait_new_leader(lease, before.as_deref(), quick)).unwrap();
        // Working, not only leading: a canary Service gets its EndpointSlice, and goes.
        f.fake.clear_events();
        block_on(api.endpoint_slices_follow(quick)).unwrap();
        assert_eq!(api_events(&f), ["create service", "delete service"]);
    }

    #[test]
    fn ready_waits_for_the_kubelet_and_a_deleted_node_is_gone() {
        let f = cluster(vec![]);
        let api = Api::new(f.fake.as_ref(), f.inv.api_endpoint());
        block_on(api.wait_ready("w1", None, Duration::from_secs(2))).unwrap();
        f.fake.node("w1").units.get_mut("kubelet").unwrap().active = false;
        let e = block_on(api.wait_ready("w1", None, Duration::from_millis(100))).unwrap_err();
        assert!(matches!(e, KubeError::NotReady { .. }), "{e}");
        f.fake.node("w1").units.get_mut("kubelet").unwrap().active = true;
        assert!(block_on(api.delete_node("w1")).unwrap());
        assert!(!block_on(api.delete_node("w1")).unwrap());
        assert!(block_on(api.node("w1")).unwrap().is_none());
    }
}
