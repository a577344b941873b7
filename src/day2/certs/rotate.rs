//! `hardway certs rotate-ca [cluster|etcd|front-proxy] [--step N]`: the three steps of
//! `pki::rotate`, each pushed like a renewal (only the files that read the CA, where the node
//! has them, in deploy's rolling order) and followed by `verify`; the state in the PKI
//! directory, written before a step changes anything, so that an interrupted run resumes the
//! step it was in — restarting again every unit that step restarts, since its files may all be
//! in place while some daemons still run with the old ones.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use time::OffsetDateTime;

use super::push::{self, gate, health, plan_lines, restarts, select, survey};
use super::renew::ProbeFor;
use super::super::{Confirm, Day2Error, stamp};
use crate::deploy::{DeployOptions, DeployReport};
use crate::events::{Events, Status};
use crate::inventory::Inventory;
use crate::pki::rotate::{self, Cas, Rotation, STEPS, ca_name};
use crate::pki::{self, CaId, KeyedCert, Pki, Renewal};
use crate::remote::Connector;
use crate::render::{self, Rendered};
use crate::verify;

pub struct RotateOptions {
    pub ca: CaId,
    /// Only this step (it must be the next one); none: every step left.
    pub step: Option<u8>,
    pub confirm: Confirm,
    pub snapshot_dir: Option<PathBuf>,
    pub snapshot_keep: Option<usize>,
    pub deploy: DeployOptions,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: u8,
    pub what: &'static str,
    /// The step was under way when the run started (an earlier run stopped in it).
    pub resumed: bool,
    /// Certificates re-issued from the new CA (step 2).
    pub renewed: Vec<Renewal>,
    pub deploy: Option<DeployReport>,
    /// verify's FAILs after the step; the step stays under way while there are any.
    pub verify_failed: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RotateReport {
    pub ca: &'static str,
    pub dry_run: bool,
    /// What the run does (or, dry, would do), in order.
    pub plan: Vec<String>,
    pub forced_past: Vec<String>,
    pub snapshot: Option<PathBuf>,
    pub steps: Vec<StepReport>,
    /// Steps finished when the run ended.
    pub done: u8,
    /// Where the finished rotation (the old CA with it) is kept.
    pub aside: Option<PathBuf>,
}

impl RotateReport {
    pub fn failed(&self) -> bool {
        self.steps.iter().any(|s| !s.verify_failed.is_empty() || s.deploy.as_ref().is_some_and(|d| !d.failed().is_empty()))
    }
}

/// The files whose bytes depend on CA `id` (its certificate or key, a leaf it signed): rendered
/// twice, the second time with each of them marked, what differs.
fn depends_on(inv: &Inventory, pki: &Pki, id: CaId) -> Result<BTreeSet<(String, String)>, Day2Error> {
    let mark = |kc: &mut KeyedCert| {
        kc.cert_pem.push_str("#\n");
        kc.key_pem.push_str("#\n");
    };
    let mut marked = pki.clone();
    mark(marked.cas.get_mut(&id).expect("the CA is in the PKI"));
    for name in rotate::leaves_of(inv, id) {
        mark(marked.certs.get_mut(&name).expect("every leaf is in the PKI"));
    }
    let (a, b) = (render::render(inv, pki)?, render::render(inv, &marked)?);
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

/// The PKI a step renders from, with the re-issued leaves of step 2 (in memory).
fn target(inv: &Inventory, pki: &Pki, id: CaId, cas: &Cas, step: u8) -> Result<(Pki, Vec<Renewal>), Day2Error> {
    if step == 2 {
        let (after, renewed) = rotate::switch_plan(inv, pki, id, cas, OffsetDateTime::now_utc())?;
        return Ok((rotate::staged(&after, id, cas, 2), renewed));
    }
    Ok((rotate::staged(pki, id, cas, step), vec![]))
}

pub async fn rotate_ca(
    inv: &Inventory,
    pki_dir: &Path,
    connector: Arc<dyn Connector>,
    probe_for: ProbeFor<'_>,
    opts: &RotateOptions,
    events: &Events,
) -> Result<RotateReport, Day2Error> {
    let id = opts.ca;
    let really = !opts.confirm.dry_run && opts.confirm.yes;
    let pki0 = pki::load(inv, pki_dir)?;
    let (mut state, mut cas) = rotate::begin(inv, &pki0, id, OffsetDateTime::now_utc(), !really)?;
    let first = state.next();
    let last = match opts.step {
        Some(s) if s != first => {
            return Err(Day2Error::Refused {
                reason: format!("step {s} of the {} CA rotation cannot run now: step {first} is next ({} done{})", ca_name(id), state.done, if state.running.is_some() { ", this one under way" } else { "" }),
            });
        }
        Some(s) => s,
        None => 3,
    };
    let at = stamp();
    let aside = pki::aside_dir(pki_dir, &format!("rotate-{}", ca_name(id)), &at);
    let mut report = RotateReport { ca: ca_name(id), dry_run: opts.confirm.dry_run, plan: vec![], forced_past: vec![], snapshot: None, steps: vec![], done: state.done, aside: None };
    if opts.confirm.dry_run || !opts.confirm.yes {
        report.plan = plan(inv, &pki0, &state, &cas, first, last, connector, probe_for, opts).await?;
        if opts.confirm.dry_run {
            return Ok(report);
        }
        return Err(Day2Error::NeedsYes { what: format!("rotate the {} CA", ca_name(id)), steps: report.plan });
    }

    for k in first..=last {
        let resumed = state.running == Some(k);
        let pki_now = pki::load(inv, pki_dir)?;
        cas = rotate::cas(&pki_now, id).unwrap_or(cas);
        let (render_pki, renewed) = target(inv, &pki_now, id, &cas, k)?;
        let probe = probe_for(&render_pki);
        let after = render::render(inv, &render_pki)?;
        let step = events.start(None, Some("rotate-ca"), &format!("step {k}: read every node and check the cluster's health"));
        let seen = survey(inv, connector.clone(), &after, opts.deploy.parallel).await;
        let problems = health(inv, probe.as_ref(), &seen).await;
        step.done(if problems.is_empty() { Status::Ok } else { Status::Failed }, Some(problems.join("; ")).filter(|s| !s.is_empty()));
        report.forced_past.extend(gate(problems, opts.confirm.force, &format!("start step {k} of the {} CA rotation", ca_name(id)))?);
        if k == first && let Some(dir) = &opts.snapshot_dir && !inv.etcd_members().is_empty() {
            let info = crate::day2::snapshot::save(inv, probe.as_ref(), dir, opts.snapshot_keep).await?;
            report.snapshot = Some(dir.join(info.file));
        }

        // The state first: from here on, a run that stops resumes this step.
        let deps = depends_on(inv, &render_pki, id)?;
        let affects = |h: &str, f: &render::File| deps.contains(&(h.to_string(), f.path.clone()));
        let first_pick = select(&after, &seen, &affects, &state.restart);
        state.running = Some(k);
        state.restart.extend(restarts(&first_pick));
        rotate::save(pki_dir, id, &state)?;
        let (render_pki, after) = if k == 2 && !renewed.is_empty() {
            rotate::switch_commit(&pki_now, id, &cas, &render_pki, &renewed, &aside)?;
            report.aside = Some(aside.clone());
            // What was written is what goes to the nodes.
            let written = rotate::staged(&pki::load(inv, pki_dir)?, id, &cas, 2);
            let after = render::render(inv, &written)?;
            (written, after)
        } else {
            (render_pki, after)
        };
        let selection = select(&after, &seen, &affects, &state.restart);
        let deploy_opts = DeployOptions { replaceable: rotate::replaceable(&cas), restart: state.restart.clone(), ..opts.deploy.clone() };
        let d = push::push(inv, &selection, connector.clone(), probe_for(&render_pki), &deploy_opts, events.clone()).await?;
        let failed = !d.failed().is_empty();
        let verify_failed = if failed { vec![] } else { verify_after(inv, pki_dir, connector.clone(), probe_for(&render_pki), opts.deploy.parallel).await };
        let ok = !failed && verify_failed.is_empty();
        report.steps.push(StepReport { step: k, what: STEPS[usize::from(k) - 1], resumed, renewed, deploy: Some(d), verify_failed });
        if !ok {
            return Ok(report);
        }
        state = Rotation { done: k, running: None, restart: BTreeSet::new(), ..state };
        report.done = k;
        if k == 3 {
            rotate::finish(pki_dir, id, &aside)?;
            report.aside = Some(aside.clone());
        } else {
            rotate::save(pki_dir, id, &state)?;
        }
    }
    Ok(report)
}

/// The dry run's account: what the next step changes where, and what the later ones do.
#[allow(clippy::too_many_arguments)]
async fn plan(
    inv: &Inventory,
    pki: &Pki,
    state: &Rotation,
    cas: &Cas,
    first: u8,
    last: u8,
    connector: Arc<dyn Connector>,
    probe_for: ProbeFor<'_>,
    opts: &RotateOptions,
) -> Result<Vec<String>, Day2Error> {
    let id = opts.ca;
    let mut out = Vec::new();
    if state.done == 0 && state.running.is_none() {
        out.push(format!("create a new {} CA (serial {}), kept in {} until it signs", ca_name(id), state.new_serial, pki.dir.join("rotation").join(ca_name(id)).display()));
    }
    if let Some(dir) = &opts.snapshot_dir {
        out.push(format!("snapshot etcd into {}", dir.display()));
    }
    let (render_pki, renewed) = target(inv, pki, id, cas, first)?;
    let after: Rendered = render::render(inv, &render_pki)?;
    let seen = survey(inv, connector.clone(), &after, opts.deploy.parallel).await;
    let deps = depends_on(inv, &render_pki, id)?;
    let affects = |h: &str, f: &render::File| deps.contains(&(h.to_string(), f.path.clone()));
    let selection = select(&after, &seen, &affects, &state.restart);
    let resumed = if state.running == Some(first) { " (resumed: every unit it restarts restarts again)" } else { "" };
    out.push(format!("step {first}: {}{resumed}", STEPS[usize::from(first) - 1]));
    if !renewed.is_empty() {
        out.push(format!("step {first}: re-issue {} certificates from the new CA: {}", renewed.len(), renewed.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", ")));
    }
    let deploy_opts = DeployOptions { dry_run: true, replaceable: rotate::replaceable(cas), restart: state.restart.clone(), ..opts.deploy.clone() };
    let d = push::push(inv, &selection, connector, probe_for(&render_pki), &deploy_opts, Events::none("certs-rotate-ca")).await?;
    out.extend(plan_lines(&d).into_iter().map(|l| format!("step {first}: {l}")));
    out.push(format!("step {first}: hardway verify"));
    for k in first + 1..=last {
        out.push(format!("step {k}: {}, the same way", STEPS[usize::from(k) - 1]));
    }
    Ok(out)
}

/// verify's FAILs, from the PKI directory as it is now.
async fn verify_after(inv: &Inventory, pki_dir: &Path, connector: Arc<dyn Connector>, probe: Arc<dyn crate::probe::Probe>, parallel: usize) -> Vec<String> {
    let creds = match verify::Credentials::load(&verify::VerifyOptions::new(pki_dir.to_path_buf())) {
        Ok(c) => c,
        Err(e) => return vec![e.to_string()],
    };
    let checks = verify::verify(inv, creds, connector, probe, None, parallel, Events::none("verify")).await;
    checks.into_iter().filter(|c| c.status == verify::Status::Fail).map(|c| format!("{} {}: {}", c.host, c.check, c.detail)).collect()
}
