//! Stage 2: the cluster's PKI — CAs, every leaf certificate, the service-account key pair and
//! the encryption key, kept in a kubeadm-style directory (`NAME.crt` beside `NAME.key`).
//!
//! The certificate matrix is data: [`CAS`] and [`PROFILES`] are tables, expanded against the
//! inventory by [`matrix`] into one [`CertSpec`] per file. [`generate`] then compares every spec
//! with what is on disk and only creates or re-issues what is missing, different or about to
//! expire — so re-running is safe and CA, keys and the encryption key survive (a lost encryption
//! key means Secrets nobody can read). All reading and deciding happens before the first write.
//!
//! - `matrix`: the tables and their expansion;
//! - `cert`: reading certificates and keys back ([`CertInfo`]);
//! - `issue`: making keys and certificates;
//! - `store`: the directory — parsing every file read ([`load`]), writing ([`write_file`]);
//! - `generate`, `check`: the two commands;
//! - `renew`: re-issuing leaves in place for `certs renew`, the replaced files kept aside;
//! - `rotate`: a CA rotation's state and the PKI each of its steps renders from;
//! - `error`: [`PkiError`], each message naming the file and what to do.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

mod cert;
mod check;
mod error;
mod generate;
mod issue;
mod matrix;
mod renew;
pub mod rotate;
mod store;

pub use cert::{CertInfo, Malformed, describe_certificates};
pub(crate) use cert::{fmt_seconds, pem_certificates};
pub use check::{CheckRow, check, check_within};
pub use error::PkiError;
pub use generate::{Action, GenerateOptions, Report, generate};
/// For `lab break`, which re-issues a node's certificate with one thing wrong.
pub(crate) use issue::issue_leaf;
pub use matrix::{
    CAS, CaId, CaProfile, CertSpec, PROFILES, Profile, San, SanSet, Scope, Usage, matrix,
};
pub use renew::{Renewal, aside_dir, leaf_names, renew_leaves, write_renewed};
pub use store::{CLUSTER_FILE, check_cluster, default_dir, load, write_file};

/// Leaf certificates closer than this to expiry are re-issued (kubeadm warns at the same mark).
pub const RENEW_BEFORE_DAYS: i64 = 30;

pub const ENCRYPTION_KEY_FILE: &str = "encryption.key";
pub const SA_KEY_FILE: &str = "sa.key";
pub const SA_PUB_FILE: &str = "sa.pub";

/// Stands in for private keys in `Debug` output.
const REDACTED: &str = "<redacted>";

/// A certificate with its private key, both PEM.
#[derive(Clone)]
pub struct KeyedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for KeyedCert {
    // Private keys never reach logs, not even through a stray `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &REDACTED)
            .finish()
    }
}

/// Everything in the PKI directory that the inventory needs: what later stages (render,
/// deploy, verify) read.
#[derive(Clone)]
pub struct Pki {
    pub dir: PathBuf,
    pub cas: BTreeMap<CaId, KeyedCert>,
    /// Leaf certificates by spec name.
    pub certs: BTreeMap<String, KeyedCert>,
    pub sa_key_pem: String,
    pub sa_pub_pem: String,
    /// Base64 of the 32-byte AES-CBC key, as the EncryptionConfiguration wants it.
    pub encryption_key_b64: String,
    /// The keys the EncryptionConfiguration lists, in its order: the first encrypts what is
    /// written, every one decrypts. The key of `encryption.key` alone, but while
    /// `secrets rotate-encryption-key` runs.
    pub encryption_keys: Vec<EncryptionKey>,
}

/// A Secrets encryption key and the name the EncryptionConfiguration gives it. The name is
/// part of every Secret stored with the key (`k8s:enc:secretbox:v1:<name>:`), so it stays the
/// key's for good: `encryption.key` holds it on a `name:` line (none: `key1`).
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptionKey {
    pub name: String,
    pub secret_b64: String,
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptionKey")
            .field("name", &self.name)
            .field("secret_b64", &REDACTED)
            .finish()
    }
}

/// The name of the first encryption key (hardway before key rotation named its only key so).
pub const FIRST_ENCRYPTION_KEY_NAME: &str = "key1";

impl fmt::Debug for Pki {
    // Like KeyedCert: the service-account key and the encryption key are secrets too.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .field("cas", &self.cas)
            .field("certs", &self.certs)
            .field("sa_key_pem", &REDACTED)
            .field("sa_pub_pem", &self.sa_pub_pem)
            .field("encryption_key_b64", &REDACTED)
            .field("encryption_keys", &self.encryption_keys)
            .finish()
    }
}

impl Pki {
    pub fn ca(&self, id: CaId) -> &KeyedCert {
        &self.cas[&id]
    }

    pub fn cert(&self, name: &str) -> &KeyedCert {
        self.certs
            .get(name)
            .unwrap_or_else(|| panic!("certificate {name} is not in the matrix"))
    }
}
