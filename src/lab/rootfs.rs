//! Root file systems: the Debian cache of each suite, built once by debootstrap from the host's
//! own apt mirror and customised for every node alike, and each node's overlay on it with the
//! node's identity (hostname, machine-id, host key) and the lab's key for root.

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::error::{LabError, Result, io_error};
use super::files::{
    create_dir_all, is_mount_point, lock, mount_overlay, overlays_on, remove_tree, tail, write_file,
};
use super::layout::{CacheLayout, Layout, NodeLayout};
use super::tools::{authorize_key, command, describe, known_hosts_line, run, ssh_keygen};
use crate::inventory::{Inventory, LabSoftware, LabSuite};
use crate::safe_fs::{Dir, Missing, read_beneath, write_beneath};

/// What every node gets, whatever its roles: the deploy installs its own units and configs
/// over the packages' and starts what each node runs. Workers' data plane: containerd, runc,
/// the CNI plugins, iptables (the bridge plugin's masquerading), conntrack and socat (the
/// kubelet's port forwarding), kmod (containerd's unit runs modprobe).
const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "iproute2",
    "etcd-server",
    "etcd-client",
    "haproxy",
    "ca-certificates",
    "sudo",
    "procps",
    "containerd",
    "runc",
    "containernetworking-plugins",
    "iptables",
    "conntrack",
    "socat",
    "kmod",
];
/// `lab.software = "bare"`: Debian's base as a new machine has it, with sshd (and sudo), and
/// what the lab itself needs to boot and reach it (systemd as PID 1, dbus, ip, kmod). Nothing a
/// node runs: deploy brings the binaries, and installs the rest with apt where told to.
const BARE_PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "iproute2",
    "ca-certificates",
    "sudo",
    "procps",
    "kmod",
];

fn packages(software: LabSoftware) -> &'static [&'static str] {
    match software {
        LabSoftware::Packages => PACKAGES,
        LabSoftware::Bare => BARE_PACKAGES,
    }
}

/// Packaged services the deploy replaces with its own units, started only where they belong.
const PACKAGED_SERVICES: &[&str] = &["etcd.service", "haproxy.service", "containerd.service"];
/// Bump whenever `customize_rootfs` changes, so that existing caches are rebuilt, not reused.
const ROOTFS_REVISION: u32 = 2;
/// Written last into a finished cache, holding [`recipe`]: a cache without it is never used.
const ROOTFS_MARKER: &str = "etc/hardway-lab-rootfs";

/// Names the suite too, so that one suite's cache is never taken for another's.
fn recipe(suite: LabSuite, software: LabSoftware) -> String {
    format!(
        "hardway lab root fs, revision {ROOTFS_REVISION}\nsuite: {suite}\npackages: {}\n",
        packages(software).join(",")
    )
}

/// The cached root fs, built first if missing or from an older recipe. Built in a temporary
/// directory and renamed into place, so a half-built root fs is never used.
pub(super) fn ensure_cache_rootfs(cache: &CacheLayout) -> Result<PathBuf> {
    create_dir_all(&cache.dir)?;
    // Two labs coming up at once would otherwise debootstrap into the same temporary directory.
    let _lock = lock(&cache.lock_file())?;
    let (rootfs, suite, software) = (cache.rootfs(), cache.suite, cache.software);
    if fs::read_to_string(rootfs.join(ROOTFS_MARKER)).is_ok_and(|r| r == recipe(suite, software)) {
        return Ok(rootfs);
    }
    let tmp = cache.build_dir();
    remove_tree(&tmp)?;
    let mirror = debian_mirror(suite)?;
    let log_path = cache.log();
    let log = File::create(&log_path).map_err(io_error("create", &log_path))?;
    let log2 = log.try_clone().map_err(io_error("open", &log_path))?;
    eprintln!(
        "lab: building the {suite} root fs from {mirror} into {} (once; one or two minutes)",
        rootfs.display()
    );
    let mut c = command("debootstrap");
    c.arg("--variant=minbase")
        .arg(format!("--include={}", packages(software).join(",")))
        .arg(suite.as_str())
        .arg(&tmp)
        .arg(&mirror)
        .stdout(log2)
        .stderr(log);
    let status = c.status().map_err(|error| LabError::Spawn {
        command: describe(&c),
        error,
    })?;
    if !status.success() {
        let inner_log = tmp.join("debootstrap/debootstrap.log");
        return Err(LabError::Debootstrap {
            suite: suite.as_str(),
            mirror,
            status,
            logs: vec![
                (log_path.clone(), tail(&log_path, 15)),
                (inner_log.clone(), tail(&inner_log, 15)),
            ],
        });
    }
    customize_rootfs(&tmp, software)?;
    write_file(&tmp.join(ROOTFS_MARKER), recipe(suite, software))?;
    if fs::symlink_metadata(&rootfs).is_ok() {
        let users = overlays_on(&rootfs);
        if !users.is_empty() {
            return Err(LabError::CacheInUse { rootfs, users });
        }
        let old = cache.old_dir();
        remove_tree(&old)?;
        fs::rename(&rootfs, &old).map_err(io_error("move aside", &rootfs))?;
        remove_tree(&old)?;
    }
    fs::rename(&tmp, &rootfs).map_err(io_error("rename into place", &tmp))?;
    Ok(rootfs)
}

const SSHD_DROP_IN: &str = "\
# Written by `hardway lab`: root logs in with the lab key only, and each node has exactly one
# host key of its own, generated when the node is created.
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
HostKey /etc/ssh/ssh_host_ed25519_key
";

/// What every node has in common; per-node identity (hostname, machine-id, host key) is added
/// to each node's overlay by `ensure_node_rootfs`.
fn customize_rootfs(root: &Path, software: LabSoftware) -> Result<()> {
    run(command("chroot")
        .arg(root)
        .args(["systemctl", "enable", "ssh.service"]))?;
    // Disabled, not masked: a mask is a symlink to /dev/null at the very path where the deploy
    // writes its own etcd.service and haproxy.service.
    if software == LabSoftware::Packages {
        run(command("chroot")
            .arg(root)
            .args(["systemctl", "disable"])
            .args(PACKAGED_SERVICES))?;
    }

    let ssh_dir = root.join("etc/ssh");
    for e in fs::read_dir(&ssh_dir)
        .map_err(io_error("read", &ssh_dir))?
        .flatten()
    {
        if e.file_name().to_string_lossy().starts_with("ssh_host_") {
            fs::remove_file(e.path()).map_err(io_error("remove", &e.path()))?;
        }
    }
    write_file(
        &root.join("etc/ssh/sshd_config.d/hardway-lab.conf"),
        SSHD_DROP_IN,
    )?;

    // Each node gets its own id on its overlay; dbus must read that one, not this empty one.
    write_file(&root.join("etc/machine-id"), "")?;
    let dbus_id = root.join("var/lib/dbus/machine-id");
    if fs::symlink_metadata(&dbus_id).is_ok() {
        fs::remove_file(&dbus_id).map_err(io_error("remove", &dbus_id))?;
    }
    if root.join("var/lib/dbus").is_dir() {
        std::os::unix::fs::symlink("/etc/machine-id", &dbus_id)
            .map_err(io_error("create symlink", &dbus_id))?;
    }
    Ok(())
}

/// The mirror the host's own apt uses for the suite, from deb822 `.sources` files first, then
/// one-line `.list` files. A host rarely lists other releases than its own (a bookworm host
/// building a trixie lab): then the mirror of its own release serves, since a Debian mirror
/// carries every suite.
fn debian_mirror(suite: LabSuite) -> Result<String> {
    let mut files: Vec<PathBuf> = fs::read_dir("/etc/apt/sources.list.d")
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    let texts: Vec<(bool, String)> = files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "sources"))
        .filter_map(|f| Some((true, fs::read_to_string(f).ok()?)))
        .chain(
            std::iter::once(PathBuf::from("/etc/apt/sources.list"))
                .chain(
                    files
                        .iter()
                        .filter(|f| f.extension().is_some_and(|e| e == "list"))
                        .cloned(),
                )
                .filter_map(|f| Some((false, fs::read_to_string(f).ok()?))),
        )
        .collect();
    let find = |wanted: &dyn Fn(&str) -> bool| {
        texts.iter().find_map(|(deb822, t)| {
            if *deb822 {
                mirror_from_deb822(t, wanted)
            } else {
                mirror_from_one_line(t, wanted)
            }
        })
    };
    find(&|s| s == suite.as_str())
        .or_else(|| find(&|s| DEBIAN_RELEASES.contains(&s)))
        .ok_or(LabError::NoMirror {
            suite: suite.as_str(),
        })
}

/// Debian releases' main suites, by name and alias: a source for one of them is a Debian
/// mirror (not Ubuntu's), and not a `-security` or `-updates` archive, which carry only part
/// of a release.
const DEBIAN_RELEASES: &[&str] = &[
    "bullseye",
    "bookworm",
    "trixie",
    "forky",
    "sid",
    "oldoldstable",
    "oldstable",
    "stable",
    "testing",
    "unstable",
];

fn mirror_from_deb822(text: &str, suite: &dyn Fn(&str) -> bool) -> Option<String> {
    let mut stanzas: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for line in text.lines() {
        if line.trim().is_empty() {
            stanzas.push(Vec::new());
        } else if line.starts_with('#') {
            continue;
        } else if line.starts_with([' ', '\t']) {
            let stanza = stanzas.last_mut().expect("never empty");
            if let Some((_, value)) = stanza.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            stanzas
                .last_mut()
                .expect("never empty")
                .push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    stanzas.iter().find_map(|s| {
        let get = |k: &str| {
            s.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        let enabled = !get("enabled").eq_ignore_ascii_case("no");
        let deb = get("types").split_whitespace().any(|t| t == "deb");
        let has_suite = get("suites").split_whitespace().any(suite);
        (enabled && deb && has_suite)
            .then(|| get("uris").split_whitespace().next().map(str::to_string))
            .flatten()
    })
}

fn mirror_from_one_line(text: &str, suite: &dyn Fn(&str) -> bool) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or("");
        let mut tokens = line.split_whitespace();
        if tokens.next() != Some("deb") {
            return None;
        }
        let mut uri = tokens.next()?;
        if uri.starts_with('[') {
            while !uri.ends_with(']') {
                uri = tokens.next()?;
            }
            uri = tokens.next()?;
        }
        suite(tokens.next()?).then(|| uri.to_string())
    })
}

// ---------------------------------------------------------------------------------------------
// Per-node files.

/// The lab key pair, created once per lab; returns the public key line.
pub(super) fn ensure_lab_key(layout: &Layout) -> Result<String> {
    let (key, public) = (layout.key(), layout.public_key());
    if !key.is_file() || !public.is_file() {
        let _ = fs::remove_file(&key);
        let _ = fs::remove_file(&public);
        ssh_keygen(&key, &format!("hardway-lab-{}", layout.cluster))?;
    }
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600))
        .map_err(io_error("chmod", &key))?;
    Ok(fs::read_to_string(&public)
        .map_err(io_error("read", &public))?
        .trim()
        .to_string())
}

pub(super) fn hosts_file(inv: &Inventory) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\n# The lab's nodes.\n",
    );
    for n in &inv.nodes {
        match inv.fqdn(n) {
            Some(fqdn) => s.push_str(&format!("{}\t{fqdn} {}\n", n.address, n.name)),
            None => s.push_str(&format!("{}\t{}\n", n.address, n.name)),
        }
    }
    s
}

/// The lab's `/etc/hosts` lines followed by every `# BEGIN hardway …` … `# END hardway …`
/// block of the file the machine has now (what deploy merged in), in their order.
fn with_cluster_blocks(lab: &str, current: Option<&str>) -> String {
    let mut out = lab.to_string();
    let mut inside = false;
    for line in current.unwrap_or_default().lines() {
        inside |= line.starts_with("# BEGIN hardway ");
        if inside {
            if !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(line);
            out.push('\n');
        }
        inside &= !line.starts_with("# END hardway ");
    }
    out
}

fn new_machine_id() -> Result<String> {
    let path = Path::new("/proc/sys/kernel/random/uuid");
    let uuid = fs::read_to_string(path).map_err(io_error("read a random uuid from", path))?;
    Ok(uuid.trim().replace('-', ""))
}

/// The node's root fs is an overlay: the cache below, read-only, and the node's own changes in
/// `<node>/upper`. Mounting takes milliseconds where a copy took seconds per node, and the upper
/// layer keeps the node's identity and data across `up`s, as a real machine's disk would. (The
/// nspawn driver adds what the node's kind needs: `super::nspawn`.)
pub(super) fn ensure_node_rootfs(
    cache: Option<&Path>,
    node: &NodeLayout,
    hosts: &str,
    lab_pub: &str,
) -> Result<()> {
    let root = node.rootfs();
    if !is_mount_point(&root) {
        let Some(cache) = cache else {
            return Err(LabError::Machine {
                node: node.name.clone(),
                reason: "no root fs cache to mount".into(),
            });
        };
        mount_overlay(cache, &node.dir, &root)?;
    }
    // Everything below is written into a root file system the machine's own root user
    // controls: no link in it is followed (crate::safe_fs), so a planted one fails `up`, naming
    // it, instead of redirecting a write to the host.
    // The cache's machine-id is empty; a node's is written once and then kept.
    let machine_id = Path::new("etc/machine-id");
    let current = read_beneath(&root, machine_id, 4096)?;
    if current
        .as_deref()
        .is_none_or(|b| String::from_utf8_lossy(b).trim().is_empty())
    {
        write_beneath(
            &root,
            machine_id,
            format!("{}\n", new_machine_id()?).as_bytes(),
            0o444,
            0o755,
        )?;
    }
    write_beneath(
        &root,
        Path::new("etc/hostname"),
        format!("{}\n", node.name).as_bytes(),
        0o644,
        0o755,
    )?;
    // A running machine's own blocks (deploy's `# BEGIN hardway <cluster>`) stay: `up` of a
    // grown lab rewrites the lab's lines of every machine, not what the cluster put there.
    let hosts_path = Path::new("etc/hosts");
    let current = read_beneath(&root, hosts_path, 1 << 20)?;
    let hosts = with_cluster_blocks(
        hosts,
        current.as_deref().map(String::from_utf8_lossy).as_deref(),
    );
    write_beneath(&root, hosts_path, hosts.as_bytes(), 0o644, 0o755)?;
    authorize_key(&root, lab_pub)?;
    ensure_host_key(&root, node)
}

/// The node's host key, made once: generated in the node's directory on the host (ssh-keygen
/// would follow a link the machine planted), then written into its root.
fn ensure_host_key(root: &Path, node: &NodeLayout) -> Result<()> {
    let ssh = Dir::open(root)?.walk(Path::new("etc/ssh"), Missing::Create(0o755))?;
    let (key, public) = ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub");
    if ssh.is_file(key.as_ref()) && ssh.is_file(public.as_ref()) {
        return Ok(());
    }
    let tmp = node.dir.join("host-key.tmp");
    remove_tree(&tmp)?;
    let dir = crate::safe_fs::private_dir(&node.dir, Path::new("host-key.tmp"))?;
    let generated = dir.path().join(key);
    ssh_keygen(&generated, &format!("root@{}", node.name))?;
    let read = |p: &Path| fs::read(p).map_err(io_error("read", p));
    let (k, p) = (read(&generated)?, read(&generated.with_extension("pub"))?);
    ssh.write(key.as_ref(), &k, 0o600)?;
    ssh.write(public.as_ref(), &p, 0o644)?;
    remove_tree(&tmp)
}

pub(super) fn write_known_hosts(layout: &Layout) -> Result<()> {
    let mut text = String::new();
    for node in &layout.nodes {
        text.push_str(&known_hosts_line(
            node.address,
            &node.rootfs(),
            Path::new("etc/ssh/ssh_host_ed25519_key.pub"),
        )?);
    }
    let tmp = layout.dir.join("known_hosts.tmp");
    write_file(&tmp, text)?;
    fs::rename(&tmp, layout.known_hosts()).map_err(io_error("rename", &tmp))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grown_lab_keeps_the_cluster_blocks_of_a_running_machine() {
        let lab = "127.0.0.1\tlocalhost\n\n# The lab's nodes.\n10.0.0.1\tm1\n10.0.0.2\tw3\n";
        let now = "127.0.0.1\tlocalhost\n\n# The lab's nodes.\n10.0.0.1\tm1\n\
                   # BEGIN hardway lab\n10.0.0.1 m1.lab m1\n# END hardway lab\n10.9.9.9 mine\n";
        assert_eq!(
            with_cluster_blocks(lab, Some(now)),
            format!("{lab}# BEGIN hardway lab\n10.0.0.1 m1.lab m1\n# END hardway lab\n")
        );
        // A new machine, or one deploy has not reached: the lab's lines alone.
        assert_eq!(with_cluster_blocks(lab, None), lab);
        assert_eq!(with_cluster_blocks(lab, Some(lab)), lab);
    }

    #[test]
    fn deb822_sources() {
        let text = "Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\nURIs: http://deb.debian.org/debian\n\
                    Suites: bookworm bookworm-updates\nComponents: main\n\n\
                    Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n";
        let is = |want: &'static str| move |s: &str| s == want;
        assert_eq!(
            mirror_from_deb822(text, &is("bookworm")).as_deref(),
            Some("http://deb.debian.org/debian")
        );
        assert_eq!(
            mirror_from_deb822(text, &is("bookworm-security")).as_deref(),
            Some("http://deb.debian.org/debian-security")
        );
        let disabled = "Types: deb\nURIs: http://a/debian\nSuites: bookworm\nEnabled: no\n\nTypes: deb-src deb\nURIs:\n http://b/debian\nSuites: bookworm\n";
        assert_eq!(
            mirror_from_deb822(disabled, &is("bookworm")).as_deref(),
            Some("http://b/debian")
        );
        assert_eq!(
            mirror_from_deb822(
                "Types: deb-src\nURIs: http://a\nSuites: bookworm\n",
                &is("bookworm")
            ),
            None
        );
        // No trixie source on a bookworm host: the mirror of a Debian release, not the security one.
        assert_eq!(mirror_from_deb822(text, &is("trixie")), None);
        let release = |s: &str| DEBIAN_RELEASES.contains(&s);
        assert_eq!(
            mirror_from_deb822(text, &release).as_deref(),
            Some("http://deb.debian.org/debian")
        );
    }

    #[test]
    fn one_line_sources() {
        let text = "# deb http://old bookworm main\ndeb-src http://src bookworm main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://mirror/debian bookworm main contrib\n";
        let bookworm = |s: &str| s == "bookworm";
        assert_eq!(
            mirror_from_one_line(text, &bookworm).as_deref(),
            Some("http://mirror/debian")
        );
        assert_eq!(
            mirror_from_one_line("deb http://m/debian bookworm-updates main\n", &bookworm),
            None
        );
    }

    /// The recipe is what existing caches were marked with: changing it rebuilds every cache.
    #[test]
    fn recipe_is_unchanged() {
        assert_eq!(
            recipe(LabSuite::Trixie, LabSoftware::Packages),
            "hardway lab root fs, revision 2\nsuite: trixie\npackages: systemd,systemd-sysv,dbus,openssh-server,\
             iproute2,etcd-server,etcd-client,haproxy,ca-certificates,sudo,procps,containerd,runc,\
             containernetworking-plugins,iptables,conntrack,socat,kmod\n"
        );
        // One suite's cache is never taken for another's.
        assert_ne!(
            recipe(LabSuite::Sid, LabSoftware::Packages),
            recipe(LabSuite::Trixie, LabSoftware::Packages)
        );
        assert_ne!(
            recipe(LabSuite::Trixie, LabSoftware::Bare),
            recipe(LabSuite::Trixie, LabSoftware::Packages)
        );
    }
}
