//! File-system helpers: symlink-safe writes, lock files, resolved paths, the mount table, and
//! an `rm -rf` that unmounts first.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::error::{LabError, Result, io_error};
use super::tools::{command, run};

/// An exclusive lock on `path` (created if missing), held until the file is dropped.
pub(super) fn lock(path: &Path) -> Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)
        .map_err(io_error("open", path))?;
    f.lock().map_err(io_error("lock", path))?;
    Ok(f)
}

/// Writes a file of the lab's own state (pid files, records, known_hosts), replacing rather than
/// following a link at the file itself. Only for paths the host alone controls: a file below a
/// machine's root, where any directory on the way may be a link the machine planted, goes
/// through [`crate::safe_fs`] (`write_beneath`, `Dir::walk`).
pub(super) fn write_file(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        fs::remove_file(path).map_err(io_error("remove", path))?;
    }
    fs::write(path, contents).map_err(io_error("write", path))
}

pub(super) fn write_file_mode(path: &Path, contents: impl AsRef<[u8]>, mode: u32) -> Result<()> {
    write_file(path, contents)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_error("chmod", path))
}

pub(super) fn create_dir_all(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(io_error("create", path))
}

/// The last `lines` lines of a text file; empty if it cannot be read.
pub(super) fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// An absolute path without symlinks (as far as it exists), because paths are compared with
/// /proc/*/cmdline and /proc/self/mountinfo, which show them resolved.
pub(super) fn resolve(p: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(p).map_err(io_error("resolve", p))?;
    for base in abs.ancestors() {
        if let Ok(real) = fs::canonicalize(base) {
            return Ok(real.join(abs.strip_prefix(base).expect("an ancestor is a prefix")));
        }
    }
    Ok(abs)
}

/// (mount point, file system type, super options) of every mount.
pub(super) fn mounts() -> Vec<(PathBuf, String, String)> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let (before, after) = l.split_once(" - ")?;
            let mount_point = PathBuf::from(unescape_mountinfo(before.split(' ').nth(4)?));
            let mut after = after.split(' ');
            let fs_type = after.next()?.to_string();
            let options = unescape_mountinfo(after.nth(1).unwrap_or(""));
            Some((mount_point, fs_type, options))
        })
        .collect()
}

/// Mounts an overlay at `target` (made if missing): `lower` read-only below, the writes in
/// `state/upper` (overlayfs' work directory `state/work` beside it).
pub(super) fn mount_overlay(lower: &Path, state: &Path, target: &Path) -> Result<()> {
    let (upper, work) = (state.join("upper"), state.join("work"));
    for d in [&upper, &work, target] {
        create_dir_all(d)?;
    }
    let dirs = [lower, upper.as_path(), work.as_path()].map(|p| p.display().to_string());
    // The option string has no quoting: these characters would split or misparse it.
    if let Some(bad) = dirs
        .iter()
        .find(|d| d.contains([',', ':', '\\']) || d.contains(char::is_whitespace))
    {
        return Err(LabError::BadPath {
            path: bad.into(),
            reason: "the lab cannot mount an overlay on a path with ',', ':', '\\' or white space"
                .into(),
        });
    }
    let [lower, upper, work] = dirs;
    run(command("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!("lowerdir={lower},upperdir={upper},workdir={work}"))
        .arg(target))?;
    Ok(())
}

pub(super) fn is_mount_point(p: &Path) -> bool {
    mounts().iter().any(|(m, _, _)| m == p)
}

/// Mount points of the overlays that have `lower` as their lower layer.
pub(super) fn overlays_on(lower: &Path) -> Vec<PathBuf> {
    let want = format!("lowerdir={}", lower.display());
    mounts()
        .into_iter()
        .filter(|(_, t, o)| t == "overlay" && o.split(',').any(|x| x == want))
        .map(|(m, _, _)| m)
        .collect()
}

/// Mount points at or below `dir`, deepest first.
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let mut mounts: Vec<PathBuf> = mounts()
        .into_iter()
        .map(|(m, _, _)| m)
        .filter(|m| m.starts_with(dir))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    mounts.dedup();
    mounts
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal escapes.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `rm -rf` that first unmounts what an interrupted debootstrap may have left mounted inside
/// (its proc and sys), and that never crosses into another file system.
pub(super) fn remove_tree(dir: &Path) -> Result<()> {
    if fs::symlink_metadata(dir).is_err() {
        return Ok(());
    }
    for m in mounts_below(dir) {
        run(command("umount").arg("-l").arg(&m))?;
    }
    run(command("rm")
        .args(["-rf", "--one-file-system", "--"])
        .arg(dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/a\040b\134c"), r"/a b\c");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
    }
}
