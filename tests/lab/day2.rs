//! The day-2 commands against a real lab (issue 12): etcd snapshot and restore, disaster
//! recovery, growing and shrinking etcd with a client writing all along, the quorum refusal,
//! and reset. One lab of seven machines (tests/fixtures/lab-etcd.toml plus lab-m4 and lab-m5), one test,
//! its steps in order, torn down when it ends, pass or fail.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::lab::TestLab;
use crate::common::*;
use hardway::components::ETCD_DATA_DIR;
use hardway::{inventory, pki, probe};

fn node_block(name: &str, address: &str) -> String {
    format!("\n[[nodes]]\nname = \"{name}\"\naddress = \"{address}\"\nroles = [\"master\"]\n")
}

/// The two masters the grown cluster has on top of tests/fixtures/lab-etcd.toml's three.
fn extra_masters() -> String {
    node_block("lab-m4", "10.213.0.16") + &node_block("lab-m5", "10.213.0.17")
}

fn day_two_on_the_lab() {
    let lab_toml = std::fs::read_to_string(repo().join("tests/fixtures/lab-etcd.toml")).unwrap();
    let source = tempfile::tempdir().unwrap();
    std::fs::write(
        source.path().join("lab7.toml"),
        format!("{lab_toml}{}", extra_masters()),
    )
    .unwrap();
    let t = crate::common::lab::boot_inventory(
        "/run/hardway/test-day2",
        &source.path().join("lab7.toml"),
    );
    let big = t.inv_path.clone();
    let small = write_inventory(&t, "small.toml", &t.inv_text.replace(&extra_masters(), ""));
    pki_generate(&small, &t.pki);
    deploy_ok(&t, &small, &["--accept-new-host-keys"]);
    verify_passes(&t, &small);

    a_restore_puts_back_what_the_snapshot_holds(&t, &small);
    two_members_lost_come_back_from_a_snapshot(&t, &small);
    removing_a_member_without_quorum_left_is_refused(&t, &small);
    let last = growing_and_shrinking_loses_no_write(&t, &small, &big);
    reset_all_leaves_nothing_and_a_fresh_deploy_works(&t, &last);
}

fn write_inventory(t: &TestLab, name: &str, text: &str) -> PathBuf {
    let p = t.dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn hardway_ok(args: &mut Command) -> String {
    let o = run(args);
    assert!(o.status.success(), "{args:?} failed:\n{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn deploy_ok(t: &TestLab, inv: &Path, extra: &[&str]) {
    let o = t.deploy(inv, &[&["--phases", "etcd,lb"], extra].concat());
    assert!(
        o.status.success(),
        "deploy {} failed:\n{}",
        inv.display(),
        text(&o)
    );
}

fn verify_passes(t: &TestLab, inv: &Path) {
    let o = run(hardway()
        .arg("verify")
        .arg("-i")
        .arg(inv)
        .arg("--pki")
        .arg(&t.pki));
    assert_eq!(
        o.status.code(),
        Some(0),
        "verify {} failed:\n{}",
        inv.display(),
        text(&o)
    );
}

/// `hardway <args> -i INV --pki PKI` (the day-2 commands' common flags).
fn day2(t: &TestLab, inv: &Path, args: &[&str]) -> Command {
    let mut c = hardway();
    c.args(args).arg("-i").arg(inv).arg("--pki").arg(&t.pki);
    c
}

fn members_of(inv: &Path) -> Vec<(String, IpAddr)> {
    let inv = inventory::load(inv).unwrap();
    inv.etcd_members()
        .iter()
        .map(|n| (n.name.clone(), n.address))
        .collect()
}

/// `etcdctl` against the given members, with the PKI's health-check client.
fn etcdctl(t: &TestLab, members: &[(String, IpAddr)], args: &[&str]) -> Output {
    t.etcdctl(
        &members
            .iter()
            .map(|(_, a)| a.to_string())
            .collect::<Vec<_>>(),
        args,
    )
}

fn etcdctl_ok(t: &TestLab, members: &[(String, IpAddr)], args: &[&str]) -> String {
    let o = etcdctl(t, members, args);
    assert!(o.status.success(), "etcdctl {args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn get(t: &TestLab, members: &[(String, IpAddr)], key: &str) -> Option<String> {
    let out = etcdctl_ok(t, members, &["get", key, "--print-value-only"]);
    let v = out.trim();
    (!v.is_empty()).then(|| v.to_string())
}

fn member_names(t: &TestLab, members: &[(String, IpAddr)]) -> Vec<String> {
    let out = etcdctl_ok(t, members, &["member", "list", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut names: Vec<String> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap_or("").to_string())
        .collect();
    names.sort();
    names
}

/// Until every member answers, all agree on one leader and report the same revision.
fn wait_agreed(t: &TestLab, members: &[(String, IpAddr)]) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = etcdctl(t, members, &["endpoint", "status", "-w", "json"]);
        let statuses: Vec<serde_json::Value> = if o.status.success() {
            serde_json::from_slice(&o.stdout).unwrap_or_default()
        } else {
            vec![]
        };
        let revisions: Vec<i64> = statuses
            .iter()
            .filter_map(|s| s["Status"]["header"]["revision"].as_i64())
            .collect();
        let leaders: Vec<u64> = statuses
            .iter()
            .filter_map(|s| s["Status"]["leader"].as_u64())
            .collect();
        if revisions.len() == members.len()
            && revisions.windows(2).all(|w| w[0] == w[1])
            && leaders.windows(2).all(|w| w[0] == w[1])
            && leaders[0] != 0
        {
            return revisions[0];
        }
        assert!(
            Instant::now() < deadline,
            "members never agreed on a leader and a revision: {}",
            text(&o)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn save_snapshot(t: &TestLab, inv: &Path) -> PathBuf {
    let dir = t.dir.path().join("snapshots");
    let out = hardway_ok(
        day2(t, inv, &["etcd", "snapshot", "save", "--output", "json"])
            .arg("--out")
            .arg(&dir),
    );
    let info: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let db = dir.join(info["file"].as_str().unwrap());
    assert!(
        db.is_file() && db.with_extension("json").is_file(),
        "{}",
        db.display()
    );
    db
}

/// Snapshot, write more, restore: what was there before the snapshot is back, what came later
/// is gone, every member reports the same revision, and each member's old data is kept.
fn a_restore_puts_back_what_the_snapshot_holds(t: &TestLab, inv: &Path) {
    let members = members_of(inv);
    etcdctl_ok(t, &members, &["put", "restore/before", "kept"]);
    let db = save_snapshot(t, inv);
    etcdctl_ok(t, &members, &["put", "restore/after", "gone"]);

    // Without --yes it says what it would do and does nothing.
    let o = run(day2(t, inv, &["etcd", "restore"]).arg(&db));
    assert!(
        !o.status.success() && text(&o).contains("--yes"),
        "{}",
        text(&o)
    );
    assert_eq!(get(t, &members, "restore/after").as_deref(), Some("gone"));

    let before = member_id_set(t, &members);
    hardway_ok(day2(t, inv, &["etcd", "restore", "--yes"]).arg(&db));
    // The revision moved past the snapshot's (and marked compacted): watchers relist.
    let revision = wait_agreed(t, &members);
    assert!(
        revision > hardway::remote::BUMP_REVISION as i64,
        "the restored revision {revision} was not bumped"
    );
    assert_eq!(get(t, &members, "restore/before").as_deref(), Some("kept"));
    assert_eq!(
        get(t, &members, "restore/after"),
        None,
        "a key written after the snapshot survived the restore"
    );
    assert_ne!(
        member_id_set(t, &members),
        before,
        "the restored cluster has the old member IDs: it was not restored"
    );
    for (m, _) in &members {
        let aside = t.ssh_ok(
            m,
            &format!("ls -d {ETCD_DATA_DIR}.before-restore-* | wc -l"),
        );
        assert_eq!(aside, "1", "{m}: the previous data dir was not kept");
    }
    verify_passes(t, inv);
}

fn member_id_set(t: &TestLab, members: &[(String, IpAddr)]) -> Vec<u64> {
    let out = etcdctl_ok(t, members, &["member", "list", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut ids: Vec<u64> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["ID"].as_u64().unwrap())
        .collect();
    ids.sort();
    ids
}

/// Two of three members stopped and their data dirs wiped: the one left has no quorum, and
/// `etcd restore` brings the cluster back from the last snapshot.
fn two_members_lost_come_back_from_a_snapshot(t: &TestLab, inv: &Path) {
    let members = members_of(inv);
    etcdctl_ok(t, &members, &["put", "disaster/before", "saved"]);
    let db = save_snapshot(t, inv);
    for (m, _) in &members[1..] {
        t.ssh_ok(m, &format!("systemctl stop etcd && rm -rf {ETCD_DATA_DIR}"));
    }
    let o = etcdctl(t, &members[..1], &["put", "disaster/lost", "x"]);
    assert!(
        !o.status.success(),
        "one member of three accepted a write: {}",
        text(&o)
    );

    hardway_ok(day2(t, inv, &["etcd", "restore", "--yes"]).arg(&db));
    wait_agreed(t, &members);
    assert_eq!(
        get(t, &members, "disaster/before").as_deref(),
        Some("saved")
    );
    assert_eq!(get(t, &members, "restore/before").as_deref(), Some("kept"));
    assert_eq!(
        member_names(t, &members),
        members.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()
    );
    verify_passes(t, inv);
}

/// With one of three members down, removing another would leave one of two: refused, and
/// nothing changes.
fn removing_a_member_without_quorum_left_is_refused(t: &TestLab, inv: &Path) {
    let members = members_of(inv);
    t.ssh_ok("lab-m3", "systemctl stop etcd");
    let o = run(day2(
        t,
        inv,
        &["node", "remove", "lab-m2", "--yes", "--phases", "etcd,lb"],
    )
    .arg("--snapshot-dir")
    .arg(t.dir.path().join("snapshots")));
    let said = text(&o);
    assert!(!o.status.success(), "the removal went ahead: {said}");
    assert!(
        said.contains("refused") && said.contains("quorum") && said.contains("--force"),
        "{said}"
    );
    t.ssh_ok("lab-m3", "systemctl start etcd");
    wait_agreed(t, &members);
    assert_eq!(member_names(t, &members).len(), 3);
    assert_eq!(t.ssh_ok("lab-m2", "systemctl is-active etcd"), "active");
}

/// Writes one key every 100 ms, round robin through the given members' client URLs (not the
/// load balancer), until stopped; returns every write's outcome.
struct Writer {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<Written>>,
}

/// One write: its number, the member it went through, and how it went.
type Written = (u64, String, Result<(), String>);

impl Writer {
    fn start(t: &TestLab, inv: &Path, through: &[(String, IpAddr)], prefix: &str) -> Writer {
        let loaded = inventory::load(inv).unwrap();
        let auth = probe::EtcdAuth::from_pki(&pki::load(&loaded, &t.pki).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let (through, prefix, flag) = (through.to_vec(), prefix.to_string(), stop.clone());
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                // Connected before the first write, so that connecting is not what is measured;
                // 5 s per request, etcdctl's default command timeout.
                let timeout = Duration::from_secs(5);
                let mut clients = Vec::new();
                for (_, addr) in &through {
                    clients.push(Some(
                        probe::etcd_client(&auth, *addr, 2379, timeout)
                            .await
                            .expect("the writer connects"),
                    ));
                }
                ready_tx.send(()).unwrap();
                let mut done = Vec::new();
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                let mut n = 0u64;
                while !flag.load(Ordering::SeqCst) {
                    tick.tick().await;
                    let i = (n as usize) % through.len();
                    let (name, addr) = &through[i];
                    let started = Instant::now();
                    let result = async {
                        if clients[i].is_none() {
                            clients[i] = Some(
                                probe::etcd_client(&auth, *addr, 2379, timeout)
                                    .await
                                    .map_err(|e| e.to_string())?,
                            );
                        }
                        let c = clients[i].as_mut().unwrap();
                        c.put(format!("{prefix}/{n:06}"), n.to_string(), None)
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    }
                    .await;
                    let result = result.map_err(|e| format!("{e} (after {:?})", started.elapsed()));
                    if result.is_err() {
                        clients[i] = None;
                    }
                    done.push((n, name.clone(), result));
                    n += 1;
                }
                done
            })
        });
        ready.recv().expect("the writer did not start");
        Writer { stop, handle }
    }

    /// Stops, and asserts that every write succeeded and is there to read.
    fn finish(self, t: &TestLab, read_from: &[(String, IpAddr)], prefix: &str) {
        self.stop.store(true, Ordering::SeqCst);
        let writes = self.handle.join().expect("the writer panicked");
        let failed: Vec<String> = writes
            .iter()
            .filter_map(|(n, m, r)| {
                r.as_ref()
                    .err()
                    .map(|e| format!("write {n} through {m}: {e}"))
            })
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
        let count = etcdctl_ok(
            t,
            read_from,
            &[
                "get",
                &format!("{prefix}/"),
                "--prefix",
                "--keys-only",
                "-w",
                "json",
            ],
        );
        let v: serde_json::Value = serde_json::from_str(&count).unwrap();
        assert_eq!(
            v["count"].as_u64().unwrap_or(0),
            writes.len() as u64,
            "not every acknowledged write is in etcd"
        );
    }
}

/// 3 → 5 masters with `deploy` and 5 → 3 with `node remove` (the first master among those
/// removed), a client writing every 100 ms all along through members that stay: no write
/// fails, and verify passes after each step. Returns the inventory of the three left.
fn growing_and_shrinking_loses_no_write(t: &TestLab, small: &Path, big: &Path) -> PathBuf {
    let three = members_of(small);
    let five = members_of(big);
    let snapshots = t.dir.path().join("snapshots");
    let snapshot_arg = ["--snapshot-dir", snapshots.to_str().unwrap()];

    // New nodes need their certificates, and the API server's SANs change: pki generate keeps
    // the CAs and every key, and issues what is new.
    pki_generate(big, &t.pki);
    let writer = Writer::start(t, small, &three, "grow");
    deploy_ok(t, big, &["--accept-new-host-keys"]);
    writer.finish(t, &five, "grow");
    wait_agreed(t, &five);
    assert_eq!(
        member_names(t, &five),
        ["lab-m1", "lab-m2", "lab-m3", "lab-m4", "lab-m5"]
    );
    verify_passes(t, big);

    // Shrink, removing the first master, then lab-m5; the writer goes through the three that
    // stay.
    let stay: Vec<(String, IpAddr)> = five
        .iter()
        .filter(|(n, _)| ["lab-m2", "lab-m3", "lab-m4"].contains(&n.as_str()))
        .cloned()
        .collect();
    let m1 = node_block("lab-m1", "10.213.0.11");
    let m5 = node_block("lab-m5", "10.213.0.17");
    let big_text = std::fs::read_to_string(big).unwrap();
    assert!(
        big_text.contains(&m1) && big_text.contains(&m5),
        "the lab inventory's node blocks changed"
    );
    let four = write_inventory(t, "four.toml", &big_text.replace(&m1, ""));
    let last = write_inventory(t, "last.toml", &big_text.replace(&m1, "").replace(&m5, ""));

    let writer = Writer::start(t, big, &stay, "shrink");
    let dry = hardway_ok(
        day2(
            t,
            big,
            &[
                "node",
                "remove",
                "lab-m1",
                "--dry-run",
                "--phases",
                "etcd,lb",
            ],
        )
        .args(snapshot_arg),
    );
    assert!(
        dry.contains("member remove lab-m1") && dry.contains("would"),
        "{dry}"
    );
    assert_eq!(
        t.ssh_ok("lab-m1", "systemctl is-active etcd"),
        "active",
        "the dry run changed something"
    );
    hardway_ok(
        day2(
            t,
            big,
            &["node", "remove", "lab-m1", "--yes", "--phases", "etcd,lb"],
        )
        .args(snapshot_arg),
    );
    verify_passes(t, &four);
    hardway_ok(
        day2(
            t,
            &four,
            &["node", "remove", "lab-m5", "--yes", "--phases", "etcd,lb"],
        )
        .args(snapshot_arg),
    );
    writer.finish(t, &stay, "shrink");
    wait_agreed(t, &stay);
    assert_eq!(member_names(t, &stay), ["lab-m2", "lab-m3", "lab-m4"]);
    verify_passes(t, &last);

    for gone in ["lab-m1", "lab-m5"] {
        assert_ne!(
            t.ssh_ok(gone, "systemctl is-active etcd || true"),
            "active",
            "{gone} still runs etcd"
        );
        assert_eq!(
            t.ssh_ok(
                gone,
                &format!("test -e {ETCD_DATA_DIR} && echo there || echo moved")
            ),
            "moved",
            "{gone}"
        );
        assert_eq!(
            t.ssh_ok(gone, &format!("ls -d {ETCD_DATA_DIR}.reset-* | wc -l")),
            "1",
            "{gone}: its data dir was not kept aside"
        );
    }
    let haproxy = t.ssh_ok("lab-lb", "cat /etc/haproxy/haproxy.cfg");
    assert!(
        !haproxy.contains("lab-m1") && !haproxy.contains("lab-m5") && haproxy.contains("lab-m4"),
        "{haproxy}"
    );
    last
}

/// Every path hardway renders for `node`.
fn rendered_paths(t: &TestLab, inv: &Path, node: &str) -> Vec<String> {
    let out = t.dir.path().join("rendered");
    let _ = std::fs::remove_dir_all(&out);
    hardway_ok(
        hardway()
            .args(["render", "-i"])
            .arg(inv)
            .arg("--pki")
            .arg(&t.pki)
            .arg("--out")
            .arg(&out),
    );
    let root = out.join(node);
    let mut paths = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                paths.push(format!("/{}", p.strip_prefix(&root).unwrap().display()));
            }
        }
    }
    paths
}

/// `reset --all` stops every hardway unit and removes every file hardway placed on every node
/// (each a file render makes; etcd's data moved aside); a second reset does nothing; a fresh
/// deploy works again.
fn reset_all_leaves_nothing_and_a_fresh_deploy_works(t: &TestLab, inv: &Path) {
    let loaded = inventory::load(inv).unwrap();
    let dry = hardway_ok(&mut day2(t, inv, &["reset", "--all", "--dry-run"]));
    assert!(dry.contains("would"), "{dry}");
    assert_eq!(
        t.ssh_ok("lab-m2", "systemctl is-active etcd"),
        "active",
        "the dry run changed something"
    );

    // Debian's etcd-server package has its own /var/lib/etcd on every machine; only the
    // members' is hardway's to move.
    let data_dir = |node: &str| {
        t.ssh_ok(
            node,
            &format!("test -e {ETCD_DATA_DIR} && echo there || echo gone"),
        )
    };
    let before: Vec<String> = loaded.nodes.iter().map(|n| data_dir(&n.name)).collect();
    // What hardway placed, by its own list on each node, checked against what render makes:
    // a rendered path it never placed (the workers phase did not run here) may be the
    // distribution's (containerd's config), and is not hardway's to remove.
    let placed: Vec<Vec<String>> = loaded
        .nodes
        .iter()
        .map(|n| {
            let list = t.ssh_ok(&n.name, "cat /var/lib/hardway/placed 2>/dev/null || true");
            let rendered = rendered_paths(t, inv, &n.name);
            let placed: Vec<String> = list.lines().map(str::to_string).collect();
            assert!(
                placed
                    .iter()
                    .filter(|p| !p.starts_with("/var/lib/hardway/"))
                    .all(|p| rendered.contains(p)),
                "{}: placed {placed:?}",
                n.name
            );
            placed
        })
        .collect();
    let out = hardway_ok(&mut day2(
        t,
        inv,
        &["reset", "--all", "--yes", "--output", "json"],
    ));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report["nodes"].as_array().unwrap().len(),
        loaded.nodes.len()
    );
    for ((n, before), placed) in loaded.nodes.iter().zip(&before).zip(&placed) {
        if loaded.is_etcd_member(n) || n.has(inventory::Role::Lb) {
            assert!(
                placed.len() > 3,
                "{}: hardway placed only {placed:?}",
                n.name
            );
        }
        let paths = [placed.as_slice(), &["/var/lib/hardway/placed".to_string()]].concat();
        let left = t.ssh_ok(
            &n.name,
            &format!(
                "for f in {}; do test -e \"$f\" && echo \"$f\"; done; true",
                paths.join(" ")
            ),
        );
        assert!(
            left.is_empty(),
            "{}: still there after reset: {left}",
            n.name
        );
        for unit in ["etcd", "haproxy"] {
            assert_ne!(
                t.ssh_ok(&n.name, &format!("systemctl is-active {unit} || true")),
                "active",
                "{}: {unit} still runs",
                n.name
            );
        }
        let want = if loaded.is_etcd_member(n) {
            "gone"
        } else {
            before.as_str()
        };
        assert_eq!(data_dir(&n.name), want, "{}: {ETCD_DATA_DIR}", n.name);
    }

    let again = hardway_ok(&mut day2(
        t,
        inv,
        &["reset", "--all", "--yes", "--output", "json"],
    ));
    let again: serde_json::Value = serde_json::from_str(&again).unwrap();
    for n in again["nodes"].as_array().unwrap() {
        assert_eq!(n["files_removed"], 0, "a second reset removed files: {n}");
        assert!(
            n["units_stopped"].as_array().unwrap().is_empty(),
            "a second reset stopped units: {n}"
        );
        assert!(n["data_dir"].is_null(), "a second reset moved data: {n}");
    }

    deploy_ok(t, inv, &[]);
    let members = members_of(inv);
    wait_agreed(t, &members);
    assert_eq!(
        get(t, &members, "restore/before"),
        None,
        "the fresh cluster has the old data"
    );
    verify_passes(t, inv);
}

/// Boots a lab.
mod lab {
    #[test]
    fn day_two_on_the_lab() {
        super::day_two_on_the_lab()
    }
}
