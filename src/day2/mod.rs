//! Day-2 operations on a running cluster: etcd snapshots and restore, removing a node, and
//! resetting nodes to how they were before hardway. (Adding nodes is `deploy` with a bigger
//! inventory: new etcd members join one at a time, see `deploy::etcd`.)
//!
//! The destructive ones follow one contract ([`Confirm`]): `--dry-run` says what would happen
//! and changes nothing; without `--yes` they stop after saying it; on an unhealthy cluster they
//! refuse unless `--force`, which names what it skips; and data they could move aside (etcd's
//! data dir) is moved aside, never deleted, unless asked (`reset --purge`).

pub mod snapshot;

/// How far a destructive command may go.
#[derive(Debug, Clone, Copy, Default)]
pub struct Confirm {
    pub dry_run: bool,
    pub yes: bool,
    pub force: bool,
}
