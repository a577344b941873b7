//! `hardway etcd snapshot save|list`: a copy of etcd's keyspace, streamed from one healthy
//! member over mTLS (etcd's Maintenance Snapshot, as `etcdctl snapshot save` does), written to
//! a file only the operator can read, with what a restore needs recorded beside it: the
//! revision, the member list, the SHA-256 of the file. Retention keeps the newest N.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
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
    #[error("streaming the snapshot from {member}: {reason}")]
    Stream { member: String, reason: String },
    #[error("{op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", .path.display())]
    Bad { path: PathBuf, reason: String },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io { op, path: path.to_path_buf(), source }
}

/// `2026-11-27T15:03:40.123Z` → `20261127T150340123Z` (to the millisecond, so two snapshots in one
/// second differ), sortable and safe in file names.
fn stamp(rfc3339: &str) -> String {
    rfc3339.chars().filter(|c| c.is_ascii_digit() || *c == 'T').take(18).collect::<String>() + "Z"
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
pub async fn save(inv: &Inventory, probe: &dyn Probe, dir: &Path, keep: Option<usize>) -> Result<SnapshotInfo, SnapshotError> {
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
    let leader = statuses.iter().find(|s| s.member_id.is_some() && s.member_id == s.leader).unwrap_or(&statuses[0]);
    let stream_err = |reason: String| SnapshotError::Stream { member: leader.name.clone(), reason };
    let (member_list, _) = probe.etcd_membership(leader.address, Duration::from_secs(5)).await.map_err(stream_err)?;

    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let taken_at = crate::events::now_rfc3339();
    let name = format!("{}-{}", inv.cluster.name, stamp(&taken_at));
    let (db, part) = (dir.join(format!("{name}.db")), dir.join(format!("{name}.db.part")));
    // etcd's whole keyspace: only the operator reads it (Secrets are encrypted, the rest is not).
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&part).map_err(io("creating", &part))?;
    let mut out = Hashing { file: &mut file, hasher: Sha256::new() };
    let streamed = probe.etcd_snapshot(leader.address, &mut out).await;
    let sha256: String = out.hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let (size, revision) = match streamed.map_err(stream_err).and_then(|r| file.sync_all().map(|()| r).map_err(io("syncing", &part))) {
        Ok((0, _)) => Err(stream_err("the stream was empty".into())),
        Ok(r) => Ok(r),
        Err(e) => Err(e),
    }
    .inspect_err(|_| {
        let _ = std::fs::remove_file(&part);
    })?;
    std::fs::rename(&part, &db).map_err(io("renaming", &part))?;
    let info = SnapshotInfo {
        cluster: inv.cluster.name.clone(),
        file: format!("{name}.db"),
        sha256,
        size,
        revision,
        taken_at,
        from_member: leader.name.clone(),
        members: member_list.into_iter().map(|m| (m.name, m.peer_url)).collect(),
        etcd_version: leader.version.clone().unwrap_or_default(),
    };
    let meta = dir.join(format!("{name}.json"));
    crate::pki::write_file(&meta, serde_json::to_string_pretty(&info).expect("serialisable").as_bytes(), 0o600)
        .map_err(|e| SnapshotError::Bad { path: meta.clone(), reason: e.to_string() })?;
    if let Some(keep) = keep {
        prune(dir, &inv.cluster.name, keep)?;
    }
    Ok(info)
}

/// Every snapshot of `cluster` in `dir`, oldest first.
pub fn list(dir: &Path, cluster: &str) -> Result<Vec<SnapshotInfo>, SnapshotError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io("reading", dir)(e)),
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&p).map_err(io("reading", &p))?;
        let info: SnapshotInfo = serde_json::from_str(&text).map_err(|e| SnapshotError::Bad { path: p.clone(), reason: e.to_string() })?;
        if info.cluster == cluster {
            out.push(info);
        }
    }
    out.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(out)
}

/// Reads a snapshot's record and checks the file against it.
pub fn open(db: &Path) -> Result<(SnapshotInfo, Vec<u8>), SnapshotError> {
    let meta = db.with_extension("json");
    let text = std::fs::read_to_string(&meta).map_err(io("reading", &meta))?;
    let info: SnapshotInfo = serde_json::from_str(&text).map_err(|e| SnapshotError::Bad { path: meta.clone(), reason: e.to_string() })?;
    let bytes = std::fs::read(db).map_err(io("reading", db))?;
    let sha: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    if sha != info.sha256 {
        return Err(SnapshotError::Bad { path: db.to_path_buf(), reason: format!("SHA-256 is {sha}, {} recorded {}", meta.display(), info.sha256) });
    }
    Ok((info, bytes))
}

/// Removes all but the newest `keep` snapshots of `cluster` (retention is what `--keep` asks).
fn prune(dir: &Path, cluster: &str, keep: usize) -> Result<(), SnapshotError> {
    let all = list(dir, cluster)?;
    for old in all.iter().take(all.len().saturating_sub(keep)) {
        let db = dir.join(&old.file);
        for p in [db.clone(), db.with_extension("json")] {
            std::fs::remove_file(&p).map_err(io("removing", &p))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn stamps_sort_as_time_does() {
        assert_eq!(super::stamp("2026-11-27T15:03:40.123Z"), "20261127T150340123Z");
    }
}
