//! A rotation's state in the PKI directory — of a CA (`certs rotate-ca`), the service-account
//! key pair or the Secrets encryption key (`secrets rotate-…`) — and the PKI each of its steps
//! renders from. Every rotation is old and new side by side first, then the new one in use,
//! then the old one dropped; each step a rolling restart of what reads it:
//!
//! | subject | steps |
//! |---|---|
//! | a CA | 1 every trust bundle old + new; 2 the new CA signs, every leaf it signs re-issued, bundles new + old; 3 bundles new only |
//! | service-account key | 1 `sa.pub` old + new (both verify); 2 the new key signs, `sa.pub` new + old; 3 `sa.pub` new only |
//! | encryption key | 1 the new key second (decrypts); 2 the new key first (encrypts); 3 every Secret rewritten; 4 the old key dropped |
//!
//! The new material is made and written into `rotation/<name>/new.*` before anything else, the
//! state (`rotation/<name>.json`) before a step changes anything, so an interrupted run resumes
//! the step it was in. At the switch step the PKI directory takes the new material (the old one
//! linked to `rotation/<name>/old.*` and kept aside); the end moves the rotation's directory
//! aside too: nothing old is ever deleted.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::cert::CertInfo;
use super::error::PkiError;
use super::issue::{end_of_validity, issue_ca, new_encryption_key, new_key};
use super::matrix::{CaId, ca_profile, cas_for, matrix};
use super::renew::{Renewal, keep_aside, renew_leaves, write_renewed};
use super::store::{
    encryption_key_text, pair_paths, private_subdir, read_opt, write_file, write_pair,
};
use super::{ENCRYPTION_KEY_FILE, EncryptionKey, KeyedCert, Pki, SA_KEY_FILE, SA_PUB_FILE};
use crate::inventory::Inventory;

/// What a rotation replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Subject {
    Ca(CaId),
    ServiceAccount,
    Encryption,
}

/// Every subject by the name the command line and the state files use.
pub const SUBJECTS: &[(&str, Subject)] = &[
    ("cluster", Subject::Ca(CaId::Kubernetes)),
    ("etcd", Subject::Ca(CaId::Etcd)),
    ("front-proxy", Subject::Ca(CaId::FrontProxy)),
    ("service-account", Subject::ServiceAccount),
    ("encryption", Subject::Encryption),
];

const CA_STEPS: &[&str] = &[
    "trust both: every trust bundle holds the old and the new CA",
    "re-issue: the new CA signs, every certificate it signs is issued anew from it",
    "drop the old CA: every trust bundle holds the new CA only",
];
const SA_STEPS: &[&str] = &[
    "verify with both: sa.pub holds the old and the new public key",
    "sign with the new key: sa.key is the new key, sa.pub still holds both",
    "drop the old public key: tokens the old key signed are no longer accepted",
];
const ENCRYPTION_STEPS: &[&str] = &[
    "add the new key second: every API server can decrypt with it",
    "make the new key first: every API server encrypts with it",
    "rewrite every Secret with the new key (kubectl get secrets --all-namespaces -o json | kubectl replace -f -, on the first master)",
    "drop the old key: nothing is stored with it any more",
];

impl Subject {
    pub fn name(self) -> &'static str {
        SUBJECTS
            .iter()
            .find(|(_, s)| *s == self)
            .map(|(n, _)| *n)
            .expect("every subject has a name")
    }

    /// What it is, in messages: `etcd CA`, `encryption key`.
    pub fn describe(self) -> String {
        match self {
            Subject::Ca(_) => format!("{} CA", self.name()),
            _ => format!("{} key", self.name()),
        }
    }

    pub fn parse(name: &str) -> Option<Subject> {
        SUBJECTS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
    }

    /// What each step does, in order.
    pub fn steps(self) -> &'static [&'static str] {
        match self {
            Subject::Ca(_) => CA_STEPS,
            Subject::ServiceAccount => SA_STEPS,
            Subject::Encryption => ENCRYPTION_STEPS,
        }
    }

    pub fn last(self) -> u8 {
        self.steps().len() as u8
    }

    /// The step at which the PKI directory takes the new material.
    pub fn switch_step(self) -> u8 {
        match self {
            Subject::Ca(_) | Subject::ServiceAccount => 2,
            Subject::Encryption => 4,
        }
    }

    /// How long after the switch step the last step waits (unless forced): for the service
    /// account key, the lifetime of a pod's projected token (3607 s, what the kubelet asks for
    /// by default) — a kubelet replaces its pods' tokens before 80% of it has passed, so by then
    /// every such token is signed by the new key, and dropping the old one breaks no pod.
    pub fn settle_after_switch(self) -> Option<std::time::Duration> {
        (self == Subject::ServiceAccount).then(|| std::time::Duration::from_secs(3607))
    }

    /// The step after which pods must trust the new CA before any server presents a
    /// certificate of it: the cluster CA's first (pods read it as their `ca.crt`).
    pub fn pods_trust_step(self) -> Option<u8> {
        (self == Subject::Ca(CaId::Kubernetes)).then_some(1)
    }

    /// The step that rewrites every Secret through the API (the encryption key's third).
    pub fn rewrite_step(self) -> Option<u8> {
        (self == Subject::Encryption).then_some(3)
    }

    /// The files of the PKI directory holding this subject's material.
    fn files(self, dir: &Path) -> Vec<PathBuf> {
        match self {
            Subject::Ca(id) => {
                let (c, k) = pair_paths(dir, ca_profile(id).file);
                vec![c, k]
            }
            Subject::ServiceAccount => vec![dir.join(SA_PUB_FILE), dir.join(SA_KEY_FILE)],
            Subject::Encryption => vec![dir.join(ENCRYPTION_KEY_FILE)],
        }
    }
}

/// Where rotations keep their state.
const ROTATION_DIR: &str = "rotation";

/// A rotation in progress (`rotation/<name>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    pub subject: String,
    /// Steps finished.
    pub done: u8,
    /// The step started and not finished: a run resumes it.
    pub running: Option<u8>,
    /// (node, unit) the running step restarts; a resumed step restarts them again, since its
    /// files may all be in place already while some daemons still run with the old ones.
    pub restart: BTreeSet<(String, String)>,
    pub started_at: String,
    /// When the step that switches to the new material finished (RFC 3339): the service-account
    /// key's last step waits for the tokens the old key signed to be refreshed after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switched_at: Option<String>,
    /// What tells the old and the new apart without showing them: a CA's serial, the SHA-256
    /// of a public key or of an encryption key.
    pub old_id: String,
    pub new_id: String,
}

impl Rotation {
    /// The step a run does next: the one under way, or the one after the last done.
    pub fn next(&self) -> u8 {
        self.running.unwrap_or(self.done + 1)
    }
}

/// The old and the new material of a rotation, each as a pair of texts: a CA's certificate and
/// key; the service-account public key and key; an encryption key's name and base64.
#[derive(Debug, Clone)]
pub struct Pair {
    pub old: KeyedCert,
    pub new: KeyedCert,
}

fn dir_of(pki: &Path, s: Subject) -> PathBuf {
    pki.join(ROTATION_DIR).join(s.name())
}

fn state_path(pki: &Path, s: Subject) -> PathBuf {
    pki.join(ROTATION_DIR).join(format!("{}.json", s.name()))
}

/// The rotation of `s` under way in `dir`, if any.
pub fn rotation(dir: &Path, s: Subject) -> Result<Option<Rotation>, PkiError> {
    let path = state_path(dir, s);
    let Some(text) = read_opt(&path)? else {
        return Ok(None);
    };
    let r: Rotation = serde_json::from_str(&text).map_err(|e| PkiError::BadRotationState {
        path: path.clone(),
        reason: format!("not a rotation state ({e})"),
    })?;
    check_state(&path, s, &r)?;
    Ok(Some(r))
}

/// A state a run of the rotation can resume from: of this subject, fewer steps done than it
/// has (a finished rotation's state is moved aside), and the step under way, if any, the one
/// after those done.
fn check_state(path: &Path, s: Subject, r: &Rotation) -> Result<(), PkiError> {
    let bad = |field: &str, what: String| PkiError::BadRotationState {
        path: path.to_path_buf(),
        reason: format!("field `{field}` {what}"),
    };
    if r.subject != s.name() {
        return Err(bad(
            "subject",
            format!(
                "is {:?}, but this file is the {} rotation's",
                r.subject,
                s.describe()
            ),
        ));
    }
    let last = s.last();
    if r.done >= last {
        return Err(bad(
            "done",
            format!(
                "is {}, but the {} rotation has {last} steps and a finished one leaves no state here (steps done: 0 to {})",
                r.done,
                s.describe(),
                last - 1
            ),
        ));
    }
    if let Some(k) = r.running
        && k != r.done + 1
    {
        return Err(bad(
            "running",
            format!(
                "is {k}, but with {} steps done only step {} can be under way",
                r.done,
                r.done + 1
            ),
        ));
    }
    Ok(())
}

/// The names of the rotations under way in `dir`.
pub fn rotations_under_way(dir: &Path) -> Result<Vec<&'static str>, PkiError> {
    let mut out = Vec::new();
    for (name, s) in SUBJECTS {
        if rotation(dir, *s)?.is_some() {
            out.push(*name);
        }
    }
    Ok(out)
}

pub fn save(dir: &Path, s: Subject, r: &Rotation) -> Result<(), PkiError> {
    private_subdir(dir, Path::new(ROTATION_DIR))?;
    write_file(
        &state_path(dir, s),
        serde_json::to_string_pretty(r)
            .expect("serialisable")
            .as_bytes(),
        0o600,
    )
}

/// The subject's material as the PKI has it now.
fn current(pki: &Pki, s: Subject) -> KeyedCert {
    match s {
        Subject::Ca(id) => pki.ca(id).clone(),
        Subject::ServiceAccount => KeyedCert {
            cert_pem: pki.sa_pub_pem.clone(),
            key_pem: pki.sa_key_pem.clone(),
        },
        Subject::Encryption => {
            let k = &pki.encryption_keys[0];
            KeyedCert {
                cert_pem: k.name.clone(),
                key_pem: k.secret_b64.clone(),
            }
        }
    }
}

fn id_of(s: Subject, kc: &KeyedCert) -> String {
    match s {
        Subject::Ca(_) => CertInfo::parse(&kc.cert_pem)
            .map(|i| i.serial)
            .unwrap_or_default(),
        Subject::ServiceAccount => format!(
            "sha256:{}",
            crate::digest::sha256_hex(kc.cert_pem.as_bytes())
        ),
        Subject::Encryption => format!(
            "{} sha256:{}",
            kc.cert_pem,
            &crate::digest::sha256_hex(kc.key_pem.as_bytes())[..16]
        ),
    }
}

/// New material for `s`: a CA, a key pair, an encryption key under the next free name.
fn fresh(
    inv: &Inventory,
    pki: &Pki,
    s: Subject,
    now: OffsetDateTime,
) -> Result<KeyedCert, PkiError> {
    match s {
        Subject::Ca(id) => {
            let end = end_of_validity(now, "pki.ca_validity_days", inv.pki.ca_validity_days)?;
            Ok(issue_ca(ca_profile(id), inv.pki.algorithm, now, end)?.0)
        }
        Subject::ServiceAccount => {
            let key = new_key(inv.pki.algorithm, SA_KEY_FILE)?;
            Ok(KeyedCert {
                cert_pem: key.public_key_pem(),
                key_pem: key.serialize_pem(),
            })
        }
        Subject::Encryption => {
            // key1, key2, …: a name never used before (every Secret carries its key's name).
            let used: Vec<u32> = pki
                .encryption_keys
                .iter()
                .filter_map(|k| k.name.strip_prefix("key")?.parse().ok())
                .collect();
            let next = used.iter().max().map_or(2, |n| n + 1);
            Ok(KeyedCert {
                cert_pem: format!("key{next}"),
                key_pem: new_encryption_key()?,
            })
        }
    }
}

/// Starts a rotation of `s` (the new material made and written, the state at step 0), or returns
/// the one under way. With `dry_run`, the new material is made in memory only.
pub fn begin(
    inv: &Inventory,
    pki: &Pki,
    s: Subject,
    now: OffsetDateTime,
    dry_run: bool,
) -> Result<(Rotation, Pair), PkiError> {
    if let Subject::Ca(id) = s
        && !cas_for(inv).iter().any(|c| c.id == id)
    {
        return Err(PkiError::UnknownCertificate {
            name: ca_profile(id).file.into(),
            known: cas_for(inv).iter().map(|c| c.file.to_string()).collect(),
        });
    }
    if let Some(r) = rotation(&pki.dir, s)? {
        return Ok((r, pair(pki, s)?));
    }
    let old = current(pki, s);
    let new = fresh(inv, pki, s, now)?;
    let r = Rotation {
        subject: s.name().into(),
        done: 0,
        running: None,
        restart: BTreeSet::new(),
        started_at: crate::events::now_rfc3339(),
        switched_at: None,
        old_id: id_of(s, &old),
        new_id: id_of(s, &new),
    };
    if !dry_run {
        private_subdir(&pki.dir, &Path::new(ROTATION_DIR).join(s.name()))?;
        let (c, k) = pair_paths(&dir_of(&pki.dir, s), "new");
        write_pair((&c, &new.cert_pem), Some((&k, &new.key_pem)))?;
        save(&pki.dir, s, &r)?;
    }
    Ok((r, Pair { old, new }))
}

fn read_keyed(dir: &Path, stem: &str) -> Result<Option<KeyedCert>, PkiError> {
    let (c, k) = pair_paths(dir, stem);
    Ok(read_opt(&c)?
        .zip(read_opt(&k)?)
        .map(|(cert_pem, key_pem)| KeyedCert { cert_pem, key_pem }))
}

/// The old and new material of the rotation under way: the new from `rotation/<name>/new`, the
/// old from the PKI until the switch step made the new one the PKI's, then from
/// `rotation/<name>/old`.
pub fn pair(pki: &Pki, s: Subject) -> Result<Pair, PkiError> {
    let d = dir_of(&pki.dir, s);
    let missing = |stem: &str| PkiError::MissingCertificate {
        key: pair_paths(&d, stem).1,
        cert: pair_paths(&d, stem).0,
    };
    let new = read_keyed(&d, "new")?.ok_or_else(|| missing("new"))?;
    let now = current(pki, s);
    let old = if now.key_pem == new.key_pem {
        read_keyed(&d, "old")?.ok_or_else(|| missing("old"))?
    } else {
        now
    };
    Ok(Pair { old, new })
}

/// The PKI to render once `stage` steps are done: the subject's bundles, keys or key lists as
/// that stage has them. For a CA, `pki` must hold the leaves of that stage (from the new CA
/// once the switch is done).
pub fn staged(pki: &Pki, s: Subject, p: &Pair, stage: u8) -> Pki {
    let (o, n) = (&p.old, &p.new);
    // The first encrypts or signs; the other, while listed, still decrypts or verifies.
    let (first, other) = match stage {
        0 => (o, None),
        1 => (o, Some(n)),
        2 => (n, Some(o)),
        3 if s == Subject::Encryption => (n, Some(o)),
        _ => (n, None),
    };
    let mut out = pki.clone();
    match s {
        Subject::Ca(id) => {
            let cert_pem = format!(
                "{}{}",
                first.cert_pem,
                other.map_or("", |x| x.cert_pem.as_str())
            );
            out.cas.insert(
                id,
                KeyedCert {
                    cert_pem,
                    key_pem: first.key_pem.clone(),
                },
            );
        }
        Subject::ServiceAccount => {
            out.sa_pub_pem = format!(
                "{}{}",
                first.cert_pem,
                other.map_or("", |x| x.cert_pem.as_str())
            );
            out.sa_key_pem = first.key_pem.clone();
        }
        Subject::Encryption => {
            let key = |kc: &KeyedCert| EncryptionKey {
                name: kc.cert_pem.clone(),
                secret_b64: kc.key_pem.clone(),
            };
            out.encryption_keys = std::iter::once(first).chain(other).map(key).collect();
        }
    }
    out
}

/// Every file of `s`'s material made different: a render of it shows which files depend on it.
pub fn marked(inv: &Inventory, pki: &Pki, s: Subject) -> Pki {
    let mut out = pki.clone();
    match s {
        Subject::Ca(id) => {
            let names = leaves_of(inv, id);
            let kcs = out.cas.get_mut(&id).into_iter().chain(
                out.certs
                    .iter_mut()
                    .filter(|(n, _)| names.contains(n))
                    .map(|(_, kc)| kc),
            );
            for kc in kcs {
                // Inside the first certificate too: a file of that one alone (the
                // controller-manager's signing certificate) changes with it.
                kc.cert_pem = kc.cert_pem.replacen(
                    "-----BEGIN CERTIFICATE-----\n",
                    "-----BEGIN CERTIFICATE-----\n#\n",
                    1,
                );
                kc.cert_pem.push_str("#\n");
                kc.key_pem.push_str("#\n");
            }
        }
        Subject::ServiceAccount => {
            out.sa_pub_pem.push_str("#\n");
            out.sa_key_pem.push_str("#\n");
        }
        Subject::Encryption => out
            .encryption_keys
            .iter_mut()
            .for_each(|k| k.secret_b64.push('x')),
    }
    out
}

/// The names of the leaves `id` signs.
pub fn leaves_of(inv: &Inventory, id: CaId) -> Vec<String> {
    matrix(inv)
        .into_iter()
        .filter(|s| s.ca == id)
        .map(|s| s.name)
        .collect()
}

/// A CA's switch step, in memory: every leaf of `id` not yet from the new CA re-issued from it
/// with its own key. A resumed step finds what is left to do: nothing, once the switch was
/// written ([`switch_commit`]).
pub fn switch_plan(
    inv: &Inventory,
    pki: &Pki,
    id: CaId,
    p: &Pair,
    now: OffsetDateTime,
) -> Result<(Pki, Vec<Renewal>), PkiError> {
    let mut signing = pki.clone();
    signing.cas.insert(id, p.new.clone());
    let new_info = CertInfo::parse(&p.new.cert_pem).map_err(PkiError::bad_pem(
        &pair_paths(&dir_of(&pki.dir, Subject::Ca(id)), "new").0,
    ))?;
    let stale: Vec<String> = leaves_of(inv, id)
        .into_iter()
        .filter(|n| !CertInfo::parse(&pki.cert(n).cert_pem).is_ok_and(|i| i.issued_by(&new_info)))
        .collect();
    renew_leaves(inv, &signing, &stale, false, now)
}

/// Writes the switch: the old material written to `rotation/<name>/old.*` and its files kept
/// in `aside`, the new material written as the PKI's, then (a CA's) the re-issued leaves of
/// [`switch_plan`]. The material goes first: a switch interrupted after it leaves leaves that a
/// resumed [`switch_plan`] re-issues.
pub fn switch_commit(
    pki: &Pki,
    s: Subject,
    p: &Pair,
    after: &Pki,
    renewed: &[Renewal],
    aside: &Path,
) -> Result<(), PkiError> {
    if current(pki, s).key_pem != p.new.key_pem {
        let (oc, ok) = pair_paths(&dir_of(&pki.dir, s), "old");
        write_pair((&oc, &p.old.cert_pem), Some((&ok, &p.old.key_pem)))?;
        for f in s.files(&pki.dir) {
            keep_aside(&pki.dir, &f, aside)?;
        }
        match s {
            Subject::Ca(id) => {
                let (c, k) = pair_paths(&pki.dir, ca_profile(id).file);
                write_pair((&c, &p.new.cert_pem), Some((&k, &p.new.key_pem)))?;
            }
            Subject::ServiceAccount => write_pair(
                (&pki.dir.join(SA_PUB_FILE), &p.new.cert_pem),
                Some((&pki.dir.join(SA_KEY_FILE), &p.new.key_pem)),
            )?,
            Subject::Encryption => {
                let key = EncryptionKey {
                    name: p.new.cert_pem.clone(),
                    secret_b64: p.new.key_pem.clone(),
                };
                write_file(
                    &pki.dir.join(ENCRYPTION_KEY_FILE),
                    encryption_key_text(&key).as_bytes(),
                    0o600,
                )?;
            }
        }
    }
    write_renewed(after, renewed, aside)
}

/// The end of a rotation: its directory and state moved into `aside/rotation/` (the old
/// material is kept there).
pub fn finish(dir: &Path, s: Subject, aside: &Path) -> Result<(), PkiError> {
    private_subdir(
        dir,
        &aside.strip_prefix(dir).unwrap_or(aside).join(ROTATION_DIR),
    )?;
    for from in [dir_of(dir, s), state_path(dir, s)] {
        let to = aside
            .join(ROTATION_DIR)
            .join(from.file_name().expect("a name"));
        std::fs::rename(&from, &to).map_err(PkiError::io("move aside", &from))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state file edited by hand or cut short: a clear error naming the file and the field,
    /// never an overflow or an index out of bounds.
    #[test]
    fn a_corrupt_rotation_state_is_an_error_naming_the_file_and_field() {
        let t = tempfile::tempdir().unwrap();
        let s = Subject::Ca(CaId::Etcd);
        let path = state_path(t.path(), s);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let state = |done: u8, running: Option<u8>| {
            serde_json::json!({"subject": "etcd", "done": done, "running": running, "restart": [], "started_at": "x", "old_id": "a", "new_id": "b"}).to_string()
        };
        for (text, field) in [
            (state(255, None), "done"),
            (state(3, None), "done"),
            (state(0, Some(0)), "running"),
            (state(1, Some(3)), "running"),
            (state(0, Some(200)), "running"),
        ] {
            std::fs::write(&path, &text).unwrap();
            let r = std::panic::catch_unwind(|| rotation(t.path(), s).map(|r| r.map(|r| r.next())));
            let e = r
                .unwrap_or_else(|_| panic!("{text}: panicked"))
                .expect_err(&text)
                .to_string();
            assert!(
                e.contains(&path.display().to_string()) && e.contains(field),
                "{text}: {e}"
            );
        }
        // A state of another subject is not this one's.
        std::fs::write(&path, state(1, None).replace("\"etcd\"", "\"cluster\"")).unwrap();
        assert!(
            rotation(t.path(), s)
                .unwrap_err()
                .to_string()
                .contains("subject")
        );
        // A good one reads.
        std::fs::write(&path, state(1, Some(2))).unwrap();
        assert_eq!(rotation(t.path(), s).unwrap().unwrap().next(), 2);
    }
}
