//! The `control-plane` phase: the API servers first — restarted one at a time, each answering
//! `/readyz` before the next, so the load balancer always has one to send clients to — then
//! the controller-manager and the scheduler (leader-elected: restarting them together only
//! pauses them); last, with kubectl on the first master, the RBAC that lets the API servers
//! reach the kubelets (`kubectl logs`, `exec`).

use super::rollout::{Health, describe, roll_out};
use super::{Ctx, DeployError, Step};
use crate::components::{ComponentId, Phase};

pub(crate) struct ControlPlane;

const COMPONENTS: [(ComponentId, Option<Health>); 3] = [
    (ComponentId::KubeApiserver, Some(Health::ApiReady)),
    (ComponentId::KubeControllerManager, None),
    (ComponentId::KubeScheduler, None),
];

impl Step for ControlPlane {
    async fn run(&self, ctx: &mut Ctx) -> Result<(), DeployError> {
        for (id, health) in COMPONENTS {
            roll_out(ctx, id.get(), health, false).await?;
            if ctx.stopped {
                return Ok(());
            }
        }
        // Last, once the API servers answer: the RBAC that lets them reach the kubelets.
        super::addons::apply_on_first_master(
            ctx,
            Phase::ControlPlane,
            "apply the kubelet access RBAC",
            crate::addons::control_plane_plan(),
        )
        .await;
        Ok(())
    }

    fn dry_run(&self, ctx: &Ctx) -> Vec<String> {
        COMPONENTS
            .iter()
            .flat_map(|(id, health)| describe(ctx, id.get(), *health))
            .chain(super::addons::describe_apply(
                ctx,
                Phase::ControlPlane,
                &crate::addons::control_plane_plan(),
            ))
            .collect()
    }
}
