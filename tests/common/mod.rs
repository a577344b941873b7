//! Helpers shared by the integration tests: locating real tools (failing loudly when one is
//! missing, never skipping), running them, and preparing inventories in temp directories.
//! Both test binaries include this file (`it` as `common`, `lab` inside its own `common`), and
//! each uses a part of it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod http;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn example_inventory() -> PathBuf {
    repo().join("inventory/example.toml")
}

/// The path of a real tool; panics with the Debian package to install when it is missing.
pub fn require(tool: &str, package: &str) -> PathBuf {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
    {
        let p = Path::new(dir).join(tool);
        if p.is_file() {
            return p;
        }
    }
    panic!("{tool} is required by this test: apt-get install {package} (.ci/run installs it)");
}

/// The directory `scripts/build-etcd` builds etcd, etcdctl and etcdutl into, at the release
/// `go/etcd/go.mod` pins (a supported one; the host's Debian may have an older etcd); panics
/// naming the script when it is missing.
pub fn etcd_build() -> PathBuf {
    let gomod = std::fs::read_to_string(repo().join("go/etcd/go.mod")).unwrap();
    let version = gomod
        .lines()
        .map(str::split_whitespace)
        .find_map(|mut w| (w.next() == Some("go.etcd.io/etcd/server/v3")).then(|| w.next()))
        .flatten()
        .expect("go/etcd/go.mod requires go.etcd.io/etcd/server/v3")
        .to_string();
    let root = std::env::var("HW_BUILD_DIR").unwrap_or_else(|_| "/var/cache/hardway/build".into());
    let dir = Path::new(&root).join(format!("etcd-{version}"));
    for tool in ["etcd", "etcdctl", "etcdutl"] {
        assert!(
            dir.join(tool).is_file(),
            "{} has no {tool}: run scripts/build-etcd (the README's test command and .ci/run do)",
            dir.display()
        );
    }
    dir
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// The directory of the Kubernetes binaries, containerd, runc and CNI plugins `scripts/build`
/// made for `minor` (`--print-dir`): fails loudly, naming the command, when they are missing.
pub fn kubernetes_build(minor: &str) -> PathBuf {
    let dir = PathBuf::from(
        ok(Command::new(repo().join("scripts/build")).args(["--print-dir", "--minor", minor]))
            .trim(),
    );
    for b in [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubelet",
        "kube-proxy",
        "kubectl",
        "containerd",
        "containerd-shim-runc-v2",
        "runc",
        "bridge",
    ] {
        assert!(
            dir.join(b).is_file(),
            "{} has no {b}: run scripts/build --minor {minor} (.ci/run does) before the lab tests",
            dir.display()
        );
    }
    dir
}

/// Runs and asserts success, returning stdout.
/// A command's stdout and stderr, as one text for messages and searches.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The binary, with its run logs in the tests' own state directory (under target/), not the
/// user's: `hardway logs` must name the user's newest run, never a test's.
pub fn hardway() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hardway"));
    c.env(
        "XDG_STATE_HOME",
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("state"),
    );
    c
}

/// `hardway pki generate` for `inv` into `out`, as an operator does before the first deploy.
pub fn pki_generate(inv: &Path, out: &Path) -> String {
    ok(hardway()
        .args(["pki", "generate", "-i"])
        .arg(inv)
        .arg("--out")
        .arg(out))
}

/// Generates the PKI and renders `inv` under `dir`; returns the build directory.
pub fn pki_and_render(inv: &Path, dir: &Path) -> PathBuf {
    let pki = dir.join("pki");
    let build = dir.join("build");
    pki_generate(inv, &pki);
    let o = ok(hardway()
        .args(["render", "-i"])
        .arg(inv)
        .arg("--pki")
        .arg(&pki)
        .arg("--out")
        .arg(&build));
    assert!(o.starts_with("rendered "), "{o}");
    build
}

/// Copies the example inventory into `dir`, applying text replacements, and returns its path.
pub fn inventory_variant(dir: &Path, name: &str, edits: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(example_inventory()).unwrap();
    for (from, to) in edits {
        assert!(
            text.contains(from),
            "example.toml no longer contains {from:?}"
        );
        text = text.replacen(from, to, 1);
    }
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

pub fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Every file below `dir`, relative, sorted.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// `hardway explain` for `inv` with these arguments, written to `dir/walkthrough.sh`.
pub fn explain(inv: &Path, args: &[&str], dir: &Path) -> PathBuf {
    let script = ok(hardway().arg("explain").arg("-i").arg(inv).args(args));
    assert!(
        script.starts_with("#!/usr/bin/env bash\n"),
        "{}",
        &script[..200.min(script.len())]
    );
    assert!(script.contains("\nset -euo pipefail\n"));
    // Commands that make keys, never a key.
    assert!(
        !script.contains("PRIVATE KEY"),
        "the walkthrough embeds key material"
    );
    let path = dir.join("walkthrough.sh");
    std::fs::write(&path, script).unwrap();
    path
}

/// Runs a walkthrough with bash in `workdir`; panics with its output when it fails.
pub fn run_walkthrough(script: &Path, workdir: &Path) -> String {
    ok(Command::new("bash").arg(script).env("WORKDIR", workdir))
}

/// tests/fixtures/escape.c built with `gcc -static`, for root inside a lab machine to run (it
/// needs no compiler there, nor the machine's libc).
pub fn escape_program() -> Vec<u8> {
    let gcc = require("gcc", "gcc libc6-dev");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("escape");
    ok(Command::new(gcc)
        .args(["-static", "-O2", "-Wall", "-o"])
        .arg(&out)
        .arg(repo().join("tests/fixtures/escape.c")));
    std::fs::read(&out).unwrap()
}
