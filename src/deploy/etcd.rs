//! The `etcd` phase. On bootstrap every member starts at once (each one's start waits for a
//! quorum, so they must not wait for each other), then deploy waits until all answer and agree
//! on one leader. On a running cluster:
//!
//! - a snapshot is taken first (like kubespray, before any etcd restart), unless disabled;
//! - members the inventory has and the cluster does not **join one at a time**: `member add`
//!   as a learner, the new member's first start with `ETCD_INITIAL_CLUSTER_STATE=existing` and
//!   the members it joins (`components::ETCD_JOIN_ENV`, for that start only), `member promote`
//!   once it has caught up, and the cluster healthy again before the next;
//! - members whose files changed restart one at a time, the cluster healthy again before the
//!   next, so it never loses quorum.

use std::time::{Duration, Instant};

use super::rollout::{Health, describe, roll_out};
use super::{Ctx, DeployError, Step};
use crate::components::{ComponentId, ETCD_DATA_DIR, ETCD_JOIN_ENV, Port};
use crate::etcd::EtcdError;
use crate::events::Status;
use crate::inventory::{Node, host_for_url};
use crate::probe::{self, MemberStatus};
use crate::remote::{RemoteError, UnitOps, Upload};

pub(crate) struct Etcd;

impl Step for Etcd {
    async fn run(&self, ctx: &mut Ctx) -> Result<(), DeployError> {
        let running = running_cluster(ctx).await;
        if let Some(statuses) = &running {
            if will_restart_or_join(ctx, statuses) {
                snapshot_first(ctx).await?;
            }
            join_new_members(ctx, statuses).await;
            if ctx.stopped {
                return Ok(());
            }
        }
        roll_out(ctx, ComponentId::Etcd.get(), Some(Health::EtcdQuorum), true).await
    }

    fn dry_run(&self, ctx: &Ctx) -> Vec<String> {
        let mut out = Vec::new();
        let joining: Vec<&str> = ctx
            .hosts
            .iter()
            .filter(|h| {
                h.alive()
                    && is_member(ctx, &h.node)
                    && !h.facts.as_ref().is_some_and(|f| f.unit_active("etcd"))
            })
            .map(|h| h.node.name.as_str())
            .collect();
        let any_running = ctx.hosts.iter().any(|h| {
            is_member(ctx, &h.node) && h.facts.as_ref().is_some_and(|f| f.unit_active("etcd"))
        });
        if any_running && !joining.is_empty() {
            out.push(format!(
                "etcd: members not running, joined one at a time if the cluster does not know them (member add as a learner, first start, member promote, healthy before the next): {}",
                joining.join(", ")
            ));
        }
        if any_running && ctx.opts.snapshot_dir.is_some() {
            out.push(
                "etcd: a snapshot first, if any running member restarts or one joins".to_string(),
            );
        }
        out.extend(describe(
            ctx,
            ComponentId::Etcd.get(),
            Some(Health::EtcdQuorum),
        ));
        out
    }
}

fn is_member(ctx: &Ctx, node: &Node) -> bool {
    ComponentId::Etcd.get().runs_on(&ctx.inv, node)
}

fn peer_url(ctx: &Ctx, node: &Node) -> String {
    format!(
        "https://{}:{}",
        host_for_url(node.address),
        Port::EtcdPeer.number(&ctx.inv)
    )
}

/// The members' statuses when etcd already runs as a healthy cluster; none on bootstrap (or
/// when it is not healthy: then the rollout below starts what is missing and waits).
async fn running_cluster(ctx: &Ctx) -> Option<Vec<MemberStatus>> {
    let members: Vec<Node> = ctx
        .hosts
        .iter()
        .filter(|h| h.alive() && is_member(ctx, &h.node))
        .map(|h| h.node.clone())
        .collect();
    let refs: Vec<&Node> = members.iter().collect();
    let statuses = probe::cluster_status(ctx.probe.as_ref(), &refs, Duration::from_secs(2)).await;
    let answering: Vec<MemberStatus> = statuses.into_iter().filter(|s| s.answered()).collect();
    probe::healthy(&answering).then_some(answering)
}

fn will_restart_or_join(ctx: &Ctx, running: &[MemberStatus]) -> bool {
    let unit = ComponentId::Etcd.get().unit.expect("etcd has a unit");
    ctx.hosts
        .iter()
        .filter(|h| h.alive() && is_member(ctx, &h.node))
        .any(|h| {
            let answering = running.iter().any(|s| s.name == h.node.name);
            let restarts = h
                .plan
                .as_ref()
                .is_some_and(|p| p.units.iter().any(|u| u.unit == unit && u.restart));
            !answering || restarts
        })
}

/// A snapshot before etcd changes, into `--snapshot-dir`.
async fn snapshot_first(ctx: &mut Ctx) -> Result<(), DeployError> {
    let Some(dir) = ctx.opts.snapshot_dir.clone() else {
        return Ok(());
    };
    let step = ctx
        .events
        .start(None, Some("etcd"), "snapshot before changing etcd");
    match crate::snapshot::save(&ctx.inv, ctx.probe.as_ref(), &dir, ctx.opts.snapshot_keep).await {
        Ok(info) => {
            step.done(
                Status::Ok,
                Some(format!(
                    "{} (revision {})",
                    dir.join(&info.file).display(),
                    info.revision
                )),
            );
            ctx.snapshot = Some(dir.join(info.file));
            Ok(())
        }
        Err(e) => {
            step.done(Status::Failed, Some(e.to_string()));
            Err(DeployError::Snapshot(e))
        }
    }
}

/// Adds the inventory's members that the running cluster does not have, one at a time.
async fn join_new_members(ctx: &mut Ctx, running: &[MemberStatus]) {
    let Some(leader) = running
        .iter()
        .find(|s| s.member_id.is_some() && s.member_id == s.leader)
        .or(running.first())
    else {
        return;
    };
    let leader_address = leader.address;
    let Ok((membership, _)) = ctx
        .probe
        .etcd_membership(leader_address, Duration::from_secs(5))
        .await
    else {
        return;
    };
    let joining: Vec<usize> = ctx
        .hosts
        .iter()
        .enumerate()
        .filter(|(_, h)| {
            h.alive()
                && is_member(ctx, &h.node)
                && !membership.iter().any(|m| m.name == h.node.name)
        })
        .map(|(i, _)| i)
        .collect();
    for (n, &i) in joining.iter().enumerate() {
        let node = ctx.hosts[i].node.clone();
        let step = ctx
            .events
            .start(Some(&node.name), Some("etcd"), "join the running cluster");
        match join(ctx, i, leader_address).await {
            Ok(()) => step.done(Status::Changed, None),
            Err(e) => {
                step.done(Status::Failed, Some(e.to_string()));
                ctx.hosts[i].fail(crate::components::Phase::Etcd, format!("joining etcd: {e}"));
                // The next member waits for a cluster that is whole again: those after this one
                // did not join, and say so.
                for &later in &joining[n + 1..] {
                    ctx.hosts[later].fail(
                        crate::components::Phase::Etcd,
                        format!("not joined: {} failed to join first", node.name),
                    );
                }
                ctx.stopped = true;
                return;
            }
        }
    }
}

/// Why a new member did not join.
#[derive(Debug, thiserror::Error)]
enum JoinError {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("not promoted within {secs} s: {last}")]
    NotPromoted { secs: u64, last: EtcdError },
    #[error("the cluster was not healthy within {0} s after the join")]
    NotHealthy(u64),
}

async fn join(ctx: &mut Ctx, i: usize, leader: std::net::IpAddr) -> Result<(), JoinError> {
    let node = ctx.hosts[i].node.clone();
    let peer = peer_url(ctx, &node);
    // etcd refuses a new member until every member has been connected for its health interval
    // (5 s, `--strict-reconfig-check`): right after a member (re)started it answers "unhealthy
    // cluster" for a few seconds.
    let deadline = Instant::now() + ctx.opts.etcd_timeout;
    let id = loop {
        match ctx.probe.etcd_member_add(leader, &peer).await {
            Ok(id) => break id,
            Err(e) if e.is_unhealthy_cluster() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await
            }
            Err(e) => return Err(e.into()),
        }
    };
    let (membership, _) = ctx
        .probe
        .etcd_membership(leader, Duration::from_secs(5))
        .await?;
    let initial: Vec<String> = membership
        .iter()
        .map(|m| {
            format!(
                "{}={}",
                if m.id == id {
                    node.name.as_str()
                } else {
                    m.name.as_str()
                },
                m.peer_url
            )
        })
        .collect();
    let env = format!(
        "ETCD_INITIAL_CLUSTER={}\nETCD_INITIAL_CLUSTER_STATE=existing\n",
        initial.join(",")
    );
    let stamp = crate::events::stamp();
    let unit = ComponentId::Etcd
        .get()
        .unit
        .expect("etcd has a unit")
        .to_string();
    ctx.on_host(i, move |h| -> Result<(), RemoteError> {
        let daemon_reload = h.plan().daemon_reload && !h.reloaded;
        h.reloaded |= daemon_reload;
        let r = h.remote();
        // A data dir from an earlier life of this member would make it start as that member.
        r.move_aside(ETCD_DATA_DIR, &format!("before-join-{stamp}"))?;
        r.install_files(&[Upload {
            path: ETCD_JOIN_ENV,
            mode: 0o644,
            contents: env.as_bytes(),
            metadata_only: false,
        }])?;
        r.systemctl(&UnitOps {
            daemon_reload,
            restart: vec![unit.clone()],
            no_block: true,
            ..UnitOps::default()
        })?;
        Ok(())
    })
    .await?;
    // A learner gets its vote once it has caught up with the leader.
    let deadline = Instant::now() + ctx.opts.etcd_timeout;
    loop {
        match ctx.probe.etcd_member_promote(leader, id).await {
            Ok(()) => break,
            Err(last) if Instant::now() >= deadline => {
                return Err(JoinError::NotPromoted {
                    secs: ctx.opts.etcd_timeout.as_secs(),
                    last,
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    ctx.on_host(i, |h| h.remote().remove_paths(&[ETCD_JOIN_ENV.to_string()]))
        .await?;
    // Healthy again: every member the cluster has now (not those still to join).
    let (now, _) = ctx
        .probe
        .etcd_membership(leader, Duration::from_secs(5))
        .await?;
    let members: Vec<Node> = ctx
        .hosts
        .iter()
        .filter(|h| now.iter().any(|m| m.name == h.node.name))
        .map(|h| h.node.clone())
        .collect();
    let refs: Vec<&Node> = members.iter().collect();
    let (ok, statuses) =
        probe::wait_healthy(ctx.probe.as_ref(), &refs, ctx.opts.etcd_timeout).await;
    ctx.etcd = statuses;
    if !ok {
        return Err(JoinError::NotHealthy(ctx.opts.etcd_timeout.as_secs()));
    }
    // Started and in the cluster: the rollout has nothing left to do for it.
    let h = &mut ctx.hosts[i];
    if let Some(f) = h.facts.as_mut() {
        f.units.insert("etcd".into(), "active".into());
    }
    if let Some(p) = h.plan.as_mut() {
        p.units
            .iter_mut()
            .filter(|u| u.unit == "etcd")
            .for_each(|u| u.restart = false);
    }
    h.outcome.started.push("etcd".into());
    Ok(())
}
