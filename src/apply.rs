//! Stage 5: carry out a host's plan over SSH.
//!
//! Each function here is one round trip: [`gather`] reads everything preflight and the planner
//! need (file hashes and modes, binaries, listening ports, clock, swap), [`upload`] places every
//! changed file, [`systemctl`] reloads, enables and (re)starts units.
//!
//! Uploads are staged in a `.hardway-new` directory beside their targets (same file system, so
//! each `mv` is an atomic rename — a unit never reads half a file), all checked by one
//! `sha256sum -c` before any is moved, then given their mode and owner. Text goes through the
//! shell's printf builtin, so a host costs a fixed handful of processes however many files it
//! gets: per-file commands were most of a 50-host push (see the README's performance section).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::SystemTime;

use anyhow::{Result, bail};
use base64::Engine;

use crate::plan::{ChangeKind, FileChange, RemoteFile, sha256_hex};
use crate::ssh::{Conn, sh_quote};

/// A listening TCP socket on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub port: u16,
    pub process: String,
}

/// What the node told us in one round trip.
#[derive(Debug, Clone)]
pub struct Facts {
    pub systemd: bool,
    /// Node clock minus ours, in seconds (estimated at the midpoint of the round trip).
    pub clock_offset: f64,
    pub swap_active: bool,
    pub present_binaries: BTreeSet<String>,
    pub listeners: Vec<Listener>,
    pub hosts_block: bool,
    pub files: BTreeMap<String, RemoteFile>,
}

const MARK: &str = "@@hardway:";

fn now_secs() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Reads the node's state for `paths`, `binaries` and the `/etc/hosts` block of `cluster`.
pub fn gather(conn: &Conn, paths: &[&str], binaries: &[String], cluster: &str) -> Result<Facts> {
    let quoted = |xs: &mut dyn Iterator<Item = &str>| xs.map(sh_quote).collect::<Vec<_>>().join(" ");
    let files = quoted(&mut paths.iter().copied());
    let bins = quoted(&mut binaries.iter().map(String::as_str));
    let begin = sh_quote(&format!("^# BEGIN hardway {cluster}$"));
    let mut s = String::from("export LC_ALL=C\n");
    let _ = writeln!(s, "echo {MARK}systemd; if [ -d /run/systemd/system ]; then echo yes; else echo no; fi");
    let _ = writeln!(s, "echo {MARK}time; date +%s.%N");
    let _ = writeln!(s, "echo {MARK}swap; tail -n +2 /proc/swaps 2>/dev/null");
    let _ = writeln!(s, "echo {MARK}bins; for b in {bins}; do [ -x \"$b\" ] && echo \"$b\"; done; true");
    let _ = writeln!(s, "echo {MARK}listen; ss -Htlnp 2>/dev/null");
    let _ = writeln!(s, "echo {MARK}hosts; grep -c {begin} /etc/hosts 2>/dev/null; true");
    if !paths.is_empty() {
        let _ = writeln!(s, "echo {MARK}sha; sha256sum -- {files} 2>/dev/null; true");
        let _ = writeln!(s, "echo {MARK}stat; stat -c '%a %U:%G %n' -- {files} 2>/dev/null; true");
    }
    let t0 = now_secs();
    let out = conn.script(&s)?;
    let t1 = now_secs();
    if !out.ok() {
        bail!("reading the node's state failed ({}): {}", out.status, out.stderr.trim());
    }
    let mut sections: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut current = "";
    for line in out.stdout.lines() {
        if let Some(name) = line.strip_prefix(MARK) {
            current = name;
            sections.entry(current).or_default();
        } else {
            sections.entry(current).or_default().push(line);
        }
    }
    let section = |n: &str| sections.get(n).cloned().unwrap_or_default();
    let remote_time: f64 = section("time").first().and_then(|t| t.trim().parse().ok()).unwrap_or(f64::NAN);

    let mut sha = BTreeMap::new();
    for l in section("sha") {
        if let Some((hash, path)) = l.split_once("  ") {
            sha.insert(path.to_string(), hash.to_string());
        }
    }
    let mut files = BTreeMap::new();
    for l in section("stat") {
        let mut it = l.splitn(3, ' ');
        if let (Some(mode), Some(owner), Some(path)) = (it.next(), it.next(), it.next())
            && let (Some(hash), Ok(mode)) = (sha.get(path), u32::from_str_radix(mode, 8)) {
                files.insert(path.to_string(), RemoteFile { sha256: hash.clone(), mode, owner: owner.to_string() });
            }
    }
    Ok(Facts {
        systemd: section("systemd").first() == Some(&"yes"),
        clock_offset: remote_time - (t0 + t1) / 2.0,
        swap_active: section("swap").iter().any(|l| !l.trim().is_empty()),
        present_binaries: section("bins").iter().map(|s| s.to_string()).collect(),
        listeners: section("listen").iter().filter_map(|l| parse_ss(l)).collect(),
        hosts_block: section("hosts").first().and_then(|n| n.trim().parse::<u32>().ok()).unwrap_or(0) > 0,
        files,
    })
}

/// `LISTEN 0 4096 10.0.0.1:2379 0.0.0.0:* users:(("etcd",pid=1,fd=7))` → port 2379, "etcd".
fn parse_ss(line: &str) -> Option<Listener> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let local = fields.get(3)?;
    let port = local.rsplit(':').next()?.parse().ok()?;
    let process = line.split("((\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("?").to_string();
    Some(Listener { port, process })
}

/// Places every change in one script, with a fixed number of processes per host rather than
/// per file: text is written by the shell's printf builtin (base64 -d only for binary files)
/// into a staging directory beside each target directory, all checked by one sha256sum, chmod
/// per mode, one chown, and one `mv` per target directory (rename(2): atomic per file).
pub fn upload(conn: &Conn, changes: &[FileChange]) -> Result<()> {
    const STAGE: &str = ".hardway-new";
    if changes.is_empty() {
        return Ok(());
    }
    let q = |p: &str| sh_quote(p);
    let dir_of = |p: &str| p.rsplit_once('/').map(|(d, _)| if d.is_empty() { "/".to_string() } else { d.to_string() }).unwrap_or_else(|| "/".into());
    let stage_of = |d: &str| format!("{}/{STAGE}", d.trim_end_matches('/'));
    let mut s = String::from("set -e\numask 077\n");
    let mut by_dir: BTreeMap<String, Vec<&FileChange>> = BTreeMap::new();
    let mut by_mode: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let mut owned: Vec<String> = Vec::new();
    for c in changes {
        if c.kind == ChangeKind::Metadata {
            by_mode.entry(c.file.mode).or_default().push(q(&c.path));
            owned.push(q(&c.path));
        } else {
            by_dir.entry(dir_of(&c.path)).or_default().push(c);
        }
    }
    let stages: Vec<String> = by_dir.keys().map(|d| q(&stage_of(d))).collect();
    let mut sums = String::new();
    if !by_dir.is_empty() {
        let dirs: Vec<String> = by_dir.keys().map(|d| q(d)).collect();
        let _ = writeln!(s, "rm -rf {}", stages.join(" "));
        let _ = writeln!(s, "(umask 022; mkdir -p {})", dirs.join(" "));
        let _ = writeln!(s, "mkdir {}", stages.join(" "));
        for (dir, files) in &by_dir {
            for c in files {
                let name = c.path.rsplit('/').next().unwrap_or("");
                let tmp = format!("{}/{name}", stage_of(dir));
                match std::str::from_utf8(&c.file.contents) {
                    Ok(text) if !text.contains('\0') => {
                        let _ = writeln!(s, "printf '%s' {} > {}", q(text), q(&tmp));
                    }
                    _ => {
                        let b64 = base64::engine::general_purpose::STANDARD.encode(&c.file.contents);
                        let _ = writeln!(s, "base64 -d > {} <<'__HARDWAY_EOF__'", q(&tmp));
                        for chunk in b64.as_bytes().chunks(76) {
                            s.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
                            s.push('\n');
                        }
                        s.push_str("__HARDWAY_EOF__\n");
                    }
                }
                let _ = writeln!(sums, "{}  {tmp}", sha256_hex(&c.file.contents));
                by_mode.entry(c.file.mode).or_default().push(q(&tmp));
                owned.push(q(&tmp));
            }
        }
        let _ = write!(
            s,
            "if ! sha256sum -c --quiet >&2 <<'__HARDWAY_SUMS__'\n{sums}__HARDWAY_SUMS__\nthen rm -rf {}; echo 'checksum mismatch' >&2; exit 1; fi\n",
            stages.join(" ")
        );
    }
    for (mode, paths) in &by_mode {
        let _ = writeln!(s, "chmod {mode:o} {}", paths.join(" "));
    }
    let _ = writeln!(s, "chown root:root {}", owned.join(" "));
    for (dir, files) in &by_dir {
        let tmps: Vec<String> = files.iter().map(|c| q(&format!("{}/{}", stage_of(dir), c.path.rsplit('/').next().unwrap_or("")))).collect();
        let _ = writeln!(s, "mv -f {} {}", tmps.join(" "), q(dir));
    }
    if !stages.is_empty() {
        let _ = writeln!(s, "rmdir {}", stages.join(" "));
    }
    let out = conn.script(&s)?;
    if !out.ok() {
        bail!("uploading {} files failed: {}", changes.len(), out.stderr.trim());
    }
    Ok(())
}

/// Replaces the cluster's block in /etc/hosts with /etc/hardway/hosts, keeping every other line.
pub fn merge_hosts_block(conn: &Conn, cluster: &str) -> Result<()> {
    let begin = format!("# BEGIN hardway {cluster}");
    let end = format!("# END hardway {cluster}");
    let script = format!(
        "set -e\ntmp=/etc/hosts.hardway-tmp\nawk -v b={} -v e={} '$0==b{{skip=1}} !skip{{print}} $0==e{{skip=0}}' /etc/hosts > $tmp\n\
         cat /etc/hardway/hosts >> $tmp\nchmod 644 $tmp\n\
         cat $tmp > /etc/hosts\nrm -f $tmp\n",
        sh_quote(&begin),
        sh_quote(&end)
    );
    // `cat >` rather than `mv`: /etc/hosts may be a bind mount (containers), which rename breaks.
    let out = conn.script(&script)?;
    if !out.ok() {
        bail!("updating /etc/hosts failed: {}", out.stderr.trim());
    }
    Ok(())
}

/// Reloads systemd if asked, enables the units, restarts `restart` and starts `start`.
/// With `no_block`, systemctl returns at once (etcd members must start together: each one's
/// start blocks until it has quorum).
pub fn systemctl(conn: &Conn, daemon_reload: bool, restart: &[String], start: &[String], no_block: bool) -> Result<()> {
    let mut s = String::from("set -e\n");
    if daemon_reload {
        s.push_str("systemctl daemon-reload\n");
    }
    let all: Vec<&String> = restart.iter().chain(start).collect();
    if all.is_empty() && !daemon_reload {
        return Ok(());
    }
    let nb = if no_block { " --no-block" } else { "" };
    let list = |us: &[String]| us.iter().map(|u| sh_quote(&format!("{u}.service"))).collect::<Vec<_>>().join(" ");
    if !all.is_empty() {
        let names: Vec<String> = all.iter().map(|u| u.to_string()).collect();
        let _ = writeln!(s, "systemctl enable --quiet {}", list(&names));
    }
    if !restart.is_empty() {
        let _ = writeln!(s, "systemctl restart{nb} {}", list(restart));
    }
    if !start.is_empty() {
        let _ = writeln!(s, "systemctl start{nb} {}", list(start));
    }
    let out = conn.script(&s)?;
    if !out.ok() {
        let units: Vec<String> = all.iter().map(|u| u.to_string()).collect();
        let journal = journal_tail(conn, &units, 15).unwrap_or_default();
        bail!("systemctl failed: {}\n{journal}", out.stderr.trim());
    }
    Ok(())
}

/// `systemctl is-active` for each unit.
pub fn unit_states(conn: &Conn, units: &[String]) -> Result<BTreeMap<String, String>> {
    if units.is_empty() {
        return Ok(BTreeMap::new());
    }
    let list: Vec<String> = units.iter().map(|u| sh_quote(&format!("{u}.service"))).collect();
    let out = conn.script(&format!("systemctl is-active {}; true", list.join(" ")))?;
    Ok(units.iter().cloned().zip(out.stdout.lines().map(str::to_string)).collect())
}

/// The last lines of each unit's journal, for error reports.
pub fn journal_tail(conn: &Conn, units: &[String], lines: u32) -> Result<String> {
    let mut s = String::new();
    for u in units {
        let _ = writeln!(s, "echo '--- journal of {u}:'; journalctl -u {} -n {lines} --no-pager -o cat 2>&1; true", sh_quote(&format!("{u}.service")));
    }
    Ok(conn.script(&s)?.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ss_lines() {
        let l = parse_ss("LISTEN 0      4096      10.213.0.11:2379      0.0.0.0:*    users:((\"etcd\",pid=231,fd=8))").unwrap();
        assert_eq!(l, Listener { port: 2379, process: "etcd".into() });
        let l = parse_ss("LISTEN 0 128 [::]:22 [::]:* users:((\"sshd\",pid=1,fd=4))").unwrap();
        assert_eq!(l.port, 22);
        assert!(parse_ss("garbage").is_none());
    }
}
