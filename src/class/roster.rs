//! The students file: one name per line, `#` comments and blank lines ignored. Every name is
//! checked before anything is created, and every problem is reported at once with its line.

use std::collections::BTreeMap;
use std::path::Path;

use super::ClassError;
use crate::lab::named::name_problem;

/// One problem of a students file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterProblem {
    pub line: usize,
    pub message: String,
}

/// The names of a students file, in file order.
pub fn load(path: &Path) -> Result<Vec<String>, ClassError> {
    let text = std::fs::read_to_string(path).map_err(|source| ClassError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text).map_err(|problems| ClassError::Roster {
        path: path.to_path_buf(),
        problems,
    })
}

/// Names, or every problem: a name that cannot be a lab's (it names a cluster, a bridge and
/// prefixes host names), a name given twice, or no name at all.
pub fn parse(text: &str) -> Result<Vec<String>, Vec<RosterProblem>> {
    let mut names = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut problems = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let name = raw.split('#').next().unwrap_or("").trim();
        if name.is_empty() {
            continue;
        }
        if let Some(why) = name_problem(name) {
            problems.push(RosterProblem {
                line,
                message: format!("student {name:?} {why}"),
            });
        } else if let Some(first) = seen.get(name) {
            problems.push(RosterProblem {
                line,
                message: format!("student {name:?} is already on line {first}"),
            });
        } else {
            seen.insert(name.to_string(), line);
            names.push(name.to_string());
        }
    }
    if names.is_empty() && problems.is_empty() {
        problems.push(RosterProblem {
            line: 1,
            message: "no student in the file (one name per line)".into(),
        });
    }
    if problems.is_empty() {
        Ok(names)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_comments_and_blank_lines() {
        assert_eq!(
            parse("# class of 2026\nalice\n\n  bob  # back row\ncarol-2\n").unwrap(),
            ["alice", "bob", "carol-2"]
        );
    }

    #[test]
    fn every_problem_with_its_line() {
        let p = parse("alice\nBob Smith\nalice\nx_y\n").unwrap_err();
        let lines: Vec<usize> = p.iter().map(|p| p.line).collect();
        assert_eq!(lines, [2, 3, 4]);
        assert!(p[0].message.contains("\"Bob Smith\""), "{p:?}");
        assert!(p[1].message.contains("already on line 1"), "{p:?}");
        assert_eq!(
            parse("# nobody\n").unwrap_err()[0].message,
            "no student in the file (one name per line)"
        );
    }
}
