//! `hardway reset [NODE...|--all]`: a node back to how it was before hardway. Every unit
//! hardway placed is stopped and disabled, every file hardway placed is removed (each node keeps
//! the list, `remote::PLACED`, so nothing else is touched), the cluster's block leaves
//! /etc/hosts, and etcd's data dir is moved aside (`--purge` deletes it). A second reset finds
//! nothing to do.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;

use super::{Confirm, Day2Error, connect_all, stamp};
use crate::components::{CONTAINERD_SOCKET, ComponentId, ETCD_DATA_DIR};
use crate::events::{Events, Status};
use crate::inventory::{Inventory, Node};
use crate::probe::{self, Probe};
use crate::remote::{Connector, PLACED, UnitOps, VERSION_CACHE};

#[derive(Debug, Clone, Serialize)]
pub struct NodeReset {
    pub node: String,
    pub units_stopped: Vec<String>,
    pub files_removed: usize,
    /// etcd's data dir, moved aside to this path (or removed with --purge).
    pub data_dir: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResetReport {
    pub dry_run: bool,
    pub steps: Vec<String>,
    pub nodes: Vec<NodeReset>,
}

pub struct ResetOptions {
    pub confirm: Confirm,
    /// Delete etcd's data dir instead of moving it aside.
    pub purge: bool,
}

/// The units whose unit files hardway placed on the node (only those: a distribution's own
/// haproxy or etcd unit is not hardway's to stop).
fn placed_units(placed: &[String]) -> Vec<String> {
    placed
        .iter()
        .filter_map(|p| {
            p.strip_prefix("/etc/systemd/system/")?
                .strip_suffix(".service")
        })
        .map(str::to_string)
        .collect()
}

/// Refuses to reset etcd members that still run as members of the cluster, unless the whole
/// cluster goes (`all`) or `force`: an etcd member leaves with `hardway node remove`, not with
/// a reset that the others would see as a dead member.
pub async fn refuse_running_members(
    inv: &Inventory,
    nodes: &[&Node],
    probe: &dyn Probe,
    all: bool,
    force: bool,
) -> Result<(), Day2Error> {
    let members: Vec<&&Node> = nodes.iter().filter(|n| inv.is_etcd_member(n)).collect();
    if all || force || members.is_empty() {
        return Ok(());
    }
    let statuses = probe::cluster_status(probe, &inv.etcd_members(), Duration::from_secs(3)).await;
    let running: Vec<&str> = statuses
        .iter()
        .filter(|s| s.answered() && members.iter().any(|m| m.name == s.name))
        .map(|s| s.name.as_str())
        .collect();
    if running.is_empty() {
        return Ok(());
    }
    Err(Day2Error::Refused {
        reason: format!(
            "{} still run as etcd members of the cluster; `hardway node remove` takes a member out first (--force resets it anyway, and the cluster loses that member)",
            running.join(", ")
        ),
    })
}

pub async fn reset(
    inv: &Inventory,
    nodes: &[&Node],
    connector: &dyn Connector,
    opts: &ResetOptions,
    events: &Events,
) -> Result<ResetReport, Day2Error> {
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    let data = if opts.purge {
        format!("delete {ETCD_DATA_DIR}")
    } else {
        format!("move {ETCD_DATA_DIR} aside (kept)")
    };
    let steps = vec![
        format!(
            "on {}: where a kubelet runs, stop it and remove every pod (crictl rmp --all); stop and disable hardway's units",
            names.join(", ")
        ),
        format!(
            "remove every file hardway placed (the list in {PLACED}), and the cluster's block from /etc/hosts"
        ),
        format!("{data}; systemctl daemon-reload"),
    ];
    let mut report = ResetReport {
        dry_run: opts.confirm.dry_run,
        steps,
        nodes: vec![],
    };
    if opts.confirm.dry_run {
        return Ok(report);
    }
    if !opts.confirm.yes {
        return Err(Day2Error::NeedsYes {
            what: format!("reset {}", names.join(", ")),
            steps: report.steps,
        });
    }
    let remotes = connect_all(connector, nodes, "reset works on reachable nodes only")?;
    let at = stamp();
    for (name, r) in &remotes {
        let step = events.start(Some(name), Some("reset"), "reset");
        let placed = r.placed_files()?;
        let units = placed_units(&placed);
        // A worker's pods first, as `kubeadm reset` removes them: the kubelet stopped so that it
        // starts none again, then every sandbox removed through containerd while it runs —
        // stopping containerd leaves its shims, and the containers, running (a MetalLB speaker
        // of a removed node would go on answering for its addresses).
        if units.iter().any(|u| u == "kubelet") {
            r.systemctl(&UnitOps {
                stop: vec!["kubelet".into()],
                ..UnitOps::default()
            })?;
            let crictl = ComponentId::Kubelet
                .get()
                .executables(inv)
                .into_iter()
                .find(|(name, _)| *name == "crictl")
                .map(|(_, path)| path)
                .expect("crictl ships with the kubelet");
            r.remove_pods(&crictl, CONTAINERD_SOCKET)?;
        }
        r.systemctl(&UnitOps {
            stop: units.clone(),
            disable: units.clone(),
            ..UnitOps::default()
        })?;
        // Only where hardway ran etcd: another etcd's data is not hardway's.
        let data_dir = match (units.iter().any(|u| u == "etcd"), opts.purge) {
            (false, _) => None,
            (true, true) => {
                r.remove_paths(&[ETCD_DATA_DIR.to_string()])?;
                None
            }
            (true, false) => r.move_aside(ETCD_DATA_DIR, &format!("reset-{at}"))?,
        };
        let mut remove: BTreeSet<String> = placed.iter().cloned().collect();
        remove.insert(PLACED.to_string());
        remove.insert(VERSION_CACHE.to_string());
        r.remove_paths(&remove.into_iter().collect::<Vec<_>>())?;
        r.remove_hosts_block(&inv.cluster.name, "/etc/hosts")?;
        r.systemctl(&UnitOps {
            daemon_reload: true,
            ..UnitOps::default()
        })?;
        let done = NodeReset {
            node: name.clone(),
            units_stopped: units,
            files_removed: placed.len(),
            data_dir,
        };
        step.done(
            if placed.is_empty() {
                Status::Ok
            } else {
                Status::Changed
            },
            Some(format!("{} files removed", done.files_removed)),
        );
        report.nodes.push(done);
    }
    Ok(report)
}
