//! certs check and renew against in-memory nodes: what changes where, in which order things
//! restart, and what is refused.

use std::sync::Arc;
use std::time::Duration;

use super::renew::{RenewOptions, renew};
use super::{ChangeOptions, check};
use crate::components::Phase;
use crate::day2::tests::deployed;
use crate::day2::{Confirm, Day2Error};
use crate::deploy::DeployOptions;
use crate::events::Events;
use crate::pki::{self, CertInfo, Pki};
use crate::probe::Probe;
use crate::remote::Connector;
use crate::testing::{Fixture, block_on};

const YES: Confirm = Confirm {
    dry_run: false,
    yes: true,
    force: false,
};

fn opts(names: &[&str], confirm: Confirm, f: &Fixture) -> RenewOptions {
    RenewOptions {
        names: names.iter().map(|s| s.to_string()).collect(),
        new_keys: false,
        change: change(confirm, f),
    }
}

pub(super) fn change(confirm: Confirm, f: &Fixture) -> ChangeOptions {
    ChangeOptions {
        confirm,
        snapshot_dir: Some(f.dir.path().join("snapshots")),
        snapshot_keep: None,
        deploy: DeployOptions {
            etcd_timeout: Duration::from_secs(2),
            api_timeout: Duration::from_secs(2),
            ..DeployOptions::default()
        },
    }
}

fn run(f: &Fixture, o: &RenewOptions) -> Result<super::renew::RenewReport, Day2Error> {
    let fake = f.fake.clone();
    let probe_for = move |_: &Pki| -> Arc<dyn Probe> { fake.clone() };
    let c: Arc<dyn Connector> = f.fake.clone();
    block_on(renew(
        &f.inv,
        &f.pki_dir(),
        c,
        &probe_for,
        o,
        &Events::none("t"),
    ))
}

fn serial_on(f: &Fixture, node: &str, path: &str) -> String {
    let text = String::from_utf8(f.fake.node(node).files[path].contents.clone()).unwrap();
    CertInfo::parse(&text).unwrap().serial
}

#[test]
fn renew_all_snapshots_first_then_restarts_etcd_and_api_servers_one_at_a_time() {
    let f = deployed(&[
        Phase::Files,
        Phase::Etcd,
        Phase::Lb,
        Phase::ControlPlane,
        Phase::Workers,
    ]);
    let before: Vec<String> = ["m1", "m2", "m3"]
        .iter()
        .map(|m| serial_on(&f, m, "/etc/etcd/pki/server.crt"))
        .collect();
    let admin_before = f.fake.node("m1").files["/etc/kubernetes/admin.kubeconfig"]
        .contents
        .clone();
    f.fake.clear_events();
    let r = run(&f, &opts(&[], YES, &f)).unwrap();
    let d = r.deploy.as_ref().unwrap();
    assert!(d.failed().is_empty(), "{}", d.table());
    assert_eq!(r.renewed.len(), pki::leaf_names(&f.inv).len());
    assert!(
        r.snapshot.is_some() && r.on_no_node.is_empty(),
        "{:?}",
        r.on_no_node
    );

    // Every event, in order ("node: what").
    let events = f.fake.events_like("");
    let pos = |what: &str| {
        events
            .iter()
            .position(|e| e == what)
            .unwrap_or_else(|| panic!("no {what:?} in {events:#?}"))
    };
    assert!(pos("etcd: snapshot") < pos("m1: restart etcd"));
    assert_eq!(
        f.fake.events_like("restart etcd"),
        ["m1: restart etcd", "m2: restart etcd", "m3: restart etcd"]
    );
    assert_eq!(
        f.fake.events_like("restart kube-apiserver"),
        [
            "m1: restart kube-apiserver",
            "m2: restart kube-apiserver",
            "m3: restart kube-apiserver"
        ]
    );
    assert!(pos("m3: restart etcd") < pos("m1: restart kube-apiserver"));
    assert!(pos("m3: restart kube-apiserver") < pos("m1: restart kube-controller-manager"));
    assert!(
        pos("m3: restart kube-apiserver") < pos("w1: restart kubelet")
            && pos("w1: restart kubelet") < pos("w1: restart kube-proxy")
    );
    assert!(
        !events.iter().any(|e| e.ends_with("daemon-reload")),
        "no unit changed: {events:#?}"
    );

    // Every node has the new certificates, and the kubeconfigs embed the new client certs.
    let new = pki::load(&f.inv, &f.pki_dir()).unwrap();
    for (i, m) in ["m1", "m2", "m3"].iter().enumerate() {
        let now = serial_on(&f, m, "/etc/etcd/pki/server.crt");
        assert_ne!(now, before[i], "{m}");
        assert_eq!(
            f.fake.node(m).files["/etc/etcd/pki/server.crt"].contents,
            new.cert(&format!("etcd/server-{m}")).cert_pem.as_bytes()
        );
    }
    assert_ne!(
        f.fake.node("m1").files["/etc/kubernetes/admin.kubeconfig"].contents,
        admin_before
    );
    // The old certificates are kept aside, the keys are the same.
    let aside = r.aside.unwrap();
    assert_eq!(
        std::fs::read_to_string(aside.join("etcd/server-m1.crt")).unwrap(),
        f.pki.cert("etcd/server-m1").cert_pem
    );
    assert_eq!(
        new.cert("apiserver").key_pem,
        f.pki.cert("apiserver").key_pem
    );
}

#[test]
fn one_certificate_changes_one_node_and_restarts_only_its_unit() {
    let f = deployed(&[Phase::Files, Phase::Etcd, Phase::Lb, Phase::ControlPlane]);
    f.fake.clear_events();
    let r = run(&f, &opts(&["etcd/peer-m2"], YES, &f)).unwrap();
    let d = r.deploy.unwrap();
    let changed: Vec<(String, usize)> = d
        .hosts
        .iter()
        .filter(|h| h.changed > 0)
        .map(|h| (h.node.clone(), h.changed))
        .collect();
    assert_eq!(changed, [("m2".to_string(), 1)]);
    assert_eq!(f.fake.events_like("restart"), ["m2: restart etcd"]);
}

/// Counts the connections made to each node.
struct Counting {
    inner: Arc<dyn Connector>,
    connects: std::sync::Mutex<std::collections::BTreeMap<String, usize>>,
}

impl Connector for Counting {
    fn connect(
        &self,
        node: &crate::inventory::Node,
    ) -> Result<Box<dyn crate::remote::Remote>, crate::remote::RemoteError> {
        *self
            .connects
            .lock()
            .unwrap()
            .entry(node.name.clone())
            .or_default() += 1;
        self.inner.connect(node)
    }
}

/// The health check, the plan and the push are one preflight of deploy's: every node is read
/// once, and what it read is what is pushed.
#[test]
fn a_renewal_reads_every_node_once() {
    let f = deployed(&[Phase::Files, Phase::Etcd, Phase::Lb, Phase::ControlPlane]);
    let counting = Arc::new(Counting {
        inner: f.fake.clone(),
        connects: Default::default(),
    });
    let fake = f.fake.clone();
    let probe_for = move |_: &Pki| -> Arc<dyn Probe> { fake.clone() };
    let r = block_on(renew(
        &f.inv,
        &f.pki_dir(),
        counting.clone(),
        &probe_for,
        &opts(&[], YES, &f),
        &Events::none("t"),
    ))
    .unwrap();
    assert!(r.deploy.as_ref().unwrap().changed() > 0);
    let connects = counting.connects.lock().unwrap().clone();
    let want: std::collections::BTreeMap<String, usize> =
        f.inv.nodes.iter().map(|n| (n.name.clone(), 1)).collect();
    assert_eq!(connects, want);
}

#[test]
fn what_is_not_deployed_is_not_created_and_not_started() {
    let f = deployed(&[Phase::Etcd, Phase::Lb]);
    let r = run(&f, &opts(&[], YES, &f)).unwrap();
    assert!(r.deploy.as_ref().unwrap().failed().is_empty());
    for m in ["m1", "m2", "m3"] {
        let n = f.fake.node(m);
        assert!(
            !n.files.keys().any(|p| p.starts_with("/etc/kubernetes")),
            "{m}: {:?}",
            n.files.keys()
        );
        assert!(!n.units.contains_key("kube-apiserver"));
    }
    assert!(
        r.on_no_node.contains(&"apiserver".to_string())
            && !r.on_no_node.contains(&"etcd/server-m1".to_string()),
        "{:?}",
        r.on_no_node
    );
}

#[test]
fn a_dry_run_and_a_run_without_yes_change_nothing_anywhere() {
    let f = deployed(&[Phase::Etcd, Phase::Lb]);
    let pki_before = std::fs::read(f.pki_dir().join("etcd/server-m1.crt")).unwrap();
    f.fake.clear_events();
    let r = run(
        &f,
        &opts(
            &["etcd/server-m1"],
            Confirm {
                dry_run: true,
                ..Confirm::default()
            },
            &f,
        ),
    )
    .unwrap();
    assert!(
        r.steps
            .iter()
            .any(|s| s == "m1: replace /etc/etcd/pki/server.crt"),
        "{:#?}",
        r.steps
    );
    assert!(
        r.steps
            .iter()
            .any(|s| s.contains("restart etcd on m1, one at a time")),
        "{:#?}",
        r.steps
    );
    let err = run(&f, &opts(&["etcd/server-m1"], Confirm::default(), &f)).unwrap_err();
    assert!(matches!(err, Day2Error::NeedsYes { .. }), "{err}");
    assert!(f.fake.events().is_empty(), "{:?}", f.fake.events());
    assert_eq!(
        std::fs::read(f.pki_dir().join("etcd/server-m1.crt")).unwrap(),
        pki_before
    );
}

#[test]
fn an_unhealthy_cluster_is_refused_unless_forced_which_says_what_it_skipped() {
    let f = deployed(&[Phase::Etcd, Phase::Lb]);
    f.fake.node("m3").units.get_mut("etcd").unwrap().active = false;
    f.fake.clear_events();
    let err = run(&f, &opts(&["etcd/server-m1"], YES, &f))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("refusing to renew certificates")
            && err.contains("m3 (10.0.0.13): no answer")
            && err.contains("--force"),
        "{err}"
    );
    assert!(f.fake.events().is_empty());
    let forced = Confirm { force: true, ..YES };
    let r = run(&f, &opts(&["etcd/server-m1"], forced, &f)).unwrap();
    assert!(
        r.forced_past
            .iter()
            .any(|p| p.contains("etcd is not healthy")),
        "{:?}",
        r.forced_past
    );
}

#[test]
fn check_lists_every_certificate_where_the_units_say_and_flags_what_expires() {
    let f = deployed(&[Phase::Files, Phase::Etcd, Phase::Lb, Phase::ControlPlane]);
    let kubeconfigs = check::rendered_kubeconfigs(&f.rendered());
    let c: Arc<dyn Connector> = f.fake.clone();
    let report = block_on(check::check(
        &f.inv,
        &f.pki_dir(),
        c.clone(),
        kubeconfigs.clone(),
        30,
        4,
    ))
    .unwrap();
    assert!(report.ok(), "{}", check::format(&report));
    let m1: Vec<(&str, &str)> = report
        .of("m1")
        .map(|c| (c.path.as_str(), c.subject.as_str()))
        .collect();
    for want in [
        ("/etc/etcd/pki/server.crt", "CN=m1"),
        ("/etc/etcd/pki/ca.crt", "CN=etcd-ca"),
        ("/etc/kubernetes/pki/apiserver.crt", "CN=kube-apiserver"),
        (
            "/etc/kubernetes/admin.kubeconfig",
            "CN=admin,O=system:masters",
        ),
        ("/etc/kubernetes/admin.kubeconfig", "CN=kubernetes"),
        (
            "/etc/kubernetes/scheduler.kubeconfig",
            "CN=system:kube-scheduler,O=system:kube-scheduler",
        ),
    ] {
        assert!(m1.contains(&want), "{want:?} not in {m1:#?}");
    }
    let lb: Vec<&str> = report.of("lb").map(|c| c.subject.as_str()).collect();
    assert!(
        lb.contains(&"CN=haproxy-healthcheck") && lb.contains(&"CN=kubernetes"),
        "{lb:?}"
    );
    // Everything is valid for about a year: a warning of 400 days flags all of it.
    let report = block_on(check::check(
        &f.inv,
        &f.pki_dir(),
        c.clone(),
        kubeconfigs.clone(),
        400,
        4,
    ))
    .unwrap();
    assert!(!report.ok());
    assert!(
        report.nodes.iter().filter(|c| !c.ca).all(|c| c
            .problem
            .as_deref()
            .is_some_and(|p| p.starts_with("expires in 36"))),
        "{}",
        check::format(&report)
    );
    // A missing certificate that a unit names is named.
    f.fake.node("m2").files.remove("/etc/etcd/pki/peer.crt");
    f.fake.node("w1").reachable = false;
    let report = block_on(check::check(&f.inv, &f.pki_dir(), c, kubeconfigs, 30, 4)).unwrap();
    assert!(
        report
            .of("m2")
            .any(|c| c.path == "/etc/etcd/pki/peer.crt" && c.problem.as_deref() == Some("missing"))
    );
    assert_eq!(
        report
            .unreachable
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["w1"]
    );
}

mod rotation {
    use super::*;
    use crate::day2::certs::rotate::{RotateOptions, RotateReport, rotate_subject};
    use crate::pki::CaId;
    use crate::pki::rotate::{Subject, rotation};

    const ETCD: Subject = Subject::Ca(CaId::Etcd);

    fn rotate(f: &Fixture, step: Option<u8>, confirm: Confirm) -> Result<RotateReport, Day2Error> {
        rotate_what(f, ETCD, step, confirm)
    }

    pub(super) fn rotate_what(
        f: &Fixture,
        subject: Subject,
        step: Option<u8>,
        confirm: Confirm,
    ) -> Result<RotateReport, Day2Error> {
        let o = RotateOptions {
            subject,
            step,
            change: super::change(confirm, f),
        };
        let fake = f.fake.clone();
        let probe_for = move |_: &Pki| -> Arc<dyn Probe> { fake.clone() };
        let c: Arc<dyn Connector> = f.fake.clone();
        block_on(rotate_subject(
            &f.inv,
            &f.pki_dir(),
            c,
            &probe_for,
            &o,
            &Events::none("t"),
        ))
    }

    pub(super) fn text(f: &Fixture, node: &str, path: &str) -> String {
        String::from_utf8(f.fake.node(node).files[path].contents.to_vec()).unwrap()
    }

    fn issuer_serial(pem: &str, ca_pem: &str) -> bool {
        CertInfo::parse(pem)
            .unwrap()
            .issued_by(&CertInfo::parse(ca_pem).unwrap())
    }

    #[test]
    fn step_by_step_trust_both_then_reissue_then_drop_the_old() {
        let f = deployed(&[Phase::Files, Phase::Etcd, Phase::Lb, Phase::ControlPlane]);
        let old = f.pki.ca(CaId::Etcd).clone();
        let dry = rotate(
            &f,
            None,
            Confirm {
                dry_run: true,
                ..Confirm::default()
            },
        )
        .unwrap();
        assert!(
            dry.plan
                .iter()
                .any(|l| l.contains("restart etcd on m1, then m2, then m3, one at a time")),
            "{:#?}",
            dry.plan
        );
        assert!(
            !f.pki_dir().join("rotation").exists(),
            "a dry run wrote the rotation's state"
        );

        f.fake.clear_events();
        let r = rotate(&f, Some(1), YES).unwrap();
        assert!(!r.failed(), "{r:#?}");
        let state = rotation(&f.pki_dir(), ETCD).unwrap().unwrap();
        assert_eq!((state.done, state.running), (1, None));
        let new = std::fs::read_to_string(f.pki_dir().join("rotation/etcd/new.crt")).unwrap();
        for m in ["m1", "m2", "m3"] {
            assert_eq!(
                text(&f, m, "/etc/etcd/pki/ca.crt"),
                format!("{}{new}", old.cert_pem),
                "{m}"
            );
            assert_eq!(
                text(&f, m, "/etc/kubernetes/pki/etcd/ca.crt"),
                format!("{}{new}", old.cert_pem),
                "{m}"
            );
            assert!(
                issuer_serial(&text(&f, m, "/etc/etcd/pki/server.crt"), &old.cert_pem),
                "step 1 changed {m}'s leaf"
            );
        }
        assert_eq!(
            f.fake.events_like("restart etcd"),
            ["m1: restart etcd", "m2: restart etcd", "m3: restart etcd"]
        );
        assert_eq!(
            f.fake.events_like("restart kube-apiserver"),
            [
                "m1: restart kube-apiserver",
                "m2: restart kube-apiserver",
                "m3: restart kube-apiserver"
            ]
        );
        assert!(
            f.fake.events_like("restart haproxy").is_empty(),
            "the etcd CA is nothing to HAProxy"
        );
        // Not the step after next, and no renewal while a rotation is under way.
        let err = rotate(&f, Some(3), YES).unwrap_err().to_string();
        assert!(
            err.contains("step 3 of the etcd CA rotation cannot run now: step 2 is next"),
            "{err}"
        );
        let err = run(&f, &opts(&["admin"], YES, &f)).unwrap_err().to_string();
        assert!(
            err.contains("a rotation of the etcd CA is under way"),
            "{err}"
        );

        let r = rotate(&f, Some(2), YES).unwrap();
        assert!(!r.failed(), "{r:#?}");
        assert_eq!(
            r.steps[0].renewed.len(),
            pki::rotate::leaves_of(&f.inv, CaId::Etcd).len()
        );
        assert_eq!(
            std::fs::read_to_string(f.pki_dir().join("etcd/ca.crt")).unwrap(),
            new,
            "the new CA signs now"
        );
        assert_eq!(
            std::fs::read_to_string(f.pki_dir().join("rotation/etcd/old.crt")).unwrap(),
            old.cert_pem
        );
        for m in ["m1", "m2", "m3"] {
            assert_eq!(
                text(&f, m, "/etc/etcd/pki/ca.crt"),
                format!("{new}{}", old.cert_pem),
                "{m}"
            );
            assert!(
                issuer_serial(&text(&f, m, "/etc/etcd/pki/server.crt"), &new),
                "{m}'s leaf is not from the new CA"
            );
            assert!(issuer_serial(
                &text(&f, m, "/etc/kubernetes/pki/apiserver-etcd-client.crt"),
                &new
            ));
        }

        let r = rotate(&f, None, YES).unwrap();
        assert!(!r.failed() && r.done == 3, "{r:#?}");
        for m in ["m1", "m2", "m3"] {
            assert_eq!(text(&f, m, "/etc/etcd/pki/ca.crt"), new, "{m}");
        }
        assert!(rotation(&f.pki_dir(), ETCD).unwrap().is_none());
        let kept = r.aside.unwrap();
        assert_eq!(
            std::fs::read_to_string(kept.join("rotation/etcd/old.crt")).unwrap(),
            old.cert_pem,
            "the old CA is kept"
        );
        pki::load(&f.inv, &f.pki_dir()).expect("a whole PKI after the rotation");
    }

    #[test]
    fn a_step_stopped_half_way_resumes_and_restarts_every_unit_again() {
        let f = deployed(&[Phase::Etcd, Phase::Lb]);
        f.fake.node("m2").failing.insert("etcd".into());
        let r = rotate(&f, None, YES).unwrap();
        assert!(r.failed() && r.done == 0, "{r:#?}");
        let state = rotation(&f.pki_dir(), ETCD).unwrap().unwrap();
        assert_eq!(state.running, Some(1));
        assert_eq!(state.restart.len(), 3, "{state:?}");
        // The operator brings m2 back; its files are in place, m3's etcd never restarted.
        f.fake.node("m2").failing.clear();
        f.fake.node("m2").units.get_mut("etcd").unwrap().active = true;
        f.fake.clear_events();
        let r = rotate(&f, Some(1), YES).unwrap();
        assert!(!r.failed() && r.steps[0].resumed, "{r:#?}");
        assert_eq!(
            r.steps[0].deploy.as_ref().unwrap().changed(),
            0,
            "the files were in place"
        );
        assert_eq!(
            f.fake.events_like("restart etcd"),
            ["m1: restart etcd", "m2: restart etcd", "m3: restart etcd"]
        );
        assert_eq!(rotation(&f.pki_dir(), ETCD).unwrap().unwrap().done, 1);
    }

    #[test]
    fn another_pkis_ca_on_a_node_is_still_refused() {
        let f = deployed(&[Phase::Etcd, Phase::Lb]);
        let other = Fixture::with_another_pki();
        let foreign = other.pki.ca(CaId::Etcd).cert_pem.clone();
        f.fake
            .node("m3")
            .files
            .get_mut("/etc/etcd/pki/ca.crt")
            .unwrap()
            .contents = foreign.into_bytes();
        let err = rotate(&f, Some(1), Confirm { force: true, ..YES })
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("m3: /etc/etcd/pki/ca.crt holds another etcd CA"),
            "{err}"
        );
    }

    /// The cluster CA: pods are made to trust the new CA (kube-root-ca.crt published, every
    /// workload restarted) in step 1, before step 2 has any server present a certificate of
    /// it; the operator's admin kubeconfig follows every step.
    #[test]
    fn the_cluster_ca_has_pods_trust_it_first_and_the_admin_kubeconfig_follows() {
        use crate::remote::fake::{FakePod, FakeWorkload};
        let f = deployed(&[
            Phase::Files,
            Phase::Etcd,
            Phase::Lb,
            Phase::ControlPlane,
            Phase::Workers,
        ]);
        let s = Subject::Ca(CaId::Kubernetes);
        {
            let mut kube = f.fake.kube.lock().unwrap();
            kube.workloads = vec![
                FakeWorkload::new("kube-system", "coredns", "Deployment"),
                FakeWorkload::new("metallb-system", "speaker", "DaemonSet"),
            ];
            kube.pods = vec![
                FakePod::new("w1", "web-1", Some("ReplicaSet")),
                FakePod::new("w1", "debug", None),
            ];
        }
        let kubeconfig = f.pki_dir().join(crate::render::ADMIN_KUBECONFIG_FILE);
        std::fs::write(
            &kubeconfig,
            crate::render::admin_kubeconfig(&f.inv, &f.pki).unwrap(),
        )
        .unwrap();
        // (CA certificates, client certificate) of the admin kubeconfig.
        let admin = || {
            use base64::Engine as _;
            let v: serde_yaml::Value =
                serde_yaml::from_str(&std::fs::read_to_string(&kubeconfig).unwrap()).unwrap();
            let field = |v: &serde_yaml::Value| {
                let b = base64::engine::general_purpose::STANDARD
                    .decode(v.as_str().unwrap())
                    .unwrap();
                String::from_utf8(b).unwrap()
            };
            (
                pki::pem_certificates(&field(
                    &v["clusters"][0]["cluster"]["certificate-authority-data"],
                )),
                field(&v["users"][0]["user"]["client-certificate-data"]),
            )
        };
        let old = f.pki.ca(CaId::Kubernetes).cert_pem.clone();
        let dry = rotate_what(
            &f,
            s,
            None,
            Confirm {
                dry_run: true,
                ..Confirm::default()
            },
        )
        .unwrap();
        assert!(
            dry.plan.iter().any(|l| l.starts_with("step 1: wait until every namespace's kube-root-ca.crt holds the new CA, then restart every Deployment, DaemonSet and StatefulSet")),
            "{:#?}",
            dry.plan
        );
        assert!(f.fake.events_like("restart Deployment").is_empty());

        f.fake.clear_events();
        let r = rotate_what(&f, s, Some(1), YES).unwrap();
        assert!(!r.failed(), "{r:#?}");
        let new = std::fs::read_to_string(f.pki_dir().join("rotation/cluster/new.crt")).unwrap();
        // Every event, in order ("node: what").
        let events = f.fake.events_like("");
        let at = |what: &str| {
            events
                .iter()
                .rposition(|e| e == what)
                .unwrap_or_else(|| panic!("no {what}: {events:#?}"))
        };
        assert!(
            at("api: restart Deployment kube-system/coredns")
                > at("m3: restart kube-controller-manager"),
            "workloads restarted before the controller-manager published the bundle: {events:#?}"
        );
        at("api: restart DaemonSet metallb-system/speaker");
        let pods = r.steps[0].pods.as_ref().unwrap();
        assert_eq!(
            pods.workloads,
            [
                "DaemonSet metallb-system/speaker",
                "Deployment kube-system/coredns"
            ]
        );
        assert_eq!(pods.unmanaged, ["default/debug"], "a bare pod is named");
        // The controller-manager's --cluster-signing-cert-file takes one certificate, the one
        // ca.key belongs to (kube-controller-manager refuses a bundle: "expected 1 certificate,
        // found 2").
        let signer = |m: &str| text(&f, m, "/etc/kubernetes/pki/ca-signer.crt");
        assert_eq!(signer("m1"), old, "step 1: the old CA still signs");
        assert_eq!(
            pki::pem_certificates(&text(&f, "m1", "/etc/kubernetes/pki/ca.crt")).len(),
            2
        );
        let (trust, cert) = admin();
        assert_eq!(
            trust,
            [old.clone(), new.clone()],
            "step 1: the kubeconfig trusts both"
        );
        assert!(issuer_serial(&cert, &old));
        assert_eq!(r.steps[0].kubeconfig.as_deref(), Some(kubeconfig.as_path()));

        f.fake.clear_events();
        let r = rotate_what(&f, s, Some(2), YES).unwrap();
        assert!(!r.failed(), "{r:#?}");
        assert!(
            f.fake.events_like("restart Deployment").is_empty() && r.steps[0].pods.is_none(),
            "pods are restarted once, in step 1"
        );
        let (trust, cert) = admin();
        assert_eq!(trust, [new.clone(), old.clone()]);
        assert!(
            issuer_serial(&cert, &new),
            "step 2: a new admin certificate"
        );
        assert_eq!(signer("m2"), new, "step 2: the new CA signs");

        let r = rotate_what(&f, s, None, YES).unwrap();
        assert!(!r.failed() && r.done == 3, "{r:#?}");
        assert_eq!(admin().0, [new], "step 3: the new CA only");
    }
}

mod secrets {
    use super::rotation::{rotate_what, text};
    use super::*;
    use crate::pki::rotate::{Subject, rotation};

    /// The key names of an encryption config, in order (each provider lists them).
    fn key_names(f: &Fixture, node: &str) -> Vec<String> {
        text(f, node, "/etc/kubernetes/encryption-config.yaml")
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- name: "))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn the_encryption_key_goes_second_then_first_then_secrets_are_rewritten_then_the_old_one_goes()
    {
        let f = deployed(&[
            Phase::Files,
            Phase::Etcd,
            Phase::Lb,
            Phase::ControlPlane,
            Phase::Addons,
        ]);
        let s = Subject::Encryption;
        let step = |k: u8| {
            f.fake.clear_events();
            let r = rotate_what(&f, s, Some(k), YES).unwrap();
            assert!(!r.failed() && r.done == k, "step {k}: {r:#?}");
            r
        };
        let names = |want: &[&str]| {
            for m in ["m1", "m2", "m3"] {
                assert_eq!(
                    key_names(&f, m),
                    [want, want].concat(),
                    "{m}: secretbox and aescbc each list the keys in order"
                );
            }
        };
        step(1);
        names(&["key1", "key2"]);
        assert_eq!(
            f.fake.events_like("restart kube-apiserver"),
            [
                "m1: restart kube-apiserver",
                "m2: restart kube-apiserver",
                "m3: restart kube-apiserver"
            ]
        );
        step(2);
        names(&["key2", "key1"]);
        let r = step(3);
        assert_eq!(r.steps[0].rewritten, Some(3));
        assert_eq!(f.fake.events_like("rewrite"), ["m1: rewrite 3 secrets"]);
        assert!(
            f.fake.events_like("restart").is_empty(),
            "the rewrite restarts nothing"
        );
        names(&["key2", "key1"]);
        let r = step(4);
        names(&["key2"]);
        assert_eq!(f.fake.events_like("restart kube-apiserver").len(), 3);
        let enc = std::fs::read_to_string(f.pki_dir().join("encryption.key")).unwrap();
        assert!(
            enc.ends_with("\nname: key2\n") && !enc.contains(&f.pki.encryption_key_b64),
            "{}",
            enc.lines().count()
        );
        let kept = r.aside.unwrap().join("rotation/encryption/old.key");
        assert_eq!(
            std::fs::read_to_string(kept).unwrap(),
            f.pki.encryption_key_b64,
            "the old key is kept"
        );
        assert!(rotation(&f.pki_dir(), s).unwrap().is_none());
        // A deploy afterwards renders the same config: the key keeps its name.
        let again =
            crate::render::render(&f.inv, &pki::load(&f.inv, &f.pki_dir()).unwrap()).unwrap();
        let config = again.hosts["m1"]
            .iter()
            .find(|x| x.path == "/etc/kubernetes/encryption-config.yaml")
            .unwrap();
        assert_eq!(
            config.contents.to_vec(),
            text(&f, "m1", "/etc/kubernetes/encryption-config.yaml").into_bytes()
        );
    }

    #[test]
    fn the_old_encryption_key_stays_until_the_rewrite_succeeded() {
        let f = deployed(&[Phase::Files, Phase::Etcd, Phase::Lb, Phase::ControlPlane]);
        let s = Subject::Encryption;
        for step in [1, 2] {
            assert!(!rotate_what(&f, s, Some(step), YES).unwrap().failed());
        }
        // kubectl gone from the first master before the rewrite (as the lab test does: with it
        // missing, steps 1 and 2 would stop at deploy's preflight, which places it).
        f.fake.node("m1").binaries.remove("/usr/bin/kubectl");
        let r = rotate_what(&f, s, None, YES).unwrap();
        assert!(r.failed() && r.done == 2, "{r:#?}");
        assert!(
            r.steps[0]
                .error
                .as_deref()
                .is_some_and(|e| e.contains("kubectl is not at /usr/bin/kubectl")),
            "{r:#?}"
        );
        assert_eq!(rotation(&f.pki_dir(), s).unwrap().unwrap().running, Some(3));
        for m in ["m1", "m2", "m3"] {
            assert_eq!(key_names(&f, m), ["key2", "key1", "key2", "key1"], "{m}");
        }
        let err = rotate_what(&f, s, Some(4), YES).unwrap_err().to_string();
        assert!(
            err.contains("step 4 of the encryption key rotation cannot run now: step 3 is next"),
            "{err}"
        );
        f.fake.node("m1").binaries.insert("/usr/bin/kubectl".into());
        let r = rotate_what(&f, s, None, YES).unwrap();
        assert!(!r.failed() && r.done == 4 && r.steps[0].resumed, "{r:#?}");
        assert_eq!(key_names(&f, "m2"), ["key2", "key2"]);
    }

    /// What verify already FAILs before a step (here HAProxy stopped) is reported with the step
    /// but does not stop the rotation: only what the step breaks does.
    #[test]
    fn a_failure_that_was_there_before_a_step_does_not_stop_the_rotation() {
        let f = deployed(&[Phase::Files, Phase::Etcd, Phase::Lb, Phase::ControlPlane]);
        f.fake.node("lb").units.get_mut("haproxy").unwrap().active = false;
        let r = rotate_what(&f, Subject::Encryption, Some(1), YES).unwrap();
        assert!(!r.failed() && r.done == 1, "{r:#?}");
        let step = &r.steps[0];
        assert!(step.verify_failed.is_empty(), "{step:#?}");
        assert!(
            step.already_failing
                .iter()
                .any(|f| f.starts_with("lb unit haproxy")),
            "{step:#?}"
        );
    }

    #[test]
    fn the_service_account_key_verifies_with_both_then_signs_with_the_new_then_drops_the_old() {
        let f = deployed(&[Phase::Files, Phase::Etcd, Phase::Lb, Phase::ControlPlane]);
        let s = Subject::ServiceAccount;
        let old_pub = f.pki.sa_pub_pem.clone();
        let keys = |node: &str| {
            text(&f, node, "/etc/kubernetes/pki/sa.pub")
                .matches("BEGIN PUBLIC KEY")
                .count()
        };
        f.fake.clear_events();
        assert!(!rotate_what(&f, s, Some(1), YES).unwrap().failed());
        assert!(
            f.fake
                .events_like("restart kube-controller-manager")
                .is_empty(),
            "the controller-manager reads sa.key only"
        );
        for m in ["m1", "m2", "m3"] {
            assert_eq!(keys(m), 2, "{m}");
            assert!(
                text(&f, m, "/etc/kubernetes/pki/sa.pub").starts_with(&old_pub),
                "the old key still signs, its public key first"
            );
            assert_eq!(text(&f, m, "/etc/kubernetes/pki/sa.key"), f.pki.sa_key_pem);
        }
        f.fake.clear_events();
        assert!(!rotate_what(&f, s, Some(2), YES).unwrap().failed());
        let new = pki::load(&f.inv, &f.pki_dir()).unwrap();
        assert_ne!(new.sa_key_pem, f.pki.sa_key_pem);
        for m in ["m1", "m2", "m3"] {
            assert_eq!(
                text(&f, m, "/etc/kubernetes/pki/sa.key"),
                new.sa_key_pem,
                "{m}"
            );
            assert_eq!(
                text(&f, m, "/etc/kubernetes/pki/sa.pub"),
                format!("{}{old_pub}", new.sa_pub_pem)
            );
        }
        assert_eq!(f.fake.events_like("restart kube-apiserver").len(), 3);
        assert_eq!(
            f.fake.events_like("restart kube-controller-manager").len(),
            3
        );
        // Step 3 waits for the pods' tokens to be re-signed: refused within the hour after
        // step 2 (nothing changes), sooner only with --force, which says what it went past.
        let snapshots = || {
            std::fs::read_dir(f.dir.path().join("snapshots"))
                .map(|d| d.count())
                .unwrap_or(0)
        };
        let taken = snapshots();
        let err = rotate_what(&f, s, None, YES).unwrap_err().to_string();
        assert!(
            err.contains("step 3 of the service-account key rotation")
                && err.contains("may still be in use until")
                && err.contains("--force"),
            "{err}"
        );
        assert_eq!(keys("m1"), 2, "a refused step 3 changed a node");
        assert_eq!(snapshots(), taken, "a refused step 3 took a snapshot");
        let forced = Confirm { force: true, ..YES };
        let r = rotate_what(&f, s, None, forced).unwrap();
        assert!(!r.failed(), "{r:#?}");
        assert!(
            r.forced_past
                .iter()
                .any(|p| p.contains("tokens the old service-account key signed")),
            "{r:#?}"
        );
        for m in ["m1", "m2", "m3"] {
            assert_eq!(
                text(&f, m, "/etc/kubernetes/pki/sa.pub"),
                new.sa_pub_pem,
                "{m}"
            );
        }
    }
}
