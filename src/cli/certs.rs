//! `hardway certs check|renew|rotate-ca` and `hardway secrets ...`: the arguments and the
//! printing; the work is in `day2::certs` and `day2::secrets`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::day2::{AccessArgs, ClusterArgs, ConfirmArgs, Opened, open_at, print_steps};
use super::deploy::SnapshotArgs;
use super::{OutputFormat, load_inventory, observe, runtime};
use crate::day2::certs::{ChangeOptions, check, renew, rotate};
use crate::deploy::{DeployOptions, DeployReport};
use crate::pki::rotate::Subject;
use crate::probe::Probe;
use crate::{pki, render};

#[derive(Subcommand)]
pub enum CertsCommand {
    /// Every certificate on every node (where the running units say they are) and in the PKI:
    /// issuer, SANs, expiry, days left. Exit 1 when any expires within --warn-days.
    Check(CheckArgs),
    /// Re-issue leaf certificates (same keys unless --new-keys) and roll them out: etcd members
    /// one at a time, then API servers one at a time, then the rest.
    Renew(RenewArgs),
    /// Rotate a CA in three resumable steps, each a rolling restart followed by verify: (1)
    /// every trust bundle holds old + new, (2) every certificate re-issued from the new CA,
    /// (3) the old CA dropped from the bundles.
    RotateCa(RotateArgs),
}

#[derive(Args)]
pub struct RotateArgs {
    /// Which CA.
    #[arg(value_parser = ["cluster", "etcd", "front-proxy"])]
    pub ca: String,
    #[command(flatten)]
    pub rotation: RotationArgs,
}

/// What every rotation command takes.
#[derive(Args)]
pub struct RotationArgs {
    /// Run only this step; it must be the next one. Without: every step left.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=4))]
    pub step: Option<u8>,
    #[command(flatten)]
    pub change: ChangeArgs,
}

/// What every command that changes certificates or keys on a running cluster takes.
#[derive(Args)]
pub struct ChangeArgs {
    /// Go on although the cluster is not healthy (it says what it skips).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub cluster: FlagClusterArgs,
    #[command(flatten)]
    pub confirm: ConfirmArgs,
    #[command(flatten)]
    pub snapshot: SnapshotArgs,
    #[command(flatten)]
    pub roll: RollArgs,
}

impl ChangeArgs {
    fn options(&self) -> ChangeOptions {
        ChangeOptions {
            confirm: self.confirm.confirm(self.force),
            snapshot_dir: (!self.snapshot.no_snapshot).then(|| self.snapshot.snapshot_dir.clone()),
            snapshot_keep: self.snapshot.keep_snapshots,
            deploy: self.roll.deploy_options(),
        }
    }

    /// The cluster opened, and the probe of it a PKI gives (its client certificates).
    fn open(
        &self,
        command: &'static str,
    ) -> Result<(Opened, impl Fn(&pki::Pki) -> Arc<dyn Probe> + Sync + use<>)> {
        let opened = open_at(
            self.cluster.inventory.clone(),
            &self.cluster.access,
            command,
        )?;
        let inv = opened.inv.clone();
        Ok((opened, move |p: &pki::Pki| -> Arc<dyn Probe> {
            Arc::new(crate::session::probe_of(&inv, p))
        }))
    }
}

#[derive(Subcommand)]
pub enum SecretsCommand {
    /// Rotate the Secrets encryption key, kubernetes.io's procedure in four resumable steps:
    /// (1) the new key second in every API server's config, (2) first, (3) every Secret
    /// rewritten with it (kubectl on the first master), (4) the old key dropped — never before
    /// the rewrite succeeded.
    RotateEncryptionKey(RotationArgs),
    /// Rotate the service-account token signing key in three resumable steps: (1) sa.pub holds
    /// the old and the new public key, (2) the new key signs, (3) the old public key dropped
    /// (run it once tokens the old key signed have expired).
    RotateServiceAccountKey(RotationArgs),
}

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Flag (and exit 1 for) certificates that expire within this many days.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(i64).range(0..=36500))]
    pub warn_days: i64,
    /// Hosts read at once.
    #[arg(long, default_value_t = 32, value_parser = super::parse_parallel)]
    pub parallel: usize,
}

/// How long the rolling restarts may wait.
#[derive(Args, Clone)]
pub struct RollArgs {
    /// How long etcd may take to become healthy after each member's restart, in seconds.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub etcd_timeout: u64,
    /// How long an API server may take to answer /readyz after its restart, in seconds.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub api_timeout: u64,
}

impl RollArgs {
    pub fn deploy_options(&self) -> DeployOptions {
        DeployOptions {
            etcd_timeout: Duration::from_secs(self.etcd_timeout),
            api_timeout: Duration::from_secs(self.api_timeout),
            ..DeployOptions::default()
        }
    }
}

#[derive(Args)]
pub struct RenewArgs {
    /// The certificates to renew, by their names in the PKI (`etcd/server-m1`, `apiserver`, ...;
    /// `hardway pki check` lists them).
    #[arg(
        value_name = "NAME",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub names: Vec<String>,
    /// Every leaf certificate.
    #[arg(long)]
    pub all: bool,
    /// New private keys too (the old ones are kept aside in the PKI directory).
    #[arg(long)]
    pub new_keys: bool,
    #[command(flatten)]
    pub change: ChangeArgs,
}

/// The inventory as `-i` only (the positional arguments are names), and how to reach the
/// cluster.
#[derive(Args, Clone)]
pub struct FlagClusterArgs {
    /// The inventory file.
    #[arg(
        short = 'i',
        long = "inventory",
        value_name = "INVENTORY",
        default_value = "inventory.toml"
    )]
    pub inventory: PathBuf,
    #[command(flatten)]
    pub access: AccessArgs,
}

pub(super) fn certs(command: CertsCommand) -> Result<ExitCode> {
    match command {
        CertsCommand::Check(a) => check_cmd(a),
        CertsCommand::Renew(a) => renew_cmd(a),
        CertsCommand::RotateCa(a) => rotate_cmd(
            Subject::parse(&a.ca).expect("clap checked the name"),
            a.rotation,
        ),
    }
}

fn check_cmd(a: CheckArgs) -> Result<ExitCode> {
    let path = a.cluster.inv.path();
    let inv = load_inventory(&path)?;
    let c = &a.cluster.access;
    // The kubeconfigs hardway renders are looked for too, when the PKI can be rendered.
    let kubeconfigs = pki::load(&inv, &c.pki(&inv))
        .ok()
        .and_then(|p| render::render(&inv, &p).ok())
        .map(|r| check::rendered_kubeconfigs(&r))
        .unwrap_or_default();
    let (_, run_log) = observe("certs-check", OutputFormat::Text, &c.log, &inv)?;
    let connector = crate::session::connector(
        &inv,
        super::deploy::access(&inv, c.accept_new_host_keys, run_log)?,
    );
    let report = runtime()?.block_on(check::check(
        &inv,
        &c.pki(&inv),
        connector,
        kubeconfigs,
        a.warn_days,
        a.parallel,
    ))?;
    if c.output == OutputFormat::Json {
        out!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!("{}", check::format(&report));
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn renew_cmd(a: RenewArgs) -> Result<ExitCode> {
    let (
        Opened {
            inv,
            events,
            connector,
            ..
        },
        probe_for,
    ) = a.change.open("certs-renew")?;
    let opts = renew::RenewOptions {
        names: if a.all { vec![] } else { a.names.clone() },
        new_keys: a.new_keys,
        change: a.change.options(),
    };
    let report = runtime()?
        .block_on(renew::renew(
            &inv,
            &a.change.cluster.access.pki(&inv),
            connector,
            &probe_for,
            &opts,
            &events,
        ))
        .context("certs renew")?;
    if a.change.cluster.access.output == OutputFormat::Json {
        out!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for p in &report.forced_past {
            eprintln!("warning: --force: going on although {p}");
        }
        print_steps(report.dry_run, &report.steps);
        for r in &report.renewed {
            out!(
                "{}: serial {} -> {}, expires {} -> {}{}",
                r.name,
                r.old_serial,
                r.new_serial,
                r.old_not_after,
                r.new_not_after,
                if r.new_key { ", new key" } else { "" }
            );
        }
        if !report.on_no_node.is_empty() {
            out!(
                "on no node (renewed in the PKI directory only): {}",
                report.on_no_node.join(", ")
            );
        }
        if let Some(k) = &report.kubeconfig {
            out!("{} now holds the new admin certificate", k.display());
        }
        print_outcome(
            report.snapshot.as_ref(),
            report.aside.as_ref(),
            report.deploy.as_ref(),
        );
    }
    Ok(if report.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub(super) fn secrets(command: SecretsCommand) -> Result<ExitCode> {
    match command {
        SecretsCommand::RotateEncryptionKey(a) => rotate_cmd(Subject::Encryption, a),
        SecretsCommand::RotateServiceAccountKey(a) => rotate_cmd(Subject::ServiceAccount, a),
    }
}

fn rotate_cmd(subject: Subject, a: RotationArgs) -> Result<ExitCode> {
    let (
        Opened {
            inv,
            events,
            connector,
            ..
        },
        probe_for,
    ) = a.change.open("rotate")?;
    let opts = rotate::RotateOptions {
        subject,
        step: a.step,
        change: a.change.options(),
    };
    let report = runtime()?
        .block_on(rotate::rotate_subject(
            &inv,
            &a.change.cluster.access.pki(&inv),
            connector,
            &probe_for,
            &opts,
            &events,
        ))
        .with_context(|| format!("rotating {}", subject.name()))?;
    if a.change.cluster.access.output == OutputFormat::Json {
        out!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(if report.failed() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    for p in &report.forced_past {
        eprintln!("warning: --force: going on although {p}");
    }
    print_steps(true, &report.plan);
    for s in &report.steps {
        out!(
            "step {}{}: {}",
            s.step,
            if s.resumed { " (resumed)" } else { "" },
            s.what
        );
        for r in &s.renewed {
            out!("  {}: serial {} -> {}", r.name, r.old_serial, r.new_serial);
        }
        if let Some(n) = s.rewritten {
            out!("  {n} Secrets rewritten");
        }
        if let Some(p) = &s.pods {
            out!(
                "  restarted so that their pods trust the new CA: {}",
                p.workloads.join(", ")
            );
            if !p.unmanaged.is_empty() {
                eprintln!(
                    "  not restarted, no controller manages them: {} (they trust the new CA once they read ca.crt again: recreate them before step 2)",
                    p.unmanaged.join(", ")
                );
            }
        }
        if let Some(k) = &s.kubeconfig {
            out!("  {} now trusts what this step trusts", k.display());
        }
        if let Some(e) = &s.error {
            eprintln!("  step {} failed: {e}", s.step);
        }
        print_outcome(None, None, s.deploy.as_ref());
        for f in &s.verify_failed {
            eprintln!("  verify: FAIL {f}");
        }
        for f in &s.already_failing {
            eprintln!("  verify: FAIL {f} (before this step too: not this step's doing)");
        }
    }
    let name = &report.subject;
    let finished = report.done == report.last;
    print_outcome(
        report.snapshot.as_ref(),
        report.aside.as_ref().filter(|_| !finished),
        None,
    );
    if finished {
        out!(
            "the {name} rotation is finished: the old one is kept in {}",
            report
                .aside
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
    } else if !report.dry_run {
        out!(
            "{} of {} steps of the {name} rotation done; run the same command again to go on",
            report.done,
            report.last
        );
    }
    Ok(if report.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The snapshot, where old files are kept, and the rollout's table.
fn print_outcome(
    snapshot: Option<&PathBuf>,
    aside: Option<&PathBuf>,
    deploy: Option<&DeployReport>,
) {
    if let Some(s) = snapshot {
        out!("etcd snapshot before the change: {}", s.display());
    }
    if let Some(a) = aside {
        out!("replaced files kept in {}", a.display());
    }
    if let Some(d) = deploy {
        out!("{}", d.table());
        for h in d.failed() {
            eprintln!("{} failed: {}", h.node, h.error.as_deref().unwrap_or("?"));
        }
        if !d.failed().is_empty() {
            eprintln!(
                "the PKI directory has the new certificates: `hardway deploy` pushes them once the failed hosts are back"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definitions_are_consistent() {
        // clap checks these only when a command is parsed; a positional after `NAME...` panics.
        <super::super::Cli as clap::CommandFactory>::command().debug_assert();
    }

    /// Every command of the tree with its path (`hardway lab break`), `help` left out.
    fn every_command() -> Vec<(String, clap::Command)> {
        fn walk(cmd: &clap::Command, path: &str, out: &mut Vec<(String, clap::Command)>) {
            let here = format!("{path} {}", cmd.get_name()).trim().to_string();
            for sub in cmd.get_subcommands().filter(|c| c.get_name() != "help") {
                walk(sub, &here, out);
            }
            out.push((here, cmd.clone()));
        }
        let mut out = Vec::new();
        walk(
            &<super::super::Cli as clap::CommandFactory>::command(),
            "",
            &mut out,
        );
        out
    }

    /// clap prints `[default: …]` itself: a help text saying it too prints it twice.
    #[test]
    fn no_help_says_a_default_clap_prints() {
        let mut twice = Vec::new();
        for (here, cmd) in every_command() {
            for a in cmd.get_arguments() {
                let help = [a.get_help(), a.get_long_help()]
                    .into_iter()
                    .flatten()
                    .map(|h| h.to_string())
                    .collect::<String>();
                if !a.get_default_values().is_empty() && help.contains("(default") {
                    twice.push(format!("{here} {}: {help}", a.get_id()));
                }
            }
        }
        assert!(
            twice.is_empty(),
            "defaults said twice:\n{}",
            twice.join("\n")
        );
    }

    #[test]
    fn every_command_and_argument_says_what_it_is_for() {
        let mut missing = Vec::new();
        for (here, cmd) in every_command() {
            if cmd.get_about().is_none() && here != "hardway" {
                missing.push(format!("{here}: no one-line purpose"));
            }
            for a in cmd
                .get_arguments()
                .filter(|a| !["help", "version"].contains(&a.get_id().as_str()) && !a.is_hide_set())
            {
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!(
                        "{here} {}",
                        a.get_long()
                            .map(|l| format!("--{l}"))
                            .unwrap_or_else(|| format!("<{}>", a.get_id()))
                    ));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "without a help text:\n{}",
            missing.join("\n")
        );
    }
}
