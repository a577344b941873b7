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
//! | [`up`] | `class up`: the class checked and recorded, every lab booted at once and brought to the checkpoint |
//! | [`grade`] | verify against every lab at once, and the per-student summary |
//! | [`faults`] | `lab break` / `lab fix`: the scenarios of [`scenarios`] run on a lab's nodes |

pub mod faults;
pub mod grade;
pub mod labs;
pub mod roster;
pub mod scenarios;
pub mod up;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::lab::limits::MachineLimits;

/// Why a class command could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum ClassError {
    #[error("{}: {} problem(s), nothing was created:\n{}", path.display(), problems.len(), roster_lines(path, problems))]
    Roster {
        path: PathBuf,
        problems: Vec<roster::RosterProblem>,
    },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    BadFile { path: PathBuf, reason: String },
    #[error("no class in {}: `hardway class up --students FILE -i INVENTORY --dir {}` makes one", dir.display(), dir.display())]
    NoClass { dir: PathBuf },
    #[error("{student:?} is not a student of the class in {} (students: {})", dir.display(), known.join(", "))]
    UnknownStudent {
        student: String,
        dir: PathBuf,
        known: Vec<String>,
    },
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
    Session(#[from] crate::session::SessionError),
    #[error(transparent)]
    Deploy(#[from] crate::deploy::DeployError),
    #[error(transparent)]
    Verify(#[from] crate::verify::VerifyError),
    #[error(transparent)]
    Remote(#[from] crate::remote::RemoteError),
    /// Asked for `--yes` (the day-2 commands' contract).
    /// Boxed: a day-2 error is large, and every class result would carry its size.
    #[error(transparent)]
    Confirm(Box<crate::day2::Day2Error>),
}

impl From<crate::day2::Day2Error> for ClassError {
    fn from(e: crate::day2::Day2Error) -> ClassError {
        ClassError::Confirm(Box::new(e))
    }
}

fn roster_lines(path: &Path, problems: &[roster::RosterProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}:{}: {}", path.display(), p.line, p.message))
        .collect::<Vec<_>>()
        .join("\n")
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
    /// `class up --driver`: the machines of every lab (else the base inventory's `lab.driver`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<crate::inventory::LabDriver>,
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
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ClassError::NoClass {
                    dir: dir.to_path_buf(),
                });
            }
            Err(source) => {
                return Err(ClassError::Io {
                    action: "read",
                    path,
                    source,
                });
            }
        };
        let file: ClassFile = serde_json::from_str(&text).map_err(|e| ClassError::BadFile {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        // Checked again as the students file was: each name becomes a path, a cluster and a
        // bridge, and the file may have been edited since.
        let mut seen = std::collections::BTreeMap::new();
        for (i, name) in file.students.iter().enumerate() {
            let problem = match (
                crate::lab::named::name_problem(name),
                seen.insert(name.as_str(), i),
            ) {
                (Some(why), _) => Some(format!("{name:?} {why}")),
                (None, Some(first)) => Some(format!("{name:?} is already students[{first}]")),
                (None, None) => None,
            };
            if let Some(p) = problem {
                return Err(ClassError::BadFile {
                    path,
                    reason: format!("field `students[{i}]`: student {p}"),
                });
            }
        }
        Ok(Class {
            dir: dir.to_path_buf(),
            file,
        })
    }

    pub fn save(&self) -> Result<(), ClassError> {
        let path = self.dir.join(Class::FILE);
        std::fs::create_dir_all(&self.dir).map_err(|source| ClassError::Io {
            action: "create",
            path: self.dir.clone(),
            source,
        })?;
        let text = serde_json::to_string_pretty(&self.file).expect("serializes") + "\n";
        std::fs::write(&path, text).map_err(|source| ClassError::Io {
            action: "write",
            path,
            source,
        })
    }

    /// The student's lab: named after them, its files in `<dir>/<student>`.
    pub fn lab(&self, student: &str) -> labs::NamedLab {
        labs::NamedLab {
            name: student.to_string(),
            dir: self.dir.join(student),
        }
    }

    /// The students named, or all when none is; an unknown name is an error.
    pub fn select(&self, names: &[String]) -> Result<Vec<String>, ClassError> {
        if names.is_empty() {
            return Ok(self.file.students.clone());
        }
        for n in names {
            if !self.file.students.contains(n) {
                return Err(ClassError::UnknownStudent {
                    student: n.clone(),
                    dir: self.dir.clone(),
                    known: self.file.students.clone(),
                });
            }
        }
        Ok(names.to_vec())
    }

    /// Adds students not in the class yet (file order kept), and takes the settings given.
    pub fn merge(
        &mut self,
        students: &[String],
        limits: MachineLimits,
        to: Option<String>,
        driver: Option<crate::inventory::LabDriver>,
    ) {
        if driver.is_some() {
            self.file.driver = driver;
        }
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
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--name ../../..` must not load a record (and an inventory) from outside the named labs'
    /// directory: a lab name is a DNS label, checked before any path is made of it.
    #[test]
    fn a_lab_name_that_is_not_a_dns_label_is_refused_before_any_path_is_made_of_it() {
        let t = tempfile::tempdir().unwrap();
        let state = t.path().join("a/b/c");
        std::fs::create_dir_all(&state).unwrap();
        let inv = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lab-etcd.toml");
        let record = crate::lab::named::LabRecord {
            name: "x".into(),
            subnet: "10.222.9.0/24".parse().unwrap(),
            base: inv.clone(),
            inventory: inv,
            pki: "/pki".into(),
            limits: MachineLimits::default(),
        };
        std::fs::write(
            t.path().join("lab.json"),
            serde_json::to_string(&record).unwrap(),
        )
        .unwrap();
        let opts = crate::lab::LabOptions {
            state_dir: state,
            ..crate::lab::LabOptions::default()
        };
        for bad in ["../../..", "..", "a/b", "Alice"] {
            let e = labs::find(&opts, bad)
                .map(|(r, _)| r.name)
                .expect_err(bad)
                .to_string();
            assert!(
                e.contains(&format!("{bad:?}")) && e.contains("lab name"),
                "{bad}: {e}"
            );
        }
    }

    /// class.json is re-checked when read: a student name edited into it is checked as in the
    /// students file, with the file and the field.
    #[test]
    fn student_names_in_class_json_are_checked_when_read() {
        let t = tempfile::tempdir().unwrap();
        for (students, field) in [
            (vec!["alice", "../../etc"], "students[1]"),
            (vec!["alice", "alice"], "students[1]"),
            (vec!["Bob"], "students[0]"),
        ] {
            let file = ClassFile {
                base: "/b.toml".into(),
                students: students.iter().map(|s| s.to_string()).collect(),
                limits: MachineLimits::default(),
                to: None,
                driver: None,
            };
            std::fs::write(
                t.path().join(Class::FILE),
                serde_json::to_string(&file).unwrap(),
            )
            .unwrap();
            let e = Class::open(t.path())
                .map(|c| c.file.students)
                .expect_err(field)
                .to_string();
            assert!(
                e.contains(&t.path().join(Class::FILE).display().to_string()) && e.contains(field),
                "{students:?}: {e}"
            );
        }
    }
}
