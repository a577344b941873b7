//! `hardway explain`: the walkthrough is run, not read. Its certificate part, with openssl and
//! with cfssl, makes certificates that openssl and `hardway pki check` find to be exactly what
//! hardway's matrix requires; on a fresh lab, its etcd and lb phases build a cluster that
//! `hardway verify` passes.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// The walkthrough for `inv` with these arguments, written to `dir/walkthrough.sh`.
fn explain(inv: &Path, args: &[&str], dir: &Path) -> PathBuf {
    let script = ok(hardway().arg("explain").arg("-i").arg(inv).args(args));
    assert!(script.starts_with("#!/usr/bin/env bash\n"), "{}", &script[..200.min(script.len())]);
    assert!(script.contains("\nset -euo pipefail\n"));
    // Commands that make keys, never a key.
    assert!(!script.contains("PRIVATE KEY"), "the walkthrough embeds key material");
    let path = dir.join("walkthrough.sh");
    std::fs::write(&path, script).unwrap();
    path
}

/// Runs a walkthrough with bash in `workdir`; panics with its output when it fails.
fn run_walkthrough(script: &Path, workdir: &Path) -> String {
    ok(Command::new("bash").arg(script).env("WORKDIR", workdir))
}

/// One certificate as openssl reads it: subject, SANs, extended key usages.
fn openssl_text(cert: &Path) -> String {
    ok(Command::new("openssl").args(["x509", "-noout", "-subject", "-ext", "subjectAltName,extendedKeyUsage,basicConstraints", "-nameopt", "RFC2253", "-in"]).arg(cert))
}

fn public_key(args: &[&str], file: &Path) -> String {
    ok(Command::new("openssl").args(args).arg(file))
}

/// Every certificate of the matrix, as the walkthrough made it under `pki`, checked with
/// openssl: signed by its CA, its subject, exactly its SANs, its usages, its key 0600 and its own.
fn certificates_match_the_matrix(inv_path: &Path, pki: &Path) {
    let inv = hardway::inventory::load(inv_path).unwrap();
    let specs = hardway::pki::matrix(&inv);
    assert!(specs.len() > 10, "the example needs many certificates: {}", specs.len());
    for spec in &specs {
        let ca = hardway::pki::CAS.iter().find(|c| c.id == spec.ca).unwrap();
        let (crt, key) = (pki.join(format!("{}.crt", spec.name)), pki.join(format!("{}.key", spec.name)));
        let verified = ok(Command::new("openssl").arg("verify").arg("-CAfile").arg(pki.join(format!("{}.crt", ca.file))).arg(&crt));
        assert!(verified.trim_end().ends_with(": OK"), "{}: {verified}", spec.name);
        let text = openssl_text(&crt);
        // The subject's attributes, in whatever order the tool wrote them.
        let subject: std::collections::BTreeSet<&str> =
            text.lines().find_map(|l| l.strip_prefix("subject=")).unwrap_or_default().split(',').collect();
        let want_subject: std::collections::BTreeSet<String> =
            std::iter::once(format!("CN={}", spec.cn)).chain(spec.orgs.iter().map(|o| format!("O={o}"))).collect();
        assert_eq!(subject, want_subject.iter().map(String::as_str).collect(), "{}: {text}", spec.name);
        assert!(text.contains("CA:FALSE"), "{}: {text}", spec.name);
        // openssl prints SANs as "DNS:x, IP Address:y"; the matrix's are the exact set.
        let have: std::collections::BTreeSet<String> = text
            .lines()
            .skip_while(|l| !l.contains("Subject Alternative Name"))
            .nth(1)
            .map(|l| l.split(", ").map(|s| s.trim().replace("IP Address:", "IP:")).collect())
            .unwrap_or_default();
        let want: std::collections::BTreeSet<String> = spec.sans.iter().map(|s| s.to_string()).collect();
        assert_eq!(have, want, "{}: {text}", spec.name);
        let usages = match spec.usage {
            hardway::pki::Usage::Client => "TLS Web Client Authentication",
            hardway::pki::Usage::Server => "TLS Web Server Authentication",
            hardway::pki::Usage::ServerAndClient => "TLS Web Server Authentication, TLS Web Client Authentication",
        };
        assert!(text.contains(usages), "{}: {text}", spec.name);
        assert_eq!(mode(&key), 0o600, "{}", key.display());
        assert_eq!(public_key(&["pkey", "-pubout", "-in"], &key), public_key(&["x509", "-noout", "-pubkey", "-in"], &crt), "{}: key and certificate differ", spec.name);
    }
    for ca in hardway::pki::CAS.iter().filter(|c| inv.addons.aggregation || !c.aggregation_only) {
        assert!(openssl_text(&pki.join(format!("{}.crt", ca.file))).contains("CA:TRUE"), "{}", ca.file);
        assert_eq!(mode(&pki.join(format!("{}.key", ca.file))), 0o600);
    }
    assert_eq!(mode(&pki.join("sa.key")), 0o600);
    assert_eq!(mode(&pki.join("encryption.key")), 0o600);
    // hardway's own reading of the same directory: nothing differs from what it would make.
    let o = run(hardway().args(["pki", "check", "-i"]).arg(inv_path).arg("--pki").arg(pki));
    assert!(o.status.success(), "pki check:\n{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
}

fn certificate_walkthrough(tool: &str) {
    require("openssl", "openssl");
    if tool == "cfssl" {
        require("cfssl", "golang-cfssl");
        require("cfssljson", "golang-cfssl");
    }
    let dir = tempfile::tempdir().unwrap();
    let script = explain(&example_inventory(), &["--phase", "pki", "--tool", tool], dir.path());
    let work = dir.path().join("work");
    run_walkthrough(&script, &work);
    certificates_match_the_matrix(&example_inventory(), &work.join("pki"));
    // Run again, it keeps what it made.
    let before = std::fs::read(work.join("pki/etcd/ca.key")).unwrap();
    run_walkthrough(&script, &work);
    assert_eq!(std::fs::read(work.join("pki/etcd/ca.key")).unwrap(), before, "a second run replaced a key");
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
        assert!(text.contains(&format!("# Phase {phase}: ")), "no phase {phase}");
    }
    // From hardway's tables: the kubeconfigs, the units, the addons.
    assert!(text.contains("kubectl config set-cluster systemv --certificate-authority=pki/ca.crt --embed-certs=true --server=https://192.168.96.7:6443 --kubeconfig=kubeconfigs/kube-proxy.kubeconfig"));
    assert!(text.contains("kubectl config set-credentials system:node:kworker1 --client-certificate=pki/kubelet-kworker1.crt"));
    assert!(text.contains("--server=https://127.0.0.1:6443 --kubeconfig=kubeconfigs/kube-scheduler-local.kubeconfig"));
    assert!(text.contains("systemctl enable kube-apiserver kube-controller-manager kube-scheduler"));
    assert!(text.contains("install -D -o root -g root -m 600 hardway-upload/etc/kubernetes/encryption-config.yaml /etc/kubernetes/encryption-config.yaml"));
    // The encryption key reaches its config through a variable, not a command line.
    // (Its first line: after a rotation the file names the key on a second line.)
    assert!(text.contains("ENCRYPTION_KEY=$(sed -n 1p pki/encryption.key)") && text.contains("secret: ${ENCRYPTION_KEY}"));
    assert!(text.contains("- name: ${ENCRYPTION_KEY_NAME}"));
    assert!(text.contains("rollout status deployment/coredns"));
    // An unknown part is refused, naming the known ones.
    let o = run(hardway().arg("explain").arg("-i").arg(example_inventory()).args(["--phase", "etcd,nope"]));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown part \"nope\": one of pki, files, etcd, lb, control-plane, workers, addons"));
}

/// On a lab (in a module of that name, so `--skip lab::` leaves it out with the other lab tests).
mod lab {
    use super::*;

    #[test]
    fn walkthrough_of_etcd_and_lb_with_openssl_builds_what_verify_passes() {
        walkthrough_of_etcd_and_lb("openssl");
    }

    #[test]
    fn walkthrough_of_etcd_and_lb_with_cfssl_builds_what_verify_passes() {
        require("cfssl", "golang-cfssl");
        walkthrough_of_etcd_and_lb("cfssl");
    }

    /// The walkthrough of the etcd and lb phases, run on a fresh lab by bash with ssh and scp:
    /// `hardway verify` then passes, every etcd and HAProxy check included.
    fn walkthrough_of_etcd_and_lb(tool: &str) {
        require("etcdctl", "etcd-client");
        let t = crate::common::lab::boot(&format!("/run/hardway/test-explain-{tool}"));
        // The lab's own known_hosts: the walkthrough checks host keys strictly.
        let inv = t.dir.path().join("walk.toml");
        let text = t.inv_text.replace(&t.dir.path().join("known_hosts").display().to_string(), &t.known_hosts.display().to_string());
        std::fs::write(&inv, text).unwrap();
        let script = explain(&inv, &["--phase", "etcd,lb", "--tool", tool], t.dir.path());
        let work = t.dir.path().join("walk");
        let out = run_walkthrough(&script, &work);
        // The walkthrough's own check printed the members it waited for.
        for (m, ip) in [("lab-m1", "10.213.0.11"), ("lab-m2", "10.213.0.12"), ("lab-m3", "10.213.0.13")] {
            assert!(out.contains(&format!("| started | {m} | https://{ip}:2380 |")), "etcdctl member list: {out}");
        }
        let pki = work.join("pki");
        let o = run(hardway().arg("verify").arg("-i").arg(&inv).arg("--pki").arg(&pki).args(["--output", "json"]));
        let cs: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
        let not_pass: Vec<&serde_json::Value> = cs.iter().filter(|c| c["status"] == "FAIL" || c["status"] == "WARN").collect();
        assert!(not_pass.is_empty() && o.status.success(), "{not_pass:#?}");
        let status = |host: &str, check: &str| {
            cs.iter().find(|c| c["host"] == host && c["check"] == check).unwrap_or_else(|| panic!("no {check} on {host}"))["status"].clone()
        };
        for m in ["lab-m1", "lab-m2", "lab-m3"] {
            for c in ["unit etcd", "etcd member", "cert etcd server", "cert etcd peer"] {
                assert_eq!(status(m, c), "PASS", "{m} {c}");
            }
            // The key is where hardway puts it, 0600, owned by root.
            assert_eq!(t.ssh_ok(m, "stat -c '%a %U' /etc/etcd/pki/server.key"), "600 root");
            // The hosts block was merged.
            assert!(t.ssh_ok(m, "cat /etc/hosts").contains("# BEGIN hardway lab"));
        }
        for c in ["etcd leader", "etcd membership", "etcd alarms"] {
            assert_eq!(status("etcd", c), "PASS", "{c}");
        }
        assert_eq!(status("lab-lb", "unit haproxy"), "PASS");
        assert_eq!(status("lab-lb", "haproxy config"), "PASS");
        // And hardway finds nothing to change in what the walkthrough placed: a deploy's dry run of
        // the same phases with the same PKI sends no file. Deploy reads a whole PKI: the pki part
        // of the walkthrough adds what etcd and lb did not need and keeps the rest.
        let etcd_ca = std::fs::read(pki.join("etcd/ca.crt")).unwrap();
        let dir = t.dir.path().join("pki-part");
        std::fs::create_dir_all(&dir).unwrap();
        run_walkthrough(&explain(&inv, &["--phase", "pki", "--tool", tool], &dir), &work);
        assert_eq!(std::fs::read(pki.join("etcd/ca.crt")).unwrap(), etcd_ca, "the pki part replaced the etcd CA");
        let o = run(hardway().arg("deploy").arg(&inv).arg("--pki").arg(&pki).args(["--phases", "etcd,lb", "--dry-run"]));
        let plan = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(o.status.success(), "{plan}\n{}", String::from_utf8_lossy(&o.stderr));
        for n in ["lab-m1", "lab-m2", "lab-m3", "lab-lb", "lab-w1"] {
            assert!(plan.contains(&format!("{n}: 0 to change")), "files the walkthrough placed otherwise than hardway would:\n{plan}");
        }
    }
}
