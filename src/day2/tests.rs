//! Day-2 operations against in-memory nodes: what restore, reset and node removal do, in which
//! order, and what they refuse.

use std::sync::Arc;
use std::time::Duration;

use super::node::{RemoveOptions, remove};
use super::reset::{ResetOptions, reset};
use super::restore::{RestoreOptions, restore};
use super::*;
use crate::components::{ETCD_DATA_DIR, Phase};
use crate::deploy::{DeployOptions, deploy};
use crate::events::Events;
use crate::probe::Probe;
use crate::snapshot;
use crate::testing::{Fixture, block_on};

pub(crate) fn deployed(phases: &[Phase]) -> Fixture {
    let f = Fixture::new();
    let o = DeployOptions {
        phases: phases.to_vec(),
        etcd_timeout: Duration::from_secs(2),
        api_timeout: Duration::from_secs(2),
        ..DeployOptions::default()
    };
    let (c, p): (Arc<dyn Connector>, Arc<dyn Probe>) = (f.fake.clone(), f.fake.clone());
    let r = block_on(deploy(
        &f.inv,
        f.rendered(),
        c,
        p,
        &o,
        Events::none("deploy"),
    ))
    .unwrap();
    assert!(r.failed().is_empty(), "{}", r.table());
    f
}

const YES: Confirm = Confirm {
    dry_run: false,
    yes: true,
    force: false,
};

#[test]
fn restore_stops_everything_moves_the_data_aside_and_brings_every_member_back() {
    let f = deployed(&[Phase::Etcd, Phase::ControlPlane]);
    let snaps = f.dir.path().join("snapshots");
    let info = block_on(snapshot::save(&f.inv, f.fake.as_ref(), &snaps, None)).unwrap();
    let db = snaps.join(&info.file);
    let opts = RestoreOptions {
        confirm: Confirm::default(),
        etcd_timeout: Duration::from_secs(2),
    };
    // Without --yes: the plan, and nothing done.
    f.fake.clear_events();
    let err = block_on(restore(
        &f.inv,
        &db,
        f.fake.as_ref(),
        f.fake.as_ref(),
        &opts,
        &Events::none("t"),
    ))
    .unwrap_err();
    let Day2Error::NeedsYes { steps: planned, .. } = err else {
        panic!("{err}")
    };
    assert!(f.fake.events().is_empty());
    let opts = RestoreOptions {
        confirm: YES,
        ..opts
    };
    let r = block_on(restore(
        &f.inv,
        &db,
        f.fake.as_ref(),
        f.fake.as_ref(),
        &opts,
        &Events::none("t"),
    ))
    .unwrap();
    assert_eq!(r.moved_aside.len(), 3);
    assert!(crate::probe::healthy(&r.members));
    // One list, printed and carried out (each run has its own stamp).
    let unstamped = |steps: &[String]| -> Vec<String> {
        steps
            .iter()
            .map(|s| {
                // `20261207T164706317Z`: 8 digits, T, 9 digits, Z.
                let b = s.as_bytes();
                let is_stamp = |i: usize| {
                    b.len() >= i + 19
                        && b[i..i + 19].iter().enumerate().all(|(k, c)| match k {
                            8 => *c == b'T',
                            18 => *c == b'Z',
                            _ => c.is_ascii_digit(),
                        })
                };
                let mut out = String::new();
                let mut i = 0;
                while i < b.len() {
                    if is_stamp(i) {
                        out.push_str("STAMP");
                        i += 19;
                    } else {
                        out.push(b[i] as char);
                        i += 1;
                    }
                }
                out
            })
            .collect()
    };
    assert_eq!(unstamped(&r.steps), unstamped(&planned));
    // Every event, in order ("node: what").
    let events = f.fake.events_like("");
    let pos = |what: &str| {
        events
            .iter()
            .position(|e| e == what)
            .unwrap_or_else(|| panic!("no {what:?} in {events:#?}"))
    };
    // API servers stop before etcd, every member is restored before any starts, the API
    // servers start after etcd.
    assert!(pos("m1: stop kube-apiserver") < pos("m1: stop etcd"));
    assert!(
        pos("m3: stop etcd")
            < pos(&format!(
                "m1: move {ETCD_DATA_DIR} to {}",
                r.moved_aside[0].1
            ))
    );
    let last_restore = events
        .iter()
        .rposition(|e| e.contains(": restore etcd into"))
        .unwrap();
    assert!(
        last_restore < pos("m1: start etcd")
            && pos("m3: start etcd") < pos("m1: start kube-apiserver")
    );
    // The controllers stop before the API servers and start only after every API server
    // answers again: none acts on a half-restored keyspace.
    for m in ["m1", "m2", "m3"] {
        for c in ["kube-controller-manager", "kube-scheduler"] {
            assert!(pos(&format!("{m}: stop {c}")) < pos("m1: stop kube-apiserver"));
            assert!(pos("m3: start kube-apiserver") < pos(&format!("{m}: start {c}")));
        }
    }
    for m in ["m1", "m2", "m3"] {
        let n = f.fake.node(m);
        assert!(
            n.files
                .keys()
                .any(|p| p.starts_with(&format!("{ETCD_DATA_DIR}.before-restore-"))),
            "{m}: the old data is not kept"
        );
        assert!(
            !n.files
                .keys()
                .any(|p| p.starts_with("/var/lib/hardway/restore-")),
            "{m}: the uploaded copy is left"
        );
    }
    // A snapshot that does not match its record is refused before anything is touched.
    std::fs::write(&db, b"tampered").unwrap();
    f.fake.clear_events();
    let err = block_on(restore(
        &f.inv,
        &db,
        f.fake.as_ref(),
        f.fake.as_ref(),
        &opts,
        &Events::none("t"),
    ))
    .unwrap_err();
    assert!(err.to_string().contains("SHA-256"), "{err}");
    assert!(f.fake.events().is_empty());
}

#[test]
fn reset_takes_off_what_hardway_placed_keeps_etcd_data_and_a_second_reset_does_nothing() {
    let f = deployed(&[Phase::Files, Phase::Etcd, Phase::Lb]);
    f.fake.node("m1").files.insert(
        "/etc/precious.conf".into(),
        crate::remote::fake::FakeFile {
            contents: b"mine".to_vec(),
            mode: 0o644,
            owner: "root:root".into(),
        },
    );
    let nodes: Vec<&crate::inventory::Node> = f.inv.nodes.iter().collect();
    let opts = ResetOptions {
        confirm: YES,
        purge: false,
    };
    let r = block_on(reset(
        &f.inv,
        &nodes,
        f.fake.as_ref(),
        &opts,
        &Events::none("t"),
    ))
    .unwrap();
    for n in &r.nodes {
        let node = f.fake.node(&n.node);
        let left: Vec<&String> = node
            .files
            .keys()
            .filter(|p| {
                !p.starts_with(ETCD_DATA_DIR) && *p != "/etc/hosts" && *p != "/etc/precious.conf"
            })
            .collect();
        assert!(left.is_empty(), "{}: left {left:?}", n.node);
        assert!(
            node.units.values().all(|u| !u.active && !u.enabled),
            "{}: {:?}",
            n.node,
            node.units
        );
        assert!(
            !String::from_utf8_lossy(
                &node
                    .files
                    .get("/etc/hosts")
                    .map(|f| f.contents.clone())
                    .unwrap_or_default()
            )
            .contains("hardway")
        );
    }
    assert!(
        f.fake.node("m1").files.contains_key("/etc/precious.conf"),
        "reset removed a file hardway did not place"
    );
    assert!(
        r.nodes
            .iter()
            .find(|n| n.node == "m1")
            .unwrap()
            .data_dir
            .as_deref()
            .is_some_and(|d| d.starts_with(&format!("{ETCD_DATA_DIR}.reset-")))
    );
    let again = block_on(reset(
        &f.inv,
        &nodes,
        f.fake.as_ref(),
        &opts,
        &Events::none("t"),
    ))
    .unwrap();
    assert!(
        again
            .nodes
            .iter()
            .all(|n| n.files_removed == 0 && n.units_stopped.is_empty() && n.data_dir.is_none()),
        "{:?}",
        again.nodes
    );
}

fn remove_opts(confirm: Confirm) -> RemoveOptions {
    let deploy = DeployOptions {
        etcd_timeout: Duration::from_secs(2),
        api_timeout: Duration::from_secs(2),
        ..DeployOptions::default()
    };
    RemoveOptions {
        confirm,
        drain: crate::kube::DrainOptions {
            timeout: Duration::from_millis(300),
            retry: Duration::from_millis(20),
            force: false,
        },
        phases: vec![Phase::Files, Phase::Etcd, Phase::Lb, Phase::ControlPlane],
        deploy,
    }
}

#[test]
fn the_first_master_can_be_removed_and_the_rest_is_deployed_without_it() {
    let f = deployed(&[Phase::Files, Phase::Etcd, Phase::Lb, Phase::ControlPlane]);
    let (c, p): (Arc<dyn Connector>, Arc<dyn Probe>) = (f.fake.clone(), f.fake.clone());
    f.fake.clear_events();
    let r = block_on(remove(
        &f.inv,
        "m1",
        &f.pki_dir(),
        c,
        p,
        &remove_opts(YES),
        &Events::none("t"),
    ))
    .unwrap();
    assert_eq!(r.etcd_member_removed.as_deref(), Some("m1"));
    assert!(r.reset);
    // m1 led: leadership went to m2 before m1 left, so the cluster never had to elect one.
    assert!(
        r.steps
            .iter()
            .any(|s| s == "etcd: m1 leads; hand leadership to m2 first"),
        "{:?}",
        r.steps
    );
    let etcd: Vec<String> = f
        .fake
        .events()
        .into_iter()
        .filter(|e| e.node == "etcd")
        .map(|e| format!("etcd: {}", e.what))
        .collect();
    let pos = |what: &str| {
        etcd.iter()
            .position(|e| e == what)
            .unwrap_or_else(|| panic!("no {what:?} in {etcd:?}"))
    };
    assert!(pos("etcd: move leader to m2") < pos("etcd: member remove m1"));
    let d = r.deploy.unwrap();
    assert!(d.failed().is_empty(), "{}", d.table());
    let mut members: Vec<String> = f.fake.members().into_iter().map(|m| m.name).collect();
    members.sort();
    assert_eq!(members, ["m2", "m3"]);
    let haproxy = String::from_utf8(
        f.fake.node("lb").files["/etc/haproxy/haproxy.cfg"]
            .contents
            .clone(),
    )
    .unwrap();
    assert!(
        !haproxy.contains("server m1 ") && haproxy.contains("server m2 "),
        "{haproxy}"
    );
    let api = String::from_utf8(
        f.fake.node("m2").files["/etc/systemd/system/kube-apiserver.service"]
            .contents
            .clone(),
    )
    .unwrap();
    assert!(
        !api.contains("10.0.0.11:2379") && api.contains("10.0.0.12:2379"),
        "{api}"
    );
    // The API servers restarted one at a time for their new --etcd-servers.
    assert_eq!(
        f.fake.events_like("restart kube-apiserver"),
        ["m2: restart kube-apiserver", "m3: restart kube-apiserver"]
    );
    assert!(
        f.fake
            .node("m1")
            .files
            .keys()
            .all(|p| p.starts_with(ETCD_DATA_DIR) || p == "/etc/hosts"),
        "m1 was not reset"
    );
}

#[test]
fn removing_a_member_that_would_cost_quorum_is_refused_with_the_reason() {
    let f = deployed(&[Phase::Etcd]);
    f.fake.node("m3").units.get_mut("etcd").unwrap().active = false;
    let (c, p): (Arc<dyn Connector>, Arc<dyn Probe>) = (f.fake.clone(), f.fake.clone());
    f.fake.clear_events();
    let err = block_on(remove(
        &f.inv,
        "m2",
        &f.pki_dir(),
        c.clone(),
        p.clone(),
        &remove_opts(YES),
        &Events::none("t"),
    ))
    .unwrap_err();
    assert!(
        err.to_string().contains(
            "after removing m2, 1 of the 2 members left are healthy, and they need 2 for quorum"
        ),
        "{err}"
    );
    assert!(f.fake.events().is_empty(), "{:?}", f.fake.events());
    // The member that is down can go: the two left are healthy.
    let dry = Confirm {
        dry_run: true,
        ..YES
    };
    let r = block_on(remove(
        &f.inv,
        "m3",
        &f.pki_dir(),
        c,
        p,
        &remove_opts(dry),
        &Events::none("t"),
    ))
    .unwrap();
    assert!(
        r.steps
            .iter()
            .any(|s| s.starts_with("etcd: member remove m3")),
        "{:?}",
        r.steps
    );
}

#[test]
fn resetting_a_running_member_alone_is_refused_but_the_whole_cluster_or_force_is_not() {
    let f = deployed(&[Phase::Etcd]);
    let m2: Vec<&crate::inventory::Node> = f.inv.nodes.iter().filter(|n| n.name == "m2").collect();
    let err = block_on(super::reset::refuse_running_members(
        &f.inv,
        &m2,
        f.fake.as_ref(),
        false,
        false,
    ))
    .unwrap_err();
    assert!(
        err.to_string().contains("m2 still run") && err.to_string().contains("node remove"),
        "{err}"
    );
    block_on(super::reset::refuse_running_members(
        &f.inv,
        &m2,
        f.fake.as_ref(),
        false,
        true,
    ))
    .unwrap();
    let all: Vec<&crate::inventory::Node> = f.inv.nodes.iter().collect();
    block_on(super::reset::refuse_running_members(
        &f.inv,
        &all,
        f.fake.as_ref(),
        true,
        false,
    ))
    .unwrap();
    // A member that is already down is no member to take out first.
    f.fake.node("m2").units.get_mut("etcd").unwrap().active = false;
    block_on(super::reset::refuse_running_members(
        &f.inv,
        &m2,
        f.fake.as_ref(),
        false,
        false,
    ))
    .unwrap();
}

/// A file with a matching record that is not an etcd snapshot is refused by the check on one
/// node (etcdutl snapshot status) before anything is stopped.
#[test]
fn restore_checks_the_snapshot_on_a_node_before_it_stops_anything() {
    let f = deployed(&[Phase::Etcd, Phase::ControlPlane]);
    let snaps = f.dir.path().join("snapshots");
    let info = block_on(snapshot::save(&f.inv, f.fake.as_ref(), &snaps, None)).unwrap();
    let db = snaps.join(&info.file);
    // Random bytes, recorded with their own SHA-256: the record matches, the file is no snapshot.
    let junk: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&db, &junk).unwrap();
    let mut rec = info.clone();
    rec.sha256 = crate::digest::sha256_hex(&junk);
    std::fs::write(
        db.with_extension("json"),
        serde_json::to_string(&rec).unwrap(),
    )
    .unwrap();
    f.fake.clear_events();
    let opts = RestoreOptions {
        confirm: YES,
        etcd_timeout: Duration::from_secs(2),
    };
    let err = block_on(restore(
        &f.inv,
        &db,
        f.fake.as_ref(),
        f.fake.as_ref(),
        &opts,
        &Events::none("t"),
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("not an etcd snapshot") && err.contains("nothing was stopped"),
        "{err}"
    );
    assert!(
        f.fake.events_like("stop").is_empty(),
        "{:?}",
        f.fake.events_like("stop")
    );
    for m in ["m1", "m2", "m3"] {
        let n = f.fake.node(m);
        assert!(
            n.unit_active("etcd") && n.unit_active("kube-apiserver"),
            "{m}"
        );
        assert!(
            !n.files
                .keys()
                .any(|p| p.starts_with("/var/lib/hardway/restore-")),
            "{m}: the uploaded copy is left"
        );
    }
}

/// Another cluster's snapshot is refused, naming both clusters, also in a dry run.
#[test]
fn restore_refuses_another_clusters_snapshot() {
    let f = deployed(&[Phase::Etcd]);
    let snaps = f.dir.path().join("snapshots");
    let info = block_on(snapshot::save(&f.inv, f.fake.as_ref(), &snaps, None)).unwrap();
    let db = snaps.join(&info.file);
    let rec = SnapshotInfoLike {
        cluster: "prod".into(),
        ..info.clone()
    };
    std::fs::write(
        db.with_extension("json"),
        serde_json::to_string(&rec).unwrap(),
    )
    .unwrap();
    f.fake.clear_events();
    for confirm in [
        Confirm {
            dry_run: true,
            ..Confirm::default()
        },
        YES,
    ] {
        let opts = RestoreOptions {
            confirm,
            etcd_timeout: Duration::from_secs(2),
        };
        let err = block_on(restore(
            &f.inv,
            &db,
            f.fake.as_ref(),
            f.fake.as_ref(),
            &opts,
            &Events::none("t"),
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("\"prod\"") && err.contains("\"t\""), "{err}");
    }
    assert!(f.fake.events().is_empty());
}

type SnapshotInfoLike = snapshot::SnapshotInfo;

/// A restore that fails on one member after everything stopped puts back what it stopped (the
/// data dirs moved back, etcd and the API servers started again) and says so.
#[test]
fn a_restore_that_fails_after_stopping_puts_everything_back_and_says_so() {
    let f = deployed(&[Phase::Etcd, Phase::ControlPlane]);
    let snaps = f.dir.path().join("snapshots");
    let info = block_on(snapshot::save(&f.inv, f.fake.as_ref(), &snaps, None)).unwrap();
    let db = snaps.join(&info.file);
    f.fake.node("m2").restore_error = Some("etcdutl: no space left on device".into());
    let opts = RestoreOptions {
        confirm: YES,
        etcd_timeout: Duration::from_secs(2),
    };
    let err = block_on(restore(
        &f.inv,
        &db,
        f.fake.as_ref(),
        f.fake.as_ref(),
        &opts,
        &Events::none("t"),
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("m2") && err.contains("no space left on device"),
        "{err}"
    );
    assert!(
        err.contains("put back") && err.contains("as it was before the restore"),
        "{err}"
    );
    for m in ["m1", "m2", "m3"] {
        let n = f.fake.node(m);
        assert!(
            n.unit_active("etcd") && n.unit_active("kube-apiserver"),
            "{m}: {:?}",
            n.units
        );
        assert_eq!(
            n.files
                .get(&format!("{ETCD_DATA_DIR}/member/snap/db"))
                .map(|f| f.contents.as_slice()),
            Some(&b"keyspace"[..]),
            "{m}: its data is not back"
        );
    }
    assert!(crate::probe::healthy(&block_on(
        crate::probe::cluster_status(
            f.fake.as_ref(),
            &f.inv.etcd_members(),
            Duration::from_secs(1)
        )
    )));
    // What the failed restore began on m2 is kept aside, not deleted.
    assert!(
        f.fake
            .node("m2")
            .dirs
            .iter()
            .any(|d| d.starts_with(&format!("{ETCD_DATA_DIR}.failed-restore-"))),
        "{:?}",
        f.fake.node("m2").dirs
    );
}

#[test]
fn a_removals_dry_run_lists_exactly_what_the_real_run_then_does() {
    let f = deployed(&[Phase::Files, Phase::Etcd, Phase::Lb, Phase::ControlPlane]);
    let (c, p): (Arc<dyn Connector>, Arc<dyn Probe>) = (f.fake.clone(), f.fake.clone());
    let mut opts = remove_opts(Confirm {
        dry_run: true,
        yes: false,
        force: false,
    });
    opts.deploy.snapshot_dir = Some(f.dir.path().join("snapshots"));
    let planned = block_on(remove(
        &f.inv,
        "m1",
        &f.pki_dir(),
        c.clone(),
        p.clone(),
        &opts,
        &Events::none("t"),
    ))
    .unwrap();
    assert!(planned.dry_run && planned.etcd_member_removed.is_none() && !planned.reset);
    opts.confirm = YES;
    let done = block_on(remove(
        &f.inv,
        "m1",
        &f.pki_dir(),
        c,
        p,
        &opts,
        &Events::none("t"),
    ))
    .unwrap();
    // The same list, in the same order: one plan both printed and carried out.
    assert_eq!(done.steps, planned.steps);
    let events: Vec<String> = f.fake.events().into_iter().map(|e| e.what).collect();
    let at = |what: &str| {
        events
            .iter()
            .position(|e| e.starts_with(what))
            .unwrap_or_else(|| panic!("no {what:?} in {events:?}"))
    };
    assert!(
        at("snapshot") < at("move leader") && at("move leader") < at("member remove m1"),
        "{events:?}"
    );
    let order = [
        "etcd: a snapshot into",
        "etcd: m1 leads",
        "etcd: member remove m1",
        "reset m1",
        "deploy the rest",
        "then remove m1",
    ];
    let positions: Vec<usize> = order
        .iter()
        .map(|o| {
            planned
                .steps
                .iter()
                .position(|s| s.starts_with(o))
                .unwrap_or_else(|| panic!("no {o:?} in {:?}", planned.steps))
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "{:?}",
        planned.steps
    );
}

/// Removing a worker whose kubelet is registered: the dry run names what each pod becomes;
/// a bare pod refuses it (nothing done, the node schedulable); `--force` deletes that pod, and
/// the real run drains first, resets, then deletes the Node object — the list the dry run said.
#[test]
fn removing_a_worker_drains_it_first_and_deletes_its_node_after_the_reset() {
    use crate::remote::fake::FakePod;
    let f = deployed(&Phase::ALL);
    let (c, p): (Arc<dyn Connector>, Arc<dyn Probe>) = (f.fake.clone(), f.fake.clone());
    let mut web = FakePod::new("w1", "web-1", Some("ReplicaSet"));
    web.refusals = 2;
    f.fake.kube.lock().unwrap().pods = vec![
        web,
        FakePod::new("w1", "debug", None),
        FakePod::new("w1", "speaker-1", Some("DaemonSet")),
    ];
    let remove_w1 = |confirm: Confirm| {
        let mut opts = remove_opts(confirm);
        opts.phases = Phase::ALL.to_vec();
        block_on(remove(
            &f.inv,
            "w1",
            &f.pki_dir(),
            c.clone(),
            p.clone(),
            &opts,
            &Events::none("t"),
        ))
    };
    f.fake.clear_events();
    let e = remove_w1(Confirm {
        dry_run: true,
        yes: false,
        force: false,
    })
    .unwrap_err();
    assert!(
        e.to_string().contains("default/debug") && e.to_string().contains("--force"),
        "{e}"
    );
    let forced = Confirm {
        dry_run: true,
        yes: false,
        force: true,
    };
    let planned = remove_w1(forced).unwrap();
    assert!(
        planned.steps[0].starts_with("cordon and drain w1: evict default/web-1 (PodDisruptionBudgets respected), delete default/debug (--force); DaemonSet and mirror pods stay: default/speaker-1"),
        "{:#?}",
        planned.steps
    );
    assert!(f.fake.events().is_empty(), "a dry run changes nothing");
    let done = remove_w1(Confirm {
        dry_run: false,
        yes: true,
        force: true,
    })
    .unwrap();
    assert_eq!(done.steps, planned.steps);
    assert_eq!(done.evicted, ["default/web-1", "default/debug (deleted)"]);
    // Every event, in order ("node: what").
    let events = f.fake.events_like("");
    let at = |what: &str| {
        events
            .iter()
            .position(|e| e == what)
            .unwrap_or_else(|| panic!("no {what:?} in {events:#?}"))
    };
    assert!(at("api: cordon w1") < at("api: evict default/web-1"));
    assert!(at("api: evict default/web-1") < at("w1: stop kubelet"));
    assert!(at("w1: stop kubelet") < at("api: delete node w1"));
    assert!(f.fake.kube.lock().unwrap().deleted_nodes.contains("w1"));
}

/// `node add` of a worker the inventory gained: the dry run says what it will do and changes
/// nothing; the real run deploys it (no master's API server restarts for a worker) and waits
/// for its Node to be Ready; a second run finds it in the cluster and changes nothing.
#[test]
fn a_new_worker_is_added_and_waited_for_until_ready() {
    use super::node::{AddOptions, add};
    let mut f = deployed(&Phase::ALL);
    let text = crate::testing::INVENTORY.to_string()
        + "\n[[nodes]]\nname = \"w2\"\naddress = \"10.0.0.16\"\nroles = [\"worker\"]\n";
    let (inv, pki) = f.grow(&text);
    let (c, p): (Arc<dyn Connector>, Arc<dyn Probe>) = (f.fake.clone(), f.fake.clone());
    let mut opts = AddOptions {
        deploy: DeployOptions {
            dry_run: true,
            etcd_timeout: Duration::from_secs(2),
            api_timeout: Duration::from_secs(2),
            ..DeployOptions::default()
        },
        ready_timeout: Duration::from_secs(3),
    };
    let add_w2 = |opts: &AddOptions| {
        block_on(add(
            &inv,
            "w2",
            crate::render::render(&inv, &pki).unwrap(),
            c.clone(),
            p.clone(),
            opts,
            &Events::none("t"),
        ))
    };
    f.fake.clear_events();
    let planned = add_w2(&opts).unwrap();
    assert!(planned.dry_run && planned.ready.is_none());
    assert!(
        f.fake.events().is_empty(),
        "the dry run changed something: {:?}",
        f.fake.events()
    );
    assert!(f.fake.node("w2").files.is_empty());
    assert!(
        planned.steps[0].starts_with("deploy the cluster with w2"),
        "{:?}",
        planned.steps
    );
    assert!(
        planned.steps[1].starts_with("wait until the Node w2 is registered and Ready"),
        "{:?}",
        planned.steps
    );

    opts.deploy.dry_run = false;
    let done = add_w2(&opts).unwrap();
    assert_eq!(done.steps, planned.steps);
    assert!(done.deploy.failed().is_empty(), "{}", done.deploy.table());
    // The fake's kubelet reports no version (a real one's is in the lab test).
    assert_eq!(done.ready.as_deref(), Some("w2 Ready"));
    assert!(f.fake.node("w2").unit_active("kubelet"));
    assert!(
        f.fake.events_like("restart kube-apiserver").is_empty(),
        "a worker's arrival restarted an API server"
    );

    // Again: in the cluster already, nothing changes.
    f.fake.clear_events();
    let again = add_w2(&opts).unwrap();
    assert!(
        again.steps[0].starts_with("w2 is in the cluster already"),
        "{:?}",
        again.steps
    );
    assert_eq!(again.deploy.changed(), 0, "{}", again.deploy.table());

    // A name the inventory lacks is refused, naming the file, before anything happens.
    let e = block_on(add(
        &inv,
        "w9",
        crate::render::render(&inv, &pki).unwrap(),
        c.clone(),
        p.clone(),
        &opts,
        &Events::none("t"),
    ))
    .unwrap_err();
    assert!(e.to_string().contains("w9 is not in t.toml"), "{e}");
}

/// `node add` of a master: it joins etcd (as a learner, then promoted) and the report names
/// its member voting, with every member healthy.
#[test]
fn a_new_master_is_added_and_votes_in_etcd() {
    use super::node::{AddOptions, add};
    let mut f = deployed(&[Phase::Files, Phase::Etcd, Phase::Lb, Phase::ControlPlane]);
    let text = crate::testing::INVENTORY.replace(
        "[[nodes]]\nname = \"lb\"",
        "[[nodes]]\nname = \"m4\"\naddress = \"10.0.0.16\"\nroles = [\"master\"]\n\n[[nodes]]\nname = \"lb\"",
    );
    let (inv, pki) = f.grow(&text);
    let (c, p): (Arc<dyn Connector>, Arc<dyn Probe>) = (f.fake.clone(), f.fake.clone());
    let opts = AddOptions {
        deploy: DeployOptions {
            phases: vec![Phase::Files, Phase::Etcd, Phase::Lb, Phase::ControlPlane],
            etcd_timeout: Duration::from_secs(2),
            api_timeout: Duration::from_secs(2),
            ..DeployOptions::default()
        },
        ready_timeout: Duration::from_secs(3),
    };
    let r = block_on(add(
        &inv,
        "m4",
        crate::render::render(&inv, &pki).unwrap(),
        c,
        p,
        &opts,
        &Events::none("t"),
    ))
    .unwrap();
    assert!(r.deploy.failed().is_empty(), "{}", r.deploy.table());
    assert!(
        r.steps[0].contains("etcd member add as a learner")
            && r.steps[1].starts_with("etcd: wait until m4 votes"),
        "{:?}",
        r.steps
    );
    let member = r.member.unwrap();
    assert!(
        member.starts_with("m4 (") && member.ends_with("votes, 4 members healthy"),
        "{member}"
    );
    assert!(
        f.fake
            .members()
            .iter()
            .any(|m| m.name == "m4" && !m.learner)
    );
}
