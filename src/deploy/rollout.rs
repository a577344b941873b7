//! Starting and restarting one component's units across hosts, by its restart policy.
//!
//! Units that are not running are started (all at once). Units that run and whose files
//! changed are restarted: everywhere at once for [`Restart::Parallel`] components, one host at
//! a time for [`Restart::Rolling`] ones — each healthy again ([`Health`]) before the next, so
//! etcd keeps its quorum and the API stays served behind the load balancer. A rolling restart
//! stops at the first host that does not come back.

use super::{Ctx, DeployError, Host};
use crate::components::{Component, Port, Restart};
use crate::events::{Events, Status};
use crate::inventory::Node;
use crate::probe;
use crate::remote::UnitOps;

/// What "healthy again" means between the steps of a rolling restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    /// Every etcd member answers and all agree on one leader.
    EtcdQuorum,
    /// The restarted API server answers `/readyz` with 200.
    ApiReady,
}

/// What happens to the unit on one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Start,
    Restart,
    /// Restart, but only in its turn of a rolling restart.
    RollingRestart,
    /// Reload in place (its unit file unchanged, the unit running).
    Reload,
}

fn action(h: &Host, c: &Component) -> Option<Action> {
    let unit = c.unit?;
    let u = h.plan().units.iter().find(|u| u.unit == unit)?;
    let active = h.facts.as_ref().is_some_and(|f| f.unit_active(unit));
    // A unit that runs, is enabled and has no changed file is left alone: starting it would
    // change nothing, and a no-change deploy reports nothing done.
    let up = h.facts.as_ref().is_some_and(|f| f.unit_up(unit));
    let unit_file = format!("/etc/systemd/system/{unit}.service");
    let unit_changed = h.plan().changes.iter().any(|f| f.path == unit_file);
    Some(match (u.restart, active, c.restart) {
        (true, true, Restart::Rolling) => Action::RollingRestart,
        (true, true, Restart::Reload) if !unit_changed => Action::Reload,
        (true, _, _) => Action::Restart,
        (false, _, _) if up => return None,
        (false, _, _) => Action::Start,
    })
}

/// The systemctl work for one host: its unit, plus a daemon-reload the first time.
fn ops(h: &mut Host, unit: &str, verb: Verb, no_block: bool) -> UnitOps {
    let daemon_reload = h.plan().daemon_reload && !h.reloaded;
    h.reloaded |= daemon_reload;
    let one = vec![unit.to_string()];
    let (restart, start, reload) = match verb {
        Verb::Restart => (one, vec![], vec![]),
        Verb::Start => (vec![], one, vec![]),
        Verb::Reload => (vec![], vec![], one),
    };
    UnitOps {
        daemon_reload,
        restart,
        start,
        reload,
        no_block,
        ..UnitOps::default()
    }
}

/// What systemctl does to a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Start,
    Restart,
    Reload,
}

impl Verb {
    fn of(a: Action) -> Verb {
        match a {
            Action::Start => Verb::Start,
            Action::Restart | Action::RollingRestart => Verb::Restart,
            Action::Reload => Verb::Reload,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Verb::Start => "start",
            Verb::Restart => "restart",
            Verb::Reload => "reload",
        }
    }
}

/// How long a unit may stay "reloading" or "activating" after systemctl returned.
const SETTLING: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `ops` on the host and, unless `no_block`, checks that the unit is active afterwards.
fn systemctl(h: &mut Host, c: &Component, verb: Verb, no_block: bool, events: &Events) {
    let unit = c.unit.expect("only units are rolled out");
    let step = events.start(
        Some(&h.node.name),
        Some(c.phase.name()),
        &format!("{} {unit}", verb.word()),
    );
    systemctl_step(h, c, unit, verb, no_block);
    match &h.outcome.error {
        Some(e) if !h.outcome.ok => step.done(Status::Failed, Some(e.clone())),
        _ => step.done(Status::Changed, None),
    }
}

fn systemctl_step(h: &mut Host, c: &Component, unit: &'static str, verb: Verb, no_block: bool) {
    let ops = ops(h, unit, verb, no_block);
    if let Err(e) = h.remote().systemctl(&ops) {
        return h.fail(c.phase, e);
    }
    if !no_block {
        let units = vec![unit.to_string()];
        // A unit that tells systemd about its reloads (HAProxy's sends RELOADING=1, then
        // READY=1 once its new worker runs) can still be "reloading" when systemctl returns:
        // that is on its way, not a failure, so it is asked again, for a while.
        let deadline = std::time::Instant::now() + SETTLING;
        loop {
            match h.remote().unit_states(&units) {
                Ok(states) if states.get(unit).is_some_and(|s| s == "active") => break,
                Ok(states)
                    if states
                        .get(unit)
                        .is_some_and(|s| s == "reloading" || s == "activating")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                Ok(states) => {
                    let state = states.get(unit).cloned().unwrap_or_default();
                    let journal = h.remote().journal_tail(&units, 15).unwrap_or_default();
                    return h.fail(c.phase, format!("{unit} is {state}\n{journal}"));
                }
                Err(e) => return h.fail(c.phase, e),
            }
        }
    }
    match verb {
        Verb::Restart => h.outcome.restarted.push(unit.into()),
        Verb::Start => h.outcome.started.push(unit.into()),
        Verb::Reload => h.outcome.reloaded.push(unit.into()),
    }
}

/// Brings `c` up everywhere it runs, by its policy; `health` is checked after starting and
/// between rolling restarts. With `together`, units are started without waiting for each
/// (etcd members: each one's start blocks until a quorum has started).
pub(crate) async fn roll_out(
    ctx: &mut Ctx,
    c: &'static Component,
    health: Option<Health>,
    together: bool,
) -> Result<(), DeployError> {
    roll_out_on(ctx, c, health, together, &|_| true).await
}

/// [`roll_out`] on the hosts `on` picks (by index) only.
pub(crate) async fn roll_out_on(
    ctx: &mut Ctx,
    c: &'static Component,
    health: Option<Health>,
    together: bool,
    on: &(dyn Fn(usize) -> bool + Sync),
) -> Result<(), DeployError> {
    let plan: Vec<(usize, Action)> = ctx
        .hosts
        .iter()
        .enumerate()
        .filter(|(i, h)| h.alive() && on(*i))
        .filter_map(|(i, h)| Some((i, action(h, c)?)))
        .collect();
    if plan.is_empty() {
        return Ok(());
    }
    // 1. Everything but the rolling restarts, at once.
    let now: Vec<(usize, Verb)> = plan
        .iter()
        .filter(|(_, a)| *a != Action::RollingRestart)
        .map(|(i, a)| (*i, Verb::of(*a)))
        .collect();
    let no_block = together;
    let events = ctx.events.clone();
    let work = std::sync::Arc::new(
        now.iter()
            .map(|(i, r)| (ctx.hosts[*i].node.name.clone(), *r))
            .collect::<std::collections::BTreeMap<_, _>>(),
    );
    ctx.each_host(move |h| {
        let Some(&verb) = work.get(&h.node.name) else {
            return;
        };
        if !h.alive() {
            return;
        }
        systemctl(h, c, verb, no_block, &events);
    })
    .await;
    if let Some(health) = health
        && (!now.is_empty() || plan.iter().any(|(_, a)| *a == Action::RollingRestart))
        && !wait(
            ctx,
            c,
            health,
            &now.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        )
        .await
    {
        return Ok(());
    }

    // 2. Rolling restarts, one host at a time, each healthy again before the next.
    let rolling: Vec<usize> = plan
        .iter()
        .filter(|(_, a)| *a == Action::RollingRestart)
        .map(|(i, _)| *i)
        .collect();
    for (k, &i) in rolling.iter().enumerate() {
        if !ctx.hosts[i].alive() {
            continue;
        }
        let events = ctx.events.clone();
        ctx.on_host(i, move |h| systemctl(h, c, Verb::Restart, false, &events))
            .await;
        let healthy = ctx.hosts[i].alive()
            && match health {
                Some(hl) => wait(ctx, c, hl, &[i]).await,
                None => true,
            };
        if !healthy {
            let failed = ctx.hosts[i].node.name.clone();
            for &j in &rolling[k + 1..] {
                ctx.hosts[j].fail(c.phase, format!("{} not restarted: the rolling restart stopped at {failed}, which did not come back", c.name));
            }
            ctx.stopped = true;
            return Ok(());
        }
    }
    Ok(())
}

/// Waits for `health`; on failure marks the hosts concerned failed, keeping each one's own
/// error when it already has one, and says whether the component is healthy.
async fn wait(
    ctx: &mut Ctx,
    c: &'static Component,
    health: Health,
    just_started: &[usize],
) -> bool {
    match health {
        Health::EtcdQuorum => {
            let step = ctx.events.start(
                None,
                Some(c.phase.name()),
                "wait for etcd: every member answers, one leader",
            );
            let ok = wait_etcd(ctx, c).await;
            step.done(if ok { Status::Ok } else { Status::Failed }, None);
            ok
        }
        Health::ApiReady => {
            let mut ok = true;
            for &i in just_started {
                if !ctx.hosts[i].alive() {
                    continue;
                }
                let step = ctx.events.start(
                    Some(&ctx.hosts[i].node.name),
                    Some(c.phase.name()),
                    "wait for /readyz",
                );
                let ready = wait_api(ctx, i).await;
                step.done(
                    if ready { Status::Ok } else { Status::Failed },
                    ctx.hosts[i].outcome.error.clone().filter(|_| !ready),
                );
                ok &= ready;
            }
            ok
        }
    }
}

/// Waits for the members whose hosts are up; a member on an unreachable host is already
/// reported as that host's failure, and the rest may still hold quorum.
async fn wait_etcd(ctx: &mut Ctx, c: &'static Component) -> bool {
    let members: Vec<Node> = ctx
        .hosts
        .iter()
        .filter(|h| h.alive() && c.runs_on(&ctx.inv, &h.node))
        .map(|h| h.node.clone())
        .collect();
    if members.is_empty() {
        return false;
    }
    let refs: Vec<&Node> = members.iter().collect();
    let (ok, statuses) =
        probe::wait_healthy(ctx.probe.as_ref(), &refs, ctx.opts.etcd_timeout).await;
    ctx.etcd = statuses.clone();
    if ok {
        return true;
    }
    // Each member's state and the end of its journal, then stop: nothing after etcd can work
    // without it.
    let mut detail = String::new();
    for m in &members {
        let i = ctx.index_of(&m.name);
        let unit = vec![c.unit.expect("etcd has a unit").to_string()];
        let (state, journal) = ctx
            .on_host(i, move |h| {
                let state = h
                    .remote()
                    .unit_states(&unit)
                    .ok()
                    .and_then(|s| s.into_values().next())
                    .unwrap_or_default();
                (
                    state,
                    h.remote().journal_tail(&unit, 10).unwrap_or_default(),
                )
            })
            .await;
        detail.push_str(&format!("{}: etcd is {state}\n{journal}\n", m.name));
    }
    for s in &statuses {
        detail.push_str(&format!("{}\n", probe::describe(s)));
    }
    let secs = ctx.opts.etcd_timeout.as_secs();
    for m in &members {
        let i = ctx.index_of(&m.name);
        let h = &mut ctx.hosts[i];
        let own = h
            .outcome
            .error
            .clone()
            .map(|e| format!("{e}\n"))
            .unwrap_or_default();
        h.fail(
            c.phase,
            format!("etcd not healthy within {secs} s:\n{own}{detail}"),
        );
    }
    ctx.stopped = true;
    false
}

/// Polls the API server on host `i` until `/readyz` answers 200; fails the host at the deadline.
async fn wait_api(ctx: &mut Ctx, i: usize) -> bool {
    let (address, port) = (ctx.hosts[i].node.address, Port::ApiServer.number(&ctx.inv));
    match probe::wait_readyz(ctx.probe.as_ref(), address, port, ctx.opts.api_timeout).await {
        Ok(()) => true,
        Err(last) => {
            let secs = ctx.opts.api_timeout.as_secs();
            ctx.hosts[i].fail(
                crate::components::Phase::ControlPlane,
                format!("the API server did not answer /readyz within {secs} s: {last}"),
            );
            false
        }
    }
}

/// The dry run's account of a component: what starts, what restarts and in which order.
pub(crate) fn describe(ctx: &Ctx, c: &'static Component, health: Option<Health>) -> Vec<String> {
    describe_on(ctx, c, health, &|_| true)
}

/// [`describe`] for the hosts `on` picks (by index) only.
pub(crate) fn describe_on(
    ctx: &Ctx,
    c: &'static Component,
    health: Option<Health>,
    on: &dyn Fn(usize) -> bool,
) -> Vec<String> {
    let mut start = Vec::new();
    let mut restart = Vec::new();
    let mut rolling = Vec::new();
    let mut reload = Vec::new();
    for (_, h) in ctx
        .hosts
        .iter()
        .enumerate()
        .filter(|(i, h)| h.alive() && on(*i))
    {
        match action(h, c) {
            Some(Action::Start) => start.push(h.node.name.clone()),
            Some(Action::Restart) => restart.push(h.node.name.clone()),
            Some(Action::RollingRestart) => rolling.push(h.node.name.clone()),
            Some(Action::Reload) => reload.push(h.node.name.clone()),
            None => {}
        }
    }
    let mut out = Vec::new();
    let running: Vec<&String> = start
        .iter()
        .filter(|n| {
            ctx.hosts[ctx.index_of(n)]
                .facts
                .as_ref()
                .is_some_and(|f| f.unit_active(c.unit.unwrap_or("")))
        })
        .collect();
    let to_start: Vec<&String> = start.iter().filter(|n| !running.contains(n)).collect();
    if !to_start.is_empty() {
        out.push(format!(
            "{}: start {} on {}",
            c.phase,
            c.name,
            join(&to_start)
        ));
    }
    if !restart.is_empty() {
        out.push(format!(
            "{}: restart {} on {} (at once)",
            c.phase,
            c.name,
            join(&restart.iter().collect::<Vec<_>>())
        ));
    }
    if !reload.is_empty() {
        out.push(format!(
            "{}: reload {} on {} (in place: it keeps its listening sockets)",
            c.phase,
            c.name,
            join(&reload.iter().collect::<Vec<_>>())
        ));
    }
    if !rolling.is_empty() {
        let wait = match health {
            Some(Health::EtcdQuorum) => "every member healthy and one leader",
            Some(Health::ApiReady) => "its /readyz answering 200",
            None => "its unit active",
        };
        out.push(format!(
            "{}: restart {} on {}, one at a time, each followed by {wait}",
            c.phase,
            c.name,
            rolling.join(", then ")
        ));
    }
    out
}

fn join(names: &[&String]) -> String {
    names
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
