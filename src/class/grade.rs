//! `hardway class grade`: `hardway verify` against every student's lab at once, and one line
//! per student: checks passed and failed, and the first failing check with its hint.
//!
//! Verify judges what the student built, where their units say things are; it needs only the
//! student's inventory, the CAs and a client certificate of `class/<student>/pki` (made by
//! `class up --to`, or the student's own CAs and an etcd client certificate put there), and it
//! never reads a private key off a node. Only labs that are up are contacted: a lab without a
//! record has no bridge, and its addresses would lead off the host.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Class, ClassError};
use crate::events::Events;
use crate::inventory;
use crate::lab::LabOptions;
use crate::lab::named;
use crate::verify::{self, Check, Credentials, Status, VerifyOptions};

/// The first failing check of a lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub host: String,
    pub check: String,
    pub detail: String,
    pub hint: Option<String>,
}

/// One student's result, as `grade.json` keeps it and `class status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub student: String,
    pub graded_at: String,
    pub passed: usize,
    pub failed: usize,
    pub warned: usize,
    pub skipped: usize,
    pub first_failure: Option<Failure>,
    /// Why the lab could not be graded at all (it is down, its inventory is missing).
    pub error: Option<String>,
}

impl Summary {
    /// `PASS 14/14`, `FAIL 3/17: <host> <check>`, or the reason it could not be graded.
    pub fn verdict(&self) -> String {
        let total = self.passed + self.failed + self.warned;
        match (&self.error, &self.first_failure) {
            (Some(e), _) => format!("not graded: {e}"),
            (None, None) => format!("PASS {}/{total}", self.passed),
            (None, Some(f)) => format!("FAIL {}/{total}: {} {}", self.failed, f.host, f.check),
        }
    }
}

/// A student's result with every check (for `--output json`).
#[derive(Debug, Clone, Serialize)]
pub struct Grade {
    #[serde(flatten)]
    pub summary: Summary,
    pub checks: Vec<Check>,
}

pub fn summarize(student: &str, checks: &[Check], error: Option<String>) -> Summary {
    let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
    let first_failure = checks
        .iter()
        .find(|c| c.status == Status::Fail)
        .map(|c| Failure {
            host: c.place().to_string(),
            check: c.check.clone(),
            detail: c.detail.clone(),
            hint: c.hint.clone(),
        });
    Summary {
        student: student.to_string(),
        graded_at: super::now_rfc3339(),
        passed: count(Status::Pass),
        failed: count(Status::Fail),
        warned: count(Status::Warn),
        skipped: count(Status::Skip),
        first_failure,
        error,
    }
}

fn grade_file(class: &Class, student: &str) -> PathBuf {
    class.lab(student).dir.join("grade.json")
}

/// The last grade of a student, if any.
pub fn last(class: &Class, student: &str) -> Option<Summary> {
    serde_json::from_str(&std::fs::read_to_string(grade_file(class, student)).ok()?).ok()
}

/// Grades every student in `students` at once; each result is also written to their
/// `grade.json`.
pub async fn grade(
    class: &Class,
    students: &[String],
    opts: &LabOptions,
    parallel: usize,
) -> Result<Vec<Grade>, ClassError> {
    let mut tasks = Vec::new();
    for student in students {
        let lab = class.lab(student);
        let (student, up) = (
            student.clone(),
            named::read_record(&opts.state_dir, student)?.is_some(),
        );
        tasks.push(tokio::spawn(async move {
            if !up {
                return Grade {
                    summary: summarize(&student, &[], Some("the lab is down".into())),
                    checks: vec![],
                };
            }
            let inv = match inventory::load(&lab.inventory()) {
                Ok(inv) => inv,
                Err(e) => {
                    return Grade {
                        summary: summarize(&student, &[], Some(e.to_string())),
                        checks: vec![],
                    };
                }
            };
            let creds = match Credentials::load(&VerifyOptions::new(lab.pki())) {
                Ok(c) => c,
                Err(e) => {
                    return Grade {
                        summary: summarize(&student, &[], Some(e.to_string())),
                        checks: vec![],
                    };
                }
            };
            let (probe, api_error) = creds.probe(&inv);
            let connector = crate::session::connector(&inv, crate::session::Access::default());
            let checks = verify::verify(
                &inv,
                creds,
                connector,
                Arc::new(probe),
                api_error,
                parallel,
                Events::none("grade"),
            )
            .await;
            Grade {
                summary: summarize(&student, &checks, None),
                checks,
            }
        }));
    }
    let mut grades = Vec::new();
    for t in tasks {
        grades.push(t.await.expect("a grading task panicked"));
    }
    for g in &grades {
        let path = grade_file(class, &g.summary.student);
        if path.parent().is_some_and(|d| d.is_dir()) {
            let text = serde_json::to_string_pretty(g).expect("serializes") + "\n";
            std::fs::write(&path, text).map_err(|source| ClassError::Io {
                action: "write",
                path,
                source,
            })?;
        }
    }
    Ok(grades)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_and_the_counts() {
        let c = |host: &str, name: &str, status, hint: Option<&str>| {
            verify::check(host, name, status, "d", hint)
        };
        let checks = [
            c("m1", "cert etcd server", Status::Pass, None),
            c(
                "m1",
                "unit etcd",
                Status::Fail,
                Some("systemctl restart etcd"),
            ),
            c("m2", "unit etcd", Status::Fail, Some("x")),
            c("lb", "api /readyz", Status::Skip, Some("y")),
            c("m3", "cert etcd peer", Status::Warn, Some("z")),
        ];
        let s = summarize("alice", &checks, None);
        assert_eq!((s.passed, s.failed, s.warned, s.skipped), (1, 2, 1, 1));
        let f = s.first_failure.clone().unwrap();
        assert_eq!(
            (f.host.as_str(), f.check.as_str(), f.hint.as_deref()),
            ("m1", "unit etcd", Some("systemctl restart etcd"))
        );
        assert_eq!(s.verdict(), "FAIL 2/4: m1 unit etcd");
        let ok = summarize("bob", &checks[..1], None);
        assert_eq!(ok.verdict(), "PASS 1/1");
        assert_eq!(
            summarize("carol", &[], Some("the lab is down".into())).verdict(),
            "not graded: the lab is down"
        );
    }
}
