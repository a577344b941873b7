//! The `addons` phase: first the inventory's image tarballs are imported into containerd on
//! every node that runs it (they were placed with the node's other files); then, on the first
//! master still up, once its API server answers, [`crate::addons::plan`] — RBAC, CoreDNS,
//! MetalLB and its pool, metrics-server — each applied and waited on before the next.

use super::{Ctx, DeployError, Step};
use crate::addons::{self, Addon};
use crate::components::{ComponentId, Phase};
use crate::events::Status;
use crate::remote::{Apply, ImportImages};
use crate::render::IMAGES_DIR;

pub(crate) struct Addons;

const KUBECONFIG: &str = "/etc/kubernetes/admin.kubeconfig";

/// The image tarballs as they lie on the nodes, each with the references it names (read from
/// the bytes rendered for the nodes).
fn tarballs(ctx: &Ctx) -> Vec<(String, Vec<String>)> {
    let paths = ctx
        .inv
        .addons
        .images
        .iter()
        .filter_map(|p| Some(format!("{IMAGES_DIR}/{}", p.file_name()?.to_string_lossy())));
    let rendered = |path: &str| {
        ctx.rendered
            .hosts
            .values()
            .flatten()
            .find(|f| f.path == path)
            .map(|f| crate::images::refs(&f.contents))
    };
    paths
        .map(|p| {
            let refs = rendered(&p).unwrap_or_default();
            (p, refs)
        })
        .collect()
}

/// containerd's client, beside containerd.
fn ctr(ctx: &Ctx) -> String {
    let containerd = ComponentId::Containerd.get().binary_path(&ctx.inv);
    match containerd.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/ctr"),
        None => "ctr".into(),
    }
}

/// Ends the step with what happened: Changed with what changed, Ok when nothing did, or the
/// host fails `phase` with the error.
fn finish(
    h: &mut super::Host,
    phase: Phase,
    step: crate::events::StepTimer,
    r: Result<Option<String>, crate::remote::RemoteError>,
) {
    match r {
        Ok(Some(what)) => step.done(Status::Changed, Some(what)),
        Ok(None) => step.done(Status::Ok, None),
        Err(e) => {
            step.done(Status::Failed, Some(e.to_string()));
            h.fail(phase, e);
        }
    }
}

/// The first master that is still up: where kubectl applies.
fn target(ctx: &Ctx) -> Option<usize> {
    let kubectl = ComponentId::Kubectl.get();
    ctx.hosts
        .iter()
        .position(|h| h.alive() && kubectl.runs_on(&ctx.inv, &h.node))
}

/// Applies `plan` with kubectl on the first master still up, as one step of `phase` (the
/// addons; the control plane's kubelet access RBAC).
pub(super) async fn apply_on_first_master(
    ctx: &mut Ctx,
    phase: Phase,
    what: &str,
    plan: Vec<Addon>,
) {
    let Some(i) = target(ctx) else {
        return;
    };
    let kubectl = ComponentId::Kubectl.get().binary_path(&ctx.inv);
    let timeout = ctx.opts.api_timeout.as_secs() as u32;
    let step = ctx
        .events
        .start(Some(&ctx.hosts[i].node.name), Some(phase.name()), what);
    ctx.on_host(i, move |h| {
        let apply = Apply {
            kubectl: &kubectl,
            kubeconfig: KUBECONFIG,
            addons: &plan,
            timeout_secs: timeout,
        };
        let r = h
            .remote()
            .apply(&apply)
            .map(|changed| (!changed.is_empty()).then(|| changed.join(", ")));
        finish(h, phase, step, r);
    })
    .await;
}

/// What [`apply_on_first_master`] would do, one line per step, for the dry run.
pub(super) fn describe_apply(ctx: &Ctx, phase: Phase, plan: &[Addon]) -> Vec<String> {
    let Some(i) = target(ctx) else {
        return vec![];
    };
    addons::in_order(plan)
        .into_iter()
        .map(|(a, s)| {
            format!(
                "{}: {}: {} on {}",
                phase.name(),
                a.name,
                s.describe(),
                ctx.hosts[i].node.name
            )
        })
        .collect()
}

impl Addons {
    fn importers(ctx: &Ctx) -> Vec<usize> {
        let containerd = ComponentId::Containerd.get();
        (0..ctx.hosts.len())
            .filter(|&i| ctx.hosts[i].alive() && containerd.runs_on(&ctx.inv, &ctx.hosts[i].node))
            .collect()
    }

    /// On every node that runs containerd at once: each imports into its own containerd.
    async fn import(ctx: &mut Ctx) {
        let tarballs = tarballs(ctx);
        if tarballs.is_empty() {
            return;
        }
        let ctr = ctr(ctx);
        let importers: std::collections::BTreeSet<String> = Self::importers(ctx)
            .into_iter()
            .map(|i| ctx.hosts[i].node.name.clone())
            .collect();
        let events = ctx.events.clone();
        ctx.each_host(move |h| {
            if !importers.contains(&h.node.name) || !h.alive() {
                return;
            }
            let step = events.start(Some(&h.node.name), Some("addons"), "import images");
            let r = h.remote().import_images(&ImportImages {
                ctr: &ctr,
                tarballs: tarballs.clone(),
            });
            let r = r.map(|imported| {
                (!imported.is_empty()).then(|| format!("imported {}", imported.join(", ")))
            });
            finish(h, Phase::Addons, step, r);
        })
        .await;
    }
}

impl Step for Addons {
    async fn run(&self, ctx: &mut Ctx) -> Result<(), DeployError> {
        Self::import(ctx).await;
        let plan = addons::plan(&ctx.inv);
        apply_on_first_master(ctx, Phase::Addons, "apply addons", plan).await;
        Ok(())
    }

    fn dry_run(&self, ctx: &Ctx) -> Vec<String> {
        let mut out = Vec::new();
        let tarballs = tarballs(ctx);
        if !tarballs.is_empty() {
            for i in Self::importers(ctx) {
                let names: Vec<&str> = tarballs.iter().map(|(t, _)| t.as_str()).collect();
                out.push(format!(
                    "addons: {} -n k8s.io images import (those whose images it lacks of) {} on {}",
                    ctr(ctx),
                    names.join(" "),
                    ctx.hosts[i].node.name
                ));
            }
        }
        out.extend(describe_apply(ctx, Phase::Addons, &addons::plan(&ctx.inv)));
        out
    }
}
