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
use crate::remote::{BUMP_REVISION, Connector, EtcdRestore, RemoteError, UnitOps, Upload};

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
    let (info, bytes) = crate::snapshot::open(snapshot)?;
    if info.cluster != inv.cluster.name {
        return Err(Day2Error::Refused {
            reason: format!(
                "{} is a snapshot of cluster {:?} ({}), not of {:?} ({}): restoring it would put another cluster's keyspace here",
                snapshot.display(),
                info.cluster,
                snapshot.with_extension("json").display(),
                inv.cluster.name,
                inv.source.display()
            ),
        });
    }
    let members: Vec<&Node> = inv.etcd_members();
    let masters: Vec<&Node> = inv.masters().collect();
    let Some(checker) = members.first().map(|m| m.name.clone()) else {
        return Err(Day2Error::Refused {
            reason: format!(
                "{} has no etcd member to restore onto",
                inv.source.display()
            ),
        });
    };
    let at = stamp();
    let token = format!("{}-etcd-restore-{at}", inv.cluster.name);
    let peer = |n: &Node| {
        format!(
            "https://{}:{}",
            host_for_url(n.address),
            Port::EtcdPeer.number(inv)
        )
    };
    let initial: Vec<String> = members
        .iter()
        .map(|m| format!("{}={}", m.name, peer(m)))
        .collect();
    let names = |ns: &[&Node]| {
        ns.iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let copy = format!("{UPLOAD_DIR}/restore-{at}.db");
    let steps = vec![
        format!("check {} against its record: cluster {}, revision {}, SHA-256 {}", snapshot.display(), info.cluster, info.revision, info.sha256),
        format!("copy it to {copy} on {} and check it there with etcdutl snapshot status on {checker}, before anything stops", names(&members)),
        format!("stop kube-controller-manager, kube-scheduler and kube-apiserver where they run ({}): no controller acts on a half-restored keyspace", names(&masters)),
        format!("stop etcd on {}", names(&members)),
        format!("on each member: move {ETCD_DATA_DIR} to {ETCD_DATA_DIR}.before-restore-{at} (kept), restore the snapshot as that member with cluster token {token}, its revision bumped by {BUMP_REVISION} and marked compacted (watchers relist instead of waiting for revisions the restore took back)"),
        format!("start etcd on {} together and wait for one leader", names(&members)),
        "start kube-apiserver again where it ran, each answering /readyz, then kube-controller-manager and kube-scheduler where they ran".to_string(),
        "if a member's restore fails: put every data dir back, start etcd and the control plane that ran, and say so".to_string(),
    ];
    let mut report = RestoreReport {
        steps,
        dry_run: opts.confirm.dry_run,
        moved_aside: vec![],
        members: vec![],
    };
    if opts.confirm.dry_run {
        return Ok(report);
    }
    if !opts.confirm.yes {
        return Err(Day2Error::NeedsYes {
            what: "replace etcd's data on every member with the snapshot".into(),
            steps: report.steps,
        });
    }

    // Every member must be reachable: a member left out would keep its old data and cluster.
    let nodes: Vec<&Node> = inv
        .nodes
        .iter()
        .filter(|n| {
            members.iter().any(|m| m.name == n.name) || n.has(crate::inventory::Role::Master)
        })
        .collect();
    let remotes = connect_all(
        connector,
        &nodes,
        "restore needs every etcd member and master of the inventory (to restore onto fewer members, remove the others from the inventory)",
    )?;
    let remote = |name: &str| session(&remotes, name);
    let etcd = ComponentId::Etcd.get().unit.expect("a unit").to_string();
    let remove_copies = || {
        for m in &members {
            let _ = remote(&m.name).remove_paths(std::slice::from_ref(&copy));
        }
    };

    // The snapshot on every member, and checked by etcd's own tool on one, before anything stops.
    let step = events.start(
        Some(&checker),
        Some("restore"),
        "copy the snapshot to every member and check it with etcdutl",
    );
    for m in &members {
        if let Err(e) = remote(&m.name).install_files(&[Upload {
            path: &copy,
            mode: 0o600,
            contents: &bytes,
            metadata_only: false,
        }]) {
            remove_copies();
            step.done(Status::Failed, Some(e.to_string()));
            return Err(Day2Error::Refused {
                reason: format!(
                    "copying {} to {}: {e}; nothing was stopped",
                    snapshot.display(),
                    m.name
                ),
            });
        }
    }
    match remote(&checker).snapshot_status(&copy, &inv.binaries.remote_dir) {
        Ok(Ok(status)) => step.done(Status::Ok, Some(status)),
        Ok(Err(why)) => {
            remove_copies();
            step.done(Status::Failed, Some(why.clone()));
            return Err(Day2Error::Refused {
                reason: format!(
                    "{} is not an etcd snapshot etcd can restore: `etcdutl snapshot status` on {checker} says: {why}; nothing was stopped",
                    snapshot.display()
                ),
            });
        }
        Err(e) => {
            remove_copies();
            step.done(Status::Failed, Some(e.to_string()));
            return Err(Day2Error::Refused {
                reason: format!(
                    "checking {} on {checker}: {e}; nothing was stopped",
                    snapshot.display()
                ),
            });
        }
    }

    let step = events.start(None, Some("restore"), "stop the control plane and etcd");
    let mut stopped = Stopped::default();
    let stopping = (|| -> Result<(), RemoteError> {
        // The controllers before the API servers they talk to.
        for unit in CONTROL_PLANE.iter().rev() {
            let unit = unit.get().unit.expect("a unit").to_string();
            for m in &masters {
                if remote(&m.name)
                    .unit_states(std::slice::from_ref(&unit))?
                    .get(&unit)
                    .is_some_and(|s| s == "active")
                {
                    stopped.control.push((m.name.clone(), unit.clone()));
                }
                remote(&m.name).systemctl(&UnitOps {
                    stop: vec![unit.clone()],
                    ..UnitOps::default()
                })?;
            }
        }
        for m in &members {
            if remote(&m.name)
                .unit_states(std::slice::from_ref(&etcd))?
                .get(&etcd)
                .is_some_and(|s| s == "active")
            {
                stopped.etcd.push(m.name.clone());
            }
            remote(&m.name).systemctl(&UnitOps {
                stop: vec![etcd.clone()],
                ..UnitOps::default()
            })?;
        }
        Ok(())
    })();
    if let Err(e) = stopping {
        step.done(Status::Failed, Some(e.to_string()));
        let back = put_back(
            inv,
            &remotes,
            probe,
            &members,
            &stopped,
            (&[], &[]),
            &at,
            opts.etcd_timeout,
        )
        .await;
        remove_copies();
        return Err(Day2Error::Restore(format!(
            "stopping the cluster for the restore failed: {e}. {back}"
        )));
    }
    step.done(Status::Changed, None);

    for m in &members {
        let step = events.start(Some(&m.name), Some("restore"), "restore the snapshot");
        let r = remote(&m.name);
        let restored = (|| -> Result<(), RemoteError> {
            if let Some(aside) = r.move_aside(ETCD_DATA_DIR, &format!("before-restore-{at}"))? {
                report.moved_aside.push((m.name.clone(), aside));
            }
            r.restore_etcd(&EtcdRestore {
                snapshot: &copy,
                name: &m.name,
                initial_cluster: &initial.join(","),
                token: &token,
                peer_url: &peer(m),
                data_dir: ETCD_DATA_DIR,
                bin_dir: &inv.binaries.remote_dir,
            })
        })();
        if let Err(e) = restored {
            step.done(Status::Failed, Some(e.to_string()));
            let touched: Vec<String> = members
                .iter()
                .take_while(|x| x.name != m.name)
                .map(|x| x.name.clone())
                .chain([m.name.clone()])
                .collect();
            let back = put_back(
                inv,
                &remotes,
                probe,
                &members,
                &stopped,
                (&touched, &report.moved_aside),
                &at,
                opts.etcd_timeout,
            )
            .await;
            remove_copies();
            return Err(Day2Error::Restore(format!(
                "restoring the snapshot on {} failed: {e}. {back}",
                m.name
            )));
        }
        step.done(Status::Changed, None);
    }
    // The copies go; a join file from an interrupted join would mislead etcd.
    for m in &members {
        remote(&m.name).remove_paths(&[copy.clone(), ETCD_JOIN_ENV.to_string()])?;
    }

    let step = events.start(
        None,
        Some("restore"),
        "start etcd on every member, wait for one leader",
    );
    for m in &members {
        remote(&m.name).systemctl(&UnitOps {
            start: vec![etcd.clone()],
            no_block: true,
            ..UnitOps::default()
        })?;
    }
    let (ok, statuses) = probe::wait_healthy(probe, &members, opts.etcd_timeout).await;
    report.members = statuses;
    if !ok {
        step.done(Status::Failed, None);
        let why: Vec<String> = report.members.iter().map(probe::describe).collect();
        let aside: Vec<String> = report
            .moved_aside
            .iter()
            .map(|(n, a)| format!("{n}: {a}"))
            .collect();
        return Err(Day2Error::Unhealthy {
            reason: format!(
                "etcd did not become healthy after the restore: {}. The members run with the restored data; their data from before is kept ({}); the control plane stays stopped ({})",
                why.join("; "),
                aside.join(", "),
                stopped.describe()
            ),
        });
    }
    step.done(Status::Ok, None);
    let step = events.start(
        None,
        Some("restore"),
        "start the API servers, each ready, then the controllers",
    );
    let (_, problems) =
        start_control_plane(inv, &remotes, probe, &stopped, opts.etcd_timeout).await;
    if !problems.is_empty() {
        step.done(Status::Failed, Some(problems.join("; ")));
        return Err(Day2Error::Unhealthy {
            reason: format!(
                "etcd runs with the restored data, but the control plane did not come back: {}",
                problems.join("; ")
            ),
        });
    }
    step.done(Status::Changed, None);
    Ok(report)
}

/// The control plane's units a restore stops and starts again, in the order they start: the
/// API server first (the others talk to it), then the controllers.
const CONTROL_PLANE: [ComponentId; 3] = [
    ComponentId::KubeApiserver,
    ComponentId::KubeControllerManager,
    ComponentId::KubeScheduler,
];

/// The session to `name`, among those `connect_all` opened for every node the restore works
/// on.
fn session<'a>(remotes: &'a [super::Session], name: &str) -> &'a dyn crate::remote::Remote {
    remotes
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, r)| r.as_ref())
        .expect("connect_all connected every node the restore works on")
}

/// What the restore stopped: (master, unit) of the control plane that ran, in the order
/// stopped; the members whose etcd ran.
#[derive(Default)]
struct Stopped {
    control: Vec<(String, String)>,
    etcd: Vec<String>,
}

impl Stopped {
    fn describe(&self) -> String {
        if self.control.is_empty() {
            return "none ran".into();
        }
        self.control
            .iter()
            .map(|(n, u)| format!("{u} on {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Starts what the restore stopped of the control plane: every API server that ran, each
/// waited for until `/readyz` answers 200 (within `timeout`), then the controller-manager and
/// scheduler where they ran — only once the API answers, so that they start from the restored
/// state. What started, as `unit on node`, and what did not.
async fn start_control_plane(
    inv: &Inventory,
    remotes: &[super::Session],
    probe: &dyn Probe,
    stopped: &Stopped,
    timeout: Duration,
) -> (Vec<String>, Vec<String>) {
    let remote = |name: &str| session(remotes, name);
    let (mut started, mut problems) = (Vec::new(), Vec::new());
    for (k, id) in CONTROL_PLANE.iter().enumerate() {
        let unit = id.get().unit.expect("a unit");
        for (name, _) in stopped.control.iter().filter(|(_, u)| u == unit) {
            match remote(name).systemctl(&UnitOps {
                start: vec![unit.to_string()],
                ..UnitOps::default()
            }) {
                Ok(()) => started.push(format!("{unit} on {name}")),
                Err(e) => problems.push(format!("{name}: {unit} does not start ({e})")),
            }
        }
        if k == 0 {
            for (name, _) in stopped.control.iter().filter(|(_, u)| u == unit) {
                let Some(node) = inv.nodes.iter().find(|n| &n.name == name) else {
                    continue;
                };
                if let Err(last) =
                    probe::wait_readyz(probe, node.address, Port::ApiServer.number(inv), timeout)
                        .await
                {
                    problems.push(format!(
                        "{name}: kube-apiserver did not answer /readyz within {} s ({last})",
                        timeout.as_secs()
                    ));
                }
            }
            if !problems.is_empty() {
                // The controllers stay stopped rather than start against an API not there.
                let rest: Vec<String> = stopped
                    .control
                    .iter()
                    .filter(|(_, u)| u != unit)
                    .map(|(n, u)| format!("{u} on {n}"))
                    .collect();
                if !rest.is_empty() {
                    problems.push(format!("not started: {}", rest.join(", ")));
                }
                break;
            }
        }
    }
    (started, problems)
}

/// Undoes a restore that failed after stopping the cluster: on each member the restore reached
/// (`touched`), what it began is moved aside (never deleted) and the data dir it had moved aside
/// (`moved_aside`) is moved back; etcd starts again where it ran and is waited for, then the API
/// servers that ran. Returns what it did and the state the cluster is in, for the error.
#[allow(clippy::too_many_arguments)]
async fn put_back(
    inv: &Inventory,
    remotes: &[super::Session],
    probe: &dyn Probe,
    members: &[&Node],
    stopped: &Stopped,
    (touched, moved_aside): (&[String], &[(String, String)]),
    at: &str,
    timeout: Duration,
) -> String {
    let remote = |name: &str| session(remotes, name);
    let etcd = ComponentId::Etcd.get().unit.expect("a unit").to_string();
    let mut problems = Vec::new();
    let mut back = Vec::new();
    for name in touched {
        let r = remote(name);
        let aside = moved_aside.iter().find(|(n, _)| n == name).map(|(_, a)| a);
        let undone = r
            .move_aside(ETCD_DATA_DIR, &format!("failed-restore-{at}"))
            .and_then(|_| match aside {
                Some(a) => r.move_back(a, ETCD_DATA_DIR),
                None => Ok(()),
            });
        match (undone, aside) {
            (Ok(()), Some(_)) => back.push(name.clone()),
            (Ok(()), None) => {}
            (Err(e), Some(a)) => problems.push(format!("{name}: its data dir stays at {a} ({e})")),
            (Err(e), None) => problems.push(format!(
                "{name}: what the restore began stays at {ETCD_DATA_DIR} ({e})"
            )),
        }
    }
    let mut started = Vec::new();
    for name in &stopped.etcd {
        match remote(name).systemctl(&UnitOps {
            start: vec![etcd.clone()],
            no_block: true,
            ..UnitOps::default()
        }) {
            Ok(()) => started.push(name.clone()),
            Err(e) => problems.push(format!("{name}: etcd does not start ({e})")),
        }
    }
    let ran: Vec<&Node> = members
        .iter()
        .copied()
        .filter(|m| stopped.etcd.contains(&m.name))
        .collect();
    let healthy = if ran.is_empty() {
        true
    } else {
        let (ok, statuses) = probe::wait_healthy(probe, &ran, timeout).await;
        if !ok {
            problems.push(format!(
                "etcd is not healthy again: {}",
                statuses
                    .iter()
                    .map(probe::describe)
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        ok
    };
    let mut control_started = Vec::new();
    if healthy {
        let (started, trouble) = start_control_plane(inv, remotes, probe, stopped, timeout).await;
        control_started = started;
        problems.extend(trouble);
    } else if !stopped.control.is_empty() {
        problems.push(format!(
            "the control plane stays stopped ({})",
            stopped.describe()
        ));
    }
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    let did = format!(
        "What it stopped is put back: the data dirs of {} moved back to {ETCD_DATA_DIR}, etcd started again on {}, started again: {}",
        list(&back),
        list(&started),
        list(&control_started)
    );
    if problems.is_empty() {
        format!(
            "{did}: the cluster is as it was before the restore (cluster {})",
            inv.cluster.name
        )
    } else {
        format!(
            "{did}; but: {}. The cluster is NOT as it was before the restore",
            problems.join("; ")
        )
    }
}
