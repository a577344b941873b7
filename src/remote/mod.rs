//! The remote layer: everything hardway does on a node, as named operations behind one trait.
//!
//! [`Remote`] is what deploy, verify and the day-2 commands call: read the node's facts, install
//! files, run systemctl, read units, certificates and configs, talk to a Unix socket. Two
//! implementations:
//!
//! - [`ShellRemote`] over a [`Transport`] (an SSH session, [`ssh::Conn`]): each operation is one
//!   shell script built by [`script`], one round trip, every value quoted;
//! - `fake::NodeState`: an in-memory node (files, units, listeners, clock), so the phase
//!   runner, preflight and verify logic are tested fast and without root. Test code only: it is
//!   compiled for the library's own tests (`cfg(test)`), never into the tool.
//!
//! A [`Connector`] opens one `Remote` per node; deploy and verify never know which kind they
//! hold. Private keys are only ever written to nodes, never read back: the operations that
//! read files return certificate blocks only ([`Remote::read_certificates`]) or configuration
//! that holds no secret ([`Remote::read_config`]), and key/certificate pairing is decided on
//! the node ([`Remote::check_keys`]).

#[cfg(test)]
pub mod fake;
pub mod script;
mod shell;
pub mod ssh;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::inventory::Node;

pub use shell::{LocalShell, ShellRemote, Transport};

/// This machine's time in seconds since the epoch, fractional: what node clocks are compared
/// with ([`Facts::clock_offset`], the qemu lab's clock setting).
pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The most hardway reads of one file a node names (a unit, its EnvironmentFile, a config):
/// nodes are not trusted to keep their files small.
pub const READ_LIMIT: u64 = 1 << 20;

/// Why an operation on a node failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// Reaching or logging in to the node failed.
    #[error(transparent)]
    Ssh(#[from] ssh::SshError),
    /// The operation ran and failed; `detail` is what the node said.
    #[error("{op} failed: {detail}")]
    Failed { op: &'static str, detail: String },
    /// A file on the node is larger than hardway reads of one ([`READ_LIMIT`]).
    #[error("{path} on the node is {} bytes, more than the {limit} bytes hardway reads of a file a node names", size.map(|s| s.to_string()).unwrap_or_else(|| format!("more than {limit}")))]
    TooLarge {
        path: String,
        size: Option<u64>,
        limit: u64,
    },
}

impl RemoteError {
    pub fn failed(op: &'static str, detail: impl Into<String>) -> RemoteError {
        RemoteError::Failed {
            op,
            detail: detail.into(),
        }
    }
}

/// What a remote script returned.
#[derive(Debug, Clone)]
pub struct Output {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn ok(&self) -> bool {
        self.status == 0
    }
}

/// What a node has at one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemoteFile {
    pub sha256: String,
    pub mode: u32,
    /// `user:group`.
    pub owner: String,
}

/// A listening TCP socket on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listener {
    pub port: u16,
    /// The process name as `ss -p` shows it (cut to 15 characters by the kernel).
    pub process: String,
    /// The systemd unit whose cgroup the process is in, if any.
    pub unit: Option<String>,
}

/// What preflight asks a node.
#[derive(Debug, Clone, Default)]
pub struct FactsQuery {
    /// Files whose SHA-256, mode and owner are wanted.
    pub paths: Vec<String>,
    /// Executables whose presence is wanted.
    pub binaries: Vec<String>,
    /// The `/etc/hosts` block marker to look for (the cluster's name).
    pub hosts_block: String,
    /// Units whose `systemctl is-active` state is wanted.
    pub units: Vec<String>,
    /// Encryption configs whose `render::key_hashes` are wanted.
    pub fingerprints: Vec<String>,
    /// Tools whose presence on the node's PATH is wanted.
    pub tools: Vec<String>,
    /// (binary, argument) pairs whose first line of output is wanted (`containerd --version`).
    pub versions: Vec<(String, String)>,
    /// A directory on the node where each binary's answer is kept, keyed by the binary's inode,
    /// size and mtime, so that it runs again only once replaced ([`VERSION_CACHE`]; `None` in a
    /// dry run, which writes nothing). `containerd --version` costs a Go runtime's start, 16 ms
    /// of CPU: most of a no-change deploy's per-host work.
    pub version_cache: Option<String>,
}

/// What a node told preflight, in one round trip.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub systemd: bool,
    /// Node clock minus ours, in seconds (estimated at the midpoint of the round trip); NaN
    /// when the node did not say.
    pub clock_offset: f64,
    /// How far `clock_offset` may be off: half the round trip (a slow node, a VM under TCG,
    /// must not look skewed for it).
    pub clock_uncertainty: f64,
    pub swap_active: bool,
    pub present_binaries: BTreeSet<String>,
    pub listeners: Vec<Listener>,
    pub hosts_block: bool,
    pub files: BTreeMap<String, RemoteFile>,
    /// `systemctl is-active` of each asked unit (`active`, `inactive`, `failed`, …).
    pub units: BTreeMap<String, String>,
    /// The asked units `systemctl is-enabled` says are enabled.
    pub enabled: BTreeSet<String>,
    /// `render::key_hashes` of each asked file that exists.
    pub fingerprints: BTreeMap<String, BTreeSet<String>>,
    /// The node's cgroup hierarchy is the unified one (cgroup v2).
    pub cgroup2: bool,
    /// Bridged traffic can be made to pass iptables: br_netfilter is loaded or built in (its
    /// sysctls exist), or can be loaded (`modinfo` finds it).
    pub br_netfilter: bool,
    /// The asked tools found on the node's PATH.
    pub tools: BTreeSet<String>,
    /// The first line each asked binary printed, for those that exist.
    pub versions: BTreeMap<String, String>,
}

impl Facts {
    pub fn unit_active(&self, unit: &str) -> bool {
        self.units.get(unit).is_some_and(|s| s == "active")
    }

    /// Running and enabled: starting it would change nothing.
    pub fn unit_up(&self, unit: &str) -> bool {
        self.unit_active(unit) && self.enabled.contains(unit)
    }

    /// Set up on the node, as [`UnitInfo::deployed`] judges it from what the facts read:
    /// enabled, or not inactive (running, starting, failed). A unit nobody set up (no unit
    /// file, or a package's that nobody enabled or started) is neither.
    pub fn unit_deployed(&self, unit: &str) -> bool {
        self.enabled.contains(unit) || self.units.get(unit).is_some_and(|s| s != "inactive")
    }
}

/// One file to place, or to give its mode and owner (`root:root`).
#[derive(Debug, Clone, Copy)]
pub struct Upload<'a> {
    pub path: &'a str,
    pub mode: u32,
    pub contents: &'a [u8],
    /// The node has these bytes already; only mode and owner are set.
    pub metadata_only: bool,
}

/// Where a node lists every file hardway placed on it, so that `reset` removes exactly those.
pub const PLACED: &str = "/var/lib/hardway/placed";

/// Where a node keeps the version lines of its binaries ([`FactsQuery::version_cache`]);
/// `reset` removes it.
pub const VERSION_CACHE: &str = "/var/lib/hardway/versions";

/// A batch of systemctl work on one node, done in this order: stop, disable, daemon-reload,
/// enable and restart, enable and start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitOps {
    /// Stopped (first).
    pub stop: Vec<String>,
    /// Disabled: they no longer start at boot.
    pub disable: Vec<String>,
    pub daemon_reload: bool,
    /// Enabled, then restarted.
    pub restart: Vec<String>,
    /// Enabled, then started (a no-op for a running unit).
    pub start: Vec<String>,
    /// Reloaded in place (`systemctl reload`: the unit's ExecReload), after the restarts.
    pub reload: Vec<String>,
    /// Return at once instead of waiting for each start (etcd members wait for quorum, so a
    /// blocking start on the first would wait forever for the others).
    pub no_block: bool,
}

impl UnitOps {
    pub fn is_empty(&self) -> bool {
        !self.daemon_reload
            && self.restart.is_empty()
            && self.start.is_empty()
            && self.reload.is_empty()
            && self.stop.is_empty()
            && self.disable.is_empty()
    }
}

/// A unit as systemd reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitInfo {
    /// `loaded`, `not-found`, …
    pub load: String,
    /// `active`, `inactive`, `failed`, `activating`, …
    pub active: String,
    /// `enabled`, `disabled`, …
    pub enabled: String,
    /// `systemctl cat`: the unit file and its drop-ins.
    pub text: String,
}

impl UnitInfo {
    /// Set up on the node: its unit exists, and it is enabled or has run. A unit a package
    /// installed and nobody enabled or started (Debian's containerd on a node whose workers
    /// phase has not run) is not deployed, whatever the package put there.
    pub fn deployed(&self) -> bool {
        self.load == "loaded" && !(self.enabled == "disabled" && self.active == "inactive")
    }
}

#[cfg(test)]
mod unit_info_tests {
    use super::UnitInfo;

    #[test]
    fn a_packaged_unit_nobody_set_up_is_not_deployed() {
        let unit = |load: &str, active: &str, enabled: &str| UnitInfo {
            load: load.into(),
            active: active.into(),
            enabled: enabled.into(),
            text: String::new(),
        };
        assert!(!unit("not-found", "inactive", "").deployed());
        assert!(!unit("loaded", "inactive", "disabled").deployed());
        assert!(unit("loaded", "failed", "disabled").deployed());
        assert!(unit("loaded", "inactive", "enabled").deployed());
        assert!(unit("loaded", "active", "disabled").deployed());
    }
}

/// A private key checked on its node: who may read it, and whether it belongs to its
/// certificate (compared by the SHA-256 of the public key openssl derives from each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCheck {
    /// `(mode, user)`; none when the key file is missing.
    pub mode_owner: Option<(u32, String)>,
    pub pairing: Pairing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pairing {
    Match,
    Differ,
    /// openssl is not installed on the node: nothing could be compared.
    NoOpenssl,
}

/// The cluster's block in `/etc/hosts` (`# BEGIN hardway <cluster>` … `# END …`).
#[derive(Debug, Clone)]
pub struct HostsBlock<'a> {
    pub cluster: &'a str,
    /// The file holding the block, placed by deploy (`/etc/hardway/hosts`).
    pub source: &'a str,
    /// The file it is merged into (`/etc/hosts`).
    pub target: &'a str,
}

/// How far a restore moves etcd's revision past the snapshot's (with `--mark-compacted`), as
/// Kubernetes' etcd docs advise: every watcher (API servers' caches, informers) then finds its
/// revision compacted and relists, instead of waiting for revisions the restore took back. The
/// docs' figure, far more than a cluster writes between snapshot and restore.
pub const BUMP_REVISION: u64 = 1_000_000_000;

/// `etcdutl snapshot restore` (or `etcdctl` where there is no etcdutl) of a snapshot already
/// on the node, into an empty data dir.
#[derive(Debug, Clone)]
pub struct EtcdRestore<'a> {
    pub snapshot: &'a str,
    pub name: &'a str,
    pub initial_cluster: &'a str,
    pub token: &'a str,
    pub peer_url: &'a str,
    pub data_dir: &'a str,
    /// Where etcd's own tools may be besides the PATH (`binaries.remote_dir`).
    pub bin_dir: &'a str,
}

/// The addons, applied with kubectl on one node once its API server is ready.
pub struct Apply<'a> {
    pub kubectl: &'a str,
    pub kubeconfig: &'a str,
    pub addons: &'a [crate::addons::Addon],
    /// How long to wait for `/readyz`, and for each addon's readiness step.
    pub timeout_secs: u32,
}

/// Image tarballs already on the node, to import into containerd's `k8s.io` namespace (the
/// one the kubelet's CRI uses).
pub struct ImportImages<'a> {
    /// containerd's client, `ctr`.
    pub ctr: &'a str,
    /// Each archive on the node, with the image references it names ([`crate::images::refs`]):
    /// an archive whose images containerd has already is not imported again.
    pub tarballs: Vec<(String, Vec<String>)>,
}

/// The operations hardway runs on a node. One implementation per transport (SSH, in memory);
/// each call is one round trip.
pub trait Remote: Send {
    /// The node's inventory name.
    fn node(&self) -> &str;

    /// Systemd, clock, swap, listening ports, which binaries exist, the hosts block, and the
    /// hash, mode and owner of each path.
    fn facts(&self, q: &FactsQuery) -> Result<Facts, RemoteError>;

    /// Places every upload: staged beside its target, checked by SHA-256, given its mode and
    /// owner `root:root`, then renamed into place (a reader never sees half a file).
    fn install_files(&self, uploads: &[Upload<'_>]) -> Result<(), RemoteError>;

    /// Replaces the cluster's block in the hosts file with the block file's, keeping every
    /// other line, atomically.
    fn merge_hosts_block(&self, block: &HostsBlock<'_>) -> Result<(), RemoteError>;

    /// daemon-reload, enable, restart and start, in that order.
    fn systemctl(&self, ops: &UnitOps) -> Result<(), RemoteError>;

    /// `systemctl is-active` of each unit.
    fn unit_states(&self, units: &[String]) -> Result<BTreeMap<String, String>, RemoteError>;

    /// The last lines of each unit's journal, for error reports.
    fn journal_tail(&self, units: &[String], lines: u32) -> Result<String, RemoteError>;

    /// Load state, active state, enablement and the unit file of each unit.
    fn units(&self, units: &[String]) -> Result<BTreeMap<String, UnitInfo>, RemoteError>;

    /// The certificate blocks of each file (never anything else in it, so a file that also
    /// holds a key gives only its certificate), and of a kubeconfig those in its
    /// `certificate-authority-data` and `client-certificate-data`; none when the file is missing.
    fn read_certificates(
        &self,
        paths: &[String],
    ) -> Result<BTreeMap<String, Option<String>>, RemoteError>;

    /// A configuration file that holds no secret (the kubelet's config, haproxy.cfg); none when
    /// missing.
    fn read_config(&self, path: &str) -> Result<Option<String>, RemoteError>;

    /// Files as `render::mask_secrets` shows them, masked on the node (keys never leave it);
    /// none for a missing file.
    fn read_masked(
        &self,
        paths: &[String],
    ) -> Result<BTreeMap<String, Option<String>>, RemoteError>;

    /// For each (certificate, key): the key's mode and owner, and whether they belong together.
    fn check_keys(&self, pairs: &[(String, String)]) -> Result<Vec<KeyCheck>, RemoteError>;

    /// Hash, mode and owner of each existing path.
    fn stat_files(&self, paths: &[String]) -> Result<BTreeMap<String, RemoteFile>, RemoteError>;

    /// `haproxy -c` on a configuration: `Ok(Err(reason))` when HAProxy refuses it.
    fn haproxy_check(&self, config: &str) -> Result<Result<(), String>, RemoteError>;

    /// Sends `request` to a Unix socket on the node and returns the whole answer.
    fn socket_request(&self, socket: &str, request: &[u8]) -> Result<String, RemoteError>;

    /// Applies the addons with kubectl once the API server is ready, each step in order
    /// ([`crate::addons::in_order`]); an error names the addon and the step that failed. The
    /// objects kubectl created or changed (`<kind>/<name> created|configured`), none when every
    /// object was `unchanged`.
    fn apply(&self, apply: &Apply<'_>) -> Result<Vec<String>, RemoteError>;

    /// Imports the archives whose images containerd lacks; the archives it imported.
    fn import_images(&self, import: &ImportImages<'_>) -> Result<Vec<String>, RemoteError>;

    /// Stores every Secret again through the API, with kubectl on the node (`get secrets
    /// --all-namespaces -o json | replace -f -`, kubernetes #49565: all namespaces), so each is
    /// encrypted with the key the API servers now encrypt with; the number rewritten. The
    /// Secrets never leave the node: only kubectl's `replaced` lines come back.
    fn rewrite_secrets(&self, kubectl: &str, kubeconfig: &str) -> Result<usize, RemoteError>;

    /// Renames `path` to `path.SUFFIX` (never deletes): the new name, or none when `path` does
    /// not exist.
    fn move_aside(&self, path: &str, suffix: &str) -> Result<Option<String>, RemoteError>;

    /// Removes files and directories (reset, and the copies restore uploads).
    fn remove_paths(&self, paths: &[String]) -> Result<(), RemoteError>;

    /// The files hardway placed on the node ([`PLACED`]).
    fn placed_files(&self) -> Result<Vec<String>, RemoteError>;

    /// Stops and removes every pod sandbox (and so its containers and their CNI networking)
    /// through the CRI with `crictl` at the runtime's socket, as `kubeadm reset` does: a stopped
    /// containerd leaves its shims and containers running. How many pods there were; 0 when
    /// `crictl` or the socket is not there.
    fn remove_pods(&self, crictl: &str, socket: &str) -> Result<usize, RemoteError>;

    /// Runs the script of a teaching fault (`hardway lab break`/`fix`, the classroom's
    /// scenarios) as root: the one operation whose script is not hardway's own, named by its
    /// scenario in the run log like every other. Its output; a non-zero exit is the caller's
    /// to judge (the scenario says why).
    fn lab_fault(&self, scenario: &str, script: &str) -> Result<Output, RemoteError>;

    /// Restores an etcd snapshot into a member's (empty) data dir.
    fn restore_etcd(&self, r: &EtcdRestore<'_>) -> Result<(), RemoteError>;

    /// `etcdutl snapshot status` (`etcdctl`'s where there is no etcdutl) of a snapshot already
    /// on the node: what it holds, or `Ok(Err(why))` when it is not a snapshot etcd can use.
    fn snapshot_status(
        &self,
        snapshot: &str,
        bin_dir: &str,
    ) -> Result<Result<String, String>, RemoteError>;

    /// Renames `from` to `to` (undoing [`Remote::move_aside`]); `to` must not exist.
    fn move_back(&self, from: &str, to: &str) -> Result<(), RemoteError>;

    /// Removes the cluster's block from the hosts file, keeping every other line.
    fn remove_hosts_block(&self, cluster: &str, target: &str) -> Result<(), RemoteError>;

    /// Installs distribution packages with apt (Debian, Ubuntu): `apt-get update`, then
    /// `apt-get install --no-install-recommends`, non-interactive, from the node's own package
    /// sources. The packages that were not installed before; an error names what apt said.
    fn install_packages(&self, packages: &[String]) -> Result<Vec<String>, RemoteError>;

    /// The version apt would install of each package (`apt-cache policy`'s candidate, as
    /// Debian writes it: `1.7.24~ds1-6+b4`), `None` where the node's sources have none; with
    /// `refresh`, after `apt-get update`. Asked before installing what must fit a version table.
    fn package_candidates(
        &self,
        packages: &[String],
        refresh: bool,
    ) -> Result<BTreeMap<String, Option<String>>, RemoteError>;
}

/// Opens a [`Remote`] for a node.
pub trait Connector: Send + Sync {
    fn connect(&self, node: &Node) -> Result<Box<dyn Remote>, RemoteError>;
}

/// Runs `f` on every item (one per host), at most `parallel` at once, each on tokio's blocking
/// pool: remote operations block, and one session is never shared between threads.
pub async fn fan_out<T, F>(items: Vec<T>, parallel: usize, f: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(&mut T) + Send + Sync + 'static,
{
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let f = std::sync::Arc::new(f);
    let mut handles = Vec::new();
    for mut item in items {
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let f = f.clone();
        handles.push(tokio::task::spawn_blocking(move || {
            f(&mut item);
            drop(permit);
            item
        }));
    }
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.expect("a host task panicked"));
    }
    out
}
