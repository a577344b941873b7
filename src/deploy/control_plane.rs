//! The `control-plane` phase: the API servers first — restarted one at a time, each answering
//! `/readyz` before the next, so the load balancer always has one to send clients to — then
//! the controller-manager and the scheduler (leader-elected: restarting them together only
//! pauses them).

use super::rollout::{Health, describe, roll_out};
use super::{Ctx, DeployError, Step};
use crate::components::ComponentId;

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
                break;
            }
        }
        Ok(())
    }

    fn dry_run(&self, ctx: &Ctx) -> Vec<String> {
        COMPONENTS
            .iter()
            .flat_map(|(id, health)| describe(ctx, id.get(), *health))
            .collect()
    }
}
