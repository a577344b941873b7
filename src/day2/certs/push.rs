//! Bringing a change of certificates, trust bundles or keys to a running cluster, on deploy's
//! own machinery: the files that differ between two renders ([`select`]) are pushed only where
//! the node has them already (a renewal never installs a component) and restart only units that
//! are deployed there; deploy's phases then restart them in its safe order — etcd members one
//! at a time, each healthy before the next; API servers one at a time, each `/readyz`; then the
//! controller-manager, scheduler, HAProxy, kubelets and kube-proxy.
//!
//! Before anything changes, [`survey`] reads every node (its files and units) and [`health`]
//! says what is not healthy, which the commands refuse unless `--force`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::components::{ComponentId, Phase, Port};
use crate::deploy::{DeployOptions, DeployReport, deploy};
use crate::digest::sha256_hex;
use crate::events::Events;
use crate::inventory::{Inventory, Node, units_on};
use crate::plan::phase_of_file;
use crate::probe::{self, Probe};
use crate::remote::{Connector, RemoteFile, fan_out};
use crate::render::{File, Rendered};

use super::super::Day2Error;

/// What one node has: its hardway files (hash, mode, owner) and its units.
#[derive(Debug, Clone, Default)]
pub(crate) struct NodeView {
    pub files: BTreeMap<String, RemoteFile>,
    /// Units whose unit file systemd has loaded.
    pub loaded: BTreeSet<String>,
    pub active: BTreeSet<String>,
}

/// Every node as read before a change; nodes that could not be read, with why.
#[derive(Debug, Clone, Default)]
pub(crate) struct Survey {
    pub nodes: BTreeMap<String, NodeView>,
    pub unreachable: Vec<(String, String)>,
}

impl Survey {
    pub fn active(&self, node: &str, unit: &str) -> bool {
        self.nodes
            .get(node)
            .is_some_and(|v| v.active.contains(unit))
    }
}

/// Reads, on every node at once, the files `rendered` has for it and its units' states.
pub(crate) async fn survey(
    inv: &Inventory,
    connector: Arc<dyn Connector>,
    rendered: &Rendered,
    parallel: usize,
) -> Survey {
    type Work = (Node, Vec<String>, Vec<String>, Result<NodeView, String>);
    let work: Vec<Work> = inv
        .nodes
        .iter()
        .map(|n| {
            let paths = rendered
                .hosts
                .get(&n.name)
                .map(|fs| fs.iter().map(|f| f.path.clone()).collect())
                .unwrap_or_default();
            (
                n.clone(),
                paths,
                units_on(inv, n).map(str::to_string).collect(),
                Err(String::new()),
            )
        })
        .collect();
    let done = fan_out(
        work,
        parallel,
        move |(node, paths, units, out): &mut Work| {
            *out = (|| {
                let r = connector.connect(node).map_err(|e| e.to_string())?;
                let files = r.stat_files(paths).map_err(|e| e.to_string())?;
                let infos = r.units(units).map_err(|e| e.to_string())?;
                let loaded = infos
                    .iter()
                    .filter(|(_, i)| i.deployed())
                    .map(|(u, _)| u.clone())
                    .collect();
                let active = infos
                    .iter()
                    .filter(|(_, i)| i.active == "active")
                    .map(|(u, _)| u.clone())
                    .collect();
                Ok(NodeView {
                    files,
                    loaded,
                    active,
                })
            })();
        },
    )
    .await;
    let mut s = Survey::default();
    for (node, _, _, out) in done {
        match out {
            Ok(v) => {
                s.nodes.insert(node.name, v);
            }
            Err(e) => s.unreachable.push((node.name, e)),
        }
    }
    s
}

/// The files to push: per node, every file of `after` that the operation `affects` (by host and
/// file), that the node has already and with other bytes, reading only units deployed there;
/// plus the unit file of each unit they restart or that `restart` names (unchanged, so that
/// deploy's plan knows the unit).
#[derive(Debug, Clone)]
pub(crate) struct Selection {
    pub rendered: Rendered,
    /// `node: path` of every file that changes.
    pub changed: Vec<String>,
    /// Unit files on nodes that differ from what hardway renders: pushing would replace them.
    pub drift: Vec<String>,
}

impl Selection {
    /// The deploy phases that place these files and restart their units. `files` only when a
    /// file no unit reads changes: with it, deploy also merges the hosts block, which a node
    /// deployed without that phase does not have.
    pub fn phases(&self) -> Vec<Phase> {
        let p: BTreeSet<Phase> = self
            .rendered
            .hosts
            .values()
            .flatten()
            .map(phase_of_file)
            .collect();
        p.into_iter().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.changed.is_empty()
    }
}

pub(crate) fn select(
    after: &Rendered,
    survey: &Survey,
    affects: &dyn Fn(&str, &File) -> bool,
    restart: &BTreeSet<(String, String)>,
) -> Selection {
    let mut hosts = BTreeMap::new();
    let (mut changed, mut drift) = (Vec::new(), Vec::new());
    for (node, view) in &survey.nodes {
        let new = after.hosts.get(node).map(Vec::as_slice).unwrap_or_default();
        let mut files: Vec<File> = Vec::new();
        for f in new {
            let differs = view
                .files
                .get(&f.path)
                .is_some_and(|r| r.sha256 != sha256_hex(&f.contents));
            if !differs || !affects(node, f) {
                continue;
            }
            let units = f
                .units
                .iter()
                .copied()
                .filter(|u| view.loaded.contains(*u))
                .collect();
            files.push(File { units, ..f.clone() });
            changed.push(format!("{node}: {}", f.path));
        }
        let mut units: BTreeSet<&str> = files
            .iter()
            .filter(|f| f.restarts)
            .flat_map(|f| f.units.iter().copied())
            .collect();
        units.extend(
            restart
                .iter()
                .filter(|(n, u)| n == node && view.loaded.contains(u))
                .map(|(_, u)| u.as_str()),
        );
        for unit in units {
            let path = format!("/etc/systemd/system/{unit}.service");
            let Some(unit_file) = new.iter().find(|f| f.path == path) else {
                continue;
            };
            if view
                .files
                .get(&path)
                .is_some_and(|r| r.sha256 != sha256_hex(&unit_file.contents))
            {
                drift.push(format!("{node}: {path}"));
            }
            files.push(unit_file.clone());
        }
        if !files.is_empty() {
            files.sort_by(|a, b| a.path.cmp(&b.path));
            hosts.insert(node.clone(), files);
        }
    }
    Selection {
        rendered: Rendered {
            hosts,
            local: vec![],
        },
        changed,
        drift,
    }
}

/// The (node, unit) pairs that the files of `selection` restart.
pub(crate) fn restarts(selection: &Selection) -> BTreeSet<(String, String)> {
    selection
        .rendered
        .hosts
        .iter()
        .flat_map(|(h, fs)| {
            fs.iter()
                .filter(|f| f.restarts && !f.is_unit())
                .flat_map(move |f| f.units.iter().map(move |u| (h.clone(), u.to_string())))
        })
        .collect()
}

/// What keeps a change from being safe now: unreachable nodes, etcd without every member
/// answering and one leader, an API server that runs but is not ready. Empty when healthy.
pub(crate) async fn health(inv: &Inventory, probe: &dyn Probe, survey: &Survey) -> Vec<String> {
    let mut out: Vec<String> = survey
        .unreachable
        .iter()
        .map(|(n, e)| format!("{n} cannot be reached: {e}"))
        .collect();
    let members = inv.etcd_members();
    if !members.is_empty() {
        let statuses = probe::cluster_status(probe, &members, Duration::from_secs(3)).await;
        if !probe::healthy(&statuses) {
            let why: Vec<String> = statuses.iter().map(probe::describe).collect();
            out.push(format!(
                "etcd is not healthy (every member answering, one leader): {}",
                why.join("; ")
            ));
        }
    }
    let api = ComponentId::KubeApiserver.get().unit.expect("a unit");
    for m in inv.masters().filter(|m| survey.active(&m.name, api)) {
        match probe
            .api_get(m.address, Port::ApiServer.number(inv), "/readyz")
            .await
        {
            Ok((200, _)) => {}
            Ok((code, body)) => out.push(format!(
                "the API server on {} answers /readyz with {code}: {}",
                m.name,
                body.trim()
            )),
            Err(e) => out.push(format!(
                "the API server on {} does not answer /readyz: {e}",
                m.name
            )),
        }
    }
    out
}

/// Refuses on `problems` unless `force`; with `force`, returns them as what was skipped.
pub(crate) fn gate(
    problems: Vec<String>,
    force: bool,
    what: &str,
) -> Result<Vec<String>, Day2Error> {
    if problems.is_empty() || force {
        return Ok(problems);
    }
    Err(Day2Error::Unhealthy {
        reason: format!(
            "refusing to {what} on a cluster that is not healthy; nothing was changed:\n  {}\n--force goes on anyway and skips this check",
            problems.join("\n  ")
        ),
    })
}

/// Ends the health check's `step` with `problems` (failed when there are any), then [`gate`]s
/// on them.
pub(crate) fn gate_step(
    step: crate::events::StepTimer,
    problems: Vec<String>,
    force: bool,
    what: &str,
) -> Result<Vec<String>, Day2Error> {
    step.done(
        if problems.is_empty() {
            crate::events::Status::Ok
        } else {
            crate::events::Status::Failed
        },
        Some(problems.join("; ")).filter(|p| !p.is_empty()),
    );
    gate(problems, force, what)
}

/// Deploys `selection` with deploy's phases and rolling restarts (a dry run plans only).
pub(crate) async fn push(
    inv: &Inventory,
    selection: &Selection,
    connector: Arc<dyn Connector>,
    probe: Arc<dyn Probe>,
    base: &DeployOptions,
    events: Events,
) -> Result<DeployReport, Day2Error> {
    // The snapshot is the command's own, taken before the PKI changed.
    let opts = DeployOptions {
        phases: selection.phases(),
        snapshot_dir: None,
        diff: false,
        ..base.clone()
    };
    Ok(deploy(
        inv,
        selection.rendered.clone(),
        connector,
        probe,
        &opts,
        events,
    )
    .await?)
}

/// The plan of a dry run as lines: per host, the files that change and the units restarted.
pub(crate) fn plan_lines(report: &DeployReport) -> Vec<String> {
    let mut out = Vec::new();
    for (host, p) in &report.plan.hosts {
        if p.changes.is_empty() {
            continue;
        }
        let files: Vec<&str> = p.changes.iter().map(|c| c.path.as_str()).collect();
        out.push(format!("{host}: replace {}", files.join(", ")));
    }
    out.extend(
        report
            .steps
            .iter()
            .filter(|s| !s.starts_with("files: "))
            .cloned(),
    );
    out
}
