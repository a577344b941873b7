//! `hardway deploy`: the options, the PKI step before it, and the report.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;

use super::{
    InventoryArg, LogArg, OutputFormat, load_inventory, observe, policy, runtime, sudo_password,
};
use crate::components::Phase;
use crate::session::{Access, PkiUse, Session};
use crate::{deploy, pki, probe, render};

/// `hardway deploy`.
#[derive(Args)]
pub struct DeployArgs {
    #[command(flatten)]
    pub inv: InventoryArg,
    #[command(flatten)]
    pub lab: super::LabNameArg,
    /// The cluster's PKI directory: brought up to date for this inventory (certificates
    /// re-issued where names changed; no CA or key is created), and it must be this cluster's
    /// (default: the cluster's own: `pki/` beside the inventory or `./pki` if made for this
    /// cluster, else `./pki/<cluster>`)
    #[arg(long)]
    pub pki: Option<PathBuf>,
    /// Comma-separated phases to run: files, etcd, lb, control-plane, workers, addons
    /// (preflight always runs). Default: all.
    #[arg(long, value_delimiter = ',', value_parser = phase_names())]
    pub phases: Vec<String>,
    /// Print the plan per host and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: a unified diff of every file that would change (secrets masked on
    /// both sides, private keys never shown).
    #[arg(long, requires = "dry_run")]
    pub diff: bool,
    /// Hosts worked on at once.
    #[arg(long, default_value_t = 32, value_parser = super::parse_parallel)]
    pub parallel: usize,
    /// Record host keys that are not in known_hosts yet (changed keys are always refused).
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// How long etcd may take to become healthy, in seconds (bootstrap, and each step of a
    /// rolling restart).
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub etcd_timeout: u64,
    /// How long an API server may take to answer /readyz after a restart, in seconds.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub api_timeout: u64,
    /// text; json (the whole report at the end); jsonl (one event per line as it happens).
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub log: LogArg,
    #[command(flatten)]
    pub snapshot: SnapshotArgs,
    #[command(flatten)]
    pub drain: DrainArgs,
    #[command(flatten)]
    pub release: super::releases::ReleaseArgs,
}

/// How a worker is drained before its upgrade.
#[derive(Args, Clone)]
pub struct DrainArgs {
    /// Upgrade workers in place: no cordon, no drain (their pods keep running through the
    /// restart of containerd and the kubelet).
    #[arg(long)]
    pub no_drain: bool,
    /// How long a drain may wait for PodDisruptionBudgets and for evicted pods to go, in
    /// seconds; a drain not done by then uncordons the node and stops the upgrade.
    #[arg(long, default_value_t = 180, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub drain_timeout: u64,
}

impl DrainArgs {
    pub(super) fn options(&self, force: bool) -> Option<crate::kube::DrainOptions> {
        (!self.no_drain).then(|| crate::kube::DrainOptions {
            timeout: std::time::Duration::from_secs(self.drain_timeout),
            force,
            ..Default::default()
        })
    }
}

/// The snapshot deploy takes before it changes a running etcd.
#[derive(Args, Clone)]
pub struct SnapshotArgs {
    /// Where the snapshot before etcd changes goes.
    #[arg(long, default_value = "snapshots")]
    pub snapshot_dir: PathBuf,
    /// Keep only this many snapshots there.
    #[arg(long)]
    pub keep_snapshots: Option<usize>,
    /// Take no snapshot before changing etcd.
    #[arg(long)]
    pub no_snapshot: bool,
}

/// The phases `--phases` takes (and completions offer).
pub(super) fn phase_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(Phase::ALL.iter().map(|p| p.name()))
}

/// `--phases a,b,c` as phases, or every phase when empty.
pub(super) fn parse_phases(phases: &[String]) -> Result<Vec<Phase>> {
    if phases.is_empty() {
        return Ok(Phase::ALL.to_vec());
    }
    phases
        .iter()
        .map(|p| {
            Phase::parse(p.trim()).with_context(|| {
                let names: Vec<&str> = Phase::ALL.iter().map(|p| p.name()).collect();
                format!(
                    "--phases: unknown phase {p:?} (phases: {})",
                    names.join(", ")
                )
            })
        })
        .collect()
}

/// How the nodes of `inv` are reached: the host-key policy, the run log, the sudo password.
pub(super) fn access(
    inv: &crate::inventory::Inventory,
    accept_new_host_keys: bool,
    run_log: Option<Arc<crate::runlog::RunLog>>,
) -> Result<Access> {
    Ok(Access {
        host_keys: policy(accept_new_host_keys),
        run_log,
        sudo_password: sudo_password(inv)?,
    })
}

/// A deploy ready to run: the cluster opened, its PKI brought up to date (in memory for a dry
/// run), what the nodes get rendered. `deploy` and `node add` both start here.
pub(super) struct Prepared {
    pub session: Session,
    pub opts: deploy::DeployOptions,
    pub events: crate::events::Events,
    inv_path: PathBuf,
    pki_dir: PathBuf,
    run_log: Option<Arc<crate::runlog::RunLog>>,
    pub output: OutputFormat,
    pki_changes: Vec<String>,
    admin_kubeconfig: Option<Arc<[u8]>>,
}

/// Opens the cluster of `args` for `command` (the run log's name) and renders its files;
/// `check` judges the inventory first, before anything is written.
pub(super) fn prepare(
    args: DeployArgs,
    command: &'static str,
    check: &dyn Fn(&crate::inventory::Inventory) -> Result<()>,
) -> Result<(Prepared, render::Rendered)> {
    let DeployArgs {
        inv,
        lab,
        pki: dir,
        phases,
        dry_run,
        diff,
        parallel,
        accept_new_host_keys,
        etcd_timeout,
        api_timeout,
        output,
        log,
        snapshot,
        drain,
        release,
    } = args;
    let (inv_path, dir) = lab.resolve(&inv, dir)?;
    let mut inv = load_inventory(&inv_path)?;
    check(&inv)?;
    // Release binaries are fetched and verified before anything reaches a node.
    super::releases::prepare(&mut inv, &release)?;
    let pki_dir = dir.unwrap_or_else(|| pki::default_dir(&inv));
    let opts = deploy::DeployOptions {
        phases: parse_phases(&phases)?,
        dry_run,
        diff,
        parallel,
        etcd_timeout: std::time::Duration::from_secs(etcd_timeout),
        api_timeout: std::time::Duration::from_secs(api_timeout),
        snapshot_dir: (!snapshot.no_snapshot).then(|| snapshot.snapshot_dir.clone()),
        snapshot_keep: snapshot.keep_snapshots,
        drain: drain.options(false),
        ..deploy::DeployOptions::default()
    };

    let (events, run_log) = observe(command, output, &log, &inv)?;
    let access = access(&inv, accept_new_host_keys, run_log.clone())?;
    // The PKI is brought up to date (kept where it still fits); a dry run decides the
    // same in memory and writes nothing.
    let session = Session::open(inv, &pki_dir, PkiUse::UpToDate { dry_run }, access)?;
    for w in &session.pki_report.warnings {
        eprintln!("warning: {w}");
    }
    let would = if dry_run { "would be " } else { "" };
    let pki_changes: Vec<String> = session
        .pki_report
        .entries
        .iter()
        .filter(|(_, a)| *a != pki::Action::Kept)
        .map(|(n, a)| match a {
            pki::Action::Reissued(why) => format!("{n}: {would}re-issued ({why})"),
            _ => format!("{n}: {would}created"),
        })
        .collect();
    let rendered = session.files(&opts.selected())?;
    let admin_kubeconfig = rendered
        .local
        .iter()
        .find(|f| f.path == render::ADMIN_KUBECONFIG_FILE)
        .map(|f| f.contents.clone());
    Ok((
        Prepared {
            session,
            opts,
            events,
            inv_path,
            pki_dir,
            run_log,
            output,
            pki_changes,
            admin_kubeconfig,
        },
        rendered,
    ))
}

pub(super) fn run(args: DeployArgs) -> Result<ExitCode> {
    let (p, rendered) = prepare(args, "deploy", &|_| Ok(()))?;
    let mut report = runtime()?.block_on(deploy::deploy(
        &p.session.inv,
        rendered,
        p.session.connector.clone(),
        p.session.probe.clone(),
        &p.opts,
        p.events.clone(),
    ))?;
    let code = p.print(&mut report)?;
    if p.output == OutputFormat::Json {
        out!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(code)
}

fn exit_code(report: &deploy::DeployReport) -> ExitCode {
    if report.failed().is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

impl Prepared {
    /// Prints `report` as text (json and jsonl are the caller's), the admin kubeconfig and the
    /// next steps after a deploy that brought the API up; the exit code.
    pub(super) fn print(&self, report: &mut deploy::DeployReport) -> Result<ExitCode> {
        report.pki_changes = self.pki_changes.clone();
        if let Some(l) = &self.run_log {
            eprintln!("log: {}", l.path().display());
        }
        if self.output != OutputFormat::Text {
            // jsonl: the events were the output.
            return Ok(exit_code(report));
        }
        for c in &report.pki_changes {
            out!("pki: {c}");
        }
        if report.dry_run {
            let _ = write!(std::io::stdout(), "{}", report.plan);
            for s in &report.steps {
                out!("{s}");
            }
            for (host, diffs) in &report.diffs {
                for d in diffs {
                    out!("=== {host}: {}", d.path);
                    let _ = write!(std::io::stdout(), "{}", d.diff);
                }
            }
            // A host that could not be reached or read is not in the plan: say why here, not
            // only in the run log.
            for h in report.failed() {
                eprintln!(
                    "{}: not planned: {}",
                    h.node,
                    h.error.as_deref().unwrap_or("?")
                );
            }
            out!("dry run: nothing was changed");
        } else {
            for m in &report.etcd {
                out!("etcd: {}", probe::describe(m));
            }
            if let Some(s) = &report.snapshot {
                out!("etcd snapshot before the changes: {}", s.display());
            }
            out!("{}", report.table());
            for h in report.failed() {
                eprintln!("{} failed: {}", h.node, h.error.as_deref().unwrap_or("?"));
            }
            if report.failed().is_empty() && self.opts.selected().contains(&Phase::ControlPlane) {
                next_steps(
                    &self.inv_path,
                    &self.pki_dir,
                    self.admin_kubeconfig.as_deref(),
                )?;
            }
        }
        Ok(exit_code(report))
    }
}

/// After a deploy that brought up the API: the admin kubeconfig beside the PKI it comes from
/// (the admin key is there already, 0600 in a 0700 directory), and what to type next.
fn next_steps(
    inv_path: &std::path::Path,
    pki_dir: &std::path::Path,
    kubeconfig: Option<&[u8]>,
) -> Result<()> {
    let Some(kubeconfig) = kubeconfig else {
        return Ok(());
    };
    let path = pki_dir.join(render::ADMIN_KUBECONFIG_FILE);
    pki::write_file(&path, kubeconfig, 0o600)
        .with_context(|| format!("writing {}", path.display()))?;
    let abs = std::path::absolute(&path).unwrap_or(path);
    out!(
        "\nkubeconfig: {} (cluster admin, through the load balancer). Next:",
        abs.display()
    );
    out!("  export KUBECONFIG={}", abs.display());
    out!("  kubectl get nodes");
    out!(
        "  hardway verify -i {} --pki {}",
        inv_path.display(),
        pki_dir.display()
    );
    Ok(())
}
