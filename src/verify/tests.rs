//! Verify's judgement against in-memory nodes ([`FakeCluster`]), after a deploy to them: every
//! check passes on a healthy cluster, and each fault is named on the right host.

use std::sync::Arc;

use super::*;
use crate::components::Phase;
use crate::deploy::{DeployOptions, deploy};
use crate::probe::Probe;
use crate::remote::Connector;
use crate::testing::{Fixture, block_on};

const STATS: &str = "# pxname,svname,status,addr\nkube-apiservers,FRONTEND,OPEN,\n\
    kube-apiservers,m1,UP,10.0.0.11:6443\nkube-apiservers,m2,UP,10.0.0.12:6443\nkube-apiservers,m3,DOWN,10.0.0.13:6443\n";

fn deployed(phases: &[Phase]) -> Fixture {
    let f = Fixture::new();
    let o = DeployOptions { phases: phases.to_vec(), ..DeployOptions::default() };
    let (c, p): (Arc<dyn Connector>, Arc<dyn Probe>) = (f.fake.clone(), f.fake.clone());
    let r = block_on(deploy(&f.inv, f.rendered(), c, p, &o, crate::events::Events::none("deploy"))).unwrap();
    assert!(r.failed().is_empty(), "{}", r.table());
    f.fake.node("lb").sockets.insert("/run/haproxy/admin.sock".into(), STATS.into());
    f
}

fn checks(f: &Fixture) -> Vec<Check> {
    let creds = Credentials::load(&VerifyOptions::new(f.pki_dir())).unwrap();
    assert!(creds.etcd.is_some() && creds.admin.is_some());
    let (c, p): (Arc<dyn Connector>, Arc<dyn Probe>) = (f.fake.clone(), f.fake.clone());
    block_on(verify(&f.inv, creds, c, p, None, 8, crate::events::Events::none("verify")))
}

fn find<'a>(cs: &'a [Check], host: &str, check: &str) -> &'a Check {
    cs.iter().find(|c| c.host == host && c.check == check).unwrap_or_else(|| panic!("no {check:?} for {host} in {cs:#?}"))
}

#[test]
fn a_healthy_deploy_passes_and_what_is_not_deployed_is_skipped() {
    let f = deployed(&[Phase::Etcd, Phase::Lb]);
    let cs = checks(&f);
    let bad: Vec<&Check> = cs.iter().filter(|c| matches!(c.status, Status::Fail | Status::Warn)).collect();
    assert!(bad.is_empty(), "{bad:#?}");
    for m in ["m1", "m2", "m3"] {
        for c in ["ssh", "unit etcd", "etcd member", "cert etcd server", "cert etcd peer"] {
            assert_eq!(find(&cs, m, c).status, Status::Pass, "{m} {c}: {:?}", find(&cs, m, c));
        }
        assert_eq!(find(&cs, m, "unit kube-apiserver").status, Status::Skip);
        assert_eq!(find(&cs, m, "encryption config").status, Status::Skip);
    }
    for c in ["etcd leader", "etcd membership", "etcd alarms", "etcd raft index"] {
        assert_eq!(find(&cs, "etcd", c).status, Status::Pass, "{c}");
    }
    assert_eq!(find(&cs, "lb", "haproxy config").status, Status::Pass);
    assert_eq!(find(&cs, "lb", "haproxy backend m1").status, Status::Skip, "no API server is deployed");
    assert_eq!(find(&cs, "lb", "api /readyz").status, Status::Skip);
    let mut sorted = cs.clone();
    sorted.sort_by(|a, b| (&a.host, &a.check).cmp(&(&b.host, &b.check)));
    assert_eq!(cs.iter().map(|c| (&c.host, &c.check)).collect::<Vec<_>>(), sorted.iter().map(|c| (&c.host, &c.check)).collect::<Vec<_>>());
}

#[test]
fn a_stopped_member_fails_alone_and_quorum_is_reported_held() {
    let f = deployed(&[Phase::Etcd, Phase::Lb]);
    f.fake.node("m2").units.get_mut("etcd").unwrap().active = false;
    let cs = checks(&f);
    let m2 = find(&cs, "m2", "etcd member");
    assert_eq!(m2.status, Status::Fail);
    assert!(m2.detail.contains("quorum held: 2 of 3 members answer, quorum is 2"), "{m2:?}");
    assert_eq!(find(&cs, "m2", "unit etcd").status, Status::Fail);
    assert_eq!(find(&cs, "m1", "etcd member").status, Status::Pass);
    assert_eq!(find(&cs, "etcd", "etcd leader").status, Status::Pass);
}

#[test]
fn a_readable_key_and_a_foreign_certificate_are_named() {
    let f = deployed(&[Phase::Etcd, Phase::Lb]);
    f.fake.node("m3").files.get_mut("/etc/etcd/pki/server.key").unwrap().mode = 0o644;
    // m1's peer certificate replaced by one from another PKI, key and all.
    let other = Fixture::new();
    let foreign = other.pki.cert("etcd/peer-m1").clone();
    {
        let mut m1 = f.fake.node("m1");
        m1.files.get_mut("/etc/etcd/pki/peer.crt").unwrap().contents = foreign.cert_pem.into_bytes();
        m1.files.get_mut("/etc/etcd/pki/peer.key").unwrap().contents = foreign.key_pem.into_bytes();
    }
    let cs = checks(&f);
    let key = find(&cs, "m3", "cert etcd server");
    assert_eq!(key.status, Status::Fail);
    assert!(key.detail.contains("key /etc/etcd/pki/server.key is 644 root (mode, owner); must be 600 root"), "{key:?}");
    let peer = find(&cs, "m1", "cert etcd peer");
    assert_eq!(peer.status, Status::Fail);
    assert!(peer.detail.contains("/etc/etcd/pki/peer.crt is not signed by the etcd CA"), "{peer:?}");
    // The key matches its (foreign) certificate: only the chain is wrong.
    assert!(!peer.detail.contains("does not belong"), "{peer:?}");
}

#[test]
fn encryption_configs_that_differ_between_masters_fail_everywhere() {
    let f = deployed(&[Phase::Etcd, Phase::Lb, Phase::ControlPlane]);
    let cs = checks(&f);
    for m in ["m1", "m2", "m3"] {
        assert_eq!(find(&cs, m, "encryption config").status, Status::Pass, "{m}");
        assert_eq!(find(&cs, m, "api /readyz").status, Status::Pass, "{m}");
    }
    assert_eq!(find(&cs, "lb", "haproxy backend m3").status, Status::Fail, "the stats say DOWN");
    f.fake.node("m2").files.get_mut("/etc/kubernetes/encryption-config.yaml").unwrap().contents = b"other".to_vec();
    let cs = checks(&f);
    for m in ["m1", "m2", "m3"] {
        let c = find(&cs, m, "encryption config");
        assert_eq!(c.status, Status::Fail, "{m}");
        assert!(c.detail.starts_with("differs between masters"), "{c:?}");
    }
}

#[test]
fn an_unreachable_node_fails_its_ssh_check_and_nothing_else_of_it() {
    let f = deployed(&[Phase::Etcd, Phase::Lb]);
    f.fake.node("w1").reachable = false;
    let cs = checks(&f);
    assert_eq!(find(&cs, "w1", "ssh").status, Status::Fail);
    assert!(cs.iter().filter(|c| c.host == "w1").count() == 1, "{cs:#?}");
}
