//! A container image the test makes itself, since no registry is reachable from the lab: one
//! layer holding Debian's statically linked busybox (package busybox-static, the host's
//! /bin/busybox) and the applets the pods run, written in the docker-archive format that
//! `ctr images import` reads, under every name the test asks for (the pause image the rendered
//! containerd config names, and the workload's).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use hardway::digest::sha256_hex;

/// The applets the pods run, as links to busybox.
const APPLETS: &[&str] = &[
    "sh", "sleep", "httpd", "wget", "hostname", "mkdir", "echo", "cat", "printf", "chmod",
];

/// What the sandbox (pause) container runs: nothing, for as long as the pod lives.
const PAUSE: [&str; 2] = ["/bin/sleep", "2147483647"];

/// The image's platform as containerd names it.
fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("no OCI architecture name for {other}"),
    }
}

/// Builds `dir/image.tar`, tagged with every one of `names`.
pub fn build(dir: &Path, names: &[&str]) -> PathBuf {
    let busybox = require("busybox", "busybox-static");
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::create_dir_all(rootfs.join("tmp")).unwrap();
    std::fs::copy(&busybox, rootfs.join("bin/busybox")).unwrap();
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    let archive = dir.join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    let layer = archive.join("layer.tar");
    ok(Command::new("tar")
        .args([
            "--create",
            "--numeric-owner",
            "--owner=0",
            "--group=0",
            "--sort=name",
            "--file",
        ])
        .arg(&layer)
        .arg("-C")
        .arg(&rootfs)
        .args(["bin", "tmp"]));
    let diff_id = format!("sha256:{}", sha256_hex(&std::fs::read(&layer).unwrap()));
    let config = serde_json::json!({
        "architecture": architecture(),
        "os": "linux",
        "config": { "Entrypoint": PAUSE, "Env": ["PATH=/bin"] },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
    });
    std::fs::write(archive.join("config.json"), config.to_string()).unwrap();
    let manifest = serde_json::json!([{ "Config": "config.json", "RepoTags": names, "Layers": ["layer.tar"] }]);
    std::fs::write(archive.join("manifest.json"), manifest.to_string()).unwrap();
    let image = dir.join("image.tar");
    ok(Command::new("tar")
        .args([
            "--create",
            "--numeric-owner",
            "--owner=0",
            "--group=0",
            "--file",
        ])
        .arg(&image)
        .arg("-C")
        .arg(&archive)
        .args(["manifest.json", "config.json", "layer.tar"]));
    image
}
