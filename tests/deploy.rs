//! `hardway deploy` against a real lab: systemd-nspawn machines on a bridge, each with its own
//! sshd, systemd, Debian's etcd and HAProxy (inventory/lab.toml: 3 masters, 1 lb, 1 worker).
//! One test function, so one lab at a time; the lab is torn down when it ends, pass or fail.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use hardway::{inventory, pki, probe};

const MASTERS: [&str; 3] = ["lab-m1", "lab-m2", "lab-m3"];

fn host<'a>(report: &'a serde_json::Value, node: &str) -> &'a serde_json::Value {
    report["hosts"].as_array().unwrap().iter().find(|h| h["node"] == node).unwrap_or_else(|| panic!("{node} not in report"))
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

#[test]
fn deploy_etcd_and_lb_to_the_lab() {
    let ctx = common::lab::boot("/run/hardway/test-deploy");
    let inv_path = ctx.inv_path.clone();
    let text = ctx.inv_text.clone();
    let lab_inv = ctx.inv.clone();
    let dir = &ctx.dir;

    // 0. Deploy never creates a CA or keys: without a PKI it stops, naming what is missing.
    let o = ctx.deploy(&inv_path, &["--phases", "etcd,lb"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no ca.crt, ca.key") && err.contains("deploy uses the PKI that exists"), "{err}");
    assert!(!ctx.pki.exists(), "deploy created {}", ctx.pki.display());
    pki_generate(&inv_path, &ctx.pki);

    // 1. Unknown host keys are refused, with the way out in the message; nothing is touched.
    let o = ctx.deploy(&inv_path, &["--phases", "etcd,lb"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    for n in &lab_inv.nodes {
        assert!(err.contains(&format!("{} failed: unknown host key for {}", n.name, n.address)), "{err}");
    }
    assert!(err.contains("--accept-new-host-keys"), "{err}");
    assert_eq!(ctx.ssh_ok("lab-m1", "test -e /etc/etcd && echo yes || echo no"), "no");

    // 2. --dry-run shows the plan and leaves every node untouched.
    let o = ctx.deploy(&inv_path, &["--phases", "etcd,lb", "--dry-run", "--accept-new-host-keys"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("lab-m1: 6 to change") && out.contains("create /etc/etcd/pki/server.key (600)"), "{out}");
    assert!(out.contains("restart etcd") && out.contains("restart haproxy") && out.contains("dry run: nothing was changed"), "{out}");
    for n in MASTERS {
        assert_eq!(ctx.ssh_ok(n, "test -e /etc/etcd && echo yes || echo no"), "no", "dry run touched {n}");
        assert_ne!(ctx.ssh(n, "systemctl is-active etcd").stdout, b"active\n");
    }
    // Debian's package ships a haproxy.cfg; ours comes with its own unit, which must not be there.
    assert_eq!(ctx.ssh_ok("lab-lb", "test -e /etc/systemd/system/haproxy.service && echo yes || echo no"), "no");

    // 2b. All phases: the lab has no Kubernetes binaries, so preflight stops everything and
    // says what is missing where, before touching any node.
    let o = ctx.deploy(&inv_path, &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("preflight failed; nothing was changed"), "{err}");
    for line in [
        "lab-m1: /usr/bin/kube-apiserver (phase control-plane)",
        "lab-m3: /usr/bin/kube-scheduler (phase control-plane)",
        "lab-w1: /usr/bin/kubelet (phase workers)",
        "lab-w1: /usr/bin/containerd (phase workers)",
        "lab-m1: /usr/bin/kubectl (phase addons)",
    ] {
        assert!(err.contains(line), "missing {line:?} in:\n{err}");
    }
    assert!(!err.contains("/usr/bin/etcd (phase etcd)"), "etcd is in the lab image:\n{err}");
    assert_eq!(ctx.ssh_ok("lab-m1", "test -e /etc/etcd && echo yes || echo no"), "no");

    // 2c. A port the lb phase needs, held by another program: preflight names it and stops.
    ctx.ssh_ok("lab-lb", "systemd-run --quiet --unit=squatter perl -MIO::Socket::INET -e 'my $s = IO::Socket::INET->new(LocalPort => 6443, Listen => 1, ReuseAddr => 1) or die; sleep 600'");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ctx.ssh_ok("lab-lb", "ss -Htln 'sport = :6443'").contains("6443") {
        assert!(Instant::now() < deadline, "the squatter never listened");
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = ctx.deploy(&inv_path, &["--phases", "etcd,lb"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("lab-lb: port 6443 (phase lb) is held by \"perl\", not by haproxy"), "{err}");
    assert_eq!(ctx.ssh_ok("lab-m1", "test -e /etc/etcd && echo yes || echo no"), "no");
    ctx.ssh_ok("lab-lb", "systemctl stop squatter");

    // 3. The real deploy: etcd with three members and one leader, haproxy on the lb node.
    let report = ctx.deploy_json(&inv_path, &["--phases", "etcd,lb"]);
    for n in MASTERS {
        assert_eq!(strings(&host(&report, n)["restarted"]), ["etcd"], "{n}");
    }
    assert_eq!(strings(&host(&report, "lab-lb")["restarted"]), ["haproxy"]);
    assert_eq!(host(&report, "lab-w1")["changed"], 0);

    let inv = inventory::load(&inv_path).unwrap();
    let pki = pki::load(&inv, &ctx.pki).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let net = probe::NetProbe::new(&inv, Some(probe::EtcdAuth::from_pki(&pki)), None);
    let members = rt.block_on(probe::cluster_status(&net, &inv.etcd_members(), Duration::from_secs(3)));
    assert_eq!(members.len(), 3);
    assert!(probe::healthy(&members), "{members:?}");
    let leaders: std::collections::BTreeSet<u64> = members.iter().filter_map(|m| m.leader).collect();
    assert_eq!(leaders.len(), 1, "{members:?}");

    let etcdctl = require("etcdctl", "etcd-client");
    let endpoints: Vec<String> = MASTERS.iter().map(|m| format!("https://{}:2379", ctx.addresses[*m])).collect();
    let etcd_cmd = |args: &[&str]| {
        ok(Command::new(&etcdctl)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .arg(format!("--cacert={}", ctx.pki.join("etcd/ca.crt").display()))
            .arg(format!("--cert={}", ctx.pki.join("etcd/healthcheck-client.crt").display()))
            .arg(format!("--key={}", ctx.pki.join("etcd/healthcheck-client.key").display()))
            .args(args))
    };
    let members_out = etcd_cmd(&["member", "list"]);
    assert_eq!(members_out.lines().count(), 3, "{members_out}");
    let health = run(Command::new(&etcdctl)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .arg(format!("--cacert={}", ctx.pki.join("etcd/ca.crt").display()))
        .arg(format!("--cert={}", ctx.pki.join("etcd/healthcheck-client.crt").display()))
        .arg(format!("--key={}", ctx.pki.join("etcd/healthcheck-client.key").display()))
        .args(["endpoint", "health"]));
    assert!(health.status.success());
    assert_eq!(String::from_utf8_lossy(&health.stderr).matches("is healthy").count() + String::from_utf8_lossy(&health.stdout).matches("is healthy").count(), 3);

    assert_eq!(ctx.ssh_ok("lab-lb", "systemctl is-active haproxy"), "active");
    ctx.ssh_ok("lab-lb", "haproxy -c -q -f /etc/haproxy/haproxy.cfg");
    let build = dir.path().join("build");
    ok(hardway().args(["render", "-i"]).arg(&inv_path).arg("--pki").arg(&ctx.pki).arg("--out").arg(&build));
    let local = ok(Command::new("sha256sum").arg(build.join("lab-lb/etc/haproxy/haproxy.cfg")));
    let remote = ctx.ssh_ok("lab-lb", "sha256sum /etc/haproxy/haproxy.cfg");
    assert_eq!(local.split_whitespace().next(), remote.split_whitespace().next(), "haproxy.cfg on the node differs");
    assert_eq!(ctx.ssh_ok("lab-m2", "stat -c '%a %U' /etc/etcd/pki/server.key"), "600 root");

    // 4. A second deploy changes nothing and restarts nothing.
    let since: BTreeMap<&str, String> =
        MASTERS.iter().map(|m| (*m, ctx.active_since(m, "etcd"))).chain([("lab-lb", ctx.active_since("lab-lb", "haproxy"))]).collect();
    let report = ctx.deploy_json(&inv_path, &["--phases", "etcd,lb"]);
    for h in report["hosts"].as_array().unwrap() {
        assert_eq!(h["changed"], 0, "{h}");
        assert!(h["restarted"].as_array().unwrap().is_empty(), "{h}");
    }
    for m in MASTERS {
        assert_eq!(ctx.active_since(m, "etcd"), since[m], "{m}: etcd restarted on a no-change deploy");
    }
    assert_eq!(ctx.active_since("lab-lb", "haproxy"), since["lab-lb"]);
    let o = ctx.deploy(&inv_path, &["--phases", "etcd,lb"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("0 changes, 0 restarts, 0 of 5 hosts failed"));

    // 5. A new SAN for lab-m1: only its etcd certificates are replaced, only its etcd restarts.
    let san_inv = dir.path().join("san.toml");
    std::fs::write(&san_inv, text.replacen("roles = [\"master\"]", "roles = [\"master\"]\nextra_sans = [\"etcd-1.lab.test\"]", 1)).unwrap();
    // Its dry run shows the re-issue and the two files, and changes neither the PKI nor a node.
    let pki_before = std::fs::read(ctx.pki.join("etcd/server-lab-m1.crt")).unwrap();
    let o = ctx.deploy(&san_inv, &["--phases", "etcd,lb", "--dry-run"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("pki: etcd/server-lab-m1: would be re-issued (SANs changed (+DNS:etcd-1.lab.test))"), "{out}");
    assert!(out.contains("lab-m1: 2 to change") && out.contains("change /etc/etcd/pki/server.crt"), "{out}");
    assert!(out.contains("lab-m2: 0 to change"), "{out}");
    assert_eq!(std::fs::read(ctx.pki.join("etcd/server-lab-m1.crt")).unwrap(), pki_before, "a dry run re-issued a certificate");
    assert_eq!(ctx.active_since("lab-m1", "etcd"), since["lab-m1"]);
    let report = ctx.deploy_json(&san_inv, &["--phases", "etcd,lb"]);
    let pki_changes = strings(&report["pki_changes"]);
    assert!(pki_changes.iter().any(|c| c.starts_with("etcd/server-lab-m1: re-issued (SANs changed (+DNS:etcd-1.lab.test))")), "{pki_changes:?}");
    let m1 = host(&report, "lab-m1");
    assert_eq!(m1["changed"], 2, "{m1}");
    assert_eq!(strings(&m1["restarted"]), ["etcd"]);
    let changed: Vec<String> = report["plan"]["hosts"]["lab-m1"]["changes"].as_array().unwrap().iter().map(|c| c["path"].as_str().unwrap().to_string()).collect();
    assert_eq!(changed, ["/etc/etcd/pki/peer.crt", "/etc/etcd/pki/server.crt"]);
    for n in ["lab-m2", "lab-m3", "lab-lb", "lab-w1"] {
        assert_eq!(host(&report, n)["changed"], 0, "{n}");
        assert!(host(&report, n)["restarted"].as_array().unwrap().is_empty(), "{n}");
    }
    assert_ne!(ctx.active_since("lab-m1", "etcd"), since["lab-m1"], "lab-m1's etcd was not restarted");
    for m in ["lab-m2", "lab-m3"] {
        assert_eq!(ctx.active_since(m, "etcd"), since[m], "{m} restarted for lab-m1's SAN");
    }
    assert_eq!(ctx.active_since("lab-lb", "haproxy"), since["lab-lb"]);
    let o = ok(Command::new("openssl").args(["s_client", "-connect"]).arg(format!("{}:2379", ctx.addresses["lab-m1"])).arg("-CAfile").arg(ctx.pki.join("etcd/ca.crt")).arg("-cert").arg(ctx.pki.join("etcd/healthcheck-client.crt")).arg("-key").arg(ctx.pki.join("etcd/healthcheck-client.key")).arg("-verify_hostname").arg("etcd-1.lab.test").stdin(std::process::Stdio::null()));
    assert!(o.contains("Verify return code: 0 (ok)"), "lab-m1 does not serve the new certificate:\n{o}");

    // 5b. Through a bastion: lab-lb is the jump host; every node's sshd sees the connection come
    // from lab-lb's address (the harness itself connects from the bridge address, .1).
    let via_lb = format!("Accepted publickey for root from {} ", ctx.addresses["lab-lb"]);
    let count = |n: &str| ctx.ssh_ok(n, &format!("journalctl -u ssh --no-pager -o cat | grep -c '{via_lb}' || true")).parse::<u32>().unwrap();
    let before: Vec<u32> = ["lab-m2", "lab-w1"].iter().map(|n| count(n)).collect();
    let bastion_inv = dir.path().join("bastion.toml");
    std::fs::write(&bastion_inv, std::fs::read_to_string(&san_inv).unwrap().replacen("[ssh]\n", &format!("[ssh]\nbastion = \"root@{}:22\"\n", ctx.addresses["lab-lb"]), 1)).unwrap();
    let report = ctx.deploy_json(&bastion_inv, &["--phases", "etcd,lb"]);
    for h in report["hosts"].as_array().unwrap() {
        assert_eq!(h["ok"], true, "{h}");
        assert_eq!(h["changed"], 0, "{h}");
    }
    let after: Vec<u32> = ["lab-m2", "lab-w1"].iter().map(|n| count(n)).collect();
    assert!(after[0] > before[0] && after[1] > before[1], "no SSH login came through lab-lb: {before:?} -> {after:?}");

    // 6. A stopped node: a clear error for it, the others complete.
    let _ = ctx.ssh("lab-w1", "systemctl poweroff");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect_timeout(&format!("{}:22", ctx.addresses["lab-w1"]).parse().unwrap(), Duration::from_secs(1)).is_ok() {
        assert!(Instant::now() < deadline, "lab-w1 did not stop");
        std::thread::sleep(Duration::from_millis(200));
    }
    let o = ctx.deploy(&san_inv, &["--phases", "etcd,lb"]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("lab-w1 failed: cannot connect to {}:22", ctx.addresses["lab-w1"])), "{err}");
    assert!(out.contains("1 of 5 hosts failed"), "{out}");
    for n in ["lab-m1", "lab-m2", "lab-m3", "lab-lb"] {
        assert!(out.lines().any(|l| l.starts_with(n) && l.contains(" ok ")), "{n} did not complete:\n{out}");
    }

    // 7. etcd that cannot become healthy: deploy waits until its deadline, then names each
    // member's state and shows the end of its journal.
    ctx.ssh_ok("lab-m3", "systemctl stop etcd && mv /var/lib/etcd /var/lib/etcd.moved && touch /var/lib/etcd");
    let o = ctx.deploy(&san_inv, &["--phases", "etcd", "--etcd-timeout", "5"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("lab-m3 failed: etcd not healthy within 5 s"), "{err}");
    assert!(err.contains("lab-m3: etcd is ") && err.contains("--- journal of etcd:"), "{err}");
    assert!(err.contains("lab-m1 (10.213.0.11): member"), "the members that answer are listed: {err}");
}
