//! SHA-256 in lowercase hex, as `sha256sum` prints it: how hardway compares a file with what a
//! node has, names keys without showing them, and records inventories and etcd snapshots.
//!
//! A leaf module: every stage hashes, so the function lives below all of them rather than in
//! the first stage that needed it.

use sha2::{Digest, Sha256};

/// The SHA-256 of `data`, in lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// `bytes` in lowercase hex: for a digest computed piece by piece (a stream hashed as it is
/// written), which [`sha256_hex`] cannot take whole.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
