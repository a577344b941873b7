//! An offline bundle: everything a cluster's nodes get that is not rendered — the executables
//! and the addon images (OCI or docker archives) — in one tar with a manifest of SHA-256s, for
//! air-gapped sites and classrooms. `hardway bundle` writes it from a release source (fetched
//! and verified by `crate::releases`) or a local directory; `[binaries] bundle = "FILE"` deploys
//! from it with no network.
//!
//! Layout, all under `hardway-bundle/`: `bundle.json` (what it is for: Kubernetes version,
//! architecture, pins), `MANIFEST.sha256` (`sha256sum` lines for every other file, so
//! `sha256sum -c` checks an unpacked bundle), `bin/<executable>`, `images/<archive>.tar`.
//! Opening a bundle unpacks it once into the cache (keyed by the bundle's own SHA-256), refuses
//! any member outside that layout, and verifies every file against the manifest before use.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::inventory::Inventory;

const TOP: &str = "hardway-bundle";
const MANIFEST: &str = "MANIFEST.sha256";
const META: &str = "bundle.json";

/// `bundle.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub format: u32,
    pub kubernetes_version: String,
    /// `None` for a bundle made from a local directory (its architecture is whatever that held).
    pub arch: Option<String>,
    /// The release versions, for a bundle made from a release source.
    pub pins: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{bundle}: {reason}")]
    Bad { bundle: PathBuf, reason: String },
    #[error(
        "{bundle}: {member}: checksum mismatch, refused: the manifest says sha256 {expected}, the file has {actual}"
    )]
    Mismatch {
        bundle: PathBuf,
        member: String,
        expected: String,
        actual: String,
    },
    #[error(
        "{bundle} is for Kubernetes {bundled}, the inventory says {wanted}: make a bundle for this inventory"
    )]
    WrongVersion {
        bundle: PathBuf,
        bundled: String,
        wanted: String,
    },
    #[error(
        "nothing to bundle: the inventory's binaries come from neither a release source nor a local directory"
    )]
    NothingToBundle,
}

type Result<T> = std::result::Result<T, BundleError>;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BundleError + 'a {
    move |source| BundleError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn sha256_file(path: &Path) -> Result<String> {
    crate::digest::sha256_file(path).map_err(io_err("read", path))
}

impl From<crate::releases::IoFailure> for BundleError {
    fn from(f: crate::releases::IoFailure) -> BundleError {
        BundleError::Io {
            op: f.op,
            path: f.path,
            source: f.source,
        }
    }
}

/// What [`write`] put in a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Member path (below `hardway-bundle/`) and SHA-256.
    pub files: BTreeMap<String, String>,
    pub meta: Meta,
}

/// Writes a bundle of the executables in `bin_dir` (every regular file not starting with `.`)
/// and `inv`'s addon images to `out`, through a temporary file beside it.
pub fn write(inv: &Inventory, bin_dir: &Path, out: &Path) -> Result<Written> {
    let mut sources: Vec<(String, PathBuf)> = Vec::new();
    let entries = fs::read_dir(bin_dir).map_err(io_err("read", bin_dir))?;
    for e in entries {
        let e = e.map_err(io_err("read", bin_dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && e.path().is_file() {
            sources.push((format!("bin/{name}"), e.path()));
        }
    }
    for image in &inv.addons.images {
        let name = image.file_name().unwrap_or_default().to_string_lossy();
        sources.push((format!("images/{name}"), image.clone()));
    }
    sources.sort();
    let meta = Meta {
        format: 1,
        kubernetes_version: inv.cluster.kubernetes_version.to_string(),
        arch: inv
            .binaries
            .release
            .as_ref()
            .map(|r| r.arch.name().to_string()),
        pins: inv
            .binaries
            .release
            .as_ref()
            .map(|r| {
                let p = &r.pins;
                [
                    ("containerd", &p.containerd),
                    ("runc", &p.runc),
                    ("cni_plugins", &p.cni_plugins),
                    ("crictl", &p.crictl),
                    ("etcd", &p.etcd),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect()
            })
            .unwrap_or_default(),
    };
    let tmp = out.with_file_name(format!(
        ".{}.tmp",
        out.file_name().unwrap_or_default().to_string_lossy()
    ));
    let file = fs::File::create(&tmp).map_err(io_err("create", &tmp))?;
    let mut tar = tar::Builder::new(io::BufWriter::new(file));
    tar.mode(tar::HeaderMode::Deterministic);
    let mut add_bytes = |name: &str, bytes: &[u8], mode: u32| -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(mode);
        h.set_cksum();
        tar.append_data(&mut h, format!("{TOP}/{name}"), bytes)
            .map_err(io_err("write", &tmp))
    };
    // Each file read once: its sum is of the very bytes that go in, so the manifest (written
    // last; `open` reads the unpacked directory, in any order) says what the bundle holds.
    let mut files = BTreeMap::new();
    for (member, path) in &sources {
        let mode = if member.starts_with("bin/") {
            0o755
        } else {
            0o644
        };
        let bytes = fs::read(path).map_err(io_err("read", path))?;
        files.insert(member.clone(), crate::digest::sha256_hex(&bytes));
        add_bytes(member, &bytes, mode)?;
    }
    let manifest: String = files.iter().map(|(m, s)| format!("{s}  {m}\n")).collect();
    let meta_json = serde_json::to_vec_pretty(&meta).expect("the bundle's metadata serializes");
    add_bytes(META, &meta_json, 0o644)?;
    add_bytes(MANIFEST, manifest.as_bytes(), 0o644)?;
    let w = tar.into_inner().map_err(io_err("write", &tmp))?;
    w.into_inner()
        .map_err(|e| BundleError::Io {
            op: "write",
            path: tmp.clone(),
            source: e.into_error(),
        })?
        .sync_all()
        .map_err(io_err("sync", &tmp))?;
    fs::rename(&tmp, out).map_err(io_err("rename", &tmp))?;
    Ok(Written { files, meta })
}

/// An opened (unpacked, verified) bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub bin_dir: PathBuf,
    pub images: Vec<PathBuf>,
    pub meta: Meta,
}

/// Unpacks `bundle` into `cache/bundles/` (once), checks it is for `inv`'s Kubernetes version,
/// and verifies every file against its manifest.
pub fn open(bundle: &Path, inv: &Inventory, cache: &Path) -> Result<Opened> {
    let bad = |reason: String| BundleError::Bad {
        bundle: bundle.to_path_buf(),
        reason,
    };
    let _lock = crate::releases::lock_cache(cache).map_err(io_err("lock", cache))?;
    let id = sha256_file(bundle)?;
    let dir = cache.join("bundles").join(&id[..16]);
    crate::releases::build_once(&dir, |tmp| {
        let file = fs::File::open(bundle).map_err(io_err("open", bundle))?;
        let mut archive = tar::Archive::new(file);
        for entry in archive.entries().map_err(io_err("read", bundle))? {
            let mut entry = entry.map_err(io_err("read", bundle))?;
            let name = entry.path().map_err(io_err("read", bundle))?.into_owned();
            let rel = name
                .strip_prefix(TOP)
                .map_err(|_| bad(format!("{} is not under {TOP}/", name.display())))?;
            let plain = rel.components().all(|c| matches!(c, Component::Normal(_)));
            let depth = rel.components().count();
            let allowed = depth == 1 && [META, MANIFEST].iter().any(|m| rel == Path::new(m))
                || depth == 2 && (rel.starts_with("bin") || rel.starts_with("images"));
            if !plain || !allowed || entry.header().entry_type() != tar::EntryType::Regular {
                return Err(bad(format!(
                    "{} is not a file of a bundle's layout",
                    name.display()
                )));
            }
            let target = tmp.join(rel);
            fs::create_dir_all(target.parent().expect("a member has a parent"))
                .map_err(io_err("create", &target))?;
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .map_err(io_err("read", bundle))?;
            write_new(&target, &bytes, rel.starts_with("bin"))?;
        }
        Ok(())
    })?;
    let meta_path = dir.join(META);
    let meta: Meta =
        serde_json::from_slice(&fs::read(&meta_path).map_err(|_| bad(format!("no {TOP}/{META}")))?)
            .map_err(|e| bad(format!("{TOP}/{META}: {e}")))?;
    let wanted = inv.cluster.kubernetes_version.to_string();
    if meta.kubernetes_version != wanted {
        return Err(BundleError::WrongVersion {
            bundle: bundle.to_path_buf(),
            bundled: meta.kubernetes_version,
            wanted,
        });
    }
    if let Some(line) = meta
        .pins
        .get("containerd")
        .and_then(|v| crate::inventory::ContainerdVersion::parse(v))
        && line != inv.containerd.version
    {
        return Err(bad(format!(
            "it holds containerd {}, the inventory's containerd.version is {}: set containerd.version = \"{line}\"",
            meta.pins["containerd"], inv.containerd.version
        )));
    }
    let manifest =
        fs::read_to_string(dir.join(MANIFEST)).map_err(|_| bad(format!("no {TOP}/{MANIFEST}")))?;
    let mut listed = BTreeMap::new();
    for line in manifest.lines().filter(|l| !l.trim().is_empty()) {
        let (sum, member) = line
            .split_once("  ")
            .ok_or_else(|| bad(format!("{MANIFEST}: {line:?} is not a sha256sum line")))?;
        listed.insert(member.to_string(), sum.to_string());
    }
    let mut images = Vec::new();
    for sub in ["bin", "images"] {
        let Ok(entries) = fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for e in entries {
            let e = e.map_err(io_err("read", &dir))?;
            let member = format!("{sub}/{}", e.file_name().to_string_lossy());
            let expected = listed
                .remove(&member)
                .ok_or_else(|| bad(format!("{member} is not in its manifest")))?;
            let actual = sha256_file(&e.path())?;
            if actual != expected {
                return Err(BundleError::Mismatch {
                    bundle: bundle.to_path_buf(),
                    member,
                    expected,
                    actual,
                });
            }
            if sub == "images" {
                images.push(e.path());
            }
        }
    }
    if let Some(member) = listed.keys().next() {
        return Err(bad(format!(
            "{member} is in its manifest but not in the bundle"
        )));
    }
    images.sort();
    Ok(Opened {
        bin_dir: dir.join("bin"),
        images,
        meta,
    })
}

fn write_new(path: &Path, bytes: &[u8], executable: bool) -> Result<()> {
    crate::releases::write_new(path, bytes, if executable { 0o755 } else { 0o644 })
        .map_err(io_err("create", path))
}
