//! `hardway explain`: the walkthrough is run, not read. Its certificate part, with openssl and
//! with cfssl, makes certificates that openssl and `hardway pki check` find to be exactly what
//! hardway's matrix requires. On a fresh lab (the `lab` binary's `explain::lab`), its etcd and
//! lb phases build a cluster that `hardway verify` passes.

use std::path::Path;
use std::process::Command;

use crate::common::*;

/// One certificate as openssl reads it: subject, SANs, extended key usages.
fn openssl_text(cert: &Path) -> String {
    ok(Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-subject",
            "-ext",
            "subjectAltName,extendedKeyUsage,basicConstraints",
            "-nameopt",
            "RFC2253",
            "-in",
        ])
        .arg(cert))
}

fn public_key(args: &[&str], file: &Path) -> String {
    ok(Command::new("openssl").args(args).arg(file))
}

/// Every certificate of the matrix, as the walkthrough made it under `pki`, checked with
/// openssl: signed by its CA, its subject, exactly its SANs, its usages, its key 0600 and its own.
fn certificates_match_the_matrix(inv_path: &Path, pki: &Path) {
    let inv = hardway::inventory::load(inv_path).unwrap();
    let specs = hardway::pki::matrix(&inv);
    assert!(
        specs.len() > 10,
        "the example needs many certificates: {}",
        specs.len()
    );
    for spec in &specs {
        let ca = hardway::pki::CAS.iter().find(|c| c.id == spec.ca).unwrap();
        let (crt, key) = (
            pki.join(format!("{}.crt", spec.name)),
            pki.join(format!("{}.key", spec.name)),
        );
        let verified = ok(Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(pki.join(format!("{}.crt", ca.file)))
            .arg(&crt));
        assert!(
            verified.trim_end().ends_with(": OK"),
            "{}: {verified}",
            spec.name
        );
        let text = openssl_text(&crt);
        // The subject's attributes, in whatever order the tool wrote them.
        let subject: std::collections::BTreeSet<&str> = text
            .lines()
            .find_map(|l| l.strip_prefix("subject="))
            .unwrap_or_default()
            .split(',')
            .collect();
        let want_subject: std::collections::BTreeSet<String> =
            std::iter::once(format!("CN={}", spec.cn))
                .chain(spec.orgs.iter().map(|o| format!("O={o}")))
                .collect();
        assert_eq!(
            subject,
            want_subject.iter().map(String::as_str).collect(),
            "{}: {text}",
            spec.name
        );
        assert!(text.contains("CA:FALSE"), "{}: {text}", spec.name);
        // openssl prints SANs as "DNS:x, IP Address:y"; the matrix's are the exact set.
        let have: std::collections::BTreeSet<String> = text
            .lines()
            .skip_while(|l| !l.contains("Subject Alternative Name"))
            .nth(1)
            .map(|l| {
                l.split(", ")
                    .map(|s| s.trim().replace("IP Address:", "IP:"))
                    .collect()
            })
            .unwrap_or_default();
        let want: std::collections::BTreeSet<String> =
            spec.sans.iter().map(|s| s.to_string()).collect();
        assert_eq!(have, want, "{}: {text}", spec.name);
        let usages = match spec.usage {
            hardway::pki::Usage::Client => "TLS Web Client Authentication",
            hardway::pki::Usage::Server => "TLS Web Server Authentication",
            hardway::pki::Usage::ServerAndClient => {
                "TLS Web Server Authentication, TLS Web Client Authentication"
            }
        };
        assert!(text.contains(usages), "{}: {text}", spec.name);
        assert_eq!(mode(&key), 0o600, "{}", key.display());
        assert_eq!(
            public_key(&["pkey", "-pubout", "-in"], &key),
            public_key(&["x509", "-noout", "-pubkey", "-in"], &crt),
            "{}: key and certificate differ",
            spec.name
        );
    }
    for ca in hardway::pki::CAS
        .iter()
        .filter(|c| inv.addons.aggregation || !c.aggregation_only)
    {
        assert!(
            openssl_text(&pki.join(format!("{}.crt", ca.file))).contains("CA:TRUE"),
            "{}",
            ca.file
        );
        assert_eq!(mode(&pki.join(format!("{}.key", ca.file))), 0o600);
    }
    assert_eq!(mode(&pki.join("sa.key")), 0o600);
    assert_eq!(mode(&pki.join("encryption.key")), 0o600);
    // hardway's own reading of the same directory: nothing differs from what it would make.
    let o = run(hardway()
        .args(["pki", "check", "-i"])
        .arg(inv_path)
        .arg("--pki")
        .arg(pki));
    assert!(
        o.status.success(),
        "pki check:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn certificate_walkthrough(tool: &str) {
    require("openssl", "openssl");
    if tool == "cfssl" {
        require("cfssl", "golang-cfssl");
        require("cfssljson", "golang-cfssl");
    }
    let dir = tempfile::tempdir().unwrap();
    let script = explain(
        &example_inventory(),
        &["--phase", "pki", "--tool", tool],
        dir.path(),
    );
    let work = dir.path().join("work");
    run_walkthrough(&script, &work);
    certificates_match_the_matrix(&example_inventory(), &work.join("pki"));
    // Run again, it keeps what it made.
    let before = std::fs::read(work.join("pki/etcd/ca.key")).unwrap();
    run_walkthrough(&script, &work);
    assert_eq!(
        std::fs::read(work.join("pki/etcd/ca.key")).unwrap(),
        before,
        "a second run replaced a key"
    );
}

#[test]
fn the_certificates_openssl_makes_are_the_matrix() {
    certificate_walkthrough("openssl");
}

#[test]
fn the_certificates_cfssl_makes_are_the_matrix() {
    certificate_walkthrough("cfssl");
}

#[test]
fn every_phase_is_explained_and_the_script_parses() {
    let dir = tempfile::tempdir().unwrap();
    let script = explain(&example_inventory(), &[], dir.path());
    ok(Command::new("bash").arg("-n").arg(&script));
    let text = std::fs::read_to_string(&script).unwrap();
    for phase in ["files", "etcd", "lb", "control-plane", "workers", "addons"] {
        assert!(
            text.contains(&format!("# Phase {phase}: ")),
            "no phase {phase}"
        );
    }
    // From hardway's tables: the kubeconfigs, the units, the addons.
    assert!(text.contains("kubectl config set-cluster systemv --certificate-authority=pki/ca.crt --embed-certs=true --server=https://192.168.96.7:6443 --kubeconfig=kubeconfigs/kube-proxy.kubeconfig"));
    assert!(text.contains("kubectl config set-credentials system:node:kworker1 --client-certificate=pki/kubelet-kworker1.crt"));
    assert!(text.contains(
        "--server=https://127.0.0.1:6443 --kubeconfig=kubeconfigs/kube-scheduler-local.kubeconfig"
    ));
    assert!(
        text.contains("systemctl enable kube-apiserver kube-controller-manager kube-scheduler")
    );
    assert!(text.contains("install -D -o root -g root -m 600 hardway-upload/etc/kubernetes/encryption-config.yaml /etc/kubernetes/encryption-config.yaml"));
    // The encryption key reaches its config through a variable, not a command line.
    // (Its first line: after a rotation the file names the key on a second line.)
    assert!(
        text.contains("ENCRYPTION_KEY=$(sed -n 1p pki/encryption.key)")
            && text.contains("secret: ${ENCRYPTION_KEY}")
    );
    assert!(text.contains("- name: ${ENCRYPTION_KEY_NAME}"));
    assert!(text.contains("rollout status deployment/coredns"));
    // An unknown part is refused, naming the known ones.
    let o = run(hardway()
        .arg("explain")
        .arg("-i")
        .arg(example_inventory())
        .args(["--phase", "etcd,nope"]));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains(
        "unknown part \"nope\": one of pki, files, etcd, lb, control-plane, workers, addons"
    ));
}
