//! The `etcd` phase. On bootstrap every member starts at once (each one's start waits for a
//! quorum, so they must not wait for each other), then deploy waits until all answer and agree
//! on one leader. Members that already run and whose files changed restart one at a time, the
//! cluster healthy again before the next, so it never loses quorum.

use super::rollout::{Health, describe, roll_out};
use super::{Ctx, DeployError, Step};
use crate::components::ComponentId;

pub(crate) struct Etcd;

impl Step for Etcd {
    async fn run(&self, ctx: &mut Ctx) -> Result<(), DeployError> {
        roll_out(ctx, ComponentId::Etcd.get(), Some(Health::EtcdQuorum), true).await
    }

    fn dry_run(&self, ctx: &Ctx) -> Vec<String> {
        describe(ctx, ComponentId::Etcd.get(), Some(Health::EtcdQuorum))
    }
}
