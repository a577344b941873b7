//! hardway's SSH transport against a real OpenSSH server on loopback, started by the test with
//! its own host keys (ed25519 and ECDSA): which host keys are trusted, refused, recorded. The
//! server runs as the user running the test and takes only that user (root in CI; a user with a
//! login shell otherwise, since sshd runs commands through it).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::common::*;
use hardway::remote::ssh::{Conn, HostKeyPolicy, Retry, SshError, Target};

struct Sshd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path, kind: &str) {
    ok(Command::new(require("ssh-keygen", "openssh-client"))
        .args(["-q", "-N", "", "-t", kind, "-f"])
        .arg(path));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The name of the user running the test: the only one an sshd it starts can log in.
fn me() -> String {
    // SAFETY: getpwuid's record is read at once, before any other call could reuse it.
    let pw = unsafe { libc::getpwuid(libc::geteuid()) };
    assert!(
        !pw.is_null(),
        "the user running the test has no passwd entry"
    );
    unsafe { std::ffi::CStr::from_ptr((*pw).pw_name) }
        .to_string_lossy()
        .into_owned()
}

/// A real sshd on 127.0.0.1, as the user running the test (as root it switches to the user
/// that logs in; as another user, it is that user).
fn sshd() -> Sshd {
    let sshd = require("sshd", "openssh-server");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keygen(&d.join("host_ed25519"), "ed25519");
    keygen(&d.join("host_ecdsa"), "ecdsa");
    keygen(&d.join("client"), "ed25519");
    std::fs::copy(d.join("client.pub"), d.join("authorized_keys")).unwrap();
    if unsafe { libc::geteuid() } == 0 {
        // Only root's sshd needs its privilege separation directory.
        std::fs::create_dir_all("/run/sshd").unwrap();
    }
    let port = free_port();
    let config = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {0}/host_ed25519\nHostKey {0}/host_ecdsa\nAuthorizedKeysFile {0}/authorized_keys\n\
         PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile {0}/sshd.pid\n",
        d.display()
    );
    std::fs::write(d.join("sshd_config"), config).unwrap();
    let child = Command::new(sshd)
        .args(["-D", "-e", "-f"])
        .arg(d.join("sshd_config"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "sshd never listened on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Sshd { child, port, dir }
}

impl Sshd {
    fn public(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(format!("{name}.pub"))).unwrap();
        text.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn target(&self, known_hosts: &Path) -> Target {
        Target {
            host: "127.0.0.1".into(),
            port: self.port,
            user: me(),
            sudo: None,
            identity_file: Some(self.dir.path().join("client")),
            known_hosts: known_hosts.to_path_buf(),
            connect_timeout: Duration::from_secs(5),
            retry: Retry::DEFAULT,
            keepalive: None,
            bastion: None,
        }
    }

    fn known_hosts(&self, name: &str, lines: &[String]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(
            &p,
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .unwrap();
        p
    }
}

#[test]
fn host_keys_are_checked_like_openssh_does() {
    let s = sshd();
    let name = format!("[127.0.0.1]:{}", s.port);

    // Only the ECDSA key is known: the session asks for it, and connects (libssh2's own
    // preference, ed25519, used to be reported as a changed key).
    let kh = s.known_hosts(
        "ecdsa_only",
        &[format!("{name} {}", s.public("host_ecdsa"))],
    );
    let conn =
        Conn::connect(&s.target(&kh), HostKeyPolicy::Strict).unwrap_or_else(|e| panic!("{e}"));
    let out = conn.script("echo hi").unwrap();
    assert_eq!(out.stdout, "hi\n");

    // A revoked key is refused, also when new keys are accepted, and never recorded.
    let revoked = s.known_hosts(
        "revoked",
        &[format!("@revoked * {}", s.public("host_ed25519"))],
    );
    let before = std::fs::read_to_string(&revoked).unwrap();
    let err = Conn::connect(&s.target(&revoked), HostKeyPolicy::AcceptNew)
        .err()
        .expect("a revoked key is refused");
    assert!(matches!(err, SshError::RevokedHostKey { .. }), "{err}");
    assert_eq!(std::fs::read_to_string(&revoked).unwrap(), before);

    // A changed key of the same type is refused, and the hint names the [host]:port entry.
    let other = s.dir.path().join("other");
    keygen(&other, "ed25519");
    let changed = s.known_hosts("changed", &[format!("{name} {}", s.public("other"))]);
    let err = Conn::connect(&s.target(&changed), HostKeyPolicy::AcceptNew)
        .err()
        .expect("a changed key is refused");
    assert!(matches!(err, SshError::ChangedHostKey { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("ssh-keygen -R '{name}'")),
        "{err}"
    );

    // Unknown: refused, then recorded with --accept-new-host-keys, then trusted.
    let fresh = s.dir.path().join("fresh");
    let err = Conn::connect(&s.target(&fresh), HostKeyPolicy::Strict)
        .err()
        .expect("an unknown key is refused");
    assert!(matches!(err, SshError::UnknownHostKey { .. }), "{err}");
    Conn::connect(&s.target(&fresh), HostKeyPolicy::AcceptNew).unwrap();
    let recorded = std::fs::read_to_string(&fresh).unwrap();
    assert!(
        recorded.starts_with(&format!("{name} ssh-ed25519 ")),
        "{recorded}"
    );
    Conn::connect(&s.target(&fresh), HostKeyPolicy::Strict).unwrap();
}

/// A script silent for longer than the session's keepalive interval still completes, with its
/// output: libssh2 ends a blocking read with "Timed out waiting on socket" when a keepalive
/// falls due during it (its wait lasts only until then), which failed an etcd join in the lab
/// whose systemctl call crossed it. Nodes get no keepalive (`Target::for_node`); this session
/// has one of 2 s, so 3 s of silence cross one (without the resume in `Conn`, this fails).
#[test]
fn a_script_running_past_the_keepalive_interval_completes() {
    let s = sshd();
    let name = format!("[127.0.0.1]:{}", s.port);
    let kh = s.known_hosts(
        "known",
        &[
            format!("{name} {}", s.public("host_ed25519")),
            format!("{name} {}", s.public("host_ecdsa")),
        ],
    );
    let target = Target {
        keepalive: Some(Duration::from_secs(2)),
        ..s.target(&kh)
    };
    let conn = Conn::connect(&target, HostKeyPolicy::Strict).unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    let out = conn
        .script("echo started; sleep 3; echo done; echo to-stderr >&2")
        .unwrap_or_else(|e| panic!("after {:.1?}: {e}", t.elapsed()));
    assert_eq!(out.stdout, "started\ndone\n");
    assert_eq!(out.stderr, "to-stderr\n");
    assert!(t.elapsed() >= Duration::from_secs(3));
}

/// A node where nothing listens is tried `retry.attempts` times, `first_wait` and then twice as
/// long apart; a host key or authentication failure is not retried (above, each fails at once).
#[test]
fn a_refused_connection_is_retried_as_the_target_says() {
    let s = sshd();
    let kh = s.known_hosts("known", &[]);
    let closed = free_port();
    let retry = Retry {
        attempts: 3,
        first_wait: Duration::from_millis(100),
    };
    let t = Instant::now();
    let err = Conn::connect(
        &Target {
            port: closed,
            retry,
            ..s.target(&kh)
        },
        HostKeyPolicy::Strict,
    )
    .err()
    .expect("nothing listens");
    assert!(matches!(err, SshError::Connect { .. }), "{err}");
    // 100 ms, then 200 ms.
    assert!(
        t.elapsed() >= Duration::from_millis(300) && t.elapsed() < Duration::from_secs(3),
        "{:?}",
        t.elapsed()
    );
    let t = Instant::now();
    Conn::connect(
        &Target {
            port: closed,
            retry: Retry {
                attempts: 1,
                ..retry
            },
            ..s.target(&kh)
        },
        HostKeyPolicy::Strict,
    )
    .err()
    .expect("nothing listens");
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "one attempt waits for nothing: {:?}",
        t.elapsed()
    );
}
