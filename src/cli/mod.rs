//! The command line: argument parsing and printing, and the one async runtime. Everything it
//! does is a call into the pipeline stages; nothing here decides anything about clusters.
//! `deploy`, `verify`, `explain` and the day-2 commands (`day2`) have modules of their own.

/// Prints to stdout; a closed pipe (`hardway ... | head`) ends the output quietly.
macro_rules! out {
    ($($arg:tt)*) => {{
        let _ = std::io::Write::write_fmt(&mut std::io::stdout(), format_args!("{}\n", format_args!($($arg)*)));
    }};
}

mod certs;
mod class;
mod completions;
mod day2;
mod deploy;
mod examples;
mod explain;
mod releases;
mod verify;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::events::{Events, JsonLines, ProgressLines, Sink};
use crate::remote::ssh::{HostKeyPolicy, SudoPassword};
use crate::runlog::RunLog;
use crate::{inventory, lab, pki, render};

#[derive(Parser)]
#[command(
    name = "hardway",
    version,
    about = "Bootstrap Kubernetes the hard way from one inventory file",
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `--parallel`: at least one host at a time (0 would do nothing and wait forever).
pub(super) fn parse_parallel(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("0 hosts at a time would never finish: give 1 or more".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a number of hosts")),
    }
}

/// The run log of long-running commands.
#[derive(Args, Clone)]
pub(super) struct LogArg {
    /// Write this run's log here instead of a new file under $XDG_STATE_HOME/hardway/logs/.
    #[arg(long, value_name = "PATH")]
    pub(super) log_file: Option<PathBuf>,
}

/// The inventory, as an argument or with -i (default ./inventory.toml).
#[derive(Args, Clone)]
pub(super) struct InventoryArg {
    /// The inventory file (default: ./inventory.toml).
    #[arg(value_name = "INVENTORY", conflicts_with = "flag")]
    positional: Option<PathBuf>,
    /// The inventory file (same as the positional argument).
    #[arg(short = 'i', long = "inventory", value_name = "INVENTORY")]
    flag: Option<PathBuf>,
}

impl InventoryArg {
    fn path(&self) -> PathBuf {
        self.flag
            .clone()
            .or_else(|| self.positional.clone())
            .unwrap_or_else(|| "inventory.toml".into())
    }
}

/// `deploy --name` and `verify --name`: a named lab by its name, as `lab up --name` takes it.
#[derive(Args, Clone)]
pub(super) struct LabNameArg {
    /// A named lab (`lab up --name`): its inventory and PKI, as `lab up` recorded them
    /// (instead of INVENTORY and --pki).
    #[arg(long = "name", value_name = "LAB", conflicts_with_all = ["positional", "flag"])]
    name: Option<String>,
    /// Parent of the named labs' state directories.
    #[arg(long = "state-dir", default_value = crate::lab::named::NAMED_STATE_DIR, hide = true)]
    state_dir: PathBuf,
}

impl LabNameArg {
    /// The inventory, and the PKI directory if one is known: the named lab's with `--name`.
    fn resolve(
        &self,
        inv: &InventoryArg,
        pki: Option<PathBuf>,
    ) -> Result<(PathBuf, Option<PathBuf>)> {
        let Some(name) = &self.name else {
            return Ok((inv.path(), pki));
        };
        let record = crate::lab::named::read_record(&self.state_dir, name)?.with_context(|| {
            format!(
                "no lab named {name:?} is up on this host (no {}): hardway lab up -i BASE --name {name}",
                crate::lab::named::record_path(&self.state_dir, name).display()
            )
        })?;
        Ok((record.inventory, pki.or(Some(record.pki))))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Certificates and keys.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
    /// Write every host's files (units, configs, kubeconfigs, certificates) under --out.
    Render {
        #[command(flatten)]
        inv: InventoryArg,
        /// The PKI directory made by `pki generate`
        /// (default: the cluster's own: `pki/` beside the inventory or `./pki` if made for this
        /// cluster, else `./pki/<cluster>`)
        #[arg(long)]
        pki: Option<PathBuf>,
        /// The directory the rendered tree is written to (one directory per node).
        #[arg(long, default_value = "build")]
        out: PathBuf,
    },
    /// Push everything to the hosts over SSH, bootstrap etcd, start the control plane and workers.
    Deploy(deploy::DeployArgs),
    /// An offline bundle: the executables and the addon images, with a manifest of SHA-256s,
    /// in one archive; `[binaries] bundle = "FILE"` deploys from it with no network.
    Bundle {
        #[command(flatten)]
        inv: InventoryArg,
        /// The archive to write (a tar).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        release: releases::ReleaseArgs,
    },
    /// Release binaries from upstream or a mirror (`[binaries] source`): fetch and verify them.
    Binaries {
        #[command(subcommand)]
        command: releases::BinariesCommand,
    },
    /// Write the admin kubeconfig (the API through the load balancer) for kubectl.
    Kubeconfig {
        #[command(flatten)]
        inv: InventoryArg,
        /// The PKI directory made by `pki generate`
        /// (default: the cluster's own: `pki/` beside the inventory or `./pki` if made for this
        /// cluster, else `./pki/<cluster>`)
        #[arg(long)]
        pki: Option<PathBuf>,
        /// Where to write it (0600); `-` prints it.
        #[arg(long, default_value = "-")]
        out: PathBuf,
    },
    /// Check, one by one, that the cluster is healthy and built right (also clusters built by hand).
    Verify(verify::VerifyArgs),
    /// Print the commands a person would type to do what each phase does, as a bash script.
    Explain(explain::ExplainArgs),
    /// etcd: snapshots, restore.
    Etcd {
        #[command(subcommand)]
        command: day2::EtcdCommand,
    },
    /// Secrets of a running cluster: rotate the encryption key or the service-account key.
    Secrets {
        #[command(subcommand)]
        command: certs::SecretsCommand,
    },
    /// Certificates of a running cluster: check, renew, rotate a CA.
    Certs {
        #[command(subcommand)]
        command: certs::CertsCommand,
    },
    /// Nodes of a running cluster: add or remove one.
    Node {
        #[command(subcommand)]
        command: day2::NodeCommand,
    },
    /// Take hardway's units, files and etcd data off nodes: as they were before hardway.
    Reset(day2::ResetArgs),
    /// Print the path of the newest run log.
    Logs,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `hardway man > hardway.1`; with --dir, write every
    /// page: hardway.1 and one per subcommand (hardway-deploy.1, hardway-lab-break.1, …).
    Man {
        /// Write hardway.1 and every subcommand's page into this directory.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// A local lab: one systemd-nspawn container or QEMU VM per inventory node, on a bridge (root only).
    Lab {
        #[command(subcommand)]
        command: LabCommand,
    },
    /// A classroom: one lab per student, checkpoints, grading.
    Class {
        #[command(subcommand)]
        command: class::ClassCommand,
    },
    /// Check an inventory and print what it describes.
    Validate {
        #[command(flatten)]
        inv: InventoryArg,
    },
}

#[derive(Subcommand)]
enum LabCommand {
    /// Boot every node (idempotent); builds the Debian root fs once, cached.
    Up {
        #[command(flatten)]
        inv: InventoryArg,
        /// nspawn (containers) or qemu (VMs); overrides the inventory's lab.driver.
        #[arg(long, value_parser = parse_driver)]
        driver: Option<inventory::LabDriver>,
        #[command(flatten)]
        named: class::LabUpArgs,
    },
    /// List the nodes: address, running, reachable over SSH, systemd state.
    Status {
        #[command(flatten)]
        inv: InventoryArg,
        #[command(flatten)]
        named: class::LabNameArgs,
    },
    /// Stop every node and remove its namespace, links, bridge and state.
    Down {
        #[command(flatten)]
        inv: InventoryArg,
        #[command(flatten)]
        named: class::LabNameArgs,
    },
    /// Write libvirt XML for the qemu lab: a domain per node and the network (virsh define).
    RenderLibvirt {
        #[command(flatten)]
        inv: InventoryArg,
        /// The directory to write network-<bridge>.xml and domain-<node>.xml into.
        #[arg(long)]
        out: PathBuf,
        /// The domain type: kvm, or tcg for libvirt's software emulation (type "qemu").
        #[arg(long, default_value = "kvm", value_parser = ["kvm", "tcg"])]
        accel: String,
        /// Also make the disks the XML names (the base image, each node's overlay and seed),
        /// as `lab up` does but without network or VMs (root).
        #[arg(long)]
        images: bool,
    },
    /// Break the lab on purpose (a troubleshooting lesson); --list shows the scenarios.
    Break(class::FaultArgs),
    /// Undo what `lab break` did.
    Fix(class::FaultArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum OutputFormat {
    Text,
    Json,
    Jsonl,
}

/// The run log, and the sinks events go to for `output`.
pub(super) fn observe(
    command: &'static str,
    output: OutputFormat,
    log: &LogArg,
    inv: &inventory::Inventory,
) -> Result<(Events, Option<Arc<RunLog>>)> {
    let argv: Vec<String> = std::env::args().collect();
    let run_log = RunLog::create(log.log_file.as_deref(), command, &argv)
        .with_context(|| "creating the run log")?;
    if let Ok(text) = std::fs::read_to_string(&inv.source) {
        run_log.inventory(&inv.source, &text);
    }
    let run_log = Arc::new(run_log);
    let mut sinks: Vec<Arc<dyn Sink>> = vec![run_log.clone()];
    match output {
        OutputFormat::Jsonl => sinks.push(Arc::new(JsonLines)),
        OutputFormat::Text if std::io::IsTerminal::is_terminal(&std::io::stderr()) => {
            sinks.push(Arc::new(ProgressLines::new(
                inv.nodes.iter().map(|n| n.name.as_str()),
            )))
        }
        _ => {}
    }
    Ok((Events::new(command, sinks), Some(run_log)))
}

#[derive(Subcommand)]
enum PkiCommand {
    /// Create the CAs and every certificate; keeps what exists and still matches.
    Generate {
        #[command(flatten)]
        inv: InventoryArg,
        /// The PKI directory to create or bring up to date (keys 0600, directories 0700)
        /// (default: the cluster's own: `pki/` beside the inventory or `./pki` if made for this
        /// cluster, else `./pki/<cluster>`)
        #[arg(long)]
        out: Option<PathBuf>,
        /// Re-issue every CA, key and certificate (the encryption key is always kept).
        #[arg(long)]
        force: bool,
    },
    /// List every certificate with its subject, SANs, issuer and expiry; flag mismatches.
    Check {
        #[command(flatten)]
        inv: InventoryArg,
        /// The PKI directory to check (made by `pki generate`)
        /// (default: the cluster's own: `pki/` beside the inventory or `./pki` if made for this
        /// cluster, else `./pki/<cluster>`)
        #[arg(long)]
        pki: Option<PathBuf>,
    },
}

/// Writes `cmd`'s page and, recursively, one per subcommand, named as the pages' SEE ALSO
/// sections name them (`hardway-lab-break.1`); how many.
fn man_pages(cmd: &clap::Command, dir: &std::path::Path) -> Result<usize> {
    let name = cmd.get_name().to_string();
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    // Without clap's `help` subcommand: `--help` is on every page, and a page per `help X`
    // would only repeat the others.
    clap_mangen::Man::new(cmd.clone().disable_help_subcommand(true))
        .render(&mut page)
        .context("rendering a manual page")?;
    std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    let mut written = 1;
    for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
        // A subcommand's page is named after its whole path, as the parent's page refers to it.
        // (clap takes a name as &'static str without its `string` feature: a few dozen short
        // names, leaked once by a command that then exits.)
        let full = sub.clone().name(&*Box::leak(
            format!("{name}-{}", sub.get_name()).into_boxed_str(),
        ));
        written += man_pages(&full, dir)?;
    }
    Ok(written)
}

/// An error and its causes on one line, as `{:#}` prints them, but without a cause whose text
/// the message already holds (library errors name their source in their own message, and
/// `{:#}` would print it again: `No such file or directory (os error 2): No such file …`).
fn chain_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain().map(|c| c.to_string()) {
        if out.is_empty() {
            out = cause;
        } else if !out.contains(&cause) {
            out.push_str(": ");
            out.push_str(&cause);
        }
    }
    out
}

pub fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    if let Some(code) = completions::answer() {
        return code;
    }
    let matches = examples::with_examples(Cli::command()).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", chain_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// The runtime every async stage runs on: remote operations go to its blocking pool.
pub(super) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub(super) fn load_inventory(path: &Path) -> Result<inventory::Inventory> {
    let inv = inventory::load(path)?;
    for w in &inv.warnings {
        eprintln!("warning: {}", w.display_in(path));
    }
    Ok(inv)
}

/// The sudo password when the inventory asks for one: from `HARDWAY_SUDO_PASSWORD`, or asked
/// once on the terminal without echo. Never an argument, never printed.
pub(super) fn sudo_password(inv: &inventory::Inventory) -> Result<Option<SudoPassword>> {
    if inv.ssh.sudo != inventory::Sudo::WithPassword {
        return Ok(None);
    }
    if let Some(p) = std::env::var_os("HARDWAY_SUDO_PASSWORD") {
        return Ok(Some(SudoPassword::new(p.to_string_lossy().into_owned())));
    }
    let prompt = format!("sudo password for {} on the nodes: ", inv.ssh.user);
    let password = read_password(&prompt).context(
        "ssh.sudo = \"password\": set HARDWAY_SUDO_PASSWORD, or run on a terminal to be asked for it",
    )?;
    Ok(Some(SudoPassword::new(password)))
}

/// Reads a line from the terminal with echo off.
fn read_password(prompt: &str) -> std::io::Result<String> {
    use std::io::BufRead;
    use std::os::fd::AsRawFd;
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")?;
    let fd = tty.as_raw_fd();
    // SAFETY: termios is plain data; tcgetattr fills it for a valid terminal fd.
    let mut term: libc::termios = unsafe { std::mem::zeroed() };
    if unsafe { libc::tcgetattr(fd, &mut term) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let saved = term;
    term.c_lflag &= !libc::ECHO;
    term.c_lflag |= libc::ECHONL;
    // SAFETY: the same fd and a termios derived from its own.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &term) };
    let mut out = &tty;
    let _ = write!(out, "{prompt}");
    let mut line = String::new();
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    // SAFETY: restores the settings read above.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

fn parse_driver(s: &str) -> Result<inventory::LabDriver, String> {
    let known: Vec<&str> = inventory::LabDriver::ALL
        .iter()
        .map(|d| d.as_str())
        .collect();
    inventory::LabDriver::parse(s)
        .ok_or_else(|| format!("unknown driver {s:?} (known drivers: {})", known.join(", ")))
}

pub(super) fn policy(accept_new: bool) -> HostKeyPolicy {
    if accept_new {
        HostKeyPolicy::AcceptNew
    } else {
        HostKeyPolicy::Strict
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Validate { inv } => {
            let inv = load_inventory(&inv.path())?;
            out!(
                "{}: cluster {:?}, Kubernetes {}, {} masters, {} workers, {} etcd members, API at {}",
                inv.source.display(),
                inv.cluster.name,
                inv.cluster.kubernetes_version,
                inv.masters().count(),
                inv.workers().count(),
                inv.etcd_members().len(),
                inv.api_server_url()
            );
            out!("binaries: {}", releases::describe_source(&inv));
            Ok(ExitCode::SUCCESS)
        }
        Command::Pki {
            command: PkiCommand::Generate { inv, out, force },
        } => {
            let inv = load_inventory(&inv.path())?;
            let out = out.unwrap_or_else(|| pki::default_dir(&inv));
            let (_, report) = pki::generate(
                &inv,
                &out,
                pki::GenerateOptions {
                    force,
                    ..Default::default()
                },
            )?;
            out!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Pki {
            command: PkiCommand::Check { inv, pki: dir },
        } => {
            let inv = load_inventory(&inv.path())?;
            let dir = dir.unwrap_or_else(|| pki::default_dir(&inv));
            let rows = pki::check(&inv, &dir)?;
            out!(
                "{:<32} {:<62} {:<30} {:<18} {:>9}  STATUS",
                "CERTIFICATE",
                "SUBJECT",
                "ISSUER",
                "EXPIRES",
                "DAYS LEFT"
            );
            let mut bad = 0;
            for r in &rows {
                let status = if r.problems.is_empty() {
                    "ok".to_string()
                } else {
                    r.problems.join("; ")
                };
                bad += usize::from(!r.problems.is_empty());
                out!(
                    "{:<32} {:<62} {:<30} {:<18} {:>9}  {status}",
                    r.name,
                    r.subject,
                    r.issuer,
                    r.not_after,
                    r.days_left
                );
                if !r.sans.is_empty() {
                    out!("{:<32} SANs: {}", "", r.sans.join(", "));
                }
            }
            out!("{} certificates, {bad} with problems", rows.len());
            Ok(if bad == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Deploy(args) => deploy::run(args),
        Command::Binaries { command } => releases::run(command),
        Command::Bundle { inv, out, release } => releases::bundle(&inv.path(), &out, &release),
        Command::Verify(args) => verify::run(args),
        Command::Explain(args) => explain::run(args),
        Command::Etcd { command } => day2::etcd(command),
        Command::Certs { command } => certs::certs(command),
        Command::Secrets { command } => certs::secrets(command),
        Command::Node { command } => day2::node(command),
        Command::Reset(args) => day2::reset(args),
        Command::Logs => {
            let dir = RunLog::default_dir()?;
            match RunLog::latest(&dir) {
                Some(p) => {
                    out!("{}", p.display());
                    Ok(ExitCode::SUCCESS)
                }
                None => anyhow::bail!("no run log in {} yet", dir.display()),
            }
        }
        Command::Completions { shell } => {
            out!(
                "{}",
                completions::script(
                    shell,
                    examples::with_examples(<Cli as clap::CommandFactory>::command())
                )
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir: None } => {
            let cmd = examples::with_examples(<Cli as clap::CommandFactory>::command())
                .disable_help_subcommand(true);
            clap_mangen::Man::new(cmd)
                .render(&mut std::io::stdout())
                .context("writing the manual page")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir: Some(dir) } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let written = man_pages(
                &examples::with_examples(<Cli as clap::CommandFactory>::command()),
                &dir,
            )?;
            out!("{written} manual pages in {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Class { command } => class::class(command),
        Command::Lab {
            command:
                LabCommand::RenderLibvirt {
                    inv,
                    out,
                    accel,
                    images,
                },
        } => {
            let inv = load_inventory(&inv.path())?;
            let opts = lab::LabOptions::default();
            let accel = if accel == "tcg" {
                lab::qemu::vm::Accel::Tcg
            } else {
                lab::qemu::vm::Accel::Kvm
            };
            if images {
                lab::qemu::prepare_images(&inv, &opts)?;
            }
            for path in lab::libvirt::write(&inv, &opts, accel, &out)? {
                out!("{}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Lab { command } => {
            if let Some(code) = class::lab(&command)? {
                return Ok(code);
            }
            let mut opts = lab::LabOptions::default();
            let (inv, up) = match &command {
                LabCommand::Up { inv, driver, .. } => {
                    opts.driver = *driver;
                    (load_inventory(&inv.path())?, true)
                }
                LabCommand::Status { inv, .. } | LabCommand::Down { inv, .. } => {
                    (load_inventory(&inv.path())?, false)
                }
                LabCommand::RenderLibvirt { .. } => unreachable!("handled above"),
                LabCommand::Break(_) | LabCommand::Fix(_) => unreachable!("handled by class::lab"),
            };
            let lab = match command {
                LabCommand::Down { .. } => {
                    lab::down(&inv, &opts)?;
                    out!("lab {} is down", inv.cluster.name);
                    return Ok(ExitCode::SUCCESS);
                }
                _ if up => lab::up(&inv, &opts)?,
                _ => lab::status(&inv, &opts)?,
            };
            Ok(class::print_lab(&lab))
        }
        Command::Kubeconfig { inv, pki: dir, out } => {
            let inv = load_inventory(&inv.path())?;
            let dir = dir.unwrap_or_else(|| pki::default_dir(&inv));
            let pki = pki::load(&inv, &dir)?;
            let text = render::admin_kubeconfig(&inv, &pki)?;
            if out.as_os_str() == "-" {
                let _ = write!(std::io::stdout(), "{text}");
            } else {
                pki::write_file(&out, text.as_bytes(), 0o600)
                    .with_context(|| format!("writing {}", out.display()))?;
                out!("{}", out.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Render { inv, pki: dir, out } => {
            let inv = load_inventory(&inv.path())?;
            let dir = dir.unwrap_or_else(|| pki::default_dir(&inv));
            let pki = pki::load(&inv, &dir)?;
            let rendered = render::render(&inv, &pki)?;
            let n = rendered
                .write_to(&out)
                .with_context(|| format!("writing {}", out.display()))?;
            out!(
                "rendered {n} files for {} hosts under {}",
                rendered.hosts.len(),
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
