//! What hardway knows of etcd as a replicated cluster, in one place: the quorum arithmetic that
//! the inventory's rules, `node remove` and verify apply, and the one error of every etcd
//! operation the probe carries out (status, membership and alarms, member add, promote and
//! remove, leader transfer, snapshot), which deploy, day 2 and verify match on instead of text.
//!
//! A leaf: it knows no inventory and no transport.

use std::fmt;

/// The votes a cluster of `members` voting members needs to commit anything: a majority.
pub const fn quorum(members: usize) -> usize {
    members / 2 + 1
}

/// How many of `members` may fail with the cluster still serving.
pub const fn fault_tolerance(members: usize) -> usize {
    members.saturating_sub(quorum(members))
}

/// An operation of etcd's client API, as errors name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Status,
    MemberList,
    Alarms,
    MemberAdd,
    MemberPromote,
    MemberRemove,
    MoveLeader,
    Snapshot,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Status => "status",
            Operation::MemberList => "member list",
            Operation::Alarms => "alarm list",
            Operation::MemberAdd => "member add",
            Operation::MemberPromote => "member promote",
            Operation::MemberRemove => "member remove",
            Operation::MoveLeader => "move leader",
            Operation::Snapshot => "snapshot",
        })
    }
}

/// Why an etcd operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EtcdError {
    /// There is no client certificate to talk to etcd with.
    #[error("no etcd client certificate")]
    NoCredentials,
    /// The member could not be reached (connection, TLS, timeout).
    #[error("{url}: {message}")]
    Unreachable { url: String, message: String },
    /// etcd refused the request (`etcdserver: unhealthy cluster`, `not leader`, …).
    #[error("{operation}: {message}")]
    Refused {
        operation: Operation,
        message: String,
    },
    /// The answer lacked what it must hold.
    #[error("{operation} answered without {missing}")]
    Incomplete {
        operation: Operation,
        missing: &'static str,
    },
    /// The snapshot's stream could not be written where it was going.
    #[error("writing the snapshot: {0}")]
    Write(String),
}

impl EtcdError {
    /// etcd refuses membership changes until every member has been connected for its health
    /// interval (`--strict-reconfig-check`): a moment after a (re)start, worth retrying.
    pub fn is_unhealthy_cluster(&self) -> bool {
        matches!(self, EtcdError::Refused { message, .. } if message.contains("unhealthy cluster"))
    }

    /// A refusal of `operation` with etcd's message.
    pub fn refused(operation: Operation, message: impl fmt::Display) -> EtcdError {
        EtcdError::Refused {
            operation,
            message: message.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_is_a_majority_and_even_counts_tolerate_no_more() {
        assert_eq!([1, 2, 3, 4, 5, 6, 7].map(quorum), [1, 2, 2, 3, 3, 4, 4]);
        assert_eq!(
            [0, 1, 2, 3, 4, 5, 6, 7].map(fault_tolerance),
            [0, 0, 0, 1, 1, 2, 2, 3]
        );
    }

    #[test]
    fn only_an_unhealthy_cluster_refusal_is_worth_a_retry() {
        assert!(
            EtcdError::refused(Operation::MemberAdd, "etcdserver: unhealthy cluster")
                .is_unhealthy_cluster()
        );
        assert!(
            !EtcdError::refused(Operation::MemberAdd, "etcdserver: Peer URLs already exists")
                .is_unhealthy_cluster()
        );
        assert!(
            !EtcdError::Unreachable {
                url: "https://10.0.0.1:2379".into(),
                message: "unhealthy cluster".into()
            }
            .is_unhealthy_cluster()
        );
        assert_eq!(
            EtcdError::refused(Operation::MoveLeader, "etcdserver: not leader").to_string(),
            "move leader: etcdserver: not leader"
        );
    }
}
