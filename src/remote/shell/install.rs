//! The upload script behind [`Remote::install_files`](super::super::Remote::install_files):
//! staging, one checksum pass, modes, owner, atomic renames, and the record of placed paths.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine;

use super::super::script::{Script, quote, quote_all};
use super::super::{PLACED, Upload};
use crate::digest::sha256_hex;

/// The upload script: a fixed number of processes per host rather than per file. Text is
/// written by the shell's printf builtin (base64 -d only for binary files) into a staging
/// directory beside each target directory, all checked by one sha256sum, chmod per mode, one
/// chown, and one `mv` per target directory (rename(2): atomic per file).
pub(super) fn install_script(uploads: &[Upload<'_>]) -> Script {
    const STAGE: &str = ".hardway-new";
    let dir_of = |p: &str| match p.rsplit_once('/') {
        Some(("", _)) | None => "/".to_string(),
        Some((d, _)) => d.to_string(),
    };
    let stage_of = |d: &str| format!("{}/{STAGE}", d.trim_end_matches('/'));
    let name_of = |p: &str| p.rsplit('/').next().unwrap_or("").to_string();
    let mut s = Script::strict();
    s.raw("umask 077");
    let mut by_dir: BTreeMap<String, Vec<&Upload<'_>>> = BTreeMap::new();
    let mut by_mode: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let mut owned: Vec<String> = Vec::new();
    for u in uploads {
        if u.metadata_only {
            by_mode.entry(u.mode).or_default().push(quote(u.path));
            owned.push(quote(u.path));
        } else {
            by_dir.entry(dir_of(u.path)).or_default().push(u);
        }
    }
    let stages: Vec<String> = by_dir.keys().map(|d| quote(&stage_of(d))).collect();
    if !by_dir.is_empty() {
        let dirs: Vec<String> = by_dir.keys().map(|d| quote(d)).collect();
        s.raw(&format!("rm -rf {}", stages.join(" ")));
        s.raw(&format!("(umask 022; mkdir -p {})", dirs.join(" ")));
        s.raw(&format!("mkdir {}", stages.join(" ")));
        let mut sums = String::new();
        for (dir, files) in &by_dir {
            for u in files {
                let tmp = format!("{}/{}", stage_of(dir), name_of(u.path));
                // The contents are keys, kubeconfigs and configs: logs get their size and hash.
                let shown = format!(
                    "# {} <{} bytes, sha256 {}> > {}",
                    u.path,
                    u.contents.len(),
                    sha256_hex(u.contents),
                    quote(&tmp)
                );
                match std::str::from_utf8(u.contents) {
                    Ok(text) if !text.contains('\0') => {
                        s.secret(
                            &format!("printf '%s' {} > {}", quote(text), quote(&tmp)),
                            &shown,
                        );
                    }
                    _ => {
                        let b64 = base64::engine::general_purpose::STANDARD.encode(u.contents);
                        let mut heredoc =
                            format!("base64 -d > {} <<'__HARDWAY_EOF__'\n", quote(&tmp));
                        for chunk in b64.as_bytes().chunks(76) {
                            heredoc.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
                            heredoc.push('\n');
                        }
                        heredoc.push_str("__HARDWAY_EOF__");
                        s.secret(&heredoc, &shown);
                    }
                }
                // sha256sum -c reads names as written: a path with a newline cannot be checked,
                // and the inventory validator keeps such paths out.
                let _ = writeln!(sums, "{}  {tmp}", sha256_hex(u.contents));
                by_mode.entry(u.mode).or_default().push(quote(&tmp));
                owned.push(quote(&tmp));
            }
        }
        s.raw(&format!(
            "if ! sha256sum -c --quiet >&2 <<'__HARDWAY_SUMS__'\n{sums}__HARDWAY_SUMS__\nthen rm -rf {}; echo 'checksum mismatch' >&2; exit 1; fi",
            stages.join(" ")
        ));
    }
    for (mode, paths) in &by_mode {
        s.raw(&format!("chmod {mode:o} {}", paths.join(" ")));
    }
    s.raw(&format!("chown root:root {}", owned.join(" ")));
    for (dir, files) in &by_dir {
        let tmps: Vec<String> = files
            .iter()
            .map(|u| quote(&format!("{}/{}", stage_of(dir), name_of(u.path))))
            .collect();
        s.raw(&format!("mv -f {} {}", tmps.join(" "), quote(dir)));
    }
    if !stages.is_empty() {
        s.raw(&format!("rmdir {}", stages.join(" ")));
    }
    // What reset removes: every path hardway ever placed here, once each.
    let placed = quote(PLACED);
    s.raw(&format!(
        "(umask 022; mkdir -p {})",
        quote(PLACED.rsplit_once('/').map(|(d, _)| d).unwrap_or("/"))
    ));
    s.raw(&format!(
        "printf '%s\\n' {} >> {placed}",
        quote_all(uploads.iter().map(|u| u.path))
    ));
    s.raw(&format!("sort -u -o {placed} {placed}"));
    s
}
