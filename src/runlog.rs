//! A log of every run, for the report a user attaches when a deploy failed on host 37 of 50:
//! the command line, the inventory's hash, every event, and every script sent to every host
//! with its exit status, output and duration.
//!
//! One file per run (mode 0600) under `$XDG_STATE_HOME/hardway/logs/` (or
//! `~/.local/state/hardway/logs/`), or wherever `--log-file` says. Secrets are never written:
//! scripts are logged as [`crate::remote::script::Script::redacted`] shows them (file contents
//! that deploy sends are replaced by their size and hash), passwords never enter a script, and
//! no operation reads a private key back.

use std::fmt::Write as _;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::events::{Event, Sink, Summary, now_rfc3339};

pub struct RunLog {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

/// Why a run log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum RunLogError {
    #[error(
        "neither XDG_STATE_HOME nor HOME is set, and /run/user/{uid} is not this user's private directory (it must exist, belong to uid {uid} and be closed to others): set HOME, or give --log-file"
    )]
    NoPrivatePlace { uid: u32 },
    #[error("{} is readable or writable by others (mode {mode:04o}): a run log holds every script sent to the nodes; chmod 600 it or give another --log-file", path.display())]
    Shared { path: PathBuf, mode: u32 },
    #[error("{} belongs to uid {owner}, not to this user (uid {me}): give another --log-file", path.display())]
    NotMine { path: PathBuf, owner: u32, me: u32 },
    #[error("{} is not a regular file: give another --log-file", path.display())]
    NotAFile { path: PathBuf },
    #[error(transparent)]
    Private(#[from] crate::safe_fs::SafeFsError),
}

impl RunLog {
    /// Where logs go by default: `hardway/logs` below the user's state directory
    /// (`$XDG_STATE_HOME`, `~/.local/state`), or, without either, below `/run/user/<uid>` when
    /// that is this user's private directory; never a shared one.
    pub fn default_location() -> Result<(PathBuf, PathBuf), RunLogError> {
        let rel = PathBuf::from("hardway/logs");
        let state = std::env::var_os("XDG_STATE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|h| PathBuf::from(h).join(".local/state"))
            });
        if let Some(state) = state {
            return Ok((state, rel));
        }
        let uid = crate::safe_fs::euid();
        let run_user = PathBuf::from(format!("/run/user/{uid}"));
        match std::fs::symlink_metadata(&run_user) {
            Ok(m)
                if m.is_dir()
                    && std::os::unix::fs::MetadataExt::uid(&m) == uid
                    && std::os::unix::fs::MetadataExt::mode(&m) & 0o077 == 0 =>
            {
                Ok((run_user, rel))
            }
            _ => Err(RunLogError::NoPrivatePlace { uid }),
        }
    }

    pub fn default_dir() -> Result<PathBuf, RunLogError> {
        Self::default_location().map(|(base, rel)| base.join(rel))
    }

    /// The newest log in `dir` (names start with a sortable timestamp).
    pub fn latest(dir: &Path) -> Option<PathBuf> {
        let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        logs.sort();
        logs.pop()
    }

    /// Opens a new log: `path`, or a new file in the default directory. Either is this user's,
    /// mode 0600, and never opened through a link (`O_NOFOLLOW`); the default directory's
    /// `hardway/logs` is 0700 and reached without following links.
    pub fn create(
        path: Option<&Path>,
        command: &str,
        argv: &[String],
    ) -> Result<RunLog, RunLogError> {
        let (path, file) = match path {
            Some(p) => (p.to_path_buf(), open_log_file(p)?),
            None => {
                let (base, rel) = Self::default_location()?;
                let dir = crate::safe_fs::private_dir(&base, &rel)?;
                let stamp = now_rfc3339().replace([':', '.'], "-");
                let name = format!("{stamp}-{command}-{}.log", std::process::id());
                let file = dir.create_new(&name, 0o600)?;
                (dir.path().join(name), file)
            }
        };
        let log = RunLog {
            path,
            file: Mutex::new(file),
        };
        log.write(&format!(
            "###### hardway {} {} ######\nargv: {}\n",
            env!("CARGO_PKG_VERSION"),
            now_rfc3339(),
            argv.join(" ")
        ));
        Ok(log)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records which inventory the run used, by its SHA-256.
    pub fn inventory(&self, path: &Path, text: &str) {
        self.write(&format!(
            "inventory: {} sha256:{}\n",
            path.display(),
            crate::digest::sha256_hex(text.as_bytes())
        ));
    }

    /// A script sent to a host (already redacted), and what came back.
    pub fn remote(
        &self,
        host: &str,
        script: &str,
        status: Option<i32>,
        stdout: &str,
        stderr: &str,
        took: Duration,
    ) {
        let mut s = format!(
            "--- {} {host}: script ({} ms, exit {})\n",
            now_rfc3339(),
            took.as_millis(),
            status.map(|c| c.to_string()).unwrap_or_else(|| "-".into())
        );
        for l in script.lines() {
            let _ = writeln!(s, "  > {l}");
        }
        for l in stdout.lines() {
            let _ = writeln!(s, "  1 {l}");
        }
        for l in stderr.lines() {
            let _ = writeln!(s, "  2 {l}");
        }
        self.write(&s);
    }

    pub fn write(&self, text: &str) {
        if let Ok(mut f) = self.file.lock() {
            let _ = f.write_all(text.as_bytes());
        }
    }
}

/// `--log-file`: appended to when it is this user's regular file closed to others, created
/// 0600 (its missing directories 0700) when it does not exist; a link there is refused, never
/// followed.
fn open_log_file(path: &Path) -> Result<std::fs::File, RunLogError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let err = |op: &'static str| {
        move |error: std::io::Error| crate::safe_fs::SafeFsError::Io {
            op,
            path: path.to_path_buf(),
            error,
        }
    };
    if let Some(parent) = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty() && !p.exists())
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(err("create the directory of"))?;
    }
    let open = |create: bool| {
        let mut o = std::fs::OpenOptions::new();
        o.append(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
        if create {
            o.create_new(true).mode(0o600);
        }
        o.open(path)
    };
    let is_link = || std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    let file = match open(true) {
        Ok(f) => {
            // The mode given to open() went through the umask.
            f.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(err("set the mode of"))?;
            return Ok(f);
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && !is_link() => open(false),
        Err(e) => Err(e),
    };
    let file = file.map_err(|e| {
        if is_link() {
            RunLogError::Private(crate::safe_fs::SafeFsError::Link {
                path: path.to_path_buf(),
                below: path.parent().unwrap_or(Path::new("/")).to_path_buf(),
            })
        } else {
            RunLogError::Private(err("open")(e))
        }
    })?;
    let m = file.metadata().map_err(err("look at"))?;
    let me = crate::safe_fs::euid();
    if !m.is_file() {
        return Err(RunLogError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    if m.uid() != me {
        return Err(RunLogError::NotMine {
            path: path.to_path_buf(),
            owner: m.uid(),
            me,
        });
    }
    if m.mode() & 0o077 != 0 {
        return Err(RunLogError::Shared {
            path: path.to_path_buf(),
            mode: m.mode() & 0o7777,
        });
    }
    Ok(file)
}

impl Sink for RunLog {
    fn event(&self, e: &Event) {
        let mut s = format!(
            "{} {:?} {} {}",
            e.ts,
            e.status,
            e.host.as_deref().unwrap_or("-"),
            e.phase.as_deref().unwrap_or("-")
        );
        let _ = write!(s, " {}", e.step);
        if let Some(ms) = e.duration_ms {
            let _ = write!(s, " ({ms} ms)");
        }
        if let Some(m) = &e.message {
            let _ = write!(s, ": {}", m.replace('\n', "\n    "));
        }
        s.push('\n');
        self.write(&s);
    }

    fn summary(&self, sm: &Summary) {
        self.write(&format!(
            "{} summary: ok={} hosts={} failed={:?} counts={:?} ({} ms)\n",
            sm.ts, sm.ok, sm.hosts, sm.failed, sm.counts, sm.duration_ms
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// `--log-file` at a link must not append the run (scripts, outputs) to the link's target;
    /// a new log is 0600.
    #[test]
    fn a_log_file_that_is_a_link_is_refused_and_a_new_one_is_private() {
        let t = tempfile::tempdir().unwrap();
        let victim = t.path().join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let link = t.path().join("run.log");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let e = RunLog::create(Some(&link), "verify", &["hardway".into()])
            .err()
            .expect("a link is refused");
        assert!(
            e.to_string().contains("symbolic link")
                && e.to_string().contains(&link.display().to_string()),
            "{e}"
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        let fresh = t.path().join("logs/new.log");
        let log = RunLog::create(Some(&fresh), "verify", &["hardway".into()]).unwrap();
        log.write("x\n");
        assert_eq!(
            std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o7777,
            0o600
        );
    }
}
