//! [`FakeRemote`]'s operations: what each [`Remote`] call does to one in-memory node, and
//! the few node behaviours they rely on (etcd joining the member list when it starts, writing
//! its data dir). Every change is recorded in the cluster's shared event log.

use std::collections::BTreeMap;
use std::sync::MutexGuard;

use super::super::ssh::SshError;
use super::super::{
    Apply, EtcdRestore, Facts, FactsQuery, HostsBlock, ImportImages, KeyCheck, PLACED, Pairing,
    Remote, RemoteError, RemoteFile, UnitInfo, UnitOps, Upload,
};
use super::{Event, FakeCluster, FakeFile, FakeRemote, NodeState};
use crate::addons::Step as AddonStep;
use crate::components::ETCD_JOIN_ENV as JOIN_ENV;
use crate::digest::sha256_hex;
use crate::pki::CertInfo;
use crate::probe::EtcdMember;

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
            let m = members
                .iter_mut()
                .find(|m| m.peer_url == peer && m.name.is_empty())
                .ok_or("member not added to the cluster (etcdctl member add first)")?;
            m.name = self.node.clone();
        } else {
            members.push(EtcdMember {
                id: FakeCluster::member_id(&self.node),
                name: self.node.clone(),
                peer_url: peer,
                learner: false,
            });
        }
        Ok(())
    }

    /// etcd writes its data dir on its first start.
    fn etcd_data(s: &mut NodeState) {
        if !s.dirs.contains(crate::components::ETCD_DATA_DIR) {
            s.dirs.insert(crate::components::ETCD_DATA_DIR.to_string());
            s.files.insert(
                format!("{}/member/snap/db", crate::components::ETCD_DATA_DIR),
                FakeFile {
                    contents: b"keyspace".to_vec(),
                    mode: 0o600,
                    owner: "root:root".into(),
                },
            );
        }
    }
}

impl FakeRemote {
    fn state(&self) -> Result<MutexGuard<'_, NodeState>, RemoteError> {
        let s = self.state.lock().expect("not poisoned");
        if !s.reachable {
            return Err(SshError::Session {
                host: self.node.clone(),
                reason: "the connection dropped (fake)".into(),
            }
            .into());
        }
        Ok(s)
    }

    fn record(&self, what: impl Into<String>) {
        self.log.lock().expect("not poisoned").push(Event {
            node: self.node.clone(),
            what: what.into(),
        });
    }
}

/// What `read_certificates` gives: the certificate blocks of the file, and those base64 in a
/// kubeconfig's certificate fields.
fn certificate_blocks(text: &str) -> String {
    use base64::Engine;
    let mut all = text.to_string();
    for line in text.lines() {
        let l = line.trim_start();
        let value = l
            .strip_prefix("certificate-authority-data:")
            .or_else(|| l.strip_prefix("client-certificate-data:"));
        if let Some(pem) = value.and_then(|v| {
            base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .ok()
        }) {
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
            clock_uncertainty: 0.0,
            swap_active: s.swap_active,
            present_binaries: q
                .binaries
                .iter()
                .filter(|b| s.binaries.contains(*b))
                .cloned()
                .collect(),
            listeners: s.listeners.clone(),
            hosts_block: s.files.get("/etc/hosts").is_some_and(|f| {
                String::from_utf8_lossy(&f.contents)
                    .lines()
                    .any(|l| l == begin)
            }),
            files: stats(&s, &q.paths),
            units: q
                .units
                .iter()
                .map(|u| (u.clone(), active_state(&s, u).to_string()))
                .collect(),
            enabled: q
                .units
                .iter()
                .filter(|u| s.units.get(*u).is_some_and(|x| x.enabled))
                .cloned()
                .collect(),
            cgroup2: s.cgroup2,
            br_netfilter: s.br_netfilter,
            tools: q
                .tools
                .iter()
                .filter(|t| s.tools.contains(*t))
                .cloned()
                .collect(),
            versions: q
                .versions
                .iter()
                .filter_map(|(b, _)| Some((b.clone(), s.versions.get(b)?.clone())))
                .collect(),
            fingerprints: q
                .fingerprints
                .iter()
                .filter_map(|p| {
                    Some((
                        p.clone(),
                        crate::render::key_hashes(&String::from_utf8_lossy(
                            &s.files.get(p)?.contents,
                        )),
                    ))
                })
                .collect(),
        })
    }

    fn move_aside(&self, path: &str, suffix: &str) -> Result<Option<String>, RemoteError> {
        let mut s = self.state()?;
        let moved: Vec<String> = s
            .files
            .keys()
            .filter(|p| *p == path || p.starts_with(&format!("{path}/")))
            .cloned()
            .collect();
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

    /// The packages' tools (by the components' `needs`) appear on the node.
    fn install_packages(&self, packages: &[String]) -> Result<Vec<String>, RemoteError> {
        let mut s = self.state()?;
        for need in crate::components::COMPONENTS.iter().flat_map(|c| c.needs) {
            if packages.iter().any(|p| p == need.package) {
                s.tools.insert(need.tool.to_string());
                // Where Debian's packages put them.
                let dir = crate::components::BINARY_PACKAGES
                    .iter()
                    .find(|(p, _)| *p == need.package)
                    .map_or("/usr/bin", |(_, d)| *d);
                let bin = format!("{dir}/{}", need.tool);
                s.binaries.insert(bin.clone());
                if let Some(v) = s.apt_candidates.get(need.package).cloned() {
                    s.versions.insert(bin, format!("{} {v}", need.tool));
                }
            }
        }
        drop(s);
        self.record(format!("install packages {}", packages.join(" ")));
        Ok(packages.to_vec())
    }

    fn package_candidates(
        &self,
        packages: &[String],
        _refresh: bool,
    ) -> Result<BTreeMap<String, Option<String>>, RemoteError> {
        let s = self.state()?;
        Ok(packages
            .iter()
            .map(|p| (p.clone(), s.apt_candidates.get(p).cloned()))
            .collect())
    }

    fn remove_pods(&self, _crictl: &str, _socket: &str) -> Result<usize, RemoteError> {
        drop(self.state()?);
        self.record("remove pods".to_string());
        Ok(0)
    }

    /// A fault's script cannot run here: it is recorded (`fault <scenario>`), as what the node
    /// was asked to do, and succeeds.
    fn lab_fault(
        &self,
        scenario: &str,
        _script: &str,
    ) -> Result<crate::remote::Output, RemoteError> {
        drop(self.state()?);
        self.record(format!("fault {scenario}"));
        Ok(crate::remote::Output {
            status: 0,
            stdout: String::new(),
            stderr: String::new(),
        })
    }

    fn remove_paths(&self, paths: &[String]) -> Result<(), RemoteError> {
        let mut s = self.state()?;
        for p in paths {
            s.files
                .retain(|f, _| f != p && !f.starts_with(&format!("{p}/")));
            s.dirs.remove(p);
            if p == PLACED {
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

    fn restore_etcd(&self, r: &EtcdRestore<'_>) -> Result<(), RemoteError> {
        let mut s = self.state()?;
        if s.dirs.contains(r.data_dir) {
            return Err(RemoteError::failed(
                "restoring the etcd snapshot",
                "the data dir is not empty: move it aside first",
            ));
        }
        if let Some(e) = s.restore_error.clone() {
            // As etcdutl leaves it: a data dir begun and not finished.
            s.dirs.insert(r.data_dir.to_string());
            return Err(RemoteError::failed("restoring the etcd snapshot", e));
        }
        let Some(snap) = s.files.get(r.snapshot).cloned() else {
            return Err(RemoteError::failed(
                "restoring the etcd snapshot",
                format!("{}: no such file", r.snapshot),
            ));
        };
        s.dirs.insert(r.data_dir.to_string());
        s.files
            .insert(format!("{}/member/snap/db", r.data_dir), snap);
        drop(s);
        self.record(format!(
            "restore etcd into {} as {} ({})",
            r.data_dir, r.name, r.token
        ));
        Ok(())
    }

    fn snapshot_status(
        &self,
        snapshot: &str,
        _bin_dir: &str,
    ) -> Result<Result<String, String>, RemoteError> {
        let s = self.state()?;
        let answer = match s.files.get(snapshot) {
            None => Err(format!("open {snapshot}: no such file or directory")),
            // What the fake probe streams is the only snapshot it knows.
            Some(f) if f.contents.starts_with(b"fake etcd snapshot:") => {
                Ok(format!("revision 42, 1 keys, {} bytes", f.contents.len()))
            }
            Some(_) => Err("failed to open database: invalid database (fake)".to_string()),
        };
        drop(s);
        self.record(format!("snapshot status {snapshot}"));
        Ok(answer)
    }

    fn move_back(&self, from: &str, to: &str) -> Result<(), RemoteError> {
        let mut s = self.state()?;
        if s.dirs.contains(to)
            || s.files
                .keys()
                .any(|p| p == to || p.starts_with(&format!("{to}/")))
        {
            return Err(RemoteError::failed(
                "moving back",
                format!("{to} exists: not moving {from} over it"),
            ));
        }
        let moved: Vec<String> = s
            .files
            .keys()
            .filter(|p| *p == from || p.starts_with(&format!("{from}/")))
            .cloned()
            .collect();
        for p in moved {
            let f = s.files.remove(&p).expect("listed");
            s.files.insert(format!("{to}{}", &p[from.len()..]), f);
        }
        if s.dirs.remove(from) {
            s.dirs.insert(to.to_string());
        }
        drop(s);
        self.record(format!("move {from} back to {to}"));
        Ok(())
    }

    fn remove_hosts_block(&self, cluster: &str, target: &str) -> Result<(), RemoteError> {
        let mut s = self.state()?;
        let Some(f) = s.files.get_mut(target) else {
            return Ok(());
        };
        let (begin, end) = (
            format!("# BEGIN hardway {cluster}"),
            format!("# END hardway {cluster}"),
        );
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
                let f = s.files.get_mut(u.path).ok_or_else(|| {
                    RemoteError::failed("installing files", format!("{}: no such file", u.path))
                })?;
                f.mode = u.mode;
                f.owner = "root:root".into();
            } else {
                s.files.insert(
                    u.path.to_string(),
                    FakeFile {
                        contents: u.contents.to_vec(),
                        mode: u.mode,
                        owner: "root:root".into(),
                    },
                );
            }
        }
        drop(s);
        self.record(format!("install {} files", uploads.len()));
        Ok(())
    }

    fn merge_hosts_block(&self, b: &HostsBlock<'_>) -> Result<(), RemoteError> {
        let mut s = self.state()?;
        let block = s
            .files
            .get(b.source)
            .map(|f| String::from_utf8_lossy(&f.contents).into_owned())
            .unwrap_or_default();
        let old = s
            .files
            .get(b.target)
            .map(|f| String::from_utf8_lossy(&f.contents).into_owned())
            .unwrap_or_default();
        let (begin, end) = (
            format!("# BEGIN hardway {}", b.cluster),
            format!("# END hardway {}", b.cluster),
        );
        if old.lines().filter(|l| *l == begin).count() != old.lines().filter(|l| *l == end).count()
        {
            return Err(RemoteError::failed(
                "updating the hosts file",
                format!(
                    "{}: the hardway block's BEGIN and END lines do not pair up",
                    b.target
                ),
            ));
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
        s.files.insert(
            b.target.to_string(),
            FakeFile {
                contents: text.into_bytes(),
                mode: 0o644,
                owner: "root:root".into(),
            },
        );
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
        for u in &ops.reload {
            match s.units.get(u).filter(|x| x.active) {
                Some(_) => events.push(format!("reload {u}")),
                None => failed.push(format!("{u}.service is not active, cannot reload.")),
            }
        }
        drop(s);
        for e in events {
            self.record(e);
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(RemoteError::failed("systemctl", failed.join("\n")))
        }
    }

    fn unit_states(&self, units: &[String]) -> Result<BTreeMap<String, String>, RemoteError> {
        let mut s = self.state()?;
        Ok(units
            .iter()
            .map(|u| {
                let settling = s.units.get_mut(u).filter(|x| x.active && x.settling > 0);
                let state = match settling {
                    Some(x) => {
                        x.settling -= 1;
                        "reloading"
                    }
                    None => active_state(&s, u),
                };
                (u.clone(), state.to_string())
            })
            .collect())
    }

    fn journal_tail(&self, units: &[String], _lines: u32) -> Result<String, RemoteError> {
        let s = self.state()?;
        Ok(units
            .iter()
            .map(|u| {
                format!(
                    "--- journal of {u}:\n(fake) {u} is {}\n",
                    active_state(&s, u)
                )
            })
            .collect())
    }

    fn units(&self, units: &[String]) -> Result<BTreeMap<String, UnitInfo>, RemoteError> {
        let s = self.state()?;
        Ok(units
            .iter()
            .map(|u| {
                let path = format!("/etc/systemd/system/{u}.service");
                let info = match s.files.get(&path) {
                    None => UnitInfo {
                        load: "not-found".into(),
                        active: "inactive".into(),
                        enabled: String::new(),
                        text: String::new(),
                    },
                    Some(f) => UnitInfo {
                        load: "loaded".into(),
                        active: active_state(&s, u).into(),
                        enabled: if s.units.get(u).is_some_and(|x| x.enabled) {
                            "enabled"
                        } else {
                            "disabled"
                        }
                        .into(),
                        text: format!("# {path}\n{}", String::from_utf8_lossy(&f.contents)),
                    },
                };
                (u.clone(), info)
            })
            .collect())
    }

    fn read_certificates(
        &self,
        paths: &[String],
    ) -> Result<BTreeMap<String, Option<String>>, RemoteError> {
        let s = self.state()?;
        Ok(paths
            .iter()
            .map(|p| {
                (
                    p.clone(),
                    s.files
                        .get(p)
                        .map(|f| certificate_blocks(&String::from_utf8_lossy(&f.contents))),
                )
            })
            .collect())
    }

    fn read_config(&self, path: &str) -> Result<Option<String>, RemoteError> {
        let s = self.state()?;
        if let Some(f) = s
            .files
            .get(path)
            .filter(|f| f.contents.len() as u64 > crate::remote::READ_LIMIT)
        {
            return Err(RemoteError::TooLarge {
                path: path.to_string(),
                size: Some(f.contents.len() as u64),
                limit: crate::remote::READ_LIMIT,
            });
        }
        Ok(s.files
            .get(path)
            .map(|f| String::from_utf8_lossy(&f.contents).into_owned()))
    }

    fn read_masked(
        &self,
        paths: &[String],
    ) -> Result<BTreeMap<String, Option<String>>, RemoteError> {
        let s = self.state()?;
        Ok(paths
            .iter()
            .map(|p| {
                (
                    p.clone(),
                    s.files.get(p).map(|f| {
                        crate::render::mask_secrets(&String::from_utf8_lossy(&f.contents))
                    }),
                )
            })
            .collect())
    }

    fn check_keys(&self, pairs: &[(String, String)]) -> Result<Vec<KeyCheck>, RemoteError> {
        let s = self.state()?;
        Ok(pairs
            .iter()
            .map(|(cert, key)| {
                let key_file = s.files.get(key);
                let mode_owner =
                    key_file.map(|f| (f.mode, f.owner.split(':').next().unwrap_or("").to_string()));
                let pairing = if !s.openssl {
                    Pairing::NoOpenssl
                } else {
                    let cert = s
                        .files
                        .get(cert)
                        .and_then(|f| CertInfo::parse(&String::from_utf8_lossy(&f.contents)).ok());
                    match (cert, key_file) {
                        (Some(c), Some(k))
                            if c.matches_key(&String::from_utf8_lossy(&k.contents))
                                .unwrap_or(false) =>
                        {
                            Pairing::Match
                        }
                        _ => Pairing::Differ,
                    }
                };
                KeyCheck {
                    mode_owner,
                    pairing,
                }
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
            None => Err(format!(
                "[ALERT] Cannot open configuration file {config} (fake)"
            )),
        })
    }

    fn socket_request(&self, socket: &str, _request: &[u8]) -> Result<String, RemoteError> {
        let s = self.state()?;
        s.sockets.get(socket).cloned().ok_or_else(|| {
            RemoteError::failed("socket request", format!("{socket}: no such socket"))
        })
    }

    fn apply(&self, a: &Apply<'_>) -> Result<Vec<String>, RemoteError> {
        let mut s = self.state()?;
        if !s.unit_active("kube-apiserver") {
            return Err(RemoteError::failed(
                "applying addons",
                format!("the API server was not ready after {} s", a.timeout_secs),
            ));
        }
        for (addon, step) in crate::addons::in_order(a.addons) {
            let object = match step {
                AddonStep::Rollout { object, .. } | AddonStep::Available { object } => {
                    Some(*object)
                }
                _ => None,
            };
            if object.is_some_and(|o| s.unready.contains(o)) {
                return Err(RemoteError::failed(
                    "applying addons",
                    format!(
                        "addon {}: {} failed: not ready within {} s",
                        addon.name,
                        step.describe(),
                        a.timeout_secs
                    ),
                ));
            }
            self.record(step.describe());
        }
        // What this node applied before is unchanged, as kubectl says of objects it finds as
        // they are.
        Ok(crate::addons::in_order(a.addons)
            .into_iter()
            .filter(|(_, s)| matches!(s, AddonStep::Apply(_) | AddonStep::ApplyUntilAccepted(_)))
            .filter(|(_, step)| s.applied.insert(step.describe()))
            .map(|(a, s)| format!("{}: {} created", a.name, s.describe()))
            .collect())
    }

    fn rewrite_secrets(&self, kubectl: &str, _kubeconfig: &str) -> Result<usize, RemoteError> {
        let s = self.state()?;
        if !s.binaries.contains(kubectl) {
            return Err(RemoteError::failed(
                "rewriting the Secrets",
                format!("exit 3: kubectl is not at {kubectl}"),
            ));
        }
        if !s.unit_active("kube-apiserver") {
            return Err(RemoteError::failed(
                "rewriting the Secrets",
                "exit 1: The connection to the server was refused (fake)",
            ));
        }
        let n = s.secrets;
        drop(s);
        self.record(format!("rewrite {n} secrets"));
        Ok(n)
    }

    fn import_images(&self, import: &ImportImages<'_>) -> Result<Vec<String>, RemoteError> {
        let s = self.state()?;
        if !s.unit_active("containerd") {
            return Err(RemoteError::failed(
                "importing images into containerd",
                "ctr: cannot connect to containerd (fake: containerd is not running)",
            ));
        }
        if let Some((missing, _)) = import
            .tarballs
            .iter()
            .find(|(t, _)| !s.files.contains_key(t))
        {
            return Err(RemoteError::failed(
                "importing images into containerd",
                format!("ctr: open {missing}: no such file or directory"),
            ));
        }
        drop(s);
        for (t, _) in &import.tarballs {
            self.record(format!("import {t}"));
        }
        Ok(import.tarballs.iter().map(|(t, _)| t.clone()).collect())
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
            Some((
                p.clone(),
                RemoteFile {
                    sha256: sha256_hex(&f.contents),
                    mode: f.mode,
                    owner: f.owner.clone(),
                },
            ))
        })
        .collect()
}
