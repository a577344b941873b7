//! `hardway deploy`: the pipeline run against machines, phase by phase (kubeadm's phase names,
//! k0sctl's one-module-per-phase layout).
//!
//! ```text
//! preflight   connect to every host, read its facts, check them all   (nothing changed yet)
//! plan        per host: files to send, units to start or restart       (pure: plan::plan_host)
//! files       every changed file of the selected phases, one round trip per host
//! etcd        members started together on bootstrap, restarted one at a time after
//! lb          HAProxy
//! control-plane  API servers restarted one at a time (each /readyz before the next), then
//!             controller-manager and scheduler
//! workers     containerd, kubelet, kube-proxy, pod routes
//! addons      manifests applied on the first master
//! ```
//!
//! Each phase is a module with `run` and `dry_run` (`Step`), dispatched by `match` in
//! [`Prepared::run`]; [`prepare`] is preflight and the plan, so that a day-2 change checks the
//! cluster's health on what it read, prints its plan and runs it without reading the nodes
//! again ([`deploy`] is the two in a row). Hosts are reached through a [`Connector`] and the cluster's endpoints through a
//! [`Probe`], so the whole runner is tested against `remote::fake` without root. A host that
//! fails (unreachable, refused host key, a unit that does not start) is reported and left out
//! of the later phases while the others go on; a failed preflight stops everything before
//! anything is changed anywhere.

mod addons;
mod control_plane;
pub mod diff;
mod etcd;
mod files;
mod lb;
pub mod preflight;
mod rollout;
mod workers;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::components::Phase;
use crate::events::{Events, Status};
use crate::inventory::{Inventory, Node};
use crate::plan::{HostPlan, Plan, Scope};
use crate::probe::{MemberStatus, Probe};
use crate::remote::{Connector, Facts, Remote, fan_out};
use crate::render::Rendered;

/// What stops a deploy as a whole (per-host failures are in the report instead).
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("preflight failed; nothing was changed:\n  {}", .0.join("\n  "))]
    Preflight(Vec<String>),
    #[error(
        "the snapshot before changing etcd failed (nothing was restarted; --no-snapshot skips it): {0}"
    )]
    Snapshot(#[from] crate::snapshot::SnapshotError),
}

#[derive(Debug, Clone)]
pub struct DeployOptions {
    /// The phases to run besides preflight, which always runs.
    pub phases: Vec<Phase>,
    pub dry_run: bool,
    /// With `dry_run`: a diff of every file that would change.
    pub diff: bool,
    pub parallel: usize,
    /// How long etcd may take to become healthy (bootstrap, and each step of a rolling restart).
    pub etcd_timeout: Duration,
    /// How long an API server may take to answer /readyz after a (re)start.
    pub api_timeout: Duration,
    /// Where the snapshot before etcd changes goes; none: no snapshot.
    pub snapshot_dir: Option<std::path::PathBuf>,
    /// How many snapshots to keep there.
    pub snapshot_keep: Option<usize>,
    /// SHA-256s of files of the cluster's identity (CA bundles and keys, the encryption config)
    /// that preflight lets this deploy replace although they differ: the stages of a rotation
    /// hardway itself runs (`certs rotate-ca`, `secrets rotate-encryption-key`). Empty for a
    /// plain deploy, which never replaces them.
    pub replaceable: std::collections::BTreeSet<String>,
    /// (node, unit) pairs restarted even when none of the unit's files changed: a resumed
    /// rotation step, whose files are in place but whose daemons may not have reloaded them.
    pub restart: std::collections::BTreeSet<(String, String)>,
    /// How a worker whose binaries change (an upgrade) is drained first; none: restarted in
    /// place (`--no-drain`).
    pub drain: Option<crate::kube::DrainOptions>,
    /// Which files go where: all of the selected phases (deploy), or a day-2 change's, only
    /// where the node has them ([`Scope::Present`]; the phases are then those of what it
    /// picked, and preflight installs nothing).
    pub scope: Scope,
}

impl Default for DeployOptions {
    fn default() -> Self {
        DeployOptions {
            phases: Phase::ALL.to_vec(),
            dry_run: false,
            diff: false,
            parallel: 32,
            etcd_timeout: Duration::from_secs(120),
            api_timeout: Duration::from_secs(120),
            snapshot_dir: None,
            snapshot_keep: None,
            replaceable: Default::default(),
            restart: Default::default(),
            drain: Some(crate::kube::DrainOptions::default()),
            scope: Scope::Everything,
        }
    }
}

impl DeployOptions {
    /// The selected phases, sorted, without preflight (it always runs).
    pub fn selected(&self) -> Vec<Phase> {
        let mut phases: Vec<Phase> = self
            .phases
            .iter()
            .copied()
            .filter(|p| *p != Phase::Preflight)
            .collect();
        phases.sort();
        phases.dedup();
        phases
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct HostOutcome {
    pub node: String,
    pub ok: bool,
    /// The phase the host failed in, if it did.
    pub failed_phase: Option<Phase>,
    pub error: Option<String>,
    pub changed: usize,
    pub restarted: Vec<String>,
    pub started: Vec<String>,
    /// Reloaded in place (HAProxy: its listeners stay open).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reloaded: Vec<String>,
    /// Pods evicted (or, forced, deleted) to upgrade the node.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evicted: Vec<String>,
}

impl HostOutcome {
    /// Everything done on the host so far: files changed, units restarted, started, reloaded.
    fn actions(&self) -> usize {
        self.changed + self.restarted.len() + self.started.len() + self.reloaded.len()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DeployReport {
    pub dry_run: bool,
    pub phases: Vec<Phase>,
    /// Certificates created or re-issued before the deploy.
    pub pki_changes: Vec<String>,
    pub plan: Plan,
    /// What each phase does, in order (the dry run's account of restarts and waits).
    pub steps: Vec<String>,
    pub hosts: Vec<HostOutcome>,
    pub etcd: Vec<MemberStatus>,
    /// The snapshot taken before etcd changed, if one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<std::path::PathBuf>,
    /// `--dry-run --diff`: per host, each changed file's diff.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub diffs: BTreeMap<String, Vec<diff::FileDiff>>,
}

impl DeployReport {
    pub fn failed(&self) -> Vec<&HostOutcome> {
        self.hosts.iter().filter(|h| !h.ok).collect()
    }

    pub fn changed(&self) -> usize {
        self.hosts.iter().map(|h| h.changed).sum()
    }

    /// The final summary, one row per host.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<16} {:<7} {:>8}  {:<40} {}\n",
            "HOST", "STATUS", "CHANGED", "RESTARTED", "ERROR"
        );
        for h in &self.hosts {
            let status = if h.ok { "ok" } else { "FAILED" };
            let bounced: Vec<String> = h
                .restarted
                .iter()
                .cloned()
                .chain(h.reloaded.iter().map(|u| format!("{u} (reload)")))
                .collect();
            let restarted = if bounced.is_empty() {
                "-".to_string()
            } else {
                bounced.join(",")
            };
            let error = match (&h.failed_phase, &h.error) {
                (Some(p), Some(e)) => format!("[{p}] {}", e.lines().next().unwrap_or("")),
                (None, Some(e)) => e.lines().next().unwrap_or("").to_string(),
                _ => String::new(),
            };
            s.push_str(&format!(
                "{:<16} {:<7} {:>8}  {:<40} {error}\n",
                h.node, status, h.changed, restarted
            ));
        }
        let restarts: usize = self
            .hosts
            .iter()
            .map(|h| h.restarted.len() + h.reloaded.len())
            .sum();
        s.push_str(&format!(
            "{} changes, {restarts} restarts, {} of {} hosts failed",
            self.changed(),
            self.failed().len(),
            self.hosts.len()
        ));
        s
    }
}

/// One host's working state across phases.
pub(crate) struct Host {
    pub node: Node,
    pub remote: Option<Box<dyn Remote>>,
    pub facts: Option<Facts>,
    pub plan: Option<HostPlan>,
    /// What a [`Scope::Present`] picked for the host from the files it was given.
    pub picked: Vec<crate::render::File>,
    /// systemd has re-read this host's unit files since they changed.
    pub reloaded: bool,
    pub diffs: Vec<diff::FileDiff>,
    pub outcome: HostOutcome,
}

impl Host {
    fn new(node: &Node) -> Host {
        Host {
            node: node.clone(),
            remote: None,
            facts: None,
            plan: None,
            picked: vec![],
            reloaded: false,
            diffs: vec![],
            outcome: HostOutcome {
                node: node.name.clone(),
                ok: true,
                failed_phase: None,
                error: None,
                changed: 0,
                restarted: vec![],
                started: vec![],
                reloaded: vec![],
                evicted: vec![],
            },
        }
    }

    pub fn fail(&mut self, phase: Phase, e: impl std::fmt::Display) {
        self.outcome.ok = false;
        self.outcome.failed_phase = Some(phase);
        self.outcome.error = Some(e.to_string());
        self.remote = None;
    }

    pub fn alive(&self) -> bool {
        self.outcome.ok && self.remote.is_some()
    }

    pub fn remote(&self) -> &dyn Remote {
        self.remote
            .as_deref()
            .expect("only alive hosts are worked on")
    }

    pub fn plan(&self) -> &HostPlan {
        self.plan.as_ref().expect("alive hosts are planned")
    }
}

/// Everything a phase works with.
pub(crate) struct Ctx {
    pub inv: Arc<Inventory>,
    pub rendered: Arc<Rendered>,
    pub probe: Arc<dyn Probe>,
    pub opts: DeployOptions,
    pub phases: Vec<Phase>,
    pub hosts: Vec<Host>,
    pub events: Events,
    /// The last etcd member statuses (for the report).
    pub etcd: Vec<MemberStatus>,
    /// A phase failed in a way nothing after it can work around (etcd without quorum).
    pub stopped: bool,
    /// The snapshot taken before etcd changed.
    pub snapshot: Option<std::path::PathBuf>,
    /// The registered Nodes and the release each one's kubelet reports, when the workers phase
    /// may drain and the API answered (read once, after preflight).
    pub kubelets: Option<BTreeMap<String, String>>,
    /// Who held the controllers' leader leases before anything restarted (read with
    /// `kubelets`, by `workers::read_cluster`): a drain waits for a restarted controller-manager to lead again.
    pub leaders: BTreeMap<&'static str, Option<String>>,
}

impl Ctx {
    fn new(
        inv: &Inventory,
        rendered: Rendered,
        probe: Arc<dyn Probe>,
        opts: &DeployOptions,
        events: Events,
    ) -> Ctx {
        Ctx {
            inv: Arc::new(inv.clone()),
            rendered: Arc::new(rendered),
            probe,
            opts: opts.clone(),
            phases: opts.selected(),
            hosts: inv.nodes.iter().map(Host::new).collect(),
            events,
            etcd: vec![],
            stopped: false,
            snapshot: None,
            kubelets: None,
            leaders: BTreeMap::new(),
        }
    }

    /// Runs `f` on every host (alive or not: `f` decides), `--parallel` at a time, on the
    /// blocking pool.
    pub async fn each_host<F>(&mut self, f: F)
    where
        F: Fn(&mut Host) + Send + Sync + 'static,
    {
        let hosts = std::mem::take(&mut self.hosts);
        self.hosts = fan_out(hosts, self.opts.parallel, f).await;
    }

    /// Runs `f` on one host, by index, on the blocking pool.
    pub async fn on_host<R, F>(&mut self, i: usize, f: F) -> R
    where
        R: Send + 'static,
        F: FnOnce(&mut Host) -> R + Send + 'static,
    {
        let placeholder = Host::new(&self.hosts[i].node);
        let mut host = std::mem::replace(&mut self.hosts[i], placeholder);
        let (host, r) = tokio::task::spawn_blocking(move || {
            let r = f(&mut host);
            (host, r)
        })
        .await
        .expect("a host task panicked");
        self.hosts[i] = host;
        r
    }

    pub fn index_of(&self, node: &str) -> usize {
        self.hosts
            .iter()
            .position(|h| h.node.name == node)
            .expect("every node has a host")
    }
}

/// A deploy phase: what it does, and what it would do.
pub(crate) trait Step {
    /// Carries the phase out on the hosts still alive. Per-host failures are recorded on the
    /// host; an error stops the deploy.
    async fn run(&self, ctx: &mut Ctx) -> Result<(), DeployError>;
    /// One line per action, for `--dry-run` (no host is changed; probes may be read).
    fn dry_run(&self, ctx: &Ctx) -> Vec<String>;
}

/// Deploys `rendered` to the inventory's nodes. Errors are for what stops everything
/// (preflight); per-host failures are in the report.
pub async fn deploy(
    inv: &Inventory,
    rendered: Rendered,
    connector: Arc<dyn Connector>,
    probe: Arc<dyn Probe>,
    opts: &DeployOptions,
    events: Events,
) -> Result<DeployReport, DeployError> {
    prepare(inv, rendered, connector, probe, opts, events)
        .await?
        .run()
        .await
}

/// A deploy after its preflight: every host connected, its facts read and its plan made, the
/// rules passed; nothing changed yet. [`Prepared::run`] carries the plan out (or, in a dry
/// run, says what it would do); a day-2 change checks the cluster's health on these facts
/// first.
pub struct Prepared {
    ctx: Ctx,
}

/// Connects to every host, reads its facts, plans it and checks preflight's rules.
pub async fn prepare(
    inv: &Inventory,
    rendered: Rendered,
    connector: Arc<dyn Connector>,
    probe: Arc<dyn Probe>,
    opts: &DeployOptions,
    events: Events,
) -> Result<Prepared, DeployError> {
    let mut ctx = Ctx::new(inv, rendered, probe, opts, events);
    if let Err(e) = preflight::run(&mut ctx, connector).await {
        summary(&ctx, false);
        return Err(e);
    }
    workers::read_cluster(&mut ctx).await;
    Ok(Prepared { ctx })
}

impl Prepared {
    /// What every reached host is to get, and which of its units restart.
    pub fn plan(&self) -> Plan {
        plan_of(&self.ctx)
    }

    /// The hosts preflight could not reach or read, each with why.
    pub fn unreachable(&self) -> Vec<(String, String)> {
        self.ctx
            .hosts
            .iter()
            .filter(|h| !h.outcome.ok)
            .map(|h| {
                let why = h.outcome.error.clone().unwrap_or_default();
                (h.node.name.clone(), why)
            })
            .collect()
    }

    /// What `node` reported, if it was reached.
    pub fn facts(&self, node: &str) -> Option<&Facts> {
        self.ctx
            .hosts
            .iter()
            .find(|h| h.node.name == node && h.outcome.ok)
            .and_then(|h| h.facts.as_ref())
    }

    /// The files this deploy places: all it was given, or what a [`Scope::Present`] picked.
    pub fn rendered(&self) -> &Rendered {
        &self.ctx.rendered
    }

    /// The phases' account of what they would do, in order (the dry run's steps).
    pub fn steps(&self) -> Vec<String> {
        phase_order(&self.ctx)
            .into_iter()
            .flat_map(|p| dispatch_dry_run(p, &self.ctx))
            .collect()
    }

    /// The probe the phases run with from here on (a renewal's: its client certificates may
    /// be the renewed ones).
    pub fn with_probe(mut self, probe: Arc<dyn Probe>) -> Prepared {
        self.ctx.probe = probe;
        self
    }

    /// Runs the phases (a dry run only says what they would do) and reports.
    pub async fn run(self) -> Result<DeployReport, DeployError> {
        let mut ctx = self.ctx;
        let result = run_phases(&mut ctx).await;
        let mut diffs = BTreeMap::new();
        if result.is_ok() && ctx.opts.dry_run && ctx.opts.diff {
            diffs = diff::collect(&mut ctx).await;
        }
        summary(&ctx, result.is_ok());
        let steps = result?;
        Ok(DeployReport {
            dry_run: ctx.opts.dry_run,
            phases: ctx.phases.clone(),
            pki_changes: vec![],
            plan: plan_of(&ctx),
            steps,
            hosts: ctx.hosts.iter().map(|h| h.outcome.clone()).collect(),
            etcd: ctx.etcd,
            snapshot: ctx.snapshot,
            diffs,
        })
    }
}

fn plan_of(ctx: &Ctx) -> Plan {
    Plan {
        phases: ctx.phases.clone(),
        hosts: ctx
            .hosts
            .iter()
            .filter_map(|h| h.plan.clone().map(|p| (h.node.name.clone(), p)))
            .collect(),
    }
}

/// The run's summary event: hosts, the failed ones, and what was done.
fn summary(ctx: &Ctx, ok: bool) {
    let failed: Vec<String> = ctx
        .hosts
        .iter()
        .filter(|h| !h.outcome.ok)
        .map(|h| h.node.name.clone())
        .collect();
    let count = |f: fn(&HostOutcome) -> usize| ctx.hosts.iter().map(|h| f(&h.outcome)).sum();
    let counts = [
        ("changes".to_string(), count(|o| o.changed)),
        ("restarts".to_string(), count(|o| o.restarted.len())),
        ("starts".to_string(), count(|o| o.started.len())),
        ("reloads".to_string(), count(|o| o.reloaded.len())),
    ];
    ctx.events.summary(
        ok && failed.is_empty(),
        ctx.hosts.len(),
        failed,
        counts.into_iter().collect(),
    );
}

/// The phases in the order they run. The files step places the files of every selected
/// phase, also when `files` itself (the files no unit reads) is not selected.
fn phase_order(ctx: &Ctx) -> Vec<Phase> {
    let mut order = vec![Phase::Files];
    order.extend(ctx.phases.iter().copied().filter(|p| *p != Phase::Files));
    order
}

async fn run_phases(ctx: &mut Ctx) -> Result<Vec<String>, DeployError> {
    let mut steps = Vec::new();
    for phase in phase_order(ctx) {
        if ctx.opts.dry_run {
            steps.extend(dispatch_dry_run(phase, ctx));
            continue;
        }
        let before: Vec<(bool, usize)> = ctx
            .hosts
            .iter()
            .map(|h| (h.outcome.ok, h.outcome.actions()))
            .collect();
        let result = dispatch_run(phase, ctx).await;
        // One event per host and phase, so a stream accounts for every host in every phase.
        for (h, (was_ok, done)) in ctx.hosts.iter().zip(before) {
            let now = h.outcome.actions();
            let (status, message) = match (was_ok, h.outcome.ok) {
                (false, _) => (Status::Skipped, Some("failed earlier".to_string())),
                (true, false) => (
                    Status::Failed,
                    h.outcome
                        .error
                        .as_ref()
                        .map(|e| e.lines().next().unwrap_or("").to_string()),
                ),
                (true, true) if now > done => (Status::Changed, None),
                (true, true) => (Status::Ok, None),
            };
            ctx.events.emit(
                Some(&h.node.name),
                Some(phase.name()),
                "phase",
                status,
                None,
                message,
            );
        }
        result?;
        if ctx.stopped {
            break;
        }
    }
    Ok(steps)
}

fn dispatch_dry_run(phase: Phase, ctx: &Ctx) -> Vec<String> {
    match phase {
        Phase::Preflight => vec![],
        Phase::Files => files::Files.dry_run(ctx),
        Phase::Etcd => etcd::Etcd.dry_run(ctx),
        Phase::Lb => lb::Lb.dry_run(ctx),
        Phase::ControlPlane => control_plane::ControlPlane.dry_run(ctx),
        Phase::Workers => workers::Workers.dry_run(ctx),
        Phase::Addons => addons::Addons.dry_run(ctx),
    }
}

async fn dispatch_run(phase: Phase, ctx: &mut Ctx) -> Result<(), DeployError> {
    match phase {
        Phase::Preflight => Ok(()),
        Phase::Files => files::Files.run(ctx).await,
        Phase::Etcd => etcd::Etcd.run(ctx).await,
        Phase::Lb => lb::Lb.run(ctx).await,
        Phase::ControlPlane => control_plane::ControlPlane.run(ctx).await,
        Phase::Workers => workers::Workers.run(ctx).await,
        Phase::Addons => addons::Addons.run(ctx).await,
    }
}

/// Places every file of `phases` on every host: deploy's preflight connection and facts, plan,
/// and files step on their own, without preflight rules, systemctl or PKI (`rendered` is sent
/// as given). `benches/fanout.rs` times it on hosts that run sshd without systemd.
pub async fn push_files(
    inv: &Inventory,
    rendered: Rendered,
    connector: Arc<dyn Connector>,
    phases: &[Phase],
    parallel: usize,
) -> Vec<PushOutcome> {
    let opts = DeployOptions {
        phases: phases.to_vec(),
        parallel,
        ..DeployOptions::default()
    };
    let mut ctx = Ctx::new(
        inv,
        rendered,
        Arc::new(crate::probe::NetProbe::default()),
        &opts,
        Events::none("push"),
    );
    preflight::connect_and_plan(&mut ctx, connector).await;
    files::Files
        .run(&mut ctx)
        .await
        .expect("the files step stops nothing");
    ctx.hosts
        .into_iter()
        .map(|h| PushOutcome {
            unchanged: h.plan.as_ref().map(|p| p.unchanged).unwrap_or(0),
            node: h.outcome.node,
            changed: h.outcome.changed,
            error: h.outcome.error,
        })
        .collect()
}

/// One host's result of [`push_files`].
#[derive(Debug, Clone, Serialize)]
pub struct PushOutcome {
    pub node: String,
    /// Files sent: created, updated, or given the right mode and owner.
    pub changed: usize,
    /// Files that were already right and were not sent.
    pub unchanged: usize,
    pub error: Option<String>,
}

/// The PKI directory, for messages.
pub fn pki_hint(dir: &Path) -> String {
    format!("hardway pki generate --out {}", dir.display())
}
