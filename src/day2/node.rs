//! `hardway node add NAME` and `hardway node remove NAME`: a node into or out of a running
//! cluster, the first master included.
//!
//! Adding is deploy with the node in the inventory (its certificates issued, the CAs and every
//! key kept; a master joins etcd as a learner, promoted once it caught up; HAProxy's backends,
//! `--etcd-servers` and the routes follow), and then waited for as a user judges it: a kubelet's
//! Node Ready, an etcd member voting with every member healthy.
//!
//! For an etcd member, `member remove` comes first — refused when the members left could not
//! keep quorum, or for the last member (`--force` overrides, saying what it risks). Then the
//! node is reset (its units stopped and disabled, hardway's files removed, etcd's data moved
//! aside), and the rest of the cluster is deployed without it: HAProxy's backends, the API
//! servers' `--etcd-servers` and certificate SANs, the routes — API servers restart one at a
//! time, each ready before the next. The inventory still lists the node when the command
//! runs (that is how hardway reaches it); remove it from the file afterwards.
//!
//! A node whose kubelet is registered is cordoned and drained first (`kubectl drain
//! --ignore-daemonsets --delete-emptydir-data`: evictions, so PodDisruptionBudgets are
//! respected), and its Node object is deleted once it is reset. Pods no controller manages,
//! and pods a budget still keeps at the drain's deadline, refuse the removal unless `--force`,
//! which deletes them and says so; the dry run lists the pods each way.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::reset::{ResetOptions, reset};
use super::{Confirm, Day2Error};
use crate::components::Phase;
use crate::deploy::{DeployOptions, DeployReport, deploy};
use crate::events::Events;
use crate::inventory::{Inventory, Node};
use crate::probe::{self, Probe};
use crate::remote::Connector;
use crate::render::Rendered;

#[derive(Debug, Clone, Serialize)]
pub struct RemoveReport {
    pub dry_run: bool,
    pub steps: Vec<String>,
    /// The member removed from etcd, if the node was one.
    pub etcd_member_removed: Option<String>,
    pub reset: bool,
    /// The pods evicted (or, with `--force`, deleted) from the node.
    pub evicted: Vec<String>,
    pub deploy: Option<DeployReport>,
}

pub struct RemoveOptions {
    pub confirm: Confirm,
    /// How the node is drained (`force` is taken from `confirm`).
    pub drain: crate::kube::DrainOptions,
    /// The phases deployed to the rest of the cluster afterwards.
    pub phases: Vec<Phase>,
    pub deploy: DeployOptions,
}

/// The inventory without `name`.
pub fn without(inv: &Inventory, name: &str) -> Inventory {
    let mut rest = inv.clone();
    rest.nodes.retain(|n| n.name != name);
    if rest.load_balancer.as_ref().and_then(|l| l.node.as_deref()) == Some(name) {
        rest.load_balancer = None;
    }
    rest
}

#[allow(clippy::too_many_arguments)]
pub async fn remove(
    inv: &Inventory,
    name: &str,
    pki_dir: &Path,
    connector: Arc<dyn Connector>,
    probe: Arc<dyn Probe>,
    opts: &RemoveOptions,
    events: &Events,
) -> Result<RemoveReport, Day2Error> {
    let node = in_inventory(
        inv,
        name,
        "it lists how to reach the node, so it must still name it",
    )?;
    let rest = without(inv, name);
    if inv.masters().count() == 1 && node.has(crate::inventory::Role::Master) {
        return Err(Day2Error::Refused {
            reason: format!(
                "{name} is the only master: use `hardway reset --all` to take the cluster down"
            ),
        });
    }
    let plan = plan_removal(inv, node, probe.as_ref(), opts).await?;
    let steps: Vec<String> = plan.iter().map(|a| a.describe(inv, name)).collect();
    let mut report = RemoveReport {
        dry_run: opts.confirm.dry_run,
        steps,
        etcd_member_removed: None,
        reset: false,
        evicted: vec![],
        deploy: None,
    };
    if opts.confirm.dry_run {
        return Ok(report);
    }
    if !opts.confirm.yes {
        return Err(Day2Error::NeedsYes {
            what: format!("remove {name} from the cluster"),
            steps: report.steps,
        });
    }

    // The same list the dry run printed, in its order.
    for action in &plan {
        match action {
            Action::Accept(_) | Action::NotAMember | Action::EditInventory => {}
            Action::Drain { .. } => {
                let step = events.start(Some(name), Some("remove"), "cordon and drain");
                let api = crate::kube::Api::new(probe.as_ref(), inv.api_endpoint());
                let drain = crate::kube::DrainOptions {
                    force: opts.confirm.force,
                    ..opts.drain
                };
                match api.drain(name, &drain).await {
                    Ok(d) => {
                        let mut said = d.evicted.clone();
                        said.extend(d.deleted.iter().map(|p| format!("{p} (deleted)")));
                        step.done(
                            crate::events::Status::Changed,
                            Some(format!("evicted {}", said.join(", "))),
                        );
                        report.evicted = said;
                    }
                    Err(e) => {
                        // Nothing else has changed: the node goes back into service.
                        let _ = api.cordon(name, false).await;
                        step.done(crate::events::Status::Failed, Some(e.to_string()));
                        return Err(e.into());
                    }
                }
            }
            Action::DeleteNode => {
                let step = events.start(Some(name), Some("remove"), "delete the Node object");
                let api = crate::kube::Api::new(probe.as_ref(), inv.api_endpoint());
                let gone = api.delete_node(name).await?;
                step.done(
                    if gone {
                        crate::events::Status::Changed
                    } else {
                        crate::events::Status::Ok
                    },
                    None,
                );
            }
            Action::Snapshot { dir } => {
                // Like every change to etcd's membership: a snapshot first (unless --no-snapshot).
                let step = events.start(None, Some("remove"), "etcd snapshot");
                match crate::snapshot::save(inv, probe.as_ref(), dir, opts.deploy.snapshot_keep)
                    .await
                {
                    Ok(info) => step.done(crate::events::Status::Changed, Some(info.file)),
                    // Without quorum there is no snapshot to take; --force has said it goes on.
                    Err(e) if opts.confirm.force => {
                        report.steps.push(format!("--force: no snapshot ({e})"));
                        step.done(crate::events::Status::Failed, Some(e.to_string()));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Action::MoveLeader {
                leader,
                to,
                to_name,
            } => {
                let step = events.start(Some(name), Some("remove"), "hand etcd leadership over");
                probe.etcd_move_leader(*leader, *to).await?;
                // Until every member sees the new leader.
                let members = inv.etcd_members();
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                loop {
                    let now =
                        probe::cluster_status(probe.as_ref(), &members, Duration::from_secs(3))
                            .await;
                    if now
                        .iter()
                        .filter(|s| s.answered())
                        .all(|s| s.leader == Some(*to))
                    {
                        break;
                    }
                    if std::time::Instant::now() >= deadline {
                        return Err(Day2Error::Unhealthy {
                            reason: format!("etcd did not follow {to_name} as leader within 30 s"),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                step.done(
                    crate::events::Status::Changed,
                    Some(format!("{to_name} leads")),
                );
            }
            Action::MemberRemove { via, id, .. } => {
                let step = events.start(Some(name), Some("remove"), "etcd member remove");
                probe.etcd_member_remove(*via, *id).await?;
                step.done(crate::events::Status::Changed, None);
                report.etcd_member_removed = Some(name.to_string());
            }
            Action::Reset => {
                // A node that cannot be reached any more is removed from the cluster all the same.
                let reset_opts = ResetOptions {
                    confirm: Confirm {
                        yes: true,
                        ..opts.confirm
                    },
                    purge: false,
                };
                match reset(inv, &[node], connector.as_ref(), &reset_opts, events).await {
                    Ok(_) => report.reset = true,
                    Err(Day2Error::Unreachable { .. }) => report
                        .steps
                        .push(format!("{name} could not be reached: it was not reset")),
                    Err(e) => return Err(e),
                }
            }
            Action::Deploy { phases } => {
                // The rest of the cluster, without the node: re-issue what names it, then deploy.
                let (pki, _) = crate::session::pki_of(
                    &rest,
                    pki_dir,
                    crate::session::PkiUse::UpToDate { dry_run: false },
                )?;
                let mut dopts = opts.deploy.clone();
                dopts.phases = phases.clone();
                // With the local binaries, as deploy places them: the same files, so nothing reverts.
                let rendered = crate::session::files(&rest, &pki, &dopts.selected())?;
                let deployed = deploy(
                    &rest,
                    rendered,
                    connector.clone(),
                    probe.clone(),
                    &dopts,
                    events.clone(),
                )
                .await?;
                report.deploy = Some(deployed);
            }
        }
    }
    Ok(report)
}

/// How `node add` runs.
pub struct AddOptions {
    /// The deploy that brings the node in (its phases, dry run, timeouts).
    pub deploy: DeployOptions,
    /// How long the node's kubelet may take to register and turn Ready.
    pub ready_timeout: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct AddReport {
    pub dry_run: bool,
    /// What the command does, in order (the dry run's account; each a step below).
    pub steps: Vec<String>,
    pub deploy: DeployReport,
    /// The Node object once Ready: `lab-w3 Ready, kubelet v1.37.2`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// The node's etcd member once it votes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
}

/// One step of `node add`.
#[derive(Debug, Clone)]
enum AddAction {
    /// The node is in the cluster already: the deploy only brings it up to date.
    Already(String),
    Deploy,
    /// Until the node's etcd member votes (no learner) and every member answers.
    Member,
    /// Until the node's kubelet has registered it and it is Ready.
    Ready {
        timeout: Duration,
    },
}

impl AddAction {
    fn describe(&self, inv: &Inventory, node: &Node, phases: &[Phase]) -> String {
        let name = &node.name;
        match self {
            AddAction::Already(what) => format!(
                "{name} is in the cluster already ({what}): the deploy brings it up to date"
            ),
            AddAction::Deploy => {
                let phases: Vec<&str> = phases.iter().map(|p| p.name()).collect();
                let mut s = format!(
                    "deploy the cluster with {name} (phases {}): its certificates issued (every CA and key kept), its files and units",
                    phases.join(",")
                );
                if inv.is_etcd_member(node) {
                    s.push_str("; etcd member add as a learner, promoted once it caught up");
                }
                if node.has(crate::inventory::Role::Master) {
                    s.push_str("; HAProxy's backends and the API servers' --etcd-servers and SANs, API servers one at a time");
                }
                s.push_str("; every node's routes");
                s
            }
            AddAction::Member => {
                format!("etcd: wait until {name} votes and every member is healthy")
            }
            AddAction::Ready { timeout } => format!(
                "wait until the Node {name} is registered and Ready (up to {} s)",
                timeout.as_secs()
            ),
        }
    }
}

/// The node `node add` brings in: `name` must be in the inventory (refused otherwise, naming
/// the file), checked before anything is written.
pub fn listed<'a>(inv: &'a Inventory, name: &str) -> Result<&'a Node, Day2Error> {
    in_inventory(
        inv,
        name,
        "add it there first (a [[nodes]] entry with its name, address and roles), then run node add again",
    )
}

/// The node `name` of the inventory; refused, naming the file and `then` (what to do), when
/// it lacks it.
fn in_inventory<'a>(inv: &'a Inventory, name: &str, then: &str) -> Result<&'a Node, Day2Error> {
    inv.nodes
        .iter()
        .find(|n| n.name == name)
        .ok_or_else(|| Day2Error::Refused {
            reason: format!("{name} is not in {}: {then}", inv.source.display()),
        })
}

/// Brings `name`, listed in the inventory, into the running cluster: deploy with `rendered`
/// (the session's files for every node, the new one's included), then waits for its etcd
/// member and its kubelet as [`AddAction`] says.
pub async fn add(
    inv: &Inventory,
    name: &str,
    rendered: Rendered,
    connector: Arc<dyn Connector>,
    probe: Arc<dyn Probe>,
    opts: &AddOptions,
    events: &Events,
) -> Result<AddReport, Day2Error> {
    let node = listed(inv, name)?;
    let kubelet = crate::components::ComponentId::Kubelet
        .get()
        .runs_on(inv, node);
    let mut plan = Vec::new();
    if kubelet {
        // A kubelet already registered: nothing new joins (deploy is safe to run again).
        let api = crate::kube::Api::new(probe.as_ref(), inv.api_endpoint());
        if let Ok(Some(_)) = api.node(name).await {
            plan.push(AddAction::Already("its Node object exists".into()));
        }
    }
    plan.push(AddAction::Deploy);
    if inv.is_etcd_member(node) {
        plan.push(AddAction::Member);
    }
    if kubelet {
        plan.push(AddAction::Ready {
            timeout: opts.ready_timeout,
        });
    }
    let phases = opts.deploy.selected();
    let deployed = deploy(
        inv,
        rendered,
        connector,
        probe.clone(),
        &opts.deploy,
        events.clone(),
    )
    .await?;
    let mut report = AddReport {
        dry_run: opts.deploy.dry_run,
        steps: plan
            .iter()
            .map(|a| a.describe(inv, node, &phases))
            .collect(),
        deploy: deployed,
        ready: None,
        member: None,
    };
    if report.dry_run || !report.deploy.failed().is_empty() {
        return Ok(report);
    }
    for action in &plan {
        match action {
            AddAction::Already(_) | AddAction::Deploy => {}
            AddAction::Member => {
                let step = events.start(Some(name), Some("add"), "etcd member votes");
                let m = step.finish(voting_member(inv, node, probe.as_ref()).await, |m| {
                    (crate::events::Status::Ok, Some(m.clone()))
                })?;
                report.member = Some(m);
            }
            AddAction::Ready { timeout } => {
                let step = events.start(Some(name), Some("add"), "Node Ready");
                let api = crate::kube::Api::new(probe.as_ref(), inv.api_endpoint());
                let said = step.finish(ready(&api, name, *timeout).await, |said| {
                    (crate::events::Status::Ok, Some(said.clone()))
                })?;
                report.ready = Some(said);
            }
        }
    }
    Ok(report)
}

/// Until the Node `name` is Ready: `lab-w3 Ready, kubelet v1.37.2`.
async fn ready(
    api: &crate::kube::Api<'_>,
    name: &str,
    timeout: Duration,
) -> Result<String, Day2Error> {
    api.wait_ready(name, None, timeout).await?;
    let n = api.node(name).await?.unwrap_or_default();
    Ok(match n["status"]["nodeInfo"]["kubeletVersion"].as_str() {
        Some(v) => format!("{name} Ready, kubelet {v}"),
        None => format!("{name} Ready"),
    })
}

/// `node`'s etcd member as its peers list it — started, voting — with every member of the
/// inventory answering; deploy has waited for this already, so one look is enough.
async fn voting_member(
    inv: &Inventory,
    node: &Node,
    probe: &dyn Probe,
) -> Result<String, Day2Error> {
    let members = inv.etcd_members();
    let statuses = probe::cluster_status(probe, &members, Duration::from_secs(5)).await;
    if !probe::healthy(&statuses) {
        let why: Vec<String> = statuses.iter().map(probe::describe).collect();
        return Err(Day2Error::Unhealthy {
            reason: format!(
                "etcd after adding {} is not healthy (every member answering, one leader): {}",
                node.name,
                why.join("; ")
            ),
        });
    }
    let (list, _) = probe
        .etcd_membership(node.address, Duration::from_secs(5))
        .await?;
    match list.iter().find(|m| m.name == node.name) {
        Some(m) if !m.learner => Ok(format!(
            "{} ({:x}) votes, {} members healthy",
            node.name,
            m.id,
            statuses.len()
        )),
        Some(m) => Err(Day2Error::Unhealthy {
            reason: format!("etcd: {} ({:x}) is still a learner", node.name, m.id),
        }),
        None => Err(Day2Error::Unhealthy {
            reason: format!("etcd: {} is not in the member list", node.name),
        }),
    }
}

/// One step of a removal, decided before anything changes: the dry run prints this list, the
/// real run carries out the same list.
#[derive(Debug, Clone)]
enum Action {
    /// `--force` goes on although this risk.
    Accept(String),
    /// Cordon and drain the node: what its pods become.
    Drain {
        evict: Vec<String>,
        delete: Vec<String>,
        left: Vec<String>,
    },
    /// The Node object deleted from the API, after the reset stopped its kubelet (a running
    /// kubelet would register it again).
    DeleteNode,
    /// An etcd snapshot into `dir` first.
    Snapshot { dir: std::path::PathBuf },
    /// The node leads etcd: hand leadership to `to` first.
    MoveLeader {
        leader: std::net::IpAddr,
        to: u64,
        to_name: String,
    },
    /// etcd's member remove, through another member.
    MemberRemove {
        via: std::net::IpAddr,
        via_name: String,
        id: u64,
    },
    /// The node is an etcd member in the inventory but not in etcd's list any more.
    NotAMember,
    /// The node reset: units stopped and disabled, hardway's files removed, etcd's data aside.
    Reset,
    /// The rest of the cluster deployed without the node.
    Deploy { phases: Vec<Phase> },
    /// What is left to the user: the node out of the inventory file.
    EditInventory,
}

impl Action {
    fn describe(&self, inv: &Inventory, name: &str) -> String {
        match self {
            Action::Accept(risk) => format!("--force: going on although {risk}"),
            Action::Drain {
                evict,
                delete,
                left,
            } => {
                let list = |v: &Vec<String>| {
                    if v.is_empty() {
                        "none".to_string()
                    } else {
                        v.join(", ")
                    }
                };
                let mut s = format!(
                    "cordon and drain {name}: evict {} (PodDisruptionBudgets respected)",
                    list(evict)
                );
                if !delete.is_empty() {
                    s.push_str(&format!(", delete {} (--force)", list(delete)));
                }
                s.push_str(&format!("; DaemonSet and mirror pods stay: {}", list(left)));
                s
            }
            Action::DeleteNode => format!("delete the Node object {name}"),
            Action::Snapshot { dir } => format!("etcd: a snapshot into {} first", dir.display()),
            Action::MoveLeader { to_name, .. } => {
                format!("etcd: {name} leads; hand leadership to {to_name} first")
            }
            Action::MemberRemove { via_name, id, .. } => {
                format!("etcd: member remove {name} ({id:x}), through {via_name}")
            }
            Action::NotAMember => format!("etcd: {name} is not a member any more"),
            Action::Reset => format!(
                "reset {name}: stop and disable hardway's units, remove hardway's files, move etcd's data aside"
            ),
            Action::Deploy { phases } => {
                let phases: Vec<&str> = phases.iter().map(|p| p.name()).collect();
                format!(
                    "deploy the rest of the cluster without {name} (phases {}): HAProxy backends, --etcd-servers and SANs, routes; API servers one at a time",
                    phases.join(",")
                )
            }
            Action::EditInventory => format!("then remove {name} from {}", inv.source.display()),
        }
    }
}

/// The removal of `node`, as a list of actions: for an etcd member, whether the rest keeps
/// quorum (refused otherwise unless `--force`), a snapshot, a leadership hand-over if it
/// leads, and its member removal; then its reset and the deploy of the rest.
async fn plan_removal(
    inv: &Inventory,
    node: &Node,
    probe: &dyn Probe,
    opts: &RemoveOptions,
) -> Result<Vec<Action>, Day2Error> {
    let name = node.name.as_str();
    let mut plan = Vec::new();
    // A registered kubelet's node is drained first and its Node object deleted after.
    let registered = if crate::components::ComponentId::Kubelet
        .get()
        .runs_on(inv, node)
    {
        let api = crate::kube::Api::new(probe, inv.api_endpoint());
        match api.node(name).await {
            Ok(Some(_)) => {
                let d = api.drain_plan(name, opts.confirm.force).await?;
                plan.push(Action::Drain {
                    evict: d.evicted,
                    delete: d.deleted,
                    left: d.left,
                });
                true
            }
            Ok(None) => false,
            Err(e) if opts.confirm.force => {
                plan.push(Action::Accept(format!(
                    "{e}: {name} is not drained and its Node object stays"
                )));
                false
            }
            Err(e) => {
                return Err(Day2Error::Refused {
                    reason: format!(
                        "{e}: {name} cannot be drained (--force removes it without a drain)"
                    ),
                });
            }
        }
    } else {
        false
    };
    if inv.is_etcd_member(node) {
        let members = inv.etcd_members();
        let statuses = probe::cluster_status(probe, &members, Duration::from_secs(3)).await;
        let others: Vec<&probe::MemberStatus> =
            statuses.iter().filter(|s| s.name != name).collect();
        let healthy_others = others
            .iter()
            .filter(|s| s.answered() && s.errors.is_empty())
            .count();
        let left = members.len() - 1;
        let quorum = crate::etcd::quorum(left);
        let via = others.iter().find(|s| s.answered());
        let mut risks = Vec::new();
        if left == 0 {
            risks.push(format!(
                "{name} is the last etcd member: removing it ends the cluster's data"
            ));
        } else if healthy_others < quorum {
            risks.push(format!(
                "after removing {name}, {healthy_others} of the {left} members left are healthy, and they need {quorum} for quorum: the cluster would stop"
            ));
        }
        if !risks.is_empty() && !opts.confirm.force {
            return Err(Day2Error::Refused {
                reason: format!("{} (--force removes it anyway)", risks.join("; ")),
            });
        }
        plan.extend(risks.into_iter().map(Action::Accept));
        let via = via.ok_or_else(|| Day2Error::Unhealthy {
            reason: "no other etcd member answers: nothing to remove the member through".into(),
        })?;
        let (list, _) = probe
            .etcd_membership(via.address, Duration::from_secs(5))
            .await?;
        match list.iter().find(|m| m.name == name) {
            Some(m) => {
                if let Some(dir) = &opts.deploy.snapshot_dir {
                    plan.push(Action::Snapshot { dir: dir.clone() });
                }
                // A leader that is removed steps down and the rest elect another: writes stall
                // meanwhile. Handing leadership over first keeps that to one round trip.
                let this = statuses.iter().find(|s| s.name == name);
                if let Some(this) =
                    this.filter(|s| s.member_id.is_some() && s.member_id == s.leader)
                {
                    let to = others
                        .iter()
                        .find(|s| s.answered() && s.errors.is_empty() && s.member_id.is_some());
                    if let Some(to) = to {
                        plan.push(Action::MoveLeader {
                            leader: this.address,
                            to: to.member_id.expect("checked"),
                            to_name: to.name.clone(),
                        });
                    }
                }
                plan.push(Action::MemberRemove {
                    via: via.address,
                    via_name: via.name.clone(),
                    id: m.id,
                });
            }
            None => plan.push(Action::NotAMember),
        }
    }
    plan.push(Action::Reset);
    if registered {
        plan.push(Action::DeleteNode);
    }
    plan.push(Action::Deploy {
        phases: opts.phases.clone(),
    });
    plan.push(Action::EditInventory);
    Ok(plan)
}
