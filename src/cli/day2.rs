//! The day-2 commands: `etcd snapshot save|list`, `etcd restore`, `node remove`, `reset`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::deploy::{access, parse_phases};
use super::{InventoryArg, LogArg, OutputFormat, load_inventory, observe, runtime};
use crate::day2::{self, Confirm};
use crate::session::{PkiUse, Session};
use crate::{deploy, probe, snapshot};

/// What a destructive command may do.
#[derive(Args, Clone)]
pub struct ConfirmArgs {
    /// Say what would be done, and do nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do it (without, the command only says what it would do).
    #[arg(long)]
    pub yes: bool,
}

impl ConfirmArgs {
    pub(super) fn confirm(&self, force: bool) -> Confirm {
        Confirm {
            dry_run: self.dry_run,
            yes: self.yes,
            force,
        }
    }
}

/// The inventory, and how to reach its cluster.
#[derive(Args, Clone)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub inv: InventoryArg,
    #[command(flatten)]
    pub access: AccessArgs,
}

/// Where the cluster's PKI is, whether to record new host keys, the log and the output.
impl AccessArgs {
    /// `--pki`, or the cluster's own ([`crate::pki::default_dir`]).
    pub fn pki(&self, inv: &crate::inventory::Inventory) -> PathBuf {
        self.pki_dir
            .clone()
            .unwrap_or_else(|| crate::pki::default_dir(inv))
    }
}

#[derive(Args, Clone)]
pub struct AccessArgs {
    /// The cluster's PKI directory (made by `pki generate`; it must be this cluster's)
    /// (default: the cluster's own: `pki/` beside the inventory or `./pki` if made for this
    /// cluster, else `./pki/<cluster>`)
    #[arg(long = "pki")]
    pub pki_dir: Option<PathBuf>,
    /// Record host keys that are not in known_hosts yet (changed keys are always refused).
    #[arg(long)]
    pub accept_new_host_keys: bool,
    #[command(flatten)]
    pub log: LogArg,
    /// text; json (the whole result at the end); jsonl (one event per line as it happens).
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Subcommand)]
pub enum EtcdCommand {
    /// Snapshots of etcd's keyspace.
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// Put etcd's keyspace back to a snapshot on every member (also when quorum is lost).
    Restore {
        /// The snapshot (`NAME.db`, with `NAME.json` beside it).
        snapshot: PathBuf,
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(flatten)]
        confirm: ConfirmArgs,
        /// How long etcd may take to become healthy afterwards, in seconds.
        #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86400))]
        etcd_timeout: u64,
    },
}

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Stream a snapshot from a healthy member into --out, recorded with its revision, members
    /// and SHA-256.
    Save {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// The directory the snapshot goes to (0700; the snapshot 0600: it holds every Secret).
        #[arg(long, default_value = "snapshots")]
        out: PathBuf,
        /// Keep only the newest N snapshots of this cluster there.
        #[arg(long)]
        keep: Option<usize>,
    },
    /// List the snapshots of this cluster in --dir.
    List {
        #[command(flatten)]
        inv: InventoryArg,
        /// The directory the snapshots are in.
        #[arg(long, default_value = "snapshots")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum NodeCommand {
    /// Bring a node listed in the inventory into the running cluster: its certificates, a
    /// deploy of the whole cluster with it (a master joins etcd as a learner; HAProxy, the
    /// API servers and the routes follow), then wait until its Node is Ready.
    Add {
        /// The node, as the inventory names it.
        #[arg(value_name = "NODE")]
        node: String,
        #[command(flatten)]
        deploy: super::deploy::DeployArgs,
        /// How long its kubelet may take to register and turn Ready, in seconds.
        #[arg(long, default_value_t = 180, value_parser = clap::value_parser!(u64).range(1..=86400))]
        ready_timeout: u64,
    },
    /// Take a node out of the running cluster: etcd member remove, reset, and the rest of the
    /// cluster deployed without it.
    Remove(NodeRemoveArgs),
}

/// `hardway node remove`.
#[derive(Args)]
pub struct NodeRemoveArgs {
    /// The node, still in the inventory.
    name: String,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    confirm: ConfirmArgs,
    /// Remove it although the members left could not keep quorum, or it is the last one;
    /// delete the pods a drain could not evict (no controller, or a PodDisruptionBudget
    /// that still refuses at the deadline), or go on without a drain when the API is down.
    #[arg(long)]
    force: bool,
    /// How long the drain may wait for PodDisruptionBudgets and evicted pods, in seconds.
    #[arg(long, default_value_t = 180, value_parser = clap::value_parser!(u64).range(1..=86400))]
    drain_timeout: u64,
    /// The phases deployed to the rest of the cluster afterwards.
    #[arg(long, value_delimiter = ',', default_value = "files,etcd,lb,control-plane,workers", value_parser = super::deploy::phase_names())]
    phases: Vec<String>,
    #[command(flatten)]
    snapshot: super::deploy::SnapshotArgs,
}

/// `hardway reset`.
#[derive(Args)]
pub struct ResetArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// A node to reset (repeat for more).
    #[arg(long = "node", value_name = "NAME", required_unless_present = "all")]
    pub nodes: Vec<String>,
    /// Every node of the inventory.
    #[arg(long, conflicts_with = "nodes")]
    pub all: bool,
    /// Delete etcd's data dir instead of moving it aside.
    #[arg(long)]
    pub purge: bool,
    /// Reset etcd members of a running cluster without removing them from it first.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub confirm: ConfirmArgs,
}

pub(super) fn print_steps(dry_run: bool, steps: &[String]) {
    let head = if dry_run { "would" } else { "did" };
    for s in steps {
        out!("{head}: {s}");
    }
}

/// A cluster opened for a day-2 command.
pub(super) struct Opened {
    pub(super) inv: crate::inventory::Inventory,
    pub(super) events: crate::events::Events,
    pub(super) connector: Arc<crate::remote::ssh::SshConnector>,
    pub(super) probe: Arc<probe::NetProbe>,
}

/// The inventory, its PKI (as it is: day-2 commands create nothing), and access to the cluster.
pub(super) fn open(c: &ClusterArgs, command: &'static str) -> Result<Opened> {
    open_at(c.inv.path(), &c.access, command)
}

/// [`open`] of the inventory at `path`.
pub(super) fn open_at(path: PathBuf, c: &AccessArgs, command: &'static str) -> Result<Opened> {
    let inv = load_inventory(&path)?;
    let output = if c.output == OutputFormat::Jsonl {
        OutputFormat::Jsonl
    } else {
        OutputFormat::Text
    };
    let (events, run_log) = observe(command, output, &c.log, &inv)?;
    let access = access(&inv, c.accept_new_host_keys, run_log)?;
    let pki_dir = c.pki(&inv);
    let Session {
        inv,
        connector,
        probe,
        ..
    } = Session::open(inv, &pki_dir, PkiUse::AsItIs, access)?;
    Ok(Opened {
        inv,
        events,
        connector,
        probe,
    })
}

pub(super) fn etcd(command: EtcdCommand) -> Result<ExitCode> {
    match command {
        EtcdCommand::Snapshot {
            command: SnapshotCommand::Save { cluster, out, keep },
        } => {
            let Opened { inv, probe, .. } = open(&cluster, "etcd-snapshot")?;
            let info = runtime()?.block_on(snapshot::save(&inv, probe.as_ref(), &out, keep))?;
            if cluster.access.output == OutputFormat::Json {
                out!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                out!(
                    "{}: revision {}, {} bytes, sha256 {}, from {}",
                    out.join(&info.file).display(),
                    info.revision,
                    info.size,
                    info.sha256,
                    info.from_member
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        EtcdCommand::Snapshot {
            command: SnapshotCommand::List { inv, dir },
        } => {
            let inv = load_inventory(&inv.path())?;
            let all = snapshot::list(&dir, &inv.cluster.name)?;
            out!(
                "{:<44} {:>10} {:>12}  {:<24} MEMBERS",
                "SNAPSHOT",
                "REVISION",
                "BYTES",
                "TAKEN"
            );
            for s in &all {
                let members: Vec<&str> = s.members.iter().map(|(n, _)| n.as_str()).collect();
                out!(
                    "{:<44} {:>10} {:>12}  {:<24} {}",
                    s.file,
                    s.revision,
                    s.size,
                    s.taken_at,
                    members.join(",")
                );
            }
            out!(
                "{} snapshots of {} in {}",
                all.len(),
                inv.cluster.name,
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        EtcdCommand::Restore {
            snapshot,
            cluster,
            confirm,
            etcd_timeout,
        } => {
            let Opened {
                inv,
                events,
                connector,
                probe,
            } = open(&cluster, "etcd-restore")?;
            let opts = day2::restore::RestoreOptions {
                confirm: confirm.confirm(false),
                etcd_timeout: Duration::from_secs(etcd_timeout),
            };
            let report = runtime()?.block_on(day2::restore::restore(
                &inv,
                &snapshot,
                connector.as_ref(),
                probe.as_ref(),
                &opts,
                &events,
            ))?;
            if cluster.access.output == OutputFormat::Json {
                out!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_steps(report.dry_run, &report.steps);
                for (node, aside) in &report.moved_aside {
                    out!("{node}: the previous data dir is kept at {aside}");
                }
                for m in &report.members {
                    out!("etcd: {}", probe::describe(m));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(super) fn node(command: NodeCommand) -> Result<ExitCode> {
    match command {
        NodeCommand::Add {
            node,
            deploy,
            ready_timeout,
        } => node_add(&node, deploy, ready_timeout),
        NodeCommand::Remove(args) => node_remove(args),
    }
}

fn node_remove(args: NodeRemoveArgs) -> Result<ExitCode> {
    let NodeRemoveArgs {
        name,
        cluster,
        confirm,
        force,
        drain_timeout,
        phases,
        snapshot,
    } = args;
    let Opened {
        inv,
        events,
        connector,
        probe,
    } = open(&cluster, "node-remove")?;
    let deploy_opts = deploy::DeployOptions {
        snapshot_dir: (!snapshot.no_snapshot).then(|| snapshot.snapshot_dir.clone()),
        snapshot_keep: snapshot.keep_snapshots,
        ..deploy::DeployOptions::default()
    };
    let opts = day2::node::RemoveOptions {
        confirm: confirm.confirm(force),
        drain: crate::kube::DrainOptions {
            timeout: std::time::Duration::from_secs(drain_timeout),
            ..Default::default()
        },
        phases: parse_phases(&phases)?,
        deploy: deploy_opts,
    };
    let report = runtime()?.block_on(day2::node::remove(
        &inv,
        &name,
        &cluster.access.pki(&inv),
        connector,
        probe,
        &opts,
        &events,
    ))?;
    if cluster.access.output == OutputFormat::Json {
        out!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    print_steps(report.dry_run, &report.steps);
    if let Some(d) = &report.deploy {
        out!("{}", d.table());
        for h in d.failed() {
            eprintln!("{} failed: {}", h.node, h.error.as_deref().unwrap_or("?"));
        }
        if !d.failed().is_empty() {
            return Ok(ExitCode::FAILURE);
        }
    }
    if !report.dry_run {
        out!(
            "{name} is out of the cluster: remove it from {}",
            inv.source.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn node_add(name: &str, args: super::deploy::DeployArgs, ready_timeout: u64) -> Result<ExitCode> {
    // Checked before the PKI is brought up to date: a wrong name changes nothing.
    let listed = |inv: &crate::inventory::Inventory| -> Result<()> {
        day2::node::listed(inv, name)?;
        Ok(())
    };
    let (p, rendered) = super::deploy::prepare(args, "node-add", &listed)?;
    let opts = day2::node::AddOptions {
        deploy: p.opts.clone(),
        ready_timeout: Duration::from_secs(ready_timeout),
    };
    let mut report = runtime()?.block_on(day2::node::add(
        &p.session.inv,
        name,
        rendered,
        p.session.connector.clone(),
        p.session.probe.clone(),
        &opts,
        &p.events,
    ))?;
    let code = p.print(&mut report.deploy)?;
    if p.output == OutputFormat::Json {
        out!("{}", serde_json::to_string_pretty(&report)?);
    }
    if p.output != OutputFormat::Text {
        return Ok(code);
    }
    print_steps(report.dry_run, &report.steps);
    for said in report.member.iter().chain(&report.ready) {
        out!("{said}");
    }
    if !report.dry_run && report.deploy.failed().is_empty() {
        out!("{name} is in the cluster");
    }
    Ok(code)
}

pub(super) fn reset(args: ResetArgs) -> Result<ExitCode> {
    let Opened {
        inv,
        events,
        connector,
        probe,
    } = open(&args.cluster, "reset")?;
    let nodes: Vec<&crate::inventory::Node> = if args.all {
        inv.nodes.iter().collect()
    } else {
        args.nodes
            .iter()
            .map(|n| {
                inv.nodes.iter().find(|x| &x.name == n).with_context(|| {
                    format!("--node {n}: no such node in {}", inv.source.display())
                })
            })
            .collect::<Result<_>>()?
    };
    runtime()?.block_on(day2::reset::refuse_running_members(
        &inv,
        &nodes,
        probe.as_ref(),
        args.all,
        args.force,
    ))?;
    let opts = day2::reset::ResetOptions {
        confirm: args.confirm.confirm(args.force),
        purge: args.purge,
    };
    let report = runtime()?.block_on(day2::reset::reset(
        &inv,
        &nodes,
        connector.as_ref(),
        &opts,
        &events,
    ))?;
    if args.cluster.access.output == OutputFormat::Json {
        out!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    print_steps(report.dry_run, &report.steps);
    for n in &report.nodes {
        let data = n
            .data_dir
            .as_deref()
            .map(|d| format!(", etcd data kept at {d}"))
            .unwrap_or_default();
        out!(
            "{}: {} units stopped and disabled, {} files removed{data}",
            n.node,
            n.units_stopped.len(),
            n.files_removed
        );
    }
    Ok(ExitCode::SUCCESS)
}
