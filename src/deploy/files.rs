//! The `files` phase: every changed file of the selected phases, in one round trip per host,
//! and the cluster's block in `/etc/hosts`.

use super::{Ctx, DeployError, Host, Step};
use crate::components::Phase;
use crate::events::Status;
use crate::plan::ChangeKind;
use crate::remote::{HostsBlock, Upload};

/// Where deploy puts the cluster's hosts block, and where it is merged.
pub const HOSTS_BLOCK: &str = "/etc/hardway/hosts";
const HOSTS_FILE: &str = "/etc/hosts";

pub(crate) struct Files;

impl Step for Files {
    async fn run(&self, ctx: &mut Ctx) -> Result<(), DeployError> {
        let (cluster, files_phase, events) = (
            ctx.inv.cluster.name.clone(),
            ctx.phases.contains(&Phase::Files),
            ctx.events.clone(),
        );
        ctx.each_host(move |h| {
            if !h.alive() {
                return;
            }
            let step = events.start(Some(&h.node.name), Some("files"), "send files");
            send(h, &cluster, files_phase);
            match (&h.outcome.error, h.outcome.changed) {
                (Some(e), _) => step.done(Status::Failed, Some(e.clone())),
                (None, 0) => step.done(Status::Ok, Some("nothing to send".into())),
                (None, n) => step.done(Status::Changed, Some(format!("{n} files"))),
            }
        })
        .await;
        Ok(())
    }

    fn dry_run(&self, ctx: &Ctx) -> Vec<String> {
        let changed: usize = ctx
            .hosts
            .iter()
            .filter_map(|h| h.plan.as_ref())
            .map(|p| p.changes.len())
            .sum();
        let hosts = ctx
            .hosts
            .iter()
            .filter(|h| h.plan.as_ref().is_some_and(|p| !p.changes.is_empty()))
            .count();
        vec![format!(
            "files: {changed} files to place on {hosts} hosts (staged, checked by SHA-256, renamed into place)"
        )]
    }
}

/// Sends every change in one round trip, and brings the /etc/hosts block up to date when the
/// `files` phase runs.
fn send(h: &mut Host, cluster: &str, files_phase: bool) {
    let plan = h.plan();
    let uploads: Vec<Upload<'_>> = plan
        .changes
        .iter()
        .map(|c| Upload {
            path: &c.path,
            mode: c.file.mode,
            contents: &c.file.contents,
            metadata_only: c.kind == ChangeKind::Metadata,
        })
        .collect();
    let hosts_changed = plan.changes.iter().any(|c| c.path == HOSTS_BLOCK);
    let count = uploads.len();
    if let Err(e) = h.remote().install_files(&uploads) {
        return h.fail(Phase::Files, e);
    }
    h.outcome.changed = count;
    let block_missing = !h.facts.as_ref().is_some_and(|f| f.hosts_block);
    if files_phase && (hosts_changed || block_missing) {
        let block = HostsBlock {
            cluster,
            source: HOSTS_BLOCK,
            target: HOSTS_FILE,
        };
        if let Err(e) = h.remote().merge_hosts_block(&block) {
            h.fail(Phase::Files, e);
        }
    }
}
