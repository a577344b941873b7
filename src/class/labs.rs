//! One named lab from start to finish: its inventory derived and written (addresses and
//! subnet recorded), its machines booted, deployed to a checkpoint phase, and taken down with
//! each machine's own files kept. `hardway lab up --name` and every student of `hardway class`
//! go through here.

use std::path::{Path, PathBuf};

use super::ClassError;
use crate::components::Phase;
use crate::deploy::{self, DeployOptions, DeployReport};
use crate::events::Events;
use crate::inventory::{self, Inventory};
use crate::lab::named::{self, LabRecord};
use crate::lab::{self, Lab, LabOptions};
use crate::session::{Access, PkiUse, Session};

/// A named lab: its name, and the directory of its inventory and PKI.
#[derive(Debug, Clone)]
pub struct NamedLab {
    pub name: String,
    pub dir: PathBuf,
}

impl NamedLab {
    pub fn inventory(&self) -> PathBuf {
        self.dir.join("inventory.toml")
    }
    pub fn pki(&self) -> PathBuf {
        self.dir.join("pki")
    }
}

/// Where named labs live and where their subnets come from.
#[derive(Debug, Clone)]
pub struct NamedOptions {
    /// `state_dir` is the parent of the named labs' directories ([`named::NAMED_STATE_DIR`]).
    pub lab: LabOptions,
    /// Where subnets come from ([`named::SUBNET_POOL`]).
    pub pool: ipnet::Ipv4Net,
}

impl NamedOptions {
    pub fn new(
        state_dir: PathBuf,
        pool: ipnet::Ipv4Net,
        limits: crate::lab::limits::MachineLimits,
    ) -> NamedOptions {
        NamedOptions {
            lab: LabOptions {
                state_dir,
                limits,
                ..LabOptions::default()
            },
            pool,
        }
    }
}

/// The inventory labs are made from, with its text (derived inventories keep its comments).
#[derive(Debug, Clone)]
pub struct Base {
    pub inv: Inventory,
    pub text: String,
}

impl Base {
    pub fn load(path: &Path) -> Result<Base, ClassError> {
        let path = absolute(path)?;
        let text = std::fs::read_to_string(&path).map_err(|source| ClassError::Io {
            action: "read",
            path: path.clone(),
            source,
        })?;
        Ok(Base {
            inv: inventory::parse(&path, &text)?,
            text,
        })
    }
}

fn absolute(p: &Path) -> Result<PathBuf, ClassError> {
    std::path::absolute(p).map_err(|source| ClassError::Io {
        action: "resolve",
        path: p.to_path_buf(),
        source,
    })
}

/// Claims the lab's subnet (the one its inventory already has, or a new one), and writes its
/// inventory when that changed. Nothing is written unless the derived inventory validates.
pub fn prepare(base: &Base, lab: &NamedLab, opts: &NamedOptions) -> Result<Inventory, ClassError> {
    let (pool, opts) = (opts.pool, &opts.lab);
    if let Some(why) = named::name_problem(&lab.name) {
        return Err(ClassError::Lab {
            name: lab.name.clone(),
            reason: format!("the name {why}"),
        });
    }
    if lab.name == base.inv.cluster.name {
        return Err(ClassError::Lab {
            name: lab.name.clone(),
            reason: format!(
                "the lab of {} itself is called that (its bridge would be this lab's): choose another name",
                base.inv.source.display()
            ),
        });
    }
    let inv_path = absolute(&lab.inventory())?;
    if let Some(r) = named::read_record(&opts.state_dir, &lab.name)?
        && r.inventory != inv_path
    {
        return Err(ClassError::Lab {
            name: lab.name.clone(),
            reason: format!(
                "a lab of that name is up already, with the inventory {}: take it down first, or choose another name",
                r.inventory.display()
            ),
        });
    }
    let existing = std::fs::read_to_string(&inv_path).ok();
    let preferred = existing
        .as_deref()
        .and_then(|t| inventory::parse(&inv_path, t).ok())
        .and_then(|i| named::existing_subnet(&i, &lab.name));
    let record = LabRecord {
        name: lab.name.clone(),
        subnet: "0.0.0.0/0".parse().expect("a CIDR"),
        base: base.inv.source.clone(),
        inventory: inv_path.clone(),
        pki: absolute(&lab.pki())?,
        limits: opts.limits,
    };
    let record = named::claim(&opts.state_dir, record, preferred, pool)?;
    let text = named::derive_inventory(&base.inv, &base.text, &lab.name, record.subnet, opts)?;
    let inv = inventory::parse(&inv_path, &text)?;
    if existing.as_deref() != Some(text.as_str()) {
        std::fs::create_dir_all(&lab.dir).map_err(|source| ClassError::Io {
            action: "create",
            path: lab.dir.clone(),
            source,
        })?;
        std::fs::write(&inv_path, &text).map_err(|source| ClassError::Io {
            action: "write",
            path: inv_path.clone(),
            source,
        })?;
    }
    // A copy beside the record, so that the lab can be taken down whatever becomes of --dir.
    let copy = named::record_path(&opts.state_dir, &lab.name).with_file_name("inventory.toml");
    std::fs::write(&copy, &text).map_err(|source| ClassError::Io {
        action: "write",
        path: copy,
        source,
    })?;
    Ok(inv)
}

/// [`prepare`], then the machines (idempotent, as `lab up`).
pub fn up(
    base: &Base,
    lab: &NamedLab,
    opts: &NamedOptions,
) -> Result<(Inventory, Lab), ClassError> {
    let inv = prepare(base, lab, opts)?;
    let booted = lab::up(&inv, &opts.lab)?;
    Ok((inv, booted))
}

/// Deploys every phase up to `to` with the lab's PKI (created in `pki_dir` when missing), as
/// `hardway deploy --phases <files..to>` would: the lesson starts there.
pub async fn checkpoint(
    inv: &Inventory,
    pki_dir: &Path,
    to: Phase,
    api_timeout: std::time::Duration,
) -> Result<DeployReport, ClassError> {
    checkpoint_logged(inv, pki_dir, to, api_timeout, Events::none("class"), None).await
}

/// [`checkpoint`], its events to `events` and every remote operation to `run_log` (`lab up
/// --to`, which writes a run log as deploy does).
pub async fn checkpoint_logged(
    inv: &Inventory,
    pki_dir: &Path,
    to: Phase,
    api_timeout: std::time::Duration,
    events: Events,
    run_log: Option<std::sync::Arc<crate::runlog::RunLog>>,
) -> Result<DeployReport, ClassError> {
    let access = Access {
        run_log,
        ..Access::default()
    };
    let s = Session::open(inv.clone(), pki_dir, PkiUse::Created, access)?;
    let opts = DeployOptions {
        phases: to.up_to(),
        snapshot_dir: None,
        api_timeout,
        ..DeployOptions::default()
    };
    let rendered = s.files(&opts.selected())?;
    let report = deploy::deploy(inv, rendered, s.connector, s.probe, &opts, events).await?;
    let failed: Vec<String> = report
        .failed()
        .iter()
        .map(|h| format!("{}: {}", h.node, h.error.as_deref().unwrap_or("failed")))
        .collect();
    if !failed.is_empty() {
        return Err(ClassError::Lab {
            name: inv.cluster.name.clone(),
            reason: format!("deploy to {to} failed: {}", failed.join("; ")),
        });
    }
    Ok(report)
}

/// Boots every student's lab at once (one thread each, as `lab up` would), each from `base`:
/// the lab's inventory, or why it did not come up, by student.
pub fn up_all(
    class: &super::Class,
    students: &[String],
    base: &Base,
    opts: &NamedOptions,
) -> Vec<(String, Result<Inventory, ClassError>)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = students
            .iter()
            .map(|n| {
                let lab = class.lab(n);
                (
                    n.clone(),
                    s.spawn(move || up(base, &lab, opts).map(|(inv, _)| inv)),
                )
            })
            .collect();
        handles
            .into_iter()
            .map(|(n, h)| {
                (
                    n,
                    h.join().unwrap_or_else(|_| {
                        Err(ClassError::Lab {
                            name: "?".into(),
                            reason: "panicked".into(),
                        })
                    }),
                )
            })
            .collect()
    })
}

/// Deploys each booted lab up to `to` ([`checkpoint`]), `parallel` at a time: twenty labs'
/// etcds bootstrapping at once on two cores starve their nodes' shells past SSH's timeouts;
/// ten at once take 17 s here (README, Performance). Without `to` only the boots' outcomes.
/// By student: done, or why not.
pub async fn checkpoint_all(
    class: &super::Class,
    booted: &[(String, Result<Inventory, ClassError>)],
    to: Option<Phase>,
    parallel: usize,
    api_timeout: std::time::Duration,
) -> Vec<(String, Result<(), String>)> {
    // deploy's future is not Send: the labs' deploys interleave on one thread, their SSH work
    // runs on the blocking pool.
    let local = tokio::task::LocalSet::new();
    let turns = std::sync::Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    local
        .run_until(async {
            let mut tasks = Vec::new();
            for (n, r) in booted {
                let (n, r) = (n.clone(), r.as_ref().map_err(|e| e.to_string()).cloned());
                let (pki, turns) = (class.lab(&n).pki(), turns.clone());
                tasks.push(tokio::task::spawn_local(async move {
                    let _turn = turns.acquire_owned().await.expect("never closed");
                    let r = match (r, to) {
                        (Ok(inv), Some(to)) => checkpoint(&inv, &pki, to, api_timeout)
                            .await
                            .map(drop)
                            .map_err(|e| e.to_string()),
                        (r, _) => r.map(drop),
                    };
                    (n, r)
                }));
            }
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.expect("a checkpoint task panicked"));
            }
            out
        })
        .await
}

/// The lab named `name` that is up (its record), and its inventory (the copy beside the
/// record when the one written for it is gone).
pub fn find(opts: &LabOptions, name: &str) -> Result<(LabRecord, Inventory), ClassError> {
    match named::read_record(&opts.state_dir, name)? {
        Some(r) => {
            let copy = named::record_path(&opts.state_dir, name).with_file_name("inventory.toml");
            let inv = if r.inventory.is_file() {
                inventory::load(&r.inventory)?
            } else {
                inventory::load(&copy)?
            };
            Ok((r, inv))
        }
        None => Err(ClassError::NoLab {
            name: name.to_string(),
            known: named::records(&opts.state_dir)
                .into_iter()
                .map(|r| r.name)
                .collect(),
        }),
    }
}

/// Stops the lab's machines, keeps each one's own files in `keep` (a tar per machine) when
/// given, and takes the lab down. Returns the files kept.
pub fn down(
    inv: &Inventory,
    opts: &LabOptions,
    keep: Option<&named::Keep>,
) -> Result<Vec<PathBuf>, ClassError> {
    let kept = match keep {
        Some(keep) => named::save_machines(inv, opts, keep)?,
        None => Vec::new(),
    };
    lab::down(inv, opts)?;
    Ok(kept)
}

/// Where `down` keeps a lab's machines this time: `saved/<UTC time>` below the lab's directory.
pub fn saved_dir(lab: &NamedLab) -> named::Keep {
    let stamp = crate::events::stamp();
    named::Keep {
        base: lab.dir.clone(),
        rel: Path::new("saved").join(stamp),
    }
}
