//! A booted lab for integration tests: `boot` brings up tests/fixtures/lab-etcd.toml's machines (or
//! `boot_inventory` another inventory's) under a test-specific state directory and tears them
//! down when the returned `TestLab` is dropped, also when the test panics. `LabGuard` is the
//! same life cycle without the rest, for the `lab` module (tests/lab/lab.rs), which tests the lab itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::*;
use hardway::inventory::{self, Inventory};
use hardway::lab::{self, Lab, LabOptions};

/// One lab at a time: labs take the machine's cores and memory, and two of one inventory cannot
/// share its bridge and addresses. Within this test binary a mutex, across processes a lock
/// file.
static ONE_LAB: std::sync::Mutex<()> = std::sync::Mutex::new(());
const LAB_LOCK_FILE: &str = "/run/hardway-test-lab.lock";

/// This test's turn at the machine's labs, until dropped.
pub type Turn = (std::sync::MutexGuard<'static, ()>, std::fs::File);

/// Waits for this test's turn (the mutex, then the lock file); tests that boot several labs
/// hold one turn for all of them.
pub fn turn() -> Turn {
    // A test that panicked while holding the mutex has torn its lab down in Drop.
    let turn = ONE_LAB
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LAB_LOCK_FILE)
        .unwrap();
    file.lock().unwrap();
    (turn, file)
}

/// The lab of tests/fixtures/lab-etcd.toml with its state under a test's own directory; takes the lab
/// down when dropped, also when the test panics half way.
pub struct LabGuard {
    pub inv: Inventory,
    pub opts: LabOptions,
    // Released after `drop` has taken the lab down (fields drop after `Drop::drop`).
    _turn: Turn,
}

impl LabGuard {
    /// Fails (never skips) when this host cannot run a lab, naming every missing tool and the
    /// Debian package that provides it.
    pub fn new(state_dir: &str) -> LabGuard {
        LabGuard::for_inventory(state_dir, &repo().join("tests/fixtures/lab-etcd.toml"))
    }

    /// The lab of the inventory at `path`.
    pub fn for_inventory(state_dir: &str, path: &Path) -> LabGuard {
        let inv = inventory::load(path).unwrap_or_else(|e| panic!("{e}"));
        lab::preflight(inv.lab.suite).unwrap_or_else(|e| panic!("{e}"));
        LabGuard {
            inv,
            opts: LabOptions {
                state_dir: PathBuf::from(state_dir),
                ..LabOptions::default()
            },
            _turn: turn(),
        }
    }

    pub fn up(&self) -> Lab {
        lab::up(&self.inv, &self.opts).unwrap_or_else(|e| panic!("lab up: {e}"))
    }

    pub fn down(&self) {
        lab::down(&self.inv, &self.opts).unwrap_or_else(|e| panic!("lab down: {e}"))
    }

    pub fn status(&self) -> Lab {
        lab::status(&self.inv, &self.opts).unwrap_or_else(|e| panic!("lab status: {e}"))
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        if let Err(e) = lab::down(&self.inv, &self.opts) {
            eprintln!("teardown: lab down failed: {e}");
        }
    }
}

pub struct TestLab {
    /// First, so that the lab is down before `dir` is removed.
    guard: LabGuard,
    pub inv: Inventory,
    pub dir: tempfile::TempDir,
    /// The lab inventory rewritten to use the lab's key and a fresh known_hosts for hardway.
    pub inv_path: PathBuf,
    pub inv_text: String,
    pub pki: PathBuf,
    pub key: PathBuf,
    /// The lab's own known_hosts, which this harness's ssh client trusts.
    pub known_hosts: PathBuf,
    pub addresses: BTreeMap<String, String>,
}

pub fn boot(state_dir: &str) -> TestLab {
    boot_inventory(state_dir, &repo().join("tests/fixtures/lab-etcd.toml"))
}

/// Boots the lab of the inventory at `path`, which names the lab's key and known_hosts (as
/// tests/fixtures/lab-etcd.toml does); the copy in `inv_path` names the test's own.
pub fn boot_inventory(state_dir: &str, path: &Path) -> TestLab {
    let guard = LabGuard::for_inventory(state_dir, path);
    let inv = guard.inv.clone();
    let dir = tempfile::tempdir().unwrap();
    let mut t = TestLab {
        inv_path: dir.path().join("lab.toml"),
        inv_text: String::new(),
        pki: dir.path().join("pki"),
        key: PathBuf::new(),
        known_hosts: PathBuf::new(),
        addresses: inv
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.address.to_string()))
            .collect(),
        inv,
        dir,
        guard,
    };
    // From here on, a panic tears the lab down through Drop.
    let booted = t.guard.up();
    t.key = booted.ssh_key.clone();
    t.known_hosts = booted.known_hosts.clone();
    t.inv_text = std::fs::read_to_string(path)
        .unwrap()
        .replace(
            &t.inv
                .ssh
                .identity_file
                .as_ref()
                .unwrap()
                .display()
                .to_string(),
            &booted.ssh_key.display().to_string(),
        )
        .replace(
            &t.inv.ssh.known_hosts.display().to_string(),
            &t.dir.path().join("known_hosts").display().to_string(),
        );
    std::fs::write(&t.inv_path, &t.inv_text).unwrap();
    t
}

impl TestLab {
    /// `lab up` of another inventory of this lab: one that lists more nodes grows it. Taken
    /// down with the lab (`lab down` removes nodes the inventory no longer lists too).
    pub fn lab_up(&self, inv: &Path) -> Lab {
        let inv = inventory::load(inv).unwrap_or_else(|e| panic!("{e}"));
        lab::up(&inv, &self.guard.opts).unwrap_or_else(|e| panic!("lab up: {e}"))
    }

    pub fn lab_status(&self) -> Lab {
        self.guard.status()
    }

    /// Runs a command on a lab node with the system's ssh client (not hardway's).
    pub fn ssh(&self, node: &str, cmd: &str) -> Output {
        run(&mut self.ssh_command(node, cmd))
    }

    fn ssh_command(&self, node: &str, cmd: &str) -> Command {
        let mut c = Command::new("ssh");
        c.arg("-i")
            .arg(&self.key)
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .args([
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=5",
            ])
            .arg(format!("root@{}", self.addresses[node]))
            .arg(cmd);
        c
    }

    /// Like `ssh`, with `input` on the remote command's standard input.
    pub fn ssh_with_input(&self, node: &str, cmd: &str, input: &[u8]) -> Output {
        use std::io::Write;
        use std::process::Stdio;
        let mut child = self
            .ssh_command(node, cmd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    pub fn ssh_ok(&self, node: &str, cmd: &str) -> String {
        let o = self.ssh(node, cmd);
        assert!(
            o.status.success(),
            "{node}: {cmd}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    pub fn deploy(&self, inv: &Path, args: &[&str]) -> Output {
        run(&mut self.deploy_command(inv, args))
    }

    /// `hardway deploy` with this lab's PKI, to add environment or run as is.
    pub fn deploy_command(&self, inv: &Path, args: &[&str]) -> Command {
        let mut c = hardway();
        c.arg("deploy")
            .arg(inv)
            .arg("--pki")
            .arg(&self.pki)
            .args(["--etcd-timeout", "90"]);
        c.arg("--snapshot-dir")
            .arg(self.dir.path().join("snapshots"))
            .args(args);
        c
    }

    pub fn deploy_json(&self, inv: &Path, args: &[&str]) -> serde_json::Value {
        let o = self.deploy(inv, &[args, &["--output", "json"]].concat());
        assert!(
            o.status.success(),
            "deploy {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).expect("--output json prints JSON")
    }

    pub fn verify(&self, args: &[&str]) -> Output {
        run(hardway()
            .arg("verify")
            .arg("-i")
            .arg(&self.inv_path)
            .args(args))
    }

    /// The host PID of a node's init (its systemd, the first child of its systemd-nspawn):
    /// `/proc/<pid>/root` is the node's root directory, its sockets included.
    pub fn init_pid(&self, node: &str) -> u32 {
        let status = self.guard.status();
        let nspawn = status
            .nodes
            .iter()
            .find(|n| n.name == node)
            .and_then(|n| n.pid)
            .unwrap_or_else(|| panic!("{node} is not running"));
        let children = std::fs::read_to_string(format!("/proc/{nspawn}/task/{nspawn}/children"))
            .unwrap_or_default();
        children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{node}'s systemd-nspawn ({nspawn}) has no child"))
    }

    /// Debian's `etcdctl` (API v3) against the client URLs of `addresses`, with this lab PKI's
    /// health-check client certificate.
    pub fn etcdctl(&self, addresses: &[String], args: &[&str]) -> Output {
        let endpoints: Vec<String> = addresses
            .iter()
            .map(|a| format!("https://{a}:2379"))
            .collect();
        run(Command::new(require("etcdctl", "etcd-client"))
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .arg(format!(
                "--cacert={}",
                self.pki.join("etcd/ca.crt").display()
            ))
            .arg(format!(
                "--cert={}",
                self.pki.join("etcd/healthcheck-client.crt").display()
            ))
            .arg(format!(
                "--key={}",
                self.pki.join("etcd/healthcheck-client.key").display()
            ))
            .arg("--command-timeout=5s")
            .args(args))
    }

    /// This lab's inventory with the control plane of Kubernetes 1.37 as `scripts/build` builds
    /// it (`binaries.local_dir`, uploaded by deploy), for the control-plane and addons phases:
    /// kube-apiserver, the controller-manager and the scheduler on the masters, over the lab's
    /// etcd (Debian's), and kubectl on the first master. No kubelet runs (the lab's workers
    /// have no container runtime), so CoreDNS, which would wait for one, is off.
    pub fn control_plane_inventory(&self) -> PathBuf {
        let bin = kubernetes_build("1.37");
        let version = bin
            .file_name()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches('v')
            .to_string();
        let mut text = self.inv_text.replacen(
            "[cluster]\n",
            &format!("[cluster]\nkubernetes_version = \"{version}\"\n"),
            1,
        );
        text = text.replacen(
            "[binaries]\n",
            &format!("[binaries]\nlocal_dir = \"{}\"\n", bin.display()),
            1,
        );
        text.push_str("\n[addons.coredns]\nenabled = false\n");
        let cp = self.dir.path().join("control-plane.toml");
        std::fs::write(&cp, text).unwrap();
        cp
    }

    pub fn active_since(&self, node: &str, unit: &str) -> String {
        self.ssh_ok(
            node,
            &format!("systemctl show -p ActiveEnterTimestampMonotonic --value {unit}"),
        )
    }
}

/// The checks of `verify --output json`'s report, and whether it passed — after checking that
/// the report holds together: its verdict is the exit status, its counts are its checks'.
pub fn verify_checks(o: &Output) -> (bool, Vec<serde_json::Value>) {
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "verify --output json is not JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    let checks = v["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("verify's report has no checks: {v:#}"))
        .clone();
    assert_eq!(v["ok"], o.status.success(), "verdict vs exit status: {v:#}");
    for (status, key) in [
        ("PASS", "pass"),
        ("WARN", "warn"),
        ("FAIL", "fail"),
        ("SKIP", "skip"),
    ] {
        let n = checks.iter().filter(|c| c["status"] == status).count();
        assert_eq!(v["counts"][key], n, "{key}: {v:#}");
    }
    (o.status.success(), checks)
}

/// Where a check of verify's JSON report was made: its node, or `cluster` for a cluster-wide
/// check (`"host": null`), as the text report, grades and fault scenarios say.
pub fn place(check: &serde_json::Value) -> &str {
    check["host"].as_str().unwrap_or("cluster")
}
