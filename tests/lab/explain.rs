//! `hardway explain` on a fresh lab: the walkthrough's etcd and lb phases, run by bash, build a
//! cluster that `hardway verify` passes. Its certificate part is tested in the `it` binary.

use crate::common::*;

/// On a lab.
mod lab {
    use super::*;
    use crate::common::lab::{place, verify_checks};

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
        let text = t.inv_text.replace(
            &t.dir.path().join("known_hosts").display().to_string(),
            &t.known_hosts.display().to_string(),
        );
        std::fs::write(&inv, text).unwrap();
        let script = explain(&inv, &["--phase", "etcd,lb", "--tool", tool], t.dir.path());
        let work = t.dir.path().join("walk");
        let out = run_walkthrough(&script, &work);
        // The walkthrough's own check printed the members it waited for.
        for (m, ip) in [
            ("lab-m1", "10.213.0.11"),
            ("lab-m2", "10.213.0.12"),
            ("lab-m3", "10.213.0.13"),
        ] {
            assert!(
                out.contains(&format!("| started | {m} | https://{ip}:2380 |")),
                "etcdctl member list: {out}"
            );
        }
        let pki = work.join("pki");
        let o = run(hardway()
            .arg("verify")
            .arg("-i")
            .arg(&inv)
            .arg("--pki")
            .arg(&pki)
            .args(["--output", "json"]));
        let (_, cs) = verify_checks(&o);
        let not_pass: Vec<&serde_json::Value> = cs
            .iter()
            .filter(|c| c["status"] == "FAIL" || c["status"] == "WARN")
            .collect();
        assert!(not_pass.is_empty() && o.status.success(), "{not_pass:#?}");
        let status = |host: &str, check: &str| {
            cs.iter()
                .find(|c| place(c) == host && c["check"] == check)
                .unwrap_or_else(|| panic!("no {check} on {host}"))["status"]
                .clone()
        };
        for m in ["lab-m1", "lab-m2", "lab-m3"] {
            for c in [
                "unit etcd",
                "etcd member",
                "cert etcd server",
                "cert etcd peer",
            ] {
                assert_eq!(status(m, c), "PASS", "{m} {c}");
            }
            // The key is where hardway puts it, 0600, owned by root.
            assert_eq!(
                t.ssh_ok(m, "stat -c '%a %U' /etc/etcd/pki/server.key"),
                "600 root"
            );
            // The hosts block was merged.
            assert!(
                t.ssh_ok(m, "cat /etc/hosts")
                    .contains("# BEGIN hardway lab")
            );
        }
        for c in ["etcd leader", "etcd membership", "etcd alarms"] {
            assert_eq!(status("cluster", c), "PASS", "{c}");
        }
        assert_eq!(status("lab-lb", "unit haproxy"), "PASS");
        assert_eq!(status("lab-lb", "haproxy config"), "PASS");
        // And hardway finds nothing to change in what the walkthrough placed: a deploy's dry run of
        // the same phases with the same PKI sends no file. Deploy reads a whole PKI: the pki part
        // of the walkthrough adds what etcd and lb did not need and keeps the rest.
        let etcd_ca = std::fs::read(pki.join("etcd/ca.crt")).unwrap();
        let dir = t.dir.path().join("pki-part");
        std::fs::create_dir_all(&dir).unwrap();
        run_walkthrough(
            &explain(&inv, &["--phase", "pki", "--tool", tool], &dir),
            &work,
        );
        assert_eq!(
            std::fs::read(pki.join("etcd/ca.crt")).unwrap(),
            etcd_ca,
            "the pki part replaced the etcd CA"
        );
        let o = run(hardway()
            .arg("deploy")
            .arg(&inv)
            .arg("--pki")
            .arg(&pki)
            .args(["--phases", "etcd,lb", "--dry-run"]));
        let plan = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(
            o.status.success(),
            "{plan}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        for n in ["lab-m1", "lab-m2", "lab-m3", "lab-lb", "lab-w1"] {
            assert!(
                plan.contains(&format!("{n}: 0 to change")),
                "files the walkthrough placed otherwise than hardway would:\n{plan}"
            );
        }
    }
}
