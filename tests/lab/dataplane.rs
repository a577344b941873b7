//! The workers' data plane on real parts, in a lab on Debian sid (tests/fixtures/dataplane.toml:
//! a master and two workers): Debian's containerd 2.1, runc 1.3, CNI plugins 1.9 and iptables
//! run hardway's rendered containerd config (version 3), CNI config and pod routes, deployed by
//! `hardway deploy --phases workers` (the kubelet and kube-proxy are stand-ins that do nothing:
//! no registry here has them). The test then does what the kubelet does for a pod, through
//! containerd's CRI socket with a client generated from Kubernetes' api.proto (tests/cri):
//! a pod on each worker, its sandbox from the pause image the rendered config names, imported
//! from an image the test builds. Each pod gets an address in its worker's pod /24, serves HTTP,
//! and is reached from the pod on the other worker and from the master, through the routes.
//! The lab comes down when the test ends, pass or fail.
//!
//! `containerd_reads_the_config_rendered_for_its_version` checks the other direction of the
//! version table: trixie's containerd 1.7 reads the version-2 config and refuses version 3.

mod image;
mod pods;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::lab::{TestLab, boot_inventory};
use crate::common::*;
use hardway::inventory::{self, Inventory, LabSuite};
use hardway::lab::{self as hwlab, LabOptions};

const STATE_DIR: &str = "/run/hardway/test-dataplane";
const MASTER: &str = "dp-m1";
const WORKERS: [&str; 2] = ["dp-w1", "dp-w2"];
/// The pods' own image, beside the pause image (the same busybox layer under both names).
const WORKLOAD_IMAGE: &str = "hardway.test/busybox:1";
/// Where the master answers with the address a connection came from (socat runs the script
/// for each connection, with the client's address in `SOCAT_PEERADDR`).
const PEER_PORT: u16 = 8081;
const PEER_SCRIPT: &str =
    "#!/bin/sh\nprintf 'HTTP/1.0 200 OK\\r\\n\\r\\n%s\\n' \"$SOCAT_PEERADDR\"\n";

fn fixture() -> PathBuf {
    repo().join("tests/fixtures/dataplane.toml")
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    let mut s: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    s.sort();
    s
}

/// `plugins.<id>.<path...>` of a containerd config, as a string.
fn config_value<'a>(c: &'a toml::Table, id: &str, path: &[&str]) -> &'a toml::Value {
    path.iter().fold(&c["plugins"][id], |v, p| {
        v.get(*p)
            .unwrap_or_else(|| panic!("no {id}.{} in {c:#?}", path.join(".")))
    })
}

fn pods_reach_each_other_across_workers_and_from_the_master() {
    let started = Instant::now();
    let t = boot_inventory(STATE_DIR, &fixture());
    eprintln!("dataplane: lab up in {:.1?}", started.elapsed());
    pki_generate(&t.inv_path, &t.pki);
    let (inv, build) = the_workers_phase_deploys_the_rendered_files(&t);
    every_node_routes_to_the_other_workers_pods(&t);
    let sandbox_image = containerd_runs_the_rendered_config(&t, &build);
    the_images_are_imported(&t, &[&sandbox_image, WORKLOAD_IMAGE]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(pods_on_both_workers_reach_each_other_and_the_master_reaches_them(&t, &inv));
    eprintln!("dataplane: done in {:.1?}", started.elapsed());
}

/// `deploy --phases workers` with stand-in kubelet and kube-proxy: containerd, its config, the
/// CNI config and the routes go where the inventory says; pod-routes starts on the master too.
fn the_workers_phase_deploys_the_rendered_files(t: &TestLab) -> (Inventory, PathBuf) {
    let bin = t.dir.path().join("stand-ins");
    std::fs::create_dir_all(&bin).unwrap();
    for b in ["kubelet", "kube-proxy"] {
        std::fs::copy(repo().join("tests/fixtures/idle-stand-in"), bin.join(b)).unwrap();
    }
    let inv_path = t.dir.path().join("dp-deploy.toml");
    let text = t.inv_text.replacen(
        "[binaries]\n",
        &format!("[binaries]\nlocal_dir = \"{}\"\n", bin.display()),
        1,
    );
    std::fs::write(&inv_path, text).unwrap();
    let started = Instant::now();
    let report = t.deploy_json(
        &inv_path,
        &["--phases", "workers", "--accept-new-host-keys"],
    );
    eprintln!(
        "dataplane: deploy --phases workers in {:.1?}",
        started.elapsed()
    );
    let host = |n: &str| {
        report["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["node"] == n)
            .unwrap()
            .clone()
    };
    for w in WORKERS {
        let h = host(w);
        assert_eq!(h["ok"], true, "{h}");
        let mut up = strings(&h["started"]);
        up.extend(strings(&h["restarted"]));
        up.sort();
        assert_eq!(
            up,
            [
                "containerd",
                "hardway-kernel",
                "kube-proxy",
                "kubelet",
                "pod-routes"
            ],
            "{w}: {h}"
        );
    }
    let m = host(MASTER);
    assert_eq!(
        [strings(&m["started"]), strings(&m["restarted"])].concat(),
        ["pod-routes"],
        "the master reaches pods too: {m}"
    );

    let build = t.dir.path().join("build");
    ok(hardway()
        .args(["render", "-i"])
        .arg(&inv_path)
        .arg("--pki")
        .arg(&t.pki)
        .arg("--out")
        .arg(&build));
    for (node, path) in [
        ("dp-w1", "/etc/containerd/config.toml"),
        ("dp-w2", "/etc/cni/net.d/10-bridge.conf"),
        ("dp-w1", "/etc/systemd/system/containerd.service"),
        (MASTER, "/etc/hardway/pod-routes"),
    ] {
        let local = sha256_of(&build.join(node).join(path.trim_start_matches('/')));
        let remote = t.ssh_ok(node, &format!("sha256sum {path}"));
        assert_eq!(
            remote.split_whitespace().next(),
            Some(local.as_str()),
            "{node}:{path} is not the rendered file"
        );
    }
    (inventory::load(&inv_path).unwrap(), build)
}

/// An address as busybox httpd reports a client's (`[::ffff:10.200.0.2]`), as IPv4.
fn unmapped(peer: &str) -> String {
    peer.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_start_matches("::ffff:")
        .to_string()
}

/// This process's hard limit of open files.
fn own_hard_nofile() -> u64 {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) }, 0);
    l.rlim_max
}

fn sha256_of(p: &Path) -> String {
    hardway::digest::sha256_hex(
        &std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
}

/// The one table on every node: the master routes to both workers' pods, each worker to the
/// other's and not to its own (those are on its bridge).
fn every_node_routes_to_the_other_workers_pods(t: &TestLab) {
    let via = |cidr: &str, node: &str| format!("{cidr} via {} ", t.addresses[node]);
    let routes: BTreeMap<&str, String> = [MASTER, WORKERS[0], WORKERS[1]]
        .iter()
        .map(|n| (*n, t.ssh_ok(n, "ip -4 route show") + "\n"))
        .collect();
    for (node, want, not) in [
        (
            MASTER,
            vec![via("10.200.0.0/24", "dp-w1"), via("10.200.1.0/24", "dp-w2")],
            vec![],
        ),
        (
            "dp-w1",
            vec![via("10.200.1.0/24", "dp-w2")],
            vec!["10.200.0.0/24 via"],
        ),
        (
            "dp-w2",
            vec![via("10.200.0.0/24", "dp-w1")],
            vec!["10.200.1.0/24 via"],
        ),
    ] {
        for w in &want {
            assert!(
                routes[node].contains(w.as_str()),
                "{node} has no route {w:?}:\n{}",
                routes[node]
            );
        }
        for n in not {
            assert!(
                !routes[node].contains(n),
                "{node} routes its own pods away ({n}):\n{}",
                routes[node]
            );
        }
    }
}

/// containerd 2.1 runs with the rendered config (version 3), as `containerd config dump` shows
/// it parsed, and with the unit's file limit. Returns the sandbox image the config names.
fn containerd_runs_the_rendered_config(t: &TestLab, build: &Path) -> String {
    let rendered: toml::Table =
        std::fs::read_to_string(build.join("dp-w1/etc/containerd/config.toml"))
            .unwrap()
            .parse()
            .unwrap();
    assert_eq!(rendered["version"].as_integer(), Some(3));
    let sandbox_image = config_value(
        &rendered,
        "io.containerd.cri.v1.images",
        &["pinned_images", "sandbox"],
    )
    .as_str()
    .unwrap()
    .to_string();
    for w in WORKERS {
        let dump: toml::Table = t
            .ssh_ok(w, "containerd config dump")
            .parse()
            .expect("containerd config dump prints TOML");
        assert_eq!(
            config_value(
                &dump,
                "io.containerd.cri.v1.images",
                &["pinned_images", "sandbox"]
            )
            .as_str(),
            Some(sandbox_image.as_str())
        );
        let runtime = "io.containerd.cri.v1.runtime";
        assert_eq!(
            config_value(&dump, runtime, &["cni", "bin_dirs"])
                .as_array()
                .unwrap()[..],
            [toml::Value::from("/usr/lib/cni")]
        );
        assert_eq!(
            config_value(&dump, runtime, &["cni", "conf_dir"]).as_str(),
            Some("/etc/cni/net.d")
        );
        assert_eq!(
            config_value(
                &dump,
                runtime,
                &["containerd", "runtimes", "runc", "options", "SystemdCgroup"]
            )
            .as_bool(),
            Some(true)
        );
        assert_eq!(
            t.ssh_ok(w, "systemctl show -p LimitNOFILE --value containerd"),
            "1048576"
        );
        // systemd grants it up to the node's own hard limit, which the lab's machines inherit
        // from this process (a sandbox without CAP_SYS_RESOURCE cannot raise it).
        let limit = t.ssh_ok(
            w,
            "grep 'open files' /proc/$(systemctl show -p MainPID --value containerd)/limits",
        );
        let want = 1_048_576.min(own_hard_nofile()).to_string();
        assert_eq!(
            limit.split_whitespace().nth(3),
            Some(want.as_str()),
            "{w}: {limit}"
        );
    }
    eprintln!("dataplane: {}", t.ssh_ok("dp-w1", "dpkg-query -W -f '${Package} ${Version}, ' containerd runc containernetworking-plugins iptables systemd"));
    sandbox_image
}

/// The test's image, under the pause image's name and the workload's, in containerd's `k8s.io`
/// namespace (the CRI plugin's) on every worker.
fn the_images_are_imported(t: &TestLab, names: &[&str]) {
    let dir = t.dir.path().join("image");
    let tar = std::fs::read(image::build(&dir, names)).unwrap();
    for w in WORKERS {
        let o = t.ssh_with_input(w, "cat >/root/hardway-test-image.tar", &tar);
        assert!(
            o.status.success(),
            "{w}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        t.ssh_ok(w, "ctr -n k8s.io images import /root/hardway-test-image.tar && rm /root/hardway-test-image.tar");
        let listed = t.ssh_ok(w, "ctr -n k8s.io images ls -q");
        for n in names {
            assert!(
                listed.lines().any(|l| l == *n),
                "{w}: {n} not imported:\n{listed}"
            );
        }
    }
}

async fn pods_on_both_workers_reach_each_other_and_the_master_reaches_them(
    t: &TestLab,
    inv: &Inventory,
) {
    let mut clients = BTreeMap::new();
    for w in WORKERS {
        // The kubelet's endpoint, reached through the node's root (the socket is in its /run).
        let socket = format!(
            "/proc/{}/root/run/containerd/containerd.sock",
            t.init_pid(w)
        );
        let mut cri = cri_client::connect(&socket)
            .await
            .unwrap_or_else(|e| panic!("{w}: connect to {socket}: {e}"));
        let v = cri
            .runtime
            .version(cri_client::v1::VersionRequest {
                version: "v1".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (v.runtime_name.as_str(), v.runtime_api_version.as_str()),
            ("containerd", "v1"),
            "{v:?}"
        );
        assert!(
            v.runtime_version.starts_with("2.1."),
            "{w}: containerd {}",
            v.runtime_version
        );
        clients.insert(w, cri);
    }

    let mut running = BTreeMap::new();
    for (i, w) in WORKERS.iter().enumerate() {
        let uid = format!("00000000-0000-4000-8000-00000000000{i}");
        let cri = clients.get_mut(w).unwrap();
        let pod = pods::run(cri, &format!("web-{w}"), &uid, WORKLOAD_IMAGE)
            .await
            .unwrap_or_else(|e| {
                let journal = t.ssh(w, "journalctl -u containerd --no-pager -o cat -n 40");
                panic!(
                    "{w}: {e}\n--- containerd's journal:\n{}",
                    String::from_utf8_lossy(&journal.stdout)
                )
            });
        let cidr = inv
            .nodes
            .iter()
            .find(|n| n.name == *w)
            .and_then(|n| n.pod_cidr)
            .unwrap();
        assert!(
            cidr.contains(&pod.ip)
                && pod.ip != cidr.network()
                && pod.ip != Ipv4Addr::from(u32::from(cidr.network()) + 1),
            "{w}'s pod got {}, not a pod address of {cidr}",
            pod.ip
        );
        eprintln!(
            "dataplane: pod {} on {w} has {} (pod network {cidr})",
            pod.name, pod.ip
        );
        running.insert(*w, pod);
    }

    // Pod to pod across workers, both ways: out through one worker's bridge and route, in
    // through the other's.
    for (from, to) in [(WORKERS[0], WORKERS[1]), (WORKERS[1], WORKERS[0])] {
        let (src, dst) = (&running[from], &running[to]);
        let body = pods::fetch(
            clients.get_mut(from).unwrap(),
            src,
            dst.ip,
            "/",
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        assert_eq!(
            body.trim(),
            format!("hello from web-{to}"),
            "{from} -> {to}"
        );
        // Without NAT: the server sees the client pod's own address, not its node's.
        let peer = pods::fetch(
            clients.get_mut(from).unwrap(),
            src,
            dst.ip,
            "/cgi-bin/peer",
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(
            unmapped(&peer),
            src.ip.to_string(),
            "{to}'s pod sees {from}'s pod as {peer:?}"
        );
    }
    // Out of the pod network (to the master's own address), masqueraded behind the worker.
    let o = t.ssh_with_input(
        MASTER,
        "cat >/usr/local/bin/hw-peer && chmod +x /usr/local/bin/hw-peer",
        PEER_SCRIPT.as_bytes(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    t.ssh_ok(MASTER, &format!("systemd-run --quiet --unit=hw-peer socat TCP-LISTEN:{PEER_PORT},fork,reuseaddr EXEC:/usr/local/bin/hw-peer"));
    for w in WORKERS {
        let master = t.addresses[MASTER].parse().unwrap();
        let seen = pods::fetch_port(
            clients.get_mut(w).unwrap(),
            &running[w],
            master,
            PEER_PORT,
            "/",
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        assert_eq!(
            seen.trim(),
            t.addresses[w],
            "the master sees {w}'s pod as {seen:?}"
        );
    }
    // The master, which runs no pods, through its own routes (what an API server needs to reach
    // a webhook or an aggregated API).
    for w in WORKERS {
        let ip = running[w].ip;
        let get = format!(
            "timeout 5 bash -c 'exec 3<>/dev/tcp/{ip}/{}; printf \"GET / HTTP/1.0\\r\\n\\r\\n\" >&3; cat <&3'",
            pods::HTTP_PORT
        );
        let answer = t.ssh_ok(MASTER, &get);
        assert!(
            answer.starts_with("HTTP/1.") && answer.ends_with(&format!("hello from web-{w}")),
            "{MASTER} -> {w}'s pod {ip}:\n{answer}"
        );
    }

    // Deleting the pods releases their addresses (the CNI DEL of StopPodSandbox).
    for w in WORKERS {
        pods::remove(clients.get_mut(w).unwrap(), &running[w])
            .await
            .unwrap_or_else(|e| panic!("{w}: {e}"));
        let left = t.ssh_ok(w, "ls /var/lib/cni/networks/bridge");
        assert!(
            !left.lines().any(|l| l.parse::<Ipv4Addr>().is_ok()),
            "{w} still holds a pod address: {left}"
        );
    }
}

/// containerd reads the config rendered for its version: trixie's 1.7 the version-2 config
/// (and refuses the version-3 one), sid's 2.1 the version-3 config. Each runs `containerd
/// config dump` in a throwaway machine on the lab's cached root fs of its suite.
#[test]
fn containerd_reads_the_config_rendered_for_its_version() {
    let fixture_text = std::fs::read_to_string(fixture()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut rootfs = BTreeMap::new();
    let mut configs = BTreeMap::new();
    for (suite, version, config_version) in
        [(LabSuite::Trixie, "1.7", 2), (LabSuite::Sid, "2.1", 3)]
    {
        hwlab::preflight(suite).unwrap_or_else(|e| panic!("{e}"));
        let root = hwlab::cache_rootfs(
            &LabOptions::default(),
            suite,
            hardway::inventory::LabSoftware::Packages,
        )
        .unwrap_or_else(|e| panic!("{suite} root fs: {e}"));
        let sub = dir.path().join(suite.as_str());
        std::fs::create_dir_all(&sub).unwrap();
        let inv = sub.join("inv.toml");
        std::fs::write(
            &inv,
            fixture_text.replace("version = \"2.1\"", &format!("version = \"{version}\"")),
        )
        .unwrap();
        let config =
            crate::common::pki_and_render(&inv, &sub).join("dp-w1/etc/containerd/config.toml");
        let dump = config_dump(suite, &root, &config);
        assert!(
            dump.status.success(),
            "containerd {version} refused its config: {}",
            String::from_utf8_lossy(&dump.stderr)
        );
        let parsed: toml::Table = String::from_utf8_lossy(&dump.stdout).parse().unwrap();
        assert_eq!(
            parsed["version"].as_integer(),
            Some(config_version),
            "{suite}"
        );
        let (sandbox, cri) = if config_version == 3 {
            let images = config_value(
                &parsed,
                "io.containerd.cri.v1.images",
                &["pinned_images", "sandbox"],
            );
            (
                images,
                config_value(&parsed, "io.containerd.cri.v1.runtime", &[]),
            )
        } else {
            let cri = config_value(&parsed, "io.containerd.grpc.v1.cri", &[]);
            (&cri["sandbox_image"], cri)
        };
        assert_eq!(
            sandbox.as_str(),
            Some("registry.k8s.io/pause:3.10.1"),
            "{suite}"
        );
        assert_eq!(
            cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"].as_bool(),
            Some(true),
            "{suite}"
        );
        assert_eq!(
            cri["cni"]["conf_dir"].as_str(),
            Some("/etc/cni/net.d"),
            "{suite}"
        );
        let bin_dir = if config_version == 3 {
            &cri["cni"]["bin_dirs"][0]
        } else {
            &cri["cni"]["bin_dir"]
        };
        assert_eq!(bin_dir.as_str(), Some("/usr/lib/cni"), "{suite}");
        eprintln!(
            "dataplane: containerd {version} of {suite} reads the rendered config version {config_version}"
        );
        rootfs.insert(suite, root);
        configs.insert(suite, config);
    }
    // The other way round: containerd 1.7 cannot read what hardway renders for 2.x.
    let refused = config_dump(
        LabSuite::Trixie,
        &rootfs[&LabSuite::Trixie],
        &configs[&LabSuite::Sid],
    );
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("unsupported config version `3`"),
        "containerd 1.7 accepted a version-3 config:\n{err}"
    );
    eprintln!(
        "dataplane: containerd 1.7 refuses version 3: {}",
        err.lines()
            .find(|l| l.contains("unsupported"))
            .unwrap_or_default()
    );
}

/// `containerd config dump` with `config` in a throwaway machine on the cached root fs of
/// `suite` (read-only: the machine's writes go to a tmpfs overlay).
fn config_dump(suite: LabSuite, rootfs: &Path, config: &Path) -> std::process::Output {
    run(Command::new(require("systemd-nspawn", "systemd-container"))
        .args([
            "-q",
            "--register=no",
            "--keep-unit",
            "--volatile=overlay",
            "--private-network",
            "--console=pipe",
        ])
        .arg(format!("--machine=hw-config-dump-{suite}"))
        .arg("-D")
        .arg(rootfs)
        .arg(format!(
            "--bind-ro={}:/etc/containerd/config.toml",
            config.display()
        ))
        .args(["/usr/bin/containerd", "config", "dump"]))
}

/// Boots a lab.
mod lab {
    #[test]
    fn pods_reach_each_other_across_workers_and_from_the_master() {
        super::pods_reach_each_other_across_workers_and_from_the_master()
    }
}
