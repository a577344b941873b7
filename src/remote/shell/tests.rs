//! The scripts run by this machine's own `sh` ([`LocalShell`]) against real files and tools,
//! and the parsers on lines as the tools print them.

use super::*;
use crate::remote::Listener;

#[test]
fn parses_ss_lines() {
    let l = parse_ss("LISTEN 0      4096      10.213.0.11:2379      0.0.0.0:*    users:((\"etcd\",pid=231,fd=8)) unit=etcd.service").unwrap();
    assert_eq!(
        l,
        Listener {
            port: 2379,
            process: "etcd".into(),
            unit: Some("etcd".into())
        }
    );
    let l = parse_ss("LISTEN 0 128 [::]:22 [::]:* users:((\"sshd\",pid=1,fd=4)) unit=").unwrap();
    assert_eq!((l.port, l.unit), (22, None));
    assert!(parse_ss("garbage").is_none());
}

fn local() -> ShellRemote<LocalShell> {
    ShellRemote::new("local", LocalShell)
}

#[test]
fn certificates_come_back_without_the_keys_beside_them() {
    let dir = tempfile::tempdir().unwrap();
    let both = dir.path().join("both.pem");
    std::fs::write(&both, "-----BEGIN PRIVATE KEY-----\nSECRET\n-----END PRIVATE KEY-----\n-----BEGIN CERTIFICATE-----\nPUBLIC\n-----END CERTIFICATE-----\n").unwrap();
    let missing = dir.path().join("missing.crt").display().to_string();
    let got = local()
        .read_certificates(&[both.display().to_string(), missing.clone()])
        .unwrap();
    let cert = got[&both.display().to_string()].as_deref().unwrap();
    assert_eq!(
        cert,
        "-----BEGIN CERTIFICATE-----\nPUBLIC\n-----END CERTIFICATE-----\n"
    );
    assert_eq!(got[&missing], None);
}

/// A certificate cut short (no END line) before a key: only complete certificate blocks leave
/// the node, whatever else the file holds.
#[test]
fn a_certificate_without_its_end_line_does_not_carry_the_key_after_it_off_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let cert = "-----BEGIN CERTIFICATE-----\nPUBLIC\n-----END CERTIFICATE-----\n";
    let key = "-----BEGIN PRIVATE KEY-----\nSECRET\n-----END PRIVATE KEY-----\n";
    for (name, text, want) in [
        (
            "truncated.pem",
            format!("-----BEGIN CERTIFICATE-----\nPUBL\n{key}"),
            String::new(),
        ),
        (
            "after-one.pem",
            format!("{cert}-----BEGIN CERTIFICATE-----\nPUBL\n{key}"),
            cert.to_string(),
        ),
        (
            "nested.pem",
            format!("-----BEGIN CERTIFICATE-----\n{key}-----END CERTIFICATE-----\n{cert}"),
            cert.to_string(),
        ),
        (
            "no-newline.pem",
            format!("{cert}-----BEGIN CERTIFICATE-----\nSECRET"),
            cert.to_string(),
        ),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, &text).unwrap();
        let p = p.display().to_string();
        let got = local().read_certificates(std::slice::from_ref(&p)).unwrap()[&p]
            .clone()
            .unwrap();
        assert!(
            !got.contains("SECRET") && !got.contains("PRIVATE"),
            "{name}: {got}"
        );
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn a_kubeconfig_gives_its_certificates_and_never_its_key() {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let cert =
        |what: &str| format!("-----BEGIN CERTIFICATE-----\n{what}\n-----END CERTIFICATE-----\n");
    let key = "-----BEGIN PRIVATE KEY-----\nSECRET\n-----END PRIVATE KEY-----\n";
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("admin.kubeconfig");
    std::fs::write(
        &kc,
        format!(
            "clusters:\n- cluster:\n    certificate-authority-data: {}\n    server: https://x\nusers:\n- user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&cert("CA")),
            b64(&cert("CLIENT")),
            b64(key)
        ),
    )
    .unwrap();
    let p = kc.display().to_string();
    let got = local().read_certificates(std::slice::from_ref(&p)).unwrap()[&p]
        .clone()
        .unwrap();
    assert_eq!(got, format!("{}{}", cert("CA"), cert("CLIENT")));
}

#[test]
fn the_node_hashes_the_keys_as_render_does() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("enc.yaml");
    let text = "kind: EncryptionConfiguration\nresources:\n  - providers:\n      - aescbc:\n          keys:\n            - name: key2\n              secret: c2Vjb25k\n            - name: key1\n              secret:   Zmlyc3Q=\n      - identity: {}\n";
    std::fs::write(&cfg, text).unwrap();
    let path = cfg.display().to_string();
    let q = FactsQuery {
        fingerprints: vec![path.clone(), "/nonexistent".into()],
        ..FactsQuery::default()
    };
    let facts = local().facts(&q).unwrap();
    assert_eq!(facts.fingerprints[&path], crate::render::key_hashes(text));
    assert_eq!(facts.fingerprints[&path].len(), 2);
    assert_ne!(
        facts.fingerprints[&path],
        crate::render::key_hashes("secret: other\n")
    );
    // The same keys used by two providers are the same keys.
    let twice = format!(
        "{text}      - secretbox:\n          keys:\n            - name: key1\n              secret: Zmlyc3Q=\n"
    );
    assert_eq!(
        crate::render::key_hashes(&twice),
        crate::render::key_hashes(text)
    );
    assert!(!facts.fingerprints.contains_key("/nonexistent"));
}

#[test]
fn the_node_masks_secrets_as_render_does() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("kubeconfig");
    let text = "apiVersion: v1\nusers:\n  - name: admin\n    user:\n      client-key-data: S0VZ\n      client-certificate-data: Q0VSVA==\nclusters:\n\t- server: https://10.0.0.1:6443\n      secret:   c2Vj\n      secret:\n-----BEGIN PRIVATE KEY-----\nS0VZIE1BVEVSSUFM\n-----END PRIVATE KEY-----\ntail: x\n-----BEGIN CERTIFICATE-----\nQ0VSVElGSUNBVEU=\n-----END CERTIFICATE-----\n";
    std::fs::write(&f, text).unwrap();
    let p = f.display().to_string();
    let got = local().read_masked(std::slice::from_ref(&p)).unwrap();
    let masked = got[&p].as_deref().unwrap();
    assert_eq!(masked, crate::render::mask_secrets(text));
    assert!(
        !masked.contains("S0VZ") && !masked.contains("c2Vj"),
        "{masked}"
    );
    // Certificates are public: they stay, for the diff to say which they are.
    assert!(
        masked.contains("client-certificate-data: Q0VSVA==")
            && masked.contains(
                "-----BEGIN CERTIFICATE-----\nQ0VSVElGSUNBVEU=\n-----END CERTIFICATE-----\n"
            ),
        "{masked}"
    );
    assert!(
        masked.contains("<PRIVATE KEY masked>\ntail: x\n")
            && masked.contains("server: https://10.0.0.1:6443"),
        "{masked}"
    );
}

#[test]
fn a_hosts_file_with_an_unpaired_begin_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (source, target) = (dir.path().join("block"), dir.path().join("hosts"));
    std::fs::write(&source, "# BEGIN hardway c\n10.0.0.1 n1\n# END hardway c\n").unwrap();
    let before = "127.0.0.1 localhost\n# BEGIN hardway c\n10.0.0.9 old\n192.0.2.1 precious\n";
    std::fs::write(&target, before).unwrap();
    let (s, t) = (source.display().to_string(), target.display().to_string());
    let block = HostsBlock {
        cluster: "c",
        source: &s,
        target: &t,
    };
    let err = local().merge_hosts_block(&block).unwrap_err();
    assert!(err.to_string().contains("do not pair up"), "{err}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), before);
    // Paired, the block is replaced and every other line kept.
    std::fs::write(&target, "127.0.0.1 localhost\n# BEGIN hardway c\n10.0.0.9 old\n# END hardway c\n192.0.2.1 precious\n").unwrap();
    local().merge_hosts_block(&block).unwrap();
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "127.0.0.1 localhost\n192.0.2.1 precious\n# BEGIN hardway c\n10.0.0.1 n1\n# END hardway c\n"
    );
}

/// The addons script's control flow, run by `sh` against a recording stand-in for kubectl
/// (no API server can run here): every step in order, the webhook step retried until the
/// stand-in accepts it, a rollout that does not finish named in the error.
#[test]
fn the_addons_script_runs_every_step_in_order_and_retries_only_the_webhook() {
    use crate::addons::{Addon, Step};
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls");
    let kubectl = dir.path().join("kubectl");
    // Finds no difference for the RBAC manifest only (not applied again); refuses the first
    // apply of the pool (as a webhook that does not answer yet), and every rollout of
    // deployment/broken.
    let stand_in = format!(
        "#!/bin/sh\necho \"$*\" >> {log}\ncase \"$*\" in\n  *' diff '*rbac.yaml*) exit 0 ;;\n  *' diff '*) exit 1 ;;\n  *pool.yaml*) [ -e {log}.once ] || {{ touch {log}.once; echo 'failed calling webhook' >&2; exit 1; }} ;;\n  *deployment/broken*) exit 1 ;;\n  *coredns.yaml*) echo 'service/kube-dns unchanged'; echo 'deployment.apps/coredns configured' ;;\nesac\nexit 0\n",
        log = log.display()
    );
    std::fs::write(&kubectl, stand_in).unwrap();
    std::fs::set_permissions(
        &kubectl,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let k = kubectl.display().to_string();
    let kc_file = dir.path().join("k");
    std::fs::write(&kc_file, "").unwrap();
    let kc = kc_file.display().to_string();
    let addons = vec![
        Addon {
            name: "RBAC",
            steps: vec![Step::Apply("/a/rbac.yaml".into())],
        },
        Addon {
            name: "CoreDNS",
            steps: vec![
                Step::Apply("/a/coredns.yaml".into()),
                Step::Rollout {
                    namespace: "kube-system",
                    object: "deployment/coredns",
                },
            ],
        },
        Addon {
            name: "MetalLB",
            steps: vec![Step::ApplyUntilAccepted("/a/pool.yaml".into())],
        },
    ];
    let changed = local()
        .apply(&Apply {
            kubectl: &k,
            kubeconfig: &kc,
            addons: &addons,
            timeout_secs: 10,
        })
        .unwrap();
    assert_eq!(
        changed,
        ["deployment.apps/coredns configured"],
        "only what kubectl created or configured is a change"
    );
    let calls: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| l.replace(&format!("--kubeconfig {kc} "), ""))
        .collect();
    assert_eq!(
        calls,
        [
            "get --raw /readyz",
            "diff -f /a/rbac.yaml",
            "diff -f /a/coredns.yaml",
            "apply -f /a/coredns.yaml",
            "-n kube-system rollout status deployment/coredns --timeout=10s",
            "diff -f /a/pool.yaml",
            "apply -f /a/pool.yaml",
            "apply -f /a/pool.yaml",
        ]
    );
    let broken = vec![Addon {
        name: "Broken",
        steps: vec![Step::Rollout {
            namespace: "x",
            object: "deployment/broken",
        }],
    }];
    let err = local()
        .apply(&Apply {
            kubectl: &k,
            kubeconfig: &kc,
            addons: &broken,
            timeout_secs: 10,
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("addon Broken: wait for deployment/broken in x to roll out failed: not ready within 10 s"), "{err}");
    // A missing kubectl or kubeconfig is named, not blamed on the API server.
    let err = local()
        .apply(&Apply {
            kubectl: "/nonexistent/kubectl",
            kubeconfig: &kc,
            addons: &addons,
            timeout_secs: 10,
        })
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("kubectl is not at /nonexistent/kubectl (the addons phase places it)"),
        "{err}"
    );
    let err = local()
        .apply(&Apply {
            kubectl: &k,
            kubeconfig: "/nonexistent/k",
            addons: &addons,
            timeout_secs: 10,
        })
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no kubeconfig at /nonexistent/k (the files phase places it)"),
        "{err}"
    );
}

/// Archives are imported only when containerd lacks one of their images (a no-change deploy
/// imports nothing), or when they name none; what was imported is reported.
#[test]
fn images_are_imported_only_when_containerd_lacks_them() {
    use crate::remote::ImportImages;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls");
    let ctr = dir.path().join("ctr");
    // containerd has pause and agnhost, not coredns.
    let stand_in = format!(
        "#!/bin/sh
echo \"$*\" >> {log}\ncase \"$*\" in\n  *'images ls -q'*) printf 'registry.k8s.io/pause:3.10.1\\nhardway.test/agnhost:2.66.1\\nsha256:abc\\n' ;;\nesac\nexit 0\n",
        log = log.display()
    );
    std::fs::write(&ctr, stand_in).unwrap();
    std::fs::set_permissions(&ctr, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let c = ctr.display().to_string();
    let tarballs = vec![
        (
            "/i/pause.tar".to_string(),
            vec!["registry.k8s.io/pause:3.10.1".to_string()],
        ),
        (
            "/i/both.tar".to_string(),
            vec![
                "hardway.test/agnhost:2.66.1".to_string(),
                "registry.k8s.io/coredns/coredns:v1.14.2".to_string(),
            ],
        ),
        ("/i/unnamed.tar".to_string(), vec![]),
    ];
    let imported = local()
        .import_images(&ImportImages { ctr: &c, tarballs })
        .unwrap();
    assert_eq!(imported, ["/i/both.tar", "/i/unnamed.tar"]);
    let calls = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        calls
            .lines()
            .filter(|l| l.contains("images import"))
            .collect::<Vec<_>>(),
        [
            "-n k8s.io images import /i/both.tar",
            "-n k8s.io images import /i/unnamed.tar"
        ]
    );
}

/// The facts read with shell builtins (no process per fact) agree with what this machine's own
/// files and tools say: cgroup v2, br_netfilter, swap, and a hosts block's marker counted only
/// on a line of its own.
#[test]
fn facts_read_with_builtins_agree_with_the_host() {
    use crate::remote::FactsQuery;
    let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let name = host_hosts
        .lines()
        .find_map(|l| l.strip_prefix("# BEGIN hardway "))
        .map(str::to_string)
        .unwrap_or_else(|| "no-such-cluster-here".into());
    let f = local()
        .facts(&FactsQuery {
            hosts_block: name.clone(),
            ..FactsQuery::default()
        })
        .unwrap();
    assert_eq!(
        f.hosts_block,
        host_hosts
            .lines()
            .any(|l| l == format!("# BEGIN hardway {name}")),
        "{name}"
    );
    let fs_type = std::process::Command::new("stat")
        .args(["-fc", "%T", "/sys/fs/cgroup"])
        .output()
        .unwrap();
    assert_eq!(
        f.cgroup2,
        String::from_utf8_lossy(&fs_type.stdout).trim() == "cgroup2fs"
    );
    let module = std::process::Command::new("modinfo")
        .arg("br_netfilter")
        .output()
        .is_ok_and(|o| o.status.success());
    assert_eq!(
        f.br_netfilter,
        std::path::Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists() || module
    );
    let swaps = std::fs::read_to_string("/proc/swaps").unwrap();
    assert_eq!(
        f.swap_active,
        swaps.lines().skip(1).any(|l| !l.trim().is_empty())
    );
    assert!(f.clock_offset.abs() < 1.0, "{}", f.clock_offset);
    assert!(
        (0.0..1.0).contains(&f.clock_uncertainty),
        "half the round trip: {}",
        f.clock_uncertainty
    );
}

/// A cluster name with pattern characters counts only its own marker line.
#[test]
fn the_hosts_block_marker_is_matched_literally() {
    use crate::remote::FactsQuery;
    let f = local()
        .facts(&FactsQuery {
            hosts_block: "*".into(),
            ..FactsQuery::default()
        })
        .unwrap();
    let literal = std::fs::read_to_string("/etc/hosts")
        .unwrap_or_default()
        .lines()
        .any(|l| l == "# BEGIN hardway *");
    assert_eq!(f.hosts_block, literal);
}

/// A binary's version line is read once and kept on the node; a binary replaced (a new inode,
/// as apt and hardway's renames make) is asked again; without a cache (a dry run) nothing is
/// written.
#[test]
fn version_lines_are_cached_until_the_binary_is_replaced() {
    use crate::remote::FactsQuery;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (bin, runs, cache) = (
        dir.path().join("tool"),
        dir.path().join("runs"),
        dir.path().join("cache"),
    );
    let install = |version: &str| {
        let tmp = dir.path().join("tool.new");
        std::fs::write(
            &tmp,
            format!(
                "#!/bin/sh\necho run >> '{}'\necho 'tool {version}'\n",
                runs.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, &bin).unwrap();
    };
    let runs_so_far = || {
        std::fs::read_to_string(&runs)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let query = |cache: Option<&std::path::Path>| FactsQuery {
        versions: vec![(bin.display().to_string(), "--version".into())],
        version_cache: cache.map(|c| c.display().to_string()),
        ..FactsQuery::default()
    };
    let version = |cache| {
        local()
            .facts(&query(cache))
            .unwrap()
            .versions
            .get(&bin.display().to_string())
            .cloned()
    };

    install("1.0");
    assert_eq!(version(None).as_deref(), Some("tool 1.0"));
    assert!(!cache.exists(), "no cache asked for, none written");
    assert_eq!(version(Some(&cache)).as_deref(), Some("tool 1.0"));
    assert_eq!(version(Some(&cache)).as_deref(), Some("tool 1.0"));
    assert_eq!(
        runs_so_far(),
        2,
        "asked once without the cache, once to fill it, then read from it"
    );
    install("2.0");
    assert_eq!(
        version(Some(&cache)).as_deref(),
        Some("tool 2.0"),
        "a replaced binary is asked again"
    );
    assert_eq!(runs_so_far(), 3);
    std::fs::remove_file(&bin).unwrap();
    assert_eq!(
        version(Some(&cache)),
        None,
        "a binary that is gone has no version, cached or not"
    );
}

/// A node names a file of any size (an EnvironmentFile, a config): what is read of it is
/// bounded, and a larger one is an error naming it and its size, not hundreds of MB in memory.
#[test]
fn a_file_larger_than_the_read_limit_is_refused_naming_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("etcd.env");
    let size = crate::remote::READ_LIMIT + 1;
    std::fs::File::create(&big).unwrap().set_len(size).unwrap();
    let p = big.display().to_string();
    // (Never printed whole: it is the size the test is about.)
    let e = match local().read_config(&p) {
        Ok(t) => panic!(
            "{} bytes of a file over the limit were read",
            t.map_or(0, |t| t.len())
        ),
        Err(e) => e.to_string(),
    };
    assert!(e.contains(&p) && e.contains(&size.to_string()), "{e}");
    let e = match local().read_certificates(std::slice::from_ref(&p)) {
        Ok(_) => panic!("a file over the limit was read"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains(&p) && e.contains(&size.to_string()), "{e}");
    // Within the limit, read whole.
    std::fs::write(&big, "ETCD_NAME=m1\n").unwrap();
    assert_eq!(
        local().read_config(&p).unwrap().as_deref(),
        Some("ETCD_NAME=m1\n")
    );
}

/// `snapshot status` by etcd's own tool (etcdutl, or etcdctl where there is none): a file that
/// is not a bbolt database is refused with the tool's reason.
#[test]
fn a_file_that_is_no_etcd_snapshot_fails_the_nodes_snapshot_status() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![0x5a; 8192]).unwrap();
    let bin = dir.path().display().to_string();
    let got = local()
        .snapshot_status(&junk.display().to_string(), &bin)
        .unwrap();
    assert!(got.is_err(), "{got:?}");
}

/// `remove_pods` asks crictl, at the runtime's socket, for the pods and then removes them all;
/// without crictl or the socket it does nothing.
#[test]
fn pods_are_counted_and_removed_through_crictl_at_the_runtimes_socket() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("calls");
    let crictl = dir.path().join("crictl");
    std::fs::write(
        &crictl,
        format!(
            "#!/bin/sh\necho \"$*\" >> {}\ncase \"$*\" in *' pods -q') printf 'a1\\nb2\\n';; esac\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&crictl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("containerd.sock");
    let (crictl, socket_s) = (crictl.display().to_string(), socket.display().to_string());
    // No socket: nothing asked.
    assert_eq!(local().remove_pods(&crictl, &socket_s).unwrap(), 0);
    assert!(!calls.exists());
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    assert_eq!(local().remove_pods(&crictl, &socket_s).unwrap(), 2);
    let said = std::fs::read_to_string(&calls).unwrap();
    let endpoint = format!("--runtime-endpoint unix://{socket_s} --timeout 60s");
    assert_eq!(
        said.lines().collect::<Vec<_>>(),
        [
            format!("{endpoint} pods -q"),
            format!("{endpoint} rmp --all --force")
        ]
    );
}

/// apt's candidate as `apt-cache policy` says it, read on this host (Debian, as CI's): a package
/// it has answers with the version dpkg records, one no source has answers `None`.
#[test]
fn apt_candidates_are_read_from_apt_cache_policy() {
    let got = local()
        .package_candidates(&["dpkg".into(), "no-such-package-hardway".into()], false)
        .unwrap();
    let dpkg = std::process::Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "dpkg"])
        .output()
        .expect("dpkg-query: this test needs a Debian or Ubuntu host");
    let installed = String::from_utf8_lossy(&dpkg.stdout).to_string();
    assert!(!installed.is_empty());
    // The candidate is the installed version or a newer one in the host's lists.
    let candidate = got["dpkg"].clone().expect("apt knows dpkg");
    let newer_or_same = std::process::Command::new("dpkg")
        .args(["--compare-versions", &candidate, "ge", &installed])
        .status()
        .unwrap()
        .success();
    assert!(newer_or_same, "{candidate} < {installed}");
    assert_eq!(got["no-such-package-hardway"], None);
}
