//! In-memory nodes for tests: [`FakeCluster`] is a [`Connector`] and a
//! [`Probe`](crate::probe::Probe) whose nodes keep files, units, listeners and a clock in
//! memory, so deploy's phase runner, preflight and verify run against it in milliseconds,
//! without root or SSH.
//!
//! It models what those stages rely on, no more: a unit is loaded when its unit file exists,
//! starts unless the test marks it failing, and etcd members and API servers answer the probe
//! while their units are active (etcd elects a leader while a majority is up). Every operation
//! that changes a node is appended to one log shared by all nodes, so tests can assert the
//! order of a rolling restart across hosts.
//!
//! Here: the nodes' state and the cluster; `remote` is what each [`Remote`] operation does to a
//! node, `probe` is how etcd and the API servers answer.

mod probe;
mod remote;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use super::ssh::SshError;
use super::{Connector, Remote, RemoteError};
use crate::components::{COMPONENTS, ComponentId};
use crate::inventory::{Inventory, Node, Role};
use crate::probe::EtcdMember;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeFile {
    pub contents: Vec<u8>,
    pub mode: u32,
    pub owner: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeUnit {
    pub enabled: bool,
    pub active: bool,
    /// Times it was started from inactive, and restarted.
    pub starts: u32,
    pub restarts: u32,
    /// How many more times it is still "reloading" when asked (a unit that notifies systemd
    /// of its reloads, as HAProxy does, a moment after systemctl returned).
    pub settling: u32,
}

/// One node's state.
#[derive(Debug, Clone)]
pub struct NodeState {
    pub name: String,
    pub address: IpAddr,
    /// When false, connecting fails as an unreachable host does.
    pub reachable: bool,
    pub systemd: bool,
    pub clock_offset: f64,
    pub swap_active: bool,
    pub openssl: bool,
    pub binaries: BTreeSet<String>,
    /// Tools on the node's PATH (by name).
    pub tools: BTreeSet<String>,
    /// What each binary prints for its version argument.
    pub versions: BTreeMap<String, String>,
    pub cgroup2: bool,
    pub br_netfilter: bool,
    pub listeners: Vec<super::Listener>,
    pub files: BTreeMap<String, FakeFile>,
    pub units: BTreeMap<String, FakeUnit>,
    /// Units that fail whenever they are started.
    pub failing: BTreeSet<String>,
    /// When set, every systemctl call fails with this message (as when systemd's bus is gone).
    pub systemctl_error: Option<String>,
    /// Canned answers of Unix sockets, by path.
    pub sockets: BTreeMap<String, String>,
    /// Objects `apply` waits for that never become ready (`deployment/coredns`).
    pub unready: BTreeSet<String>,
    /// How many Secrets the API server on this node would rewrite.
    pub secrets: usize,
    /// Manifests kubectl applied on this node: applied again, they are unchanged.
    pub applied: BTreeSet<String>,
    /// Directories that exist (data dirs), besides the files' parents.
    pub dirs: BTreeSet<String>,
    /// What `install_files` placed, for reset.
    pub placed: BTreeSet<String>,
    /// When set, restoring an etcd snapshot fails with this message.
    pub restore_error: Option<String>,
    /// Node conditions its kubelet reports true besides Ready (`DiskPressure`).
    pub pressure: Vec<&'static str>,
    /// What apt would install, by package (Debian's version strings); installing one puts its
    /// tools in /usr/bin, reporting that version.
    pub apt_candidates: BTreeMap<String, String>,
}

impl NodeState {
    pub fn unit_active(&self, unit: &str) -> bool {
        self.reachable && self.units.get(unit).is_some_and(|u| u.active)
    }

    fn unit_loaded(&self, unit: &str) -> bool {
        self.files
            .contains_key(&format!("/etc/systemd/system/{unit}.service"))
    }
}

/// Something a node did, in the order it happened across all nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub node: String,
    pub what: String,
}

/// A whole cluster's nodes, made from an inventory: every node reachable, running systemd, with
/// the binaries its components need, and nothing deployed.
#[derive(Clone)]
pub struct FakeCluster {
    nodes: BTreeMap<String, Arc<Mutex<NodeState>>>,
    log: Arc<Mutex<Vec<Event>>>,
    membership: Arc<Mutex<Vec<EtcdMember>>>,
    /// How many `member add`s etcd still refuses with "unhealthy cluster", as it does for its
    /// health interval after a member (re)started.
    pub unhealthy_adds: Arc<std::sync::atomic::AtomicUsize>,
    /// The member a MoveLeader handed leadership to, while it is an active voter.
    moved_leader: Arc<Mutex<Option<u64>>>,
    /// The API's objects a drain works on: pods, cordons, deleted nodes.
    pub kube: Arc<Mutex<FakeKube>>,
}

/// A pod on the fake cluster.
#[derive(Debug, Clone)]
pub struct FakePod {
    pub namespace: String,
    pub name: String,
    pub node: String,
    /// Its controller's kind (`ReplicaSet`, `DaemonSet`), or none for a bare pod.
    pub controller: Option<&'static str>,
    /// How many evictions a PodDisruptionBudget still refuses (429) before allowing one.
    pub refusals: usize,
}

impl FakePod {
    pub fn new(node: &str, name: &str, controller: Option<&'static str>) -> FakePod {
        FakePod {
            namespace: "default".into(),
            name: name.into(),
            node: node.into(),
            controller,
            refusals: 0,
        }
    }
}

/// A Deployment, DaemonSet or StatefulSet on the fake cluster: rolled out at once whenever
/// it is restarted.
#[derive(Debug, Clone)]
pub struct FakeWorkload {
    pub namespace: String,
    pub name: String,
    /// `Deployment`, `DaemonSet`, `StatefulSet`.
    pub kind: &'static str,
    /// How many times its pod template changed (`kubectl rollout restart`).
    pub restarts: usize,
}

impl FakeWorkload {
    pub fn new(namespace: &str, name: &str, kind: &'static str) -> FakeWorkload {
        FakeWorkload {
            namespace: namespace.into(),
            name: name.into(),
            kind,
            restarts: 0,
        }
    }

    /// The object as the API returns it.
    pub(crate) fn json(&self) -> serde_json::Value {
        let generation = self.restarts + 1;
        let status = match self.kind {
            "DaemonSet" => serde_json::json!({"observedGeneration": generation,
                "desiredNumberScheduled": 2, "updatedNumberScheduled": 2, "numberAvailable": 2,
                "currentNumberScheduled": 2}),
            _ => serde_json::json!({"observedGeneration": generation, "replicas": 1,
                "updatedReplicas": 1, "availableReplicas": 1, "readyReplicas": 1,
                "currentRevision": "r", "updateRevision": "r"}),
        };
        serde_json::json!({
            "metadata": {"namespace": self.namespace, "name": self.name, "generation": generation},
            "spec": {"replicas": 1},
            "status": status,
        })
    }
}

/// What the fake API server holds besides what the nodes report.
#[derive(Debug, Default)]
pub struct FakeKube {
    pub pods: Vec<FakePod>,
    pub workloads: Vec<FakeWorkload>,
    pub cordoned: BTreeSet<String>,
    pub deleted_nodes: BTreeSet<String>,
}

impl FakeCluster {
    pub fn new(inv: &Inventory) -> FakeCluster {
        let mut c = FakeCluster {
            nodes: BTreeMap::new(),
            log: Arc::new(Mutex::new(Vec::new())),
            membership: Arc::new(Mutex::new(Vec::new())),
            unhealthy_adds: Arc::default(),
            moved_leader: Arc::default(),
            kube: Arc::default(),
        };
        c.add_nodes(inv);
        c
    }

    /// Adds the inventory's nodes that are not there yet (a cluster that grows).
    pub fn add_nodes(&mut self, inv: &Inventory) {
        let new: Vec<&Node> = inv
            .nodes
            .iter()
            .filter(|n| !self.nodes.contains_key(&n.name))
            .collect();
        for n in new {
            // kubectl on every master: any may become the first (a removal), which uses it.
            let binaries = COMPONENTS
                .iter()
                .filter(|c| {
                    c.runs_on(inv, n) || (c.id == ComponentId::Kubectl && n.has(Role::Master))
                })
                .map(|c| c.binary_path(inv))
                .collect();
            let tools = COMPONENTS
                .iter()
                .filter(|c| c.runs_on(inv, n))
                .flat_map(|c| c.needs.iter().map(|need| need.tool.to_string()))
                .collect();
            let state = NodeState {
                name: n.name.clone(),
                address: n.address,
                reachable: true,
                systemd: true,
                clock_offset: 0.0,
                swap_active: false,
                openssl: true,
                binaries,
                tools,
                versions: BTreeMap::new(),
                cgroup2: true,
                br_netfilter: true,
                listeners: vec![],
                files: BTreeMap::new(),
                units: BTreeMap::new(),
                failing: BTreeSet::new(),
                systemctl_error: None,
                sockets: BTreeMap::new(),
                unready: BTreeSet::new(),
                pressure: Vec::new(),
                apt_candidates: BTreeMap::new(),
                secrets: 3,
                applied: BTreeSet::new(),
                dirs: BTreeSet::new(),
                placed: BTreeSet::new(),
                restore_error: None,
            };
            self.nodes
                .insert(n.name.clone(), Arc::new(Mutex::new(state)));
        }
    }

    /// The etcd member list, as etcd would give it.
    pub fn members(&self) -> Vec<EtcdMember> {
        self.membership.lock().expect("not poisoned").clone()
    }

    /// A node's state, to inspect or change.
    pub fn node(&self, name: &str) -> MutexGuard<'_, NodeState> {
        self.nodes
            .get(name)
            .unwrap_or_else(|| panic!("no fake node {name}"))
            .lock()
            .expect("not poisoned")
    }

    /// Everything every node did, in order.
    pub fn events(&self) -> Vec<Event> {
        self.log.lock().expect("not poisoned").clone()
    }

    /// The events whose text starts with `prefix`, as `node: what`.
    pub fn events_like(&self, prefix: &str) -> Vec<String> {
        self.events()
            .into_iter()
            .filter(|e| e.what.starts_with(prefix))
            .map(|e| format!("{}: {}", e.node, e.what))
            .collect()
    }

    pub fn clear_events(&self) {
        self.log.lock().expect("not poisoned").clear();
    }

    fn by_address(&self, address: IpAddr) -> Option<MutexGuard<'_, NodeState>> {
        self.nodes
            .values()
            .map(|n| n.lock().expect("not poisoned"))
            .find(|n| n.address == address)
    }

    fn member_id(name: &str) -> u64 {
        name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    /// The leader the active voting members agree on: the first of them, while a majority of
    /// the voting members is active.
    fn etcd_leader(&self) -> Option<u64> {
        let voters: Vec<EtcdMember> = self
            .members()
            .into_iter()
            .filter(|m| !m.learner && !m.name.is_empty())
            .collect();
        let active: Vec<&EtcdMember> = voters
            .iter()
            .filter(|m| {
                self.nodes
                    .get(&m.name)
                    .is_some_and(|n| n.lock().expect("not poisoned").unit_active("etcd"))
            })
            .collect();
        let moved = *self.moved_leader.lock().expect("not poisoned");
        // The fake's election is deterministic: the first active voter by name (the members start
        // in parallel, so the list's order is not; a test that names the leader needs one).
        let leader = active
            .iter()
            .find(|m| Some(m.id) == moved)
            .or(active.iter().min_by_key(|m| &m.name))
            .map(|m| m.id);
        (!active.is_empty() && active.len() > voters.len() / 2)
            .then_some(leader)
            .flatten()
    }
}

impl Connector for FakeCluster {
    fn connect(&self, node: &Node) -> Result<Box<dyn Remote>, RemoteError> {
        let state = self
            .nodes
            .get(&node.name)
            .unwrap_or_else(|| panic!("no fake node {}", node.name))
            .clone();
        if !state.lock().expect("not poisoned").reachable {
            return Err(SshError::Connect {
                host: node.address.to_string(),
                port: 22,
                reason: "connection refused (fake)".into(),
            }
            .into());
        }
        Ok(Box::new(FakeRemote {
            node: node.name.clone(),
            state,
            log: self.log.clone(),
            membership: self.membership.clone(),
        }))
    }
}

/// One fake node, connected.
pub struct FakeRemote {
    node: String,
    state: Arc<Mutex<NodeState>>,
    log: Arc<Mutex<Vec<Event>>>,
    membership: Arc<Mutex<Vec<EtcdMember>>>,
}
