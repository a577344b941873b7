//! The `addons` phase: on the first master, once its API server answers, the manifests hardway
//! renders into `/etc/kubernetes/addons/`: the RBAC that lets the API server reach kubelets,
//! and MetalLB's address pool (only once MetalLB's CRDs are installed).

use super::{Ctx, DeployError, Step};
use crate::components::{ComponentId, Phase};
use crate::events::Status;
use crate::remote::Apply;

pub(crate) struct Addons;

const ADDONS_DIR: &str = "/etc/kubernetes/addons/";
const KUBECONFIG: &str = "/etc/kubernetes/admin.kubeconfig";
const METALLB_CRD: &str = "ipaddresspools.metallb.io";

impl Addons {
    /// The first master that is still up, and the manifests it has.
    fn target(ctx: &Ctx) -> Option<(usize, Vec<String>, Vec<String>)> {
        let kubectl = ComponentId::Kubectl.get();
        let i = ctx.hosts.iter().position(|h| h.alive() && kubectl.runs_on(&ctx.inv, &h.node))?;
        let files = ctx.rendered.hosts.get(&ctx.hosts[i].node.name)?;
        let (metallb, other): (Vec<String>, Vec<String>) = files
            .iter()
            .filter(|f| f.path.starts_with(ADDONS_DIR))
            .map(|f| f.path.clone())
            .partition(|p| p.contains("metallb"));
        Some((i, other, metallb))
    }
}

impl Step for Addons {
    async fn run(&self, ctx: &mut Ctx) -> Result<(), DeployError> {
        let Some((i, manifests, metallb)) = Self::target(ctx) else { return Ok(()) };
        let kubectl = ComponentId::Kubectl.get().binary_path(&ctx.inv);
        let timeout = ctx.opts.api_timeout.as_secs() as u32;
        let step = ctx.events.start(Some(&ctx.hosts[i].node.name), Some("addons"), "apply manifests");
        let failed = ctx.on_host(i, move |h| {
            let apply = Apply {
                kubectl: &kubectl,
                kubeconfig: KUBECONFIG,
                manifests,
                needs_crd: (!metallb.is_empty()).then_some((
                    METALLB_CRD,
                    metallb,
                    "MetalLB is not installed (no ipaddresspools.metallb.io CRD): install it, then re-run --phases addons",
                )),
                ready_timeout_secs: timeout,
            };
            match h.remote().apply(&apply) {
                Ok(()) => None,
                Err(e) => {
                    let msg = e.to_string();
                    h.fail(Phase::Addons, e);
                    Some(msg)
                }
            }
        })
        .await;
        match failed {
            None => step.done(Status::Changed, None),
            Some(e) => step.done(Status::Failed, Some(e)),
        }
        Ok(())
    }

    fn dry_run(&self, ctx: &Ctx) -> Vec<String> {
        match Self::target(ctx) {
            None => vec![],
            Some((i, manifests, metallb)) => manifests
                .iter()
                .chain(&metallb)
                .map(|m| format!("addons: kubectl apply -f {m} on {}", ctx.hosts[i].node.name))
                .collect(),
        }
    }
}
