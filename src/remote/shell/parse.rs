//! Reading the scripts' answers: the `sha` and `stat` sections (and the script lines that make
//! them), `ss -ltnp` lines, and `systemctl is-active` states. Kept apart from the operations so
//! that each format is parsed in one place, with its quirks beside it.

use std::collections::BTreeMap;

use super::super::script::{Script, Sections, quote_all};
use super::super::{Listener, RemoteFile};

/// Adds the sections `sha` and `stat` for `paths` to `s`.
pub(super) fn stat_sections(s: &mut Script, paths: &[String]) {
    if paths.is_empty() {
        return;
    }
    let files = quote_all(paths.iter().map(String::as_str));
    s.section("sha")
        .raw(&format!("sha256sum -- {files} 2>/dev/null; true"));
    s.section("stat").raw(&format!(
        "stat -c '%a %U:%G %n' -- {files} 2>/dev/null; true"
    ));
}

pub(super) fn parse_stats(sec: &Sections) -> BTreeMap<String, RemoteFile> {
    let sha: BTreeMap<&str, &str> = sec
        .lines("sha")
        .iter()
        .filter_map(|l| l.split_once("  "))
        .map(|(hash, path)| (path, hash))
        .collect();
    let mut files = BTreeMap::new();
    for l in sec.lines("stat") {
        let mut it = l.splitn(3, ' ');
        if let (Some(mode), Some(owner), Some(path)) = (it.next(), it.next(), it.next())
            && let (Some(hash), Ok(mode)) = (sha.get(path), u32::from_str_radix(mode, 8))
        {
            files.insert(
                path.to_string(),
                RemoteFile {
                    sha256: hash.to_string(),
                    mode,
                    owner: owner.to_string(),
                },
            );
        }
    }
    files
}

/// `LISTEN 0 4096 10.0.0.1:2379 0.0.0.0:* users:(("etcd",pid=1,fd=7)) unit=etcd.service` →
/// port 2379, process "etcd", unit "etcd".
pub(super) fn parse_ss(line: &str) -> Option<Listener> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let local = fields.get(3)?;
    let port = local.rsplit(':').next()?.parse().ok()?;
    let process = line
        .split("((\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("?")
        .to_string();
    let unit = line
        .rsplit_once(" unit=")
        .map(|(_, u)| u.trim())
        .and_then(|u| u.strip_suffix(".service"))
        .filter(|u| !u.is_empty())
        .map(str::to_string);
    Some(Listener {
        port,
        process,
        unit,
    })
}

/// `systemctl is-enabled A B C` prints one state per unit, in order (`enabled`, `disabled`,
/// `static`, `not-found`, …).
pub(super) fn enabled_units(
    units: &[String],
    sec: &Sections,
) -> std::collections::BTreeSet<String> {
    let lines = sec.lines("enabled");
    units
        .iter()
        .zip(lines.iter())
        .filter(|(_, l)| l.trim() == "enabled")
        .map(|(u, _)| u.clone())
        .collect()
}

/// `systemctl is-active A B C` prints one state per unit, in order; without systemd it prints
/// nothing, and every unit is `unknown`.
pub(super) fn unit_states_of(units: &[String], sec: &Sections) -> BTreeMap<String, String> {
    let lines = sec.lines("states");
    units
        .iter()
        .enumerate()
        .map(|(i, u)| {
            (
                u.clone(),
                lines
                    .get(i)
                    .map(|l| l.trim().to_string())
                    .unwrap_or_else(|| "unknown".into()),
            )
        })
        .collect()
}
