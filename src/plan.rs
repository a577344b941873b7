//! Stage 4: what deploy has to do on each host, from the rendered files and what the host has.
//!
//! Pure data in, data out: [`plan_host`] compares every rendered file with the SHA-256, mode and
//! owner the host reported and decides which files to send, whether systemd must reload, and
//! which units to restart (one of their own files changed) or merely ensure started. `--dry-run`
//! prints exactly this; the apply stage executes exactly this.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::components::{Phase, phase_of_unit};
use crate::digest::sha256_hex;
use crate::remote::{Facts, RemoteFile};
use crate::render::{File, Rendered};

/// The phase that places a file: the earliest phase of the units that use it; for a file no
/// unit reads, the phase it was rendered with (the addon manifests and kubectl: `addons`) or
/// `files` (the /etc/hosts block).
pub fn phase_of_file(f: &File) -> Phase {
    f.units
        .iter()
        .filter_map(|u| phase_of_unit(u))
        .min()
        .or(f.phase)
        .unwrap_or(Phase::Files)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Create,
    Update,
    /// Same bytes, wrong mode or owner.
    Metadata,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileChange {
    pub path: String,
    pub kind: ChangeKind,
    #[serde(skip)]
    pub file: File,
}

#[derive(Debug, Clone, Serialize)]
pub struct UnitAction {
    pub unit: String,
    pub phase: Phase,
    /// Restart (one of its files changed), or only make sure it runs.
    pub restart: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostPlan {
    pub node: String,
    pub changes: Vec<FileChange>,
    pub daemon_reload: bool,
    pub units: Vec<UnitAction>,
    /// Files in the selected phases that are already right.
    pub unchanged: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub phases: Vec<Phase>,
    pub hosts: BTreeMap<String, HostPlan>,
}

/// The files of `host` that the selected phases place.
pub fn files_in_phases<'a>(rendered: &'a Rendered, host: &str, phases: &[Phase]) -> Vec<&'a File> {
    rendered
        .hosts
        .get(host)
        .map(|fs| {
            fs.iter()
                .filter(|f| phases.contains(&phase_of_file(f)))
                .collect()
        })
        .unwrap_or_default()
}

/// Which of the rendered files a deploy places, and so which units it restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Scope {
    /// `deploy`: every file of the selected phases; every unit there made to run.
    #[default]
    Everything,
    /// A change to a running cluster (a renewal, a rotation step): of these `(node, path)`
    /// files, those the node has already with other bytes, so that it never installs a
    /// component; only units deployed on the node restart. [`pick_present`] picks them.
    Present(BTreeSet<(String, String)>),
}

/// What [`Scope::Present`] places on `node`: every file of `files` that `affected` names and
/// the node has with other bytes, its units cut down to those deployed there; then the unit
/// file of each unit they restart or `restart` names, so that the plan knows the unit. That
/// unit file is what hardway renders: where the node's differs, placing it replaces the
/// node's (drift, [`Plan::unit_files`]), which the day-2 commands refuse unless forced.
pub fn pick_present(
    node: &str,
    files: &[&File],
    facts: &Facts,
    affected: &BTreeSet<(String, String)>,
    restart: &BTreeSet<(String, String)>,
) -> Vec<File> {
    let differs = |f: &File| {
        facts
            .files
            .get(&f.path)
            .is_some_and(|r| r.sha256 != sha256_hex(&f.contents))
    };
    let mut picked: Vec<File> = files
        .iter()
        .filter(|f| affected.contains(&(node.to_string(), f.path.clone())))
        .filter(|f| differs(f))
        .map(|f| File {
            units: f
                .units
                .iter()
                .copied()
                .filter(|u| facts.unit_deployed(u))
                .collect(),
            ..(*f).clone()
        })
        .collect();
    let mut units: BTreeSet<&str> = picked
        .iter()
        .filter(|f| f.restarts)
        .flat_map(|f| f.units.iter().copied())
        .collect();
    units.extend(
        restart
            .iter()
            .filter(|(n, u)| n == node && facts.unit_deployed(u))
            .map(|(_, u)| u.as_str()),
    );
    for unit in units {
        let path = format!("/etc/systemd/system/{unit}.service");
        if let Some(unit_file) = files.iter().find(|f| f.path == path)
            && !picked.iter().any(|p| p.path == path)
        {
            picked.push((*unit_file).clone());
        }
    }
    picked.sort_by(|a, b| a.path.cmp(&b.path));
    picked
}

/// Plans one host. `remote` holds what the host reported for each path (absent = missing).
pub fn plan_host(
    rendered: &Rendered,
    host: &str,
    remote: &BTreeMap<String, RemoteFile>,
    phases: &[Phase],
) -> HostPlan {
    plan_files(host, &files_in_phases(rendered, host, phases), remote)
}

/// Plans one host's `files`, against what the host reported for each path.
pub fn plan_files(host: &str, files: &[&File], remote: &BTreeMap<String, RemoteFile>) -> HostPlan {
    let mut changes = Vec::new();
    let mut unchanged = 0;
    for f in files {
        let kind = match remote.get(&f.path) {
            None => Some(ChangeKind::Create),
            Some(r) if r.sha256 != sha256_hex(&f.contents) => Some(ChangeKind::Update),
            Some(r) if r.mode != f.mode || r.owner != "root:root" => Some(ChangeKind::Metadata),
            Some(_) => None,
        };
        match kind {
            Some(kind) => changes.push(FileChange {
                path: f.path.clone(),
                kind,
                file: (*f).clone(),
            }),
            None => unchanged += 1,
        }
    }
    // A metadata fix does not change what a unit reads, so it restarts nothing.
    let touched: BTreeSet<&str> = changes
        .iter()
        .filter(|c| c.kind != ChangeKind::Metadata && c.file.restarts)
        .flat_map(|c| c.file.units.iter().copied())
        .collect();
    let units = files
        .iter()
        .filter(|f| f.is_unit())
        .filter_map(|f| f.path.rsplit('/').next()?.strip_suffix(".service"))
        .filter_map(|u| {
            Some(UnitAction {
                unit: u.to_string(),
                phase: phase_of_unit(u)?,
                restart: touched.contains(u),
            })
        })
        .collect();
    let daemon_reload = changes
        .iter()
        .any(|c| c.file.is_unit() && c.kind != ChangeKind::Metadata);
    HostPlan {
        node: host.to_string(),
        changes,
        daemon_reload,
        units,
        unchanged,
    }
}

impl Plan {
    /// `node: path` of every unit file that changes: in a day-2 change ([`Scope::Present`]),
    /// a unit file the node has other than hardway renders it, which the change replaces.
    pub fn unit_files(&self) -> Vec<String> {
        self.hosts
            .iter()
            .flat_map(|(h, p)| {
                p.changes
                    .iter()
                    .filter(|c| c.file.is_unit())
                    .map(move |c| format!("{h}: {}", c.path))
            })
            .collect()
    }

    /// The (node, unit) pairs that restart.
    pub fn restarts(&self) -> BTreeSet<(String, String)> {
        self.hosts
            .iter()
            .flat_map(|(h, p)| {
                p.units
                    .iter()
                    .filter(|u| u.restart)
                    .map(move |u| (h.clone(), u.unit.clone()))
            })
            .collect()
    }

    /// Nothing changes, nothing restarts (units may still be made sure to run).
    pub fn is_noop(&self) -> bool {
        self.hosts
            .values()
            .all(|p| p.changes.is_empty() && p.units.iter().all(|u| !u.restart))
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phases: Vec<&str> = self.phases.iter().map(|p| p.name()).collect();
        writeln!(f, "plan for phases {}", phases.join(","))?;
        for (host, p) in &self.hosts {
            writeln!(
                f,
                "{host}: {} to change, {} unchanged",
                p.changes.len(),
                p.unchanged
            )?;
            for c in &p.changes {
                let kind = match c.kind {
                    ChangeKind::Create => "create",
                    ChangeKind::Update => "change",
                    ChangeKind::Metadata => "chmod ",
                };
                writeln!(f, "  {kind} {} ({:o})", c.path, c.file.mode)?;
            }
            if p.daemon_reload {
                writeln!(f, "  systemctl daemon-reload")?;
            }
            for u in &p.units {
                writeln!(
                    f,
                    "  {} {}",
                    if u.restart { "restart" } else { "start  " },
                    u.unit
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, body: &str, units: &[&'static str]) -> File {
        File {
            path: path.into(),
            mode: 0o644,
            contents: body.as_bytes().into(),
            units: units.to_vec(),
            anchor: None,
            restarts: true,
            phase: None,
        }
    }

    fn rendered() -> Rendered {
        let files = vec![
            file("/etc/etcd/pki/server.crt", "cert", &["etcd"]),
            file("/etc/systemd/system/etcd.service", "unit", &["etcd"]),
            file("/etc/hardway/hosts", "hosts", &[]),
            file(
                "/etc/systemd/system/kube-apiserver.service",
                "api",
                &["kube-apiserver"],
            ),
        ];
        Rendered {
            hosts: [("m1".to_string(), files)].into(),
            local: vec![],
        }
    }

    fn same(body: &str) -> RemoteFile {
        RemoteFile {
            sha256: sha256_hex(body.as_bytes()),
            mode: 0o644,
            owner: "root:root".into(),
        }
    }

    #[test]
    fn a_fresh_host_gets_everything_and_a_reload() {
        let p = plan_host(&rendered(), "m1", &BTreeMap::new(), &[Phase::Etcd]);
        assert_eq!(p.changes.len(), 2);
        assert!(p.daemon_reload);
        assert_eq!(p.units.len(), 1);
        assert!(p.units[0].restart);
    }

    #[test]
    fn nothing_changed_means_no_restart_and_no_reload() {
        let remote = [
            ("/etc/etcd/pki/server.crt".to_string(), same("cert")),
            ("/etc/systemd/system/etcd.service".to_string(), same("unit")),
        ]
        .into();
        let p = plan_host(&rendered(), "m1", &remote, &[Phase::Etcd]);
        assert!(p.changes.is_empty());
        assert!(!p.daemon_reload);
        assert!(
            !p.units[0].restart,
            "an unchanged unit is only ensured running"
        );
        assert_eq!(p.unchanged, 2);
    }

    #[test]
    fn a_changed_certificate_restarts_its_unit_without_a_reload() {
        let remote = [
            ("/etc/etcd/pki/server.crt".to_string(), same("old cert")),
            ("/etc/systemd/system/etcd.service".to_string(), same("unit")),
        ]
        .into();
        let p = plan_host(&rendered(), "m1", &remote, &[Phase::Etcd]);
        assert_eq!(p.changes.len(), 1);
        assert_eq!(p.changes[0].kind, ChangeKind::Update);
        assert!(!p.daemon_reload);
        assert!(p.units[0].restart);
    }

    #[test]
    fn a_mode_fix_restarts_nothing() {
        let mut wrong = same("cert");
        wrong.mode = 0o666;
        let remote = [
            ("/etc/etcd/pki/server.crt".to_string(), wrong),
            ("/etc/systemd/system/etcd.service".to_string(), same("unit")),
        ]
        .into();
        let p = plan_host(&rendered(), "m1", &remote, &[Phase::Etcd]);
        assert_eq!(p.changes[0].kind, ChangeKind::Metadata);
        assert!(!p.units[0].restart);
    }

    #[test]
    fn phases_select_files() {
        let p = plan_host(&rendered(), "m1", &BTreeMap::new(), &[Phase::Files]);
        assert_eq!(p.changes.len(), 1);
        assert_eq!(p.changes[0].path, "/etc/hardway/hosts");
        assert!(p.units.is_empty());
        let p = plan_host(&rendered(), "m1", &BTreeMap::new(), &[Phase::ControlPlane]);
        assert_eq!(p.units[0].unit, "kube-apiserver");
    }

    /// A master with etcd deployed and a kube-apiserver unit nobody set up; the new render
    /// changes etcd's certificate, the API server's and a kubeconfig the node lacks.
    fn case() -> (Vec<File>, Facts, BTreeSet<(String, String)>) {
        let files = vec![
            file("/etc/etcd/pki/server.crt", "new", &["etcd"]),
            file("/etc/systemd/system/etcd.service", "etcd unit", &["etcd"]),
            file(
                "/etc/kubernetes/pki/apiserver.crt",
                "new",
                &["kube-apiserver"],
            ),
            file(
                "/etc/systemd/system/kube-apiserver.service",
                "api unit",
                &["kube-apiserver"],
            ),
            file("/etc/kubernetes/admin.kubeconfig", "new", &[]),
            file("/etc/etcd/pki/ca.crt", "ca", &["etcd"]),
        ];
        let facts = Facts {
            files: [
                ("/etc/etcd/pki/server.crt".to_string(), same("old")),
                ("/etc/systemd/system/etcd.service".into(), same("etcd unit")),
                ("/etc/kubernetes/pki/apiserver.crt".into(), same("old")),
                ("/etc/etcd/pki/ca.crt".into(), same("old ca")),
            ]
            .into(),
            units: [
                ("etcd".to_string(), "active".to_string()),
                ("kube-apiserver".into(), "inactive".into()),
            ]
            .into(),
            enabled: ["etcd".to_string()].into(),
            ..Facts::default()
        };
        let affected = [
            "/etc/etcd/pki/server.crt",
            "/etc/kubernetes/pki/apiserver.crt",
            "/etc/kubernetes/admin.kubeconfig",
        ]
        .iter()
        .map(|p| ("m1".to_string(), p.to_string()))
        .collect();
        (files, facts, affected)
    }

    fn paths(picked: &[File]) -> Vec<&str> {
        picked.iter().map(|f| f.path.as_str()).collect()
    }

    #[test]
    fn only_affected_files_the_node_has_with_other_bytes_and_units_deployed_there() {
        let (files, facts, affected) = case();
        let refs: Vec<&File> = files.iter().collect();
        let picked = pick_present("m1", &refs, &facts, &affected, &BTreeSet::new());
        // The kubeconfig the node lacks is not created; the CA bundle differs but the change
        // does not affect it; the API server's certificate goes, restarting nothing.
        assert_eq!(
            paths(&picked),
            [
                "/etc/etcd/pki/server.crt",
                "/etc/kubernetes/pki/apiserver.crt",
                "/etc/systemd/system/etcd.service",
            ]
        );
        let api = picked
            .iter()
            .find(|f| f.path.contains("apiserver"))
            .unwrap();
        assert!(api.units.is_empty(), "{:?}", api.units);
        let plan = Plan {
            phases: vec![],
            hosts: [(
                "m1".to_string(),
                plan_files("m1", &picked.iter().collect::<Vec<_>>(), &facts.files),
            )]
            .into(),
        };
        assert_eq!(
            plan.restarts(),
            [("m1".to_string(), "etcd".to_string())].into()
        );
        assert!(plan.unit_files().is_empty(), "{:?}", plan.unit_files());
        let changed: Vec<&str> = plan.hosts["m1"]
            .changes
            .iter()
            .map(|c| c.path.as_str())
            .collect();
        assert_eq!(
            changed,
            [
                "/etc/etcd/pki/server.crt",
                "/etc/kubernetes/pki/apiserver.crt"
            ]
        );
        // Picked again against a node that has the new bytes: nothing.
        let mut done = facts.clone();
        for f in &picked {
            done.files
                .insert(f.path.clone(), same(&String::from_utf8_lossy(&f.contents)));
        }
        assert!(pick_present("m1", &refs, &done, &affected, &BTreeSet::new()).is_empty());
    }

    #[test]
    fn a_unit_to_restart_again_comes_with_its_unit_file_whose_drift_is_named() {
        let (files, mut facts, _) = case();
        facts.files.insert(
            "/etc/systemd/system/etcd.service".into(),
            same("edited by hand"),
        );
        let refs: Vec<&File> = files.iter().collect();
        let restart = [
            ("m1".to_string(), "etcd".to_string()),
            ("m1".to_string(), "kube-apiserver".to_string()),
            ("m2".to_string(), "etcd".to_string()),
        ]
        .into();
        let picked = pick_present("m1", &refs, &facts, &BTreeSet::new(), &restart);
        assert_eq!(paths(&picked), ["/etc/systemd/system/etcd.service"]);
        let p = plan_files("m1", &picked.iter().collect::<Vec<_>>(), &facts.files);
        assert_eq!(p.units.len(), 1);
        assert!(p.units[0].restart, "its unit file changes");
        let plan = Plan {
            phases: vec![],
            hosts: [("m1".to_string(), p)].into(),
        };
        assert_eq!(plan.unit_files(), ["m1: /etc/systemd/system/etcd.service"]);
        assert!(!plan.is_noop());
    }
}

#[cfg(test)]
mod phase_tests {
    use super::*;

    /// `deploy --phases addons` places what the addons phase applies (the manifests) and no
    /// unit's files; the files phase keeps the files no component reads (the hosts block).
    #[test]
    fn the_addons_phase_places_its_manifests() {
        let r = crate::testing::Fixture::new().rendered();
        let paths = |phases: &[Phase]| -> Vec<String> {
            files_in_phases(&r, "m1", phases)
                .iter()
                .map(|f| f.path.clone())
                .collect()
        };
        let addons = paths(&[Phase::Addons]);
        assert!(
            addons.contains(&"/etc/kubernetes/addons/coredns.yaml".to_string()),
            "{addons:?}"
        );
        assert!(
            addons
                .iter()
                .all(|p| p.starts_with("/etc/kubernetes/addons/")),
            "{addons:?}"
        );
        let files = paths(&[Phase::Files]);
        assert!(
            files.contains(&"/etc/hardway/hosts".to_string()),
            "{files:?}"
        );
        // kubectl's kubeconfig comes with kubectl, in the control-plane phase, whose last step
        // uses them (the kubelet access RBAC).
        let cp = paths(&[Phase::ControlPlane]);
        assert!(
            cp.contains(&"/etc/kubernetes/admin.kubeconfig".to_string())
                && cp
                    .contains(&"/etc/kubernetes/addons/apiserver-to-kubelet-rbac.yaml".to_string()),
            "{cp:?}"
        );
        assert!(
            !files
                .iter()
                .any(|p| p.starts_with("/etc/kubernetes/addons/")),
            "{files:?}"
        );
    }
}
