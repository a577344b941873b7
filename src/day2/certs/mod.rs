//! Day 2 for certificates: `certs check` (every certificate on every node and in the PKI),
//! `certs renew` (leaves re-issued and rolled out without downtime) and `certs rotate-ca`.
//! Changes reach the nodes through `push`: deploy's plan and rolling restarts, restricted to
//! the files that changed and to what is deployed.

use std::path::PathBuf;

use super::Confirm;
use crate::deploy::DeployOptions;

pub mod check;
pub(crate) mod push;
pub mod renew;
pub mod rotate;

/// How far a command that changes a running cluster's certificates or keys may go, and how.
#[derive(Debug, Clone)]
pub struct ChangeOptions {
    pub confirm: Confirm,
    /// Where the etcd snapshot goes first; none: no snapshot.
    pub snapshot_dir: Option<PathBuf>,
    pub snapshot_keep: Option<usize>,
    /// Timeouts and parallelism of the rolling restarts.
    pub deploy: DeployOptions,
}

/// The operator's admin kubeconfig that deploy writes beside the PKI
/// (`<pki>/admin.kubeconfig`), rewritten from `pki` when it is there and differs: a renewal
/// gives it the new admin certificate, each step of the cluster CA's rotation its trust, so
/// that the kubectl of the person running the rotation keeps working through it. Where it was
/// written, if it was.
pub(crate) fn refresh_admin_kubeconfig(
    inv: &crate::inventory::Inventory,
    pki: &crate::pki::Pki,
    pki_dir: &std::path::Path,
) -> Result<Option<PathBuf>, super::Day2Error> {
    let path = pki_dir.join(crate::render::ADMIN_KUBECONFIG_FILE);
    // Never through a link: symlink_metadata does not follow one, and write_file replaces the
    // name with a new file.
    if std::fs::symlink_metadata(&path).is_err() {
        return Ok(None);
    }
    let text = crate::render::admin_kubeconfig(inv, pki)?;
    if std::fs::read(&path).is_ok_and(|old| old == text.as_bytes()) {
        return Ok(None);
    }
    crate::pki::write_file(&path, text.as_bytes(), 0o600)?;
    Ok(Some(path))
}

#[cfg(test)]
mod tests;
