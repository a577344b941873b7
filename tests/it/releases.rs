//! `[binaries] source`: release binaries from a mirror of upstream's layout, served by an HTTP
//! server in the test (loopback only) from a release-shaped tree made with the real tools
//! (`tar`, `sha256sum`, in the shapes each project publishes). Small shell scripts stand in for
//! the executables' contents; what is tested is the fetching: paths, checksums, the cache,
//! resuming, offline. (The lab deploys from the real binaries: tests/lab.)

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::http::Mirror;
use crate::common::*;

/// The example's Kubernetes and the pins of its minor (src/versions.rs), spelled out here so
/// that the layout is checked against upstream's, not against hardway's own table.
const K8S: &str = "1.37.1";
const KUBE: [&str; 6] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
];

fn script(dir: &Path, name: &str, version: &str) {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\necho {name} {version}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn sha256sum(dir: &Path, files: &[&str]) -> String {
    ok(Command::new("sha256sum").current_dir(dir).args(files))
}

/// `tar czf` of `members` (made as scripts, `dir/` kept in their names) into `out`.
fn tarball(out: &Path, members: &[&str], version: &str) {
    let src = tempfile::tempdir().unwrap();
    for m in members {
        let p = src.path().join(m);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        script(
            p.parent().unwrap(),
            p.file_name().unwrap().to_str().unwrap(),
            version,
        );
    }
    ok(Command::new("tar")
        .arg("czf")
        .arg(out)
        .arg("-C")
        .arg(src.path())
        .args(members));
}

/// Upstream's release layout for Kubernetes 1.37.1 on amd64, with the checksum files in each
/// project's shape: a lone hex sum (dl.k8s.io, crictl), `sha256sum` lines (etcd's SHA256SUMS,
/// runc's for every arch, containerd's and the CNI plugins' for their archive).
fn release_tree(root: &Path) {
    require("sha256sum", "coreutils");
    require("tar", "tar");
    let mkdir = |p: &str| {
        let d = root.join(p);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let k = mkdir(&format!("release/v{K8S}/bin/linux/amd64"));
    for b in KUBE {
        script(&k, b, K8S);
        let sum = sha256sum(&k, &[b]);
        std::fs::write(
            k.join(format!("{b}.sha256")),
            sum.split_whitespace().next().unwrap(),
        )
        .unwrap();
    }
    let e = mkdir("etcd-io/etcd/releases/download/v3.6.8");
    let d = "etcd-v3.6.8-linux-amd64";
    tarball(
        &e.join(format!("{d}.tar.gz")),
        &[
            &format!("{d}/etcd"),
            &format!("{d}/etcdctl"),
            &format!("{d}/etcdutl"),
            &format!("{d}/README.md"),
        ],
        "3.6.8",
    );
    tarball(
        &e.join("etcd-v3.6.8-linux-arm64.tar.gz"),
        &["etcd-v3.6.8-linux-arm64/etcd"],
        "3.6.8",
    );
    let sums = sha256sum(
        &e,
        &["etcd-v3.6.8-linux-arm64.tar.gz", &format!("{d}.tar.gz")],
    );
    std::fs::write(e.join("SHA256SUMS"), sums).unwrap();
    let c = mkdir("containerd/containerd/releases/download/v2.3.7");
    let f = "containerd-2.3.7-linux-amd64.tar.gz";
    tarball(
        &c.join(f),
        &[
            "bin/containerd",
            "bin/containerd-shim-runc-v2",
            "bin/ctr",
            "bin/containerd-stress",
        ],
        "2.3.7",
    );
    std::fs::write(c.join(format!("{f}.sha256sum")), sha256sum(&c, &[f])).unwrap();
    let r = mkdir("opencontainers/runc/releases/download/v1.5.3");
    script(&r, "runc.amd64", "1.5.3");
    script(&r, "runc.arm64", "1.5.3-arm");
    std::fs::write(
        r.join("runc.sha256sum"),
        sha256sum(&r, &["runc.amd64", "runc.arm64"]),
    )
    .unwrap();
    let t = mkdir("kubernetes-sigs/cri-tools/releases/download/v1.37.0");
    let f = "crictl-v1.37.0-linux-amd64.tar.gz";
    tarball(&t.join(f), &["crictl"], "1.37.0");
    std::fs::write(
        t.join(format!("{f}.sha256")),
        sha256sum(&t, &[f]).split_whitespace().next().unwrap(),
    )
    .unwrap();
    let n = mkdir("containernetworking/plugins/releases/download/v1.10.0");
    let f = "cni-plugins-linux-amd64-v1.10.0.tgz";
    tarball(
        &n.join(f),
        &[
            "./bridge",
            "./host-local",
            "./loopback",
            "./portmap",
            "./LICENSE",
        ],
        "1.10.0",
    );
    std::fs::write(n.join(format!("{f}.sha256")), sha256sum(&n, &[f])).unwrap();
}

/// A mirror of the tree, an inventory that names it, and an empty cache.
struct Setup {
    dir: tempfile::TempDir,
    tree: PathBuf,
    mirror: Mirror,
    inv: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        release_tree(&tree);
        let mirror = Mirror::serve(tree.clone());
        let source = format!(
            "remote_dir = \"/usr/local/bin\"\nsource = \"{}/\"",
            mirror.url
        );
        let inv = inventory_variant(
            dir.path(),
            "inv.toml",
            &[("remote_dir = \"/usr/local/bin\"", &source)],
        );
        Setup {
            dir,
            tree,
            mirror,
            inv,
        }
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    fn fetch(&self, extra: &[&str]) -> std::process::Output {
        run(hardway()
            .args(["binaries", "fetch", "-i"])
            .arg(&self.inv)
            .arg("--cache-dir")
            .arg(self.cache())
            .args(extra))
    }
}

/// Every executable, from its archive, runnable; the second run downloads nothing at all.
#[test]
fn fetch_verifies_lays_out_and_caches() {
    let s = Setup::new();
    let o = s.fetch(&[]);
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let dir = PathBuf::from(stdout.lines().last().unwrap());
    assert!(dir.starts_with(s.cache()), "{stdout}");
    let want: BTreeMap<&str, &str> = KUBE
        .iter()
        .map(|b| (*b, K8S))
        .chain([
            ("etcd", "3.6.8"),
            ("etcdctl", "3.6.8"),
            ("etcdutl", "3.6.8"),
            ("containerd", "2.3.7"),
            ("containerd-shim-runc-v2", "2.3.7"),
            ("ctr", "2.3.7"),
        ])
        .chain([
            ("runc", "1.5.3"),
            ("crictl", "1.37.0"),
            ("bridge", "1.10.0"),
            ("host-local", "1.10.0"),
            ("loopback", "1.10.0"),
            ("portmap", "1.10.0"),
        ])
        .collect();
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    found.retain(|n| !n.starts_with('.'));
    found.sort();
    assert_eq!(
        found,
        want.keys().map(|k| k.to_string()).collect::<Vec<_>>(),
        "only what the components push"
    );
    for (name, version) in &want {
        let said = ok(&mut Command::new(dir.join(name)));
        let src = if *name == "runc" { "runc.amd64" } else { name };
        assert_eq!(said.trim(), format!("{src} {version}"), "{name}");
        assert!(stdout.contains(&format!("{name}  sha256:")), "{stdout}");
    }
    // Each file once: the six artifacts of every project and their checksum files.
    let first = s.mirror.requests();
    assert_eq!(first.len(), 2 * (KUBE.len() + 5), "{first:?}");
    assert!(first.iter().all(|(_, range)| range.is_none()), "{first:?}");

    let again = s.fetch(&[]);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(
        s.mirror.requests().len(),
        first.len(),
        "the second run went to the mirror: {:?}",
        s.mirror.requests()
    );
    assert!(text(&again).contains("0 downloaded"), "{}", text(&again));
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).lines().last(),
        Some(dir.to_str().unwrap())
    );
}

/// An archive whose checksum does not match is refused, named with both sums, and moved aside;
/// no directory of executables is made.
#[test]
fn a_corrupted_archive_is_refused() {
    let s = Setup::new();
    let f = s
        .tree
        .join("containerd/containerd/releases/download/v2.3.7/containerd-2.3.7-linux-amd64.tar.gz");
    let sums =
        std::fs::read_to_string(f.with_file_name("containerd-2.3.7-linux-amd64.tar.gz.sha256sum"))
            .unwrap();
    let expected = sums.split_whitespace().next().unwrap().to_string();
    let mut bytes = std::fs::read(&f).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&f, &bytes).unwrap();
    let actual = sha256sum(
        f.parent().unwrap(),
        &["containerd-2.3.7-linux-amd64.tar.gz"],
    );
    let actual = actual.split_whitespace().next().unwrap();

    let o = s.fetch(&[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("containerd-2.3.7-linux-amd64.tar.gz: checksum mismatch, refused"),
        "{err}"
    );
    assert!(
        err.contains(&format!("expected sha256 {expected}"))
            && err.contains(&format!("got {actual}")),
        "{err}"
    );
    assert!(err.contains("inv.toml: binaries.source"), "{err}");
    let bin = s.cache().join("releases/bin");
    assert!(
        !bin.exists() || std::fs::read_dir(&bin).unwrap().next().is_none(),
        "a directory of executables was made"
    );
    let aside = s.cache().join("releases/github.com/containerd/containerd/releases/download/v2.3.7/containerd-2.3.7-linux-amd64.tar.gz.mismatch");
    assert!(aside.is_file(), "{err}");
}

/// `--offline` with an empty cache downloads nothing and names every file it lacks; after an
/// online run, offline works.
#[test]
fn offline_uses_the_cache_only() {
    let s = Setup::new();
    let o = s.fetch(&["--offline"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("offline, and the cache"), "{err}");
    assert!(
        err.contains(&format!("lacks {} file(s)", 2 * (KUBE.len() + 5))),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{}/release/v{K8S}/bin/linux/amd64/kubelet ",
            s.mirror.url
        )),
        "{err}"
    );
    assert!(err.contains("runc.sha256sum"), "{err}");
    assert!(
        s.mirror.requests().is_empty(),
        "offline went to the mirror: {:?}",
        s.mirror.requests()
    );

    assert!(s.fetch(&[]).status.success());
    let n = s.mirror.requests().len();
    let o = s.fetch(&["--offline"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(s.mirror.requests().len(), n);
}

/// A download cut off half way fails, saying so; the next run asks only for the rest (a Range
/// request) and ends with a verified file.
#[test]
fn a_broken_download_resumes() {
    let s = Setup::new();
    let path = format!("/release/v{K8S}/bin/linux/amd64/kubelet");
    *s.mirror.cut.lock().unwrap() = Some(path.clone());
    let o = s.fetch(&[]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("run again to resume"),
        "{}",
        text(&o)
    );
    let o = s.fetch(&[]);
    assert!(o.status.success(), "{}", text(&o));
    let size = std::fs::metadata(s.tree.join(path.trim_start_matches('/')))
        .unwrap()
        .len();
    let ranges: Vec<_> = s
        .mirror
        .requests()
        .into_iter()
        .filter(|(p, r)| *p == path && r.is_some())
        .collect();
    assert_eq!(ranges, vec![(path, Some(format!("bytes={}-", size / 2)))]);
}

/// Bad `[binaries]` settings: each named with its field, nothing fetched.
#[test]
fn bad_release_settings_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        (
            "source = \"upstream\"\nlocal_dir = \"/tmp\"",
            "binaries.source: binaries.source and binaries.local_dir both",
        ),
        (
            "source = \"upstream\"\narch = \"s390x\"",
            "binaries.arch: \"s390x\" is not an architecture",
        ),
        (
            "arch = \"arm64\"",
            "binaries.arch: it applies to release archives only",
        ),
        (
            "source = \"upstream\"\n[binaries.versions]\nrunc = \"1.5\"",
            "binaries.versions.runc: \"1.5\" is not a release",
        ),
        (
            "[binaries.versions]\netcd = \"3.6.8\"",
            "binaries.versions: it applies to release archives only",
        ),
        (
            "source = \"upstream\"\n[binaries.versions]\nruncc = \"1.5.3\"",
            "runcc",
        ),
        (
            "source = \"upstream\"\nbundle = \"b.tar\"",
            "binaries.bundle: binaries.bundle and binaries.source both",
        ),
        (
            "install = \"yum\"",
            "binaries.install: \"yum\" is not a way to install packages: \"apt\" or \"none\"",
        ),
        (
            "bundle = \"missing.tar\"",
            "missing.tar: no such file (`hardway bundle` makes one)",
        ),
        (
            "source = \"upstream\"\n[containerd]\nversion = \"2.2\"",
            "containerd.version: 2.2 is not the containerd the release source fetches (2.3.7",
        ),
    ];
    for (i, (edit, want)) in cases.iter().enumerate() {
        let inv = inventory_variant(
            dir.path(),
            &format!("bad{i}.toml"),
            &[(
                "remote_dir = \"/usr/local/bin\"",
                &format!("remote_dir = \"/usr/local/bin\"\n{edit}"),
            )],
        );
        let o = run(hardway().args(["validate", "-i"]).arg(&inv));
        assert!(!o.status.success(), "{edit}: accepted");
        assert!(text(&o).contains(want), "{edit}: {}", text(&o));
    }
    // validate says where the binaries come from.
    let s = Setup::new();
    let said = ok(hardway().args(["validate", "-i"]).arg(&s.inv));
    assert!(
        said.contains(&format!("binaries: release archives from {} for amd64 (Kubernetes {K8S}, etcd 3.6.8, containerd 2.3.7, runc 1.5.3, CNI plugins 1.10.0, crictl 1.37.0), into /usr/local/bin", s.mirror.url)),
        "{said}"
    );
    // With a release source containerd's config follows the fetched line, and containerd and
    // the CNI plugins go where upstream's archives suggest.
    let inv = inventory_variant(
        dir.path(),
        "ok.toml",
        &[(
            "remote_dir = \"/usr/local/bin\"",
            "remote_dir = \"/usr/local/bin\"\nsource = \"upstream\"\n[binaries.versions]\ncontainerd = \"2.4.2\"",
        )],
    );
    let build = pki_and_render(&inv, dir.path());
    let config =
        std::fs::read_to_string(build.join("kworker1/etc/containerd/config.toml")).unwrap();
    assert!(
        config.contains("bin_dir = \"/opt/cni/bin\"")
            || config.contains("bin_dirs = [\"/opt/cni/bin\"]"),
        "{config}"
    );
    let unit =
        std::fs::read_to_string(build.join("kworker1/etc/systemd/system/containerd.service"))
            .unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/containerd"),
        "{unit}"
    );
}

/// `hardway bundle` packs the fetched executables and the addon images with a manifest that
/// `sha256sum -c` accepts; an inventory with `bundle = "…"` gets them with no network; a
/// changed member, a bundle for another version and a member outside the layout are refused.
#[test]
fn a_bundle_serves_without_the_mirror() {
    let s = Setup::new();
    let images = s.dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    std::fs::write(s.dir.path().join("layer"), "an image layer").unwrap();
    ok(Command::new("tar")
        .arg("cf")
        .arg(images.join("tiny.tar"))
        .arg("-C")
        .arg(s.dir.path())
        .arg("layer"));
    let text_of = |p: &Path| std::fs::read_to_string(p).unwrap();
    let with_images = text_of(&s.inv).replacen(
        "[addons.metallb]",
        &format!("[addons]\nimages_dir = {:?}\n\n[addons.metallb]", images),
        1,
    );
    std::fs::write(&s.inv, with_images).unwrap();
    let bundle = s.dir.path().join("cluster-bundle.tar");
    let o = run(hardway()
        .args(["bundle", "-i"])
        .arg(&s.inv)
        .arg("--out")
        .arg(&bundle)
        .arg("--cache-dir")
        .arg(s.cache()));
    assert!(o.status.success(), "{}", text(&o));
    let listed = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        listed.contains("bin/kubelet  sha256:") && listed.contains("images/tiny.tar  sha256:"),
        "{listed}"
    );
    let unpacked = s.dir.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    ok(Command::new("tar")
        .arg("xf")
        .arg(&bundle)
        .arg("-C")
        .arg(&unpacked));
    let checked = ok(Command::new("sha256sum")
        .arg("-c")
        .arg("MANIFEST.sha256")
        .current_dir(unpacked.join("hardway-bundle")));
    assert_eq!(
        checked.lines().filter(|l| l.ends_with(": OK")).count(),
        18 + 1,
        "{checked}"
    );
    let served = s.mirror.requests().len();

    // The same inventory with the bundle instead of the mirror, and a cache of its own.
    let from_bundle = |name: &str, edit: &dyn Fn(String) -> String| {
        let source_line = format!("source = \"{}/\"", s.mirror.url);
        let text = text_of(&s.inv).replacen(&source_line, &format!("bundle = {:?}", bundle), 1);
        let p = s.dir.path().join(name);
        std::fs::write(&p, edit(text)).unwrap();
        p
    };
    let inv = from_bundle("bundled.toml", &|t| t);
    let cache = s.dir.path().join("cache2");
    let o = run(hardway()
        .args(["binaries", "fetch", "-i"])
        .arg(&inv)
        .arg("--cache-dir")
        .arg(&cache));
    assert!(o.status.success(), "{}", text(&o));
    let dir = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    assert_eq!(
        ok(&mut Command::new(dir.join("kubelet"))).trim(),
        format!("kubelet {K8S}")
    );
    assert!(
        text(&o).contains("18 executables, 1 images"),
        "{}",
        text(&o)
    );
    assert_eq!(
        s.mirror.requests().len(),
        served,
        "the bundle went to the mirror"
    );

    // A bundle for another Kubernetes.
    let other = from_bundle("other.toml", &|t| {
        t.replacen(
            &format!("kubernetes_version = \"{K8S}\""),
            "kubernetes_version = \"1.37.0\"",
            1,
        )
    });
    let o = run(hardway()
        .args(["binaries", "fetch", "-i"])
        .arg(&other)
        .arg("--cache-dir")
        .arg(&cache));
    assert!(
        text(&o).contains(&format!(
            "is for Kubernetes {K8S}, the inventory says 1.37.0"
        )),
        "{}",
        text(&o)
    );

    // One byte of the kubelet changed: refused, naming the member and both sums.
    let mut bytes = std::fs::read(&bundle).unwrap();
    let at = bytes
        .windows(12)
        .position(|w| w == b"echo kubelet")
        .unwrap();
    bytes[at + 5] = b'K';
    std::fs::write(&bundle, &bytes).unwrap();
    let o = run(hardway()
        .args(["binaries", "fetch", "-i"])
        .arg(&inv)
        .arg("--cache-dir")
        .arg(&cache));
    assert!(!o.status.success());
    assert!(
        text(&o).contains("bin/kubelet: checksum mismatch, refused: the manifest says sha256"),
        "{}",
        text(&o)
    );

    // A member that would land outside the bundle's directory.
    require("python3", "python3");
    ok(Command::new("python3").arg("-c").arg(format!(
        "import tarfile, io\nt = tarfile.open({:?}, 'w')\ni = tarfile.TarInfo('hardway-bundle/../escaped')\ni.size = 1\nt.addfile(i, io.BytesIO(b'x'))\nt.close()",
        bundle.display().to_string()
    )));
    let o = run(hardway()
        .args(["binaries", "fetch", "-i"])
        .arg(&inv)
        .arg("--cache-dir")
        .arg(&cache));
    assert!(
        text(&o).contains("hardway-bundle/../escaped is not a file of a bundle's layout"),
        "{}",
        text(&o)
    );
    assert!(!cache.join("releases/escaped").exists() && !cache.join("escaped").exists());
}

/// `[lab] software = "bare"` is the nspawn driver's: `lab up --driver qemu` refuses it before
/// creating anything.
#[test]
fn a_bare_lab_is_refused_by_the_qemu_driver() {
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(repo().join("tests/fixtures/qemu-lab.toml")).unwrap();
    let inv = dir.path().join("bare.toml");
    std::fs::write(
        &inv,
        base.replacen("[lab]", "[lab]\nsoftware = \"bare\"", 1),
    )
    .unwrap();
    let o = run(hardway()
        .args(["lab", "up", "-i"])
        .arg(&inv)
        .args(["--driver", "qemu"]));
    assert!(!o.status.success());
    assert!(
        text(&o).contains("lab.software = \"bare\" is for the nspawn driver only"),
        "{}",
        text(&o)
    );
}

/// Two fetches into one cache at once: one waits for the other (a lock in the cache), so each
/// file is downloaded once and both runs end with the same verified directory.
#[test]
fn two_fetches_at_once_share_the_cache() {
    let s = Setup::new();
    let spawn = || {
        hardway()
            .args(["binaries", "fetch", "-i"])
            .arg(&s.inv)
            .arg("--cache-dir")
            .arg(s.cache())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(
        a.status.success() && b.status.success(),
        "{}\n{}",
        text(&a),
        text(&b)
    );
    assert_eq!(
        String::from_utf8_lossy(&a.stdout).lines().last(),
        String::from_utf8_lossy(&b.stdout).lines().last()
    );
    assert_eq!(
        s.mirror.requests().len(),
        2 * (KUBE.len() + 5),
        "{:?}",
        s.mirror.requests()
    );
}
