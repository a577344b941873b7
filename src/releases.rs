//! Upstream release binaries: where each executable hardway pushes comes from, fetched once per
//! version and architecture into a cache on the operator's machine, checksum-verified, and laid
//! out as one flat directory that deploy reads as it reads `[binaries] local_dir`.
//!
//! The layout is upstream's: Kubernetes' release server
//! (`dl.k8s.io/release/v<version>/bin/linux/<arch>/<binary>` with its `.sha256`), and the
//! GitHub releases of etcd, containerd, runc, crictl and the CNI plugins with the checksum
//! files each project publishes beside its archives. A mirror serves the same paths under
//! another base URL (`[binaries] source = "https://mirror.example/k8s"`), so one mirror can hold
//! both servers' trees; the cache is keyed by upstream's host and path, so a mirror and
//! upstream share it.
//!
//! Nothing is used before its checksum matches: a download that does not is moved aside and
//! refused with the URL, the expected and the actual sum, before anything reaches a node.
//! Downloads resume (an HTTP Range request on the `.part` file). A second run downloads
//! nothing; `offline` uses the cache only and names everything it lacks.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::inventory::{Arch, Inventory, ReleaseSource};
use crate::versions::{Pins, Version};

/// One published file: a binary, or an archive of several.
#[derive(Debug, Clone, Copy)]
pub struct Artifact {
    /// Upstream's base URL (scheme and host); a mirror replaces it.
    pub origin: &'static str,
    /// The path below it, with `{v}` (the version, without `v`) and `{arch}`.
    pub path: &'static str,
    /// The checksum file's path, the same placeholders; it holds a SHA-256 in hex, alone or as
    /// `sha256sum` lines (`<hex>  <file name>`) among which the artifact's own is found.
    pub sums: &'static str,
    /// Which release it is (the version placeholder's value).
    pub project: Project,
    /// The executables it provides: (member of the archive, name in the flat directory); for a
    /// plain binary one entry whose member is empty.
    pub members: &'static [(&'static str, &'static str)],
}

/// The projects the pins name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Project {
    Kubernetes,
    Etcd,
    Containerd,
    Runc,
    Crictl,
    CniPlugins,
}

const K8S: &str = "https://dl.k8s.io";
const GITHUB: &str = "https://github.com";

macro_rules! kube {
    ($name:literal) => {
        Artifact {
            origin: K8S,
            path: concat!("/release/v{v}/bin/linux/{arch}/", $name),
            sums: concat!("/release/v{v}/bin/linux/{arch}/", $name, ".sha256"),
            project: Project::Kubernetes,
            members: &[("", $name)],
        }
    };
}

/// Every artifact, with what it provides. No inventory in it: [`plan`] fills the versions.
pub const ARTIFACTS: &[Artifact] = &[
    kube!("kube-apiserver"),
    kube!("kube-controller-manager"),
    kube!("kube-scheduler"),
    kube!("kubelet"),
    kube!("kube-proxy"),
    kube!("kubectl"),
    Artifact {
        origin: GITHUB,
        path: "/etcd-io/etcd/releases/download/v{v}/etcd-v{v}-linux-{arch}.tar.gz",
        sums: "/etcd-io/etcd/releases/download/v{v}/SHA256SUMS",
        project: Project::Etcd,
        members: &[
            ("etcd-v{v}-linux-{arch}/etcd", "etcd"),
            ("etcd-v{v}-linux-{arch}/etcdctl", "etcdctl"),
            ("etcd-v{v}-linux-{arch}/etcdutl", "etcdutl"),
        ],
    },
    Artifact {
        origin: GITHUB,
        path: "/containerd/containerd/releases/download/v{v}/containerd-{v}-linux-{arch}.tar.gz",
        sums: "/containerd/containerd/releases/download/v{v}/containerd-{v}-linux-{arch}.tar.gz.sha256sum",
        project: Project::Containerd,
        members: &[
            ("bin/containerd", "containerd"),
            ("bin/containerd-shim-runc-v2", "containerd-shim-runc-v2"),
            ("bin/ctr", "ctr"),
        ],
    },
    Artifact {
        origin: GITHUB,
        path: "/opencontainers/runc/releases/download/v{v}/runc.{arch}",
        sums: "/opencontainers/runc/releases/download/v{v}/runc.sha256sum",
        project: Project::Runc,
        members: &[("", "runc")],
    },
    Artifact {
        origin: GITHUB,
        path: "/kubernetes-sigs/cri-tools/releases/download/v{v}/crictl-v{v}-linux-{arch}.tar.gz",
        sums: "/kubernetes-sigs/cri-tools/releases/download/v{v}/crictl-v{v}-linux-{arch}.tar.gz.sha256",
        project: Project::Crictl,
        members: &[("crictl", "crictl")],
    },
    Artifact {
        origin: GITHUB,
        path: "/containernetworking/plugins/releases/download/v{v}/cni-plugins-linux-{arch}-v{v}.tgz",
        sums: "/containernetworking/plugins/releases/download/v{v}/cni-plugins-linux-{arch}-v{v}.tgz.sha256",
        project: Project::CniPlugins,
        members: &[
            ("bridge", "bridge"),
            ("host-local", "host-local"),
            ("loopback", "loopback"),
            ("portmap", "portmap"),
        ],
    },
];

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(
        "the inventory's binaries do not come from a release (binaries.source is not \"upstream\" or a mirror's URL)"
    )]
    NotARelease,
    #[error("{url}: {reason}")]
    Http { url: String, reason: String },
    #[error(
        "{url}: checksum mismatch, refused (nothing was pushed): expected sha256 {expected} ({sums}), got {actual}; \
         the download was moved aside to {aside}"
    )]
    Mismatch {
        url: String,
        sums: String,
        expected: String,
        actual: String,
        aside: PathBuf,
    },
    #[error("{url}: {reason}")]
    BadSums { url: String, reason: String },
    #[error("{url}: the archive has no {member}")]
    MissingMember { url: String, member: String },
    #[error("offline, and the cache ({cache}) lacks {} file(s):\n  {}", missing.len(), missing.join("\n  "))]
    Offline {
        cache: PathBuf,
        missing: Vec<String>,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, ReleaseError>;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ReleaseError + 'a {
    move |source| ReleaseError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// One artifact at its version and architecture.
#[derive(Debug, Clone)]
pub struct Fetch {
    pub artifact: Artifact,
    pub version: String,
    pub arch: Arch,
    /// The URL it is downloaded from (upstream's or the mirror's) and its checksum file's.
    pub url: String,
    pub sums_url: String,
    /// Upstream's host and path: its place in the cache.
    pub key: String,
    pub sums_key: String,
}

fn fill(template: &str, version: &str, arch: Arch) -> String {
    template
        .replace("{v}", version)
        .replace("{arch}", arch.name())
}

fn version_of<'a>(project: Project, kubernetes: &'a str, pins: &'a Pins<String>) -> &'a str {
    match project {
        Project::Kubernetes => kubernetes,
        Project::Etcd => &pins.etcd,
        Project::Containerd => &pins.containerd,
        Project::Runc => &pins.runc,
        Project::Crictl => &pins.crictl,
        Project::CniPlugins => &pins.cni_plugins,
    }
}

/// What a release source of `kubernetes` fetches: every artifact, at the pinned versions.
pub fn plan(release: &ReleaseSource, kubernetes: Version) -> Vec<Fetch> {
    let k = kubernetes.to_string();
    ARTIFACTS
        .iter()
        .map(|a| {
            let version = version_of(a.project, &k, &release.pins).to_string();
            let (path, sums) = (
                fill(a.path, &version, release.arch),
                fill(a.sums, &version, release.arch),
            );
            let base = release.mirror.as_deref().unwrap_or(a.origin);
            let host = a.origin.trim_start_matches("https://");
            Fetch {
                url: format!("{base}{path}"),
                sums_url: format!("{base}{sums}"),
                key: format!("{host}{path}"),
                sums_key: format!("{host}{sums}"),
                artifact: *a,
                version,
                arch: release.arch,
            }
        })
        .collect()
}

/// Where downloads are cached: `$HARDWAY_CACHE_DIR`, else `$XDG_CACHE_HOME/hardway`, else
/// `~/.cache/hardway`; releases under `releases/`.
pub fn default_cache() -> PathBuf {
    let base = std::env::var_os("HARDWAY_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|x| PathBuf::from(x).join("hardway")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/hardway")))
        .unwrap_or_else(|| PathBuf::from("/var/cache/hardway"));
    base.join("releases")
}

/// How [`fetch`] may reach the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    Online,
    /// The cache only; whatever is missing is named in one error.
    Offline,
}

/// What [`fetch`] did, file by file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FetchReport {
    /// The flat directory of executables, what deploy reads.
    pub dir: PathBuf,
    /// URLs downloaded this run (whole or resumed), checksum files included.
    pub downloaded: Vec<String>,
    /// Artifacts found in the cache, checksum verified again.
    pub cached: Vec<String>,
    /// Every executable in `dir`, with the SHA-256 of the artifact it came from.
    pub executables: BTreeMap<String, String>,
}

/// Fetches (or finds in `cache`) every artifact of `inv`'s release source, verifies each
/// against its published checksum, and lays the executables out in one directory under
/// `cache/bin/`, which it returns in the report.
pub fn fetch(
    inv: &Inventory,
    cache: &Path,
    network: Network,
    progress: bool,
) -> Result<FetchReport> {
    let release = inv
        .binaries
        .release
        .as_ref()
        .ok_or(ReleaseError::NotARelease)?;
    let fetches = plan(release, inv.cluster.kubernetes_version);
    let _lock = lock_cache(cache).map_err(io_err("lock", cache))?;
    let client = Client::new(progress);
    if network == Network::Offline {
        let missing: Vec<String> = fetches
            .iter()
            .flat_map(|f| [(&f.sums_key, &f.sums_url), (&f.key, &f.url)])
            .filter(|(key, _)| !cache.join(key).is_file())
            .map(|(key, url)| format!("{url} (cache: {})", cache.join(key).display()))
            .collect();
        if !missing.is_empty() {
            return Err(ReleaseError::Offline {
                cache: cache.to_path_buf(),
                missing,
            });
        }
    }
    let mut report = FetchReport::default();
    let mut verified = Vec::new();
    for f in &fetches {
        let sums_path = cache.join(&f.sums_key);
        if !sums_path.is_file() {
            client.download(&f.sums_url, &sums_path)?;
            report.downloaded.push(f.sums_url.clone());
        }
        let sums = fs::read_to_string(&sums_path).map_err(io_err("read", &sums_path))?;
        let file_name = f.key.rsplit('/').next().unwrap_or_default();
        let expected = expected_sum(&sums, file_name).map_err(|reason| ReleaseError::BadSums {
            url: f.sums_url.clone(),
            reason,
        })?;
        let path = cache.join(&f.key);
        let cached = path.is_file();
        if !cached {
            client.download(&f.url, &path)?;
            report.downloaded.push(f.url.clone());
        }
        let actual = sha256_file(&path)?;
        if actual != expected {
            let aside = path.with_extension(format!(
                "{}.mismatch",
                path.extension().and_then(|e| e.to_str()).unwrap_or("bin")
            ));
            fs::rename(&path, &aside).map_err(io_err("move aside", &path))?;
            return Err(ReleaseError::Mismatch {
                url: f.url.clone(),
                sums: f.sums_url.clone(),
                expected,
                actual,
                aside,
            });
        }
        if cached {
            report.cached.push(f.url.clone());
        }
        verified.push((f, path, actual));
    }
    // The flat directory, named by what went into it: the same pins and sums, the same place.
    let mut id = Sha256::new();
    for (_, _, sum) in &verified {
        id.update(sum.as_bytes());
    }
    let id = crate::digest::hex(&id.finalize())[..16].to_string();
    let dir = cache.join("bin").join(format!(
        "v{}-{}-{id}",
        inv.cluster.kubernetes_version,
        release.arch.name()
    ));
    build_once(&dir, |tmp| {
        verified
            .iter()
            .try_for_each(|(f, path, _)| unpack(f, path, tmp))
    })?;
    for (f, _, sum) in &verified {
        for (_, name) in f.artifact.members {
            report.executables.insert((*name).to_string(), sum.clone());
        }
    }
    report.dir = dir;
    Ok(report)
}

/// The SHA-256 for `file_name` in a checksum file: a lone hex sum, or the `sha256sum` line
/// naming it (`<hex>  <name>` or `<hex> *<name>`).
pub fn expected_sum(sums: &str, file_name: &str) -> std::result::Result<String, String> {
    let lines: Vec<&str> = sums
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let is_sum = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let found = match lines.as_slice() {
        [one] if one.split_whitespace().count() == 1 => Some(*one),
        _ => lines.iter().find_map(|l| {
            let mut parts = l.split_whitespace();
            let (sum, name) = (parts.next()?, parts.next()?);
            let name = name.trim_start_matches('*');
            (name == file_name || name.rsplit('/').next() == Some(file_name)).then_some(sum)
        }),
    };
    match found {
        Some(s) if is_sum(s) => Ok(s.to_ascii_lowercase()),
        Some(s) => Err(format!("{s:?} is not a SHA-256 in hex")),
        None => Err(format!("no checksum for {file_name} in it")),
    }
}

/// One process at a time in a cache: two deploys fetching at once would write the same
/// `.part` files. Held until dropped; the kernel releases it if the process dies.
pub(crate) fn lock_cache(cache: &Path) -> std::io::Result<fs::File> {
    fs::create_dir_all(cache)?;
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(cache.join(".lock"))?;
    f.lock()?;
    Ok(f)
}

fn sha256_file(path: &Path) -> Result<String> {
    crate::digest::sha256_file(path).map_err(io_err("read", path))
}

/// Makes `dir` once, from what `fill` writes into a temporary directory beside it, renamed into
/// place with a `.complete` mark: a directory without the mark (a run cut off) is never used,
/// and is made again. For the unpacked releases and bundles of the cache.
pub(crate) fn build_once<E: From<IoFailure>>(
    dir: &Path,
    fill: impl FnOnce(&Path) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| E::from(IoFailure { op, path, source })
    };
    if dir.join(".complete").is_file() {
        return Ok(());
    }
    let tmp = dir.with_extension("tmp");
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io("remove", &tmp))?;
    }
    fs::create_dir_all(&tmp).map_err(io("create", &tmp))?;
    fill(&tmp)?;
    fs::write(tmp.join(".complete"), b"").map_err(io("write", &tmp))?;
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(io("remove", dir))?;
    }
    fs::rename(&tmp, dir).map_err(io("rename", &tmp))
}

/// A failed file operation of [`build_once`], for the caller's own error type.
pub(crate) struct IoFailure {
    pub op: &'static str,
    pub path: PathBuf,
    pub source: io::Error,
}

impl From<IoFailure> for ReleaseError {
    fn from(f: IoFailure) -> ReleaseError {
        ReleaseError::Io {
            op: f.op,
            path: f.path,
            source: f.source,
        }
    }
}

/// Writes a file that must not exist yet (`O_EXCL`: no link followed, nothing replaced) with
/// `mode`, into a directory [`build_once`] is filling.
pub(crate) fn write_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?
        .write_all(bytes)
}

/// An executable, 0755.
fn write_executable(path: &Path, bytes: &[u8]) -> Result<()> {
    write_new(path, bytes, 0o755).map_err(io_err("create", path))
}

/// The executables of a verified artifact into `dir`.
fn unpack(f: &Fetch, path: &Path, dir: &Path) -> Result<()> {
    let members: Vec<(String, &str)> = f
        .artifact
        .members
        .iter()
        .map(|(m, n)| (fill(m, &f.version, f.arch), *n))
        .collect();
    if let [(member, name)] = members.as_slice()
        && member.is_empty()
    {
        let bytes = fs::read(path).map_err(io_err("read", path))?;
        return write_executable(&dir.join(name), &bytes);
    }
    let file = fs::File::open(path).map_err(io_err("open", path))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut left: BTreeMap<&str, &str> = members.iter().map(|(m, n)| (m.as_str(), *n)).collect();
    let entries = archive.entries().map_err(io_err("read", path))?;
    for entry in entries {
        let mut entry = entry.map_err(io_err("read", path))?;
        let name = entry
            .path()
            .map_err(io_err("read", path))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if let Some(out) = left.remove(name.as_str()) {
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .map_err(io_err("read", path))?;
            write_executable(&dir.join(out), &bytes)?;
        }
    }
    match left.keys().next() {
        Some(member) => Err(ReleaseError::MissingMember {
            url: f.url.clone(),
            member: (*member).to_string(),
        }),
        None => Ok(()),
    }
}

/// Downloads over HTTP(S), resuming `.part` files, with a progress bar on a terminal.
struct Client {
    agent: ureq::Agent,
    progress: bool,
}

impl Client {
    fn new(progress: bool) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .user_agent(concat!("hardway/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Client { agent, progress }
    }

    /// `url` to `dest`, through `dest.part`: a part left by an earlier run is resumed.
    fn download(&self, url: &str, dest: &Path) -> Result<()> {
        let http = |reason: String| ReleaseError::Http {
            url: url.to_string(),
            reason,
        };
        let dir = dest.parent().expect("cache paths have a parent");
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let part = dest.with_file_name(format!(
            "{}.part",
            dest.file_name().unwrap_or_default().to_string_lossy()
        ));
        let have = fs::symlink_metadata(&part)
            .map(|m| if m.is_file() { m.len() } else { 0 })
            .unwrap_or(0);
        let mut request = self.agent.get(url);
        if have > 0 {
            request = request.header("Range", format!("bytes={have}-"));
        }
        let mut response = request.call().map_err(|e| http(e.to_string()))?;
        let status = response.status().as_u16();
        let (append, offset) = match status {
            206 => (true, have),
            200 => (false, 0),
            // The part is already whole (a range past the end).
            416 if have > 0 => {
                fs::rename(&part, dest).map_err(io_err("rename", &part))?;
                return Ok(());
            }
            s => return Err(http(format!("HTTP {s}"))),
        };
        let total = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|n| n + offset);
        let mut out = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&part)
            .map_err(io_err("open", &part))?;
        let bar = self.bar(url, total, offset);
        let mut reader = response.body_mut().as_reader();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = offset;
        loop {
            let n = reader.read(&mut buf).map_err(|e| {
                http(format!(
                    "reading the body after {got} bytes: {e} (run again to resume)"
                ))
            })?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n]).map_err(io_err("write", &part))?;
            got += n as u64;
            bar.set_position(got);
        }
        bar.finish_and_clear();
        out.sync_all().map_err(io_err("sync", &part))?;
        if let Some(total) = total
            && got != total
        {
            return Err(http(format!(
                "the body ended after {got} of {total} bytes (run again to resume)"
            )));
        }
        fs::rename(&part, dest).map_err(io_err("rename", &part))
    }

    fn bar(&self, url: &str, total: Option<u64>, at: u64) -> indicatif::ProgressBar {
        if !self.progress {
            return indicatif::ProgressBar::hidden();
        }
        let bar = match total {
            Some(t) => indicatif::ProgressBar::new(t),
            None => indicatif::ProgressBar::new_spinner(),
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:40!} {bytes:>10}/{total_bytes:10} {wide_bar}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(url.rsplit('/').next().unwrap_or(url).to_string());
        bar.set_position(at);
        bar
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::{BinDir, COMPONENTS};

    /// Every executable a component pushes from the local directory is in some artifact, so a
    /// release source leaves none out.
    #[test]
    fn every_pushed_executable_comes_from_an_artifact() {
        let provided: Vec<&str> = ARTIFACTS
            .iter()
            .flat_map(|a| a.members.iter().map(|(_, n)| *n))
            .collect();
        for c in COMPONENTS {
            if matches!(c.binary.1, BinDir::Fixed(_)) {
                continue;
            }
            for name in std::iter::once(c.binary.0).chain(c.companions.iter().copied()) {
                assert!(
                    provided.contains(&name),
                    "{} ({}) is in no release artifact",
                    name,
                    c.name
                );
            }
        }
    }

    /// arm64 and a mirror: upstream's paths with the architecture in them, under the mirror's
    /// base; the cache keyed by upstream's host either way.
    #[test]
    fn an_arm64_plan_through_a_mirror() {
        let release = ReleaseSource {
            mirror: Some("https://mirror.example/k8s".into()),
            arch: Arch::Arm64,
            pins: crate::versions::SUPPORTED.last().unwrap().pins.owned(),
        };
        let plan = plan(&release, Version::new(1, 37, 2));
        let urls: Vec<&str> = plan.iter().map(|f| f.url.as_str()).collect();
        assert!(
            urls.contains(&"https://mirror.example/k8s/release/v1.37.2/bin/linux/arm64/kubelet"),
            "{urls:?}"
        );
        assert!(urls.contains(&"https://mirror.example/k8s/opencontainers/runc/releases/download/v1.5.3/runc.arm64"), "{urls:?}");
        assert!(urls.contains(&"https://mirror.example/k8s/containerd/containerd/releases/download/v2.3.7/containerd-2.3.7-linux-arm64.tar.gz"), "{urls:?}");
        let keys: Vec<&str> = plan.iter().map(|f| f.key.as_str()).collect();
        assert!(
            keys.contains(&"dl.k8s.io/release/v1.37.2/bin/linux/arm64/kubelet"),
            "{keys:?}"
        );
        assert!(
            keys.contains(
                &"github.com/etcd-io/etcd/releases/download/v3.6.8/etcd-v3.6.8-linux-arm64.tar.gz"
            ),
            "{keys:?}"
        );
        assert!(plan.iter().all(|f| !f.url.contains("amd64")), "{urls:?}");
    }

    #[test]
    fn checksum_files_in_each_published_shape() {
        let sum = "a".repeat(64);
        assert_eq!(
            expected_sum(&format!("{sum}\n"), "kubelet"),
            Ok(sum.clone())
        );
        let lines = format!("{}  runc.arm64\n{sum}  runc.amd64\n", "b".repeat(64));
        assert_eq!(expected_sum(&lines, "runc.amd64"), Ok(sum.clone()));
        assert_eq!(
            expected_sum(&format!("{sum} *x.tgz"), "x.tgz"),
            Ok(sum.clone())
        );
        assert!(
            expected_sum(&lines, "runc.s390x")
                .unwrap_err()
                .contains("no checksum for runc.s390x")
        );
        assert!(
            expected_sum("xyz", "kubelet")
                .unwrap_err()
                .contains("not a SHA-256")
        );
    }
}
