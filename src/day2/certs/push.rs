//! Bringing a change of certificates, trust bundles or keys to a running cluster, on deploy's
//! own planner and phases. [`open`] prepares a deploy of the new render scoped to the files
//! the change affects ([`Scope::Present`]): each goes only where the node has it already (a
//! renewal never installs a component) and restarts only units deployed there; deploy's
//! phases then restart them in its safe order — etcd members one at a time, each healthy
//! before the next; API servers one at a time, each `/readyz`; then the controller-manager,
//! scheduler, HAProxy, kubelets and kube-proxy.
//!
//! Before anything changes, [`health`] says, from what that preparation read of every node and
//! from the cluster's endpoints, what is not healthy, which the commands refuse unless
//! `--force`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::components::{ComponentId, Port};
use crate::deploy::{self, DeployOptions, Prepared};
use crate::events::Events;
use crate::inventory::Inventory;
use crate::plan::{Plan, Scope};
use crate::probe::{self, Probe};
use crate::remote::Connector;
use crate::render::Rendered;

use super::super::Day2Error;

/// Reads every node and plans the push of `affected` (`(node, path)`) files of `after`:
/// deploy's preflight with a [`Scope::Present`]. The snapshot is the command's own, taken
/// before the PKI changed.
pub(crate) async fn open(
    inv: &Inventory,
    after: &Rendered,
    affected: BTreeSet<(String, String)>,
    connector: Arc<dyn Connector>,
    probe: Arc<dyn Probe>,
    base: &DeployOptions,
    events: Events,
) -> Result<Prepared, Day2Error> {
    let opts = DeployOptions {
        scope: Scope::Present(affected),
        snapshot_dir: None,
        diff: false,
        ..base.clone()
    };
    Ok(deploy::prepare(inv, after.clone(), connector, probe, &opts, events).await?)
}

/// What keeps a change from being safe now: nodes preflight could not reach, etcd without
/// every member answering and one leader, an API server that runs but is not ready. Empty
/// when healthy.
pub(crate) async fn health(inv: &Inventory, probe: &dyn Probe, read: &Prepared) -> Vec<String> {
    let mut out: Vec<String> = read
        .unreachable()
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
    for m in inv
        .masters()
        .filter(|m| read.facts(&m.name).is_some_and(|f| f.unit_active(api)))
    {
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

/// The plan as lines: per host, the files that change; then what the phases do.
pub(crate) fn plan_lines(plan: &Plan, steps: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for (host, p) in &plan.hosts {
        if p.changes.is_empty() {
            continue;
        }
        let files: Vec<&str> = p.changes.iter().map(|c| c.path.as_str()).collect();
        out.push(format!("{host}: replace {}", files.join(", ")));
    }
    out.extend(steps.iter().filter(|s| !s.starts_with("files: ")).cloned());
    out
}
