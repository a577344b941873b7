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

#[cfg(test)]
mod tests;
