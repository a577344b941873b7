//! The SSH transport: one libssh2 session per host, carrying [`ShellRemote`]'s scripts.
//!
//! Every remote action is a shell script sent on the standard input of `sh -s` (through
//! `sudo -n` when the user is not root), so a whole batch of work — facts, an upload of many
//! files, a round of systemctl calls — costs one round trip, and nothing needs quoting twice.
//!
//! Host keys are checked against known_hosts before authenticating: an unknown key is refused
//! unless the caller accepts new keys (and then recorded), a changed key is always refused.
//! libssh2 serialises all calls of a session behind one lock, so callers use one `Conn` per
//! host and drive it from a blocking thread.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ssh2::{CheckResult, HashType, KnownHostFileKind, Session};

use super::{Connector, Output, Remote, RemoteError, ShellRemote, Transport};
use crate::inventory::{Bastion, Inventory, Node, Sudo};
use crate::runlog::RunLog;
use std::sync::Arc;

/// How to reach one node.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// How commands become root: none when the user is root.
    pub sudo: Option<SudoAuth>,
    pub identity_file: Option<PathBuf>,
    pub known_hosts: PathBuf,
    pub connect_timeout: Duration,
    /// How often a connection is tried after a network error, and how long between tries.
    pub retry: Retry,
    /// libssh2's keepalive interval: none for nodes (see `Conn::connect_once`); a session with
    /// one still completes scripts silent for longer, which a test checks with a short one.
    pub keepalive: Option<Duration>,
    /// Reach `host:port` through this jump host (a direct-tcpip channel from it).
    pub bastion: Option<Bastion>,
}

/// How a connection is retried after a network error (refused, unreachable, timed out; never a
/// host key or authentication failure): `attempts` tries in all, `first_wait` before the
/// second, and twice the wait before each next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub attempts: u32,
    pub first_wait: Duration,
}

impl Retry {
    /// What nodes get by default: three tries, 1 s and then 2 s apart (`ssh.connect_attempts`
    /// sets the number).
    pub const DEFAULT: Retry = Retry {
        attempts: 3,
        first_wait: Duration::from_secs(1),
    };

    /// The wait before try `n` (0 is the first, which waits for nothing).
    pub fn wait_before(&self, n: u32) -> Duration {
        if n == 0 {
            Duration::ZERO
        } else {
            self.first_wait.saturating_mul(1u32 << (n - 1).min(16))
        }
    }
}

impl Target {
    pub fn for_node(inv: &Inventory, node: &Node) -> Target {
        let user = node.user.clone().unwrap_or_else(|| inv.ssh.user.clone());
        Target {
            host: node
                .ssh_address
                .clone()
                .unwrap_or_else(|| node.address.to_string()),
            port: node.ssh_port.unwrap_or(inv.ssh.port),
            sudo: match inv.ssh.sudo {
                Sudo::WithPassword => Some(SudoAuth::Password),
                Sudo::Always => Some(SudoAuth::NoPassword),
                Sudo::IfNotRoot => (user != "root").then_some(SudoAuth::NoPassword),
            },
            user,
            identity_file: inv.ssh.identity_file.clone(),
            known_hosts: inv.ssh.known_hosts.clone(),
            connect_timeout: Duration::from_secs(inv.ssh.connect_timeout_secs),
            retry: Retry {
                attempts: inv.ssh.connect_attempts,
                ..Retry::DEFAULT
            },
            keepalive: None,
            bastion: inv.ssh.bastion.clone(),
        }
    }

    /// The jump host as a target of its own: same key, known_hosts, timeouts and keepalive.
    fn jump(&self, b: &Bastion) -> Target {
        Target {
            host: b.host.clone(),
            port: b.port,
            user: b.user.clone(),
            sudo: None,
            identity_file: self.identity_file.clone(),
            known_hosts: self.known_hosts.clone(),
            connect_timeout: self.connect_timeout,
            retry: self.retry,
            keepalive: self.keepalive,
            bastion: None,
        }
    }

    /// The name known_hosts uses: `host`, or `[host]:port` off port 22.
    fn known_hosts_name(&self) -> String {
        if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SudoAuth {
    /// `sudo -n`: passwordless (NOPASSWD), fails at once otherwise.
    NoPassword,
    /// sudo with the user's password, sent on the session's standard input.
    Password,
}

/// The sudo password, given once to hardway; never printed, logged or put on a command line.
#[derive(Clone)]
pub struct SudoPassword(Arc<String>);

impl SudoPassword {
    pub fn new(p: String) -> SudoPassword {
        SudoPassword(Arc::new(p))
    }
}

impl std::fmt::Debug for SudoPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SudoPassword(<redacted>)")
    }
}

/// With a sudo password: the first line of standard input is the password, read by the shell's
/// `read` builtin (never an argument of a process). `sudo -v` gets the password alone on its own
/// pipe (a wrong one cannot make it read the script as more attempts) and caches the
/// credentials (without a terminal, for its parent process: this shell); then `sudo -n`, also
/// this shell's child, runs the script from the rest of
/// standard input. Where sudo needs no password the line is read and dropped all the same.
const SUDO_WITH_PASSWORD: &str = "sh -c 'IFS= read -r pw; if sudo -n true 2>/dev/null; then unset pw; exec sudo -n sh -s; fi; \
    printf \"%s\\n\" \"$pw\" | sudo -S -p \"\" -v || exit 1; unset pw; sudo -n sh -s'";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// Only keys already in known_hosts.
    Strict,
    /// Record unknown keys (never changed ones).
    AcceptNew,
}

/// Why a connection failed; deploy reports these per host, and branches on none of them but
/// the host-key cases (which are never retried).
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("cannot connect to {host}:{port}: {reason}")]
    Connect {
        host: String,
        port: u16,
        reason: String,
    },
    #[error(
        "unknown host key for {host} ({fingerprint}), not in {known_hosts}; check it and re-run with \
         --accept-new-host-keys to record it"
    )]
    UnknownHostKey {
        host: String,
        fingerprint: String,
        known_hosts: String,
    },
    #[error(
        "HOST KEY CHANGED for {host} (now {fingerprint}); this is refused. If the machine was \
         reinstalled, remove its old line from {known_hosts} (ssh-keygen -R '{name}' -f {known_hosts})"
    )]
    ChangedHostKey {
        host: String,
        name: String,
        fingerprint: String,
        known_hosts: String,
    },
    #[error(
        "the host key of {host} ({fingerprint}) is marked @revoked in {known_hosts}; this is refused"
    )]
    RevokedHostKey {
        host: String,
        fingerprint: String,
        known_hosts: String,
    },
    #[error("authentication as {user}@{host} failed: {reason}")]
    Auth {
        user: String,
        host: String,
        reason: String,
    },
    #[error("ssh to {host}: {reason}")]
    Session { host: String, reason: String },
}

/// An authenticated session to one node.
pub struct Conn {
    pub target: Target,
    sudo_password: Option<SudoPassword>,
    sess: Session,
    /// The thread carrying this session through a bastion; it ends when `sess` closes its end.
    _tunnel: Option<std::thread::JoinHandle<()>>,
}

/// The longest a single remote script may stay silent before it is considered hung.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// The most of one stream (stdout, stderr) read from one script on a node.
const OUTPUT_LIMIT: u64 = 64 << 20;

impl Conn {
    /// Connects, retrying network errors as `target.retry` says.
    pub fn connect(target: &Target, policy: HostKeyPolicy) -> Result<Conn, SshError> {
        let mut last = None;
        for attempt in 0..target.retry.attempts.max(1) {
            std::thread::sleep(target.retry.wait_before(attempt));
            match Self::connect_once(target, policy) {
                Ok(c) => return Ok(c),
                Err(e @ SshError::Connect { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    fn connect_once(t: &Target, policy: HostKeyPolicy) -> Result<Conn, SshError> {
        let connect_err = |reason: String| SshError::Connect {
            host: t.host.clone(),
            port: t.port,
            reason,
        };
        let mut sess = Session::new().map_err(|e| connect_err(e.to_string()))?;
        let tunnel = match &t.bastion {
            None => {
                sess.set_tcp_stream(tcp_connect(t)?);
                None
            }
            Some(b) => {
                // The jump host is verified and authenticated like any node; then the node's
                // own SSH session runs inside a direct-tcpip channel opened from it.
                let jump = Conn::connect_once(&t.jump(b), policy)?;
                let channel = jump
                    .sess
                    .channel_direct_tcpip(&t.host, t.port, None)
                    .map_err(|e| {
                        connect_err(format!(
                            "through bastion {}@{}:{}: {e}",
                            b.user, b.host, b.port
                        ))
                    })?;
                let (inner, outer) = std::os::unix::net::UnixStream::pair()
                    .map_err(|e| connect_err(e.to_string()))?;
                sess.set_tcp_stream(inner);
                Some(std::thread::spawn(move || {
                    tunnel(jump.sess, channel, outer)
                }))
            }
        };
        sess.set_timeout(t.connect_timeout.as_millis() as u32);
        let known = KnownHostsFile::read(&t.known_hosts).map_err(|e| SshError::Session {
            host: t.host.clone(),
            reason: format!("reading {}: {e}", t.known_hosts.display()),
        })?;
        // Like OpenSSH: ask the server for a key of a type known_hosts has for it, so a host
        // with both an ECDSA and an ed25519 key is not "changed" because libssh2 prefers the
        // one the user never recorded.
        let types = known.types_for(&sess, t)?;
        if !types.is_empty() {
            sess.method_pref(ssh2::MethodType::HostKey, &types.join(","))
                .map_err(|e| connect_err(format!("host key algorithms {types:?}: {e}")))?;
        }
        sess.handshake()
            .map_err(|e| connect_err(format!("SSH handshake: {e}")))?;
        verify_host_key(&sess, t, &known, policy)?;
        authenticate(&sess, t)?;
        sess.set_timeout(COMMAND_TIMEOUT.as_millis() as u32);
        // No libssh2 keepalive for nodes: with one set, a blocking read gives up when the next
        // keepalive falls due ("Timed out waiting on socket"), which failed an etcd join whose
        // systemctl call crossed it. A node that stops answering is caught by COMMAND_TIMEOUT.
        // Where a target sets one, `read_text` resumes the reads it cuts.
        if let Some(interval) = t.keepalive {
            sess.set_keepalive(true, interval.as_secs().clamp(1, u32::MAX as u64) as u32);
        }
        Ok(Conn {
            target: t.clone(),
            sudo_password: None,
            sess,
            _tunnel: tunnel,
        })
    }

    /// The password for `SudoAuth::Password`.
    pub fn with_sudo_password(mut self, password: Option<SudoPassword>) -> Conn {
        self.sudo_password = password;
        self
    }

    /// Runs `script` with `sh -s` as root (through sudo as the target says).
    pub fn script(&self, script: &str) -> Result<Output, SshError> {
        match self.target.sudo {
            None => self.exec("sh -s", script.as_bytes()),
            Some(SudoAuth::NoPassword) => self.exec("sudo -n sh -s", script.as_bytes()),
            Some(SudoAuth::Password) => {
                let pw = self.sudo_password.as_ref().ok_or_else(|| SshError::Auth {
                    user: self.target.user.clone(),
                    host: self.target.host.clone(),
                    reason: "ssh.sudo = \"password\" but no password was given".into(),
                })?;
                let mut input = Vec::with_capacity(pw.0.len() + 1 + script.len());
                input.extend_from_slice(pw.0.as_bytes());
                input.push(b'\n');
                input.extend_from_slice(script.as_bytes());
                self.exec(SUDO_WITH_PASSWORD, &input)
            }
        }
    }

    fn exec(&self, cmd: &str, stdin: &[u8]) -> Result<Output, SshError> {
        let err = |what: &str, e: &dyn std::fmt::Display| SshError::Session {
            host: self.target.host.clone(),
            reason: format!("{what}: {e}"),
        };
        let mut ch = self
            .sess
            .channel_session()
            .map_err(|e| err("opening a channel", &e))?;
        ch.exec(cmd).map_err(|e| err("exec", &e))?;
        ch.write_all(stdin)
            .map_err(|e| err("sending the script", &e))?;
        ch.send_eof().map_err(|e| err("sending EOF", &e))?;
        // A node is not trusted to keep its answers small: each stream is read up to a bound
        // (the operations read at most READ_LIMIT of any one file), not into all memory.
        let resume = self.resume_until();
        let stdout =
            read_text(&mut ch, OUTPUT_LIMIT + 1, resume).map_err(|e| err("reading output", &e))?;
        let stderr = read_text(&mut ch.stderr(), OUTPUT_LIMIT + 1, resume)
            .map_err(|e| err("reading errors", &e))?;
        if stdout.len() as u64 > OUTPUT_LIMIT || stderr.len() as u64 > OUTPUT_LIMIT {
            return Err(err(
                "reading output",
                &format!("the node sent more than {OUTPUT_LIMIT} bytes; refused"),
            ));
        }
        ch.wait_close().map_err(|e| err("closing", &e))?;
        let status = ch.exit_status().map_err(|e| err("exit status", &e))?;
        let auth = |reason: &str| SshError::Auth {
            user: self.target.user.clone(),
            host: self.target.host.clone(),
            reason: reason.into(),
        };
        if self.target.sudo == Some(SudoAuth::NoPassword)
            && status == 1
            && stderr.contains("sudo: a password is required")
        {
            return Err(auth(
                "sudo asks for a password: set ssh.sudo = \"password\" in the inventory, or allow NOPASSWD",
            ));
        }
        if self.target.sudo == Some(SudoAuth::Password)
            && status == 1
            && stderr.contains("incorrect password")
        {
            return Err(auth("sudo refused the password"));
        }
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }

    /// With a keepalive, until when a read that timed out resumes: the session's timeout from
    /// now. Without one a timeout is the session's own, and final.
    fn resume_until(&self) -> Option<std::time::Instant> {
        self.target
            .keepalive
            .map(|_| std::time::Instant::now() + Duration::from_millis(self.sess.timeout().into()))
    }
}

/// Reads `r` to its end, at most `limit` bytes, as UTF-8 text (what `take(limit)` and
/// `read_to_string` do). With keepalives on, libssh2 also ends a blocking read with a timeout
/// when a keepalive falls due (its wait for the socket lasts only until then): such a read
/// resumes, until `resume_until`.
fn read_text(
    r: &mut impl Read,
    limit: u64,
    resume_until: Option<std::time::Instant>,
) -> std::io::Result<String> {
    let mut bytes = Vec::new();
    let mut r = r.take(limit);
    loop {
        match r.read_to_end(&mut bytes) {
            Ok(_) => break,
            Err(e)
                if e.kind() == std::io::ErrorKind::TimedOut
                    && resume_until.is_some_and(|d| std::time::Instant::now() < d) => {}
            Err(e) => return Err(e),
        }
    }
    String::from_utf8(bytes).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        )
    })
}

impl Conn {
    /// Sends `request` to a Unix socket on the node and returns the whole answer, through an
    /// SSH stream-local channel (OpenSSH's direct-streamlocal), so no tool is needed there.
    pub fn unix_socket_request(&self, socket: &str, request: &[u8]) -> Result<String, SshError> {
        let err = |e: &dyn std::fmt::Display| SshError::Session {
            host: self.target.host.clone(),
            reason: format!("{socket}: {e}"),
        };
        let mut ch = self
            .sess
            .channel_direct_streamlocal(socket, None)
            .map_err(|e| err(&e))?;
        ch.write_all(request).map_err(|e| err(&e))?;
        let out = read_text(&mut ch, u64::MAX, self.resume_until()).map_err(|e| err(&e))?;
        let _ = ch.close();
        Ok(out)
    }
}

fn tcp_connect(t: &Target) -> Result<TcpStream, SshError> {
    let connect_err = |reason: String| SshError::Connect {
        host: t.host.clone(),
        port: t.port,
        reason,
    };
    let addrs: Vec<_> = (t.host.as_str(), t.port)
        .to_socket_addrs()
        .map_err(|e| connect_err(format!("cannot resolve: {e}")))?
        .collect();
    let addr = addrs
        .first()
        .ok_or_else(|| connect_err("no address".into()))?;
    TcpStream::connect_timeout(addr, t.connect_timeout).map_err(|e| connect_err(e.to_string()))
}

/// Copies bytes between a direct-tcpip channel of the jump session and one end of a socket
/// pair whose other end is the node session's transport, until either side closes. The jump
/// session is non-blocking, so one thread serves both directions; `poll` waits on exactly what
/// libssh2 says it is blocked on, and on the socket pair.
fn tunnel(jump: Session, mut channel: ssh2::Channel, mut sock: std::os::unix::net::UnixStream) {
    use std::os::fd::AsRawFd;
    jump.set_blocking(false);
    if sock.set_nonblocking(true).is_err() {
        return;
    }
    let would_block = |e: &std::io::Error| e.kind() == std::io::ErrorKind::WouldBlock;
    let mut buf = vec![0u8; 32 * 1024];
    let mut to_channel: Vec<u8> = Vec::new();
    let mut to_sock: Vec<u8> = Vec::new();
    loop {
        let mut progressed = false;
        if to_channel.is_empty() {
            match sock.read(&mut buf) {
                Ok(0) => return, // the node session is gone
                Ok(n) => to_channel.extend_from_slice(&buf[..n]),
                Err(e) if would_block(&e) => {}
                Err(_) => return,
            }
        }
        match write_some(&mut channel, &mut to_channel) {
            Ok(p) => progressed |= p,
            Err(_) => return,
        }
        if to_sock.is_empty() {
            match channel.read(&mut buf) {
                Ok(0) if channel.eof() => return,
                Ok(n) => {
                    to_sock.extend_from_slice(&buf[..n]);
                    progressed |= n > 0;
                }
                Err(e) if would_block(&e) => {}
                Err(_) => return,
            }
        }
        match write_some(&mut sock, &mut to_sock) {
            Ok(p) => progressed |= p,
            Err(_) => return,
        }
        if progressed {
            continue;
        }
        let jump_events = match jump.block_directions() {
            ssh2::BlockDirections::Inbound => libc::POLLIN,
            ssh2::BlockDirections::Outbound => libc::POLLOUT,
            ssh2::BlockDirections::Both => libc::POLLIN | libc::POLLOUT,
            ssh2::BlockDirections::None => libc::POLLIN,
        };
        let sock_events = if !to_sock.is_empty() {
            libc::POLLOUT
        } else {
            0
        } | if to_channel.is_empty() {
            libc::POLLIN
        } else {
            0
        };
        let mut fds = [
            libc::pollfd {
                fd: jump.as_raw_fd(),
                events: jump_events,
                revents: 0,
            },
            libc::pollfd {
                fd: sock.as_raw_fd(),
                events: sock_events,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfd for the duration of the call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 1000) };
        if rc < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// Writes as much of `pending` as `w` takes without blocking and drops what was written; says
/// whether anything was. A zero-length write (a full channel window) is no progress, not an error.
fn write_some(w: &mut impl Write, pending: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut progressed = false;
    while !pending.is_empty() {
        match w.write(pending) {
            Ok(0) => break,
            Ok(n) => {
                pending.drain(..n);
                progressed = true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(progressed)
}

fn fingerprint(sess: &Session) -> String {
    use base64::Engine;
    match sess.host_key_hash(HashType::Sha256) {
        Some(h) => format!(
            "SHA256:{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(h)
        ),
        None => "unknown fingerprint".into(),
    }
}

/// A known_hosts file, split into what libssh2 reads (plain entries) and the `@revoked` keys,
/// which libssh2 does not understand and which must never be accepted.
struct KnownHostsFile {
    entries: Vec<String>,
    revoked: Vec<Vec<u8>>,
}

impl KnownHostsFile {
    fn read(path: &Path) -> std::io::Result<KnownHostsFile> {
        use base64::Engine;
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let mut f = KnownHostsFile {
            entries: vec![],
            revoked: vec![],
        };
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            match line.strip_prefix('@') {
                // `@revoked HOSTS TYPE KEY`: revoked for every host, as the key itself is bad.
                Some(rest) if rest.starts_with("revoked") => {
                    if let Some(key) = rest.split_whitespace().nth(3)
                        && let Ok(blob) = base64::engine::general_purpose::STANDARD.decode(key)
                    {
                        f.revoked.push(blob);
                    }
                }
                // `@cert-authority`: host certificates are not used by hardway's nodes.
                Some(_) => {}
                None => f.entries.push(line.to_string()),
            }
        }
        Ok(f)
    }

    fn known_hosts(&self, sess: &Session, t: &Target) -> Result<ssh2::KnownHosts, SshError> {
        let err = |e: ssh2::Error| SshError::Session {
            host: t.host.clone(),
            reason: format!("reading {}: {e}", t.known_hosts.display()),
        };
        let mut kh = sess.known_hosts().map_err(err)?;
        for line in &self.entries {
            kh.read_str(line, KnownHostFileKind::OpenSSH).map_err(err)?;
        }
        Ok(kh)
    }

    /// The host key algorithms to offer for `t`: those of the key types known_hosts has for it.
    fn types_for(&self, sess: &Session, t: &Target) -> Result<Vec<&'static str>, SshError> {
        use base64::Engine;
        let kh = self.known_hosts(sess, t)?;
        let mut types = Vec::new();
        let hosts = kh.hosts().map_err(|e| SshError::Session {
            host: t.host.clone(),
            reason: e.to_string(),
        })?;
        for h in hosts {
            let Ok(blob) = base64::engine::general_purpose::STANDARD.decode(h.key()) else {
                continue;
            };
            if !matches!(kh.check_port(&t.host, t.port, &blob), CheckResult::Match) {
                continue;
            }
            // The blob starts with the key type as an SSH string (4-byte length, then bytes).
            let len = blob
                .get(..4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .unwrap_or(0);
            let algorithms: &[&'static str] = match blob.get(4..4 + len) {
                Some(b"ssh-ed25519") => &["ssh-ed25519"],
                Some(b"ecdsa-sha2-nistp256") => &["ecdsa-sha2-nistp256"],
                Some(b"ecdsa-sha2-nistp384") => &["ecdsa-sha2-nistp384"],
                Some(b"ecdsa-sha2-nistp521") => &["ecdsa-sha2-nistp521"],
                Some(b"ssh-rsa") => &["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
                _ => &[],
            };
            for a in algorithms {
                if !types.contains(a) {
                    types.push(*a);
                }
            }
        }
        Ok(types)
    }
}

fn verify_host_key(
    sess: &Session,
    t: &Target,
    known: &KnownHostsFile,
    policy: HostKeyPolicy,
) -> Result<(), SshError> {
    let session_err = |reason: String| SshError::Session {
        host: t.host.clone(),
        reason,
    };
    let (key, key_type) = sess
        .host_key()
        .ok_or_else(|| session_err("the server sent no host key".into()))?;
    let kh_path = t.known_hosts.display().to_string();
    if known.revoked.iter().any(|r| r.as_slice() == key) {
        return Err(SshError::RevokedHostKey {
            host: t.host.clone(),
            fingerprint: fingerprint(sess),
            known_hosts: kh_path,
        });
    }
    let kh = known.known_hosts(sess, t)?;
    match kh.check_port(&t.host, t.port, key) {
        CheckResult::Match => Ok(()),
        CheckResult::Mismatch => Err(SshError::ChangedHostKey {
            host: t.host.clone(),
            name: t.known_hosts_name(),
            fingerprint: fingerprint(sess),
            known_hosts: kh_path,
        }),
        CheckResult::NotFound if policy == HostKeyPolicy::AcceptNew => {
            append_known_host(&t.known_hosts, &t.known_hosts_name(), key_type, key)
                .map_err(|e| session_err(format!("recording the host key in {kh_path}: {e}")))
        }
        CheckResult::NotFound => Err(SshError::UnknownHostKey {
            host: t.host.clone(),
            fingerprint: fingerprint(sess),
            known_hosts: kh_path,
        }),
        CheckResult::Failure => Err(session_err(format!(
            "checking the host key against {kh_path} failed"
        ))),
    }
}

/// Appends one OpenSSH known_hosts line. Appending (rather than rewriting the file through
/// libssh2) keeps the user's other entries, comments and hashing untouched, and is safe when
/// several hosts are accepted at once (one write of one line each).
fn append_known_host(
    path: &Path,
    name: &str,
    key_type: ssh2::HostKeyType,
    key: &[u8],
) -> std::io::Result<()> {
    use base64::Engine;
    let type_name = match key_type {
        ssh2::HostKeyType::Rsa => "ssh-rsa",
        ssh2::HostKeyType::Dss => "ssh-dss",
        ssh2::HostKeyType::Ecdsa256 => "ecdsa-sha2-nistp256",
        ssh2::HostKeyType::Ecdsa384 => "ecdsa-sha2-nistp384",
        ssh2::HostKeyType::Ecdsa521 => "ecdsa-sha2-nistp521",
        ssh2::HostKeyType::Ed25519 => "ssh-ed25519",
        ssh2::HostKeyType::Unknown => return Err(std::io::Error::other("unknown host key type")),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let line = format!(
        "{name} {type_name} {}\n",
        base64::engine::general_purpose::STANDARD.encode(key)
    );
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(line.as_bytes())
}

fn authenticate(sess: &Session, t: &Target) -> Result<(), SshError> {
    let auth_err = |reason: String| SshError::Auth {
        user: t.user.clone(),
        host: t.host.clone(),
        reason,
    };
    match &t.identity_file {
        Some(key) => {
            if !key.exists() {
                return Err(auth_err(format!(
                    "identity file {} does not exist",
                    key.display()
                )));
            }
            sess.userauth_pubkey_file(&t.user, None, key, None)
                .map_err(|e| auth_err(format!("key {} was refused: {e}", key.display())))?;
        }
        None => sess.userauth_agent(&t.user).map_err(|e| {
            auth_err(format!(
                "no identity_file in the inventory and the SSH agent failed: {e}"
            ))
        })?,
    }
    if sess.authenticated() {
        Ok(())
    } else {
        Err(auth_err("not authenticated".into()))
    }
}

impl Transport for Conn {
    fn run(&self, script: &str) -> Result<Output, RemoteError> {
        Ok(self.script(script)?)
    }

    fn run_quiet(&self, script: &str, quiet: Duration) -> Result<Output, RemoteError> {
        let longer = COMMAND_TIMEOUT.max(quiet + Duration::from_secs(60));
        self.sess
            .set_timeout(longer.as_millis().min(u32::MAX as u128) as u32);
        let out = self.script(script);
        self.sess.set_timeout(COMMAND_TIMEOUT.as_millis() as u32);
        Ok(out?)
    }

    fn socket_request(&self, socket: &str, request: &[u8]) -> Result<String, RemoteError> {
        Ok(self.unix_socket_request(socket, request)?)
    }
}

/// Opens an SSH session per node as the inventory says (user, port, key, known_hosts, bastion).
pub struct SshConnector {
    inv: Inventory,
    policy: HostKeyPolicy,
    log: Option<Arc<RunLog>>,
    sudo_password: Option<SudoPassword>,
}

impl SshConnector {
    pub fn new(inv: &Inventory, policy: HostKeyPolicy) -> SshConnector {
        SshConnector {
            inv: inv.clone(),
            policy,
            log: None,
            sudo_password: None,
        }
    }

    /// The password for `ssh.sudo = "password"`.
    pub fn with_sudo_password(mut self, password: Option<SudoPassword>) -> SshConnector {
        self.sudo_password = password;
        self
    }

    /// Logs every script sent, redacted, and its output.
    pub fn with_log(mut self, log: Option<Arc<RunLog>>) -> SshConnector {
        self.log = log;
        self
    }
}

impl Connector for SshConnector {
    fn connect(&self, node: &Node) -> Result<Box<dyn Remote>, RemoteError> {
        let conn = Conn::connect(&Target::for_node(&self.inv, node), self.policy)?
            .with_sudo_password(self.sudo_password.clone());
        Ok(Box::new(
            ShellRemote::new(node.name.clone(), conn).with_log(self.log.clone()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What nodes get: three tries, 1 s and 2 s apart, no keepalive; `ssh.connect_attempts`
    /// sets the tries.
    #[test]
    fn nodes_are_tried_three_times_a_second_and_two_apart_without_keepalive() {
        assert_eq!(
            (0..3)
                .map(|n| Retry::DEFAULT.wait_before(n))
                .collect::<Vec<_>>(),
            [0, 1000, 2000].map(Duration::from_millis)
        );
        let text = crate::testing::INVENTORY;
        let inv = crate::inventory::parse(Path::new("t.toml"), text).unwrap();
        let t = Target::for_node(&inv, &inv.nodes[0]);
        assert_eq!((t.retry, t.keepalive), (Retry::DEFAULT, None));
        let inv = crate::inventory::parse(
            Path::new("t.toml"),
            &text.replacen("[binaries]", "[ssh]\nconnect_attempts = 1\n\n[binaries]", 1),
        )
        .unwrap();
        assert_eq!(
            Target::for_node(&inv, &inv.nodes[0]).retry,
            Retry {
                attempts: 1,
                first_wait: Duration::from_secs(1)
            }
        );
    }
}
