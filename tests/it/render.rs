//! `hardway render`: every artifact checked by the tool that will consume it — haproxy,
//! systemd-analyze, kubectl, and a real three-member etcd cluster on loopback.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use base64::Engine;

fn hosts(build: &Path) -> Vec<String> {
    let mut h: Vec<String> = std::fs::read_dir(build)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    h.sort();
    h
}

#[test]
fn every_host_gets_the_files_of_its_roles() {
    let dir = tempfile::tempdir().unwrap();
    let build = pki_and_render(&example_inventory(), dir.path());
    assert_eq!(
        hosts(&build),
        [
            "haproxy", "kmaster1", "kmaster2", "kmaster3", "kworker1", "kworker2", "kworker3"
        ]
    );
    let has = |host: &str, path: &str| {
        build
            .join(host)
            .join(path.trim_start_matches('/'))
            .is_file()
    };
    for m in ["kmaster1", "kmaster2", "kmaster3"] {
        for p in [
            "/etc/systemd/system/etcd.service",
            "/etc/systemd/system/kube-apiserver.service",
            "/etc/systemd/system/kube-controller-manager.service",
            "/etc/systemd/system/kube-scheduler.service",
            "/etc/kubernetes/encryption-config.yaml",
            "/etc/kubernetes/audit-policy.yaml",
            "/etc/kubernetes/pki/front-proxy-client.crt",
            "/etc/etcd/pki/server.key",
            "/etc/kubernetes/addons/metallb-pool.yaml",
            "/etc/kubernetes/addons/apiserver-to-kubelet-rbac.yaml",
        ] {
            assert!(has(m, p), "{m} lacks {p}");
        }
        assert!(
            !has(m, "/etc/systemd/system/kubelet.service"),
            "{m} got a kubelet"
        );
    }
    for w in ["kworker1", "kworker2", "kworker3"] {
        for p in [
            "/etc/systemd/system/kubelet.service",
            "/var/lib/kubelet/kubelet-config.yaml",
            "/var/lib/kube-proxy/kubeconfig",
        ] {
            assert!(has(w, p), "{w} lacks {p}");
        }
        assert!(!has(w, "/etc/kubernetes/pki/ca.key"), "{w} got the CA key");
        assert!(!has(w, "/etc/etcd/pki/server.key"), "{w} got etcd keys");
    }
    assert!(has("haproxy", "/etc/haproxy/haproxy.cfg"));
    assert!(has("haproxy", "/etc/haproxy/pki/healthcheck.pem"));
    assert_eq!(
        mode(&build.join("haproxy/etc/haproxy/pki/healthcheck.pem")),
        0o600
    );
    assert!(!has("haproxy", "/etc/kubernetes/pki/ca.crt"));
    assert!(!has("haproxy", "/etc/kubernetes/pki/ca.key"));
    // Private material is 0600 on the way out too.
    for (host, p) in [
        ("kmaster1", "etc/kubernetes/pki/ca.key"),
        ("kworker1", "var/lib/kubelet/kubeconfig"),
        ("kmaster2", "etc/kubernetes/encryption-config.yaml"),
    ] {
        assert_eq!(mode(&build.join(host).join(p)), 0o600, "{host}:{p}");
    }
    // The kubelet's pod /24 and the seed's aggregator flag.
    let kc = std::fs::read_to_string(build.join("kworker2/var/lib/kubelet/kubelet-config.yaml"))
        .unwrap();
    assert!(
        kc.contains("podCIDR: \"10.200.1.0/24\"") && kc.contains("- \"10.32.0.10\""),
        "{kc}"
    );
    let api =
        std::fs::read_to_string(build.join("kmaster1/etc/systemd/system/kube-apiserver.service"))
            .unwrap();
    assert!(
        api.contains("--enable-aggregator-routing=true")
            && api.contains("--service-cluster-ip-range=10.32.0.0/24")
    );
    assert!(api.contains("--etcd-servers=https://192.168.96.46:2379,https://192.168.96.47:2379,https://192.168.96.48:2379"));
    let hosts_block = std::fs::read_to_string(build.join("kworker3/etc/hardway/hosts")).unwrap();
    assert!(
        hosts_block.contains("192.168.96.7 haproxy.systemv.local haproxy"),
        "{hosts_block}"
    );
}

#[test]
fn without_aggregation_there_are_no_front_proxy_flags() {
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory_variant(
        dir.path(),
        "noagg.toml",
        &[
            (
                "[addons.aggregation]\nenabled = true",
                "[addons.aggregation]\nenabled = false",
            ),
            (
                "[addons.metrics_server]\nenabled = true",
                "[addons.metrics_server]\nenabled = false",
            ),
        ],
    );
    let build = pki_and_render(&inv, dir.path());
    let api =
        std::fs::read_to_string(build.join("kmaster1/etc/systemd/system/kube-apiserver.service"))
            .unwrap();
    assert!(
        !api.contains("requestheader") && !api.contains("aggregator"),
        "{api}"
    );
    assert!(!dir.path().join("pki/front-proxy-ca.crt").exists());
}

#[test]
fn haproxy_accepts_the_config_and_balances_every_master() {
    let haproxy = require("haproxy", "haproxy");
    let dir = tempfile::tempdir().unwrap();
    let build = pki_and_render(&example_inventory(), dir.path());
    // `haproxy -c` opens the CA and client certificate the config names: point those paths
    // into the build tree, everything else verbatim.
    let rendered = std::fs::read_to_string(build.join("haproxy/etc/haproxy/haproxy.cfg")).unwrap();
    assert!(
        rendered.contains("ca-file /etc/haproxy/pki/ca.crt crt /etc/haproxy/pki/healthcheck.pem"),
        "{rendered}"
    );
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(
        &cfg,
        rendered.replace(
            "/etc/haproxy/pki/",
            &format!("{}/", build.join("haproxy/etc/haproxy/pki").display()),
        ),
    )
    .unwrap();
    let out = ok(Command::new(haproxy).arg("-c").arg("-f").arg(&cfg));
    assert!(out.contains("Configuration file is valid"), "{out}");
    let text = std::fs::read_to_string(&cfg).unwrap();
    for (m, ip) in [
        ("kmaster1", "192.168.96.46"),
        ("kmaster2", "192.168.96.47"),
        ("kmaster3", "192.168.96.48"),
    ] {
        assert!(text.contains(&format!("server {m} {ip}:6443")), "{text}");
    }
    assert!(
        text.contains("bind *:6443")
            && text.contains("stats socket /run/haproxy/admin.sock mode 600 "),
        "{text}"
    );
    // It listens for clients only: no stats page on the network, and it drops root.
    assert_eq!(
        text.lines()
            .filter(|l| l.trim_start().starts_with("bind "))
            .count(),
        1,
        "{text}"
    );
    assert!(
        text.contains("\n    user haproxy\n    group haproxy\n"),
        "{text}"
    );
}

#[test]
fn systemd_accepts_every_unit() {
    let analyze = require("systemd-analyze", "systemd");
    let dir = tempfile::tempdir().unwrap();
    // Stand-in executables at the binaries' paths: systemd-analyze checks that ExecStart exists.
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for b in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubelet",
        "kube-proxy",
        "containerd",
    ] {
        pki_write_exec(&bin.join(b));
    }
    let bin_dir = format!(
        "remote_dir = \"{0}\"\n\n[containerd]\nbin_dir = \"{0}\"",
        bin.display()
    );
    let inv = inventory_variant(
        dir.path(),
        "stand-in.toml",
        &[("remote_dir = \"/usr/local/bin\"", &bin_dir)],
    );
    let build = pki_and_render(&inv, dir.path());
    let mut checked = 0;
    for host in hosts(&build) {
        let units_dir = build.join(&host).join("etc/systemd/system");
        let units: Vec<PathBuf> = std::fs::read_dir(&units_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(!units.is_empty(), "{host} has no units");
        let out = run(Command::new(&analyze)
            .args(["verify", "--man=no"])
            .args(&units));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "{host}: systemd-analyze verify: {stderr}"
        );
        checked += units.len();
    }
    // 3 masters x 5 (pod-routes too), 3 workers x 5 (containerd, kubelet, kube-proxy,
    // pod-routes, hardway-kernel), 1 lb.
    assert_eq!(checked, 31);

    // And a broken unit is caught, so the check above means something.
    let broken = dir.path().join("broken.service");
    std::fs::write(
        &broken,
        "[Service]\nExecStart=/nonexistent/kube-apiserver\n",
    )
    .unwrap();
    let out = run(Command::new(&analyze)
        .args(["verify", "--man=no"])
        .arg(&broken));
    assert!(
        !out.status.success() || !out.stderr.is_empty(),
        "systemd-analyze accepted a missing binary"
    );
}

fn pki_write_exec(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(p, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn kubectl_reads_every_kubeconfig() {
    let kubectl = require("kubectl", "kubernetes-client");
    let dir = tempfile::tempdir().unwrap();
    let build = pki_and_render(&example_inventory(), dir.path());
    let mut kubeconfigs: Vec<PathBuf> = files_below(&build)
        .into_iter()
        .filter(|f| f.to_string_lossy().ends_with("kubeconfig"))
        .map(|f| build.join(f))
        .collect();
    kubeconfigs.sort();
    // admin (local + 3 masters), cm x3, scheduler x3, kubelet x3, kube-proxy x3.
    assert_eq!(kubeconfigs.len(), 16, "{kubeconfigs:?}");
    let pki_ca = std::fs::read_to_string(dir.path().join("pki/ca.crt")).unwrap();
    for kc in &kubeconfigs {
        let server = ok(Command::new(&kubectl)
            .args([
                "config",
                "view",
                "--raw",
                "-o",
                "jsonpath={.clusters[0].cluster.server}",
                "--kubeconfig",
            ])
            .arg(kc));
        let name = kc.to_string_lossy();
        let want = if name.ends_with("controller-manager.kubeconfig")
            || name.ends_with("scheduler.kubeconfig")
        {
            "https://127.0.0.1:6443"
        } else {
            "https://192.168.96.7:6443"
        };
        assert_eq!(server, want, "{name}");
        let ca = ok(Command::new(&kubectl)
            .args([
                "config",
                "view",
                "--raw",
                "-o",
                "jsonpath={.clusters[0].cluster.certificate-authority-data}",
                "--kubeconfig",
            ])
            .arg(kc));
        let ca = base64::engine::general_purpose::STANDARD
            .decode(ca.trim())
            .unwrap();
        assert_eq!(
            String::from_utf8(ca).unwrap(),
            pki_ca,
            "{name} embeds another CA"
        );
    }
    let user = ok(Command::new(&kubectl)
        .args([
            "config",
            "view",
            "-o",
            "jsonpath={.users[0].name}",
            "--kubeconfig",
        ])
        .arg(build.join("kworker3/var/lib/kubelet/kubeconfig")));
    assert_eq!(user, "system:node:kworker3");
}

#[test]
fn encryption_config_uses_the_kept_key() {
    let dir = tempfile::tempdir().unwrap();
    let build = pki_and_render(&example_inventory(), dir.path());
    let key = std::fs::read_to_string(dir.path().join("pki/encryption.key")).unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(key.trim())
            .unwrap()
            .len(),
        32
    );
    let cfg: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(build.join("kmaster2/etc/kubernetes/encryption-config.yaml"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        cfg["apiVersion"].as_str(),
        Some("apiserver.config.k8s.io/v1")
    );
    assert_eq!(cfg["kind"].as_str(), Some("EncryptionConfiguration"));
    // secretbox writes; aescbc, with the same key, still reads what an earlier hardway wrote.
    let providers = &cfg["resources"][0]["providers"];
    assert_eq!(
        providers[0]["secretbox"]["keys"][0]["secret"].as_str(),
        Some(key.trim())
    );
    assert_eq!(
        providers[1]["aescbc"]["keys"][0]["secret"].as_str(),
        Some(key.trim())
    );
    assert!(
        providers[2]["identity"].is_mapping(),
        "identity must come last"
    );
    // Deploy compares encryption configs across PKIs by their distinct keys: a master still
    // holding the aescbc-only config of the same key must count as the same cluster.
    let rendered =
        std::fs::read_to_string(build.join("kmaster2/etc/kubernetes/encryption-config.yaml"))
            .unwrap();
    let aescbc_only = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources:\n      - secrets\n    \
         providers:\n      - aescbc:\n          keys:\n            - name: key1\n              secret: {}\n      - identity: {{}}\n",
        key.trim()
    );
    assert_eq!(
        hardway::render::key_hashes(&rendered),
        hardway::render::key_hashes(&aescbc_only)
    );
    assert_ne!(
        hardway::render::key_hashes(&rendered),
        hardway::render::key_hashes(&aescbc_only.replace(key.trim(), "b3RoZXI="))
    );
}

#[test]
fn output_is_deterministic_and_matches_the_golden_files() {
    let dir = tempfile::tempdir().unwrap();
    let build = pki_and_render(&example_inventory(), dir.path());
    let first: BTreeMap<PathBuf, Vec<u8>> = files_below(&build)
        .into_iter()
        .map(|f| (f.clone(), std::fs::read(build.join(&f)).unwrap()))
        .collect();
    // Render again from the same inventory and PKI: byte-for-byte the same.
    ok(hardway()
        .args(["render", "-i"])
        .arg(example_inventory())
        .arg("--pki")
        .arg(dir.path().join("pki"))
        .arg("--out")
        .arg(&build));
    let second: BTreeMap<PathBuf, Vec<u8>> = files_below(&build)
        .into_iter()
        .map(|f| (f.clone(), std::fs::read(build.join(&f)).unwrap()))
        .collect();
    assert_eq!(first, second);

    // Golden files: keys and certificates differ on every generate, so PEM blocks and long
    // base64 strings are replaced by placeholders; everything else must match exactly.
    let golden = repo().join("tests/golden/example");
    let update = std::env::var_os("HARDWAY_UPDATE_GOLDEN").is_some();
    if update {
        let _ = std::fs::remove_dir_all(&golden);
    }
    let mut mismatches = Vec::new();
    for (f, bytes) in &first {
        let normalized = normalize(&String::from_utf8_lossy(bytes));
        let g = golden.join(f);
        if update {
            std::fs::create_dir_all(g.parent().unwrap()).unwrap();
            std::fs::write(&g, &normalized).unwrap();
            continue;
        }
        match std::fs::read_to_string(&g) {
            Ok(want) if want == normalized => {}
            Ok(want) => mismatches.push(format!("{}:\n--- golden\n{want}\n--- rendered\n{normalized}", f.display())),
            Err(_) => mismatches.push(format!("{}: no golden file (HARDWAY_UPDATE_GOLDEN=1 cargo test --test it render writes them)", f.display())),
        }
    }
    // Rewriting is never a pass: the run that rewrote them fails, so that a review of the diff
    // (git diff tests/golden) comes before a green run.
    assert!(
        !update,
        "rewrote {} golden files in {}; review `git diff tests/golden`, then run again without HARDWAY_UPDATE_GOLDEN",
        first.len(),
        golden.display()
    );
    assert!(
        golden.is_dir(),
        "{} is missing: HARDWAY_UPDATE_GOLDEN=1 cargo test --test it render writes it",
        golden.display()
    );
    let golden_files = files_below(&golden);
    let rendered_files: Vec<PathBuf> = first.keys().cloned().collect();
    assert_eq!(
        golden_files, rendered_files,
        "the set of rendered files changed"
    );
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

fn normalize(text: &str) -> String {
    let mut out = String::new();
    let mut in_pem = false;
    for line in text.lines() {
        if let Some(kind) = line.strip_prefix("-----BEGIN ") {
            out.push_str(&format!("<PEM {}>\n", kind.trim_end_matches('-')));
            in_pem = true;
            continue;
        }
        if in_pem {
            in_pem = !line.starts_with("-----END ");
            continue;
        }
        let words: Vec<String> = line
            .split(' ')
            .map(|w| {
                let b64 = w.len() >= 40
                    && w.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b"+/=".contains(&c));
                if b64 {
                    "<base64>".to_string()
                } else {
                    w.to_string()
                }
            })
            .collect();
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------------------------
// A real etcd cluster from the rendered units.

/// Kills the etcd members when the test ends, passed or not.
struct Members(Vec<Child>);

impl Drop for Members {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The ExecStart command line of a unit, continuation lines joined.
fn exec_start(unit: &str) -> Vec<String> {
    let joined = unit.replace("\\\n", " ");
    let line = joined
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    line.split_whitespace().map(str::to_string).collect()
}

const LOOPBACK_INVENTORY: &str = r#"
[cluster]
name = "loop"
kubernetes_version = "1.37.1"
service_cidr = "10.32.0.0/24"
pod_cidr = "10.200.0.0/16"

[load_balancer]
address = "127.0.0.10"

[binaries]
remote_dir = "/usr/bin"

[[nodes]]
name = "m1"
address = "127.0.0.11"
roles = ["master"]

[[nodes]]
name = "m2"
address = "127.0.0.12"
roles = ["master"]

[[nodes]]
name = "m3"
address = "127.0.0.13"
roles = ["master"]
"#;

#[test]
fn a_real_etcd_cluster_runs_from_the_rendered_units_and_refuses_foreign_certs() {
    // etcd of a supported release (3.5.11+), as the lab's nodes have: a host's Debian may
    // have an older one (bookworm's 3.4, which lacks --listen-client-http-urls).
    let etcd = etcd_build();
    let etcdctl = etcd.join("etcdctl");
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("loop.toml");
    std::fs::write(&inv, LOOPBACK_INVENTORY).unwrap();
    let build = pki_and_render(&inv, dir.path());

    let mut members = Members(Vec::new());
    for m in ["m1", "m2", "m3"] {
        let root = build.join(m);
        let unit = std::fs::read_to_string(root.join("etc/systemd/system/etcd.service")).unwrap();
        // The rendered flags, verbatim, except that files live under the build tree instead of
        // / and the data directory is the test's own.
        let args: Vec<String> = exec_start(&unit)
            .into_iter()
            .map(|a| {
                a.replace(
                    "/etc/etcd/pki/",
                    &format!("{}/etc/etcd/pki/", root.display()),
                )
            })
            .map(|a| {
                a.replace(
                    "--data-dir=/var/lib/etcd",
                    &format!("--data-dir={}/data-{m}", dir.path().display()),
                )
            })
            .collect();
        assert_eq!(args[0], "/usr/bin/etcd");
        let args: Vec<String> = std::iter::once(etcd.join("etcd").display().to_string())
            .chain(args.into_iter().skip(1))
            .collect();
        // And the rendered environment file the unit reads (the initial cluster), as systemd
        // would pass it.
        assert!(
            unit.contains("EnvironmentFile=/etc/etcd/etcd.env\n"),
            "{unit}"
        );
        let env_text = std::fs::read_to_string(root.join("etc/etcd/etcd.env")).unwrap();
        let env: Vec<(String, String)> = env_text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .unwrap()
            })
            .collect();
        assert!(
            env.iter()
                .any(|(k, v)| k == "ETCD_INITIAL_CLUSTER"
                    && v.contains("m3=https://127.0.0.13:2380")),
            "{env_text}"
        );
        let log = std::fs::File::create(dir.path().join(format!("{m}.log"))).unwrap();
        let child = Command::new(&args[0])
            .args(&args[1..])
            .envs(env)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        members.0.push(child);
    }

    let pki = build.join("m1/etc/etcd/pki");
    let endpoints = "https://127.0.0.11:2379,https://127.0.0.12:2379,https://127.0.0.13:2379";
    let etcdctl_with = |cert: &Path, key: &Path, args: &[&str]| {
        run(Command::new(&etcdctl)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .arg(format!("--cacert={}", pki.join("ca.crt").display()))
            .arg(format!("--cert={}", cert.display()))
            .arg(format!("--key={}", key.display()))
            .arg("--dial-timeout=2s")
            .args(args))
    };
    let (cert, key) = (
        pki.join("healthcheck-client.crt"),
        pki.join("healthcheck-client.key"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let health = loop {
        let o = etcdctl_with(&cert, &key, &["endpoint", "health"]);
        if o.status.success() {
            break String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
        }
        for c in &mut members.0 {
            if let Some(status) = c.try_wait().unwrap() {
                let logs: String = ["m1", "m2", "m3"]
                    .iter()
                    .map(|m| {
                        std::fs::read_to_string(dir.path().join(format!("{m}.log")))
                            .unwrap_or_default()
                    })
                    .collect();
                panic!("an etcd member exited ({status}):\n{logs}");
            }
        }
        assert!(
            Instant::now() < deadline,
            "etcd not healthy after 60 s: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(health.matches("is healthy").count(), 3, "{health}");

    // etcd's HTTP is apart from its gRPC, on the member's loopback address: /health answers
    // there (HTTPS, a client certificate of etcd's CA, as on the client port).
    let openssl = require("openssl", "openssl");
    let mut s_client = Command::new(&openssl)
        .args(["s_client", "-quiet", "-connect", "127.0.0.11:2382"])
        .arg("-CAfile")
        .arg(pki.join("ca.crt"))
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    s_client
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.11\r\n\r\n")
        .unwrap();
    let o = s_client.wait_with_output().unwrap();
    let reply = String::from_utf8_lossy(&o.stdout);
    assert!(
        reply.starts_with("HTTP/1.0 200") && reply.contains("\"health\":\"true\""),
        "{reply}{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let list = etcdctl_with(&cert, &key, &["member", "list"]);
    let list = String::from_utf8_lossy(&list.stdout);
    for m in ["m1", "m2", "m3"] {
        assert!(list.contains(&format!("{m}, https://127.0.0.1")), "{list}");
    }
    // The API server's client certificate works; a cluster-CA certificate does not.
    let root = build.join("m2/etc/kubernetes/pki");
    let o = etcdctl_with(
        &root.join("apiserver-etcd-client.crt"),
        &root.join("apiserver-etcd-client.key"),
        &["put", "/registry/x", "y"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let admin = dir.path().join("pki");
    let o = etcdctl_with(
        &admin.join("admin.crt"),
        &admin.join("admin.key"),
        &["get", "/registry/x"],
    );
    assert!(
        !o.status.success(),
        "etcd accepted a client certificate from the cluster CA"
    );
}

/// The workers' runtime files and the pod network: containerd, CNI, routes.
mod runtime;

/// What is the same on every node is one file: the hosts block and the pod-routes table are
/// hard links of one inode across the tree, the CA too, while each node's own files are its
/// own — so a render grows with the number of nodes, not with its square.
#[test]
fn files_the_same_on_every_node_are_written_once() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let build = pki_and_render(&example_inventory(), dir.path());
    let nodes = hosts(&build);
    let inode = |host: &str, path: &str| std::fs::metadata(build.join(host).join(path)).unwrap();
    let first = inode(&nodes[0], "etc/hardway/hosts");
    assert_eq!(
        first.nlink() as usize,
        nodes.len(),
        "one hosts block for {} nodes",
        nodes.len()
    );
    for n in &nodes {
        assert_eq!(inode(n, "etc/hardway/hosts").ino(), first.ino(), "{n}");
    }
    let ca = inode("kmaster1", "etc/kubernetes/pki/ca.crt");
    assert_eq!(
        ca.ino(),
        inode("kworker2", "etc/kubernetes/pki/ca.crt").ino()
    );
    // Each node's own certificate stays its own file.
    assert_ne!(
        inode("kworker1", "var/lib/kubelet/pki/kubelet.crt").ino(),
        inode("kworker2", "var/lib/kubelet/pki/kubelet.crt").ino()
    );
    assert_eq!(
        inode("kworker1", "var/lib/kubelet/pki/kubelet.key").mode() & 0o777,
        0o600
    );
}
