//! A CA rotation's state in the PKI directory, for `hardway certs rotate-ca`: the new CA, the
//! old one once it no longer signs, which step is done or under way, and the PKI each step
//! renders from. Three steps, each one a rolling restart of everything that reads the CA:
//!
//! 1. **trust both**: a new CA is made (`rotation/<ca>/new.{crt,key}`); every trust bundle
//!    holds old + new, leaves are unchanged (still from the old CA, which still signs);
//! 2. **re-issue**: the new CA becomes the PKI's (the old one linked to `rotation/<ca>/old.*`
//!    and kept aside), every leaf it signs is re-issued from it with its own key; bundles hold
//!    new + old (the signing CA first: the controller-manager signs with the first);
//! 3. **drop the old**: bundles hold the new CA only; the rotation's directory is moved into
//!    `aside/` (the old CA is kept, never deleted).
//!
//! The state is written before a step changes anything, so an interrupted step resumes; each
//! change of the PKI directory is idempotent (step 2's switch looks at what is done already).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::cert::CertInfo;
use super::error::PkiError;
use super::issue::{end_of_validity, issue_ca};
use super::matrix::{CaId, ca_profile, cas_for, matrix};
use super::renew::{Renewal, keep_aside, renew_leaves, write_renewed};
use super::store::{ensure_private_dir, exists, pair_paths, read_opt, write_file, write_pair};
use super::{KeyedCert, Pki};
use crate::inventory::Inventory;
use crate::plan::sha256_hex;

/// The CAs by the names the command line uses.
pub const CA_NAMES: &[(&str, CaId)] = &[("cluster", CaId::Kubernetes), ("etcd", CaId::Etcd), ("front-proxy", CaId::FrontProxy)];

pub fn ca_name(id: CaId) -> &'static str {
    CA_NAMES.iter().find(|(_, c)| *c == id).map(|(n, _)| *n).expect("every CA has a name")
}

/// Where a rotation keeps its state.
const ROTATION_DIR: &str = "rotation";

/// What the three steps do, for plans and reports.
pub const STEPS: [&str; 3] = [
    "trust both: every trust bundle holds the old and the new CA",
    "re-issue: every certificate the CA signs is issued anew from the new CA",
    "drop the old CA: every trust bundle holds the new CA only",
];

/// A rotation in progress (`rotation/<ca>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    pub ca: String,
    /// Steps finished, 0 to 3.
    pub done: u8,
    /// The step started and not finished: a run resumes it.
    pub running: Option<u8>,
    /// (node, unit) the running step restarts; a resumed step restarts them again, since its
    /// files may all be in place already while some daemons still run with the old ones.
    pub restart: BTreeSet<(String, String)>,
    pub started_at: String,
    pub old_serial: String,
    pub new_serial: String,
}

impl Rotation {
    /// The step a run does next: the one under way, or the one after the last done.
    pub fn next(&self) -> u8 {
        self.running.unwrap_or(self.done + 1)
    }
}

/// The two CAs of a rotation.
#[derive(Debug, Clone)]
pub struct Cas {
    pub old: KeyedCert,
    pub new: KeyedCert,
}

fn dir_of(pki: &Path, id: CaId) -> PathBuf {
    pki.join(ROTATION_DIR).join(ca_name(id))
}

fn state_path(pki: &Path, id: CaId) -> PathBuf {
    pki.join(ROTATION_DIR).join(format!("{}.json", ca_name(id)))
}

/// The rotation of `id` under way in `dir`, if any.
pub fn rotation(dir: &Path, id: CaId) -> Result<Option<Rotation>, PkiError> {
    let path = state_path(dir, id);
    let Some(text) = read_opt(&path)? else { return Ok(None) };
    serde_json::from_str(&text).map(Some).map_err(|e| PkiError::BadPem { path, reason: format!("not a rotation state ({e})") })
}

/// The CAs with a rotation under way in `dir`.
pub fn rotations_under_way(dir: &Path) -> Result<Vec<&'static str>, PkiError> {
    let mut out = Vec::new();
    for (name, id) in CA_NAMES {
        if rotation(dir, *id)?.is_some() {
            out.push(*name);
        }
    }
    Ok(out)
}

pub fn save(dir: &Path, id: CaId, r: &Rotation) -> Result<(), PkiError> {
    ensure_private_dir(&dir.join(ROTATION_DIR))?;
    write_file(&state_path(dir, id), serde_json::to_string_pretty(r).expect("serialisable").as_bytes(), 0o600)
}

fn read_keyed(dir: &Path, stem: &str) -> Result<Option<KeyedCert>, PkiError> {
    let (c, k) = pair_paths(dir, stem);
    Ok(match (read_opt(&c)?, read_opt(&k)?) {
        (Some(cert_pem), Some(key_pem)) => {
            let info = CertInfo::parse(&cert_pem).map_err(PkiError::bad_pem(&c))?;
            if !info.matches_key(&key_pem).map_err(PkiError::bad_pem(&k))? {
                return Err(PkiError::KeyMismatch { cert: c, key: k });
            }
            Some(KeyedCert { cert_pem, key_pem })
        }
        _ => None,
    })
}

fn serial(kc: &KeyedCert) -> String {
    CertInfo::parse(&kc.cert_pem).map(|i| i.serial).unwrap_or_default()
}

/// Starts a rotation of `id` (the new CA made and written, the state at step 0), or returns
/// the one under way. With `dry_run`, the new CA is made in memory only.
pub fn begin(inv: &Inventory, pki: &Pki, id: CaId, now: OffsetDateTime, dry_run: bool) -> Result<(Rotation, Cas), PkiError> {
    if !cas_for(inv).iter().any(|c| c.id == id) {
        return Err(PkiError::UnknownCertificate { name: ca_profile(id).file.into(), known: cas_for(inv).iter().map(|c| c.file.to_string()).collect() });
    }
    if let Some(r) = rotation(&pki.dir, id)? {
        return Ok((r, cas(pki, id)?));
    }
    let old = pki.ca(id).clone();
    let end = end_of_validity(now, "pki.ca_validity_days", inv.pki.ca_validity_days)?;
    let (new, _) = issue_ca(ca_profile(id), inv.pki.algorithm, now, end)?;
    let r = Rotation {
        ca: ca_name(id).into(),
        done: 0,
        running: None,
        restart: BTreeSet::new(),
        started_at: crate::events::now_rfc3339(),
        old_serial: serial(&old),
        new_serial: serial(&new),
    };
    if !dry_run {
        let d = dir_of(&pki.dir, id);
        ensure_private_dir(&pki.dir.join(ROTATION_DIR))?;
        ensure_private_dir(&d)?;
        let (c, k) = pair_paths(&d, "new");
        write_pair((&c, &new.cert_pem), Some((&k, &new.key_pem)))?;
        save(&pki.dir, id, &r)?;
    }
    Ok((r, Cas { old, new }))
}

/// The old and new CA of the rotation under way: the new one from `rotation/<ca>/new`, the
/// old one from the PKI until step 2 made the new one the PKI's, then from `rotation/<ca>/old`.
pub fn cas(pki: &Pki, id: CaId) -> Result<Cas, PkiError> {
    let d = dir_of(&pki.dir, id);
    let missing = |stem: &str| PkiError::MissingCertificate { key: pair_paths(&d, stem).1, cert: pair_paths(&d, stem).0 };
    let new = read_keyed(&d, "new")?.ok_or_else(|| missing("new"))?;
    let current = pki.ca(id).clone();
    let old = if current.cert_pem == new.cert_pem { read_keyed(&d, "old")?.ok_or_else(|| missing("old"))? } else { current };
    Ok(Cas { old, new })
}

/// The PKI to render once `stage` steps are done: each trust bundle and CA key as that stage
/// has them. `pki` must hold the leaves of that stage (from the new CA from stage 2 on).
pub fn staged(pki: &Pki, id: CaId, cas: &Cas, stage: u8) -> Pki {
    let mut out = pki.clone();
    let kc = match stage {
        0 => cas.old.clone(),
        1 => KeyedCert { cert_pem: format!("{}{}", cas.old.cert_pem, cas.new.cert_pem), key_pem: cas.old.key_pem.clone() },
        2 => KeyedCert { cert_pem: format!("{}{}", cas.new.cert_pem, cas.old.cert_pem), key_pem: cas.new.key_pem.clone() },
        _ => cas.new.clone(),
    };
    out.cas.insert(id, kc);
    out
}

/// The SHA-256 of every version of the CA's files a rotation places: what deploy's preflight
/// may replace on the nodes while it runs (and nothing of another PKI).
pub fn replaceable(cas: &Cas) -> BTreeSet<String> {
    let (o, n) = (&cas.old, &cas.new);
    [o.cert_pem.clone(), format!("{}{}", o.cert_pem, n.cert_pem), format!("{}{}", n.cert_pem, o.cert_pem), n.cert_pem.clone(), o.key_pem.clone(), n.key_pem.clone()]
        .iter()
        .map(|s| sha256_hex(s.as_bytes()))
        .collect()
}

/// The names of the leaves `id` signs.
pub fn leaves_of(inv: &Inventory, id: CaId) -> Vec<String> {
    matrix(inv).into_iter().filter(|s| s.ca == id).map(|s| s.name).collect()
}

/// Step 2's change of the PKI, in memory: every leaf of `id` not yet from the new CA re-issued
/// from it with its own key. Nothing is written ([`switch_commit`] does). A resumed step finds
/// what is left to do: nothing, once the switch was written.
pub fn switch_plan(inv: &Inventory, pki: &Pki, id: CaId, cas: &Cas, now: OffsetDateTime) -> Result<(Pki, Vec<Renewal>), PkiError> {
    let mut signing = pki.clone();
    signing.cas.insert(id, cas.new.clone());
    let new_info = CertInfo::parse(&cas.new.cert_pem).map_err(PkiError::bad_pem(&pair_paths(&dir_of(&pki.dir, id), "new").0))?;
    let stale: Vec<String> = leaves_of(inv, id)
        .into_iter()
        .filter(|n| !CertInfo::parse(&pki.cert(n).cert_pem).is_ok_and(|i| i.issued_by(&new_info)))
        .collect();
    renew_leaves(inv, &signing, &stale, false, now)
}

/// Writes step 2's switch: the old CA linked to `rotation/<ca>/old.*` and kept in `aside`, the
/// new CA written as the PKI's, then the re-issued leaves of [`switch_plan`] (the replaced
/// ones kept in `aside`). The CA goes first: a switch interrupted after it leaves leaves that
/// a resumed [`switch_plan`] re-issues.
pub fn switch_commit(pki: &Pki, id: CaId, cas: &Cas, after: &Pki, renewed: &[Renewal], aside: &Path) -> Result<(), PkiError> {
    if pki.ca(id).cert_pem != cas.new.cert_pem {
        let file = ca_profile(id).file;
        let (c, k) = pair_paths(&pki.dir, file);
        let (oc, ok) = pair_paths(&dir_of(&pki.dir, id), "old");
        for (from, to) in [(&c, &oc), (&k, &ok)] {
            if !exists(to)? {
                std::fs::hard_link(from, to).map_err(PkiError::io("keep a copy of", to))?;
            }
        }
        keep_aside(&pki.dir, &c, aside)?;
        keep_aside(&pki.dir, &k, aside)?;
        write_pair((&c, &cas.new.cert_pem), Some((&k, &cas.new.key_pem)))?;
    }
    write_renewed(after, renewed, aside)
}

/// The end of a rotation: its directory and state moved into `aside/rotation/` (the old CA is
/// kept there).
pub fn finish(dir: &Path, id: CaId, aside: &Path) -> Result<(), PkiError> {
    for d in [dir.join("aside"), aside.to_path_buf(), aside.join(ROTATION_DIR)] {
        ensure_private_dir(&d)?;
    }
    for from in [dir_of(dir, id), state_path(dir, id)] {
        let to = aside.join(ROTATION_DIR).join(from.file_name().expect("a name"));
        std::fs::rename(&from, &to).map_err(PkiError::io("move aside", &from))?;
    }
    Ok(())
}
