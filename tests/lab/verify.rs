//! `hardway verify` on a real lab: all PASS after a deploy, then one fault at a time, each of
//! which must be named; and a cluster whose etcd was built by hand with openssl.

use std::time::{Duration, Instant};

use crate::common::lab::{TestLab, place, verify_checks};
use crate::common::*;

fn checks(t: &TestLab, args: &[&str]) -> (i32, Vec<serde_json::Value>) {
    let o = t.verify(&[args, &["--output", "json"]].concat());
    (o.status.code().unwrap_or(-1), verify_checks(&o).1)
}

fn find<'a>(cs: &'a [serde_json::Value], host: &str, check: &str) -> &'a serde_json::Value {
    cs.iter()
        .find(|c| place(c) == host && c["check"] == check)
        .unwrap_or_else(|| panic!("no check {check:?} for {host} in {cs:#?}"))
}

fn with_status<'a>(cs: &'a [serde_json::Value], status: &str) -> Vec<&'a serde_json::Value> {
    cs.iter().filter(|c| c["status"] == status).collect()
}

/// Polls verify until `done` holds for its checks, or fails after `secs`.
fn verify_until(
    t: &TestLab,
    args: &[&str],
    secs: u64,
    done: impl Fn(i32, &[serde_json::Value]) -> bool,
) -> (i32, Vec<serde_json::Value>) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (code, cs) = checks(t, args);
        if done(code, &cs) {
            return (code, cs);
        }
        let not_pass: Vec<&serde_json::Value> = cs
            .iter()
            .filter(|c| c["status"] != "PASS" && c["status"] != "SKIP")
            .collect();
        assert!(
            Instant::now() < deadline,
            "verify did not reach the expected state in {secs} s (exit {code}): {not_pass:#?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn verify_a_deployed_lab_then_break_it_then_one_built_by_hand() {
    let t = crate::common::lab::boot("/run/hardway/test-verify");
    let pki = t.pki.to_str().unwrap().to_string();
    pki_generate(&t.inv_path, &t.pki);
    t.deploy_json(
        &t.inv_path.clone(),
        &["--phases", "etcd,lb", "--accept-new-host-keys"],
    );
    everything_passes_after_a_deploy(&t, &pki);
    a_stopped_member_fails_and_quorum_is_reported(&t, &pki);
    a_certificate_without_its_ip_is_named(&t, &pki);
    a_readable_key_is_named(&t, &pki);
    the_api_servers_are_checked_through_haproxy(&t, &pki);
    an_etcd_built_by_hand_is_judged_by_its_own_units(&t);
}

/// A certificate for `cn` with `key`, signed by `ca` (certificate, key) with the extensions in
/// `work/ext`, as a student would make one with openssl; its PEM.
fn sign(
    work: &std::path::Path,
    cn: &str,
    key: &std::path::Path,
    ca: (&std::path::Path, &std::path::Path),
) -> Vec<u8> {
    let (csr, crt) = (work.join("csr"), work.join("cert.pem"));
    ok(std::process::Command::new("openssl")
        .args(["req", "-new", "-subj", &format!("/CN={cn}"), "-key"])
        .arg(key)
        .arg("-out")
        .arg(&csr));
    ok(std::process::Command::new("openssl")
        .args(["x509", "-req", "-days", "30", "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(ca.0)
        .arg("-CAkey")
        .arg(ca.1)
        .arg("-CAcreateserial")
        .arg("-extfile")
        .arg(work.join("ext"))
        .arg("-out")
        .arg(&crt));
    std::fs::read(crt).unwrap()
}

/// All PASS after a deploy (the Kubernetes components are SKIPped: the lab has no binaries).
fn everything_passes_after_a_deploy(t: &TestLab, pki: &str) {
    let text = t.verify(&["--pki", pki]);
    let out = String::from_utf8_lossy(&text.stdout).to_string();
    assert_eq!(
        text.status.code(),
        Some(0),
        "{out}\n{}",
        String::from_utf8_lossy(&text.stderr)
    );
    let (code, cs) = checks(t, &["--pki", pki]);
    assert_eq!(code, 0);
    assert!(
        with_status(&cs, "FAIL").is_empty() && with_status(&cs, "WARN").is_empty(),
        "{cs:#?}"
    );
    for m in ["lab-m1", "lab-m2", "lab-m3"] {
        for c in [
            "ssh",
            "unit etcd",
            "etcd member",
            "cert etcd server",
            "cert etcd peer",
        ] {
            assert_eq!(find(&cs, m, c)["status"], "PASS", "{m} {c}");
        }
        assert_eq!(find(&cs, m, "unit kube-apiserver")["status"], "SKIP");
        assert!(
            find(&cs, m, "unit kube-apiserver")["detail"]
                .as_str()
                .unwrap()
                .contains("not deployed")
        );
    }
    for c in [
        "etcd leader",
        "etcd membership",
        "etcd alarms",
        "etcd raft index",
    ] {
        assert_eq!(find(&cs, "cluster", c)["status"], "PASS", "{c}");
    }
    assert_eq!(find(&cs, "lab-lb", "unit haproxy")["status"], "PASS");
    assert_eq!(find(&cs, "lab-lb", "haproxy config")["status"], "PASS");
    let backend = find(&cs, "lab-lb", "haproxy backend lab-m1");
    assert_eq!(backend["status"], "SKIP", "{backend}");
    // The state comes from the stats socket: DOWN, or "UP 1/3" while the first checks fail.
    let detail = backend["detail"].as_str().unwrap();
    assert!(
        (detail.starts_with("DOWN") || detail.starts_with("UP "))
            && detail.ends_with("kube-apiserver is not deployed on lab-m1"),
        "{backend}"
    );
    // The text report has the same checks, sorted by host then check (a SKIP said alike on
    // several hosts is one line naming them), and the JSON has every one.
    let alike: std::collections::BTreeSet<String> = cs
        .iter()
        .filter(|c| c["status"] == "SKIP")
        .map(|c| format!("{}|{}|{}", c["check"], c["detail"], c["hint"]))
        .collect();
    let lines = cs.iter().filter(|c| c["status"] != "SKIP").count() + alike.len();
    assert_eq!(
        out.lines()
            .filter(|l| ["PASS", "WARN", "FAIL", "SKIP"]
                .iter()
                .any(|s| l.starts_with(s)))
            .count(),
        lines,
        "{out}"
    );
    let keys: Vec<(String, String)> = cs
        .iter()
        .map(|c| (place(c).into(), c["check"].as_str().unwrap().into()))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert!(
        out.contains(&format!(
            "{} PASS, 0 WARN, 0 FAIL",
            with_status(&cs, "PASS").len()
        )),
        "{out}"
    );
}

/// One etcd member down: that member FAILs, quorum is reported held, exit 1.
fn a_stopped_member_fails_and_quorum_is_reported(t: &TestLab, pki: &str) {
    t.ssh_ok("lab-m2", "systemctl stop etcd");
    let (code, cs) = checks(t, &["--pki", pki]);
    assert_eq!(code, 1);
    let m2 = find(&cs, "lab-m2", "etcd member");
    assert_eq!(m2["status"], "FAIL");
    assert!(
        m2["detail"]
            .as_str()
            .unwrap()
            .contains("quorum held: 2 of 3 members answer, quorum is 2"),
        "{m2}"
    );
    assert!(
        m2["hint"].as_str().unwrap().contains("journalctl -u etcd"),
        "{m2}"
    );
    assert_eq!(find(&cs, "lab-m2", "unit etcd")["status"], "FAIL");
    assert_eq!(find(&cs, "lab-m1", "etcd member")["status"], "PASS");
    assert_eq!(find(&cs, "cluster", "etcd leader")["status"], "PASS");
    t.ssh_ok("lab-m2", "systemctl start etcd");
    verify_until(t, &["--pki", pki], 60, |code, _| code == 0);
}

/// An etcd server certificate without the member's IP: FAIL naming the file and the SAN.
fn a_certificate_without_its_ip_is_named(t: &TestLab, pki: &str) {
    let work = t.dir.path().join("bad-cert");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("ext"), "subjectAltName=DNS:lab-m3,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n").unwrap();
    let bad = sign(
        &work,
        "lab-m3",
        &t.pki.join("etcd/server-lab-m3.key"),
        (&t.pki.join("etcd/ca.crt"), &t.pki.join("etcd/ca.key")),
    );
    let o = t.ssh_with_input("lab-m3", "cat > /etc/etcd/pki/server.crt", &bad);
    assert!(o.status.success());
    let (code, cs) = checks(t, &["--pki", pki]);
    assert_eq!(code, 1);
    let c = find(&cs, "lab-m3", "cert etcd server");
    assert_eq!(c["status"], "FAIL", "{c}");
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .contains("/etc/etcd/pki/server.crt lacks SAN IP:10.213.0.13"),
        "{c}"
    );
    assert_eq!(find(&cs, "lab-m3", "cert etcd peer")["status"], "PASS");
    // A redeploy puts the right certificate back.
    t.deploy_json(&t.inv_path.clone(), &["--phases", "etcd,lb"]);
    verify_until(t, &["--pki", pki], 60, |code, _| code == 0);
}

/// A private key readable by everyone: FAIL with the fix.
fn a_readable_key_is_named(t: &TestLab, pki: &str) {
    t.ssh_ok("lab-m1", "chmod 644 /etc/etcd/pki/peer.key");
    let (code, cs) = checks(t, &["--pki", pki]);
    assert_eq!(code, 1);
    let c = find(&cs, "lab-m1", "cert etcd peer");
    assert_eq!(c["status"], "FAIL");
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .contains("key /etc/etcd/pki/peer.key is 644 root"),
        "{c}"
    );
    assert!(
        c["hint"]
            .as_str()
            .unwrap()
            .contains("chmod 600 /etc/etcd/pki/peer.key"),
        "{c}"
    );
    t.ssh_ok("lab-m1", "chmod 600 /etc/etcd/pki/peer.key");
}

/// The API server checks, end to end through HAProxy, with the control-plane phase deployed
/// for real, with the binaries of `scripts/build` (Kubernetes 1.37) uploaded from local_dir.
fn the_api_servers_are_checked_through_haproxy(t: &TestLab, pki: &str) {
    let cp_inv = t.control_plane_inventory();
    let report = t.deploy_json(&cp_inv, &["--phases", "etcd,lb,control-plane"]);
    let m1 = report["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["node"] == "lab-m1")
        .unwrap();
    let restarted: Vec<&str> = m1["restarted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert_eq!(
        restarted,
        [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler"
        ],
        "{m1}"
    );
    let cp_args = ["-i", cp_inv.to_str().unwrap(), "--pki", pki];
    let cp_verify = |_: &TestLab| {
        let o = run(hardway()
            .arg("verify")
            .args(cp_args)
            .args(["--output", "json"]));
        (o.status.code().unwrap_or(-1), verify_checks(&o).1)
    };
    // HAProxy brings a backend UP after two good checks, 2 s apart.
    let deadline = Instant::now() + Duration::from_secs(60);
    let cs = loop {
        let (code, cs) = cp_verify(t);
        if code == 0 {
            break cs;
        }
        assert!(
            Instant::now() < deadline,
            "verify never passed with the control plane up: {:#?}",
            with_status(&cs, "FAIL")
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    for m in ["lab-m1", "lab-m2", "lab-m3"] {
        for c in [
            "unit kube-apiserver",
            "api /livez",
            "api /readyz",
            "cert API server",
            "cert API server etcd client",
            "encryption config",
        ] {
            assert_eq!(
                find(&cs, m, c)["status"],
                "PASS",
                "{m} {c}: {}",
                find(&cs, m, c)
            );
        }
        assert_eq!(
            find(&cs, "lab-lb", &format!("haproxy backend {m}"))["detail"],
            "UP"
        );
    }
    assert_eq!(
        find(&cs, "lab-m2", "encryption config")["detail"],
        "identical on all 3 masters"
    );
    assert_eq!(find(&cs, "lab-lb", "api /readyz")["status"], "PASS");
    assert_eq!(find(&cs, "lab-w1", "node Ready")["status"], "SKIP");
    // One API server down: its probes FAIL, HAProxy takes it out of rotation, the LB still answers.
    t.ssh_ok("lab-m2", "systemctl stop kube-apiserver");
    let deadline = Instant::now() + Duration::from_secs(60);
    let cs = loop {
        let (code, cs) = cp_verify(t);
        if code == 1
            && find(&cs, "lab-lb", "haproxy backend lab-m2")["detail"]
                .as_str()
                .unwrap()
                .starts_with("DOWN")
        {
            break cs;
        }
        assert!(
            Instant::now() < deadline,
            "HAProxy never marked lab-m2 DOWN: {:#?}",
            find(&cs, "lab-lb", "haproxy backend lab-m2")
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(find(&cs, "lab-m2", "api /livez")["status"], "FAIL");
    assert_eq!(find(&cs, "lab-m2", "unit kube-apiserver")["status"], "FAIL");
    assert_eq!(
        find(&cs, "lab-lb", "haproxy backend lab-m2")["status"],
        "FAIL"
    );
    assert_eq!(find(&cs, "lab-lb", "api /readyz")["status"], "PASS");
    for m in ["lab-m1", "lab-m2", "lab-m3"] {
        t.ssh_ok(m, "systemctl disable --now kube-apiserver kube-controller-manager kube-scheduler && rm /etc/systemd/system/kube-*.service && systemctl daemon-reload");
    }
}

/// Built by hand, the kubernetes-the-hard-way v1 way: hardway's etcd is removed and a student's
/// script sets up another one with its own CA, one `kubernetes.pem` per member with IP SANs
/// only, its own paths, data dir and ports; verify is given only the inventory, the CA and a
/// client cert, and judges the cluster by what its units configure.
fn an_etcd_built_by_hand_is_judged_by_its_own_units(t: &TestLab) {
    for m in ["lab-m1", "lab-m2", "lab-m3"] {
        t.ssh_ok(m, "systemctl disable --now etcd && rm -rf /etc/systemd/system/etcd.service /etc/etcd /var/lib/etcd && systemctl daemon-reload");
    }
    let hand = t.dir.path().join("hand");
    let members: Vec<String> = ["lab-m1", "lab-m2", "lab-m3"]
        .iter()
        .map(|m| format!("{m}={}", t.addresses[*m]))
        .collect();
    ok(std::process::Command::new("sh")
        .arg(repo().join("tests/fixtures/hand-built-etcd.sh"))
        .arg(&hand)
        .arg(&t.key)
        .arg(&t.known_hosts)
        .args(&members));
    let p = |f: &str| hand.join(f).to_str().unwrap().to_string();
    let args = [
        "--pki",
        "/nonexistent",
        "--etcd-ca",
        &p("ca.pem"),
        "--etcd-cert",
        &p("admin.pem"),
        "--etcd-key",
        &p("admin-key.pem"),
    ];
    // A Type=notify unit is `activating` until etcd reports ready, a little after the election.
    let (_, cs) = verify_until(t, &args, 90, |code, _| code == 0);
    assert!(with_status(&cs, "FAIL").is_empty(), "{cs:#?}");
    for m in ["lab-m1", "lab-m2", "lab-m3"] {
        for c in ["unit etcd", "etcd member"] {
            assert_eq!(
                find(&cs, m, c)["status"],
                "PASS",
                "{m} {c}: {:#}",
                find(&cs, m, c)
            );
        }
        // Every URL the unit configures uses an IP the certificate has; the member's name and
        // localhost, which hardway's certificates also carry, are only a warning.
        for c in ["cert etcd server", "cert etcd peer"] {
            let cert = find(&cs, m, c);
            assert_eq!(cert["status"], "WARN", "{m} {c}: {cert:#}");
            let detail = cert["detail"].as_str().unwrap();
            assert!(
                detail.starts_with("/etc/etcd/kubernetes.pem"),
                "paths come from the unit: {cert:#}"
            );
            assert!(
                detail.contains(&format!(
                    "lacks DNS:{m}, DNS:localhost, which no unit here uses"
                )),
                "{cert:#}"
            );
        }
        // Ports come from the unit too.
        let server = find(&cs, m, "cert etcd server")["detail"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            server.contains(&format!(
                "https://{m}:12379 or https://localhost:12379 would be refused"
            )),
            "{server}"
        );
        assert!(
            find(&cs, m, "cert etcd peer")["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("https://{m}:12380"))
        );
    }
    assert_eq!(
        find(&cs, "cluster", "etcd membership")["status"],
        "PASS",
        "peer URLs as the units advertise them"
    );
    assert_eq!(find(&cs, "cluster", "etcd leader")["status"], "PASS");

    // A certificate without the member's own IP, which its URLs use: FAIL, naming who uses it.
    let work = t.dir.path().join("hand-bad");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(
        work.join("ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    let bad = sign(
        &work,
        "lab-m3",
        &hand.join("lab-m3-key.pem"),
        (&hand.join("ca.pem"), &hand.join("ca-key.pem")),
    );
    let o = t.ssh_with_input("lab-m3", "cat > /etc/etcd/kubernetes.pem", &bad);
    assert!(o.status.success());
    let (code, cs) = checks(t, &args);
    assert_eq!(code, 1);
    for c in ["cert etcd server", "cert etcd peer"] {
        let cert = find(&cs, "lab-m3", c);
        assert_eq!(cert["status"], "FAIL", "{cert:#}");
        let detail = cert["detail"].as_str().unwrap();
        assert!(
            detail.contains("/etc/etcd/kubernetes.pem lacks SAN IP:10.213.0.13 ("),
            "{cert:#}"
        );
        assert!(
            detail.contains("the inventory's address of the node"),
            "{cert:#}"
        );
    }
    assert!(
        find(&cs, "lab-m3", "cert etcd server")["detail"]
            .as_str()
            .unwrap()
            .contains("--advertise-client-urls")
    );
    assert!(
        find(&cs, "lab-m3", "cert etcd peer")["detail"]
            .as_str()
            .unwrap()
            .contains("--initial-advertise-peer-urls")
    );
    assert_eq!(find(&cs, "lab-m1", "cert etcd server")["status"], "WARN");

    // And the same faults are found in it: a member down.
    t.ssh_ok("lab-m3", "systemctl stop etcd");
    let (code, cs) = checks(t, &args);
    assert_eq!(code, 1);
    assert_eq!(find(&cs, "lab-m3", "etcd member")["status"], "FAIL");
}

/// Boots a lab.
mod lab {
    #[test]
    fn verify_a_deployed_lab_then_break_it_then_one_built_by_hand() {
        super::verify_a_deployed_lab_then_break_it_then_one_built_by_hand()
    }
}
