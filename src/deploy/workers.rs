//! The `workers` phase: containerd, the kubelet, kube-proxy and the pod-network routes on every
//! worker, in the component table's order (containerd before the kubelet that needs it).

use super::rollout::{describe, roll_out};
use super::{Ctx, DeployError, Step};
use crate::components::{COMPONENTS, Phase};

pub(crate) struct Workers;

impl Step for Workers {
    async fn run(&self, ctx: &mut Ctx) -> Result<(), DeployError> {
        for c in COMPONENTS
            .iter()
            .filter(|c| c.phase == Phase::Workers && c.unit.is_some())
        {
            roll_out(ctx, c, None, false).await?;
        }
        Ok(())
    }

    fn dry_run(&self, ctx: &Ctx) -> Vec<String> {
        COMPONENTS
            .iter()
            .filter(|c| c.phase == Phase::Workers && c.unit.is_some())
            .flat_map(|c| describe(ctx, c, None))
            .collect()
    }
}
