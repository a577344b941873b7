//! [`generate`]: brings the PKI directory in line with the inventory. Every file is read,
//! parsed and judged first; CAs and leaves are then issued in memory; only when all of that
//! has succeeded is anything written, so a refused run leaves the directory as it was.
//!
//! A private key is never replaced without `--force`, except a leaf's whose algorithm the
//! inventory changed: a CA key without its certificate, or `sa.pub` without `sa.key`, is an
//! error that says how to proceed.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use rayon::prelude::*;
use rcgen::{Issuer, KeyPair};
use time::OffsetDateTime;

use super::cert::{CertInfo, fmt_date, key_algorithm_of};
use super::error::PkiError;
use super::issue::{end_of_validity, issue_ca, issue_leaf, new_encryption_key, new_key};
use super::matrix::{CaId, CaProfile, CertSpec, cas_for, matrix, subdirs};
use super::store::{
    Pair, Stored, encryption_key_text, ensure_private_dir, exists, pair_paths, read_encryption_key,
    read_pair, read_sa, sa_matched, write_file, write_pair,
};
use super::{
    ENCRYPTION_KEY_FILE, EncryptionKey, FIRST_ENCRYPTION_KEY_NAME, KeyedCert, Pki,
    RENEW_BEFORE_DAYS, SA_KEY_FILE, SA_PUB_FILE,
};
use crate::inventory::{Inventory, KeyAlgorithm};

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Created,
    Kept,
    Reissued(String),
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    /// (file stem, action), in matrix order.
    pub entries: Vec<(String, Action)>,
    /// Things done besides creating and re-issuing: a directory's mode fixed, a validity capped.
    pub notes: Vec<String>,
    /// Things that need a decision soon: a CA close to expiry.
    pub warnings: Vec<String>,
}

impl Report {
    pub fn changed(&self) -> usize {
        self.entries
            .iter()
            .filter(|(_, a)| *a != Action::Kept)
            .count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, action) in &self.entries {
            match action {
                Action::Created => writeln!(f, "created   {name}")?,
                Action::Kept => writeln!(f, "kept      {name}")?,
                Action::Reissued(why) => writeln!(f, "reissued  {name}: {why}")?,
            }
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        write!(
            f,
            "{} created or re-issued, {} kept",
            self.changed(),
            self.entries.len() - self.changed()
        )
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct GenerateOptions {
    /// Re-issue every CA, key and certificate. The encryption key is still kept.
    pub force: bool,
    /// Decide and issue in memory, write nothing: the report says what a real run would do,
    /// and the returned PKI is what it would leave.
    pub dry_run: bool,
    /// Refuse to create a CA, the service-account key or the encryption key (deploy's mode):
    /// only leaf certificates may be issued or re-issued.
    pub existing_trust_only: bool,
}

/// What to do with a CA, decided before anything is written.
enum CaPlan {
    Keep(Box<(Stored<CertInfo>, Stored<KeyPair>)>),
    Issue(Action),
}

/// A CA ready to sign leaves, kept or new.
struct Ca {
    kc: KeyedCert,
    key: KeyPair,
    info: CertInfo,
    action: Action,
}

/// What to do with a leaf certificate, decided before anything is written.
enum Plan {
    Keep(KeyedCert),
    /// Issue with this key (an existing one is kept), and report it as created or re-issued.
    Issue {
        key: Option<Stored<KeyPair>>,
        action: Action,
    },
}

/// A leaf after issuing. A kept key is not rewritten.
struct Leaf {
    kc: KeyedCert,
    action: Action,
    key_is_new: bool,
    /// Its validity was shortened to end with its CA's.
    capped: bool,
}

enum SaPlan {
    Keep {
        pub_pem: String,
        key_pem: String,
    },
    /// `sa.pub` is missing: derived from `sa.key`, which loses nothing.
    DerivePub(Stored<KeyPair>),
    New(Action),
}

/// Brings the PKI directory in line with the inventory and returns the loaded PKI.
pub fn generate(
    inv: &Inventory,
    dir: &Path,
    opts: GenerateOptions,
) -> Result<(Pki, Report), PkiError> {
    // Whole seconds, as certificates carry them: a leaf issued with its CA then ends exactly
    // when the CA does, and is not reported as cut short by a fraction of a second.
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("0 is a valid nanosecond");
    let ca_end = end_of_validity(now, "pki.ca_validity_days", inv.pki.ca_validity_days)?;
    let leaf_end = end_of_validity(now, "pki.cert_validity_days", inv.pki.cert_validity_days)?;
    let alg = inv.pki.algorithm;
    // Before anything is judged: another cluster's CAs would otherwise sign this one's leaves.
    super::store::check_cluster(inv, dir)?;
    let mut report = Report::default();
    let cas_wanted = cas_for(inv);
    let specs = matrix(inv);

    if opts.existing_trust_only {
        let wanted = cas_wanted
            .iter()
            .flat_map(|ca| [format!("{}.crt", ca.file), format!("{}.key", ca.file)]);
        let mut missing = Vec::new();
        for f in wanted.chain([SA_KEY_FILE.to_string(), ENCRYPTION_KEY_FILE.to_string()]) {
            if !exists(&dir.join(&f))? {
                missing.push(f);
            }
        }
        if !missing.is_empty() {
            return Err(PkiError::NoTrust {
                dir: dir.to_path_buf(),
                inventory: inv.source.clone(),
                missing,
            });
        }
    }

    // 1. CAs: read and judge, then issue the missing ones — leaves are judged against the CA
    //    that will sign them.
    let ca_plans: Vec<CaPlan> = cas_wanted
        .iter()
        .map(|ca| plan_ca(dir, ca, opts.force, now))
        .collect::<Result<_, _>>()?;
    let mut cas: BTreeMap<CaId, Ca> = cas_wanted
        .par_iter()
        .zip(ca_plans)
        .map(|(ca, plan)| Ok((ca.id, make_ca(dir, ca, plan, alg, now, ca_end)?)))
        .collect::<Result<_, PkiError>>()?;
    for ca in &cas_wanted {
        let days = cas[&ca.id].info.days_left(now);
        if days < RENEW_BEFORE_DAYS {
            report.warnings.push(format!(
                "CA {} expires in {days} days, and every certificate it signed expires with it; renewing a CA is a manual \
                 decision (`hardway pki generate --force`, then redeploy everything)",
                ca.file
            ));
        }
    }

    // 2. Leaves, the service-account pair and the encryption key: read and judge.
    let leaf_plans: Vec<Plan> = specs
        .iter()
        .map(|spec| plan_leaf(dir, spec, opts.force, alg, &cas[&spec.ca].info, now))
        .collect::<Result<_, _>>()?;
    let sa_plan = plan_sa(dir, opts.force)?;
    let enc = read_encryption_key(dir)?;

    // 3. Issue in memory, in parallel: RSA key generation is the slow part and spreads over cores.
    let issuers: BTreeMap<CaId, Issuer<'_, &KeyPair>> = cas
        .iter()
        .map(|(id, ca)| {
            let issuer = Issuer::from_ca_cert_pem(&ca.kc.cert_pem, &ca.key);
            Ok((
                *id,
                issuer.map_err(|source| PkiError::Issue {
                    name: super::matrix::ca_profile(*id).file.into(),
                    source,
                })?,
            ))
        })
        .collect::<Result<_, PkiError>>()?;
    let leaves: Vec<Leaf> = specs
        .par_iter()
        .zip(leaf_plans)
        .map(|(spec, plan)| match plan {
            Plan::Keep(kc) => Ok(Leaf {
                kc,
                action: Action::Kept,
                key_is_new: false,
                capped: false,
            }),
            Plan::Issue { key, action } => {
                // A certificate never outlives the CA that signed it.
                let end = leaf_end.min(cas[&spec.ca].info.not_after);
                let key_is_new = key.is_none();
                let kc = issue_leaf(
                    spec,
                    key.map(|k| (k.pem, k.parsed)),
                    alg,
                    &issuers[&spec.ca],
                    now,
                    end,
                )?;
                Ok(Leaf {
                    kc,
                    action,
                    key_is_new,
                    capped: end < leaf_end,
                })
            }
        })
        .collect::<Result<_, PkiError>>()?;
    for ca in &cas_wanted {
        let capped: Vec<&str> = specs
            .iter()
            .zip(&leaves)
            .filter(|(s, l)| l.capped && s.ca == ca.id)
            .map(|(s, _)| s.name.as_str())
            .collect();
        if !capped.is_empty() {
            report.notes.push(format!(
                "valid only until {}, when {} expires, not {} days (pki.cert_validity_days): {}",
                fmt_date(cas[&ca.id].info.not_after),
                ca.file,
                inv.pki.cert_validity_days,
                capped.join(", ")
            ));
        }
    }
    let (sa_pub_pem, sa_key_pem, sa_action, sa_key_is_new) = match sa_plan {
        SaPlan::Keep { pub_pem, key_pem } => (pub_pem, key_pem, Action::Kept, false),
        SaPlan::DerivePub(key) => (
            key.parsed.public_key_pem(),
            key.pem,
            Action::Reissued("created sa.pub from sa.key".into()),
            false,
        ),
        SaPlan::New(action) => {
            let key = new_key(alg, SA_KEY_FILE)?;
            (key.public_key_pem(), key.serialize_pem(), action, true)
        }
    };
    let (enc_key, enc_action) = match enc {
        Some(e) => (e, Action::Kept),
        None => (
            EncryptionKey {
                name: FIRST_ENCRYPTION_KEY_NAME.into(),
                secret_b64: new_encryption_key()?,
            },
            Action::Created,
        ),
    };

    // 4. Write: the directories (0700), then what changed, each file atomically.
    let write = !opts.dry_run;
    let files = cas_wanted
        .iter()
        .map(|c| c.file)
        .chain(specs.iter().map(|s| s.name.as_str()));
    for d in
        std::iter::once(dir.to_path_buf()).chain(subdirs(files).into_iter().map(|s| dir.join(s)))
    {
        if write {
            report.notes.extend(ensure_private_dir(&d)?);
        }
    }
    let mut ca_pairs = BTreeMap::new();
    for ca in &cas_wanted {
        let c = cas.remove(&ca.id).expect("every wanted CA was made");
        if write && c.action != Action::Kept {
            write_keyed(dir, ca.file, &c.kc, true)?;
        }
        report.entries.push((ca.file.to_string(), c.action));
        ca_pairs.insert(ca.id, c.kc);
    }
    let mut certs = BTreeMap::new();
    for (spec, leaf) in specs.into_iter().zip(leaves) {
        if write && leaf.action != Action::Kept {
            write_keyed(dir, &spec.name, &leaf.kc, leaf.key_is_new)?;
        }
        report.entries.push((spec.name.clone(), leaf.action));
        certs.insert(spec.name, leaf.kc);
    }
    if write && sa_action != Action::Kept {
        let key = dir.join(SA_KEY_FILE);
        write_pair(
            (&dir.join(SA_PUB_FILE), &sa_pub_pem),
            sa_key_is_new.then_some((&key, sa_key_pem.as_str())),
        )?;
    }
    report.entries.push(("sa".into(), sa_action));
    if write && enc_action != Action::Kept {
        write_file(
            &dir.join(ENCRYPTION_KEY_FILE),
            encryption_key_text(&enc_key).as_bytes(),
            0o600,
        )?;
    }
    report
        .entries
        .push((ENCRYPTION_KEY_FILE.into(), enc_action));
    // Which cluster this directory is for, from now on (also for one made before it was kept).
    if write && super::store::read_opt(&dir.join(super::store::CLUSTER_FILE))?.is_none() {
        write_file(
            &dir.join(super::store::CLUSTER_FILE),
            format!("{}\n", inv.cluster.name).as_bytes(),
            0o600,
        )?;
    }

    let pki = Pki {
        dir: dir.to_path_buf(),
        cas: ca_pairs,
        certs,
        sa_key_pem,
        sa_pub_pem,
        encryption_key_b64: enc_key.secret_b64.clone(),
        encryption_keys: vec![enc_key],
    };
    Ok((pki, report))
}

/// `NAME.crt`, and `NAME.key` when it is new (a kept key is not rewritten).
fn write_keyed(dir: &Path, stem: &str, kc: &KeyedCert, key_is_new: bool) -> Result<(), PkiError> {
    let (cert, key) = pair_paths(dir, stem);
    write_pair(
        (&cert, &kc.cert_pem),
        key_is_new.then_some((&key, kc.key_pem.as_str())),
    )
}

/// `--force` is the reason only for what existed; anything else is simply created.
fn forced(dir: &Path, files: &[&str]) -> Result<Action, PkiError> {
    for f in files {
        if exists(&dir.join(f))? {
            return Ok(Action::Reissued("--force".into()));
        }
    }
    Ok(Action::Created)
}

fn plan_ca(
    dir: &Path,
    ca: &CaProfile,
    force: bool,
    now: OffsetDateTime,
) -> Result<CaPlan, PkiError> {
    if force {
        return Ok(CaPlan::Issue(forced(
            dir,
            &[&format!("{}.crt", ca.file), &format!("{}.key", ca.file)],
        )?));
    }
    let Pair {
        cert_path,
        key_path,
        cert,
        key,
    } = read_pair(dir, ca.file)?.checked()?;
    match (cert, key) {
        (Some(cert), Some(key)) => {
            // Issuing from an expired CA is pointless: nothing would trust what it signs.
            if cert.parsed.not_after <= now {
                return Err(PkiError::ExpiredCa {
                    path: cert.path,
                    expired: cert.parsed.not_after,
                });
            }
            Ok(CaPlan::Keep(Box::new((cert, key))))
        }
        (Some(_), None) => Err(PkiError::MissingKey {
            cert: cert_path,
            key: key_path,
        }),
        (None, Some(_)) => Err(PkiError::MissingCertificate {
            key: key_path,
            cert: cert_path,
        }),
        (None, None) => Ok(CaPlan::Issue(Action::Created)),
    }
}

fn make_ca(
    dir: &Path,
    ca: &CaProfile,
    plan: CaPlan,
    alg: KeyAlgorithm,
    now: OffsetDateTime,
    end: OffsetDateTime,
) -> Result<Ca, PkiError> {
    match plan {
        CaPlan::Keep(kept) => {
            let (cert, key) = *kept;
            Ok(Ca {
                kc: KeyedCert {
                    cert_pem: cert.pem,
                    key_pem: key.pem,
                },
                key: key.parsed,
                info: cert.parsed,
                action: Action::Kept,
            })
        }
        CaPlan::Issue(action) => {
            let (kc, key) = issue_ca(ca, alg, now, end)?;
            let info = CertInfo::parse(&kc.cert_pem).map_err(|m| PkiError::BadPem {
                path: pair_paths(dir, ca.file).0,
                reason: format!("hardway issued a certificate it cannot read back ({m})"),
            })?;
            Ok(Ca {
                kc,
                key,
                info,
                action,
            })
        }
    }
}

fn key_alg(key: &Stored<KeyPair>) -> Result<KeyAlgorithm, PkiError> {
    key_algorithm_of(&key.parsed).map_err(PkiError::bad_pem(&key.path))
}

fn plan_leaf(
    dir: &Path,
    spec: &CertSpec,
    force: bool,
    alg: KeyAlgorithm,
    ca: &CertInfo,
    now: OffsetDateTime,
) -> Result<Plan, PkiError> {
    if force {
        let action = forced(
            dir,
            &[&format!("{}.crt", spec.name), &format!("{}.key", spec.name)],
        )?;
        return Ok(Plan::Issue { key: None, action });
    }
    let Pair { cert, key, .. } = read_pair(dir, &spec.name)?;
    let Some(cert) = cert else {
        // An existing key gets its certificate, if it is of the algorithm the inventory asks for.
        let key = match key {
            Some(k) if key_alg(&k)? == alg => Some(k),
            _ => None,
        };
        return Ok(Plan::Issue {
            key,
            action: Action::Created,
        });
    };
    let Some(key) = key else {
        return Ok(Plan::Issue {
            key: None,
            action: Action::Reissued("its key file was missing".into()),
        });
    };
    let key_alg = key_alg(&key)?;
    if key_alg != alg {
        let why = format!(
            "key is {}, inventory asks for {}",
            key_alg.as_str(),
            alg.as_str()
        );
        return Ok(Plan::Issue {
            key: None,
            action: Action::Reissued(why),
        });
    }
    if !cert.parsed.is_for(&key.parsed) {
        return Ok(Plan::Issue {
            key: Some(key),
            action: Action::Reissued("key does not match the certificate".into()),
        });
    }
    let mut why = cert.parsed.misfits(spec, ca);
    // Close to expiry, re-issuing helps only when the CA outlives the certificate: one that
    // already ends with its CA would be re-issued, unchanged, on every run.
    if cert.parsed.not_after < ca.not_after {
        why.extend(cert.parsed.expiry_problem(now));
    }
    Ok(if why.is_empty() {
        Plan::Keep(KeyedCert {
            cert_pem: cert.pem,
            key_pem: key.pem,
        })
    } else {
        Plan::Issue {
            key: Some(key),
            action: Action::Reissued(why.join("; ")),
        }
    })
}

fn plan_sa(dir: &Path, force: bool) -> Result<SaPlan, PkiError> {
    if force {
        return Ok(SaPlan::New(forced(dir, &[SA_KEY_FILE, SA_PUB_FILE])?));
    }
    match read_sa(dir)? {
        (Some(p), Some(k)) => {
            sa_matched(&p, &k)?;
            Ok(SaPlan::Keep {
                pub_pem: p.pem,
                key_pem: k.pem,
            })
        }
        (None, Some(k)) => Ok(SaPlan::DerivePub(k)),
        // Tokens are verified with sa.pub: a new key would invalidate every one already issued.
        (Some(p), None) => Err(PkiError::MissingKey {
            cert: p.path,
            key: dir.join(SA_KEY_FILE),
        }),
        (None, None) => Ok(SaPlan::New(Action::Created)),
    }
}
