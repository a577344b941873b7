//! The addons hardway renders — the RBAC for the API server's kubelet access, CoreDNS and
//! MetalLB's pool — checked with a real schema validator (PyPI's kubernetes-validate, strict:
//! no unknown field) for every supported minor, and what the addons phase would do.

use std::process::Command;

use crate::common::*;
use crate::versions::{file, render_example};
use hardway::versions::SUPPORTED;

const ADDONS: &str = "/etc/kubernetes/addons";

/// `kubernetes-validate --strict` of `text` for `minor`: Ok, or what it printed.
fn validate(minor: &str, name: &str, text: &str) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    let o = run(Command::new(require(
        "kubernetes-validate",
        "kubernetes-validate (PyPI; scripts/setup --tests installs it)",
    ))
    .args(["--strict", "-k", &format!("{minor}.0")])
    .arg(&path));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    if o.status.success() {
        Ok(said)
    } else {
        Err(said)
    }
}

#[test]
fn rendered_manifests_pass_the_schema_validator_for_every_supported_minor() {
    for minor in SUPPORTED {
        let r = render_example(&minor.version.to_string(), "");
        for name in ["apiserver-to-kubelet-rbac.yaml", "coredns.yaml"] {
            let text = file(&r, "kmaster1", &format!("{ADDONS}/{name}"));
            let said = validate(&minor.name(), name, text)
                .unwrap_or_else(|e| panic!("{name} for {}: {e}", minor.name()));
            assert!(
                !said.contains("WARN"),
                "{name} for {}: {said}",
                minor.name()
            );
        }
        let dns = file(&r, "kmaster1", &format!("{ADDONS}/coredns.yaml"));
        assert!(
            dns.contains(&format!(
                "image: \"registry.k8s.io/coredns/coredns:v{}\"",
                minor.pins.coredns
            )),
            "{dns}"
        );
        assert!(
            dns.contains("clusterIP: 10.32.0.10"),
            "the Service must sit at every kubelet's clusterDNS"
        );
        let kubelet = file(&r, "kworker1", "/var/lib/kubelet/kubelet-config.yaml");
        assert!(kubelet.contains("10.32.0.10"), "{kubelet}");
    }
}

/// The validator itself refuses what it should: a field the schema does not have.
#[test]
fn the_validator_refuses_an_unknown_field() {
    let r = render_example("1.37.1", "");
    let dns = file(&r, "kmaster1", &format!("{ADDONS}/coredns.yaml")).replacen(
        "  replicas:",
        "  replicaz:",
        1,
    );
    let said = validate("1.37", "coredns.yaml", &dns).expect_err("an unknown field passed");
    assert!(said.contains("replicaz"), "{said}");
}

/// MetalLB's pool is a custom resource the validator has no schema for: its shape is checked
/// against MetalLB's v1beta1 API (IPAddressPool.spec.addresses, L2Advertisement naming it).
#[test]
fn the_metallb_pool_has_the_shape_of_metallbs_v1beta1_api() {
    let r = render_example("1.37.1", "");
    let text = file(&r, "kmaster1", &format!("{ADDONS}/metallb-pool.yaml"));
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    assert_eq!(docs.len(), 2);
    let (pool, l2) = (&docs[0], &docs[1]);
    assert_eq!(pool["apiVersion"], "metallb.io/v1beta1");
    assert_eq!(pool["kind"], "IPAddressPool");
    assert_eq!(pool["metadata"]["namespace"], "metallb-system");
    assert_eq!(
        pool["spec"]["addresses"][0],
        "192.168.96.240-192.168.96.250"
    );
    assert_eq!(l2["kind"], "L2Advertisement");
    assert_eq!(l2["spec"]["ipAddressPools"][0], pool["metadata"]["name"]);
}

/// A local copy of an upstream manifest goes to the masters (kubectl applies it from there).
#[test]
fn a_local_manifest_is_placed_on_the_masters_only() {
    let dir = tempfile::tempdir().unwrap();
    let copy = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: metallb-system\n";
    std::fs::write(dir.path().join("metallb-native.yaml"), copy).unwrap();
    let inv = inventory_variant(
        dir.path(),
        "inv.toml",
        &[(
            "[addons.metallb]\nenabled = true",
            "[addons.metallb]\nenabled = true\nmanifest = \"metallb-native.yaml\"",
        )],
    );
    pki_generate(&inv, &dir.path().join("pki"));
    let out = dir.path().join("out");
    ok(hardway()
        .args(["render", "-i"])
        .arg(&inv)
        .arg("--pki")
        .arg(dir.path().join("pki"))
        .arg("--out")
        .arg(&out));
    for m in ["kmaster1", "kmaster2", "kmaster3"] {
        assert_eq!(
            std::fs::read_to_string(
                out.join(m)
                    .join("etc/kubernetes/addons/metallb-native.yaml")
            )
            .unwrap(),
            copy
        );
    }
    assert!(!out.join("kworker1/etc/kubernetes/addons").exists());
}
