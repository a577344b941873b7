//! Renewing leaf certificates in place, for `hardway certs renew`: the same subject, SANs and CA
//! as the matrix says, a new serial and a new validity, with the key the certificate had (or a
//! new one when asked). Issuing happens in memory ([`renew_leaves`]); writing
//! ([`write_renewed`]) keeps every replaced file, linked into a directory beside the PKI, so an
//! old certificate or key is moved aside, never lost.

use std::path::{Path, PathBuf};

use rcgen::{Issuer, KeyPair};
use serde::Serialize;
use time::OffsetDateTime;

use super::cert::{self, CertInfo, fmt_seconds};
use super::error::PkiError;
use super::issue::{end_of_validity, issue_leaf};
use super::matrix::{CertSpec, ca_profile, matrix};
use super::store::{exists, pair_paths, private_subdir, write_pair};
use super::{KeyedCert, Pki};
use crate::inventory::Inventory;

/// One certificate renewed: what it was and what it is now.
#[derive(Debug, Clone, Serialize)]
pub struct Renewal {
    pub name: String,
    pub old_serial: String,
    pub new_serial: String,
    pub old_not_after: String,
    pub new_not_after: String,
    /// A new key was made (`--new-keys`); otherwise the certificate keeps its key.
    pub new_key: bool,
}

/// The matrix names of every leaf the inventory calls for, in matrix order.
pub fn leaf_names(inv: &Inventory) -> Vec<String> {
    matrix(inv).into_iter().map(|s| s.name).collect()
}

/// Re-issues the leaves `names` from their CAs in `pki`, each with its own key or, with
/// `new_keys`, a new one of the inventory's algorithm. Returns `pki` with them replaced; nothing
/// is written. A name the inventory does not call for is an error listing the names it does.
pub fn renew_leaves(
    inv: &Inventory,
    pki: &Pki,
    names: &[String],
    new_keys: bool,
    now: OffsetDateTime,
) -> Result<(Pki, Vec<Renewal>), PkiError> {
    let specs: Vec<CertSpec> = matrix(inv);
    let mut out = pki.clone();
    let mut renewed = Vec::new();
    let wanted_end = end_of_validity(now, "pki.cert_validity_days", inv.pki.cert_validity_days)?;
    for name in names {
        let Some(spec) = specs.iter().find(|s| &s.name == name) else {
            return Err(PkiError::UnknownCertificate {
                name: name.clone(),
                known: specs.iter().map(|s| s.name.clone()).collect(),
            });
        };
        let (cert_path, key_path) = pair_paths(&pki.dir, name);
        let old = pki.cert(name);
        let old_info = CertInfo::parse(&old.cert_pem).map_err(PkiError::bad_pem(&cert_path))?;
        let ca = pki.ca(spec.ca);
        let ca_path = pair_paths(&pki.dir, ca_profile(spec.ca).file).0;
        let ca_info = CertInfo::parse(&ca.cert_pem).map_err(PkiError::bad_pem(&ca_path))?;
        // Nothing an expired CA signs is trusted: that needs `certs rotate-ca`, not a renewal.
        if ca_info.not_after <= now {
            return Err(PkiError::ExpiredCa {
                path: ca_path,
                expired: ca_info.not_after,
            });
        }
        let ca_key = cert::parse_key(&ca.key_pem).map_err(PkiError::bad_pem(
            &pair_paths(&pki.dir, ca_profile(spec.ca).file).1,
        ))?;
        let issuer =
            Issuer::from_ca_cert_pem(&ca.cert_pem, &ca_key).map_err(|source| PkiError::Issue {
                name: ca_profile(spec.ca).file.into(),
                source,
            })?;
        let kept = if new_keys {
            None
        } else {
            let key: KeyPair =
                cert::parse_key(&old.key_pem).map_err(PkiError::bad_pem(&key_path))?;
            Some((old.key_pem.clone(), key))
        };
        // A certificate never outlives the CA that signed it.
        let end = wanted_end.min(ca_info.not_after);
        let kc: KeyedCert = issue_leaf(spec, kept, inv.pki.algorithm, &issuer, now, end)?;
        let new_info = CertInfo::parse(&kc.cert_pem).map_err(PkiError::bad_pem(&cert_path))?;
        renewed.push(Renewal {
            name: name.clone(),
            old_serial: old_info.serial,
            new_serial: new_info.serial,
            old_not_after: fmt_seconds(old_info.not_after),
            new_not_after: fmt_seconds(new_info.not_after),
            new_key: new_keys,
        });
        out.certs.insert(name.clone(), kc);
    }
    Ok((out, renewed))
}

/// Where the files a renewal replaces are kept: `<pki>/aside/<what>-<stamp>/`.
pub fn aside_dir(dir: &Path, what: &str, stamp: &str) -> PathBuf {
    dir.join("aside").join(format!("{what}-{stamp}"))
}

/// Writes the renewed certificates of `pki` (and their keys, when new) into its directory. Each
/// file replaced is first hard-linked into `aside` under its own name, so the old bytes stay
/// (never copied through memory, never deleted); then the new file is renamed over it.
pub fn write_renewed(pki: &Pki, renewed: &[Renewal], aside: &Path) -> Result<(), PkiError> {
    for r in renewed {
        let (cert_path, key_path) = pair_paths(&pki.dir, &r.name);
        keep_aside(&pki.dir, &cert_path, aside)?;
        if r.new_key {
            keep_aside(&pki.dir, &key_path, aside)?;
        }
        let kc = pki.cert(&r.name);
        write_pair(
            (&cert_path, &kc.cert_pem),
            r.new_key.then_some((&key_path, kc.key_pem.as_str())),
        )?;
    }
    Ok(())
}

/// Links `file` (below `dir`) into `aside`, keeping its relative path; a missing file is fine.
pub(crate) fn keep_aside(dir: &Path, file: &Path, aside: &Path) -> Result<(), PkiError> {
    if !exists(file)? {
        return Ok(());
    }
    let rel = file.strip_prefix(dir).unwrap_or(file);
    let target = aside.join(rel);
    let parent = target.parent().expect("below aside");
    // Each directory below the PKI's made 0700 and never reached through a link.
    private_subdir(dir, parent.strip_prefix(dir).unwrap_or(parent))?;
    std::fs::hard_link(file, &target).map_err(PkiError::io("keep a copy of", &target))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Fixture;

    #[test]
    fn a_renewal_keeps_subject_sans_and_key_and_the_old_file_aside() {
        let f = Fixture::new();
        let names = vec!["etcd/server-m1".to_string(), "admin".to_string()];
        let later = OffsetDateTime::now_utc() + time::Duration::days(3);
        let (new, renewed) = renew_leaves(&f.inv, &f.pki, &names, false, later).unwrap();
        assert_eq!(renewed.len(), 2);
        for r in &renewed {
            let (old, now) = (
                CertInfo::parse(&f.pki.cert(&r.name).cert_pem).unwrap(),
                CertInfo::parse(&new.cert(&r.name).cert_pem).unwrap(),
            );
            assert_ne!(old.serial, now.serial);
            assert!(
                now.not_after > old.not_after,
                "{}: {} then {}",
                r.name,
                old.not_after,
                now.not_after
            );
            assert_eq!(
                (&old.cn, &old.orgs, &old.sans, &old.public_key),
                (&now.cn, &now.orgs, &now.sans, &now.public_key)
            );
            assert_eq!(new.cert(&r.name).key_pem, f.pki.cert(&r.name).key_pem);
        }
        let aside = aside_dir(&f.pki_dir(), "renew", "20261127T150340123Z");
        write_renewed(&new, &renewed, &aside).unwrap();
        let kept = std::fs::read_to_string(aside.join("etcd/server-m1.crt")).unwrap();
        assert_eq!(kept, f.pki.cert("etcd/server-m1").cert_pem);
        assert!(
            !aside.join("etcd/server-m1.key").exists(),
            "a kept key is not moved aside"
        );
        let loaded = crate::pki::load(&f.inv, &f.pki_dir()).unwrap();
        assert_eq!(loaded.cert("admin").cert_pem, new.cert("admin").cert_pem);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(aside.join("etcd"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
    }

    #[test]
    fn new_keys_move_the_old_key_aside_too() {
        let f = Fixture::new();
        let names = vec!["kube-proxy".to_string()];
        let (new, renewed) =
            renew_leaves(&f.inv, &f.pki, &names, true, OffsetDateTime::now_utc()).unwrap();
        assert_ne!(
            new.cert("kube-proxy").key_pem,
            f.pki.cert("kube-proxy").key_pem
        );
        let aside = aside_dir(&f.pki_dir(), "renew", "x");
        write_renewed(&new, &renewed, &aside).unwrap();
        assert_eq!(
            std::fs::read_to_string(aside.join("kube-proxy.key")).unwrap(),
            f.pki.cert("kube-proxy").key_pem
        );
        crate::pki::load(&f.inv, &f.pki_dir()).expect("the new pair belongs together");
    }

    #[test]
    fn an_unknown_name_lists_the_known_ones() {
        let f = Fixture::new();
        let err = renew_leaves(
            &f.inv,
            &f.pki,
            &["etcd/server-m9".into()],
            false,
            OffsetDateTime::now_utc(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("etcd/server-m9") && err.contains("etcd/server-m1"),
            "{err}"
        );
    }
}
