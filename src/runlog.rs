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

impl RunLog {
    /// Where logs go by default.
    pub fn default_dir() -> PathBuf {
        let state = std::env::var_os("XDG_STATE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .unwrap_or_else(|| PathBuf::from("/var/tmp"));
        state.join("hardway/logs")
    }

    /// The newest log in `dir` (names start with a sortable timestamp).
    pub fn latest(dir: &Path) -> Option<PathBuf> {
        let mut logs: Vec<PathBuf> = std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "log")).collect();
        logs.sort();
        logs.pop()
    }

    /// Opens a new log: `path`, or a new file in the default directory.
    pub fn create(path: Option<&Path>, command: &str, argv: &[String]) -> std::io::Result<RunLog> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => {
                let dir = Self::default_dir();
                std::fs::create_dir_all(&dir)?;
                let stamp = now_rfc3339().replace([':', '.'], "-");
                dir.join(format!("{stamp}-{command}-{}.log", std::process::id()))
            }
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(&path)?;
        let log = RunLog { path, file: Mutex::new(file) };
        log.write(&format!("###### hardway {} {} ######\nargv: {}\n", env!("CARGO_PKG_VERSION"), now_rfc3339(), argv.join(" ")));
        Ok(log)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records which inventory the run used, by its SHA-256.
    pub fn inventory(&self, path: &Path, text: &str) {
        self.write(&format!("inventory: {} sha256:{}\n", path.display(), crate::plan::sha256_hex(text.as_bytes())));
    }

    /// A script sent to a host (already redacted), and what came back.
    pub fn remote(&self, host: &str, script: &str, status: Option<i32>, stdout: &str, stderr: &str, took: Duration) {
        let mut s = format!("--- {} {host}: script ({} ms, exit {})\n", now_rfc3339(), took.as_millis(), status.map(|c| c.to_string()).unwrap_or_else(|| "-".into()));
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

impl Sink for RunLog {
    fn event(&self, e: &Event) {
        let mut s = format!("{} {:?} {} {}", e.ts, e.status, e.host.as_deref().unwrap_or("-"), e.phase.as_deref().unwrap_or("-"));
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
        self.write(&format!("{} summary: ok={} hosts={} failed={:?} counts={:?} ({} ms)\n", sm.ts, sm.ok, sm.hosts, sm.failed, sm.counts, sm.duration_ms));
    }
}
