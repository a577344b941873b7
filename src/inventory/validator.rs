//! The validator's core: the problems and warnings it collects, each located in the inventory's
//! text, and what `[cluster]` yields for the other sections' rules. Below the rules
//! (`validate`, and the sections that keep their own: `addons`, `kubernetes`) and below the raw
//! shape that names those sections, so that neither climbs back to the other.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use toml_edit::Document;

use super::Problem;
use super::span::{line_col, span_of};
use crate::versions::Version;

/// Collects problems and warnings, each located in the text.
pub(crate) struct Validator<'a> {
    text: &'a str,
    doc: &'a Document<&'a str>,
    pub problems: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

/// What `[cluster]` yields; `None` where a value did not parse.
pub(super) struct ClusterParts {
    pub version: Option<Version>,
    pub service_cidr: Option<Ipv4Net>,
    pub pod_cidr: Option<Ipv4Net>,
    pub cluster_dns: Option<Ipv4Addr>,
    pub cluster_domain: String,
}

impl ClusterParts {
    /// The cluster networks that parsed, by field name: no node, LB or pool may lie inside them.
    pub(super) fn networks(&self) -> impl Iterator<Item = (&'static str, Ipv4Net)> {
        [
            ("service_cidr", self.service_cidr),
            ("pod_cidr", self.pod_cidr),
        ]
        .into_iter()
        .filter_map(|(name, net)| Some((name, net?)))
    }
}

impl<'a> Validator<'a> {
    pub fn new(text: &'a str, doc: &'a Document<&'a str>) -> Self {
        Validator {
            text,
            doc,
            problems: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub(super) fn problem(&self, field: &str, message: String) -> Problem {
        let position = span_of(self.doc, field).map(|s| line_col(self.text, s.start));
        Problem {
            field: field.to_string(),
            position,
            message,
        }
    }

    pub(super) fn error(&mut self, field: &str, message: impl Into<String>) {
        let p = self.problem(field, message.into());
        self.problems.push(p);
    }

    /// An error about `field` that the file does not have (a missing table), shown at the line
    /// of `near`, which makes it needed.
    pub(super) fn error_near(&mut self, field: &str, near: &str, message: impl Into<String>) {
        let mut p = self.problem(field, message.into());
        p.position = p
            .position
            .or_else(|| span_of(self.doc, near).map(|s| line_col(self.text, s.start)));
        self.problems.push(p);
    }

    pub(super) fn warn(&mut self, field: &str, message: impl Into<String>) {
        let p = self.problem(field, message.into());
        self.warnings.push(p);
    }
}
