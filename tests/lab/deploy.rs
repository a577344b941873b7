//! `hardway deploy` against a real lab: systemd-nspawn machines on a bridge, each with its own
//! sshd, systemd, Debian's etcd and HAProxy (tests/fixtures/lab-etcd.toml: 3 masters, 1 lb, 1 worker).
//! One test, its steps in order on one lab, torn down when it ends, pass or fail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::lab::TestLab;
use crate::common::*;
use hardway::{inventory, pki, probe};

const MASTERS: [&str; 3] = ["lab-m1", "lab-m2", "lab-m3"];
const ETCD_LB: [&str; 2] = ["--phases", "etcd,lb"];

fn host<'a>(report: &'a serde_json::Value, node: &str) -> &'a serde_json::Value {
    report["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["node"] == node)
        .unwrap_or_else(|| panic!("{node} not in report"))
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn etcd_exists(t: &TestLab, node: &str) -> bool {
    t.ssh_ok(node, "test -e /etc/etcd && echo yes || echo no") == "yes"
}

/// `etcdctl` against every member, with the PKI's health-check client.
fn etcdctl(t: &TestLab, args: &[&str]) -> std::process::Output {
    t.etcdctl(&MASTERS.map(|m| t.addresses[m].clone()), args)
}

/// When each etcd member and HAProxy last became active.
fn active_since(t: &TestLab) -> BTreeMap<&'static str, String> {
    MASTERS
        .iter()
        .map(|m| (*m, t.active_since(m, "etcd")))
        .chain([("lab-lb", t.active_since("lab-lb", "haproxy"))])
        .collect()
}

fn deploy_etcd_and_lb_to_the_lab() {
    let t = crate::common::lab::boot("/run/hardway/test-deploy");
    without_a_pki_nothing_is_created(&t);
    unknown_host_keys_are_refused(&t);
    a_dry_run_changes_nothing(&t);
    preflight_names_missing_binaries(&t);
    preflight_names_a_busy_port(&t);
    the_real_deploy_brings_up_etcd_and_haproxy(&t);
    a_second_deploy_restarts_nothing(&t);
    the_event_stream_and_the_log_account_for_everything_and_hold_no_secret(&t);
    a_dry_run_diff_shows_exactly_the_changed_lines(&t);
    a_user_whose_sudo_needs_a_password_deploys(&t);
    let san_inv = a_new_san_restarts_only_its_member(&t);
    a_bastion_carries_every_session(&t, &san_inv);
    a_stopped_node_fails_alone(&t, &san_inv);
    an_unhealthy_etcd_is_reported_member_by_member(&t, &san_inv);
}

/// Deploy never creates a CA or keys: without a PKI it stops, naming what is missing.
fn without_a_pki_nothing_is_created(t: &TestLab) {
    let o = t.deploy(&t.inv_path, &ETCD_LB);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no ca.crt, ca.key") && err.contains("deploy uses the PKI that exists"),
        "{err}"
    );
    assert!(!t.pki.exists(), "deploy created {}", t.pki.display());
    pki_generate(&t.inv_path, &t.pki);
}

/// Unknown host keys are refused, with the way out in the message; nothing is touched.
fn unknown_host_keys_are_refused(t: &TestLab) {
    let o = t.deploy(&t.inv_path, &ETCD_LB);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    for n in &t.inv.nodes {
        assert!(
            err.contains(&format!(
                "{} failed: unknown host key for {}",
                n.name, n.address
            )),
            "{err}"
        );
    }
    assert!(err.contains("--accept-new-host-keys"), "{err}");
    assert!(!etcd_exists(t, "lab-m1"));
}

/// --dry-run shows the plan and leaves every node untouched.
fn a_dry_run_changes_nothing(t: &TestLab) {
    let o = t.deploy(
        &t.inv_path,
        &["--phases", "etcd,lb", "--dry-run", "--accept-new-host-keys"],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("lab-m1: 7 to change")
            && out.contains("create /etc/etcd/pki/server.key (600)"),
        "{out}"
    );
    assert!(
        out.contains("restart etcd")
            && out.contains("restart haproxy")
            && out.contains("dry run: nothing was changed"),
        "{out}"
    );
    for n in MASTERS {
        assert!(!etcd_exists(t, n), "dry run touched {n}");
        assert_ne!(t.ssh(n, "systemctl is-active etcd").stdout, b"active\n");
    }
    // Debian's package ships a haproxy.cfg; ours comes with its own unit, which must not be there.
    assert_eq!(
        t.ssh_ok(
            "lab-lb",
            "test -e /etc/systemd/system/haproxy.service && echo yes || echo no"
        ),
        "no"
    );
}

/// All phases: the lab has no Kubernetes binaries, so preflight stops everything and says what
/// is missing where, before touching any node.
fn preflight_names_missing_binaries(t: &TestLab) {
    let o = t.deploy(&t.inv_path, &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("preflight failed; nothing was changed"),
        "{err}"
    );
    for line in [
        "lab-m1: /usr/bin/kube-apiserver (phase control-plane)",
        "lab-m3: /usr/bin/kube-scheduler (phase control-plane)",
        "lab-w1: /usr/bin/kubelet (phase workers)",
        "lab-m1: /usr/bin/kubectl (phase control-plane)",
    ] {
        assert!(err.contains(line), "missing {line:?} in:\n{err}");
    }
    assert!(
        !err.contains("/usr/bin/etcd (phase etcd)"),
        "etcd is in the lab image:\n{err}"
    );
    assert!(
        !err.contains("/usr/bin/containerd (phase workers)"),
        "containerd is in the lab image:\n{err}"
    );
    assert!(!etcd_exists(t, "lab-m1"));
}

/// A port the lb phase needs, held by another program: preflight names it and stops.
fn preflight_names_a_busy_port(t: &TestLab) {
    t.ssh_ok("lab-lb", "systemd-run --quiet --unit=squatter perl -MIO::Socket::INET -e 'my $s = IO::Socket::INET->new(LocalPort => 6443, Listen => 1, ReuseAddr => 1) or die; sleep 600'");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !t
        .ssh_ok("lab-lb", "ss -Htln 'sport = :6443'")
        .contains("6443")
    {
        assert!(Instant::now() < deadline, "the squatter never listened");
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = t.deploy(&t.inv_path, &ETCD_LB);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("lab-lb: port 6443 (phase lb) is held by \"perl\", not by haproxy"),
        "{err}"
    );
    assert!(!etcd_exists(t, "lab-m1"));
    t.ssh_ok("lab-lb", "systemctl stop squatter");
}

/// The real deploy: etcd with three members and one leader, HAProxy on the lb node, dropping
/// root, with the files render writes.
fn the_real_deploy_brings_up_etcd_and_haproxy(t: &TestLab) {
    let report = t.deploy_json(&t.inv_path, &ETCD_LB);
    for n in MASTERS {
        assert_eq!(strings(&host(&report, n)["restarted"]), ["etcd"], "{n}");
    }
    assert_eq!(strings(&host(&report, "lab-lb")["restarted"]), ["haproxy"]);
    assert_eq!(host(&report, "lab-w1")["changed"], 0);

    let inv = inventory::load(&t.inv_path).unwrap();
    let pki = pki::load(&inv, &t.pki).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let net = probe::NetProbe::new(&inv, Some(probe::EtcdAuth::from_pki(&pki)), None);
    let members = rt.block_on(probe::cluster_status(
        &net,
        &inv.etcd_members(),
        Duration::from_secs(3),
    ));
    assert_eq!(members.len(), 3);
    assert!(probe::healthy(&members), "{members:?}");

    let list = etcdctl(t, &["member", "list"]);
    assert!(list.status.success());
    assert_eq!(
        String::from_utf8_lossy(&list.stdout).lines().count(),
        3,
        "{list:?}"
    );
    let health = etcdctl(t, &["endpoint", "health"]);
    assert!(health.status.success());
    let said = text(&health);
    assert_eq!(said.matches("is healthy").count(), 3, "{said}");

    assert_eq!(t.ssh_ok("lab-lb", "systemctl is-active haproxy"), "active");
    t.ssh_ok("lab-lb", "haproxy -c -q -f /etc/haproxy/haproxy.cfg");
    // It dropped root after reading its certificates and binding.
    let users = t.ssh_ok("lab-lb", "ps -o user= -C haproxy | sort -u");
    assert!(
        users.lines().any(|u| u == "haproxy"),
        "haproxy runs as {users:?}"
    );
    let build = t.dir.path().join("build");
    ok(hardway()
        .args(["render", "-i"])
        .arg(&t.inv_path)
        .arg("--pki")
        .arg(&t.pki)
        .arg("--out")
        .arg(&build));
    let local = ok(Command::new("sha256sum").arg(build.join("lab-lb/etc/haproxy/haproxy.cfg")));
    let remote = t.ssh_ok("lab-lb", "sha256sum /etc/haproxy/haproxy.cfg");
    assert_eq!(
        local.split_whitespace().next(),
        remote.split_whitespace().next(),
        "haproxy.cfg on the node differs"
    );
    assert_eq!(
        t.ssh_ok("lab-m2", "stat -c '%a %U' /etc/etcd/pki/server.key"),
        "600 root"
    );
}

/// A second deploy changes nothing and restarts nothing.
fn a_second_deploy_restarts_nothing(t: &TestLab) {
    let since = active_since(t);
    let report = t.deploy_json(&t.inv_path, &ETCD_LB);
    for h in report["hosts"].as_array().unwrap() {
        assert_eq!(h["changed"], 0, "{h}");
        assert!(h["restarted"].as_array().unwrap().is_empty(), "{h}");
    }
    assert_eq!(
        active_since(t),
        since,
        "a unit restarted on a no-change deploy"
    );
    let o = t.deploy(&t.inv_path, &ETCD_LB);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("0 changes, 0 restarts, 0 of 5 hosts failed")
    );
}

/// Every secret in the PKI directory, as lines that must never appear in output or logs: each
/// base64 line of every private key, the encryption key.
fn secrets(t: &TestLab) -> Vec<String> {
    let mut out = Vec::new();
    for f in files_below(&t.pki) {
        let text = std::fs::read_to_string(t.pki.join(&f)).unwrap();
        if f.extension().is_some_and(|e| e == "key") {
            out.extend(
                text.lines()
                    .filter(|l| !l.starts_with("-----") && l.len() > 20)
                    .map(str::to_string),
            );
        } else if f.file_name().is_some_and(|n| n == "encryption.key") {
            out.push(text.trim().to_string());
        }
    }
    assert!(out.len() > 20, "the PKI has keys: {out:?}");
    out
}

/// `--output jsonl`: every line parses, the last is the summary, and there is an event for every
/// host in every phase. The run's log has every script and its output, and no secret.
fn the_event_stream_and_the_log_account_for_everything_and_hold_no_secret(t: &TestLab) {
    let log = t.dir.path().join("run.log");
    let o = t.deploy(
        &t.inv_path,
        &[
            "--phases",
            "files,etcd,lb",
            "--output",
            "jsonl",
            "--log-file",
            log.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.iter().all(|e| e["schema"] == 1
        && e["command"] == "deploy"
        && e["ts"].as_str().is_some_and(|t| t.ends_with('Z'))));
    let summary = lines.last().unwrap();
    assert_eq!(
        (summary["kind"].as_str(), summary["ok"].as_bool()),
        (Some("summary"), Some(true)),
        "{summary}"
    );
    for n in &t.inv.nodes {
        for phase in ["preflight", "files", "etcd", "lb"] {
            assert!(
                lines
                    .iter()
                    .any(|e| e["host"] == n.name.as_str() && e["phase"] == phase),
                "no event for {} in {phase}",
                n.name
            );
        }
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.starts_with("###### hardway ")
            && text.contains("inventory: ")
            && text.contains("sha256:"),
        "{text}"
    );
    assert!(
        text.contains("--- ") && text.contains("  > systemctl is-active"),
        "the scripts are not in the log"
    );
    assert_eq!(mode(&log), 0o600);
    for s in secrets(t) {
        assert!(!text.contains(&s), "the log holds key material");
    }
}

/// `--dry-run --diff` after a change of the load balancer's port: exactly the changed line.
fn a_dry_run_diff_shows_exactly_the_changed_lines(t: &TestLab) {
    let port_inv = t.dir.path().join("port.toml");
    std::fs::write(
        &port_inv,
        t.inv_text.replacen("port = 6443", "port = 6444", 1),
    )
    .unwrap();
    let o = t.deploy(&port_inv, &["--phases", "etcd,lb", "--dry-run", "--diff"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}
{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let changed: Vec<&str> = out
        .lines()
        .filter(|l| {
            (l.starts_with("+ ")
                || l.starts_with("- ")
                || l.starts_with("+    ")
                || l.starts_with("-    "))
                && !l.starts_with("+++")
                && !l.starts_with("---")
        })
        .collect();
    assert!(
        out.contains("=== lab-lb: /etc/haproxy/haproxy.cfg"),
        "{out}"
    );
    assert_eq!(changed, ["-    bind *:6443", "+    bind *:6444"], "{out}");
    for s in secrets(t) {
        assert!(!out.contains(&s), "a diff shows key material");
    }
}

/// A user whose sudo asks for a password: given once in HARDWAY_SUDO_PASSWORD, never on a
/// command line or in the log; a wrong one is refused and changes nothing.
fn a_user_whose_sudo_needs_a_password_deploys(t: &TestLab) {
    let password = "c0rrect-horse-Battery";
    for n in &t.inv.nodes {
        t.ssh_ok(&n.name, &format!(
            "id student >/dev/null 2>&1 || useradd -m -s /bin/sh student; echo 'student:{password}' | chpasswd;              echo 'student ALL=(ALL:ALL) ALL' > /etc/sudoers.d/student; chmod 440 /etc/sudoers.d/student;              install -d -m 700 -o student -g student ~student/.ssh; install -m 600 -o student -g student /root/.ssh/authorized_keys ~student/.ssh/"
        ));
    }
    // Something only root can fix.
    t.ssh_ok("lab-m2", "chmod 640 /etc/etcd/pki/server.key");
    let sudo_inv = t.dir.path().join("sudo.toml");
    std::fs::write(
        &sudo_inv,
        t.inv_text.replacen(
            "user = \"root\"",
            "user = \"student\"\nsudo = \"password\"",
            1,
        ),
    )
    .unwrap();
    let wrong = run(t
        .deploy_command(&sudo_inv, &["--phases", "etcd,lb"])
        .env("HARDWAY_SUDO_PASSWORD", "wrong"));
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("sudo refused the password"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    assert_eq!(
        t.ssh_ok("lab-m2", "stat -c %a /etc/etcd/pki/server.key"),
        "640"
    );
    let log = t.dir.path().join("sudo.log");
    let o = run(t
        .deploy_command(
            &sudo_inv,
            &["--phases", "etcd,lb", "--log-file", log.to_str().unwrap()],
        )
        .env("HARDWAY_SUDO_PASSWORD", password));
    assert!(
        o.status.success(),
        "{}
{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        t.ssh_ok("lab-m2", "stat -c '%a %U' /etc/etcd/pki/server.key"),
        "600 root"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(password), "the sudo password is in the log");
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains(password)
            && !String::from_utf8_lossy(&o.stderr).contains(password)
    );
    // The password never was an argument of a process on the node.
    let auth = t.ssh_ok(
        "lab-m2",
        "journalctl --no-pager -o cat | grep -c 'COMMAND=' || true",
    );
    assert!(auth.parse::<u32>().unwrap() > 0, "sudo was not used");
    assert_eq!(
        t.ssh_ok(
            "lab-m2",
            &format!("journalctl --no-pager -o cat | grep -c -F '{password}' || true")
        ),
        "0"
    );
}

/// A new SAN for lab-m1: only its etcd certificates are replaced, only its etcd restarts.
fn a_new_san_restarts_only_its_member(t: &TestLab) -> PathBuf {
    let since = active_since(t);
    let san_inv = t.dir.path().join("san.toml");
    std::fs::write(
        &san_inv,
        t.inv_text.replacen(
            "roles = [\"master\"]",
            "roles = [\"master\"]\nextra_sans = [\"etcd-1.lab.test\"]",
            1,
        ),
    )
    .unwrap();
    // Its dry run shows the re-issue and the two files, and changes neither the PKI nor a node.
    let pki_before = std::fs::read(t.pki.join("etcd/server-lab-m1.crt")).unwrap();
    let o = t.deploy(&san_inv, &["--phases", "etcd,lb", "--dry-run"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains(
            "pki: etcd/server-lab-m1: would be re-issued (SANs changed (+DNS:etcd-1.lab.test))"
        ),
        "{out}"
    );
    assert!(
        out.contains("lab-m1: 2 to change") && out.contains("change /etc/etcd/pki/server.crt"),
        "{out}"
    );
    assert!(out.contains("lab-m2: 0 to change"), "{out}");
    assert!(
        out.contains("etcd: restart etcd on lab-m1, one at a time"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(t.pki.join("etcd/server-lab-m1.crt")).unwrap(),
        pki_before,
        "a dry run re-issued a certificate"
    );
    assert_eq!(t.active_since("lab-m1", "etcd"), since["lab-m1"]);

    let report = t.deploy_json(&san_inv, &ETCD_LB);
    let pki_changes = strings(&report["pki_changes"]);
    assert!(
        pki_changes.iter().any(|c| c
            .starts_with("etcd/server-lab-m1: re-issued (SANs changed (+DNS:etcd-1.lab.test))")),
        "{pki_changes:?}"
    );
    let m1 = host(&report, "lab-m1");
    assert_eq!(m1["changed"], 2, "{m1}");
    assert_eq!(strings(&m1["restarted"]), ["etcd"]);
    let changed: Vec<String> = report["plan"]["hosts"]["lab-m1"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        changed,
        ["/etc/etcd/pki/peer.crt", "/etc/etcd/pki/server.crt"]
    );
    for n in ["lab-m2", "lab-m3", "lab-lb", "lab-w1"] {
        assert_eq!(host(&report, n)["changed"], 0, "{n}");
        assert!(
            host(&report, n)["restarted"].as_array().unwrap().is_empty(),
            "{n}"
        );
    }
    let after = active_since(t);
    assert_ne!(
        after["lab-m1"], since["lab-m1"],
        "lab-m1's etcd was not restarted"
    );
    for n in ["lab-m2", "lab-m3", "lab-lb"] {
        assert_eq!(after[n], since[n], "{n} restarted for lab-m1's SAN");
    }
    let o = ok(Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(format!("{}:2379", t.addresses["lab-m1"]))
        .arg("-CAfile")
        .arg(t.pki.join("etcd/ca.crt"))
        .arg("-cert")
        .arg(t.pki.join("etcd/healthcheck-client.crt"))
        .arg("-key")
        .arg(t.pki.join("etcd/healthcheck-client.key"))
        .args(["-verify_hostname", "etcd-1.lab.test"])
        .stdin(std::process::Stdio::null()));
    assert!(
        o.contains("Verify return code: 0 (ok)"),
        "lab-m1 does not serve the new certificate:\n{o}"
    );
    san_inv
}

/// Through a bastion: lab-lb is the jump host; every node's sshd sees the connection come from
/// lab-lb's address (the harness itself connects from the bridge address, .1).
fn a_bastion_carries_every_session(t: &TestLab, san_inv: &Path) {
    let via_lb = format!(
        "Accepted publickey for root from {} ",
        t.addresses["lab-lb"]
    );
    let count = |n: &str| {
        t.ssh_ok(
            n,
            &format!("journalctl -u ssh --no-pager -o cat | grep -c '{via_lb}' || true"),
        )
        .parse::<u32>()
        .unwrap()
    };
    let before: Vec<u32> = ["lab-m2", "lab-w1"].iter().map(|n| count(n)).collect();
    let bastion_inv = t.dir.path().join("bastion.toml");
    let text = std::fs::read_to_string(san_inv).unwrap();
    std::fs::write(
        &bastion_inv,
        text.replacen(
            "[ssh]\n",
            &format!("[ssh]\nbastion = \"root@{}:22\"\n", t.addresses["lab-lb"]),
            1,
        ),
    )
    .unwrap();
    let report = t.deploy_json(&bastion_inv, &ETCD_LB);
    for h in report["hosts"].as_array().unwrap() {
        assert_eq!(h["ok"], true, "{h}");
        assert_eq!(h["changed"], 0, "{h}");
    }
    let after: Vec<u32> = ["lab-m2", "lab-w1"].iter().map(|n| count(n)).collect();
    assert!(
        after[0] > before[0] && after[1] > before[1],
        "no SSH login came through lab-lb: {before:?} -> {after:?}"
    );
}

/// A stopped node: a clear error for it, the others complete.
fn a_stopped_node_fails_alone(t: &TestLab, san_inv: &Path) {
    let _ = t.ssh("lab-w1", "systemctl poweroff");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect_timeout(
        &format!("{}:22", t.addresses["lab-w1"]).parse().unwrap(),
        Duration::from_secs(1),
    )
    .is_ok()
    {
        assert!(Instant::now() < deadline, "lab-w1 did not stop");
        std::thread::sleep(Duration::from_millis(200));
    }
    let o = t.deploy(san_inv, &ETCD_LB);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "lab-w1 failed: cannot connect to {}:22",
            t.addresses["lab-w1"]
        )),
        "{err}"
    );
    assert!(out.contains("1 of 5 hosts failed"), "{out}");
    for n in ["lab-m1", "lab-m2", "lab-m3", "lab-lb"] {
        assert!(
            out.lines().any(|l| l.starts_with(n) && l.contains(" ok ")),
            "{n} did not complete:\n{out}"
        );
    }
}

/// etcd that cannot become healthy: deploy waits until its deadline, then names each member's
/// state and shows the end of its journal.
fn an_unhealthy_etcd_is_reported_member_by_member(t: &TestLab, san_inv: &Path) {
    t.ssh_ok(
        "lab-m3",
        "systemctl stop etcd && mv /var/lib/etcd /var/lib/etcd.moved && touch /var/lib/etcd",
    );
    let o = t.deploy(san_inv, &["--phases", "etcd", "--etcd-timeout", "5"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.contains("lab-m3 failed: etcd not healthy within 5 s"),
        "{err}"
    );
    assert!(
        err.contains("lab-m3: etcd is ") && err.contains("--- journal of etcd:"),
        "{err}"
    );
    assert!(
        err.contains("lab-m1 (10.213.0.11): member"),
        "the members that answer are listed: {err}"
    );
}

/// Boots a lab.
mod lab {
    #[test]
    fn deploy_etcd_and_lb_to_the_lab() {
        super::deploy_etcd_and_lb_to_the_lab()
    }
}
