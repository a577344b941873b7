//! `hardway etcd snapshot save|list`: a copy of etcd's keyspace, streamed from one healthy
//! member over mTLS (etcd's Maintenance Snapshot, as `etcdctl snapshot save` does), written to
//! a file only the operator can read, with what a restore needs recorded beside it: the
//! revision, the member list, the SHA-256 of the file. Retention keeps the newest N.
//!
//! Its own module, not day2's: deploy takes a snapshot before it changes etcd (`--snapshot-dir`),
//! and day2 (node removal, certificate rotations, restore) builds on deploy.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::inventory::Inventory;
use crate::probe::{self, Probe};

/// What is recorded beside a snapshot (`NAME.json` beside `NAME.db`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub cluster: String,
    /// The snapshot file's name, in the same directory.
    pub file: String,
    pub sha256: String,
    pub size: u64,
    /// The keyspace revision the snapshot holds.
    pub revision: i64,
    pub taken_at: String,
    /// The member it was streamed from.
    pub from_member: String,
    /// The members at the time: (name, first peer URL).
    pub members: Vec<(String, String)>,
    pub etcd_version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("no etcd member answers with one leader, so there is nothing consistent to copy: {0}")]
    NoHealthyMember(String),
    #[error("streaming the snapshot from {member}: {source}")]
    Stream {
        member: String,
        source: crate::etcd::EtcdError,
    },
    #[error("streaming the snapshot from {0}: the stream was empty")]
    Empty(String),
    #[error("{op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", .path.display())]
    Bad { path: PathBuf, reason: String },
    /// A record in the snapshots directory whose `file` is not a snapshot of that directory.
    #[error("{}: field `file` is {file:?}: not a snapshot file of this directory (a plain name ending in .db, no '/', matching the record's own name); nothing was pruned", .path.display())]
    NotOurs { path: PathBuf, file: String },
    #[error(transparent)]
    Private(#[from] crate::safe_fs::SafeFsError),
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes through to a file and hashes what it writes.
struct Hashing<'a> {
    file: &'a mut std::fs::File,
    hasher: Sha256,
}

impl Write for Hashing<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Streams a snapshot from a healthy member into `dir` and records it; keeps the newest `keep`.
pub async fn save(
    inv: &Inventory,
    probe: &dyn Probe,
    dir: &Path,
    keep: Option<usize>,
) -> Result<SnapshotInfo, SnapshotError> {
    let members = inv.etcd_members();
    let all = probe::cluster_status(probe, &members, Duration::from_secs(3)).await;
    // The members that answer must agree on a leader (a quorum is up); one that is down (or
    // not joined yet) does not keep a copy from being taken, which is when one is most needed.
    let statuses: Vec<_> = all.iter().filter(|s| s.answered()).cloned().collect();
    if !probe::healthy(&statuses) {
        let why: Vec<String> = all.iter().map(probe::describe).collect();
        return Err(SnapshotError::NoHealthyMember(why.join("; ")));
    }
    // The leader's copy is the newest; any member would do once the cluster is healthy.
    let leader = statuses
        .iter()
        .find(|s| s.member_id.is_some() && s.member_id == s.leader)
        .unwrap_or(&statuses[0]);
    let stream_err = |source| SnapshotError::Stream {
        member: leader.name.clone(),
        source,
    };
    let (member_list, _) = probe
        .etcd_membership(leader.address, Duration::from_secs(5))
        .await
        .map_err(stream_err)?;

    // etcd's whole keyspace (Secrets are encrypted, the rest is not): only the operator reads
    // it. The directory is 0700, each file created new and 0600, never through a link.
    let private = crate::safe_fs::private_dir(dir, Path::new(""))?;
    let taken_at = crate::events::now_rfc3339();
    let name = format!(
        "{}-{}",
        inv.cluster.name,
        crate::events::stamp_of(&taken_at)
    );
    let (db_name, part_name) = (format!("{name}.db"), format!("{name}.db.part"));
    let part = dir.join(&part_name);
    let mut file = private.create_new(&part_name, 0o600)?;
    let mut out = Hashing {
        file: &mut file,
        hasher: Sha256::new(),
    };
    let streamed = probe.etcd_snapshot(leader.address, &mut out).await;
    let sha256 = crate::digest::hex(&out.hasher.finalize());
    let (size, revision) = match streamed
        .map_err(stream_err)
        .and_then(|r| file.sync_all().map(|()| r).map_err(io("syncing", &part)))
    {
        Ok((0, _)) => Err(SnapshotError::Empty(leader.name.clone())),
        Ok(r) => Ok(r),
        Err(e) => Err(e),
    }
    .inspect_err(|_| {
        let _ = private.remove(&part_name);
    })?;
    private.rename(&part_name, &db_name)?;
    let info = SnapshotInfo {
        cluster: inv.cluster.name.clone(),
        file: format!("{name}.db"),
        sha256,
        size,
        revision,
        taken_at,
        from_member: leader.name.clone(),
        members: member_list
            .into_iter()
            .map(|m| (m.name, m.peer_url))
            .collect(),
        etcd_version: leader.version.clone().unwrap_or_default(),
    };
    private.write(
        format!("{name}.json").as_ref(),
        serde_json::to_string_pretty(&info)
            .expect("serialisable")
            .as_bytes(),
        0o600,
    )?;
    if let Some(keep) = keep {
        prune(dir, &inv.cluster.name, keep)?;
    }
    Ok(info)
}

/// Every snapshot of `cluster` in `dir`, oldest first.
pub fn list(dir: &Path, cluster: &str) -> Result<Vec<SnapshotInfo>, SnapshotError> {
    Ok(records(dir, cluster)?
        .into_iter()
        .map(|(_, info)| info)
        .collect())
}

/// Every record of `cluster` in `dir` with its path, oldest first.
fn records(dir: &Path, cluster: &str) -> Result<Vec<(PathBuf, SnapshotInfo)>, SnapshotError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io("reading", dir)(e)),
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "json") || !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let text = std::fs::read_to_string(&p).map_err(io("reading", &p))?;
        let info: SnapshotInfo = serde_json::from_str(&text).map_err(|e| SnapshotError::Bad {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        if info.cluster == cluster {
            out.push((p, info));
        }
    }
    out.sort_by(|a, b| a.1.file.cmp(&b.1.file));
    Ok(out)
}

/// The record at `record` names a snapshot of its own directory: `file` a plain name ending in
/// `.db` whose stem is the record's own (`NAME.json` beside `NAME.db`). Anything else is not
/// hardway's to delete or restore.
fn check_ours(record: &Path, info: &SnapshotInfo) -> Result<(), SnapshotError> {
    let f = info.file.as_str();
    let plain =
        !f.is_empty() && !f.contains(['/', '\0']) && f != "." && f != ".." && !f.starts_with('.');
    let stem = record.file_stem().and_then(|s| s.to_str());
    if plain && f.strip_suffix(".db").is_some_and(|s| Some(s) == stem) {
        return Ok(());
    }
    Err(SnapshotError::NotOurs {
        path: record.to_path_buf(),
        file: info.file.clone(),
    })
}
/// Reads a snapshot's record and checks the file against it.
pub fn open(db: &Path) -> Result<(SnapshotInfo, Vec<u8>), SnapshotError> {
    let meta = db.with_extension("json");
    let text = std::fs::read_to_string(&meta).map_err(io("reading", &meta))?;
    let info: SnapshotInfo = serde_json::from_str(&text).map_err(|e| SnapshotError::Bad {
        path: meta.clone(),
        reason: e.to_string(),
    })?;
    let bytes = std::fs::read(db).map_err(io("reading", db))?;
    let sha = crate::digest::sha256_hex(&bytes);
    if sha != info.sha256 {
        return Err(SnapshotError::Bad {
            path: db.to_path_buf(),
            reason: format!(
                "SHA-256 is {sha}, {} recorded {}",
                meta.display(),
                info.sha256
            ),
        });
    }
    Ok((info, bytes))
}

/// Removes all but the newest `keep` snapshots of `cluster` (retention is what `--keep` asks).
/// Only files of the snapshots directory that a record names as its own snapshot are deleted,
/// and the record itself; a record naming anything else stops it before anything is deleted.
fn prune(dir: &Path, cluster: &str, keep: usize) -> Result<(), SnapshotError> {
    let all = records(dir, cluster)?;
    for (path, info) in &all {
        check_ours(path, info)?;
    }
    let d = crate::safe_fs::Dir::open(dir)?;
    for (path, old) in all.iter().take(all.len().saturating_sub(keep)) {
        d.remove(&old.file)?;
        d.remove(&path.file_name().expect("a record file").to_string_lossy())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(dir: &Path, json_name: &str, file: &str) {
        let info = SnapshotInfo {
            cluster: "c".into(),
            file: file.into(),
            sha256: String::new(),
            size: 1,
            revision: 1,
            taken_at: String::new(),
            from_member: "m1".into(),
            members: vec![],
            etcd_version: String::new(),
        };
        std::fs::write(dir.join(json_name), serde_json::to_string(&info).unwrap()).unwrap();
    }

    /// A planted record must not make `--keep` delete a file outside the snapshots directory.
    #[test]
    fn pruning_refuses_a_record_naming_a_file_elsewhere() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("snapshots");
        std::fs::create_dir(&dir).unwrap();
        let victim = t.path().join("victim");
        for (bad_json, bad_file) in [
            ("a.json", "../victim".to_string()),
            ("b.json", victim.display().to_string()),
            ("c.json", "sub/x.db".to_string()),
        ] {
            std::fs::write(&victim, "precious").unwrap();
            for n in ["c-20260101T000000000Z", "c-20260102T000000000Z"] {
                std::fs::write(dir.join(format!("{n}.db")), "db").unwrap();
                record(&dir, &format!("{n}.json"), &format!("{n}.db"));
            }
            record(&dir, bad_json, &bad_file);
            let e = prune(&dir, "c", 1).unwrap_err().to_string();
            assert!(
                e.contains(&dir.join(bad_json).display().to_string())
                    && e.contains("file")
                    && e.contains(&bad_file),
                "{e}"
            );
            assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
            std::fs::remove_file(dir.join(bad_json)).unwrap();
        }
        // Its own records are pruned as asked.
        prune(&dir, "c", 1).unwrap();
        let left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(
            left,
            ["c-20260102T000000000Z.db", "c-20260102T000000000Z.json"]
        );
    }
}
