//! The lab's error type: what failed, with the command to rerun or the package to install.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use ipnet::Ipv4Net;

/// A reason this host cannot run a lab; [`super::preflight`] reports every one at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The lab creates bridges, namespaces and mounts: it needs uid 0.
    NotRoot { uid: u32 },
    /// `/proc/self/status` has no readable `Uid:` line.
    UnknownUid,
    /// A tool the lab runs is on neither `$PATH` nor the sbin directories.
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },
    /// The installed debootstrap has no script for the suite the lab's root fs is built from.
    UnknownSuite { suite: &'static str },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NotRoot { uid } => write!(
                f,
                "running as uid {uid}: the lab needs root (bridges, network namespaces, systemd-nspawn, debootstrap)"
            ),
            Problem::UnknownUid => {
                f.write_str("cannot read the effective uid from /proc/self/status")
            }
            Problem::MissingTool { tool, package } => {
                write!(f, "{tool} not found: apt-get install {package}")
            }
            Problem::UnknownSuite { suite } => {
                write!(
                    f,
                    "this debootstrap does not know {suite}: apt-get install debootstrap (a newer one)"
                )
            }
        }
    }
}

/// Why a lab operation failed.
///
/// Every message is complete on its own (an I/O error's OS reason included), so it reads the
/// same printed directly or through `anyhow`; hence no variant exposes a `source()`.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("cannot run the lab:\n  {}", join(problems, "\n  "))]
    Preflight { problems: Vec<Problem> },

    /// The inventory asks for something the lab cannot build (IPv6, nodes on several /24s, ...).
    #[error("{0}")]
    Inventory(String),

    /// `up` with one driver on a lab whose machines another driver made.
    #[error(
        "lab {cluster:?} has {running} machines: take it down (`hardway lab down`) before bringing it up with the {wanted} driver"
    )]
    DriverMismatch {
        cluster: String,
        running: crate::inventory::LabDriver,
        wanted: crate::inventory::LabDriver,
    },

    /// A host tool could not be started at all.
    #[error("cannot run {command}: {error}")]
    Spawn { command: String, error: io::Error },

    /// A host tool ran and failed; `command` is the command line to rerun by hand.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: ExitStatus,
        stderr: String,
    },

    #[error("cannot {action} {}: {error}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        error: io::Error,
    },

    /// A file written into (or read from) a machine's root or a private directory, refused
    /// rather than reached through a link.
    #[error("{0}")]
    SafeFs(crate::safe_fs::SafeFsError),

    /// A path the lab cannot use as it is (white space in an option string, a malformed key, ...).
    #[error("{}: {reason}", path.display())]
    BadPath { path: PathBuf, reason: String },

    #[error(
        "no `deb` source for suite {suite} in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list: \
             the lab's root fs is debootstrapped from the same mirror as the host's apt"
    )]
    NoMirror { suite: &'static str },

    /// `logs`: the end of each log debootstrap wrote (its output, its own log in the target).
    #[error(
        "debootstrap of {suite} from {mirror} failed ({status}){}",
        log_tails(logs)
    )]
    Debootstrap {
        suite: &'static str,
        mirror: String,
        status: ExitStatus,
        logs: Vec<(PathBuf, String)>,
    },

    #[error(
        "the root fs cache {} is out of date, but running nodes are built on it ({}): take their labs down first",
        rootfs.display(),
        join(&users.iter().map(|p| p.display()).collect::<Vec<_>>(), ", ")
    )]
    CacheInUse {
        rootfs: PathBuf,
        users: Vec<PathBuf>,
    },

    #[error(
        "network interface {name} exists and is not a bridge; the lab of cluster {cluster:?} needs that name"
    )]
    NotABridge { name: String, cluster: String },

    #[error(
        "bridge {bridge} is not this lab's (its alias is {owner:?}, this lab is {ours:?}): \
         take the other lab down first, or use another cluster name"
    )]
    ForeignBridge {
        bridge: String,
        owner: String,
        ours: String,
    },

    /// Another interface or route of the host already covers the subnet a bridge needs.
    #[error(
        "{subnet} is already in use on this host ({user}); bridge {bridge} needs that subnet to itself"
    )]
    SubnetInUse {
        subnet: Ipv4Net,
        bridge: String,
        user: String,
    },

    #[error("network interfaces still present after teardown: {0:?}")]
    LinksLeft(Vec<String>),

    /// A node's machine did not come up; `console_tail` is the end of its console log.
    #[error("{node}: {reason}; end of {}:\n{console_tail}", console.display())]
    Boot {
        node: String,
        reason: String,
        console: PathBuf,
        console_tail: String,
    },

    /// A node's machine misbehaved in some other way.
    #[error("{node}: {reason}")]
    Machine { node: String, reason: String },

    #[error("processes {pids:?} ({what}) survive SIGKILL")]
    Survivors { what: String, pids: Vec<u32> },

    #[error("a lab worker thread panicked")]
    Panicked,
}

/// `Result` with [`LabError`].
pub type Result<T, E = LabError> = std::result::Result<T, E>;

fn join(items: &[impl fmt::Display], sep: &str) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(sep)
}

fn log_tails(logs: &[(PathBuf, String)]) -> String {
    let tails: Vec<String> = logs
        .iter()
        .map(|(path, tail)| format!("end of {}:\n{tail}", path.display()))
        .collect();
    if tails.is_empty() {
        String::new()
    } else {
        format!("; {}", tails.join("\n"))
    }
}

/// For `map_err`: an I/O error while doing `action` ("create", "read", ...) to `path`.
pub(super) fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LabError {
    let path = path.to_path_buf();
    move |error| LabError::Io {
        action,
        path,
        error,
    }
}

impl From<crate::safe_fs::SafeFsError> for LabError {
    fn from(e: crate::safe_fs::SafeFsError) -> LabError {
        LabError::SafeFs(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preflight_lists_every_problem_on_its_own_line() {
        let e = LabError::Preflight {
            problems: vec![
                Problem::NotRoot { uid: 1000 },
                Problem::MissingTool {
                    tool: "ip",
                    package: "iproute2",
                },
            ],
        };
        assert_eq!(
            e.to_string(),
            "cannot run the lab:\n  running as uid 1000: the lab needs root (bridges, network namespaces, \
             systemd-nspawn, debootstrap)\n  ip not found: apt-get install iproute2"
        );
    }

    #[test]
    fn io_errors_name_the_path_and_the_reason() {
        let e =
            io_error("create", Path::new("/x/y"))(io::Error::from(io::ErrorKind::PermissionDenied));
        assert_eq!(e.to_string(), "cannot create /x/y: permission denied");
    }
}
