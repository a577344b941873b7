//! Day-2 operations on a running cluster: etcd snapshots and restore, removing a node, and
//! resetting nodes to how they were before hardway. (Adding nodes is `deploy` with a bigger
//! inventory: new etcd members join one at a time, see `deploy::etcd`.)
//!
//! The destructive ones follow one contract ([`Confirm`]): `--dry-run` says what would happen
//! and changes nothing; without `--yes` they stop after saying it; on an unhealthy cluster they
//! refuse unless `--force`, which names what it skips; and data they could move aside (etcd's
//! data dir) is moved aside, never deleted, unless asked (`reset --purge`).

pub mod certs;
pub mod node;
pub mod reset;
pub mod restore;
pub mod secrets;

#[cfg(test)]
pub(crate) mod tests;

use crate::inventory::Node;
use crate::remote::{Connector, Remote, RemoteError};

/// How far a destructive command may go.
#[derive(Debug, Clone, Copy, Default)]
pub struct Confirm {
    pub dry_run: bool,
    pub yes: bool,
    pub force: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum Day2Error {
    #[error("this would {what}; nothing was done. The steps:\n  {}\nRun again with --yes to do it (--dry-run only shows them)", .steps.join("\n  "))]
    NeedsYes { what: String, steps: Vec<String> },
    #[error("{reason}")]
    Unhealthy { reason: String },
    #[error("refused: {reason}")]
    Refused { reason: String },
    #[error("{why}: cannot reach {}", .nodes.join("; "))]
    Unreachable { why: String, nodes: Vec<String> },
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    #[error(transparent)]
    Render(#[from] crate::render::RenderError),
    #[error(transparent)]
    Session(#[from] crate::session::SessionError),
    #[error(transparent)]
    Deploy(#[from] crate::deploy::DeployError),
    #[error(transparent)]
    Etcd(#[from] crate::etcd::EtcdError),
    #[error(transparent)]
    Kube(#[from] crate::kube::KubeError),
    /// A restore failed on the nodes (what was put back is in the message).
    #[error("{0}")]
    Restore(String),
}

/// A node's name and a session to it.
pub(crate) type Session = (String, Box<dyn Remote>);

/// A session to each of `nodes`, or which of them cannot be reached and why.
pub(crate) fn connect_all(
    connector: &dyn Connector,
    nodes: &[&Node],
    why: &str,
) -> Result<Vec<Session>, Day2Error> {
    let mut out = Vec::new();
    let mut failed = Vec::new();
    for n in nodes {
        match connector.connect(n) {
            Ok(r) => out.push((n.name.clone(), r)),
            Err(e) => failed.push(format!("{} ({e})", n.name)),
        }
    }
    if failed.is_empty() {
        Ok(out)
    } else {
        Err(Day2Error::Unreachable {
            why: why.to_string(),
            nodes: failed,
        })
    }
}

/// The time stamp of names of things moved aside, as snapshots have it.
pub(crate) use crate::events::stamp;
