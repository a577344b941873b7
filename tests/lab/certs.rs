//! `hardway certs` and `hardway secrets` against a real lab (issue 11): real etcd members and
//! HAProxy on systemd-nspawn machines (tests/fixtures/lab-etcd.toml). Renewing every certificate while a
//! client writes through all endpoints every 100 ms loses no write; a member whose certificate
//! has expired (backdated with `openssl ca`) is flagged and repaired. One lab, one test, its
//! steps in order, torn down when it ends, pass or fail.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::lab::{TestLab, verify_checks};
use crate::common::*;
use hardway::{inventory, pki, probe};

const MEMBERS: [&str; 3] = ["lab-m1", "lab-m2", "lab-m3"];

/// Boots a lab.
mod lab {
    #[test]
    fn certificates_on_the_lab() {
        super::certificates_on_the_lab()
    }
}

fn certificates_on_the_lab() {
    let t = crate::common::lab::boot("/run/hardway/test-certs");
    pki_generate(&t.inv_path, &t.pki);
    let o = t.deploy(
        &t.inv_path,
        &["--phases", "etcd,lb", "--accept-new-host-keys"],
    );
    assert!(o.status.success(), "deploy failed:\n{}", text(&o));
    let before = check_lists_every_certificate_on_every_node(&t);
    renewing_everything_loses_no_write(&t, &before);
    an_expired_member_certificate_is_flagged_and_repaired(&t);
    rotating_the_etcd_ca_step_by_step(&t);
    // The service-account and encryption keys rotate on the real cluster, with clients
    // running through it: cluster::day2.
}

/// `hardway certs ARGS -i INV --pki PKI`.
fn certs(t: &TestLab, args: &[&str]) -> Output {
    run(hardway()
        .arg("certs")
        .args(args)
        .arg("-i")
        .arg(&t.inv_path)
        .arg("--pki")
        .arg(&t.pki))
}

/// `certs check --output json`: its exit code and report.
fn check_json(t: &TestLab, extra: &[&str]) -> (i32, serde_json::Value) {
    let o = certs(t, &[&["check", "--output", "json"], extra].concat());
    let v = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("certs check --output json is not JSON ({e}):\n{}", text(&o)));
    (o.status.code().unwrap_or(-1), v)
}

/// (node, path, subject) → the row of each certificate found on a node.
fn rows(report: &serde_json::Value) -> BTreeMap<(String, String, String), serde_json::Value> {
    let s = |v: &serde_json::Value| v.as_str().unwrap().to_string();
    report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| ((s(&r["node"]), s(&r["path"]), s(&r["subject"])), r.clone()))
        .collect()
}

fn verify_passes(t: &TestLab) {
    let o = t.verify(&["--pki", t.pki.to_str().unwrap(), "--output", "json"]);
    let (_, checks) = verify_checks(&o);
    let bad: Vec<&serde_json::Value> = checks
        .iter()
        .filter(|c| c["status"] == "FAIL" || c["status"] == "WARN")
        .collect();
    assert!(o.status.success() && bad.is_empty(), "verify: {bad:#?}");
}

/// Every certificate the running units name, on every node, with the local PKI: the etcd
/// members' server, peer and CA files (from `systemctl cat etcd`), HAProxy's client
/// certificate and CA (from haproxy.cfg); all valid, exit 0; with a warning longer than their
/// validity, every one is flagged and the exit is 1.
fn check_lists_every_certificate_on_every_node(t: &TestLab) -> serde_json::Value {
    let o = certs(t, &["check"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("lab-m2         /etc/etcd/pki/server.crt")
            && out.contains("(pki)          etcd/ca"),
        "{out}"
    );
    let (code, report) = check_json(t, &[]);
    assert_eq!(code, 0);
    let found = rows(&report);
    for m in MEMBERS {
        for (path, subject) in [
            ("/etc/etcd/pki/server.crt", format!("CN={m}")),
            ("/etc/etcd/pki/peer.crt", format!("CN={m}")),
            ("/etc/etcd/pki/ca.crt", "CN=etcd-ca".into()),
        ] {
            let r = found
                .get(&(m.to_string(), path.to_string(), subject.clone()))
                .unwrap_or_else(|| panic!("{m} {path} {subject} not listed: {report:#}"));
            assert!(
                r["days_left"].as_i64().unwrap() >= 364 && r["problem"].is_null(),
                "{r}"
            );
        }
        let server = &found[&(
            m.to_string(),
            "/etc/etcd/pki/server.crt".to_string(),
            format!("CN={m}"),
        )];
        assert!(
            server["named_by"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n == "etcd server"),
            "{server}"
        );
        assert!(
            server["sans"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s.as_str() == Some(&format!("IP:{}", t.addresses[m]))),
            "{server}"
        );
        // The serial is what openssl reads from the node's file.
        let serial = t.ssh_ok(
            m,
            "openssl x509 -noout -serial -in /etc/etcd/pki/server.crt",
        );
        assert_eq!(
            serial.trim_start_matches("serial=").to_lowercase(),
            server["serial"].as_str().unwrap().replace(':', ""),
            "{m}"
        );
    }
    let lb = |subject: &str| {
        found.contains_key(&(
            "lab-lb".to_string(),
            "/etc/haproxy/pki/healthcheck.pem".to_string(),
            subject.to_string(),
        ))
    };
    assert!(lb("CN=haproxy-healthcheck"), "{report:#}");
    assert!(found.contains_key(&(
        "lab-lb".to_string(),
        "/etc/haproxy/pki/ca.crt".to_string(),
        "CN=kubernetes".to_string()
    )));
    assert!(
        !found.keys().any(|(n, _, _)| n == "lab-w1"),
        "the worker has nothing deployed: {report:#}"
    );
    assert!(
        report["local"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "etcd/server-lab-m1")
    );

    let (code, long) = check_json(t, &["--warn-days", "400"]);
    assert_eq!(code, 1);
    for r in long["nodes"].as_array().unwrap() {
        // Leaves are valid for a year, the CAs for ten.
        let flagged = r["problem"]
            .as_str()
            .is_some_and(|p| p.starts_with("expires in 36"));
        assert_eq!(flagged, r["ca"] == false, "{r}");
    }
    report
}

/// Writes one key every 100 ms through all the members' client URLs, like a client given
/// every endpoint: a write goes to the next member in turn and, if that member fails it, to the
/// others; it fails only when no member takes it.
struct Writer {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<Written>>,
}

/// One write: its number, each member tried with its error (the last one took it, if any).
struct Written {
    n: u64,
    tries: Vec<(String, Option<String>)>,
}

impl Written {
    fn ok(&self) -> bool {
        self.tries.last().is_some_and(|(_, e)| e.is_none())
    }
}

impl Writer {
    /// With the PKI's health-check client.
    fn start(t: &TestLab, prefix: &str) -> Writer {
        let inv = inventory::load(&t.inv_path).unwrap();
        Writer::start_as(
            t,
            prefix,
            probe::EtcdAuth::from_pki(&pki::load(&inv, &t.pki).unwrap()),
        )
    }

    fn start_as(t: &TestLab, prefix: &str, auth: probe::EtcdAuth) -> Writer {
        let inv = inventory::load(&t.inv_path).unwrap();
        let members: Vec<(String, IpAddr)> = inv
            .etcd_members()
            .iter()
            .map(|n| (n.name.clone(), n.address))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let (prefix, flag) = (prefix.to_string(), stop.clone());
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let mut clients: Vec<Option<etcd_client::Client>> =
                    members.iter().map(|_| None).collect();
                let mut done = Vec::new();
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                let mut n = 0u64;
                while !flag.load(Ordering::SeqCst) {
                    tick.tick().await;
                    let mut w = Written { n, tries: vec![] };
                    for k in 0..members.len() {
                        let i = (n as usize + k) % members.len();
                        let put = async {
                            if clients[i].is_none() {
                                clients[i] = Some(
                                    probe::etcd_client(
                                        &auth,
                                        members[i].1,
                                        2379,
                                        Duration::from_secs(2),
                                    )
                                    .await
                                    .map_err(|e| e.to_string())?,
                                );
                            }
                            let c = clients[i].as_mut().unwrap();
                            c.put(format!("{prefix}/{n:06}"), n.to_string(), None)
                                .await
                                .map(|_| ())
                                .map_err(|e| e.to_string())
                        };
                        let result = match tokio::time::timeout(Duration::from_secs(5), put).await {
                            Ok(r) => r,
                            Err(_) => Err("no answer within 5 s".to_string()),
                        };
                        let failed = result.is_err();
                        if failed {
                            clients[i] = None;
                        }
                        w.tries.push((members[i].0.clone(), result.err()));
                        if !failed {
                            break;
                        }
                    }
                    done.push(w);
                    n += 1;
                }
                done
            })
        });
        Writer { stop, handle }
    }

    /// Stops; asserts that every write was taken and is in etcd; returns how many writes a
    /// member failed first (the restarts the writer saw).
    fn finish(self, t: &TestLab, prefix: &str) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let writes = self.handle.join().expect("the writer panicked");
        let failed: Vec<String> = writes
            .iter()
            .filter(|w| !w.ok())
            .map(|w| format!("write {}: {:?}", w.n, w.tries))
            .collect();
        assert!(
            writes.len() >= 20,
            "the writer wrote only {} keys",
            writes.len()
        );
        assert!(
            failed.is_empty(),
            "{} of {} writes failed:\n{}",
            failed.len(),
            writes.len(),
            failed.join("\n")
        );
        // --keys-only, not --count-only: the host's etcdctl may be 3.4, which has no such flag.
        let o = etcdctl(
            t,
            &["get", &format!("{prefix}/"), "--prefix", "--keys-only"],
        );
        assert!(o.status.success(), "{}", text(&o));
        let keys = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .count();
        assert_eq!(
            keys,
            writes.len(),
            "not every acknowledged write is in etcd"
        );
        let failovers: Vec<String> = writes
            .iter()
            .filter(|w| w.tries.len() > 1)
            .map(|w| format!("write {}: {:?}", w.n, w.tries))
            .collect();
        eprintln!(
            "{} writes, {} went to another member after one failed them:\n{}",
            writes.len(),
            failovers.len(),
            failovers.join("\n")
        );
        failovers.len()
    }
}

/// `etcdctl` against every member with the PKI's health-check client.
fn etcdctl(t: &TestLab, args: &[&str]) -> Output {
    t.etcdctl(
        &MEMBERS
            .iter()
            .map(|m| t.addresses[*m].clone())
            .collect::<Vec<_>>(),
        args,
    )
}

fn active_since(t: &TestLab) -> Vec<String> {
    MEMBERS.iter().map(|m| t.active_since(m, "etcd")).collect()
}

/// `certs renew --all` while a client writes every 100 ms through all endpoints: no write fails;
/// afterwards every certificate on every node has a new serial and expires later, the old
/// files are kept aside, a snapshot was taken first, and verify passes.
fn renewing_everything_loses_no_write(t: &TestLab, before: &serde_json::Value) {
    let snapshots = t.dir.path().join("snapshots");
    let dry = certs(t, &["renew", "--all", "--dry-run"]);
    let said = text(&dry);
    assert!(
        dry.status.success()
            && said.contains(
                "would: etcd: restart etcd on lab-m1, then lab-m2, then lab-m3, one at a time"
            ),
        "{said}"
    );
    assert!(
        said.contains("would: lab-lb: replace /etc/haproxy/pki/healthcheck.pem"),
        "{said}"
    );
    let no_yes = certs(t, &["renew", "--all"]);
    assert_eq!(no_yes.status.code(), Some(1));
    assert!(
        text(&no_yes).contains("Run again with --yes"),
        "{}",
        text(&no_yes)
    );
    assert_eq!(
        check_json(t, &[]).1["nodes"],
        before["nodes"],
        "a dry run or a run without --yes changed a node"
    );

    let restarted_before = active_since(t);
    let pki_before = std::fs::read(t.pki.join("etcd/server-lab-m1.crt")).unwrap();
    let writer = Writer::start(t, "renew");
    std::thread::sleep(Duration::from_secs(1));
    let o = certs(
        t,
        &[
            "renew",
            "--all",
            "--yes",
            "--output",
            "json",
            "--snapshot-dir",
            snapshots.to_str().unwrap(),
        ],
    );
    std::thread::sleep(Duration::from_secs(1));
    let failovers = writer.finish(t, "renew");
    assert!(o.status.success(), "renew failed:\n{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let restarted: Vec<String> =
        report["deploy"]["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|h| {
                h["restarted"].as_array().unwrap().iter().map(move |u| {
                    format!("{}:{}", h["node"].as_str().unwrap(), u.as_str().unwrap())
                })
            })
            .collect();
    assert_eq!(restarted, ["lab-m1:etcd", "lab-m2:etcd", "lab-m3:etcd"]);
    // HAProxy takes its new certificate with a reload: its listeners never close.
    let reloaded: Vec<String> = report["deploy"]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|h| {
            h["reloaded"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |u| format!("{}:{}", h["node"].as_str().unwrap(), u.as_str().unwrap()))
        })
        .collect();
    assert_eq!(reloaded, ["lab-lb:haproxy"]);
    let after_restart = active_since(t);
    for (i, m) in MEMBERS.iter().enumerate() {
        assert_ne!(
            after_restart[i], restarted_before[i],
            "{m}'s etcd did not restart"
        );
    }
    // Each member was down for its restart: the writer saw it, and went on through the others.
    assert!(failovers > 0, "the writer never met a restarting member");
    assert!(
        Path::new(report["snapshot"].as_str().unwrap()).is_file(),
        "{report:#}"
    );
    let aside = Path::new(report["aside"].as_str().unwrap());
    assert_eq!(
        std::fs::read(aside.join("etcd/server-lab-m1.crt")).unwrap(),
        pki_before,
        "the old certificate is not kept aside"
    );
    assert_ne!(
        std::fs::read(t.pki.join("etcd/server-lab-m1.crt")).unwrap(),
        pki_before
    );

    let (code, after) = check_json(t, &[]);
    assert_eq!(code, 0, "{after:#}");
    let (old, new) = (rows(before), rows(&after));
    assert_eq!(
        old.keys().collect::<Vec<_>>(),
        new.keys().collect::<Vec<_>>()
    );
    for (k, o) in &old {
        let n = &new[k];
        if o["ca"] == true {
            assert_eq!(o["serial"], n["serial"], "{k:?}: a CA changed");
            continue;
        }
        assert_ne!(o["serial"], n["serial"], "{k:?} was not renewed");
        assert!(
            n["not_after"].as_str().unwrap() > o["not_after"].as_str().unwrap(),
            "{k:?}: {} then {}",
            o["not_after"],
            n["not_after"]
        );
    }
    verify_passes(t);
}

/// A member whose server certificate expired (issued backdated by `openssl ca`, pushed by hand):
/// `certs check` names it and exits 1; `certs renew` refuses on the unhealthy cluster (clients
/// cannot reach that member) and, with --force, repairs it.
fn an_expired_member_certificate_is_flagged_and_repaired(t: &TestLab) {
    let expired = backdated_server_cert(t, "lab-m2");
    let o = t.ssh_with_input(
        "lab-m2",
        "cat > /etc/etcd/pki/server.crt",
        expired.as_bytes(),
    );
    assert!(o.status.success(), "{}", text(&o));

    let (code, report) = check_json(t, &[]);
    assert_eq!(code, 1, "{report:#}");
    let row = &rows(&report)[&(
        "lab-m2".to_string(),
        "/etc/etcd/pki/server.crt".to_string(),
        "CN=lab-m2".to_string(),
    )];
    assert!(
        row["problem"]
            .as_str()
            .is_some_and(|p| p.starts_with("expired ") && p.ends_with(" days ago")),
        "{row}"
    );
    let flagged: Vec<&serde_json::Value> = report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !r["problem"].is_null())
        .collect();
    assert_eq!(flagged.len(), 1, "{flagged:#?}");

    let refused = certs(t, &["renew", "etcd/server-lab-m2", "--yes"]);
    let said = text(&refused);
    assert_eq!(refused.status.code(), Some(1), "{said}");
    assert!(
        said.contains("refusing to renew certificates")
            && said.contains("lab-m2")
            && said.contains("--force"),
        "{said}"
    );
    let on_node = t.ssh_ok("lab-m2", "sha256sum < /etc/etcd/pki/server.crt");
    assert_eq!(
        on_node.split_whitespace().next(),
        Some(hardway::digest::sha256_hex(expired.as_bytes()).as_str()),
        "the refusal changed the node"
    );

    let o = certs(
        t,
        &[
            "renew",
            "etcd/server-lab-m2",
            "--yes",
            "--force",
            "--no-snapshot",
        ],
    );
    let said = text(&o);
    assert!(o.status.success(), "{said}");
    assert!(
        said.contains("warning: --force: going on although etcd is not healthy"),
        "{said}"
    );
    let (code, report) = check_json(t, &[]);
    assert_eq!(code, 0, "{report:#}");
    verify_passes(t);
}

/// A server certificate for `member` from the etcd CA, with its key and SANs, valid only in
/// 2020: made with `openssl ca`, whose -startdate/-enddate set any validity.
fn backdated_server_cert(t: &TestLab, member: &str) -> String {
    let dir = t.dir.path().join("backdated");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.txt"), "").unwrap();
    std::fs::write(dir.join("serial"), "1000\n").unwrap();
    let cnf = dir.join("ca.cnf");
    std::fs::write(
        &cnf,
        format!(
            "[ca]\ndefault_ca = hw\n[hw]\ndatabase = {d}/index.txt\nnew_certs_dir = {d}\nserial = {d}/serial\ndefault_md = sha256\npolicy = any\ncopy_extensions = copyall\nunique_subject = no\n[any]\ncommonName = supplied\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let address = &t.addresses[member];
    let csr = dir.join("server.csr");
    ok(Command::new(require("openssl", "openssl"))
        .args(["req", "-new", "-key"])
        .arg(t.pki.join(format!("etcd/server-{member}.key")))
        .args(["-subj", &format!("/CN={member}")])
        .args([
            "-addext",
            &format!("subjectAltName=DNS:{member},DNS:localhost,IP:{address},IP:127.0.0.1"),
        ])
        .args([
            "-addext",
            "extendedKeyUsage=serverAuth,clientAuth",
            "-addext",
            "keyUsage=digitalSignature,keyEncipherment",
        ])
        .arg("-out")
        .arg(&csr));
    let crt = dir.join("server.crt");
    ok(Command::new(require("openssl", "openssl"))
        .args(["ca", "-batch", "-notext", "-config"])
        .arg(&cnf)
        .arg("-cert")
        .arg(t.pki.join("etcd/ca.crt"))
        .arg("-keyfile")
        .arg(t.pki.join("etcd/ca.key"))
        .args([
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20201231000000Z",
            "-in",
        ])
        .arg(&csr)
        .arg("-out")
        .arg(&crt));
    let pem = std::fs::read_to_string(&crt).unwrap();
    let dates = ok(Command::new("openssl")
        .args(["x509", "-noout", "-enddate", "-in"])
        .arg(&crt));
    assert!(dates.contains("2020"), "{dates}");
    pem
}

/// An etcd client of its own: `etcdctl` trusting `ca` and presenting `cert`/`key`.
fn etcdctl_as(t: &TestLab, ca: &Path, cert: &Path, key: &Path, args: &[&str]) -> Output {
    let endpoints: Vec<String> = MEMBERS
        .iter()
        .map(|m| format!("https://{}:2379", t.addresses[*m]))
        .collect();
    run(Command::new(require("etcdctl", "etcd-client"))
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .arg(format!("--cacert={}", ca.display()))
        .arg(format!("--cert={}", cert.display()))
        .arg(format!("--key={}", key.display()))
        .args(["--command-timeout=5s", "--dial-timeout=3s"])
        .args(args))
}

/// `certs rotate-ca etcd --yes` with `args`, as JSON.
fn rotate(t: &TestLab, args: &[&str]) -> serde_json::Value {
    let o = rotation(t, &t.inv_path, &["certs", "rotate-ca", "etcd"], args);
    assert!(
        o.status.success(),
        "rotate-ca {args:?} failed:\n{}",
        text(&o)
    );
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)))
}

/// `hardway COMMAND --yes --output json -i INV --pki PKI --snapshot-dir DIR ARGS`.
fn rotation(t: &TestLab, inv: &Path, command: &[&str], args: &[&str]) -> Output {
    let snapshots = t.dir.path().join("snapshots");
    run(hardway()
        .args(command)
        .args([
            "--yes",
            "--output",
            "json",
            "--snapshot-dir",
            snapshots.to_str().unwrap(),
            "-i",
        ])
        .arg(inv)
        .arg("--pki")
        .arg(&t.pki)
        .args(args))
}

fn rotation_state(t: &TestLab) -> Option<serde_json::Value> {
    std::fs::read(t.pki.join("rotation/etcd.json"))
        .ok()
        .map(|b| serde_json::from_slice(&b).unwrap())
}

/// The etcd CA rotated step by step. A client holding a certificate of the old CA (and trusting
/// both) writes through every member until step 3, and is refused after it; the first step is
/// killed (SIGKILL) after the first member restarted and resumes; a client writing every
/// 100 ms loses nothing during steps 2 and 3; verify passes after each step.
fn rotating_the_etcd_ca_step_by_step(t: &TestLab) {
    let old = t.dir.path().join("old-ca");
    std::fs::create_dir_all(&old).unwrap();
    for (from, to) in [
        ("etcd/ca.crt", "ca.crt"),
        ("etcd/healthcheck-client.crt", "client.crt"),
        ("etcd/healthcheck-client.key", "client.key"),
    ] {
        std::fs::copy(t.pki.join(from), old.join(to)).unwrap();
    }
    let old_client = |trust: &Path, key: &str| {
        etcdctl_as(
            t,
            trust,
            &old.join("client.crt"),
            &old.join("client.key"),
            &["put", key, "old-ca-client"],
        )
    };
    let o = old_client(&old.join("ca.crt"), "rotation/before");
    assert!(o.status.success(), "{}", text(&o));

    // Step 1, killed once the first member restarted with the bundle, then resumed.
    let dry = certs(t, &["rotate-ca", "etcd", "--dry-run"]);
    assert!(
        dry.status.success()
            && text(&dry).contains(
                "step 1: etcd: restart etcd on lab-m1, then lab-m2, then lab-m3, one at a time"
            ),
        "{}",
        text(&dry)
    );
    assert!(
        rotation_state(t).is_none(),
        "a dry run started the rotation"
    );
    let m1_before = t.active_since("lab-m1", "etcd");
    let mut child = hardway()
        .arg("certs")
        .args([
            "rotate-ca",
            "etcd",
            "--step",
            "1",
            "--yes",
            "--no-snapshot",
            "-i",
        ])
        .arg(&t.inv_path)
        .arg("--pki")
        .arg(&t.pki)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while t.active_since("lab-m1", "etcd") == m1_before {
        assert!(
            std::time::Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "lab-m1's etcd never restarted while step 1 ran"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let state = rotation_state(t).expect("the state is written before the step changes anything");
    assert_eq!(
        state["running"], 1,
        "killed after its first restart, step 1 should still be under way: {state}"
    );
    let bundle = bundle_of(t, &old);
    let since = active_since(t);
    // A restart the killed run had asked systemd for goes on without it: until it is done the
    // cluster is not healthy and the resumed run refuses (changing nothing), as it would for
    // an operator, who runs it again.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let r = loop {
        let o = rotation(
            t,
            &t.inv_path,
            &["certs", "rotate-ca", "etcd"],
            &["--step", "1"],
        );
        if o.status.success() {
            break serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap();
        }
        assert!(
            text(&o).contains("refusing to start step 1") && std::time::Instant::now() < deadline,
            "the resumed step failed:\n{}",
            text(&o)
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        (r["done"].as_u64(), r["steps"][0]["resumed"].as_bool()),
        (Some(1), Some(true)),
        "{r:#}"
    );
    let after = active_since(t);
    for (i, m) in MEMBERS.iter().enumerate() {
        assert_ne!(
            after[i], since[i],
            "the resumed step did not restart {m}'s etcd"
        );
        assert_eq!(
            t.ssh_ok(m, "grep -c 'BEGIN CERTIFICATE' /etc/etcd/pki/ca.crt"),
            "2",
            "{m} does not trust both"
        );
    }
    verify_passes(t);
    let o = old_client(&bundle, "rotation/after-1");
    assert!(o.status.success(), "after step 1: {}", text(&o));

    // Step 2: every certificate from the new CA; the old client still gets in.
    let writer = Writer::start_as(
        t,
        "rotate-2",
        probe::EtcdAuth::from_pem(
            std::fs::read_to_string(&bundle).unwrap(),
            std::fs::read_to_string(old.join("client.crt")).unwrap(),
            std::fs::read_to_string(old.join("client.key")).unwrap(),
        ),
    );
    let r = rotate(t, &["--step", "2"]);
    writer.finish(t, "rotate-2");
    assert_eq!(r["done"], 2, "{r:#}");
    assert_eq!(
        std::fs::read(t.pki.join("etcd/ca.crt")).unwrap(),
        std::fs::read(t.pki.join("rotation/etcd/new.crt")).unwrap()
    );
    for m in MEMBERS {
        let by_new = t.ssh_with_input(
            m,
            "openssl verify -CAfile /dev/stdin /etc/etcd/pki/server.crt",
            &std::fs::read(t.pki.join("etcd/ca.crt")).unwrap(),
        );
        assert!(
            by_new.status.success(),
            "{m}'s server certificate is not from the new CA: {}",
            text(&by_new)
        );
    }
    verify_passes(t);
    let o = old_client(&bundle, "rotation/after-2");
    assert!(
        o.status.success(),
        "after step 2 the old CA's client is still trusted: {}",
        text(&o)
    );

    // Step 3: the old CA is gone from every bundle: its client is refused.
    let writer = Writer::start(t, "rotate-3");
    let r = rotate(t, &[]);
    writer.finish(t, "rotate-3");
    assert_eq!(r["done"], 3, "{r:#}");
    assert!(rotation_state(t).is_none());
    let kept = Path::new(r["aside"].as_str().unwrap());
    assert_eq!(
        std::fs::read(kept.join("rotation/etcd/old.crt")).unwrap(),
        std::fs::read(old.join("ca.crt")).unwrap(),
        "the old CA is not kept"
    );
    for m in MEMBERS {
        assert_eq!(
            t.ssh_ok(m, "grep -c 'BEGIN CERTIFICATE' /etc/etcd/pki/ca.crt"),
            "1",
            "{m}"
        );
    }
    verify_passes(t);
    let o = old_client(&bundle, "rotation/after-3");
    assert!(
        !o.status.success(),
        "after step 3 the old CA's client still got in"
    );
    let said = text(&o);
    assert!(
        said.contains("certificate") || said.contains("tls") || said.contains("deadline"),
        "{said}"
    );
    let o = etcdctl(t, &["get", "rotation/", "--prefix", "--keys-only"]);
    let keys: Vec<&str> = std::str::from_utf8(&o.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        keys,
        ["rotation/after-1", "rotation/after-2", "rotation/before"]
    );
}

/// The old CA (copied into `old`) and the rotation's new one, in one file.
fn bundle_of(t: &TestLab, old: &Path) -> std::path::PathBuf {
    let bundle = t.dir.path().join("old-and-new.crt");
    std::fs::write(
        &bundle,
        format!(
            "{}{}",
            std::fs::read_to_string(old.join("ca.crt")).unwrap(),
            std::fs::read_to_string(t.pki.join("rotation/etcd/new.crt")).unwrap()
        ),
    )
    .unwrap();
    bundle
}
