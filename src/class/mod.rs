//! The classroom: one lab per student on a shared host, started from one inventory, brought
//! to a checkpoint, broken on purpose, and graded.
//!
//! A class lives in a directory (default `class/`):
//!
//! ```text
//! class/class.json                 the base inventory, the students, the machines' limits, the checkpoint
//! class/<student>/inventory.toml   the student's cluster with its real addresses (lab::named)
//! class/<student>/pki/             the student's PKI (made by `--to`, or the student's own CAs)
//! class/<student>/grade.json       the last `class grade` of that lab
//! class/<student>/saved/<time>/    each machine's own files, kept by `class down` and `reset`
//! ```
//!
//! Each student's lab is a named lab ([`crate::lab::named`]) called after the student: its own
//! bridge, /24, machines (`<student>-<node>`), key and state. The modules:
//!
//! | module | holds |
//! |---|---|
//! | [`roster`] | the students file |
//! | [`labs`] | one named lab: up (inventory written, record claimed), checkpoint deploy, down with the machines' files kept |
//! | [`grade`] | verify against every lab at once, and the per-student summary |
//! | [`faults`] | `lab break` / `lab fix`: the scenarios of [`scenarios`] run on a lab's nodes |

pub mod faults;
pub mod grade;
pub mod labs;
pub mod roster;
pub mod scenarios;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::lab::limits::MachineLimits;

/// Why a class command could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum ClassError {
    #[error("{}: {} problem(s), nothing was created:\n{}", path.display(), problems.len(), roster_lines(path, problems))]
    Roster { path: PathBuf, problems: Vec<roster::RosterProblem> },
    #[error("cannot {action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{}: {reason}", path.display())]
    BadFile { path: PathBuf, reason: String },
    #[error("no class in {}: `hardway class up --students FILE -i INVENTORY --dir {}` makes one", dir.display(), dir.display())]
    NoClass { dir: PathBuf },
    #[error("{student:?} is not a student of the class in {} (students: {})", dir.display(), known.join(", "))]
    UnknownStudent { student: String, dir: PathBuf, known: Vec<String> },
    #[error("no lab named {name:?} is up (labs: {})", if known.is_empty() { "none".to_string() } else { known.join(", ") })]
    NoLab { name: String, known: Vec<String> },
    #[error("lab {name}: {reason}")]
    Lab { name: String, reason: String },
    #[error(transparent)]
    LabSetup(#[from] crate::lab::LabError),
    #[error(transparent)]
    Inventory(#[from] crate::inventory::InventoryError),
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    #[error(transparent)]
    Render(#[from] crate::render::RenderError),
    #[error(transparent)]
    Deploy(#[from] crate::deploy::DeployError),
    #[error(transparent)]
    Verify(#[from] crate::verify::VerifyError),
    #[error(transparent)]
    Remote(#[from] crate::remote::RemoteError),
    /// Asked for `--yes` (the day-2 commands' contract).
    #[error(transparent)]
    Confirm(#[from] crate::day2::Day2Error),
}

fn roster_lines(path: &Path, problems: &[roster::RosterProblem]) -> String {
    problems.iter().map(|p| format!("{}:{}: {}", path.display(), p.line, p.message)).collect::<Vec<_>>().join("\n")
}

/// `class.json`: what `class up` was asked for, so that later commands need only `--dir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassFile {
    /// The inventory every lab is made from (absolute).
    pub base: PathBuf,
    pub students: Vec<String>,
    pub limits: MachineLimits,
    /// The phase every lab is deployed to (`--to`), which `reset` brings a lab back to.
    pub to: Option<String>,
}

/// A class directory and its `class.json`.
#[derive(Debug, Clone)]
pub struct Class {
    pub dir: PathBuf,
    pub file: ClassFile,
}

impl Class {
    pub const FILE: &'static str = "class.json";

    /// The class in `dir`, made by `class up`.
    pub fn open(dir: &Path) -> Result<Class, ClassError> {
        let path = dir.join(Class::FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ClassError::NoClass { dir: dir.to_path_buf() }),
            Err(source) => return Err(ClassError::Io { action: "read", path, source }),
        };
        let file = serde_json::from_str(&text).map_err(|e| ClassError::BadFile { path, reason: e.to_string() })?;
        Ok(Class { dir: dir.to_path_buf(), file })
    }

    pub fn save(&self) -> Result<(), ClassError> {
        let path = self.dir.join(Class::FILE);
        std::fs::create_dir_all(&self.dir).map_err(|source| ClassError::Io { action: "create", path: self.dir.clone(), source })?;
        let text = serde_json::to_string_pretty(&self.file).expect("serializes") + "\n";
        std::fs::write(&path, text).map_err(|source| ClassError::Io { action: "write", path, source })
    }

    /// The student's lab: named after them, its files in `<dir>/<student>`.
    pub fn lab(&self, student: &str) -> labs::NamedLab {
        labs::NamedLab { name: student.to_string(), dir: self.dir.join(student) }
    }

    /// The students named, or all when none is; an unknown name is an error.
    pub fn select(&self, names: &[String]) -> Result<Vec<String>, ClassError> {
        if names.is_empty() {
            return Ok(self.file.students.clone());
        }
        for n in names {
            if !self.file.students.contains(n) {
                return Err(ClassError::UnknownStudent { student: n.clone(), dir: self.dir.clone(), known: self.file.students.clone() });
            }
        }
        Ok(names.to_vec())
    }

    /// Adds students not in the class yet (file order kept), and takes the settings given.
    pub fn merge(&mut self, students: &[String], limits: MachineLimits, to: Option<String>) {
        for s in students {
            if !self.file.students.contains(s) {
                self.file.students.push(s.clone());
            }
        }
        self.file.limits = limits;
        if to.is_some() {
            self.file.to = to;
        }
    }
}

/// Current time as RFC 3339, for records and file names.
pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}
