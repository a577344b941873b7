//! `class up`: every student's lab booted at once and brought to the class's checkpoint. Two
//! steps, so that the caller can show the machines' isolation warnings before anything boots:
//! [`Up::prepare`] checks the students file and the inventory and records the class, then
//! [`Up::run`] boots the labs (one thread each) and deploys them to the checkpoint, a few at a
//! time ([`labs::checkpoint_all`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::labs::{self, Base, NamedOptions};
use super::{Class, ClassError, ClassFile, roster};
use crate::components::Phase;
use crate::inventory::LabDriver;
use crate::lab::{self, limits::MachineLimits, named};

/// What `class up` is asked for.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Deploy every lab up to this phase.
    pub to: Option<Phase>,
    /// Labs deployed at once.
    pub parallel: usize,
    /// How long an API server may take to answer /readyz after a (re)start.
    pub api_timeout: Duration,
    pub limits: MachineLimits,
    /// The machines of every lab (else the base inventory's `lab.driver`).
    pub driver: Option<LabDriver>,
    /// The parent of the named labs' state directories.
    pub state_dir: PathBuf,
    /// Where the labs' /24 subnets come from.
    pub pool: ipnet::Ipv4Net,
}

/// A `class up` checked and recorded, ready to boot.
pub struct Up {
    pub class: Class,
    /// The students of the file given, in its order.
    pub students: Vec<String>,
    base: Base,
    labs: NamedOptions,
    to: Option<Phase>,
    parallel: usize,
    api_timeout: Duration,
    /// What the machines are not, for the caller to say before anything boots (an instructor
    /// who reads it can stop and choose another driver).
    pub warnings: Vec<String>,
}

/// What `class up` did.
#[derive(Debug)]
pub struct UpReport {
    /// Labs that booted, and how long booting them all took.
    pub booted: usize,
    pub boot_time: Duration,
    /// By student: the lab's inventory, or why it is not up (or not at the checkpoint).
    pub labs: Vec<(String, Result<PathBuf, String>)>,
    pub elapsed: Duration,
}

impl UpReport {
    pub fn failed(&self) -> usize {
        self.labs.iter().filter(|(_, r)| r.is_err()).count()
    }
}

impl Up {
    /// Everything is checked before anything is created: the students file, the inventory, and
    /// that a class already in `dir` was made from the same inventory. Then the class is
    /// recorded (students added, the settings given taken).
    pub fn prepare(
        students: &Path,
        inv_path: &Path,
        dir: &Path,
        opts: UpOptions,
    ) -> Result<Up, ClassError> {
        let names = roster::load(students)?;
        let base = Base::load(inv_path)?;
        let mut class = match Class::open(dir) {
            Ok(c) if c.file.base != base.inv.source => {
                return Err(ClassError::BadFile {
                    path: dir.join(Class::FILE),
                    reason: format!(
                        "the class was made from {}, not {}",
                        c.file.base.display(),
                        base.inv.source.display()
                    ),
                });
            }
            Ok(c) => c,
            Err(ClassError::NoClass { .. }) => Class {
                dir: dir.to_path_buf(),
                file: ClassFile {
                    base: base.inv.source.clone(),
                    students: vec![],
                    limits: opts.limits,
                    to: None,
                    driver: None,
                },
            },
            Err(e) => return Err(e),
        };
        class.merge(
            &names,
            opts.limits,
            opts.to.map(|p| p.name().to_string()),
            opts.driver,
        );
        class.save()?;
        let mut labs = NamedOptions::new(opts.state_dir, opts.pool, class.file.limits);
        labs.lab.driver = class.file.driver;
        let warnings =
            named::isolation_warnings(&base.inv, class.file.driver.unwrap_or(base.inv.lab.driver));
        Ok(Up {
            class,
            students: names,
            base,
            labs,
            to: opts.to,
            parallel: opts.parallel,
            api_timeout: opts.api_timeout,
            warnings,
        })
    }

    /// Boots every student's lab at once, then deploys each to the checkpoint.
    pub async fn run(self) -> Result<UpReport, ClassError> {
        // Before the labs boot at once, each counting the machines already there.
        lab::reserve_machines(
            lab::nspawn::running_machines() + self.students.len() * self.base.inv.nodes.len(),
        )?;
        let t = Instant::now();
        let booted = labs::up_all(&self.class, &self.students, &self.base, &self.labs);
        let boot_time = t.elapsed();
        let checkpoints = labs::checkpoint_all(
            &self.class,
            &booted,
            self.to,
            self.parallel,
            self.api_timeout,
        )
        .await;
        Ok(UpReport {
            booted: booted.iter().filter(|b| b.1.is_ok()).count(),
            boot_time,
            labs: checkpoints
                .into_iter()
                .map(|(n, r)| {
                    let inv = self.class.lab(&n).inventory();
                    (n, r.map(|()| inv))
                })
                .collect(),
            elapsed: t.elapsed(),
        })
    }
}
