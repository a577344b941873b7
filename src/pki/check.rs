//! `pki check`: every certificate the inventory needs, like `kubeadm certs check-expiration`,
//! with what is wrong with each. Unlike `generate` and `load`, a bad file is a row's problem,
//! not an error: the listing is how to find out what to repair.

use std::collections::BTreeMap;
use std::path::Path;

use rcgen::KeyPair;
use time::OffsetDateTime;

use super::cert::{self, CertInfo, fmt_time};
use super::error::PkiError;
use super::matrix::{ca_profile, cas_for, matrix};
use super::store::{Stored, pair_paths, read_parsed};
use crate::inventory::Inventory;

#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckRow {
    pub name: String,
    pub subject: String,
    pub sans: Vec<String>,
    pub issuer: String,
    pub not_after: String,
    pub days_left: i64,
    /// Empty when the certificate is fine.
    pub problems: Vec<String>,
}

/// Lists every certificate the inventory needs and says what no longer matches the inventory,
/// its key or its CA. Errors only when a file cannot be read at all.
pub fn check(inv: &Inventory, dir: &Path) -> Result<Vec<CheckRow>, PkiError> {
    check_within(inv, dir, super::RENEW_BEFORE_DAYS)
}

/// [`check`], with leaves flagged when they expire within `warn_days` (CAs when they have).
pub fn check_within(
    inv: &Inventory,
    dir: &Path,
    warn_days: i64,
) -> Result<Vec<CheckRow>, PkiError> {
    super::store::check_cluster(inv, dir)?;
    let now = OffsetDateTime::now_utc();
    let mut rows = Vec::new();
    let mut ca_infos = BTreeMap::new();
    for ca in cas_for(inv) {
        let (info, mut problems) = read_row(dir, ca.file)?;
        let Some(info) = info else {
            rows.push(problem_row(ca.file, problems));
            continue;
        };
        if info.days_left(now) < 0 {
            problems.push("expired".into());
        }
        rows.push(row(ca.file, &info, vec![], now, problems));
        ca_infos.insert(ca.id, info);
    }
    for spec in matrix(inv) {
        let (info, mut file_problems) = read_row(dir, &spec.name)?;
        let Some(info) = info else {
            rows.push(problem_row(&spec.name, file_problems));
            continue;
        };
        let mut problems = match ca_infos.get(&spec.ca) {
            Some(ca) => info
                .misfits(&spec, ca)
                .into_iter()
                .chain(info.expiry_within(now, warn_days))
                .collect(),
            None => vec![format!(
                "its CA ({}) is missing or unreadable",
                ca_profile(spec.ca).file
            )],
        };
        problems.append(&mut file_problems);
        let sans = info.sans.iter().map(|s| s.to_string()).collect();
        rows.push(row(&spec.name, &info, sans, now, problems));
    }
    Ok(rows)
}

/// A pair's certificate (None when missing or unreadable) and the problems found so far: an
/// unreadable file, a missing key, a key that is not the certificate's.
fn read_row(dir: &Path, stem: &str) -> Result<(Option<CertInfo>, Vec<String>), PkiError> {
    let (cert_path, key_path) = pair_paths(dir, stem);
    let mut problems = Vec::new();
    let cert = as_problem(read_parsed(&cert_path, CertInfo::parse), &mut problems)?;
    let unreadable_cert = !problems.is_empty();
    let key: Option<Stored<KeyPair>> =
        as_problem(read_parsed(&key_path, cert::parse_key), &mut problems)?;
    let Some(cert) = cert else {
        if !unreadable_cert {
            return Ok((None, vec!["missing: run `hardway pki generate`".into()]));
        }
        return Ok((None, problems));
    };
    match key {
        Some(k) if !cert.parsed.is_for(&k.parsed) => {
            problems.push("key does not match the certificate".into())
        }
        Some(_) => {}
        None if problems.is_empty() => problems.push("key file missing".into()),
        None => {}
    }
    Ok((Some(cert.parsed), problems))
}

/// A file that does not parse becomes a problem ("PATH: what is wrong"); other errors stay errors.
fn as_problem<T>(
    r: Result<Option<T>, PkiError>,
    problems: &mut Vec<String>,
) -> Result<Option<T>, PkiError> {
    match r {
        Err(PkiError::BadPem { path, reason }) => {
            problems.push(format!("{}: {reason}", path.display()));
            Ok(None)
        }
        other => other,
    }
}

fn row(
    name: &str,
    info: &CertInfo,
    sans: Vec<String>,
    now: OffsetDateTime,
    problems: Vec<String>,
) -> CheckRow {
    let mut subject = format!("CN={}", info.cn);
    for o in &info.orgs {
        subject.push_str(&format!(",O={o}"));
    }
    CheckRow {
        name: name.into(),
        subject,
        sans,
        issuer: info.issuer_cn.clone(),
        not_after: fmt_time(info.not_after),
        days_left: info.days_left(now),
        problems,
    }
}

fn problem_row(name: &str, problems: Vec<String>) -> CheckRow {
    CheckRow {
        name: name.into(),
        subject: String::new(),
        sans: vec![],
        issuer: String::new(),
        not_after: String::new(),
        days_left: 0,
        problems,
    }
}
