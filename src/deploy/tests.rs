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
    block_on(deploy(&f.inv, f.rendered(), connector, probe, o))
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
            assert_eq!((&got.contents, got.mode, got.owner.as_str()), (&file.contents, file.mode, "root:root"), "{m}: {}", file.path);
        }
        assert!(!n.files.contains_key("/etc/systemd/system/kube-apiserver.service"), "{m}: a file of another phase");
    }
    assert_eq!(host(&r, "lb").restarted, ["haproxy"]);
    assert_eq!(host(&r, "w1").changed, 0);
    // Bootstrap: every member's start was sent before deploy waited on any (each start needs
    // the others for quorum), all of them after one daemon-reload each.
    let events = f.fake.events();
    let starts: Vec<usize> = events.iter().enumerate().filter(|(_, e)| e.what == "restart etcd").map(|(i, _)| i).collect();
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
    assert!(r.hosts.iter().all(|h| h.restarted.is_empty()), "{}", r.table());
    assert!(r.table().ends_with("0 changes, 0 restarts, 0 of 5 hosts failed"), "{}", r.table());
    let changes: Vec<_> = f.fake.events().into_iter().filter(|e| e.what != "install 0 files").collect();
    assert!(changes.is_empty(), "{changes:?}");
}

/// Makes every etcd member's server certificate on the node differ from the rendered one.
fn stale_etcd_certs(f: &Fixture) {
    for m in ["m1", "m2", "m3"] {
        f.fake.node(m).files.get_mut("/etc/etcd/pki/server.crt").unwrap().contents = b"old".to_vec();
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
    assert_eq!(f.fake.events_like("restart etcd"), ["m1: restart etcd", "m2: restart etcd", "m3: restart etcd"]);
    // Between two restarts the cluster was asked, and healthy: the probe's view is in the
    // report, and no member restarted while another was down (the fake restarts instantly, so
    // what is checked here is that no restart was issued to two members in one round).
    let installs: Vec<String> = f.fake.events_like("install");
    assert_eq!(installs.len(), 5, "{installs:?}");
    assert!(crate::probe::healthy(&r.etcd));
    let steps = f.fake.events().into_iter().map(|e| format!("{}: {}", e.node, e.what)).collect::<Vec<_>>();
    let first_restart = steps.iter().position(|s| s == "m1: restart etcd").unwrap();
    assert!(steps[..first_restart].iter().all(|s| !s.contains("restart")), "{steps:?}");
}

#[test]
fn a_rolling_restart_stops_at_the_first_member_that_does_not_come_back() {
    let f = Fixture::new();
    run(&f, &opts(&ETCD_LB)).unwrap();
    stale_etcd_certs(&f);
    f.fake.node("m1").failing.insert("etcd".into());
    f.fake.clear_events();
    let r = run(&f, &opts(&ETCD_LB)).unwrap();
    assert_eq!(f.fake.events_like("restart etcd"), ["m1: restart etcd"], "m2 and m3 must keep running");
    assert!(f.fake.node("m2").unit_active("etcd") && f.fake.node("m3").unit_active("etcd"));
    let m1 = host(&r, "m1");
    assert_eq!(m1.failed_phase, Some(Phase::Etcd));
    assert!(m1.error.as_deref().unwrap().contains("etcd.service failed"), "{m1:?}");
    for m in ["m2", "m3"] {
        let e = host(&r, m).error.as_deref().unwrap();
        assert!(e.contains("not restarted: the rolling restart stopped at m1"), "{m}: {e}");
    }
    // Nothing after etcd ran.
    assert!(f.fake.events_like("restart haproxy").is_empty() && f.fake.events_like("start haproxy").is_empty());
}

#[test]
fn without_quorum_every_member_fails_with_its_own_cause_and_later_phases_do_not_run() {
    let f = Fixture::new();
    f.fake.node("m2").systemctl_error = Some("Failed to connect to bus: No such file or directory".into());
    f.fake.node("m3").failing.insert("etcd".into());
    let r = run(&f, &opts(&ETCD_LB)).unwrap();
    // m2's own cause is kept, not replaced by the timeout.
    let m2 = host(&r, "m2").error.as_deref().unwrap();
    assert!(m2.contains("Failed to connect to bus"), "{m2}");
    for m in ["m1", "m3"] {
        let e = host(&r, m).error.as_deref().unwrap_or_else(|| panic!("{m} did not fail"));
        assert!(e.starts_with("etcd not healthy within 2 s:"), "{m}: {e}");
        assert!(e.contains("m1: etcd is active") && e.contains("m3: etcd is failed") && e.contains("--- journal of etcd:"), "{m}: {e}");
        assert!(e.contains("m1 (10.0.0.11): member"), "the members that answer are listed: {e}");
    }
    assert!(host(&r, "lb").ok && host(&r, "lb").restarted.is_empty(), "the lb phase must not run without etcd");
}

#[test]
fn api_servers_restart_one_at_a_time_each_ready_before_the_next() {
    let f = Fixture::new();
    let all = [Phase::Etcd, Phase::Lb, Phase::ControlPlane];
    run(&f, &opts(&all)).unwrap();
    for m in ["m1", "m2", "m3"] {
        f.fake.node(m).files.get_mut("/etc/kubernetes/pki/apiserver.crt").unwrap().contents = b"old".to_vec();
    }
    f.fake.clear_events();
    let r = run(&f, &opts(&all)).unwrap();
    assert!(r.failed().is_empty(), "{}", r.table());
    assert_eq!(f.fake.events_like("restart kube-"), ["m1: restart kube-apiserver", "m2: restart kube-apiserver", "m3: restart kube-apiserver"]);
    // An API server that does not come back stops the roll.
    for m in ["m1", "m2", "m3"] {
        f.fake.node(m).files.get_mut("/etc/kubernetes/pki/apiserver.crt").unwrap().contents = b"old".to_vec();
    }
    f.fake.node("m2").failing.insert("kube-apiserver".into());
    f.fake.clear_events();
    let r = run(&f, &opts(&all)).unwrap();
    assert_eq!(f.fake.events_like("restart kube-apiserver"), ["m1: restart kube-apiserver", "m2: restart kube-apiserver"]);
    assert!(host(&r, "m3").error.as_deref().unwrap().contains("stopped at m2"));
}

#[test]
fn preflight_stops_everything_before_any_change() {
    let f = Fixture::new();
    f.fake.node("w1").binaries.clear();
    let err = run(&f, &opts(&Phase::ALL)).unwrap_err();
    let DeployError::Preflight(problems) = &err else { panic!("{err}") };
    assert!(problems.iter().any(|p| p.contains("w1: /usr/bin/kubelet (phase workers)")), "{problems:?}");
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
    assert!(w1.error.as_deref().unwrap().starts_with("cannot connect to 10.0.0.15:22"), "{w1:?}");
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
    assert_eq!(f.fake.events_like("apply"), ["m1: apply /etc/kubernetes/addons/apiserver-to-kubelet-rbac.yaml"]);
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
fn a_node_of_a_cluster_with_another_pki_is_refused_before_anything_changes() {
    let f = Fixture::new();
    let all = [Phase::Etcd, Phase::Lb, Phase::ControlPlane];
    run(&f, &opts(&all)).unwrap();
    f.fake.clear_events();
    // The same inventory with another PKI directory: another CA, SA key and encryption key.
    let other = Fixture::new();
    let (c, p): (Arc<dyn Connector>, Arc<dyn Probe>) = (f.fake.clone(), f.fake.clone());
    let err = block_on(deploy(&f.inv, other.rendered(), c, p, &opts(&all))).unwrap_err();
    let DeployError::Preflight(problems) = &err else { panic!("{err}") };
    for want in [
        "m1: /etc/kubernetes/pki/ca.crt holds another cluster CA",
        "m1: /etc/kubernetes/pki/ca.key holds another cluster CA",
        "m2: /etc/etcd/pki/ca.crt holds another etcd CA",
        "m3: /etc/kubernetes/pki/sa.key holds another service-account key",
        "m1: /etc/kubernetes/encryption-config.yaml holds another Secrets encryption key",
        "lb: /etc/haproxy/pki/ca.crt holds another cluster CA",
    ] {
        assert!(problems.iter().any(|p| p.starts_with(want)), "{want:?} not in {problems:#?}");
    }
    assert!(f.fake.events().is_empty(), "{:?}", f.fake.events());
    // Only the keys matter in the encryption config: the same key in another file is fine.
    {
        let mut m1 = f.fake.node("m1");
        let cfg = m1.files.get_mut("/etc/kubernetes/encryption-config.yaml").unwrap();
        cfg.contents = format!("# edited by hand\n{}", String::from_utf8_lossy(&cfg.contents)).into_bytes();
    }
    let r = run(&f, &opts(&all)).unwrap();
    assert!(r.failed().is_empty(), "{}", r.table());
}
