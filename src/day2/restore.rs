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
    let copy = format!("{UPLOAD_DIR}/restore-{at}.db");
    let plan = Plan {
        snapshot,
        info: &info,
        members: &members,
        masters: &masters,
        checker: &checker,
        at: &at,
        token: &token,
        copy: &copy,
    };
    let mut steps: Vec<String> = STEPS.iter().map(|s| plan.describe(*s)).collect();
    steps.push(ON_FAILURE.to_string());
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
    let mut stopped = Stopped::default();
    // What a failure after the cluster stopped puts back, and says.
    let put_back_after =
        async |what: String, stopped: &Stopped, touched: &[String], aside: &[(String, String)]| {
            let back = put_back(
                inv,
                &remotes,
                probe,
                &members,
                stopped,
                (touched, aside),
                &at,
                opts.etcd_timeout,
            )
            .await;
            remove_copies();
            Day2Error::Restore(format!("{what}. {back}"))
        };

    // The same list the dry run printed, in its order.
    for step in STEPS {
        match step {
            // Done before the list was made: `snapshot::open` and the cluster's name.
            Step::Check => {}
            // The snapshot on every member, and checked by etcd's own tool on one, before
            // anything stops.
            Step::CopyAndCheck => {
                let ev = events.start(
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
                        ev.done(Status::Failed, Some(e.to_string()));
                        return Err(Day2Error::Refused {
                            reason: format!(
                                "copying {} to {}: {e}; nothing was stopped",
                                snapshot.display(),
                                m.name
                            ),
                        });
                    }
                }
                let why = match remote(&checker).snapshot_status(&copy, &inv.binaries.remote_dir) {
                    Ok(Ok(status)) => {
                        ev.done(Status::Ok, Some(status));
                        continue;
                    }
                    Ok(Err(why)) => format!(
                        "{} is not an etcd snapshot etcd can restore: `etcdutl snapshot status` on {checker} says: {why}; nothing was stopped",
                        snapshot.display()
                    ),
                    Err(e) => format!(
                        "checking {} on {checker}: {e}; nothing was stopped",
                        snapshot.display()
                    ),
                };
                remove_copies();
                ev.done(Status::Failed, Some(why.clone()));
                return Err(Day2Error::Refused { reason: why });
            }
            // The controllers before the API servers they talk to.
            Step::StopControlPlane => {
                let ev = events.start(None, Some("restore"), "stop the control plane");
                let stopping = (|| -> Result<(), RemoteError> {
                    for unit in CONTROL_PLANE.iter().rev() {
                        let unit = unit.get().unit.expect("a unit").to_string();
                        for m in &masters {
                            if stop_if_active(remote(&m.name), &unit)? {
                                stopped.control.push((m.name.clone(), unit.clone()));
                            }
                        }
                    }
                    Ok(())
                })();
                if let Err(e) = stopping {
                    ev.done(Status::Failed, Some(e.to_string()));
                    let what = format!("stopping the control plane for the restore failed: {e}");
                    return Err(put_back_after(what, &stopped, &[], &[]).await);
                }
                ev.done(Status::Changed, Some(stopped.describe()));
            }
            Step::StopEtcd => {
                let ev = events.start(None, Some("restore"), "stop etcd");
                let stopping = (|| -> Result<(), RemoteError> {
                    for m in &members {
                        if stop_if_active(remote(&m.name), &etcd)? {
                            stopped.etcd.push(m.name.clone());
                        }
                    }
                    Ok(())
                })();
                if let Err(e) = stopping {
                    ev.done(Status::Failed, Some(e.to_string()));
                    let what = format!("stopping etcd for the restore failed: {e}");
                    return Err(put_back_after(what, &stopped, &[], &[]).await);
                }
                ev.done(Status::Changed, None);
            }
            Step::Restore => {
                for m in &members {
                    let ev = events.start(Some(&m.name), Some("restore"), "restore the snapshot");
                    let r = remote(&m.name);
                    let restored = (|| -> Result<(), RemoteError> {
                        if let Some(aside) =
                            r.move_aside(ETCD_DATA_DIR, &format!("before-restore-{at}"))?
                        {
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
                        ev.done(Status::Failed, Some(e.to_string()));
                        let touched: Vec<String> = members
                            .iter()
                            .take_while(|x| x.name != m.name)
                            .map(|x| x.name.clone())
                            .chain([m.name.clone()])
                            .collect();
                        let what = format!("restoring the snapshot on {} failed: {e}", m.name);
                        return Err(
                            put_back_after(what, &stopped, &touched, &report.moved_aside).await,
                        );
                    }
                    ev.done(Status::Changed, None);
                }
                // The copies go; a join file from an interrupted join would mislead etcd.
                for m in &members {
                    remote(&m.name).remove_paths(&[copy.clone(), ETCD_JOIN_ENV.to_string()])?;
                }
            }
            Step::StartEtcd => {
                let ev = events.start(
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
                    ev.done(Status::Failed, None);
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
                ev.done(Status::Ok, None);
            }
            Step::StartControlPlane => {
                let ev = events.start(
                    None,
                    Some("restore"),
                    "start the API servers, each ready, then the controllers",
                );
                let (_, problems) =
                    start_control_plane(inv, &remotes, probe, &stopped, opts.etcd_timeout).await;
                if !problems.is_empty() {
                    ev.done(Status::Failed, Some(problems.join("; ")));
                    return Err(Day2Error::Unhealthy {
                        reason: format!(
                            "etcd runs with the restored data, but the control plane did not come back: {}",
                            problems.join("; ")
                        ),
                    });
                }
                ev.done(Status::Changed, None);
            }
        }
    }
    Ok(report)
}

/// One step of a restore, in the order it runs: the dry run prints [`STEPS`], the real run
/// carries out the same list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The snapshot against its record and this cluster.
    Check,
    /// Copied to every member and opened by `etcdutl snapshot status` on one, before anything stops.
    CopyAndCheck,
    /// The controllers, then the API servers, where they run.
    StopControlPlane,
    StopEtcd,
    /// Each member's data dir moved aside and restored from the snapshot as that member.
    Restore,
    /// Every member at once, until they agree on a leader.
    StartEtcd,
    /// The API servers that ran, each ready, then the controllers that ran.
    StartControlPlane,
}

const STEPS: [Step; 7] = [
    Step::Check,
    Step::CopyAndCheck,
    Step::StopControlPlane,
    Step::StopEtcd,
    Step::Restore,
    Step::StartEtcd,
    Step::StartControlPlane,
];

/// What a failure after the cluster stopped does (the last line of the dry run).
const ON_FAILURE: &str = "if a member's restore fails: put every data dir back, start etcd and the control plane that ran, and say so";

/// What the steps are about, for their descriptions.
struct Plan<'a> {
    snapshot: &'a Path,
    info: &'a crate::snapshot::SnapshotInfo,
    members: &'a [&'a Node],
    masters: &'a [&'a Node],
    checker: &'a str,
    at: &'a str,
    token: &'a str,
    copy: &'a str,
}

impl Plan<'_> {
    fn describe(&self, step: Step) -> String {
        let names = |ns: &[&Node]| {
            ns.iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (at, members) = (self.at, names(self.members));
        match step {
            Step::Check => format!(
                "check {} against its record: cluster {}, revision {}, SHA-256 {}",
                self.snapshot.display(),
                self.info.cluster,
                self.info.revision,
                self.info.sha256
            ),
            Step::CopyAndCheck => format!(
                "copy it to {} on {members} and check it there with etcdutl snapshot status on {}, before anything stops",
                self.copy, self.checker
            ),
            Step::StopControlPlane => format!(
                "stop kube-controller-manager, kube-scheduler and kube-apiserver where they run ({}): no controller acts on a half-restored keyspace",
                names(self.masters)
            ),
            Step::StopEtcd => format!("stop etcd on {members}"),
            Step::Restore => format!(
                "on each member: move {ETCD_DATA_DIR} to {ETCD_DATA_DIR}.before-restore-{at} (kept), restore the snapshot as that member with cluster token {}, its revision bumped by {BUMP_REVISION} and marked compacted (watchers relist instead of waiting for revisions the restore took back)",
                self.token
            ),
            Step::StartEtcd => format!("start etcd on {members} together and wait for one leader"),
            Step::StartControlPlane => "start kube-apiserver again where it ran, each answering /readyz, then kube-controller-manager and kube-scheduler where they ran".to_string(),
        }
    }
}

/// Stops `unit` on the node; whether it was running (and so is started again afterwards).
fn stop_if_active(remote: &dyn crate::remote::Remote, unit: &str) -> Result<bool, RemoteError> {
    let active = remote
        .unit_states(&[unit.to_string()])?
        .get(unit)
        .is_some_and(|s| s == "active");
    remote.systemctl(&UnitOps {
        stop: vec![unit.to_string()],
        ..UnitOps::default()
    })?;
    Ok(active)
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
