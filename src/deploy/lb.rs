//! The `lb` phase: HAProxy in front of the API servers, on the load-balancer node.

use super::rollout::{describe, roll_out};
use super::{Ctx, DeployError, Step};
use crate::components::ComponentId;

pub(crate) struct Lb;

impl Step for Lb {
    async fn run(&self, ctx: &mut Ctx) -> Result<(), DeployError> {
        roll_out(ctx, ComponentId::Haproxy.get(), None, false).await
    }

    fn dry_run(&self, ctx: &Ctx) -> Vec<String> {
        describe(ctx, ComponentId::Haproxy.get(), None)
    }
}
