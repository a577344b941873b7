//! In-memory nodes for tests: [`FakeCluster`] is a [`Connector`] and a [`Probe`] whose nodes
//! keep files, units, listeners and a clock in memory, so deploy's phase runner, preflight and
//! verify run against it in milliseconds, without root or SSH.
//!
//! It models what those stages rely on, no more: a unit is loaded when its unit file exists,
//! starts unless the test marks it failing, and etcd members and API servers answer the probe
//! while their units are active (etcd elects a leader while a majority is up). Every operation
//! that changes a node is appended to one log shared by all nodes, so tests can assert the
//! order of a rolling restart across hosts.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::ssh::SshError;
use crate::addons::Step as AddonStep;
use super::{
    Apply, Connector, Facts, FactsQuery, ImportImages, HostsBlock, KeyCheck, Pairing, Remote, RemoteError, RemoteFile, UnitInfo,
    UnitOps, Upload,
};
use crate::components::COMPONENTS;
use crate::inventory::{Inventory, Node};
use crate::pki::CertInfo;
use crate::plan::sha256_hex;
use crate::probe::{BoxFuture, EtcdMember, MemberStatus, Membership, Probe};

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
    /// Directories that exist (data dirs), besides the files' parents.
    pub dirs: BTreeSet<String>,
    /// What `install_files` placed, for reset.
    pub placed: BTreeSet<String>,
}

impl NodeState {
    pub fn unit_active(&self, unit: &str) -> bool {
        self.reachable && self.units.get(unit).is_some_and(|u| u.active)
    }

    fn unit_loaded(&self, unit: &str) -> bool {
        self.files.contains_key(&format!("/etc/systemd/system/{unit}.service"))
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
}

use crate::components::ETCD_JOIN_ENV as JOIN_ENV;

impl FakeCluster {
    pub fn new(inv: &Inventory) -> FakeCluster {
        let mut c = FakeCluster { nodes: BTreeMap::new(), log: Arc::new(Mutex::new(Vec::new())), membership: Arc::new(Mutex::new(Vec::new())), unhealthy_adds: Arc::default(), moved_leader: Arc::default() };
        c.add_nodes(inv);
        c
    }

    /// Adds the inventory's nodes that are not there yet (a cluster that grows).
    pub fn add_nodes(&mut self, inv: &Inventory) {
        let new: Vec<&Node> = inv.nodes.iter().filter(|n| !self.nodes.contains_key(&n.name)).collect();
        for n in new {
            let binaries = COMPONENTS.iter().filter(|c| c.runs_on(inv, n)).map(|c| c.binary_path(inv)).collect();
            let tools = COMPONENTS.iter().filter(|c| c.runs_on(inv, n)).flat_map(|c| c.needs.iter().map(|need| need.tool.to_string())).collect();
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
                secrets: 3,
                dirs: BTreeSet::new(),
                placed: BTreeSet::new(),
            };
            self.nodes.insert(n.name.clone(), Arc::new(Mutex::new(state)));
        }
    }

    /// The etcd member list, as etcd would give it.
    pub fn members(&self) -> Vec<EtcdMember> {
        self.membership.lock().expect("not poisoned").clone()
    }

    /// A node's state, to inspect or change.
    pub fn node(&self, name: &str) -> MutexGuard<'_, NodeState> {
        self.nodes.get(name).unwrap_or_else(|| panic!("no fake node {name}")).lock().expect("not poisoned")
    }

    /// Everything every node did, in order.
    pub fn events(&self) -> Vec<Event> {
        self.log.lock().expect("not poisoned").clone()
    }

    /// The events whose text starts with `prefix`, as `node: what`.
    pub fn events_like(&self, prefix: &str) -> Vec<String> {
        self.events().into_iter().filter(|e| e.what.starts_with(prefix)).map(|e| format!("{}: {}", e.node, e.what)).collect()
    }

    pub fn clear_events(&self) {
        self.log.lock().expect("not poisoned").clear();
    }

    fn by_address(&self, address: IpAddr) -> Option<MutexGuard<'_, NodeState>> {
        self.nodes.values().map(|n| n.lock().expect("not poisoned")).find(|n| n.address == address)
    }

    fn member_id(name: &str) -> u64 {
        name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
    }

    /// The leader the active voting members agree on: the first of them, while a majority of
    /// the voting members is active.
    fn etcd_leader(&self) -> Option<u64> {
        let voters: Vec<EtcdMember> = self.members().into_iter().filter(|m| !m.learner && !m.name.is_empty()).collect();
        let active: Vec<&EtcdMember> = voters.iter().filter(|m| self.nodes.get(&m.name).is_some_and(|n| n.lock().expect("not poisoned").unit_active("etcd"))).collect();
        let moved = *self.moved_leader.lock().expect("not poisoned");
        let leader = active.iter().find(|m| Some(m.id) == moved).or(active.first()).map(|m| m.id);
        (!active.is_empty() && active.len() > voters.len() / 2).then_some(leader).flatten()
    }
}

impl Connector for FakeCluster {
    fn connect(&self, node: &Node) -> Result<Box<dyn Remote>, RemoteError> {
        let state = self.nodes.get(&node.name).unwrap_or_else(|| panic!("no fake node {}", node.name)).clone();
        if !state.lock().expect("not poisoned").reachable {
            return Err(SshError::Connect { host: node.address.to_string(), port: 22, reason: "connection refused (fake)".into() }.into());
        }
        Ok(Box::new(FakeRemote { node: node.name.clone(), state, log: self.log.clone(), membership: self.membership.clone() }))
    }
}

/// One fake node, connected.
pub struct FakeRemote {
    node: String,
    state: Arc<Mutex<NodeState>>,
    log: Arc<Mutex<Vec<Event>>>,
    membership: Arc<Mutex<Vec<EtcdMember>>>,
}

impl FakeRemote {
    /// What starting etcd on this node does to the member list: a first member of a new
    /// cluster adds itself; a joining one (with a join file) takes the entry deploy added for
    /// its peer URL; a restart changes nothing. `Err` when etcd would refuse to start.
    fn etcd_starts(&self, s: &NodeState) -> Result<(), String> {
        let mut members = self.membership.lock().expect("not poisoned");
        if members.iter().any(|m| m.name == self.node) {
            return Ok(());
        }
        let peer = format!("https://{}:2380", crate::inventory::host_for_url(s.address));
        if s.files.contains_key(JOIN_ENV) {
            let m = members.iter_mut().find(|m| m.peer_url == peer && m.name.is_empty()).ok_or("member not added to the cluster (etcdctl member add first)")?;
            m.name = self.node.clone();
        } else {
            members.push(EtcdMember { id: FakeCluster::member_id(&self.node), name: self.node.clone(), peer_url: peer, learner: false });
        }
        Ok(())
    }

    /// etcd writes its data dir on its first start.
    fn etcd_data(s: &mut NodeState) {
        if !s.dirs.contains(crate::components::ETCD_DATA_DIR) {
            s.dirs.insert(crate::components::ETCD_DATA_DIR.to_string());
            s.files.insert(format!("{}/member/snap/db", crate::components::ETCD_DATA_DIR), FakeFile { contents: b"keyspace".to_vec(), mode: 0o600, owner: "root:root".into() });
        }
    }
}

impl FakeRemote {
    fn state(&self) -> Result<MutexGuard<'_, NodeState>, RemoteError> {
        let s = self.state.lock().expect("not poisoned");
        if !s.reachable {
            return Err(SshError::Session { host: self.node.clone(), reason: "the connection dropped (fake)".into() }.into());
        }
        Ok(s)
    }

    fn record(&self, what: impl Into<String>) {
        self.log.lock().expect("not poisoned").push(Event { node: self.node.clone(), what: what.into() });
    }
}

/// What `read_certificates` gives: the certificate blocks of the file, and those base64 in a
/// kubeconfig's certificate fields.
fn certificate_blocks(text: &str) -> String {
    use base64::Engine;
    let mut all = text.to_string();
    for line in text.lines() {
        let l = line.trim_start();
        let value = l.strip_prefix("certificate-authority-data:").or_else(|| l.strip_prefix("client-certificate-data:"));
        if let Some(pem) = value.and_then(|v| base64::engine::general_purpose::STANDARD.decode(v.trim()).ok()) {
            all.push_str(&String::from_utf8_lossy(&pem));
            all.push('\n');
        }
    }
    let mut out = String::new();
    let mut inside = false;
    for line in all.lines() {
        inside |= line == "-----BEGIN CERTIFICATE-----";
        if inside {
            out.push_str(line);
            out.push('\n');
        }
        if line == "-----END CERTIFICATE-----" {
            inside = false;
        }
    }
    out
}

impl Remote for FakeRemote {
    fn node(&self) -> &str {
        &self.node
    }

    fn facts(&self, q: &FactsQuery) -> Result<Facts, RemoteError> {
        let s = self.state()?;
        let begin = format!("# BEGIN hardway {}", q.hosts_block);
        Ok(Facts {
            systemd: s.systemd,
            clock_offset: s.clock_offset,
            swap_active: s.swap_active,
            present_binaries: q.binaries.iter().filter(|b| s.binaries.contains(*b)).cloned().collect(),
            listeners: s.listeners.clone(),
            hosts_block: s.files.get("/etc/hosts").is_some_and(|f| String::from_utf8_lossy(&f.contents).lines().any(|l| l == begin)),
            files: stats(&s, &q.paths),
            units: q.units.iter().map(|u| (u.clone(), active_state(&s, u).to_string())).collect(),
            cgroup2: s.cgroup2,
            br_netfilter: s.br_netfilter,
            tools: q.tools.iter().filter(|t| s.tools.contains(*t)).cloned().collect(),
            versions: q.versions.iter().filter_map(|(b, _)| Some((b.clone(), s.versions.get(b)?.clone()))).collect(),
            fingerprints: q
                .fingerprints
                .iter()
                .filter_map(|p| Some((p.clone(), crate::render::key_hashes(&String::from_utf8_lossy(&s.files.get(p)?.contents)))))
                .collect(),
        })
    }

    fn move_aside(&self, path: &str, suffix: &str) -> Result<Option<String>, RemoteError> {
        let mut s = self.state()?;
        let moved: Vec<String> = s.files.keys().filter(|p| *p == path || p.starts_with(&format!("{path}/"))).cloned().collect();
        if moved.is_empty() && !s.dirs.contains(path) {
            return Ok(None);
        }
        let mut to = format!("{path}.{suffix}");
        let mut n = 1;
        while s.dirs.contains(&to) || s.files.contains_key(&to) {
            to = format!("{path}.{suffix}.{n}");
            n += 1;
        }
        for p in moved {
            let f = s.files.remove(&p).expect("listed");
            s.files.insert(format!("{to}{}", &p[path.len()..]), f);
        }
        if s.dirs.remove(path) {
            s.dirs.insert(to.clone());
        }
        drop(s);
        self.record(format!("move {path} to {to}"));
        Ok(Some(to))
    }

    fn remove_paths(&self, paths: &[String]) -> Result<(), RemoteError> {
        let mut s = self.state()?;
        for p in paths {
            s.files.retain(|f, _| f != p && !f.starts_with(&format!("{p}/")));
            s.dirs.remove(p);
            if p == super::PLACED {
                s.placed.clear();
            }
        }
        drop(s);
        self.record(format!("remove {}", paths.join(" ")));
        Ok(())
    }

    fn placed_files(&self) -> Result<Vec<String>, RemoteError> {
        Ok(self.state()?.placed.iter().cloned().collect())
    }

    fn restore_etcd(&self, r: &super::EtcdRestore<'_>) -> Result<(), RemoteError> {
        let mut s = self.state()?;
        if s.dirs.contains(r.data_dir) {
            return Err(RemoteError::failed("restoring the etcd snapshot", "the data dir is not empty: move it aside first"));
        }
        let Some(snap) = s.files.get(r.snapshot).cloned() else {
            return Err(RemoteError::failed("restoring the etcd snapshot", format!("{}: no such file", r.snapshot)));
        };
        s.dirs.insert(r.data_dir.to_string());
        s.files.insert(format!("{}/member/snap/db", r.data_dir), snap);
        drop(s);
        self.record(format!("restore etcd into {} as {} ({})", r.data_dir, r.name, r.token));
        Ok(())
    }

    fn remove_hosts_block(&self, cluster: &str, target: &str) -> Result<(), RemoteError> {
        let mut s = self.state()?;
        let Some(f) = s.files.get_mut(target) else { return Ok(()) };
        let (begin, end) = (format!("# BEGIN hardway {cluster}"), format!("# END hardway {cluster}"));
        let mut skip = false;
        let mut text = String::new();
        for l in String::from_utf8_lossy(&f.contents).lines() {
            skip |= l == begin;
            if !skip {
                text.push_str(l);
                text.push('\n');
            }
            skip &= l != end;
        }
        f.contents = text.into_bytes();
        drop(s);
        self.record("remove hosts block");
        Ok(())
    }

    fn install_files(&self, uploads: &[Upload<'_>]) -> Result<(), RemoteError> {
        let mut s = self.state()?;
        s.placed.extend(uploads.iter().map(|u| u.path.to_string()));
        for u in uploads {
            if u.metadata_only {
                let f = s.files.get_mut(u.path).ok_or_else(|| RemoteError::failed("installing files", format!("{}: no such file", u.path)))?;
                f.mode = u.mode;
                f.owner = "root:root".into();
            } else {
                s.files.insert(u.path.to_string(), FakeFile { contents: u.contents.to_vec(), mode: u.mode, owner: "root:root".into() });
            }
        }
        drop(s);
        self.record(format!("install {} files", uploads.len()));
        Ok(())
    }

    fn merge_hosts_block(&self, b: &HostsBlock<'_>) -> Result<(), RemoteError> {
        let mut s = self.state()?;
        let block = s.files.get(b.source).map(|f| String::from_utf8_lossy(&f.contents).into_owned()).unwrap_or_default();
        let old = s.files.get(b.target).map(|f| String::from_utf8_lossy(&f.contents).into_owned()).unwrap_or_default();
        let (begin, end) = (format!("# BEGIN hardway {}", b.cluster), format!("# END hardway {}", b.cluster));
        if old.lines().filter(|l| *l == begin).count() != old.lines().filter(|l| *l == end).count() {
            return Err(RemoteError::failed("updating the hosts file", format!("{}: the hardway block's BEGIN and END lines do not pair up", b.target)));
        }
        let mut skip = false;
        let mut text = String::new();
        for l in old.lines() {
            skip |= l == begin;
            if !skip {
                text.push_str(l);
                text.push('\n');
            }
            skip &= l != end;
        }
        text.push_str(&block);
        s.files.insert(b.target.to_string(), FakeFile { contents: text.into_bytes(), mode: 0o644, owner: "root:root".into() });
        drop(s);
        self.record("merge hosts block");
        Ok(())
    }

    fn systemctl(&self, ops: &UnitOps) -> Result<(), RemoteError> {
        let mut s = self.state()?;
        if let Some(e) = &s.systemctl_error {
            return Err(RemoteError::failed("systemctl", e.clone()));
        }
        let mut events = Vec::new();
        if ops.daemon_reload {
            events.push("daemon-reload".to_string());
        }
        let mut failed = Vec::new();
        for u in &ops.stop {
            if let Some(unit) = s.units.get_mut(u).filter(|x| x.active) {
                unit.active = false;
                events.push(format!("stop {u}"));
            }
        }
        for u in &ops.disable {
            if let Some(unit) = s.units.get_mut(u).filter(|x| x.enabled) {
                unit.enabled = false;
                events.push(format!("disable {u}"));
            }
        }
        for (restart, units) in [(true, &ops.restart), (false, &ops.start)] {
            for u in units {
                if !s.unit_loaded(u) {
                    failed.push(format!("Unit {u}.service not found."));
                    continue;
                }
                let mut failing = s.failing.contains(u);
                if u == "etcd"
                    && !failing
                    && !s.units.get(u).is_some_and(|x| x.active)
                    && let Err(e) = self.etcd_starts(&s)
                {
                    failed.push(format!("etcd: {e}"));
                    failing = true;
                }
                if u == "etcd" && !failing {
                    Self::etcd_data(&mut s);
                }
                let unit = s.units.entry(u.clone()).or_default();
                unit.enabled = true;
                if restart || !unit.active {
                    if restart {
                        unit.restarts += 1;
                    } else {
                        unit.starts += 1;
                    }
                    unit.active = !failing;
                    events.push(format!("{} {u}", if restart { "restart" } else { "start" }));
                }
                if failing && !ops.no_block {
                    failed.push(format!("Job for {u}.service failed because the control process exited with error code."));
                }
            }
        }
        drop(s);
        for e in events {
            self.record(e);
        }
        if failed.is_empty() { Ok(()) } else { Err(RemoteError::failed("systemctl", failed.join("\n"))) }
    }

    fn unit_states(&self, units: &[String]) -> Result<BTreeMap<String, String>, RemoteError> {
        let s = self.state()?;
        Ok(units.iter().map(|u| (u.clone(), active_state(&s, u).to_string())).collect())
    }

    fn journal_tail(&self, units: &[String], _lines: u32) -> Result<String, RemoteError> {
        let s = self.state()?;
        Ok(units.iter().map(|u| format!("--- journal of {u}:\n(fake) {u} is {}\n", active_state(&s, u))).collect())
    }

    fn units(&self, units: &[String]) -> Result<BTreeMap<String, UnitInfo>, RemoteError> {
        let s = self.state()?;
        Ok(units
            .iter()
            .map(|u| {
                let path = format!("/etc/systemd/system/{u}.service");
                let info = match s.files.get(&path) {
                    None => UnitInfo { load: "not-found".into(), active: "inactive".into(), enabled: String::new(), text: String::new() },
                    Some(f) => UnitInfo {
                        load: "loaded".into(),
                        active: active_state(&s, u).into(),
                        enabled: if s.units.get(u).is_some_and(|x| x.enabled) { "enabled" } else { "disabled" }.into(),
                        text: format!("# {path}\n{}", String::from_utf8_lossy(&f.contents)),
                    },
                };
                (u.clone(), info)
            })
            .collect())
    }

    fn read_certificates(&self, paths: &[String]) -> Result<BTreeMap<String, Option<String>>, RemoteError> {
        let s = self.state()?;
        Ok(paths.iter().map(|p| (p.clone(), s.files.get(p).map(|f| certificate_blocks(&String::from_utf8_lossy(&f.contents))))).collect())
    }

    fn read_config(&self, path: &str) -> Result<Option<String>, RemoteError> {
        let s = self.state()?;
        Ok(s.files.get(path).map(|f| String::from_utf8_lossy(&f.contents).into_owned()))
    }

    fn read_masked(&self, paths: &[String]) -> Result<BTreeMap<String, Option<String>>, RemoteError> {
        let s = self.state()?;
        Ok(paths.iter().map(|p| (p.clone(), s.files.get(p).map(|f| crate::render::mask_secrets(&String::from_utf8_lossy(&f.contents))))).collect())
    }

    fn check_keys(&self, pairs: &[(String, String)]) -> Result<Vec<KeyCheck>, RemoteError> {
        let s = self.state()?;
        Ok(pairs
            .iter()
            .map(|(cert, key)| {
                let key_file = s.files.get(key);
                let mode_owner = key_file.map(|f| (f.mode, f.owner.split(':').next().unwrap_or("").to_string()));
                let pairing = if !s.openssl {
                    Pairing::NoOpenssl
                } else {
                    let cert = s.files.get(cert).and_then(|f| CertInfo::parse(&String::from_utf8_lossy(&f.contents)).ok());
                    match (cert, key_file) {
                        (Some(c), Some(k)) if c.matches_key(&String::from_utf8_lossy(&k.contents)).unwrap_or(false) => Pairing::Match,
                        _ => Pairing::Differ,
                    }
                };
                KeyCheck { mode_owner, pairing }
            })
            .collect())
    }

    fn stat_files(&self, paths: &[String]) -> Result<BTreeMap<String, RemoteFile>, RemoteError> {
        let s = self.state()?;
        Ok(stats(&s, paths))
    }

    fn haproxy_check(&self, config: &str) -> Result<Result<(), String>, RemoteError> {
        let s = self.state()?;
        Ok(match s.files.get(config) {
            Some(f) if String::from_utf8_lossy(&f.contents).contains("frontend ") => Ok(()),
            Some(_) => Err(format!("[ALERT] {config}: no frontend (fake)")),
            None => Err(format!("[ALERT] Cannot open configuration file {config} (fake)")),
        })
    }

    fn socket_request(&self, socket: &str, _request: &[u8]) -> Result<String, RemoteError> {
        let s = self.state()?;
        s.sockets.get(socket).cloned().ok_or_else(|| RemoteError::failed("socket request", format!("{socket}: no such socket")))
    }

    fn apply(&self, a: &Apply<'_>) -> Result<(), RemoteError> {
        let s = self.state()?;
        if !s.unit_active("kube-apiserver") {
            return Err(RemoteError::failed("applying addons", format!("the API server was not ready after {} s", a.timeout_secs)));
        }
        let unready = s.unready.clone();
        drop(s);
        for addon in a.addons {
            for step in &addon.steps {
                let object = match step {
                    AddonStep::Rollout { object, .. } | AddonStep::Available { object } => Some(*object),
                    _ => None,
                };
                if object.is_some_and(|o| unready.contains(o)) {
                    return Err(RemoteError::failed("applying addons", format!("addon {}: {} failed: not ready within {} s", addon.name, step.describe(), a.timeout_secs)));
                }
                self.record(step.describe());
            }
        }
        Ok(())
    }

    fn rewrite_secrets(&self, kubectl: &str, _kubeconfig: &str) -> Result<usize, RemoteError> {
        let s = self.state()?;
        if !s.binaries.contains(kubectl) {
            return Err(RemoteError::failed("rewriting the Secrets", format!("exit 3: kubectl is not at {kubectl}")));
        }
        if !s.unit_active("kube-apiserver") {
            return Err(RemoteError::failed("rewriting the Secrets", "exit 1: The connection to the server was refused (fake)"));
        }
        let n = s.secrets;
        drop(s);
        self.record(format!("rewrite {n} secrets"));
        Ok(n)
    }

    fn import_images(&self, import: &ImportImages<'_>) -> Result<(), RemoteError> {
        let s = self.state()?;
        if !s.unit_active("containerd") {
            return Err(RemoteError::failed("importing images into containerd", "ctr: cannot connect to containerd (fake: containerd is not running)"));
        }
        if let Some(missing) = import.tarballs.iter().find(|t| !s.files.contains_key(*t)) {
            return Err(RemoteError::failed("importing images into containerd", format!("ctr: open {missing}: no such file or directory")));
        }
        drop(s);
        for t in &import.tarballs {
            self.record(format!("import {t}"));
        }
        Ok(())
    }
}

fn active_state(s: &NodeState, unit: &str) -> &'static str {
    match s.units.get(unit) {
        Some(u) if u.active => "active",
        Some(_) if s.failing.contains(unit) => "failed",
        _ => "inactive",
    }
}

fn stats(s: &NodeState, paths: &[String]) -> BTreeMap<String, RemoteFile> {
    paths
        .iter()
        .filter_map(|p| {
            let f = s.files.get(p)?;
            Some((p.clone(), RemoteFile { sha256: sha256_hex(&f.contents), mode: f.mode, owner: f.owner.clone() }))
        })
        .collect()
}

impl Probe for FakeCluster {
    fn etcd_member<'a>(&'a self, name: &'a str, address: IpAddr, _timeout: Duration) -> BoxFuture<'a, MemberStatus> {
        Box::pin(async move {
            if !self.node(name).unit_active("etcd") {
                return MemberStatus::no_answer(name, address, format!("https://{address}:2379: connection refused (fake)"));
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

    fn etcd_membership(&self, address: IpAddr, _timeout: Duration) -> BoxFuture<'_, Result<(Membership, Vec<String>), String>> {
        Box::pin(async move {
            if !self.by_address(address).is_some_and(|n| n.unit_active("etcd")) {
                return Err(format!("{address}: connection refused (fake)"));
            }
            Ok((self.members(), vec![]))
        })
    }

    fn etcd_member_add<'a>(&'a self, address: IpAddr, peer_url: &'a str) -> BoxFuture<'a, Result<u64, String>> {
        Box::pin(async move {
            if self.etcd_leader().is_none() || !self.by_address(address).is_some_and(|n| n.unit_active("etcd")) {
                return Err("etcdserver: no leader (fake)".into());
            }
            use std::sync::atomic::Ordering;
            if self.unhealthy_adds.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                self.log.lock().expect("not poisoned").push(Event { node: "etcd".into(), what: format!("member add {peer_url} refused") });
                return Err("etcdserver: unhealthy cluster (fake)".into());
            }
            let mut members = self.membership.lock().expect("not poisoned");
            if members.iter().any(|m| m.peer_url == peer_url) {
                return Err("etcdserver: Peer URLs already exists (fake)".into());
            }
            let id = FakeCluster::member_id(peer_url) ^ 0x5a5a;
            members.push(EtcdMember { id, name: String::new(), peer_url: peer_url.to_string(), learner: true });
            drop(members);
            self.log.lock().expect("not poisoned").push(Event { node: "etcd".into(), what: format!("member add {peer_url} (learner)") });
            Ok(id)
        })
    }

    fn etcd_member_promote(&self, _address: IpAddr, id: u64) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            // Never a node lock under the member-list lock: systemctl takes them the other way.
            let name = self.members().into_iter().find(|m| m.id == id).ok_or("etcdserver: member not found (fake)")?.name;
            let started = !name.is_empty() && self.nodes.get(&name).is_some_and(|n| n.lock().expect("not poisoned").unit_active("etcd"));
            if !started {
                return Err("etcdserver: can only promote a learner member which is in sync with leader (fake)".into());
            }
            if let Some(m) = self.membership.lock().expect("not poisoned").iter_mut().find(|m| m.id == id) {
                m.learner = false;
            }
            self.log.lock().expect("not poisoned").push(Event { node: "etcd".into(), what: format!("member promote {name}") });
            Ok(())
        })
    }

    fn etcd_snapshot<'a>(&'a self, address: IpAddr, out: &'a mut (dyn std::io::Write + Send)) -> BoxFuture<'a, Result<(u64, i64), String>> {
        Box::pin(async move {
            if self.etcd_leader().is_none() || !self.by_address(address).is_some_and(|n| n.unit_active("etcd")) {
                return Err("etcdserver: no leader (fake)".into());
            }
            // The fake keyspace: the member list, which is all the fake keeps.
            let bytes = format!("fake etcd snapshot: {:?}\n", self.members()).into_bytes();
            out.write_all(&bytes).map_err(|e| e.to_string())?;
            self.log.lock().expect("not poisoned").push(Event { node: "etcd".into(), what: "snapshot".into() });
            Ok((bytes.len() as u64, 42))
        })
    }

    fn etcd_move_leader(&self, leader: IpAddr, to: u64) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let current = self.etcd_leader().ok_or("etcdserver: no leader (fake)")?;
            let asked = self.members().into_iter().find(|m| self.by_address(leader).is_some_and(|n| n.name == m.name)).map(|m| m.id);
            if asked != Some(current) {
                return Err("etcdserver: not leader (fake)".into());
            }
            let target = self.members().into_iter().find(|m| m.id == to && !m.learner).ok_or("etcdserver: bad leader transferee (fake)")?;
            *self.moved_leader.lock().expect("not poisoned") = Some(to);
            self.log.lock().expect("not poisoned").push(Event { node: "etcd".into(), what: format!("move leader to {}", target.name) });
            Ok(())
        })
    }

    fn etcd_member_remove(&self, _address: IpAddr, id: u64) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let mut members = self.membership.lock().expect("not poisoned");
            let at = members.iter().position(|m| m.id == id).ok_or("etcdserver: member not found (fake)")?;
            let m = members.remove(at);
            drop(members);
            if let Some(n) = self.nodes.get(&m.name) {
                // A removed member's etcd stops: it is no longer part of the cluster.
                if let Some(u) = n.lock().expect("not poisoned").units.get_mut("etcd") {
                    u.active = false;
                }
            }
            self.log.lock().expect("not poisoned").push(Event { node: "etcd".into(), what: format!("member remove {}", m.name) });
            Ok(())
        })
    }

    fn api_get<'a>(&'a self, address: IpAddr, _port: u16, path: &'a str) -> BoxFuture<'a, Result<(u16, String), String>> {
        Box::pin(async move {
            let Some(node) = self.by_address(address) else { return Err(format!("connecting to {address}: no route (fake)")) };
            let serving = if node.unit_active("kube-apiserver") {
                true
            } else if node.unit_active("haproxy") {
                drop(node);
                self.nodes.values().any(|n| n.lock().expect("not poisoned").unit_active("kube-apiserver"))
            } else {
                false
            };
            if !serving {
                return Err(format!("connecting to {address}: connection refused (fake)"));
            }
            if path == "/api/v1/nodes" {
                let ready: Vec<serde_json::Value> = self
                    .nodes
                    .values()
                    .map(|n| n.lock().expect("not poisoned"))
                    .filter(|n| n.unit_active("kubelet"))
                    .map(|n| serde_json::json!({"metadata": {"name": n.name}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}))
                    .collect();
                return Ok((200, serde_json::json!({ "items": ready }).to_string()));
            }
            Ok((200, "ok".into()))
        })
    }
}
