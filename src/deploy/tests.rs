//! The phase runner against in-memory nodes ([`FakeCluster`]): what is sent, what starts and
//! restarts in which order, and what stops a deploy — without root, SSH or machines.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::testing::{Fixture, block_on};

fn opts(phases: &[Phase]) -> DeployOptions {
    DeployOptions {
        phases: phases.to_vec(),
        etcd_timeout: Duration::from_secs(2),
        api_timeout: Duration::from_secs(2),
        ..DeployOptions::default()
    }
}

fn run(f: &Fixture, o: &DeployOptions) -> Result<DeployReport, DeployError> {
    let connector: Arc<dyn Connector> = f.fake.clone();
    let probe: Arc<dyn Probe> = f.fake.clone();
    block_on(deploy(
        &f.inv,
        f.rendered(),
        connector,
        probe,
        o,
        crate::events::Events::none("deploy"),
    ))
}

fn host<'a>(r: &'a DeployReport, node: &str) -> &'a HostOutcome {
    r.hosts.iter().find(|h| h.node == node).unwrap()
}

const ETCD_LB: [Phase; 2] = [Phase::Etcd, Phase::Lb];

#[test]
fn a_first_deploy_places_every_file_and_starts_etcd_members_together() {
    let f = Fixture::new();
    let r = run(&f, &opts(&ETCD_LB)).unwrap();
    assert!(r.failed().is_empty(), "{}", r.table());
    for m in ["m1", "m2", "m3"] {
        assert_eq!(host(&r, m).restarted, ["etcd"], "{m}");
        let n = f.fake.node(m);
        assert!(n.unit_active("etcd") && n.units["etcd"].enabled);
        // Exactly the rendered files of the phases, with their modes.
        for file in crate::plan::files_in_phases(&f.rendered(), m, &opts(&ETCD_LB).selected()) {
            let got = &n.files[&file.path];
            assert_eq!(
                (got.contents.as_slice(), got.mode, got.owner.as_str()),
                (&file.contents[..], file.mode, "root:root"),
                "{m}: {}",
                file.path
            );
        }
        assert!(
            !n.files
                .contains_key("/etc/systemd/system/kube-apiserver.service"),
            "{m}: a file of another phase"
        );
    }
    assert_eq!(host(&r, "lb").restarted, ["haproxy"]);
    assert_eq!(host(&r, "w1").changed, 0);
    // Bootstrap: every member's start was sent before deploy waited on any (each start needs
    // the others for quorum), all of them after one daemon-reload each.
    let events = f.fake.events();
    let starts: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.what == "restart etcd")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(starts.len(), 3, "{events:?}");
    assert_eq!(r.etcd.len(), 3);
    assert!(crate::probe::healthy(&r.etcd), "{:?}", r.etcd);
}

#[test]
fn a_second_deploy_changes_and_restarts_nothing() {
    let f = Fixture::new();
    run(&f, &opts(&ETCD_LB)).unwrap();
    f.fake.clear_events();
    let r = run(&f, &opts(&ETCD_LB)).unwrap();
    assert_eq!(r.changed(), 0);
    assert!(
        r.hosts.iter().all(|h| h.restarted.is_empty()),
        "{}",
        r.table()
    );
    assert!(
        r.table()
            .ends_with("0 changes, 0 restarts, 0 of 5 hosts failed"),
        "{}",
        r.table()
    );
    let changes: Vec<_> = f
        .fake
        .events()
        .into_iter()
        .filter(|e| e.what != "install 0 files")
        .collect();
    assert!(changes.is_empty(), "{changes:?}");
}

/// Makes every etcd member's server certificate on the node differ from the rendered one.
fn stale_etcd_certs(f: &Fixture) {
    for m in ["m1", "m2", "m3"] {
        f.fake
            .node(m)
            .files
            .get_mut("/etc/etcd/pki/server.crt")
            .unwrap()
            .contents = b"old".to_vec();
    }
}

#[test]
fn running_members_restart_one_at_a_time_each_healthy_before_the_next() {
    let f = Fixture::new();
    run(&f, &opts(&ETCD_LB)).unwrap();
    stale_etcd_certs(&f);
    f.fake.clear_events();
    let r = run(&f, &opts(&ETCD_LB)).unwrap();
    assert!(r.failed().is_empty(), "{}", r.table());
    assert_eq!(
        f.fake.events_like("restart etcd"),
        ["m1: restart etcd", "m2: restart etcd", "m3: restart etcd"]
    );
    // Between two restarts the cluster was asked, and healthy: the probe's view is in the
    // report, and no member restarted while another was down (the fake restarts instantly, so
    // what is checked here is that no restart was issued to two members in one round).
    let installs: Vec<String> = f.fake.events_like("install");
    assert_eq!(installs.len(), 5, "{installs:?}");
    assert!(crate::probe::healthy(&r.etcd));
    let steps = f
        .fake
        .events()
        .into_iter()
        .map(|e| format!("{}: {}", e.node, e.what))
        .collect::<Vec<_>>();
    let first_restart = steps.iter().position(|s| s == "m1: restart etcd").unwrap();
    assert!(
        steps[..first_restart]
            .iter()
            .all(|s| !s.contains("restart")),
        "{steps:?}"
    );
}

#[test]
fn a_rolling_restart_stops_at_the_first_member_that_does_not_come_back() {
    let f = Fixture::new();
    run(&f, &opts(&ETCD_LB)).unwrap();
    stale_etcd_certs(&f);
    f.fake.node("m1").failing.insert("etcd".into());
    f.fake.clear_events();
    let r = run(&f, &opts(&ETCD_LB)).unwrap();
    assert_eq!(
        f.fake.events_like("restart etcd"),
        ["m1: restart etcd"],
        "m2 and m3 must keep running"
    );
    assert!(f.fake.node("m2").unit_active("etcd") && f.fake.node("m3").unit_active("etcd"));
    let m1 = host(&r, "m1");
    assert_eq!(m1.failed_phase, Some(Phase::Etcd));
    assert!(
        m1.error.as_deref().unwrap().contains("etcd.service failed"),
        "{m1:?}"
    );
    for m in ["m2", "m3"] {
        let e = host(&r, m).error.as_deref().unwrap();
        assert!(
            e.contains("not restarted: the rolling restart stopped at m1"),
            "{m}: {e}"
        );
    }
    // Nothing after etcd ran.
    assert!(
        f.fake.events_like("restart haproxy").is_empty()
            && f.fake.events_like("start haproxy").is_empty()
    );
}

#[test]
fn without_quorum_every_member_fails_with_its_own_cause_and_later_phases_do_not_run() {
    let f = Fixture::new();
    f.fake.node("m2").systemctl_error =
        Some("Failed to connect to bus: No such file or directory".into());
    f.fake.node("m3").failing.insert("etcd".into());
    let r = run(&f, &opts(&ETCD_LB)).unwrap();
    // m2's own cause is kept, not replaced by the timeout.
    let m2 = host(&r, "m2").error.as_deref().unwrap();
    assert!(m2.contains("Failed to connect to bus"), "{m2}");
    for m in ["m1", "m3"] {
        let e = host(&r, m)
            .error
            .as_deref()
            .unwrap_or_else(|| panic!("{m} did not fail"));
        assert!(e.starts_with("etcd not healthy within 2 s:"), "{m}: {e}");
        assert!(
            e.contains("m1: etcd is active")
                && e.contains("m3: etcd is failed")
                && e.contains("--- journal of etcd:"),
            "{m}: {e}"
        );
        assert!(
            e.contains("m1 (10.0.0.11): member"),
            "the members that answer are listed: {e}"
        );
    }
    assert!(
        host(&r, "lb").ok && host(&r, "lb").restarted.is_empty(),
        "the lb phase must not run without etcd"
    );
}

#[test]
fn api_servers_restart_one_at_a_time_each_ready_before_the_next() {
    let f = Fixture::new();
    let all = [Phase::Etcd, Phase::Lb, Phase::ControlPlane];
    run(&f, &opts(&all)).unwrap();
    for m in ["m1", "m2", "m3"] {
        f.fake
            .node(m)
            .files
            .get_mut("/etc/kubernetes/pki/apiserver.crt")
            .unwrap()
            .contents = b"old".to_vec();
    }
    f.fake.clear_events();
    let r = run(&f, &opts(&all)).unwrap();
    assert!(r.failed().is_empty(), "{}", r.table());
    assert_eq!(
        f.fake.events_like("restart kube-"),
        [
            "m1: restart kube-apiserver",
            "m2: restart kube-apiserver",
            "m3: restart kube-apiserver"
        ]
    );
    // An API server that does not come back stops the roll.
    for m in ["m1", "m2", "m3"] {
        f.fake
            .node(m)
            .files
            .get_mut("/etc/kubernetes/pki/apiserver.crt")
            .unwrap()
            .contents = b"old".to_vec();
    }
    f.fake.node("m2").failing.insert("kube-apiserver".into());
    f.fake.clear_events();
    let r = run(&f, &opts(&all)).unwrap();
    assert_eq!(
        f.fake.events_like("restart kube-apiserver"),
        ["m1: restart kube-apiserver", "m2: restart kube-apiserver"]
    );
    assert!(
        host(&r, "m3")
            .error
            .as_deref()
            .unwrap()
            .contains("stopped at m2")
    );
}

#[test]
fn preflight_stops_everything_before_any_change() {
    let f = Fixture::new();
    f.fake.node("w1").binaries.clear();
    let err = run(&f, &opts(&Phase::ALL)).unwrap_err();
    let DeployError::Preflight(problems) = &err else {
        panic!("{err}")
    };
    assert!(
        problems
            .iter()
            .any(|p| p.contains("w1: /usr/bin/kubelet (phase workers)")),
        "{problems:?}"
    );
    assert!(f.fake.events().is_empty(), "{:?}", f.fake.events());
}

#[test]
fn an_unreachable_host_fails_alone() {
    let f = Fixture::new();
    f.fake.node("w1").reachable = false;
    let r = run(&f, &opts(&ETCD_LB)).unwrap();
    assert_eq!(r.failed().len(), 1);
    let w1 = host(&r, "w1");
    assert_eq!(w1.failed_phase, Some(Phase::Preflight));
    assert!(
        w1.error
            .as_deref()
            .unwrap()
            .starts_with("cannot connect to 10.0.0.15:22"),
        "{w1:?}"
    );
    assert!(f.fake.node("m1").unit_active("etcd") && f.fake.node("lb").unit_active("haproxy"));
}

#[test]
fn a_dry_run_changes_nothing_and_says_how_it_would_restart() {
    let f = Fixture::new();
    run(&f, &opts(&ETCD_LB)).unwrap();
    stale_etcd_certs(&f);
    f.fake.clear_events();
    let mut o = opts(&ETCD_LB);
    o.dry_run = true;
    let r = run(&f, &o).unwrap();
    assert!(f.fake.events().is_empty(), "{:?}", f.fake.events());
    assert_eq!(r.plan.hosts["m1"].changes.len(), 1);
    assert!(
        r.steps.iter().any(|s| s == "etcd: restart etcd on m1, then m2, then m3, one at a time, each followed by every member healthy and one leader"),
        "{:?}",
        r.steps
    );
}

#[test]
fn addons_are_applied_on_the_first_master_once_its_api_server_answers() {
    let f = Fixture::new();
    let r = run(&f, &opts(&Phase::ALL)).unwrap();
    assert!(r.failed().is_empty(), "{}", r.table());
    assert_eq!(
        f.fake
            .events()
            .iter()
            .filter(|e| e.what.starts_with("kubectl") || e.what.starts_with("wait"))
            .map(|e| format!("{}: {}", e.node, e.what))
            .collect::<Vec<_>>(),
        [
            "m1: kubectl apply -f /etc/kubernetes/addons/apiserver-to-kubelet-rbac.yaml",
            "m1: kubectl apply -f /etc/kubernetes/addons/coredns.yaml",
            "m1: wait for deployment/coredns in kube-system to roll out",
        ]
    );
    // The kubelet access RBAC is the control plane's, applied before any worker starts.
    let events = f.fake.events_like("");
    let at = |what: &str| events.iter().position(|e| e.starts_with(what));
    assert!(
        at("m1: kubectl apply -f /etc/kubernetes/addons/apiserver-to-kubelet-rbac.yaml")
            < events
                .iter()
                .position(|e| e.starts_with("w1: ") && e.ends_with("start kubelet")),
        "{events:#?}"
    );
    for unit in ["containerd", "kubelet", "kube-proxy", "pod-routes"] {
        assert!(f.fake.node("w1").unit_active(unit), "{unit}");
    }
    // The API servers dial pod IPs: the masters route to the pod network too.
    for m in ["m1", "m2", "m3"] {
        assert!(f.fake.node(m).unit_active("pod-routes"), "{m}");
        assert!(!f.fake.node(m).unit_active("containerd"), "{m}");
    }
}

#[test]
fn the_dry_run_lists_every_addon_step_in_order_on_the_first_master() {
    let f = Fixture::new();
    let mut o = opts(&Phase::ALL);
    o.dry_run = true;
    let r = run(&f, &o).unwrap();
    let addons: Vec<&String> = r
        .steps
        .iter()
        .filter(|s| s.starts_with("addons:"))
        .collect();
    assert!(
        r.steps.iter().any(|s| s
            == "control-plane: kubelet access RBAC: kubectl apply -f /etc/kubernetes/addons/apiserver-to-kubelet-rbac.yaml on m1"),
        "{:#?}",
        r.steps
    );
    assert_eq!(
        addons,
        [
            "addons: CoreDNS: kubectl apply -f /etc/kubernetes/addons/coredns.yaml on m1",
            "addons: CoreDNS: wait for deployment/coredns in kube-system to roll out on m1",
        ]
    );
    assert!(f.fake.events().is_empty());
}

#[test]
fn an_addon_that_never_gets_ready_fails_the_phase_naming_it() {
    let f = Fixture::new();
    f.fake
        .node("m1")
        .unready
        .insert("deployment/coredns".into());
    let r = run(&f, &opts(&Phase::ALL)).unwrap();
    let failed = r.failed();
    assert_eq!(failed.len(), 1, "{}", r.table());
    assert_eq!(failed[0].node, "m1");
    assert_eq!(failed[0].failed_phase, Some(Phase::Addons));
    let e = failed[0].error.as_deref().unwrap();
    assert!(
        e.contains("addon CoreDNS: wait for deployment/coredns in kube-system to roll out failed"),
        "{e}"
    );
}

#[test]
fn image_tarballs_are_placed_and_imported_on_every_containerd_node_before_the_addons() {
    let images = tempfile::tempdir().unwrap();
    std::fs::write(images.path().join("coredns.tar"), b"an image archive").unwrap();
    std::fs::write(images.path().join("notes.txt"), b"not an image").unwrap();
    let text = crate::testing::INVENTORY.replacen(
        "[binaries]",
        &format!("[addons]\nimages_dir = {:?}\n\n[binaries]", images.path()),
        1,
    );
    let f = Fixture::with(&text);
    let rendered = f.rendered();
    let has = |node: &str| {
        rendered.hosts[node]
            .iter()
            .any(|file| file.path == "/var/lib/hardway/images/coredns.tar")
    };
    assert!(
        has("w1") && !has("m1") && !has("lb"),
        "the tarball goes where containerd runs, only"
    );
    assert!(
        !rendered.hosts["w1"]
            .iter()
            .any(|file| file.path.ends_with("notes.txt"))
    );
    run(&f, &opts(&Phase::ALL)).unwrap();
    let events: Vec<String> = f
        .fake
        .events()
        .iter()
        .map(|e| format!("{}: {}", e.node, e.what))
        .collect();
    let import = events
        .iter()
        .position(|e| e == "w1: import /var/lib/hardway/images/coredns.tar")
        .unwrap_or_else(|| panic!("{events:#?}"));
    let first_apply = events
        .iter()
        .position(|e| e.starts_with("m1: kubectl apply -f /etc/kubernetes/addons/coredns"))
        .unwrap();
    assert!(
        import < first_apply,
        "images are imported before the addons are applied"
    );
}

#[test]
fn a_node_of_a_cluster_with_another_pki_is_refused_before_anything_changes() {
    let f = Fixture::new();
    let all = [Phase::Etcd, Phase::Lb, Phase::ControlPlane];
    run(&f, &opts(&all)).unwrap();
    f.fake.clear_events();
    // The same inventory with another PKI directory: another CA, SA key and encryption key.
    let other = Fixture::with_another_pki();
    let (c, p): (Arc<dyn Connector>, Arc<dyn Probe>) = (f.fake.clone(), f.fake.clone());
    let err = block_on(deploy(
        &f.inv,
        other.rendered(),
        c,
        p,
        &opts(&all),
        crate::events::Events::none("deploy"),
    ))
    .unwrap_err();
    let DeployError::Preflight(problems) = &err else {
        panic!("{err}")
    };
    for want in [
        "m1: /etc/kubernetes/pki/ca.crt holds another cluster CA",
        "m1: /etc/kubernetes/pki/ca.key holds another cluster CA",
        "m2: /etc/etcd/pki/ca.crt holds another etcd CA",
        "m3: /etc/kubernetes/pki/sa.key holds another service-account key",
        "m1: /etc/kubernetes/encryption-config.yaml holds another Secrets encryption key",
        "lb: /etc/haproxy/pki/ca.crt holds another cluster CA",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(want)),
            "{want:?} not in {problems:#?}"
        );
    }
    assert!(f.fake.events().is_empty(), "{:?}", f.fake.events());
    // Only the keys matter in the encryption config: the same key in another file is fine.
    {
        let mut m1 = f.fake.node("m1");
        let cfg = m1
            .files
            .get_mut("/etc/kubernetes/encryption-config.yaml")
            .unwrap();
        cfg.contents = format!(
            "# edited by hand\n{}",
            String::from_utf8_lossy(&cfg.contents)
        )
        .into_bytes();
    }
    let r = run(&f, &opts(&all)).unwrap();
    assert!(r.failed().is_empty(), "{}", r.table());
}

#[test]
fn a_dry_run_diff_shows_exactly_the_changed_lines_and_no_secret() {
    let f = Fixture::new();
    run(&f, &opts(&ETCD_LB)).unwrap();
    let text = crate::testing::INVENTORY.replace(
        "address = \"10.0.0.14\"\n\n[binaries]",
        "address = \"10.0.0.14\"\nport = 7443\n\n[binaries]",
    );
    let inv = crate::inventory::parse(std::path::Path::new("t.toml"), &text).unwrap();
    let (pki, _) =
        crate::pki::generate(&inv, &f.pki_dir(), crate::pki::GenerateOptions::default()).unwrap();
    let rendered = crate::render::render(&inv, &pki).unwrap();
    f.fake.clear_events();
    let mut o = opts(&ETCD_LB);
    o.dry_run = true;
    o.diff = true;
    let (c, p): (Arc<dyn Connector>, Arc<dyn Probe>) = (f.fake.clone(), f.fake.clone());
    let r = block_on(deploy(
        &inv,
        rendered,
        c,
        p,
        &o,
        crate::events::Events::none("deploy"),
    ))
    .unwrap();
    assert_eq!(r.diffs.keys().collect::<Vec<_>>(), ["lb"], "{:#?}", r.diffs);
    let d = &r.diffs["lb"];
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(d[0].path, "/etc/haproxy/haproxy.cfg");
    let changed: Vec<&str> = d[0]
        .diff
        .lines()
        .filter(|l| {
            (l.starts_with('+') || l.starts_with('-'))
                && !l.starts_with("+++")
                && !l.starts_with("---")
        })
        .collect();
    assert_eq!(
        changed,
        ["-    bind *:6443", "+    bind *:7443"],
        "{}",
        d[0].diff
    );
    assert!(
        f.fake.events_like("install").is_empty(),
        "a dry run installed files"
    );
}

#[test]
fn diffs_mask_secrets_and_never_show_a_private_key() {
    let f = Fixture::new();
    let phases = [Phase::Files, Phase::Etcd, Phase::ControlPlane];
    run(&f, &opts(&phases)).unwrap();
    for path in [
        "/etc/kubernetes/admin.kubeconfig",
        "/etc/kubernetes/pki/apiserver.key",
        "/etc/kubernetes/encryption-config.yaml",
    ] {
        f.fake.node("m1").files.get_mut(path).unwrap().contents = b"old: x\n".to_vec();
    }
    // A certificate the node has from another issue (here: another certificate's PEM).
    let other = f.pki.cert("kube-scheduler").cert_pem.clone();
    f.fake
        .node("m1")
        .files
        .get_mut("/etc/kubernetes/pki/apiserver.crt")
        .unwrap()
        .contents = other.into_bytes();
    let mut o = opts(&phases);
    o.dry_run = true;
    o.diff = true;
    let r = run(&f, &o).unwrap();
    let all: String = r.diffs["m1"]
        .iter()
        .map(|d| format!("{}\n{}\n", d.path, d.diff))
        .collect();
    assert!(
        all.contains("/etc/kubernetes/pki/apiserver.key\nprivate key: not shown"),
        "{all}"
    );
    assert!(
        all.contains("client-key-data: <masked>") && all.contains("secret: <masked>"),
        "{all}"
    );
    // Certificates are public and said for what they are: the diff names both serials.
    let crt = &r.diffs["m1"]
        .iter()
        .find(|d| d.path == "/etc/kubernetes/pki/apiserver.crt")
        .expect("the certificate differs")
        .diff;
    let serial = |name: &str| {
        crate::pki::CertInfo::parse(&f.pki.cert(name).cert_pem)
            .unwrap()
            .serial
    };
    assert!(
        crt.contains("-<certificate CN=system:kube-scheduler O=system:kube-scheduler, issuer CN=")
            && crt.contains(&serial("kube-scheduler"))
            && crt.contains("+<certificate CN=kube-apiserver")
            && crt.contains(&serial("apiserver")),
        "{crt}"
    );
    assert!(
        all.contains("+      client-certificate-data: <certificate CN=admin O=system:masters"),
        "{all}"
    );
    for secret in [
        f.pki.cert("admin").key_pem.lines().nth(1).unwrap(),
        f.pki.encryption_key_b64.as_str(),
    ] {
        assert!(!all.contains(secret), "a diff shows key material");
    }
}

/// The test inventory with two more masters.
fn five_masters() -> String {
    crate::testing::INVENTORY.replace(
        "[[nodes]]\nname = \"lb\"",
        "[[nodes]]\nname = \"m4\"\naddress = \"10.0.0.16\"\nroles = [\"master\"]\n\n[[nodes]]\nname = \"m5\"\naddress = \"10.0.0.17\"\nroles = [\"master\"]\n\n[[nodes]]\nname = \"lb\"",
    )
}

/// A three-member cluster deployed, then an inventory of five masters with its PKI, and fake
/// nodes for the two new ones.
fn grown_to_five_masters() -> (Fixture, crate::inventory::Inventory, crate::pki::Pki) {
    let mut f = Fixture::new();
    run(&f, &opts(&[Phase::Etcd])).unwrap();
    let (inv, pki) = f.grow(&five_masters());
    (f, inv, pki)
}

#[test]
fn a_member_that_cannot_join_fails_and_those_after_it_say_they_did_not_join() {
    let etcd = [Phase::Etcd];
    let (f, inv, pki) = grown_to_five_masters();
    f.fake
        .unhealthy_adds
        .store(usize::MAX, std::sync::atomic::Ordering::SeqCst);
    let (c, p): (Arc<dyn Connector>, Arc<dyn Probe>) = (f.fake.clone(), f.fake.clone());
    let r = block_on(deploy(
        &inv,
        crate::render::render(&inv, &pki).unwrap(),
        c,
        p,
        &opts(&etcd),
        crate::events::Events::none("deploy"),
    ))
    .unwrap();
    let failed: Vec<(String, String)> = r
        .failed()
        .iter()
        .map(|h| (h.node.clone(), h.error.clone().unwrap_or_default()))
        .collect();
    assert_eq!(failed.len(), 2, "{}", r.table());
    assert!(
        failed[0].0 == "m4" && failed[0].1.contains("unhealthy cluster"),
        "{failed:?}"
    );
    assert_eq!(
        failed[1],
        (
            "m5".to_string(),
            "not joined: m4 failed to join first".to_string()
        )
    );
    assert_eq!(f.fake.members().len(), 3, "nobody was added");
}

#[test]
fn new_members_join_a_running_cluster_one_at_a_time_and_nobody_else_restarts() {
    let etcd = [Phase::Etcd];
    let (f, inv, pki) = grown_to_five_masters();
    f.fake.clear_events();
    let mut o = opts(&etcd);
    o.snapshot_dir = Some(f.dir.path().join("snapshots"));
    // etcd refuses the first two adds as a cluster whose members were just restarted does.
    f.fake
        .unhealthy_adds
        .store(2, std::sync::atomic::Ordering::SeqCst);
    let (c, p): (Arc<dyn Connector>, Arc<dyn Probe>) = (f.fake.clone(), f.fake.clone());
    let r = block_on(deploy(
        &inv,
        crate::render::render(&inv, &pki).unwrap(),
        c,
        p,
        &o,
        crate::events::Events::none("deploy"),
    ))
    .unwrap();
    assert!(r.failed().is_empty(), "{}", r.table());
    // A snapshot first, then each new member added as a learner (asked again while etcd says
    // its cluster is not yet healthy), started, promoted — m4 done before m5 begins; the
    // running members are not restarted (their etcd.env changed, but it is only read on a
    // first start).
    let steps: Vec<String> = f
        .fake
        .events()
        .into_iter()
        .filter(|e| {
            e.what.starts_with("member ") || e.what == "snapshot" || e.what.ends_with(" etcd")
        })
        .map(|e| format!("{}: {}", e.node, e.what))
        .collect();
    assert_eq!(
        steps,
        [
            "etcd: snapshot",
            "etcd: member add https://10.0.0.16:2380 refused",
            "etcd: member add https://10.0.0.16:2380 refused",
            "etcd: member add https://10.0.0.16:2380 (learner)",
            "m4: restart etcd",
            "etcd: member promote m4",
            "etcd: member add https://10.0.0.17:2380 (learner)",
            "m5: restart etcd",
            "etcd: member promote m5",
        ]
    );
    let members: Vec<(String, bool)> = f
        .fake
        .members()
        .into_iter()
        .map(|m| (m.name, m.learner))
        .collect();
    assert_eq!(members.len(), 5);
    assert!(members.iter().all(|(_, learner)| !learner), "{members:?}");
    assert!(
        r.snapshot.as_ref().is_some_and(|p| p.is_file()),
        "{:?}",
        r.snapshot
    );
    for m in ["m4", "m5"] {
        assert!(
            !f.fake
                .node(m)
                .files
                .contains_key(crate::components::ETCD_JOIN_ENV),
            "{m} keeps its join file"
        );
    }
    assert!(crate::probe::healthy(&r.etcd), "{:?}", r.etcd);
}

/// `install = "apt"`: preflight installs what a node lacks (its tools appear), a node without
/// it only gets the package named; a dry run installs nothing and says what it would.
#[test]
fn preflight_installs_missing_packages_where_the_inventory_says_apt() {
    let text = crate::testing::INVENTORY.replace(
        "name = \"w1\"\naddress = \"10.0.0.15\"\nroles = [\"worker\"]",
        "name = \"w1\"\naddress = \"10.0.0.15\"\nroles = [\"worker\"]\ninstall = \"apt\"",
    );
    let f = Fixture::with(&text);
    assert_eq!(
        f.inv.nodes.iter().find(|n| n.name == "w1").unwrap().install,
        Some(crate::inventory::Installer::Apt)
    );
    for t in ["conntrack", "iptables"] {
        f.fake.node("w1").tools.remove(t);
    }
    f.fake.node("lb").tools.remove("haproxy");
    f.fake.node("lb").binaries.remove("/usr/sbin/haproxy");

    // The lb node has no install setting: its missing HAProxy is named with its package.
    let o = opts(&[Phase::Lb, Phase::Workers]);
    let err = run(&f, &o).unwrap_err().to_string();
    assert!(
        err.contains("lb: /usr/sbin/haproxy (phase lb; Debian package haproxy)"),
        "{err}"
    );
    assert!(
        !err.contains("w1:"),
        "w1's packages were to be installed: {err}"
    );
    let installs: Vec<String> = f
        .fake
        .events()
        .into_iter()
        .filter(|e| e.what.starts_with("install packages"))
        .map(|e| format!("{}: {}", e.node, e.what))
        .collect();
    assert_eq!(installs, ["w1: install packages conntrack iptables"]);

    // A dry run on a fresh fixture: nothing installed, nothing missing reported for w1.
    let f = Fixture::with(&text);
    f.fake.node("w1").tools.remove("conntrack");
    let r = run(
        &f,
        &DeployOptions {
            dry_run: true,
            ..opts(&[Phase::Workers])
        },
    )
    .unwrap();
    assert!(r.failed().is_empty(), "{}", r.table());
    assert!(
        !f.fake
            .events()
            .iter()
            .any(|e| e.what.starts_with("install packages"))
    );
    assert!(!f.fake.node("w1").tools.contains("conntrack"));
}

/// `install = "apt"` on a worker without containerd: apt's candidate is asked first, and only a
/// containerd that fits the version table (and the line its config is rendered for) is
/// installed; anything else fails the node naming what apt offers and what is needed, with
/// nothing installed.
#[test]
fn the_distributions_containerd_is_installed_only_when_it_fits_the_version_table() {
    let text = crate::testing::INVENTORY.replace(
        "name = \"w1\"\naddress = \"10.0.0.15\"\nroles = [\"worker\"]",
        "name = \"w1\"\naddress = \"10.0.0.15\"\nroles = [\"worker\"]\ninstall = \"apt\"",
    );
    let minor = Fixture::with(&text)
        .inv
        .cluster
        .kubernetes_version
        .supported()
        .unwrap();
    let attempt = |candidate: &str| {
        let f = Fixture::with(&text);
        {
            let mut w1 = f.fake.node("w1");
            w1.binaries.remove("/usr/bin/containerd");
            w1.tools.remove("containerd");
            w1.apt_candidates
                .insert("containerd".into(), candidate.into());
        }
        let r = run(&f, &opts(&[Phase::Workers]));
        let installs: Vec<String> = f
            .fake
            .events()
            .into_iter()
            .filter(|e| e.what.starts_with("install packages"))
            .map(|e| e.what)
            .collect();
        (r, installs)
    };
    // Debian trixie's containerd: too old for any supported minor's table.
    let (r, installs) = attempt("1.7.24~ds1-6+b4");
    let r = r.unwrap();
    let w1 = r.hosts.iter().find(|h| h.node == "w1").unwrap();
    let e = w1.error.clone().unwrap_or_default();
    assert!(
        !w1.ok
            && e.contains("apt offers containerd 1.7.24~ds1-6+b4; Kubernetes")
            && e.contains(&minor.containerd[0].to_string())
            && e.contains("nothing was installed"),
        "{e}"
    );
    assert!(installs.is_empty(), "{installs:?}");
    // A newer line than the config is rendered for: the inventory must say so.
    let newest = minor
        .containerd
        .iter()
        .max_by_key(|m| (m.major, m.minor))
        .unwrap();
    let (r, installs) = attempt(&format!("{}.{}.9-1", newest.major, newest.minor + 1));
    let e = r
        .unwrap()
        .hosts
        .iter()
        .find(|h| h.node == "w1")
        .unwrap()
        .error
        .clone();
    assert!(
        e.as_deref().is_some_and(|e| e.contains(&format!(
            "set containerd.version = \"{}.{}\"",
            newest.major,
            newest.minor + 1
        ))),
        "{e:?}"
    );
    assert!(installs.is_empty(), "{installs:?}");
    // One that fits: installed with the rest, and the deploy goes on.
    let line = Fixture::with(&text).inv.containerd.version;
    let (r, installs) = attempt(&format!("{}.{}.7~ds1-1", line.major, line.minor));
    let r = r.unwrap();
    assert!(r.failed().is_empty(), "{}", r.table());
    assert_eq!(installs, ["install packages containerd"]);

    // The CNI plugins (no version table): Debian's package, into cni.bin_dir's /usr/lib/cni.
    let f = Fixture::with(&text);
    {
        let mut w1 = f.fake.node("w1");
        w1.binaries.remove("/usr/lib/cni/bridge");
        w1.tools.remove("bridge");
        w1.apt_candidates.insert(
            "containernetworking-plugins".into(),
            "1.1.1+ds1-3+b17".into(),
        );
    }
    let r = run(&f, &opts(&[Phase::Workers])).unwrap();
    assert!(r.failed().is_empty(), "{}", r.table());
    assert!(
        f.fake
            .events()
            .iter()
            .any(|e| e.node == "w1" && e.what == "install packages containernetworking-plugins"),
        "{:?}",
        f.fake.events()
    );
}

/// Collects the summary as well as the events.
#[derive(Default)]
struct Everything {
    events: crate::events::Recorder,
    summary: std::sync::Mutex<Option<crate::events::Summary>>,
}

impl crate::events::Sink for Everything {
    fn event(&self, e: &crate::events::Event) {
        self.events.event(e);
    }
    fn summary(&self, s: &crate::events::Summary) {
        *self.summary.lock().unwrap() = Some(s.clone());
    }
}

/// A run that changes nothing says so everywhere (issue 24's "trustworthy counts"): the report's
/// table and counts, the summary the jsonl stream ends with, every event's status, the dry
/// run's plan and steps, and what the nodes were asked to do.
#[test]
fn a_run_that_changes_nothing_says_so_in_every_view() {
    let f = Fixture::new();
    let all = [
        Phase::Files,
        Phase::Etcd,
        Phase::Lb,
        Phase::ControlPlane,
        Phase::Workers,
    ];
    run(&f, &opts(&all)).unwrap();
    f.fake.clear_events();
    for dry_run in [false, true] {
        let sink = Arc::new(Everything::default());
        let connector: Arc<dyn Connector> = f.fake.clone();
        let probe: Arc<dyn Probe> = f.fake.clone();
        let o = DeployOptions {
            dry_run,
            ..opts(&all)
        };
        let r = block_on(deploy(
            &f.inv,
            f.rendered(),
            connector,
            probe,
            &o,
            crate::events::Events::new("deploy", vec![sink.clone()]),
        ))
        .unwrap();
        let what = if dry_run { "dry run" } else { "run" };
        assert!(
            r.table()
                .ends_with("0 changes, 0 restarts, 0 of 5 hosts failed"),
            "{what}: {}",
            r.table()
        );
        let summary = sink.summary.lock().unwrap().clone().expect("a summary");
        for count in ["changes", "restarts", "starts"] {
            assert_eq!(
                summary.counts.get(count),
                Some(&0),
                "{what}: {count} in {:?}",
                summary.counts
            );
        }
        let changed: Vec<String> = sink
            .events
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.status == crate::events::Status::Changed)
            .map(|e| format!("{:?} {:?} {}", e.host, e.phase, e.step))
            .collect();
        assert!(
            changed.is_empty(),
            "{what}: events say changed: {changed:?}"
        );
        for (host, plan) in &r.plan.hosts {
            assert!(
                plan.changes.is_empty() && !plan.daemon_reload,
                "{what}: {host}: {plan:?}"
            );
            assert!(
                plan.units.iter().all(|u| !u.restart),
                "{what}: {host}: {:?}",
                plan.units
            );
        }
        let busy: Vec<&String> = r
            .steps
            .iter()
            .filter(|s| s.contains("start") || s.contains("restart"))
            .collect();
        assert!(busy.is_empty(), "{what}: steps {busy:?}");
    }
    let asked: Vec<_> = f
        .fake
        .events()
        .into_iter()
        .filter(|e| e.what != "install 0 files")
        // The control plane's kubelet access RBAC is applied on every run; kubectl finds it
        // unchanged (nothing is reported changed above).
        .filter(|e| {
            e.what != "kubectl apply -f /etc/kubernetes/addons/apiserver-to-kubelet-rbac.yaml"
        })
        .collect();
    assert!(asked.is_empty(), "{asked:?}");
}

/// The fixture's files with `kubelet` as w1's kubelet binary (as `binaries.local_dir` adds it).
fn with_kubelet(f: &Fixture, kubelet: &[u8]) -> crate::render::Rendered {
    let mut r = f.rendered();
    let files = r.hosts.get_mut("w1").unwrap();
    files.push(crate::render::File {
        path: crate::components::ComponentId::Kubelet
            .get()
            .binary_path(&f.inv),
        mode: 0o755,
        contents: kubelet.to_vec().into(),
        units: vec!["kubelet"],
        anchor: None,
        restarts: true,
        phase: Some(Phase::Workers),
    });
    files.sort_by(|a, b| a.path.cmp(&b.path));
    r
}

fn run_rendered(f: &Fixture, rendered: crate::render::Rendered, o: &DeployOptions) -> DeployReport {
    block_on(deploy(
        &f.inv,
        rendered,
        f.fake.clone(),
        f.fake.clone(),
        o,
        crate::events::Events::none("deploy"),
    ))
    .unwrap()
}

/// A new kubelet on a running worker is an upgrade: the node is cordoned and drained (a
/// budget's refusals waited out, the DaemonSet pod left) before its kubelet restarts, Ready
/// again, then uncordoned; the dry run says so. A bare pod stops the drain before anything
/// restarts, and the node is uncordoned; `--no-drain` restarts in place.
#[test]
fn a_worker_upgrade_drains_the_node_first_and_uncordons_it_after() {
    use crate::remote::fake::FakePod;
    let f = Fixture::new();
    let all = &Phase::ALL[..];
    // What the kubelet says of its release, and so what its Node reports.
    let kubelet = crate::components::ComponentId::Kubelet
        .get()
        .binary_path(&f.inv);
    let release = format!("Kubernetes v{}", f.inv.cluster.kubernetes_version);
    f.fake.node("w1").versions.insert(kubelet, release);
    let r = run_rendered(&f, with_kubelet(&f, b"kubelet 1"), &opts(all));
    assert!(r.failed().is_empty(), "{}", r.table());
    let pods = |bare: bool| {
        let mut web = FakePod::new("w1", "web-1", Some("ReplicaSet"));
        web.refusals = 2;
        let mut pods = vec![web, FakePod::new("w1", "speaker-1", Some("DaemonSet"))];
        if bare {
            pods.push(FakePod::new("w1", "debug", None));
        }
        f.fake.kube.lock().unwrap().pods = pods;
    };
    let quick = DeployOptions {
        drain: Some(crate::kube::DrainOptions {
            timeout: Duration::from_secs(2),
            force: false,
            retry: Duration::from_millis(20),
        }),
        ..opts(all)
    };

    // A bare pod: refused before anything restarts, and the node is schedulable again.
    pods(true);
    f.fake.clear_events();
    let r = run_rendered(&f, with_kubelet(&f, b"kubelet 2"), &quick);
    let e = host(&r, "w1").error.clone().unwrap_or_default();
    assert!(
        e.contains("default/debug") && e.contains("uncordoned"),
        "{e}"
    );
    assert!(f.fake.events_like("restart kubelet").is_empty());
    assert!(f.fake.kube.lock().unwrap().cordoned.is_empty());

    // Without it: the dry run's account, then the upgrade in that order.
    pods(false);
    let dry = run_rendered(
        &f,
        with_kubelet(&f, b"kubelet 3"),
        &DeployOptions {
            dry_run: true,
            ..quick.clone()
        },
    );
    assert!(
        dry.steps
            .iter()
            .any(|s| s.starts_with("workers: upgrade w1, one at a time: cordon and drain")),
        "{:#?}",
        dry.steps
    );
    // The controller-manager restarts in the same run: the drain waits until it leads again
    // and its EndpointSlice controller works (a canary Service gets its slice).
    for m in ["m1", "m2", "m3"] {
        f.fake
            .node(m)
            .files
            .get_mut("/etc/kubernetes/controller-manager.kubeconfig")
            .unwrap()
            .contents = b"old".to_vec();
    }
    f.fake.clear_events();
    let r = run_rendered(&f, with_kubelet(&f, b"kubelet 3"), &quick);
    assert!(r.failed().is_empty(), "{}", r.table());
    assert_eq!(host(&r, "w1").evicted, ["default/web-1"]);
    let seen: Vec<String> = f
        .fake
        .events()
        .into_iter()
        .map(|e| format!("{}: {}", e.node, e.what))
        .collect();
    let at = |what: &str| {
        seen.iter()
            .position(|e| e == what)
            .unwrap_or_else(|| panic!("no {what:?} in {seen:#?}"))
    };
    assert!(at("m3: restart kube-controller-manager") < at("api: create service"));
    assert!(at("api: delete service") < at("api: cordon w1"));
    let events: Vec<String> = f
        .fake
        .events()
        .into_iter()
        .map(|e| format!("{}: {}", e.node, e.what))
        .filter(|e| e.starts_with("api: ") || e.contains("restart kubelet"))
        .collect();
    assert_eq!(
        events[2..],
        [
            "api: cordon w1",
            "api: evict default/web-1",
            "w1: restart kubelet",
            "api: uncordon w1"
        ]
    );
    let kube = f.fake.kube.lock().unwrap();
    assert_eq!(kube.pods.len(), 1, "the DaemonSet pod stays");
    drop(kube);

    // --no-drain: restarted in place, nothing asked of the API.
    pods(false);
    f.fake.clear_events();
    let r = run_rendered(
        &f,
        with_kubelet(&f, b"kubelet 4"),
        &DeployOptions {
            drain: None,
            ..opts(all)
        },
    );
    assert!(r.failed().is_empty(), "{}", r.table());
    assert!(f.fake.events_like("cordon").is_empty());
    assert_eq!(
        f.fake.events_like("restart kubelet"),
        ["w1: restart kubelet"]
    );
}

/// HAProxy is reloaded in place when only its config or certificates change (its listeners
/// stay open: a restart refuses clients for a moment), restarted when its unit file changed.
#[test]
fn haproxy_is_reloaded_for_a_new_config_and_restarted_for_a_new_unit() {
    let f = Fixture::new();
    run(&f, &opts(&ETCD_LB)).unwrap();
    let stale = |path: &str| {
        f.fake.node("lb").files.get_mut(path).unwrap().contents = b"old".to_vec();
    };
    stale("/etc/haproxy/haproxy.cfg");
    f.fake.clear_events();
    let dry = run(
        &f,
        &DeployOptions {
            dry_run: true,
            ..opts(&ETCD_LB)
        },
    )
    .unwrap();
    assert!(
        dry.steps
            .iter()
            .any(|s| s == "lb: reload haproxy on lb (in place: it keeps its listening sockets)"),
        "{:#?}",
        dry.steps
    );
    let r = run(&f, &opts(&ETCD_LB)).unwrap();
    assert!(r.failed().is_empty(), "{}", r.table());
    assert_eq!(f.fake.events_like("reload haproxy"), ["lb: reload haproxy"]);
    assert!(f.fake.events_like("restart haproxy").is_empty());
    assert_eq!(host(&r, "lb").reloaded, ["haproxy"]);
    assert!(r.table().contains("haproxy (reload)"), "{}", r.table());

    // Still "reloading" when first asked after systemctl returned: waited for, not a failure
    // (it failed the cluster CA's rotation on the real HAProxy).
    stale("/etc/haproxy/haproxy.cfg");
    f.fake.node("lb").units.get_mut("haproxy").unwrap().settling = 3;
    let r = run(&f, &opts(&ETCD_LB)).unwrap();
    assert!(r.failed().is_empty(), "{}", r.table());
    assert_eq!(
        f.fake.node("lb").units["haproxy"].settling,
        0,
        "asked until active"
    );

    stale("/etc/haproxy/haproxy.cfg");
    stale("/etc/systemd/system/haproxy.service");
    f.fake.clear_events();
    run(&f, &opts(&ETCD_LB)).unwrap();
    assert_eq!(
        f.fake.events_like("restart haproxy"),
        ["lb: restart haproxy"]
    );
    assert!(f.fake.events_like("reload haproxy").is_empty());
}
