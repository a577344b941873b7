//! Finding and running the host tools the lab shells out to (debootstrap, systemd-nspawn, ip,
//! ssh-keygen, ssh): one search path, one table of what is required and which Debian package
//! provides it, and errors that quote the command line so that it can be rerun by hand.

use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::error::{LabError, Problem, Result, io_error};

/// Appended to `$PATH` because `cargo test` or `sudo` often run without the sbin directories,
/// where debootstrap and ip live (and debootstrap itself needs chroot and mount from there).
const SYSTEM_PATH: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// Every tool the lab runs: (tool, Debian package that provides it).
pub const REQUIRED_TOOLS: &[(&str, &str)] = &[
    ("debootstrap", "debootstrap"),
    ("systemd-nspawn", "systemd-container"),
    ("ip", "iproute2"),
    ("ssh-keygen", "openssh-client"),
    ("ssh", "openssh-client"),
    ("setsid", "util-linux"),
    ("chroot", "coreutils"),
    ("mount", "mount"),
];

/// The [`REQUIRED_TOOLS`] that `find` does not find, each with its package, in table order.
/// Pure, so that it can be checked against any host; [`super::preflight`] passes [`find_tool`].
pub fn missing_tools(find: impl Fn(&str) -> Option<PathBuf>) -> Vec<Problem> {
    REQUIRED_TOOLS
        .iter()
        .filter(|(tool, _)| find(tool).is_none())
        .map(|&(tool, package)| Problem::MissingTool { tool, package })
        .collect()
}

fn search_path() -> OsString {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in SYSTEM_PATH {
        if !dirs.iter().any(|x| x == Path::new(d)) {
            dirs.push(PathBuf::from(d));
        }
    }
    std::env::join_paths(dirs).unwrap_or_else(|_| SYSTEM_PATH.join(":").into())
}

/// The executable `name` on `$PATH` or in the system directories root's `$PATH` may lack.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&search_path())
        .map(|d| d.join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// A command for the tool `name` (found as by [`find_tool`]), with that search path as its
/// `$PATH` and stdin from /dev/null.
pub fn command(name: &str) -> Command {
    let mut c = Command::new(find_tool(name).unwrap_or_else(|| PathBuf::from(name)));
    c.env("PATH", search_path()).stdin(Stdio::null());
    c
}

/// The command line, for messages.
pub fn describe(c: &Command) -> String {
    std::iter::once(c.get_program())
        .chain(c.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

fn spawn_error(c: &Command) -> impl FnOnce(std::io::Error) -> LabError {
    let command = describe(c);
    move |error| LabError::Spawn { command, error }
}

/// Runs to completion, whatever its exit status.
pub fn output(c: &mut Command) -> Result<Output> {
    c.output().map_err(spawn_error(c))
}

/// Runs to completion; stdout on success, an error quoting the command and its stderr otherwise.
pub fn run(c: &mut Command) -> Result<String> {
    let out = output(c)?;
    if !out.status.success() {
        return Err(LabError::Command {
            command: describe(c),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Like `output`, but kills the command at `deadline` and returns `None`: ssh can hang on a
/// half-booted machine, and nothing here may wait without a bound.
pub fn output_until(c: &mut Command, deadline: Instant) -> Result<Option<Output>> {
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error(c))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let status = loop {
        if let Some(status) = child.try_wait().map_err(spawn_error(c))? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    Ok(status.map(|status| Output {
        status,
        stdout,
        stderr,
    }))
}

// ---------------------------------------------------------------------------------------------
// ssh and its keys.

/// `ssh root@address` with `key` only and strict host key checking against `known_hosts`
/// only; append the remote command as arguments.
pub fn ssh_command(key: &Path, known_hosts: &Path, address: IpAddr) -> Command {
    let mut c = command("ssh");
    // -F /dev/null: the operator's ~/.ssh/config (ControlMaster, User, ...) must not leak in.
    c.args(["-F", "/dev/null", "-i"])
        .arg(key)
        .args(["-o", "IdentitiesOnly=yes", "-o"])
        .arg(format!("UserKnownHostsFile=\"{}\"", known_hosts.display()))
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg(format!("root@{address}"));
    c
}

/// A new ed25519 key pair without passphrase: `path` and `path.pub`.
pub fn ssh_keygen(path: &Path, comment: &str) -> Result<()> {
    run(command("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path))?;
    Ok(())
}

/// The known_hosts line `<address> <type> <key>` for the public key `rel` below `root` (a
/// machine's root: read without following a link in it).
pub fn known_hosts_line(address: IpAddr, root: &Path, rel: &Path) -> Result<String> {
    let public_key = root.join(rel);
    let public_key = public_key.as_path();
    let bytes = crate::safe_fs::read_beneath(root, rel, 64 * 1024)?.ok_or_else(|| {
        io_error("read", public_key)(std::io::Error::from(std::io::ErrorKind::NotFound))
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let mut fields = text.split_whitespace();
    let (Some(kind), Some(key)) = (fields.next(), fields.next()) else {
        return Err(LabError::BadPath {
            path: public_key.to_path_buf(),
            reason: "not an ssh public key".into(),
        });
    };
    Ok(format!("{address} {kind} {key}\n"))
}

/// Makes root's `~/.ssh` in the file system at `root` (`root/root/.ssh`, mode 0700) trust
/// exactly `public_key` (one line). Nothing below `root` is reached through a link: a machine
/// whose root replaced `/root` or `/root/.ssh` with a link to a host directory gets an error
/// naming it, and the host directory is left alone.
pub fn authorize_key(root: &Path, public_key: &str) -> Result<()> {
    use crate::safe_fs::{Dir, Missing};
    let ssh = Dir::open(root)?.walk(Path::new("root/.ssh"), Missing::Create(0o700))?;
    ssh.chmod(0o700)?;
    ssh.write(
        "authorized_keys".as_ref(),
        format!("{}\n", public_key.trim()).as_bytes(),
        0o600,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_without_tools_is_told_every_package() {
        let problems = missing_tools(|_| None);
        assert_eq!(problems.len(), REQUIRED_TOOLS.len());
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        for want in [
            "debootstrap not found: apt-get install debootstrap",
            "systemd-nspawn not found: apt-get install systemd-container",
            "ip not found: apt-get install iproute2",
            "ssh-keygen not found: apt-get install openssh-client",
            "ssh not found: apt-get install openssh-client",
        ] {
            assert!(
                text.iter().any(|t| t == want),
                "{want:?} missing from {text:#?}"
            );
        }
    }

    #[test]
    fn a_host_with_every_tool_has_no_tool_problem() {
        assert_eq!(
            missing_tools(|t| Some(PathBuf::from("/usr/bin").join(t))),
            Vec::new()
        );
    }

    #[test]
    fn only_the_missing_tools_are_named() {
        let problems =
            missing_tools(|t| (t != "ip" && t != "systemd-nspawn").then(|| PathBuf::from(t)));
        assert_eq!(
            problems,
            [
                Problem::MissingTool {
                    tool: "systemd-nspawn",
                    package: "systemd-container"
                },
                Problem::MissingTool {
                    tool: "ip",
                    package: "iproute2"
                },
            ]
        );
    }

    /// A machine's root replaced its `/root/.ssh` (or `/root`) with a link to a host directory:
    /// `lab up` must refuse, name the link, and leave the host directory as it was.
    #[test]
    fn a_planted_ssh_link_in_a_machine_root_is_refused_and_its_target_untouched() {
        for planted in ["root/.ssh", "root"] {
            let t = tempfile::tempdir().unwrap();
            let (root, host_dir) = (t.path().join("rootfs"), t.path().join("host-ssh"));
            fs::create_dir_all(root.join("root")).unwrap();
            fs::create_dir(&host_dir).unwrap();
            fs::set_permissions(&host_dir, fs::Permissions::from_mode(0o755)).unwrap();
            fs::write(host_dir.join("authorized_keys"), "ssh-ed25519 AAAA admin\n").unwrap();
            if planted == "root" {
                fs::remove_dir(root.join("root")).unwrap();
                fs::create_dir(t.path().join("host-home")).unwrap();
                std::os::unix::fs::symlink(&host_dir, t.path().join("host-home/.ssh")).unwrap();
                std::os::unix::fs::symlink(t.path().join("host-home"), root.join("root")).unwrap();
            } else {
                std::os::unix::fs::symlink(&host_dir, root.join("root/.ssh")).unwrap();
            }
            let e = authorize_key(&root, "ssh-ed25519 BBBB lab")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&root.join(planted).display().to_string())
                    && e.contains("symbolic link"),
                "{planted}: {e}"
            );
            assert_eq!(
                fs::metadata(&host_dir).unwrap().permissions().mode() & 0o7777,
                0o755,
                "{planted}"
            );
            assert_eq!(
                fs::read_to_string(host_dir.join("authorized_keys")).unwrap(),
                "ssh-ed25519 AAAA admin\n",
                "{planted}"
            );
        }
    }

    #[test]
    fn failed_commands_quote_the_command_line() {
        let e = run(command("sh").args(["-c", "echo oops >&2; exit 3"])).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("sh -c echo oops >&2; exit 3` failed (exit status: 3): oops"),
            "{msg}"
        );
    }
}
