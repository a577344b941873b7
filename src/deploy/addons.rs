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

/// The image tarballs as they lie on the nodes.
fn tarballs(ctx: &Ctx) -> Vec<String> {
    ctx.inv.addons.images.iter().filter_map(|p| Some(format!("{IMAGES_DIR}/{}", p.file_name()?.to_string_lossy()))).collect()
}

/// containerd's client, beside containerd.
fn ctr(ctx: &Ctx) -> String {
    let containerd = ComponentId::Containerd.get().binary_path(&ctx.inv);
    match containerd.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/ctr"),
        None => "ctr".into(),
    }
}

/// The host fails the phase with the error, if there is one; its message for the event.
fn failed(h: &mut super::Host, r: Result<(), crate::remote::RemoteError>) -> Option<String> {
    r.err().map(|e| {
        let msg = e.to_string();
        h.fail(Phase::Addons, e);
        msg
    })
}

fn finish(step: crate::events::StepTimer, failed: Option<String>) {
    match failed {
        None => step.done(Status::Changed, None),
        Some(e) => step.done(Status::Failed, Some(e)),
    }
}

impl Addons {
    /// The first master that is still up.
    fn target(ctx: &Ctx) -> Option<usize> {
        let kubectl = ComponentId::Kubectl.get();
        ctx.hosts.iter().position(|h| h.alive() && kubectl.runs_on(&ctx.inv, &h.node))
    }

    fn importers(ctx: &Ctx) -> Vec<usize> {
        let containerd = ComponentId::Containerd.get();
        (0..ctx.hosts.len()).filter(|&i| ctx.hosts[i].alive() && containerd.runs_on(&ctx.inv, &ctx.hosts[i].node)).collect()
    }

    async fn import(ctx: &mut Ctx) {
        let tarballs = tarballs(ctx);
        if tarballs.is_empty() {
            return;
        }
        let ctr = ctr(ctx);
        for i in Self::importers(ctx) {
            let step = ctx.events.start(Some(&ctx.hosts[i].node.name), Some("addons"), "import images");
            let (ctr, tarballs) = (ctr.clone(), tarballs.clone());
            let failed = ctx.on_host(i, move |h| failed(h, h.remote().import_images(&ImportImages { ctr: &ctr, tarballs }))).await;
            finish(step, failed);
        }
    }
}

impl Step for Addons {
    async fn run(&self, ctx: &mut Ctx) -> Result<(), DeployError> {
        Self::import(ctx).await;
        let Some(i) = Self::target(ctx) else { return Ok(()) };
        let plan: Vec<Addon> = addons::plan(&ctx.inv);
        let kubectl = ComponentId::Kubectl.get().binary_path(&ctx.inv);
        let timeout = ctx.opts.api_timeout.as_secs() as u32;
        let step = ctx.events.start(Some(&ctx.hosts[i].node.name), Some("addons"), "apply addons");
        let failed = ctx
            .on_host(i, move |h| {
                let apply = Apply { kubectl: &kubectl, kubeconfig: KUBECONFIG, addons: &plan, timeout_secs: timeout };
                failed(h, h.remote().apply(&apply))
            })
            .await;
        finish(step, failed);
        Ok(())
    }

    fn dry_run(&self, ctx: &Ctx) -> Vec<String> {
        let mut out = Vec::new();
        let tarballs = tarballs(ctx);
        if !tarballs.is_empty() {
            for i in Self::importers(ctx) {
                out.push(format!("addons: {} -n k8s.io images import {} on {}", ctr(ctx), tarballs.join(" "), ctx.hosts[i].node.name));
            }
        }
        if let Some(i) = Self::target(ctx) {
            for a in addons::plan(&ctx.inv) {
                for s in &a.steps {
                    out.push(format!("addons: {}: {} on {}", a.name, s.describe(), ctx.hosts[i].node.name));
                }
            }
        }
        out
    }
}
