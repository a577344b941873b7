//! `hardway pki generate` / `pki check`, validated with the real openssl.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use hardway::inventory;
use hardway::pki::{self, CaId};

fn openssl() -> Command {
    Command::new(require("openssl", "openssl"))
}

fn generate(inv: &Path, out: &Path, extra: &[&str]) -> String {
    ok(hardway().args(["pki", "generate", "-i"]).arg(inv).arg("--out").arg(out).args(extra))
}

/// Every file below the PKI dir with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    files_below(dir).into_iter().map(|f| (f.clone(), std::fs::read(dir.join(&f)).unwrap())).collect()
}

fn ca_file(ca: CaId) -> &'static str {
    pki::CAS.iter().find(|c| c.id == ca).unwrap().file
}

fn subject(cert: &Path) -> String {
    ok(openssl().args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"]).arg(cert)).trim().to_string()
}

fn pubkey_of_cert(cert: &Path) -> String {
    ok(openssl().args(["x509", "-noout", "-pubkey", "-in"]).arg(cert))
}

fn pubkey_of_key(key: &Path) -> String {
    ok(openssl().args(["pkey", "-pubout", "-in"]).arg(key))
}

#[test]
fn every_certificate_verifies_matches_its_key_and_has_its_sans() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    let report = generate(&example_inventory(), &out, &[]);
    assert!(report.contains("created   ca"), "{report}");
    assert!(!report.contains("PRIVATE KEY"), "a key was printed:\n{report}");

    let inv = inventory::load(&example_inventory()).unwrap();
    let specs = pki::matrix(&inv);
    // 7-node seed cluster: admin, 3 kubelets, cm, scheduler, proxy, apiserver, kubelet-client,
    // haproxy health checks, 3 etcd servers, 3 peers, etcd client, healthcheck, front-proxy-client.
    assert_eq!(specs.len(), 19);

    for ca in pki::CAS {
        let crt = out.join(format!("{}.crt", ca.file));
        ok(openssl().args(["verify", "-CAfile"]).arg(&crt).arg(&crt));
        assert_eq!(mode(&out.join(format!("{}.key", ca.file))), 0o600, "{} key mode", ca.file);
    }
    for spec in &specs {
        let crt = out.join(format!("{}.crt", spec.name));
        let key = out.join(format!("{}.key", spec.name));
        let ca = out.join(format!("{}.crt", ca_file(spec.ca)));
        let v = ok(openssl().args(["verify", "-CAfile"]).arg(&ca).arg(&crt));
        assert!(v.trim().ends_with(": OK"), "{v}");
        assert_eq!(pubkey_of_cert(&crt), pubkey_of_key(&key), "{} key does not match", spec.name);
        assert_eq!(mode(&key), 0o600, "{} key mode", spec.name);
        assert_eq!(mode(&crt), 0o644, "{} cert mode", spec.name);
        for san in &spec.sans {
            let (flag, value) = match san {
                pki::San::Ip(ip) => ("-checkip", ip.to_string()),
                pki::San::Dns(d) => ("-checkhost", d.clone()),
            };
            let o = ok(openssl().args(["x509", "-noout", flag, &value, "-in"]).arg(&crt));
            assert!(o.contains("does match certificate"), "{}: {value}: {o}", spec.name);
        }
        let neg = ok(openssl().args(["x509", "-noout", "-checkip", "203.0.113.9", "-in"]).arg(&crt));
        assert!(neg.contains("does NOT match"), "{}: {neg}", spec.name);
    }
    assert_eq!(mode(&out.join("sa.key")), 0o600);
    assert_eq!(mode(&out.join("encryption.key")), 0o600);
    assert_eq!(pubkey_of_key(&out.join("sa.key")), std::fs::read_to_string(out.join("sa.pub")).unwrap());
}

#[test]
fn subjects_follow_the_node_authorizer_and_rbac_conventions() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    generate(&example_inventory(), &out, &[]);
    let cases = [
        ("admin", "subject=O=system:masters,CN=admin"),
        ("kubelet-kworker2", "subject=O=system:nodes,CN=system:node:kworker2"),
        ("kube-proxy", "subject=O=system:node-proxier,CN=system:kube-proxy"),
        ("kube-controller-manager", "subject=O=system:kube-controller-manager,CN=system:kube-controller-manager"),
        ("kube-scheduler", "subject=O=system:kube-scheduler,CN=system:kube-scheduler"),
        ("front-proxy-client", "subject=CN=front-proxy-client"),
        ("etcd/server-kmaster2", "subject=CN=kmaster2"),
    ];
    for (name, want) in cases {
        assert_eq!(subject(&out.join(format!("{name}.crt"))), want, "{name}");
    }
    // The API server's SANs as the seed needs them: LB, masters, 127.0.0.1, first service IP.
    let api = out.join("apiserver.crt");
    for ip in ["192.168.96.7", "192.168.96.46", "192.168.96.47", "192.168.96.48", "127.0.0.1", "10.32.0.1"] {
        let o = ok(openssl().args(["x509", "-noout", "-checkip", ip, "-in"]).arg(&api));
        assert!(o.contains("does match"), "apiserver lacks {ip}");
    }
    for host in ["haproxy.systemv.local", "kubernetes.default.svc.cluster.local", "kmaster3.systemv.local"] {
        let o = ok(openssl().args(["x509", "-noout", "-checkhost", host, "-in"]).arg(&api));
        assert!(o.contains("does match"), "apiserver lacks {host}");
    }
    // Usages: kubelets serve and are clients; admin is a client only.
    let ext = ok(openssl().args(["x509", "-noout", "-ext", "extendedKeyUsage", "-in"]).arg(out.join("kubelet-kworker1.crt")));
    assert!(ext.contains("TLS Web Server Authentication") && ext.contains("TLS Web Client Authentication"), "{ext}");
    let ext = ok(openssl().args(["x509", "-noout", "-ext", "extendedKeyUsage", "-in"]).arg(out.join("admin.crt")));
    assert!(!ext.contains("Server"), "{ext}");
}

#[test]
fn etcd_has_its_own_ca() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    generate(&example_inventory(), &out, &[]);
    let o = run(openssl().args(["verify", "-CAfile"]).arg(out.join("ca.crt")).arg(out.join("etcd/server-kmaster1.crt")));
    assert!(!o.status.success(), "an etcd certificate verified against the cluster CA");
    let o = run(openssl().args(["verify", "-CAfile"]).arg(out.join("etcd/ca.crt")).arg(out.join("admin.crt")));
    assert!(!o.status.success(), "the admin certificate verified against the etcd CA");
}

#[test]
fn rerun_keeps_everything_and_force_keeps_the_encryption_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    generate(&example_inventory(), &out, &[]);
    let first = snapshot(&out);
    let report = generate(&example_inventory(), &out, &[]);
    assert!(report.contains("0 created or re-issued"), "{report}");
    assert_eq!(first, snapshot(&out), "a second run changed files");

    let report = generate(&example_inventory(), &out, &["--force"]);
    assert!(report.contains("reissued  ca: --force"), "{report}");
    let forced = snapshot(&out);
    for (f, bytes) in &first {
        let name = f.to_string_lossy();
        if name == "encryption.key" {
            assert_eq!(&forced[f], bytes, "--force replaced the encryption key");
        } else {
            assert_ne!(&forced[f], bytes, "--force kept {name}");
        }
    }
    // And everything still chains to the new CA.
    ok(openssl().args(["verify", "-CAfile"]).arg(out.join("ca.crt")).arg(out.join("apiserver.crt")));
}

#[test]
fn a_new_san_reissues_only_that_certificate_and_keeps_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    generate(&example_inventory(), &out, &[]);
    let before = snapshot(&out);
    let changed = inventory_variant(
        dir.path(),
        "changed.toml",
        &[("address = \"192.168.96.49\"\n", "address = \"192.168.96.49\"\nextra_sans = [\"kworker1.lab.example\", \"10.9.9.9\"]\n")],
    );
    let report = generate(&changed, &out, &[]);
    assert!(
        report.contains("reissued  kubelet-kworker1: SANs changed (+DNS:kworker1.lab.example +IP:10.9.9.9)"),
        "{report}"
    );
    assert!(report.contains("1 created or re-issued"), "{report}");
    let after = snapshot(&out);
    for (f, bytes) in &before {
        if f == Path::new("kubelet-kworker1.crt") {
            assert_ne!(&after[f], bytes);
        } else {
            assert_eq!(&after[f], bytes, "{} changed", f.display());
        }
    }
    let crt = out.join("kubelet-kworker1.crt");
    ok(openssl().args(["verify", "-CAfile"]).arg(out.join("ca.crt")).arg(&crt));
    let o = ok(openssl().args(["x509", "-noout", "-checkip", "10.9.9.9", "-in"]).arg(&crt));
    assert!(o.contains("does match"), "{o}");
}

#[test]
fn a_ca_without_its_key_is_an_error_that_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    generate(&example_inventory(), &out, &[]);
    std::fs::remove_file(out.join("ca.key")).unwrap();
    std::fs::remove_file(out.join("admin.crt")).unwrap();
    let before = snapshot(&out);
    let o = run(hardway().args(["pki", "generate", "-i"]).arg(example_inventory()).arg("--out").arg(&out));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("ca.crt: the CA certificate exists but its key") && err.contains("--force"), "{err}");
    assert_eq!(before, snapshot(&out), "a failed run changed the PKI");
}

#[test]
fn check_lists_every_certificate_and_flags_san_mismatches() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    generate(&example_inventory(), &out, &[]);
    let listing = ok(hardway().args(["pki", "check", "-i"]).arg(example_inventory()).arg("--pki").arg(&out));
    let inv = inventory::load(&example_inventory()).unwrap();
    for spec in pki::matrix(&inv) {
        assert!(listing.contains(&spec.name), "{} missing from:\n{listing}", spec.name);
    }
    assert!(listing.contains("22 certificates, 0 with problems"), "{listing}");
    assert!(listing.contains("CN=system:node:kworker1,O=system:nodes"), "{listing}");
    assert!(listing.contains("364"), "days left not shown:\n{listing}");

    // The inventory moves a master: the API server and that member's etcd certs no longer fit.
    let moved = inventory_variant(dir.path(), "moved.toml", &[("192.168.96.48", "192.168.96.58")]);
    let o = run(hardway().args(["pki", "check", "-i"]).arg(&moved).arg("--pki").arg(&out));
    assert_eq!(o.status.code(), Some(1));
    let listing = String::from_utf8_lossy(&o.stdout);
    let bad: Vec<&str> = listing.lines().filter(|l| l.contains("SANs changed")).collect();
    assert_eq!(bad.len(), 3, "{listing}");
    assert!(bad.iter().any(|l| l.starts_with("apiserver ") && l.contains("+IP:192.168.96.58 -IP:192.168.96.48")), "{listing}");
    assert!(bad.iter().any(|l| l.starts_with("etcd/server-kmaster3")), "{listing}");
}

#[test]
fn rsa_keys_work_too() {
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory_variant(dir.path(), "rsa.toml", &[("algorithm = \"ecdsa-p256\"", "algorithm = \"rsa-2048\"")]);
    let out = dir.path().join("pki");
    generate(&inv, &out, &[]);
    let text = ok(openssl().args(["x509", "-noout", "-text", "-in"]).arg(out.join("apiserver.crt")));
    assert!(text.contains("Public-Key: (2048 bit)"), "{text}");
    ok(openssl().args(["verify", "-CAfile"]).arg(out.join("ca.crt")).arg(out.join("apiserver.crt")));
    // Switching the inventory back re-issues with ECDSA keys.
    let report = generate(&example_inventory(), &out, &[]);
    assert!(report.contains("reissued  admin: key is rsa-2048, inventory asks for ecdsa-p256"), "{report}");
}
