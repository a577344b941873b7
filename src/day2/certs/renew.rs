//! `hardway certs renew [--all | NAME...]`: leaf certificates re-issued (same keys unless
//! `--new-keys`) and brought to the running cluster without downtime. In order: every node is
//! read and the cluster's health checked (refused when unhealthy, unless `--force`); etcd is
//! snapshotted; the new certificates are written into the PKI directory, the replaced files
//! kept in `aside/renew-<stamp>/`; then the files that changed (certificates, and kubeconfigs
//! embedding a renewed client certificate) go to the nodes that have them, and what reads them
//! restarts in deploy's safe order (see `super::push`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use time::OffsetDateTime;

use super::super::{Day2Error, stamp};
use super::ChangeOptions;
use super::push::{self, gate_step, health, plan_lines};
use crate::deploy::{DeployOptions, DeployReport};
use crate::events::{Events, Status};
use crate::inventory::Inventory;
use crate::pki::{self, Pki, Renewal};
use crate::probe::Probe;
use crate::remote::Connector;
use crate::render;

pub struct RenewOptions {
    /// The certificates, by PKI name (`etcd/server-m1`); empty: every leaf.
    pub names: Vec<String>,
    pub new_keys: bool,
    pub change: ChangeOptions,
}

#[derive(Debug, Clone, Serialize)]
pub struct RenewReport {
    pub dry_run: bool,
    pub renewed: Vec<Renewal>,
    /// What was (or, in a dry run, would be) done, in order.
    pub steps: Vec<String>,
    /// Health problems `--force` went past.
    pub forced_past: Vec<String>,
    pub snapshot: Option<PathBuf>,
    /// Where the replaced certificates (and keys) are kept.
    pub aside: Option<PathBuf>,
    /// Renewed certificates that no node has (they are in the PKI directory only).
    pub on_no_node: Vec<String>,
    /// The admin kubeconfig beside the PKI, rewritten with the new admin certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    pub deploy: Option<DeployReport>,
}

impl RenewReport {
    pub fn failed(&self) -> bool {
        self.deploy.as_ref().is_some_and(|d| !d.failed().is_empty())
    }
}

/// Makes the probe a step runs with, from the PKI as it is at that step (its client
/// certificates may be the renewed ones).
pub type ProbeFor<'a> = &'a (dyn Fn(&Pki) -> Arc<dyn Probe> + Sync);

pub async fn renew(
    inv: &Inventory,
    pki_dir: &Path,
    connector: Arc<dyn Connector>,
    probe_for: ProbeFor<'_>,
    opts: &RenewOptions,
    events: &Events,
) -> Result<RenewReport, Day2Error> {
    let pki = pki::load(inv, pki_dir)?;
    let rotating = pki::rotate::rotations_under_way(pki_dir)?;
    if !rotating.is_empty() {
        return Err(Day2Error::Refused {
            reason: format!(
                "a rotation of the {0} CA is under way: finish it first (hardway certs rotate-ca {0}), it re-issues what that CA signs",
                rotating.join(", ")
            ),
        });
    }
    let names = if opts.names.is_empty() {
        pki::leaf_names(inv)
    } else {
        opts.names.clone()
    };
    let (new_pki, renewed) =
        pki::renew_leaves(inv, &pki, &names, opts.new_keys, OffsetDateTime::now_utc())?;
    let (before, after) = (render::render(inv, &pki)?, render::render(inv, &new_pki)?);
    let probe = probe_for(&pki);

    let really = opts.change.confirm.yes && !opts.change.confirm.dry_run;
    // Every file whose bytes the renewal changes, where the node has it.
    let affected = after
        .hosts
        .iter()
        .flat_map(|(host, fs)| {
            let old = before.hosts.get(host);
            fs.iter()
                .filter(move |f| {
                    old.is_none_or(|os| {
                        os.iter()
                            .any(|o| o.path == f.path && o.contents != f.contents)
                    })
                })
                .map(move |f| (host.clone(), f.path.clone()))
        })
        .collect();

    let step = events.start(
        None,
        Some("renew"),
        "read every node and check the cluster's health",
    );
    let read = push::open(
        inv,
        &after,
        affected,
        connector.clone(),
        probe.clone(),
        &DeployOptions {
            dry_run: !really,
            ..opts.change.deploy.clone()
        },
        events.clone(),
    )
    .await;
    let (read, step) = step.or_fail(read)?;
    let plan = read.plan();
    let mut problems = health(inv, probe.as_ref(), &read).await;
    problems.extend(plan.unit_files().iter().map(|d| format!("{d} differs from what hardway renders: the renewal would replace it (hardway deploy --dry-run --diff shows how)")));
    let forced_past = gate_step(
        step,
        problems,
        opts.change.confirm.force,
        "renew certificates",
    )?;

    let at = stamp();
    let aside = pki::aside_dir(pki_dir, "renew", &at);
    let keys = if opts.new_keys {
        "new keys"
    } else {
        "the same keys"
    };
    let mut steps = vec![format!(
        "re-issue {} certificates with {keys}: {}",
        renewed.len(),
        names.join(", ")
    )];
    if let Some(dir) = &opts.change.snapshot_dir {
        steps.push(format!("snapshot etcd into {}", dir.display()));
    }
    steps.push(format!(
        "write them into {}, the replaced files kept in {}",
        pki_dir.display(),
        aside.display()
    ));
    let on_no_node: Vec<String> = renewed
        .iter()
        .filter(|r| !pushed(&new_pki, &r.name, read.rendered()))
        .map(|r| r.name.clone())
        .collect();
    steps.extend(plan_lines(&plan, &read.steps()));
    if plan.is_noop() {
        steps.push("no node has any of these certificates: nothing to push".into());
    }
    let mut report = RenewReport {
        dry_run: opts.change.confirm.dry_run,
        renewed,
        steps,
        forced_past,
        snapshot: None,
        aside: None,
        on_no_node,
        kubeconfig: None,
        deploy: None,
    };
    if opts.change.confirm.dry_run {
        return Ok(report);
    }
    if !opts.change.confirm.yes {
        return Err(Day2Error::NeedsYes {
            what: format!(
                "re-issue {} certificates and restart what uses them",
                report.renewed.len()
            ),
            steps: report.steps,
        });
    }

    if let Some(dir) = &opts.change.snapshot_dir
        && !inv.etcd_members().is_empty()
    {
        let step = events.start(None, Some("renew"), "snapshot etcd");
        let info = step.finish(
            crate::snapshot::save(inv, probe.as_ref(), dir, opts.change.snapshot_keep).await,
            |info| (Status::Ok, Some(info.file.clone())),
        )?;
        report.snapshot = Some(dir.join(info.file));
    }
    pki::write_renewed(&new_pki, &report.renewed, &aside)?;
    report.aside = Some(aside);
    report.kubeconfig = super::refresh_admin_kubeconfig(inv, &new_pki, pki_dir)?;
    if !plan.is_noop() {
        report.deploy = Some(read.with_probe(probe_for(&new_pki)).run().await?);
    }
    Ok(report)
}

/// Does a file pushed to some node carry the certificate `name` of `pki` (as PEM, or base64 in
/// a kubeconfig)?
fn pushed(pki: &Pki, name: &str, picked: &render::Rendered) -> bool {
    use base64::Engine;
    let pem = pki.cert(name).cert_pem.as_bytes();
    let b64 = base64::engine::general_purpose::STANDARD.encode(pem);
    let has = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    picked
        .hosts
        .values()
        .flatten()
        .any(|f| has(&f.contents, pem) || has(&f.contents, b64.as_bytes()))
}
