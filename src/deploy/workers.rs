//! The `workers` phase: containerd, the kubelet, kube-proxy and the pod-network routes on every
//! worker, in the component table's order (containerd before the kubelet that needs it).
//!
//! A worker whose binaries change while its kubelet runs and its Node is registered (an
//! upgrade) is taken out of service first, one worker at a time, as kubeadm's, kubespray's and
//! k0sctl's upgrades do: cordoned and drained through the Eviction API (PodDisruptionBudgets
//! respected, DaemonSet pods left), its components restarted, Ready again at the release
//! deployed, uncordoned — and only then the next. A drain that cannot finish uncordons the node,
//! fails it and stops the upgrade of the workers after it. `--no-drain` restarts in place.
//! Every other worker (a first start, a changed config) restarts in place, all at once.

use super::rollout::{describe_on, roll_out_on};
use super::{Ctx, DeployError, Step};
use crate::components::{COMPONENTS, Component, Phase};
use crate::events::Status;
use crate::kube::Api;

pub(crate) struct Workers;

fn components() -> impl Iterator<Item = &'static Component> {
    COMPONENTS
        .iter()
        .filter(|c| c.phase == Phase::Workers && c.unit.is_some())
}

/// The release a kubelet reports (`v1.37.2`) when it runs the inventory's.
fn wanted(ctx: &Ctx) -> String {
    format!("v{}", ctx.inv.cluster.kubernetes_version)
}

/// Reads the registered Nodes and their kubelets' releases, and who holds the controllers'
/// leases (best effort: without an answer,
/// upgrades are judged by changed binaries alone). A running kubelet whose Node reports another
/// release is behind — an upgrade a previous run placed but did not finish — and its kubelet and
/// kube-proxy are restarted even though no file of theirs changes now.
pub(crate) async fn read_cluster(ctx: &mut Ctx) {
    if ctx.opts.drain.is_none() || !ctx.phases.contains(&Phase::Workers) {
        return;
    }
    let (ip, port) = ctx.inv.api_endpoint();
    let Ok((200, body)) = ctx.probe.api_get(ip, port, "/api/v1/nodes").await else {
        return;
    };
    let api = Api::new(ctx.probe.as_ref(), (ip, port));
    for lease in LEADERS {
        let holder = api.lease_holder(lease).await.ok().flatten();
        ctx.leaders.insert(lease, holder);
    }
    let list: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let kubelets: std::collections::BTreeMap<String, String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| {
            Some((
                n["metadata"]["name"].as_str()?.to_string(),
                n["status"]["nodeInfo"]["kubeletVersion"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            ))
        })
        .collect();
    let want = wanted(ctx);
    for h in ctx
        .hosts
        .iter_mut()
        .filter(|h| h.alive() && h.plan.is_some())
    {
        let running = h.facts.as_ref().is_some_and(|f| f.unit_active("kubelet"));
        if running
            && kubelets
                .get(&h.node.name)
                .is_some_and(|v| !v.is_empty() && *v != want)
        {
            for u in h.plan.as_mut().expect("checked").units.iter_mut() {
                if u.unit == "kubelet" || u.unit == "kube-proxy" {
                    u.restart = true;
                }
            }
        }
    }
    ctx.kubelets = Some(kubelets);
}

/// The leader-elected controllers a drain needs running: the controller-manager keeps
/// Services' endpoints and the disruption budgets' status, the scheduler places what the drain
/// evicts. Their leases are named after them.
const LEADERS: [&str; 2] = ["kube-controller-manager", "kube-scheduler"];

/// Before the first drain: each of [`LEADERS`] restarted by this deploy leads again (a new
/// process holds its lease). Until then an evicted pod would stay in its Services' endpoints,
/// and clients sent to it fail. Failing that, every worker to upgrade fails, nothing drained.
async fn controllers_lead(ctx: &mut Ctx, upgraded: &[usize]) -> bool {
    let restarted: Vec<&'static str> = LEADERS
        .into_iter()
        .filter(|l| {
            ctx.hosts
                .iter()
                .any(|h| h.outcome.restarted.iter().any(|u| u == l))
        })
        .collect();
    if restarted.is_empty() {
        return true;
    }
    let probe = ctx.probe.clone();
    let api = Api::new(probe.as_ref(), ctx.inv.api_endpoint());
    let step = ctx.events.start(
        None,
        Some(Phase::Workers.name()),
        &format!(
            "wait until {} lead again (and a new Service gets its EndpointSlice)",
            restarted.join(" and ")
        ),
    );
    for &lease in &restarted {
        // A holder is `<hostname>_<uuid>`: one on a host whose process did not restart may
        // go on leading; any other must be replaced.
        let before = ctx.leaders.get(lease).cloned().flatten().filter(|b| {
            !ctx.hosts.iter().any(|h| {
                b.starts_with(&format!("{}_", h.node.name))
                    && !h.outcome.restarted.iter().any(|u| u == lease)
            })
        });
        if let Err(e) = api
            .wait_new_leader(lease, before.as_deref(), ctx.opts.api_timeout)
            .await
        {
            step.done(Status::Failed, Some(e.to_string()));
            for &i in upgraded {
                ctx.hosts[i].fail(Phase::Workers, format!("not upgraded: {e}"));
            }
            return false;
        }
    }
    // Leading is not yet working: its caches may still be syncing.
    if restarted.contains(&"kube-controller-manager")
        && let Err(e) = api.endpoint_slices_follow(ctx.opts.api_timeout).await
    {
        step.done(Status::Failed, Some(e.to_string()));
        for &i in upgraded {
            ctx.hosts[i].fail(Phase::Workers, format!("not upgraded: {e}"));
        }
        return false;
    }
    step.done(Status::Ok, None);
    true
}

/// The hosts (by index) upgraded one at a time with a drain: a running kubelet whose Node is
/// registered (or the API did not say), and a changed binary of a worker component or a
/// kubelet at another release than the inventory's.
fn upgrades(ctx: &Ctx) -> Vec<usize> {
    if ctx.opts.drain.is_none() {
        return vec![];
    }
    let want = wanted(ctx);
    ctx.hosts
        .iter()
        .enumerate()
        .filter(|(_, h)| h.alive())
        .filter(|(_, h)| {
            let registered = ctx.kubelets.as_ref().map(|k| k.get(&h.node.name));
            h.facts.as_ref().is_some_and(|f| f.unit_active("kubelet"))
                && registered != Some(None)
                && (registered
                    .flatten()
                    .is_some_and(|v| !v.is_empty() && *v != want)
                    || components().any(|c| {
                        c.runs_on(&ctx.inv, &h.node) && {
                            let bin = c.binary_path(&ctx.inv);
                            h.plan().changes.iter().any(|f| f.path == bin)
                        }
                    }))
        })
        .map(|(i, _)| i)
        .collect()
}

impl Step for Workers {
    async fn run(&self, ctx: &mut Ctx) -> Result<(), DeployError> {
        let mut upgraded = upgrades(ctx);
        if !upgraded.is_empty() && !controllers_lead(ctx, &upgraded).await {
            return Ok(());
        }
        let mut stopped_at: Option<String> = None;
        let mut in_place = Vec::new();
        for &i in &upgraded {
            if let Some(at) = &stopped_at {
                ctx.hosts[i].fail(
                    Phase::Workers,
                    format!("not upgraded: the rolling upgrade of the workers stopped at {at}"),
                );
                continue;
            }
            match upgrade(ctx, i).await? {
                Upgrade::Done => {}
                Upgrade::NotRegistered => in_place.push(i),
                Upgrade::Failed => stopped_at = Some(ctx.hosts[i].node.name.clone()),
            }
        }
        upgraded.retain(|i| !in_place.contains(i));
        for c in components() {
            roll_out_on(ctx, c, None, false, &|i| !upgraded.contains(&i)).await?;
        }
        Ok(())
    }

    fn dry_run(&self, ctx: &Ctx) -> Vec<String> {
        let upgraded = upgrades(ctx);
        let mut out = Vec::new();
        if !upgraded.is_empty() {
            let names: Vec<&str> = upgraded
                .iter()
                .map(|&i| ctx.hosts[i].node.name.as_str())
                .collect();
            let units: Vec<&str> = components().filter_map(|c| c.unit).collect();
            out.push(format!(
                "{}: upgrade {}, one at a time: cordon and drain (evictions; PodDisruptionBudgets respected, DaemonSet pods left), restart {}, wait until Ready at v{}, uncordon",
                Phase::Workers,
                names.join(", then "),
                units.join(", "),
                ctx.inv.cluster.kubernetes_version
            ));
        }
        out.extend(
            components().flat_map(|c| describe_on(ctx, c, None, &|i| !upgraded.contains(&i))),
        );
        out
    }
}

enum Upgrade {
    Done,
    /// No Node object: nothing to drain, so it restarts in place with the others.
    NotRegistered,
    Failed,
}

/// One worker's upgrade: drain, restart, Ready, uncordon. Failures are the host's.
async fn upgrade(ctx: &mut Ctx, i: usize) -> Result<Upgrade, DeployError> {
    let name = ctx.hosts[i].node.name.clone();
    let drain = ctx
        .opts
        .drain
        .expect("upgrades() drains only with drain options");
    let probe = ctx.probe.clone();
    let api = Api::new(probe.as_ref(), ctx.inv.api_endpoint());
    let events = ctx.events.clone();
    let phase = Some(Phase::Workers.name());
    let fail = |ctx: &mut Ctx, step: crate::events::StepTimer, e: String| {
        step.done(Status::Failed, Some(e.clone()));
        ctx.hosts[i].fail(Phase::Workers, e);
        Ok(Upgrade::Failed)
    };

    let step = events.start(Some(&name), phase, "cordon and drain");
    match api.node(&name).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            step.done(
                Status::Skipped,
                Some("no Node object: nothing to drain".into()),
            );
            return Ok(Upgrade::NotRegistered);
        }
        Err(e) => {
            return fail(
                ctx,
                step,
                format!("{e} (--no-drain upgrades without a drain)"),
            );
        }
    }
    match api.drain(&name, &drain).await {
        Ok(d) => {
            let mut moved = d.evicted.clone();
            moved.extend(d.deleted.iter().map(|p| format!("{p} (deleted)")));
            step.done(
                Status::Changed,
                Some(if moved.is_empty() {
                    "nothing to evict".into()
                } else {
                    format!("evicted {}", moved.join(", "))
                }),
            );
            ctx.hosts[i].outcome.evicted = moved;
        }
        Err(e) => {
            // The node goes back into service as it was; nothing on it changed.
            let back = match api.cordon(&name, false).await {
                Ok(_) => "uncordoned it".to_string(),
                Err(u) => format!("could not uncordon it: {u}"),
            };
            return fail(
                ctx,
                step,
                format!("{e}; not upgraded, {back} (--no-drain upgrades without a drain)"),
            );
        }
    }

    for c in components() {
        roll_out_on(ctx, c, None, false, &|j| j == i).await?;
    }
    if !ctx.hosts[i].alive() {
        // A unit that did not come back: the node stays cordoned, out of service.
        return Ok(Upgrade::Failed);
    }

    let version = wanted(ctx);
    let step = events.start(
        Some(&name),
        phase,
        &format!("wait until Ready at {version}"),
    );
    if let Err(e) = api
        .wait_ready(&name, Some(&version), ctx.opts.api_timeout)
        .await
    {
        return fail(ctx, step, format!("{e}; it stays cordoned"));
    }
    step.done(Status::Ok, None);
    let step = events.start(Some(&name), phase, "uncordon");
    if let Err(e) = api.cordon(&name, false).await {
        return fail(ctx, step, e.to_string());
    }
    step.done(Status::Changed, None);
    Ok(Upgrade::Done)
}
