//! [`PkiError`]: every way reading, checking or writing the PKI directory can fail. Each message
//! names the file and says what to do about it, because the person reading it has to choose
//! between restoring a backup and re-creating (and redeploying) keys.

use std::path::PathBuf;

use time::OffsetDateTime;

use super::cert::fmt_date;

/// What `--force` costs, said wherever it is offered as the way out.
const FORCE: &str = "or run `hardway pki generate --force`, which creates every CA, key and certificate anew \
                     (not the encryption key) — all of it must then be redeployed";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file or directory could not be read, written, renamed or chmod-ed.
    #[error("cannot {op} {}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    /// A certificate, private key or public key that does not parse.
    #[error(
        "{}: {reason}; restore it from a backup, or remove it (a certificate together with its key) so that \
         `hardway pki generate` creates it anew (for a CA or sa.key that needs --force: everything is then \
         re-issued and must be redeployed)",
        .path.display()
    )]
    BadPem { path: PathBuf, reason: String },

    /// A rotation's state (`rotation/<name>.json`) that no run can resume from.
    #[error("{}: {reason}; a rotation's state is written by hardway only: restore it from a backup, or fix the field to the steps the cluster really went through", .path.display())]
    BadRotationState { path: PathBuf, reason: String },

    /// A directory for key material that is reached through a link, or is not this user's.
    #[error("{0}")]
    Private(crate::safe_fs::SafeFsError),

    /// The encryption key is not base64 of 32 bytes. Never replaced automatically: it decrypts
    /// every Secret already in etcd.
    #[error(
        "{}: {reason}; restore it from a backup (it decrypts every Secret stored in etcd: without the file \
         `hardway pki generate` creates a new key, and Secrets already stored can no longer be read)",
        .path.display()
    )]
    BadEncryptionKey { path: PathBuf, reason: String },

    /// A certificate (or `sa.pub`) whose public key is not the private key's.
    #[error(
        "{} is not the private key of {} (their public keys differ: a mixed-up restore or an interrupted \
         write); restore the matching pair from a backup, {}",
        .key.display(),
        .cert.display(),
        FORCE
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },

    /// A CA key without its certificate: a new certificate would be a new CA.
    #[error(
        "{} exists but its certificate {} is missing; restore {} from a backup, {}",
        .key.display(),
        .cert.display(),
        .cert.display(),
        FORCE
    )]
    MissingCertificate { key: PathBuf, cert: PathBuf },

    /// A CA certificate (or `sa.pub`) without its private key: nothing can be signed.
    #[error(
        "{} exists but its private key {} is missing; restore {} from a backup, {}",
        .cert.display(),
        .key.display(),
        .key.display(),
        FORCE
    )]
    MissingKey { cert: PathBuf, key: PathBuf },

    /// An expired CA: nothing it signs is trusted any more.
    #[error(
        "{} expired on {}: certificates it signs are not trusted; run `hardway pki generate --force` to create \
         a new CA — every certificate is re-issued and everything must be redeployed",
        .path.display(),
        fmt_date(*.expired)
    )]
    ExpiredCa {
        path: PathBuf,
        expired: OffsetDateTime,
    },

    /// A validity period that ends after the last date a certificate can carry.
    #[error(
        "{field} = {days} ends after 9999-12-31, the last date an X.509 certificate can carry; \
         at most {limit} days from today"
    )]
    Validity {
        field: &'static str,
        days: u32,
        limit: i64,
    },

    /// rcgen refused to create a key or certificate.
    #[error("cannot issue {name}")]
    Issue { name: String, source: rcgen::Error },

    /// The kernel's random generator failed.
    #[error("no randomness for {what}")]
    Random {
        what: &'static str,
        source: getrandom::Error,
    },

    /// A certificate name that the inventory's matrix does not have.
    #[error("no certificate {name:?} in this inventory's PKI; the certificates are: {}", .known.join(", "))]
    UnknownCertificate { name: String, known: Vec<String> },

    /// `load` found files missing that `generate` would create.
    #[error(
        "{}: the PKI is incomplete for {} (missing: {}); run `hardway pki generate -i {}` first",
        .dir.display(),
        .inventory.display(),
        .missing.join(", "),
        .inventory.display()
    )]
    Incomplete {
        dir: PathBuf,
        inventory: PathBuf,
        missing: Vec<String>,
    },

    /// The directory holds another cluster's PKI (its `cluster` file): using it would make two
    /// clusters share CAs, or judge one cluster with the other's certificates.
    #[error(
        "{} holds the PKI of cluster {made_for:?} (its `cluster` file), not of {cluster:?} that {} describes; \
         give this cluster's PKI with --pki DIR, or create one with `hardway pki generate -i {} --out DIR`",
        .dir.display(),
        .inventory.display(),
        .inventory.display()
    )]
    OtherCluster {
        dir: PathBuf,
        inventory: PathBuf,
        made_for: String,
        cluster: String,
    },

    /// A deploy found no CA, service-account key or encryption key where it needs one: deploy
    /// never creates them (a new CA or key pushed to a running cluster breaks it).
    #[error(
        "{}: no {} — deploy uses the PKI that exists and never creates CAs or keys. For a new cluster, \
         create them with `hardway pki generate -i {} --out {}`; for a running one, point --pki at the \
         directory it was deployed with",
        .dir.display(),
        .missing.join(", "),
        .inventory.display(),
        .dir.display()
    )]
    NoTrust {
        dir: PathBuf,
        inventory: PathBuf,
        missing: Vec<String>,
    },
}

impl PkiError {
    pub(crate) fn io(
        op: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> PkiError {
        let path = path.to_path_buf();
        move |source| PkiError::Io { op, path, source }
    }

    pub(crate) fn bad_pem(
        path: &std::path::Path,
    ) -> impl FnOnce(super::cert::Malformed) -> PkiError {
        let path = path.to_path_buf();
        move |m| PkiError::BadPem { path, reason: m.0 }
    }
}

impl From<crate::safe_fs::SafeFsError> for PkiError {
    fn from(e: crate::safe_fs::SafeFsError) -> PkiError {
        PkiError::Private(e)
    }
}
