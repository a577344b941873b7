//! `hardway class ...`, and what `hardway lab` does beyond one default lab: `--name`, `--to`,
//! machine limits, `lab break` and `lab fix`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::{InventoryArg, LabCommand, OutputFormat, load_inventory, runtime};
use crate::class::faults::{self, Action};
use crate::class::labs::{self, Base, NamedLab, NamedOptions};
use crate::class::{Class, ClassError, grade, scenarios};
use crate::components::Phase;
use crate::inventory::{self, Inventory};
use crate::lab::limits::{self, MachineLimits};
use crate::lab::named::{self, NAMED_STATE_DIR, SUBNET_POOL};
use crate::lab::{self, LabOptions};

/// A lab name: a DNS label (as a student's), before any path is made of it.
fn parse_lab_name(s: &str) -> std::result::Result<String, String> {
    match named::name_problem(s) {
        None => Ok(s.to_string()),
        Some(why) => Err(format!("{s:?} is not a lab name: it {why}")),
    }
}

/// Where named labs live (tests give their own).
#[derive(Args, Clone)]
pub struct StateArgs {
    /// Parent of the named labs' state directories.
    #[arg(long, default_value = NAMED_STATE_DIR, hide = true)]
    pub state_dir: PathBuf,
    /// Where named labs' /24 subnets are taken from.
    #[arg(long, default_value = SUBNET_POOL, hide = true)]
    pub subnet_pool: ipnet::Ipv4Net,
}

/// Machine limits, as systemd's properties.
#[derive(Args, Clone)]
pub struct LimitArgs {
    /// MemoryMax= of every machine (e.g. 512M, 1G).
    #[arg(long, value_parser = limits::parse_memory, value_name = "SIZE")]
    pub memory_max: Option<u64>,
    /// CPUQuota= of every machine, in percent of one CPU (e.g. 50%).
    #[arg(long, value_parser = limits::parse_cpu_quota, value_name = "PERCENT")]
    pub cpu_quota: Option<u32>,
}

impl LimitArgs {
    fn limits(&self) -> MachineLimits {
        MachineLimits {
            memory_max: self.memory_max,
            cpu_quota: self.cpu_quota,
        }
    }
}

/// What `lab up` takes beyond the inventory.
#[derive(Args, Clone)]
pub struct LabUpArgs {
    /// A lab of its own, beside the others: cluster NAME, machines NAME-<node>, its own
    /// subnet, bridge and key; its inventory is written to --dir.
    #[arg(long, value_parser = parse_lab_name)]
    pub name: Option<String>,
    /// Where a named lab's inventory and PKI go (default labs/NAME).
    #[arg(long, requires = "name")]
    pub dir: Option<PathBuf>,
    /// Deploy every phase up to this one (e.g. etcd), so the lesson starts there.
    #[arg(long, value_parser = phase_values(), value_name = "PHASE")]
    pub to: Option<Phase>,
    /// The PKI of the default lab, for --to (a named lab's is <dir>/pki)
    /// (default: the cluster's own: `pki/` beside the inventory or `./pki` if made for this
    /// cluster, else `./pki/<cluster>`)
    #[arg(long)]
    pub pki: Option<PathBuf>,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub state: StateArgs,
    #[command(flatten)]
    pub log: super::LogArg,
}

/// `--name` of `lab status` and `lab down`.
#[derive(Args, Clone)]
pub struct LabNameArgs {
    /// The named lab (see `lab up --name`).
    #[arg(long, value_parser = parse_lab_name)]
    pub name: Option<String>,
    #[command(flatten)]
    pub state: StateArgs,
}

/// `lab break` and `lab fix`.
#[derive(Args, Clone)]
pub struct FaultArgs {
    /// The scenario (`lab break --list` lists them).
    #[arg(required_unless_present = "list", value_parser = scenario_names())]
    pub scenario: Option<String>,
    /// List the scenarios: what each breaks and which verify check then fails.
    #[arg(long)]
    pub list: bool,
    /// The node to break, or to fix (default: the first node of the kind the scenario breaks).
    #[arg(long)]
    pub node: Option<String>,
    #[command(flatten)]
    pub lab: LabNameArgs,
    #[command(flatten)]
    pub inv: InventoryArg,
    /// The lab's PKI (a named lab's own is used with --name)
    /// (default: the cluster's own: `pki/` beside the inventory or `./pki` if made for this
    /// cluster, else `./pki/<cluster>`)
    #[arg(long)]
    pub pki: Option<PathBuf>,
    #[command(flatten)]
    pub confirm: super::day2::ConfirmArgs,
    /// text; json (what was done and what verify must now say); jsonl (the same on one line).
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub log: super::LogArg,
}

#[derive(Subcommand)]
pub enum ClassCommand {
    /// One lab per student (idempotent; adds students not up yet).
    Up {
        /// One student name per line (# comments).
        #[arg(long)]
        students: PathBuf,
        #[command(flatten)]
        inv: InventoryArg,
        #[command(flatten)]
        class: ClassDir,
        /// Deploy every lab up to this phase (e.g. etcd).
        #[arg(long, value_parser = phase_values(), value_name = "PHASE")]
        to: Option<Phase>,
        /// With --to: labs deployed at once (the rest wait their turn).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
        parallel_labs: u16,
        /// With --to: how long an API server may take to answer /readyz after a (re)start, in
        /// seconds (many labs deploying on one host start slowly).
        #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86400))]
        api_timeout: u64,
        #[command(flatten)]
        limits: LimitArgs,
        /// nspawn (containers) or qemu (VMs: a boundary between students, SECURITY.md);
        /// overrides the inventory's lab.driver, for every lab of the class.
        #[arg(long, value_parser = super::parse_driver)]
        driver: Option<inventory::LabDriver>,
    },
    /// Per student: machines up, reachable, the last grade.
    Status {
        #[command(flatten)]
        class: ClassDir,
        /// text; json (a list of rows, one per student); jsonl (one row per line).
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Take students' labs down (all without names); each machine's files are kept.
    Down {
        /// The students whose labs go down (default: every student of the class).
        students: Vec<String>,
        #[command(flatten)]
        class: ClassDir,
        #[command(flatten)]
        confirm: super::day2::ConfirmArgs,
    },
    /// A student's lab back to fresh machines (and the class's --to checkpoint).
    Reset {
        /// The student whose lab is made anew.
        student: String,
        #[command(flatten)]
        class: ClassDir,
        #[command(flatten)]
        confirm: super::day2::ConfirmArgs,
    },
    /// hardway verify against every student's lab; one line per student.
    Grade {
        /// The students to grade (default: every student of the class).
        students: Vec<String>,
        #[command(flatten)]
        class: ClassDir,
        /// text; json (a list of rows, one per student); jsonl (one row per line).
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
}

/// Where a class is when `--dir` does not say (the completions read it too).
pub(super) const CLASS_DIR: &str = "class";

/// The class directory.
#[derive(Args, Clone)]
pub struct ClassDir {
    /// The class directory: class.json, and each student's lab inventory and PKI.
    #[arg(long = "dir", default_value = CLASS_DIR)]
    pub dir: PathBuf,
    #[command(flatten)]
    pub state: StateArgs,
}

/// The phases a lab may be deployed up to, as `--to` takes them (and completions offer them).
fn phase_values() -> impl clap::builder::TypedValueParser<Value = Phase> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Phase::ALL[1..].iter().map(|p| p.name()))
        .map(|s| Phase::parse(&s).expect("a possible value"))
}

/// The scenarios `lab break` and `lab fix` take (and completions offer).
fn scenario_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(scenarios::SCENARIOS.iter().map(|s| s.name))
}

fn named_options(state: &StateArgs, limits: MachineLimits) -> NamedOptions {
    NamedOptions::new(state.state_dir.clone(), state.subnet_pool, limits)
}

/// A class's labs: its limits and driver, as `class up` recorded them.
fn class_options(state: &StateArgs, class: &Class) -> NamedOptions {
    let mut opts = named_options(state, class.file.limits);
    opts.lab.driver = class.file.driver;
    opts
}

pub(super) fn print_lab(lab: &lab::Lab) -> ExitCode {
    out!(
        "{:<16} {:<16} {:<8} {:<10} SYSTEMD",
        "NODE",
        "ADDRESS",
        "RUNNING",
        "SSH"
    );
    for n in &lab.nodes {
        let yes = |b: bool| if b { "yes" } else { "no" };
        out!(
            "{:<16} {:<16} {:<8} {:<10} {}",
            n.name,
            n.address,
            yes(n.running),
            yes(n.reachable),
            n.system_state.as_deref().unwrap_or("-")
        );
    }
    out!(
        "ssh key: {}\nknown_hosts: {}",
        lab.ssh_key.display(),
        lab.known_hosts.display()
    );
    if lab.nodes.iter().all(|n| n.running && n.reachable) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `hardway lab` beyond the default lab's up/status/down; `None` leaves it to the caller.
pub(super) fn lab(command: &LabCommand) -> Result<Option<ExitCode>> {
    match command {
        LabCommand::Up { inv, named, driver }
            if named.name.is_some() || named.to.is_some() || !named.limits.limits().is_none() =>
        {
            lab_up(&inv.path(), named, *driver).map(Some)
        }
        LabCommand::Status { named, .. } | LabCommand::Down { named, .. }
            if named.name.is_some() =>
        {
            let name = named.name.as_deref().expect("matched");
            let opts = LabOptions {
                state_dir: named.state.state_dir.clone(),
                ..LabOptions::default()
            };
            let (_, inv) = match labs::find(&opts, name) {
                // Down is idempotent, as the default lab's is: a lab that is not there is down.
                Err(ClassError::NoLab { .. }) if matches!(command, LabCommand::Down { .. }) => {
                    out!("lab {name} is down (there was no such lab)");
                    return Ok(Some(ExitCode::SUCCESS));
                }
                found => found?,
            };
            if matches!(command, LabCommand::Down { .. }) {
                lab::down(&inv, &opts)?;
                out!("lab {name} is down");
                return Ok(Some(ExitCode::SUCCESS));
            }
            Ok(Some(print_lab(&lab::status(&inv, &opts)?)))
        }
        LabCommand::Break(args) => fault(args, Action::Break).map(Some),
        LabCommand::Fix(args) => fault(args, Action::Fix).map(Some),
        _ => Ok(None),
    }
}

fn lab_up(
    inv_path: &Path,
    a: &LabUpArgs,
    driver: Option<inventory::LabDriver>,
) -> Result<ExitCode> {
    let (inv, pki, opts, booted) = match &a.name {
        Some(name) => {
            let base = Base::load(inv_path)?;
            let nl = NamedLab {
                name: name.clone(),
                dir: a
                    .dir
                    .clone()
                    .unwrap_or_else(|| Path::new("labs").join(name)),
            };
            let mut opts = named_options(&a.state, a.limits.limits());
            opts.lab.driver = driver;
            let (inv, booted) = labs::up(&base, &nl, &opts)?;
            out!("lab {name}: inventory {}", nl.inventory().display());
            (inv, nl.pki(), opts.lab, booted)
        }
        None => {
            let inv = load_inventory(inv_path)?;
            let opts = LabOptions {
                limits: a.limits.limits(),
                driver,
                ..LabOptions::default()
            };
            let booted = lab::up(&inv, &opts)?;
            let pki = a
                .pki
                .clone()
                .unwrap_or_else(|| crate::pki::default_dir(&inv));
            (inv, pki, opts, booted)
        }
    };
    if !opts.limits.is_none() {
        out!("machine limits: {}", opts.limits.properties());
    }
    let code = print_lab(&booted);
    if let Some(to) = a.to {
        let (events, run_log) = super::observe("lab-up", OutputFormat::Text, &a.log, &inv)?;
        if let Some(l) = &run_log {
            eprintln!("log: {}", l.path().display());
        }
        let report = runtime()?.block_on(labs::checkpoint_logged(
            &inv,
            &pki,
            to,
            crate::deploy::DeployOptions::default().api_timeout,
            events,
            run_log,
        ))?;
        out!(
            "deployed up to {to} with the PKI in {}:\n{}",
            pki.display(),
            report.table()
        );
    }
    Ok(code)
}

fn fault(a: &FaultArgs, action: Action) -> Result<ExitCode> {
    if a.list {
        out!(
            "{:<28} {:<62} {:<14} VERIFY FAILS (hint names)",
            "SCENARIO",
            "BREAKS",
            "NEEDS"
        );
        for s in scenarios::SCENARIOS {
            out!(
                "{:<28} {:<62} {:<14} {} ({:?})",
                s.name,
                s.breaks,
                format!("--to {}", s.needs),
                s.check,
                s.hint_names
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let scenario = faults::scenario(a.scenario.as_deref().expect("required unless --list"))?;
    let (inv, pki): (Inventory, PathBuf) = match &a.lab.name {
        Some(name) => {
            let (record, inv) = labs::find(
                &LabOptions {
                    state_dir: a.lab.state.state_dir.clone(),
                    ..LabOptions::default()
                },
                name,
            )?;
            (inv, record.pki)
        }
        None => {
            let inv = load_inventory(&a.inv.path())?;
            let pki = a
                .pki
                .clone()
                .unwrap_or_else(|| crate::pki::default_dir(&inv));
            (inv, pki)
        }
    };
    // Like every command that changes nodes, a run log of what it sent (`hardway logs`).
    let command = if action == Action::Break {
        "lab-break"
    } else {
        "lab-fix"
    };
    let (_, run_log) = super::observe(command, OutputFormat::Text, &a.log, &inv)?;
    let access = crate::session::Access {
        run_log: run_log.clone(),
        ..Default::default()
    };
    let connector = crate::session::connector(&inv, access);
    let report = runtime()?.block_on(faults::run(
        &inv,
        &pki,
        scenario,
        a.node.as_deref(),
        action,
        a.confirm.confirm(false),
        connector,
    ))?;
    if let Some(l) = &run_log
        && !report.dry_run
    {
        eprintln!("log: {}", l.path().display());
    }
    match a.output {
        OutputFormat::Json => {
            out!("{}", serde_json::to_string_pretty(&report)?);
            return Ok(ExitCode::SUCCESS);
        }
        OutputFormat::Jsonl => {
            out!("{}", serde_json::to_string(&report)?);
            return Ok(ExitCode::SUCCESS);
        }
        OutputFormat::Text => {}
    }
    let head = if report.dry_run {
        "would"
    } else if report.changed {
        "did"
    } else {
        "nothing to do"
    };
    for s in &report.steps {
        out!("{head}: {s}");
    }
    let e = &report.expect;
    match action {
        Action::Break if !report.dry_run && !report.changed => {
            out!("{} was already broken on {}", report.scenario, report.node)
        }
        Action::Fix if !report.dry_run && !report.changed => out!(
            "{} is not broken on {}: nothing was changed",
            report.scenario,
            report.node
        ),
        Action::Break if !report.dry_run => out!(
            "{} is broken on {}: hardway verify now FAILs `{}` on {} (the hint names {:?}); `hardway lab fix {}` undoes it",
            report.scenario,
            report.node,
            e.check,
            e.host,
            e.hint_names,
            report.scenario
        ),
        Action::Fix if !report.dry_run => out!("{} is fixed on {}", report.scenario, report.node),
        _ => {}
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn class(command: ClassCommand) -> Result<ExitCode> {
    match command {
        ClassCommand::Up {
            students,
            inv,
            class,
            to,
            parallel_labs,
            api_timeout,
            limits,
            driver,
        } => class_up(
            &students,
            &inv.path(),
            &class,
            Checkpoint {
                to,
                parallel: usize::from(parallel_labs),
                api_timeout: std::time::Duration::from_secs(api_timeout),
            },
            limits.limits(),
            driver,
        ),
        ClassCommand::Status { class, output } => class_status(&class, output),
        ClassCommand::Down {
            students,
            class,
            confirm,
        } => class_down(&students, &class, &confirm),
        ClassCommand::Reset {
            student,
            class,
            confirm,
        } => class_reset(&student, &class, &confirm),
        ClassCommand::Grade {
            students,
            class,
            output,
        } => class_grade(&students, &class, output),
    }
}

/// How far `class up` deploys the labs: to which phase, how many at once, with what patience.
struct Checkpoint {
    to: Option<Phase>,
    parallel: usize,
    api_timeout: std::time::Duration,
}

fn class_up(
    students: &Path,
    inv_path: &Path,
    dir: &ClassDir,
    Checkpoint {
        to,
        parallel,
        api_timeout,
    }: Checkpoint,
    limits: MachineLimits,
    driver: Option<inventory::LabDriver>,
) -> Result<ExitCode> {
    let up = crate::class::up::Up::prepare(
        students,
        inv_path,
        &dir.dir,
        crate::class::up::UpOptions {
            to,
            parallel,
            api_timeout,
            limits,
            driver,
            state_dir: dir.state.state_dir.clone(),
            pool: dir.state.subnet_pool,
        },
    )?;
    for w in &up.warnings {
        eprintln!("warning: {w}");
    }
    let properties = up.class.file.limits.properties();
    let report = runtime()?.block_on(up.run())?;
    eprintln!(
        "class: {} labs booted in {:.1} s",
        report.booted,
        report.boot_time.as_secs_f64()
    );
    out!("{:<22} INVENTORY", "STUDENT");
    for (n, r) in &report.labs {
        match r {
            Ok(inv) => out!("{n:<22} {}", inv.display()),
            Err(e) => {
                eprintln!("{n}: {e}");
                out!("{n:<22} FAILED: {e}");
            }
        }
    }
    out!(
        "{} labs up{} in {:.1} s; machine limits: {properties}",
        report.labs.len() - report.failed(),
        to.map(|p| format!(", deployed up to {p}"))
            .unwrap_or_default(),
        report.elapsed.as_secs_f64(),
    );
    Ok(if report.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[derive(serde::Serialize)]
struct StatusRow {
    student: String,
    subnet: Option<String>,
    nodes: usize,
    up: usize,
    reachable: usize,
    last_grade: Option<grade::Summary>,
}

fn class_status(dir: &ClassDir, output: OutputFormat) -> Result<ExitCode> {
    let class = Class::open(&dir.dir)?;
    let opts = LabOptions {
        state_dir: dir.state.state_dir.clone(),
        ..LabOptions::default()
    };
    let rows: Vec<StatusRow> = std::thread::scope(|s| {
        let handles: Vec<_> = class
            .file
            .students
            .iter()
            .map(|n| {
                let (class, opts) = (&class, &opts);
                s.spawn(move || -> Result<StatusRow> {
                    let record = named::read_record(&opts.state_dir, n)?;
                    let inv = crate::inventory::load(&class.lab(n).inventory()).ok();
                    let nodes = inv.as_ref().map_or(0, |i| i.nodes.len());
                    let (up, reachable) = match (&record, &inv) {
                        (Some(_), Some(inv)) => {
                            let st = lab::status(inv, opts)?;
                            (
                                st.nodes.iter().filter(|n| n.running).count(),
                                st.nodes.iter().filter(|n| n.reachable).count(),
                            )
                        }
                        _ => (0, 0),
                    };
                    Ok(StatusRow {
                        student: n.clone(),
                        subnet: record.map(|r| r.subnet.to_string()),
                        nodes,
                        up,
                        reachable,
                        last_grade: grade::last(class, n),
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a status thread panicked"))
            .collect::<Result<Vec<_>>>()
    })?;
    if output == OutputFormat::Json {
        out!("{}", serde_json::to_string_pretty(&rows)?);
    } else if output == OutputFormat::Jsonl {
        for r in &rows {
            out!("{}", serde_json::to_string(r)?);
        }
    } else {
        out!(
            "{:<22} {:<16} {:<9} {:<10} LAST VERIFY",
            "STUDENT",
            "SUBNET",
            "NODES UP",
            "REACHABLE"
        );
        for r in &rows {
            let last = r
                .last_grade
                .as_ref()
                .map(|g| format!("{} ({})", g.verdict(), g.graded_at))
                .unwrap_or_else(|| "never graded".into());
            out!(
                "{:<22} {:<16} {:<9} {:<10} {last}",
                r.student,
                r.subnet.as_deref().unwrap_or("down"),
                format!("{}/{}", r.up, r.nodes),
                format!("{}/{}", r.reachable, r.nodes)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The students' labs that are up, with their inventories.
fn up_labs(
    class: &Class,
    students: &[String],
    opts: &LabOptions,
) -> Result<Vec<(String, Inventory)>> {
    let mut out = Vec::new();
    for s in class.select(students)? {
        if named::read_record(&opts.state_dir, &s)?.is_some() {
            let inv = crate::inventory::load(&class.lab(&s).inventory())?;
            out.push((s, inv));
        }
    }
    Ok(out)
}

fn confirm(what: String, steps: Vec<String>, c: &super::day2::ConfirmArgs) -> Result<bool> {
    let head = if c.dry_run { "would" } else { "will" };
    if c.dry_run {
        for s in &steps {
            out!("{head}: {s}");
        }
        return Ok(false);
    }
    if !c.yes {
        return Err(ClassError::from(crate::day2::Day2Error::NeedsYes { what, steps }).into());
    }
    Ok(true)
}

fn class_down(
    students: &[String],
    dir: &ClassDir,
    c: &super::day2::ConfirmArgs,
) -> Result<ExitCode> {
    let class = Class::open(&dir.dir)?;
    let opts = LabOptions {
        state_dir: dir.state.state_dir.clone(),
        ..LabOptions::default()
    };
    let labs = up_labs(&class, students, &opts)?;
    let steps: Vec<String> = labs
        .iter()
        .map(|(s, inv)| {
            format!(
                "{s}: stop its {} machines, keep each one's files in {}/saved/, remove the lab",
                inv.nodes.len(),
                class.lab(s).dir.display()
            )
        })
        .collect();
    if !confirm(format!("take {} labs down", labs.len()), steps, c)? {
        return Ok(ExitCode::SUCCESS);
    }
    let results: Vec<(String, Result<Vec<PathBuf>, ClassError>)> = std::thread::scope(|s| {
        let handles: Vec<_> = labs
            .iter()
            .map(|(n, inv)| {
                let (keep, opts) = (labs::saved_dir(&class.lab(n)), &opts);
                (
                    n.clone(),
                    s.spawn(move || labs::down(inv, opts, Some(&keep))),
                )
            })
            .collect();
        handles
            .into_iter()
            .map(|(n, h)| (n, h.join().expect("a down thread panicked")))
            .collect()
    });
    let mut failed = false;
    for (n, r) in results {
        match r {
            Ok(kept) => out!(
                "{n}: down; {} machines' files kept{}",
                kept.len(),
                kept.first()
                    .and_then(|k| k.parent())
                    .map(|d| format!(" in {}", d.display()))
                    .unwrap_or_default()
            ),
            Err(e) => {
                failed = true;
                eprintln!("{n}: {e}");
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn class_reset(student: &str, dir: &ClassDir, c: &super::day2::ConfirmArgs) -> Result<ExitCode> {
    let class = Class::open(&dir.dir)?;
    class.select(&[student.to_string()])?;
    let base = Base::load(&class.file.base)?;
    let opts = class_options(&dir.state, &class);
    let to = class.file.to.as_deref().and_then(Phase::parse);
    let lab = class.lab(student);
    let mut steps = vec![format!(
        "{student}: stop the machines, keep each one's files in {}/saved/, remove them",
        lab.dir.display()
    )];
    steps.push(format!(
        "{student}: boot fresh machines on the same addresses"
    ));
    if let Some(p) = to {
        steps.push(format!(
            "{student}: deploy up to {p} again with {}",
            lab.pki().display()
        ));
    }
    if !confirm(format!("reset the lab of {student}"), steps, c)? {
        return Ok(ExitCode::SUCCESS);
    }
    if named::read_record(&opts.lab.state_dir, student)?.is_some() {
        let inv = crate::inventory::load(&lab.inventory())?;
        let kept = labs::down(&inv, &opts.lab, Some(&labs::saved_dir(&lab)))?;
        out!("{student}: {} machines' files kept", kept.len());
    }
    let (inv, booted) = labs::up(&base, &lab, &opts)?;
    if let Some(p) = to {
        runtime()?
            .block_on(labs::checkpoint(
                &inv,
                &lab.pki(),
                p,
                crate::deploy::DeployOptions::default().api_timeout,
            ))
            .with_context(|| format!("deploying {student}'s lab up to {p}"))?;
        out!("{student}: deployed up to {p}");
    }
    Ok(print_lab(&booted))
}

fn class_grade(students: &[String], dir: &ClassDir, output: OutputFormat) -> Result<ExitCode> {
    let class = Class::open(&dir.dir)?;
    let students = class.select(students)?;
    let opts = LabOptions {
        state_dir: dir.state.state_dir.clone(),
        ..LabOptions::default()
    };
    let t = std::time::Instant::now();
    let grades = runtime()?.block_on(grade::grade(&class, &students, &opts, 32))?;
    match output {
        OutputFormat::Json => {
            out!("{}", serde_json::to_string_pretty(&grades)?);
            return Ok(ExitCode::SUCCESS);
        }
        OutputFormat::Jsonl => {
            for g in &grades {
                out!("{}", serde_json::to_string(g)?);
            }
            return Ok(ExitCode::SUCCESS);
        }
        OutputFormat::Text => {}
    }
    out!(
        "{:<22} {:>6} {:>6} {:>6} {:>6}  FIRST FAILURE",
        "STUDENT",
        "PASS",
        "FAIL",
        "WARN",
        "SKIP"
    );
    for g in &grades {
        let s = &g.summary;
        let first = match (&s.error, &s.first_failure) {
            (Some(e), _) => format!("not graded: {e}"),
            (None, None) => "-".to_string(),
            (None, Some(f)) => format!(
                "{} {}: {}{}",
                f.host,
                f.check,
                f.detail,
                f.hint
                    .as_deref()
                    .map(|h| format!(" (hint: {h})"))
                    .unwrap_or_default()
            ),
        };
        out!(
            "{:<22} {:>6} {:>6} {:>6} {:>6}  {first}",
            s.student,
            s.passed,
            s.failed,
            s.warned,
            s.skipped
        );
    }
    eprintln!(
        "graded {} labs in {:.1} s",
        grades.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
