//! The PKI directory on disk. Reading parses every file (a certificate with x509-parser, a key
//! with rcgen) so that a corrupt one is an error naming it, never bytes passed on to `render`;
//! [`load`] also checks that every pair belongs together. Writing keeps keys private: the
//! directories are 0700, and every file goes through a fresh temp file that has its final mode
//! before the first byte is written, then is renamed into place.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::KeyPair;

use super::cert::{self, CertInfo, Malformed};
use super::error::PkiError;
use super::matrix::{cas_for, matrix};
use super::{
    ENCRYPTION_KEY_FILE, EncryptionKey, FIRST_ENCRYPTION_KEY_NAME, KeyedCert, Pki, SA_KEY_FILE,
    SA_PUB_FILE,
};
use crate::inventory::Inventory;

/// A file as read: its path (for messages), its text, and what it parsed to.
pub(crate) struct Stored<T> {
    pub path: PathBuf,
    pub pem: String,
    pub parsed: T,
}

/// A certificate file and its key file, each read and parsed if it exists.
pub(crate) struct Pair {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub cert: Option<Stored<CertInfo>>,
    pub key: Option<Stored<KeyPair>>,
}

impl Pair {
    /// The pair, unless both files exist and do not belong together: that is an error naming both.
    pub fn checked(self) -> Result<Pair, PkiError> {
        match (&self.cert, &self.key) {
            (Some(c), Some(k)) if !c.parsed.is_for(&k.parsed) => Err(PkiError::KeyMismatch {
                cert: self.cert_path,
                key: self.key_path,
            }),
            _ => Ok(self),
        }
    }
}

pub(crate) fn read_opt(path: &Path) -> Result<Option<String>, PkiError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PkiError::io("read", path)(e)),
    }
}

pub(crate) fn exists(path: &Path) -> Result<bool, PkiError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(PkiError::io("look at", path)(e)),
    }
}

/// Reads `path` if it exists and parses it; a parse failure is a [`PkiError::BadPem`] naming it.
pub(crate) fn read_parsed<T>(
    path: &Path,
    parse: impl Fn(&str) -> Result<T, Malformed>,
) -> Result<Option<Stored<T>>, PkiError> {
    let Some(pem) = read_opt(path)? else {
        return Ok(None);
    };
    let parsed = parse(&pem).map_err(PkiError::bad_pem(path))?;
    Ok(Some(Stored {
        path: path.to_path_buf(),
        pem,
        parsed,
    }))
}

/// `NAME.crt` and `NAME.key` below `dir`.
pub(crate) fn pair_paths(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    )
}

pub(crate) fn read_pair(dir: &Path, stem: &str) -> Result<Pair, PkiError> {
    let (cert_path, key_path) = pair_paths(dir, stem);
    let cert = read_parsed(&cert_path, CertInfo::parse)?;
    let key = read_parsed(&key_path, cert::parse_key)?;
    Ok(Pair {
        cert_path,
        key_path,
        cert,
        key,
    })
}

/// `sa.pub` (as SubjectPublicKeyInfo DER) and `sa.key`, each if it exists.
pub(crate) type SaFiles = (Option<Stored<Vec<u8>>>, Option<Stored<KeyPair>>);

pub(crate) fn read_sa(dir: &Path) -> Result<SaFiles, PkiError> {
    Ok((
        read_parsed(&dir.join(SA_PUB_FILE), cert::parse_public_key)?,
        read_parsed(&dir.join(SA_KEY_FILE), cert::parse_key)?,
    ))
}

/// `sa.pub` must be the public half of `sa.key`: the API server verifies with one the tokens
/// signed with the other.
pub(crate) fn sa_matched(pubkey: &Stored<Vec<u8>>, key: &Stored<KeyPair>) -> Result<(), PkiError> {
    if cert::public_key_matches(&pubkey.parsed, &key.parsed) {
        Ok(())
    } else {
        Err(PkiError::KeyMismatch {
            cert: pubkey.path.clone(),
            key: key.path.clone(),
        })
    }
}

/// The encryption key (its base64, checked to be 32 bytes) and its name, if the file exists.
pub(crate) fn read_encryption_key(dir: &Path) -> Result<Option<EncryptionKey>, PkiError> {
    let path = dir.join(ENCRYPTION_KEY_FILE);
    let Some(text) = read_opt(&path)? else {
        return Ok(None);
    };
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let b64 = lines.next().unwrap_or_default().to_string();
    let name = match lines.next() {
        None => FIRST_ENCRYPTION_KEY_NAME.to_string(),
        Some(l) => match l.strip_prefix("name:").map(str::trim) {
            Some(n) if valid_key_name(n) => n.to_string(),
            _ => {
                let reason = format!(
                    "the line after the key must be `name: NAME` (letters, digits and -, at most 32), not {l:?}"
                );
                return Err(PkiError::BadEncryptionKey { path, reason });
            }
        },
    };
    let reason = match base64::engine::general_purpose::STANDARD.decode(&b64) {
        Ok(raw) if raw.len() == 32 => {
            return Ok(Some(EncryptionKey {
                name,
                secret_b64: b64,
            }));
        }
        Ok(raw) => format!("the key is {} bytes; aescbc needs exactly 32", raw.len()),
        Err(e) => format!("not valid base64 ({e})"),
    };
    Err(PkiError::BadEncryptionKey { path, reason })
}

/// A key name that goes into the EncryptionConfiguration's YAML as it is.
pub(crate) fn valid_key_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 32 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// `encryption.key`'s text for `key`: the base64, then its name unless it is the first name.
pub(crate) fn encryption_key_text(key: &EncryptionKey) -> String {
    if key.name == FIRST_ENCRYPTION_KEY_NAME {
        format!("{}\n", key.secret_b64)
    } else {
        format!("{}\nname: {}\n", key.secret_b64, key.name)
    }
}

/// The file that records which cluster a PKI directory belongs to (its name, one line).
pub const CLUSTER_FILE: &str = "cluster";

/// Where a cluster's PKI is when no `--pki` (or `--out`) names it, so that two clusters never
/// share one by default:
/// 1. `pki/` beside the inventory, if it was made for this cluster (a named lab keeps its own
///    there: `labs/NAME/pki`);
/// 2. `./pki`, if it was made for this cluster, or holds a CA and no `cluster` file (made before
///    hardway recorded it: the old default);
/// 3. otherwise `./pki/<cluster>`: the cluster's own.
pub fn default_dir(inv: &Inventory) -> std::path::PathBuf {
    let made_for = |dir: &Path| {
        read_opt(&dir.join(CLUSTER_FILE))
            .ok()
            .flatten()
            .map(|t| t.trim().to_string())
    };
    let beside = inv.source.parent().unwrap_or(Path::new("")).join("pki");
    if made_for(&beside).as_deref() == Some(inv.cluster.name.as_str()) {
        return beside;
    }
    let here = std::path::PathBuf::from("pki");
    match made_for(&here) {
        Some(name) if name == inv.cluster.name => here,
        None if here.join("ca.crt").is_file() => here,
        _ => here.join(&inv.cluster.name),
    }
}

/// Refuses a PKI directory made for another cluster. A directory without the file (made before
/// hardway recorded it, or not made yet) is taken as it is.
pub fn check_cluster(inv: &Inventory, dir: &Path) -> Result<(), PkiError> {
    let Some(text) = read_opt(&dir.join(CLUSTER_FILE))? else {
        return Ok(());
    };
    let made_for = text.trim();
    if made_for == inv.cluster.name {
        return Ok(());
    }
    Err(PkiError::OtherCluster {
        dir: dir.to_path_buf(),
        inventory: inv.source.clone(),
        made_for: made_for.to_string(),
        cluster: inv.cluster.name.clone(),
    })
}

/// Reads an existing PKI for the inventory: every file parsed, every pair checked to belong
/// together; fails naming a bad file, or listing the missing ones, or that it is another
/// cluster's.
pub fn load(inv: &Inventory, dir: &Path) -> Result<Pki, PkiError> {
    check_cluster(inv, dir)?;
    let mut missing = Vec::new();
    let mut read = |stem: &str| -> Result<Option<KeyedCert>, PkiError> {
        match read_pair(dir, stem)?.checked()? {
            Pair {
                cert: Some(c),
                key: Some(k),
                ..
            } => Ok(Some(KeyedCert {
                cert_pem: c.pem,
                key_pem: k.pem,
            })),
            _ => {
                missing.push(stem.to_string());
                Ok(None)
            }
        }
    };
    let mut cas = BTreeMap::new();
    for ca in cas_for(inv) {
        if let Some(kc) = read(ca.file)? {
            cas.insert(ca.id, kc);
        }
    }
    let mut certs = BTreeMap::new();
    for spec in matrix(inv) {
        if let Some(kc) = read(&spec.name)? {
            certs.insert(spec.name, kc);
        }
    }
    let sa = match read_sa(dir)? {
        (Some(p), Some(k)) => sa_matched(&p, &k).map(|()| Some((p.pem, k.pem)))?,
        _ => None,
    };
    let enc = read_encryption_key(dir)?;
    if sa.is_none() {
        missing.push("sa".into());
    }
    if enc.is_none() {
        missing.push(ENCRYPTION_KEY_FILE.into());
    }
    let (Some((sa_pub_pem, sa_key_pem)), Some(encryption_key), true) =
        (sa, enc, missing.is_empty())
    else {
        return Err(PkiError::Incomplete {
            dir: dir.to_path_buf(),
            inventory: inv.source.clone(),
            missing,
        });
    };
    Ok(Pki {
        dir: dir.to_path_buf(),
        cas,
        certs,
        sa_key_pem,
        sa_pub_pem,
        encryption_key_b64: encryption_key.secret_b64.clone(),
        encryption_keys: vec![encryption_key],
    })
}

// ---------------------------------------------------------------------------------------------
// Writing.

/// Creates `dir` with mode 0700, or sets 0700 on an existing one with another mode: it holds
/// private keys. Returns a note for the report when an existing directory's mode was changed.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<Option<String>, PkiError> {
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err(PkiError::io("use as a directory", dir)(
            std::io::Error::from(std::io::ErrorKind::NotADirectory),
        )),
        Ok(m) if m.permissions().mode() & 0o7777 == 0o700 => Ok(None),
        Ok(m) => {
            let was = m.permissions().mode() & 0o7777;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(PkiError::io("set the mode of", dir))?;
            Ok(Some(format!(
                "{} was mode {was:04o}; set it to 0700 (it holds private keys)",
                dir.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(PkiError::io("create", dir))?;
            // The mode given to mkdir() is filtered by the umask.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(PkiError::io("set the mode of", dir))?;
            Ok(None)
        }
        Err(e) => Err(PkiError::io("look at", dir)(e)),
    }
}

/// `rel` below the PKI directory `dir` (rotation and aside directories): each directory of it
/// created 0700 (an existing one set to 0700), this user's, and never reached through a link.
pub(crate) fn private_subdir(dir: &Path, rel: &Path) -> Result<(), PkiError> {
    if rel.is_absolute() {
        return ensure_private_dir(rel).map(drop);
    }
    crate::safe_fs::private_dir(dir, rel)?;
    Ok(())
}

/// Writes a public file (a certificate, `sa.pub`) and, when given, its private key. Both are
/// staged in temp files before either is renamed into place, so an interruption leaves the old
/// pair, or (between the two renames) a new key with the old public half: a mismatch that
/// `load`, `check` and `generate` name.
pub(crate) fn write_pair(
    public: (&Path, &str),
    private: Option<(&Path, &str)>,
) -> Result<(), PkiError> {
    let public_tmp = stage(public.0, public.1.as_bytes(), 0o644)?;
    if let Some((key, pem)) = private {
        let key_tmp = stage(key, pem.as_bytes(), 0o600).inspect_err(|_| {
            let _ = std::fs::remove_file(&public_tmp);
        })?;
        commit(&key_tmp, key)?;
    }
    commit(&public_tmp, public.0)
}

/// Writes through a temporary file created with its final mode, then renames: a reader never
/// sees half a key, and a key is never readable by others, not even for a moment.
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), PkiError> {
    let tmp = stage(path, data, mode)?;
    commit(&tmp, path)
}

/// Writes `data` to a new `.NAME.tmp` beside `path` and returns its path.
fn stage(path: &Path, data: &[u8], mode: u32) -> Result<PathBuf, PkiError> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !exists(parent)? {
        ensure_private_dir(parent)?;
    }
    let tmp = parent.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    // A stale temp file (from an interrupted run) may have any mode, or be a symlink someone
    // planted: remove it (remove_file never follows a symlink) and create the file anew with
    // O_EXCL, which fails rather than follows a symlink that reappears in between.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(PkiError::io("remove the stale", &tmp)(e)),
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(mode)
        .open(&tmp)
        .map_err(PkiError::io("create", &tmp))?;
    // open()'s mode is filtered by the umask: set the exact one before the first byte.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(PkiError::io("set the mode of", &tmp))?;
    f.write_all(data).map_err(PkiError::io("write", &tmp))?;
    Ok(tmp)
}

fn commit(tmp: &Path, path: &Path) -> Result<(), PkiError> {
    std::fs::rename(tmp, path).map_err(PkiError::io("rename a temp file into", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encryption_key_keeps_its_name_and_a_bad_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let b64 = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        for (key, text) in [
            (
                EncryptionKey {
                    name: "key1".into(),
                    secret_b64: b64.into(),
                },
                format!("{b64}\n"),
            ),
            (
                EncryptionKey {
                    name: "key2".into(),
                    secret_b64: b64.into(),
                },
                format!("{b64}\nname: key2\n"),
            ),
        ] {
            assert_eq!(encryption_key_text(&key), text);
            std::fs::write(dir.path().join(ENCRYPTION_KEY_FILE), &text).unwrap();
            assert_eq!(read_encryption_key(dir.path()).unwrap(), Some(key));
        }
        std::fs::write(
            dir.path().join(ENCRYPTION_KEY_FILE),
            format!("{b64}\nname: {{evil}}\n"),
        )
        .unwrap();
        let err = read_encryption_key(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("encryption.key") && err.contains("name: NAME"),
            "{err}"
        );
    }
}
