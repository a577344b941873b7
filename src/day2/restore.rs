//! `hardway etcd restore SNAPSHOT`: the keyspace back to a snapshot, also when quorum is lost
//! (two of three members' disks gone): the API servers and every member stop, each member's
//! data dir is moved aside (never deleted) and restored from the snapshot under its own name
//! and peer URL with a new cluster token, the members start together, and once they agree on
//! a leader the API servers that ran start again. The members are the inventory's: to restore
//! onto fewer members, remove the others from the inventory first.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::{Confirm, Day2Error, connect_all, stamp};
use crate::components::{ComponentId, ETCD_DATA_DIR, ETCD_JOIN_ENV, Port};
use crate::events::{Events, Status};
use crate::inventory::{Inventory, Node, host_for_url};
use crate::probe::{self, MemberStatus, Probe};
use crate::remote::{Connector, EtcdRestore, UnitOps, Upload};

/// Where the snapshot is copied on each member, for the restore only.
const UPLOAD_DIR: &str = "/var/lib/hardway";

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// What was (or, in a dry run, would be) done, in order.
    pub steps: Vec<String>,
    pub dry_run: bool,
    /// Each member's previous data dir, moved aside.
    pub moved_aside: Vec<(String, String)>,
    pub members: Vec<MemberStatus>,
}

pub struct RestoreOptions {
    pub confirm: Confirm,
    pub etcd_timeout: Duration,
}

pub async fn restore(
    inv: &Inventory,
    snapshot: &Path,
    connector: &dyn Connector,
    probe: &dyn Probe,
    opts: &RestoreOptions,
    events: &Events,
) -> Result<RestoreReport, Day2Error> {
    let (info, bytes) = super::snapshot::open(snapshot)?;
    let members: Vec<&Node> = inv.etcd_members();
    let masters: Vec<&Node> = inv.masters().collect();
    let at = stamp();
    let token = format!("{}-etcd-restore-{at}", inv.cluster.name);
    let peer = |n: &Node| format!("https://{}:{}", host_for_url(n.address), Port::EtcdPeer.number(inv));
    let initial: Vec<String> = members.iter().map(|m| format!("{}={}", m.name, peer(m))).collect();
    let names = |ns: &[&Node]| ns.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ");
    let steps = vec![
        format!("check {} against its record: revision {}, SHA-256 {}", snapshot.display(), info.revision, info.sha256),
        format!("stop kube-apiserver where it runs ({})", names(&masters)),
        format!("stop etcd on {}", names(&members)),
        format!("on each member: move {ETCD_DATA_DIR} to {ETCD_DATA_DIR}.before-restore-{at} (kept), restore the snapshot as that member with cluster token {token}"),
        format!("start etcd on {} together and wait for one leader", names(&members)),
        "start kube-apiserver again where it ran".to_string(),
    ];
    let mut report = RestoreReport { steps, dry_run: opts.confirm.dry_run, moved_aside: vec![], members: vec![] };
    if opts.confirm.dry_run {
        return Ok(report);
    }
    if !opts.confirm.yes {
        return Err(Day2Error::NeedsYes { what: "replace etcd's data on every member with the snapshot".into(), steps: report.steps });
    }

    // Every member must be reachable: a member left out would keep its old data and cluster.
    let nodes: Vec<&Node> = inv.nodes.iter().filter(|n| members.iter().any(|m| m.name == n.name) || n.has(crate::inventory::Role::Master)).collect();
    let remotes = connect_all(connector, &nodes, "restore needs every etcd member and master of the inventory (to restore onto fewer members, remove the others from the inventory)")?;
    let remote = |name: &str| remotes.iter().find(|(n, _)| n == name).map(|(_, r)| r.as_ref()).expect("connected above");
    let api = ComponentId::KubeApiserver.get().unit.expect("a unit").to_string();
    let etcd = ComponentId::Etcd.get().unit.expect("a unit").to_string();

    let step = events.start(None, Some("restore"), "stop the API servers and etcd");
    let mut api_ran = Vec::new();
    for m in &masters {
        if remote(&m.name).unit_states(std::slice::from_ref(&api))?.get(&api).is_some_and(|s| s == "active") {
            api_ran.push(m.name.clone());
        }
        remote(&m.name).systemctl(&UnitOps { stop: vec![api.clone()], ..UnitOps::default() })?;
    }
    for m in &members {
        remote(&m.name).systemctl(&UnitOps { stop: vec![etcd.clone()], ..UnitOps::default() })?;
    }
    step.done(Status::Changed, None);

    let copy = format!("{UPLOAD_DIR}/restore-{at}.db");
    for m in &members {
        let step = events.start(Some(&m.name), Some("restore"), "restore the snapshot");
        let r = remote(&m.name);
        if let Some(aside) = r.move_aside(ETCD_DATA_DIR, &format!("before-restore-{at}"))? {
            report.moved_aside.push((m.name.clone(), aside));
        }
        r.install_files(&[Upload { path: &copy, mode: 0o600, contents: &bytes, metadata_only: false }])?;
        let restored = r.restore_etcd(&EtcdRestore {
            snapshot: &copy,
            name: &m.name,
            initial_cluster: &initial.join(","),
            token: &token,
            peer_url: &peer(m),
            data_dir: ETCD_DATA_DIR,
            bin_dir: &inv.binaries.remote_dir,
        });
        // The copy goes either way; a join file from an interrupted join would mislead etcd.
        r.remove_paths(&[copy.clone(), ETCD_JOIN_ENV.to_string()])?;
        restored?;
        step.done(Status::Changed, None);
    }

    let step = events.start(None, Some("restore"), "start etcd on every member, wait for one leader");
    for m in &members {
        remote(&m.name).systemctl(&UnitOps { start: vec![etcd.clone()], no_block: true, ..UnitOps::default() })?;
    }
    let (ok, statuses) = probe::wait_healthy(probe, &members, opts.etcd_timeout).await;
    report.members = statuses;
    if !ok {
        step.done(Status::Failed, None);
        let why: Vec<String> = report.members.iter().map(probe::describe).collect();
        return Err(Day2Error::Unhealthy { reason: format!("etcd did not become healthy after the restore: {}", why.join("; ")) });
    }
    step.done(Status::Ok, None);
    for name in &api_ran {
        remote(name).systemctl(&UnitOps { start: vec![api.clone()], ..UnitOps::default() })?;
    }
    Ok(report)
}
