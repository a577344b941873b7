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

/// The SHA-256 of the file at `path`, read in pieces (release archives are large).
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(hex(&h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

/// `bytes` in lowercase hex: for a digest computed piece by piece (a stream hashed as it is
/// written), which [`sha256_hex`] cannot take whole.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
