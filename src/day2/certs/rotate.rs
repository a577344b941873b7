//! Running a rotation (`pki::rotate`) on a cluster: `certs rotate-ca`, `secrets
//! rotate-encryption-key`, `secrets rotate-service-account-key`. Each step is pushed like a
//! renewal — only the files that depend on what rotates, where the node has them, in deploy's
//! rolling order — then checked with `verify`. The state in the PKI directory is written before
//! a step changes anything, so that an interrupted run resumes the step it was in, restarting
//! again every unit that step restarts (its files may all be in place while some daemons still
//! run with the old ones). A step that fails stays under way; the next run takes it up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use time::OffsetDateTime;

use super::super::{Day2Error, secrets, stamp};
use super::ChangeOptions;
use super::push::{self, gate_step, health, plan_lines};
use super::renew::ProbeFor;
use crate::deploy::{DeployOptions, DeployReport, Prepared};
use crate::digest::sha256_hex;
use crate::events::{Events, Status};
use crate::inventory::Inventory;
use crate::pki::CaId;
use crate::pki::rotate::{self, Pair, Rotation, Subject};
use crate::pki::{self, Pki, Renewal};
use crate::remote::Connector;
use crate::render::{self, Rendered};
use crate::verify;

pub struct RotateOptions {
    pub subject: Subject,
    /// Only this step (it must be the next one); none: every step left.
    pub step: Option<u8>,
    pub change: ChangeOptions,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: u8,
    pub what: &'static str,
    /// The step was under way when the run started (an earlier run stopped in it).
    pub resumed: bool,
    /// Certificates re-issued from the new CA (a CA's second step).
    pub renewed: Vec<Renewal>,
    /// Secrets stored again with the new encryption key (its third step).
    pub rewritten: Option<usize>,
    /// The workloads restarted so that their pods trust the new cluster CA (its first step).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pods: Option<crate::kube::Restarted>,
    /// The operator's admin kubeconfig beside the PKI, rewritten with the step's trust and
    /// certificate (the cluster CA's steps).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    pub deploy: Option<DeployReport>,
    /// Why the step stopped, when it did outside the rollout (the rewrite).
    pub error: Option<String>,
    /// verify's FAILs after the step that were not there before it; the step stays under way
    /// while there are any.
    pub verify_failed: Vec<String>,
    /// verify's FAILs that were there before the step too: said, but not the step's doing
    /// (a metrics-server whose pod lost its token, say), so they do not stop the rotation.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub already_failing: Vec<String>,
}

impl StepReport {
    fn failed(&self) -> bool {
        self.error.is_some()
            || !self.verify_failed.is_empty()
            || self.deploy.as_ref().is_some_and(|d| !d.failed().is_empty())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RotateReport {
    /// What rotates (`etcd CA`, `encryption key`).
    pub subject: String,
    pub dry_run: bool,
    /// What the run does (or, dry, would do), in order.
    pub plan: Vec<String>,
    pub forced_past: Vec<String>,
    pub snapshot: Option<PathBuf>,
    pub steps: Vec<StepReport>,
    /// Steps finished when the run ended, of `last`.
    pub done: u8,
    pub last: u8,
    /// Where replaced files, and at the end the rotation's directory, are kept.
    pub aside: Option<PathBuf>,
}

impl RotateReport {
    pub fn failed(&self) -> bool {
        self.steps.iter().any(StepReport::failed)
    }
}

/// The files whose bytes depend on what rotates: rendered twice, the second time with the
/// material marked, what differs.
fn depends_on(
    inv: &Inventory,
    pki: &Pki,
    s: Subject,
) -> Result<BTreeSet<(String, String)>, Day2Error> {
    let (a, b) = (
        render::render(inv, pki)?,
        render::render(inv, &rotate::marked(inv, pki, s))?,
    );
    let mut out = BTreeSet::new();
    for (host, files) in &a.hosts {
        for (x, y) in files.iter().zip(&b.hosts[host]) {
            if x.contents != y.contents {
                out.insert((host.clone(), x.path.clone()));
            }
        }
    }
    Ok(out)
}

/// The SHA-256 of every version of the cluster's identity files (CA bundles and keys, the
/// service-account pair, the encryption config) that some stage of this rotation renders:
/// what deploy's preflight may replace while it runs, and nothing of another PKI.
fn replaceable(
    inv: &Inventory,
    pki: &Pki,
    s: Subject,
    p: &Pair,
) -> Result<BTreeSet<String>, Day2Error> {
    let mut out = BTreeSet::new();
    for stage in 0..=s.last() {
        let r = render::render(inv, &rotate::staged(pki, s, p, stage))?;
        out.extend(
            r.hosts
                .values()
                .flatten()
                .filter(|f| f.anchor.is_some())
                .map(|f| sha256_hex(&f.contents)),
        );
    }
    Ok(out)
}

/// The PKI a step renders from, with the re-issued leaves of a CA's switch step (in memory).
fn target(
    inv: &Inventory,
    pki: &Pki,
    s: Subject,
    p: &Pair,
    step: u8,
) -> Result<(Pki, Vec<Renewal>), Day2Error> {
    if let Subject::Ca(id) = s
        && step == s.switch_step()
    {
        let (after, renewed) = rotate::switch_plan(inv, pki, id, p, OffsetDateTime::now_utc())?;
        return Ok((rotate::staged(&after, s, p, step), renewed));
    }
    Ok((rotate::staged(pki, s, p, step), vec![]))
}

/// Reads every node and plans step `k`'s push of `after`: the files that depend on what
/// rotates (`depends_on`), where the nodes have them, with the units the step restarts again
/// (`restart`: a resumed step's).
#[allow(clippy::too_many_arguments)]
async fn open(
    inv: &Inventory,
    render_pki: &Pki,
    s: Subject,
    pair: &Pair,
    after: &Rendered,
    connector: Arc<dyn Connector>,
    probe: Arc<dyn crate::probe::Probe>,
    deploy: DeployOptions,
    restart: &BTreeSet<(String, String)>,
    events: Events,
) -> Result<Prepared, Day2Error> {
    let opts = DeployOptions {
        replaceable: replaceable(inv, render_pki, s, pair)?,
        restart: restart.clone(),
        ..deploy
    };
    let affected = depends_on(inv, render_pki, s)?;
    push::open(inv, after, affected, connector, probe, &opts, events).await
}

pub async fn rotate_subject(
    inv: &Inventory,
    pki_dir: &Path,
    connector: Arc<dyn Connector>,
    probe_for: ProbeFor<'_>,
    opts: &RotateOptions,
    events: &Events,
) -> Result<RotateReport, Day2Error> {
    let s = opts.subject;
    let really = !opts.change.confirm.dry_run && opts.change.confirm.yes;
    let pki0 = pki::load(inv, pki_dir)?;
    let others: Vec<&str> = rotate::rotations_under_way(pki_dir)?
        .into_iter()
        .filter(|n| *n != s.name())
        .collect();
    if !others.is_empty() {
        return Err(Day2Error::Refused {
            reason: format!(
                "a rotation of {} is under way: finish it first, one rotation at a time",
                others.join(", ")
            ),
        });
    }
    let (mut state, mut pair) = rotate::begin(inv, &pki0, s, OffsetDateTime::now_utc(), !really)?;
    let first = state.next();
    let last = match opts.step {
        Some(k) if k != first => {
            let under_way = if state.running.is_some() {
                ", this one under way"
            } else {
                ""
            };
            return Err(Day2Error::Refused {
                reason: format!(
                    "step {k} of the {} rotation cannot run now: step {first} is next ({} done{under_way})",
                    s.describe(),
                    state.done
                ),
            });
        }
        Some(k) if k > s.last() => {
            return Err(Day2Error::Refused {
                reason: format!("the {} rotation has {} steps", s.describe(), s.last()),
            });
        }
        Some(k) => k,
        None => s.last(),
    };
    let aside = pki::aside_dir(pki_dir, &format!("rotate-{}", s.name()), &stamp());
    let mut report = RotateReport {
        subject: s.describe(),
        dry_run: opts.change.confirm.dry_run,
        plan: vec![],
        forced_past: vec![],
        snapshot: None,
        steps: vec![],
        done: state.done,
        last: s.last(),
        aside: None,
    };
    if !really {
        report.plan = plan(
            inv, &pki0, &state, &pair, first, last, connector, probe_for, opts,
        )
        .await?;
        if opts.change.confirm.dry_run {
            return Ok(report);
        }
        return Err(Day2Error::NeedsYes {
            what: format!("rotate the {}", s.describe()),
            steps: report.plan,
        });
    }

    for k in first..=last {
        let resumed = state.running == Some(k);
        let pki_now = pki::load(inv, pki_dir)?;
        pair = rotate::pair(&pki_now, s)?;
        let (mut render_pki, renewed) = target(inv, &pki_now, s, &pair, k)?;
        let probe = probe_for(&render_pki);
        let mut after = render::render(inv, &render_pki)?;
        // The units the step restarts, as its health check's read of the nodes planned them.
        let mut restarts = BTreeSet::new();
        let mut before = Failing::new();
        let mut sr = StepReport {
            step: k,
            what: s.steps()[usize::from(k) - 1],
            resumed,
            renewed,
            rewritten: None,
            pods: None,
            kubeconfig: None,
            deploy: None,
            error: None,
            verify_failed: vec![],
            already_failing: vec![],
        };
        // The same list the dry run printed for this step, in its order.
        for act in acts(inv, s, k, first, opts) {
            match act {
                Act::Health => {
                    let step = events.start(
                        None,
                        Some("rotate"),
                        &format!("step {k}: read every node and check the cluster's health"),
                    );
                    // Read as a dry run: the push reads the nodes again when it runs, after
                    // the step's switch, rewrite and checks.
                    let r = open(
                        inv,
                        &render_pki,
                        s,
                        &pair,
                        &after,
                        connector.clone(),
                        probe.clone(),
                        DeployOptions {
                            dry_run: true,
                            ..opts.change.deploy.clone()
                        },
                        &state.restart,
                        events.clone(),
                    )
                    .await;
                    let (r, step) = step.or_fail(r)?;
                    let problems = health(inv, probe.as_ref(), &r).await;
                    restarts = r.plan().restarts();
                    report.forced_past.extend(gate_step(
                        step,
                        problems,
                        opts.change.confirm.force,
                        &format!("start step {k} of the {} rotation", s.describe()),
                    )?);
                }
                // Refused before anything is written, the snapshot included.
                Act::Settle => {
                    let Some(wait) = settles(&state, s) else {
                        continue;
                    };
                    let why = format!(
                        "tokens the old service-account key signed may still be in use until {wait} (a kubelet replaces its pods' tokens within the hour after step {}); dropping the old key now cuts those pods off the API until then",
                        s.switch_step()
                    );
                    if !opts.change.confirm.force {
                        return Err(Day2Error::Refused {
                            reason: format!(
                                "step {k} of the {} rotation: {why}. Run it then, or now with --force",
                                s.describe()
                            ),
                        });
                    }
                    report.forced_past.push(why);
                }
                Act::Snapshot => {
                    let dir = opts
                        .change
                        .snapshot_dir
                        .as_ref()
                        .expect("acts() lists a snapshot only with a directory");
                    let info =
                        crate::snapshot::save(inv, probe.as_ref(), dir, opts.change.snapshot_keep)
                            .await?;
                    report.snapshot = Some(dir.join(info.file));
                }
                Act::Begin => {
                    // What verify already fails before anything changes is not the step's to
                    // answer for.
                    before = failing_checks(
                        inv,
                        pki_dir,
                        connector.clone(),
                        probe.clone(),
                        opts.change.deploy.parallel,
                    )
                    .await
                    .unwrap_or_default();
                    // The state first: from here on, a run that stops resumes this step.
                    state.running = Some(k);
                    state.restart.append(&mut restarts);
                    rotate::save(pki_dir, s, &state)?;
                }
                Act::Switch => {
                    rotate::switch_commit(&pki_now, s, &pair, &render_pki, &sr.renewed, &aside)?;
                    report.aside = aside.exists().then(|| aside.clone());
                    // What was written is what goes to the nodes.
                    render_pki = rotate::staged(&pki::load(inv, pki_dir)?, s, &pair, k);
                    after = render::render(inv, &render_pki)?;
                }
                Act::Rewrite => match secrets::rewrite(inv, connector.as_ref(), events) {
                    Ok(n) => sr.rewritten = Some(n),
                    Err(e) => sr.error = Some(e.to_string()),
                },
                Act::AdminKubeconfig => {
                    sr.kubeconfig = super::refresh_admin_kubeconfig(inv, &render_pki, pki_dir)?;
                }
                Act::Push if sr.error.is_none() => {
                    let push = open(
                        inv,
                        &render_pki,
                        s,
                        &pair,
                        &after,
                        connector.clone(),
                        probe_for(&render_pki),
                        opts.change.deploy.clone(),
                        &state.restart,
                        events.clone(),
                    )
                    .await?;
                    if !push.plan().is_noop() {
                        sr.deploy = Some(push.run().await?);
                    }
                }
                Act::Push => {}
                Act::PodsTrust if !sr.failed() => {
                    match pods_trust(inv, &render_pki, probe_for, &opts.change.deploy, events).await
                    {
                        Ok(r) => sr.pods = Some(r),
                        Err(e) => sr.error = Some(e.to_string()),
                    }
                }
                Act::Verify if !sr.failed() => {
                    (sr.verify_failed, sr.already_failing) = verify_after(
                        inv,
                        pki_dir,
                        connector.clone(),
                        probe_for(&render_pki),
                        opts.change.deploy.parallel,
                        opts.change.deploy.api_timeout,
                        &before,
                    )
                    .await;
                }
                Act::PodsTrust | Act::Verify => {}
            }
        }
        let failed = sr.failed();
        report.steps.push(sr);
        if failed {
            return Ok(report);
        }
        state = Rotation {
            done: k,
            running: None,
            restart: BTreeSet::new(),
            switched_at: if k == s.switch_step() {
                Some(crate::events::now_rfc3339())
            } else {
                state.switched_at
            },
            ..state
        };
        report.done = k;
        if k == s.last() {
            rotate::finish(pki_dir, s, &aside)?;
            report.aside = Some(aside.clone());
        } else {
            rotate::save(pki_dir, s, &state)?;
        }
    }
    Ok(report)
}

/// What one step of a rotation does, in order: [`acts`] lists them, the dry run prints those
/// that say something, the real run carries out the same list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    /// Every node read, the cluster's health checked: refused when not healthy (`--force`).
    Health,
    /// The service-account key's last step: refused until the old key's tokens are refreshed.
    Settle,
    /// An etcd snapshot, before the run's first step changes anything.
    Snapshot,
    /// verify's FAILs before the step, then the state saved: a run that stops resumes here.
    Begin,
    /// The PKI directory takes the new material (a CA's leaves re-issued from it).
    Switch,
    /// Every Secret stored again through the API (the encryption key).
    Rewrite,
    /// The operator's `pki/admin.kubeconfig` follows the step (the cluster CA).
    AdminKubeconfig,
    /// The files that depend on what rotates, where the nodes have them, in deploy's order.
    Push,
    /// Pods made to trust the new cluster CA.
    PodsTrust,
    /// `hardway verify`, its new FAILs keeping the step under way.
    Verify,
}

/// The acts of step `k` of the rotation of `s`, the run starting at step `first`.
fn acts(inv: &Inventory, s: Subject, k: u8, first: u8, opts: &RotateOptions) -> Vec<Act> {
    let mut out = vec![Act::Health];
    if k == s.last() && s.settle_after_switch().is_some() {
        out.push(Act::Settle);
    }
    if k == first && opts.change.snapshot_dir.is_some() && !inv.etcd_members().is_empty() {
        out.push(Act::Snapshot);
    }
    out.push(Act::Begin);
    if k == s.switch_step() {
        out.push(Act::Switch);
    }
    if s.rewrite_step() == Some(k) {
        out.push(Act::Rewrite);
    }
    if s == Subject::Ca(CaId::Kubernetes) {
        out.push(Act::AdminKubeconfig);
    }
    out.push(Act::Push);
    if s.pods_trust_step() == Some(k) && inv.masters().next().is_some() {
        out.push(Act::PodsTrust);
    }
    out.push(Act::Verify);
    out
}

/// Pods take up the new cluster CA, as kubernetes.io's manual CA rotation has them do before
/// any server presents a certificate of the new CA: once the controller-manager (restarted with
/// the bundle as its `--root-ca-file`) has published the bundle as every namespace's
/// `kube-root-ca.crt`, every Deployment, DaemonSet and StatefulSet is restarted, because most
/// clients read their `ca.crt` only when they start (client-go re-reads it from 1.36 on, every
/// five minutes, once the kubelet has updated it). Pods no controller manages are named.
async fn pods_trust(
    inv: &Inventory,
    render_pki: &Pki,
    probe_for: ProbeFor<'_>,
    deploy: &DeployOptions,
    events: &Events,
) -> Result<crate::kube::Restarted, crate::kube::KubeError> {
    let probe = probe_for(render_pki);
    let api = crate::kube::Api::new(probe.as_ref(), inv.api_endpoint());
    let certs = pki::pem_certificates(&render_pki.ca(CaId::Kubernetes).cert_pem);
    let step = events.start(
        None,
        Some("rotate"),
        "wait until every namespace's kube-root-ca.crt holds the new CA",
    );
    step.finish(
        api.root_ca_published(&certs, deploy.api_timeout).await,
        |n| (Status::Ok, Some(format!("{n} namespaces"))),
    )?;
    let step = events.start(
        None,
        Some("rotate"),
        "restart every Deployment, DaemonSet and StatefulSet, so that their pods trust the new CA",
    );
    let timeout = deploy
        .drain
        .map_or(std::time::Duration::from_secs(300), |d| d.timeout);
    step.finish(api.restart_workloads(timeout).await, |r| {
        (
            Status::Changed,
            Some(format!("{} rolled out", r.workloads.len())),
        )
    })
}

/// Until when the last step should wait after the switch step, if that is still ahead.
fn settles(state: &Rotation, s: Subject) -> Option<String> {
    let wait = s.settle_after_switch()?;
    let at = OffsetDateTime::parse(
        state.switched_at.as_deref()?,
        &time::format_description::well_known::Rfc3339,
    )
    .ok()?;
    let until = at + wait;
    (until > OffsetDateTime::now_utc()).then(|| {
        until
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    })
}

/// The dry run's account: what the next step changes where, and what the later ones do.
#[allow(clippy::too_many_arguments)]
async fn plan(
    inv: &Inventory,
    pki: &Pki,
    state: &Rotation,
    pair: &Pair,
    first: u8,
    last: u8,
    connector: Arc<dyn Connector>,
    probe_for: ProbeFor<'_>,
    opts: &RotateOptions,
) -> Result<Vec<String>, Day2Error> {
    let s = opts.subject;
    let mut out = Vec::new();
    if state.done == 0 && state.running.is_none() {
        out.push(format!(
            "make a new {} ({}), kept in {} until it is in use",
            s.describe(),
            state.new_id,
            pki.dir.join("rotation").join(s.name()).display()
        ));
    }
    let (render_pki, renewed) = target(inv, pki, s, pair, first)?;
    let after = render::render(inv, &render_pki)?;
    let read = open(
        inv,
        &render_pki,
        s,
        pair,
        &after,
        connector,
        probe_for(&render_pki),
        DeployOptions {
            dry_run: true,
            ..opts.change.deploy.clone()
        },
        &state.restart,
        Events::none("rotate"),
    )
    .await?;
    let push_plan = read.plan();
    let pods = |k: u8| {
        format!(
            "step {k}: wait until every namespace's kube-root-ca.crt holds the new CA, then restart every Deployment, DaemonSet and StatefulSet (kubectl rollout restart), so that their pods trust it before any server presents a certificate of it"
        )
    };
    // Each step's acts, as the run carries them out: the first step in detail (what it
    // re-issues, replaces and restarts), the later ones by what they are.
    for k in first..=last {
        let detail = k == first;
        let resumed = if detail && state.running == Some(first) {
            " (resumed: every unit it restarts restarts again)"
        } else {
            ""
        };
        let mut lines = vec![format!(
            "step {k}: {}{resumed}",
            s.steps()[usize::from(k) - 1]
        )];
        for act in acts(inv, s, k, first, opts) {
            match act {
                // A run's first change: before the step's own lines.
                Act::Snapshot => {
                    if let Some(dir) = &opts.change.snapshot_dir {
                        out.push(format!("snapshot etcd into {}", dir.display()));
                    }
                }
                Act::Switch if detail && !renewed.is_empty() => lines.push(format!(
                    "step {k}: re-issue {} certificates from the new CA: {}",
                    renewed.len(),
                    renewed
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                Act::Push if detail && !push_plan.is_noop() => {
                    lines.extend(
                        plan_lines(&push_plan, &read.steps())
                            .into_iter()
                            .map(|l| format!("step {k}: {l}")),
                    );
                }
                Act::PodsTrust => lines.push(pods(k)),
                Act::Verify if detail => lines.push(format!("step {k}: hardway verify")),
                Act::Settle => {
                    let wait = s.settle_after_switch().expect("acts() lists it only then");
                    let when = match settles(state, s) {
                        Some(until) => format!("not before {until}"),
                        None if state.done >= s.switch_step() => {
                            "now: the old key's tokens are refreshed".into()
                        }
                        None => format!("{} s after step {}", wait.as_secs(), s.switch_step()),
                    };
                    lines.push(format!(
                        "step {k}: {when}, when every pod's token is signed by the new key (--force: sooner)"
                    ));
                }
                _ => {}
            }
        }
        out.extend(lines);
    }
    Ok(out)
}

/// verify's FAILs, by place and check, each with its line for the report.
type Failing = BTreeMap<(String, String), String>;

/// verify's FAILs, from the PKI directory as it is now.
async fn failing_checks(
    inv: &Inventory,
    pki_dir: &Path,
    connector: Arc<dyn Connector>,
    probe: Arc<dyn crate::probe::Probe>,
    parallel: usize,
) -> Result<Failing, String> {
    let creds = verify::Credentials::load(&verify::VerifyOptions::new(pki_dir.to_path_buf()))
        .map_err(|e| e.to_string())?;
    let checks = verify::verify(
        inv,
        creds,
        connector,
        probe,
        None,
        parallel,
        Events::none("verify"),
    )
    .await;
    Ok(checks
        .into_iter()
        .filter(|c| c.status == verify::Status::Fail)
        .map(|c| {
            let line = format!("{} {}: {}", c.place(), c.check, c.detail);
            ((c.place().to_string(), c.check), line)
        })
        .collect())
}

/// verify after a step, until it finds no FAIL that `before` did not have (or `within` has
/// passed): those FAILs, and the ones that were there before. A restarted API server is back
/// in HAProxy's rotation only after its health checks (rise 2, 2 s apart), so the cluster may
/// take seconds to settle after a step.
async fn verify_after(
    inv: &Inventory,
    pki_dir: &Path,
    connector: Arc<dyn Connector>,
    probe: Arc<dyn crate::probe::Probe>,
    parallel: usize,
    within: std::time::Duration,
    before: &Failing,
) -> (Vec<String>, Vec<String>) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let now =
            match failing_checks(inv, pki_dir, connector.clone(), probe.clone(), parallel).await {
                Ok(f) => f,
                Err(e) => return (vec![e], vec![]),
            };
        let (old, new): (Vec<_>, Vec<_>) =
            now.into_iter().partition(|(k, _)| before.contains_key(k));
        if new.is_empty() || std::time::Instant::now() >= deadline {
            let lines = |v: Vec<(_, String)>| v.into_iter().map(|(_, l)| l).collect();
            return (lines(new), lines(old));
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}
