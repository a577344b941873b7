//! Every flag and config field hardway renders exists in the Kubernetes version it renders for,
//! checked for each supported minor against upstream's lists (`data/kubernetes/`), and the
//! control-plane settings of issue 10 each checked where it lands.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::*;
use hardway::components::{Component, ComponentId};
use hardway::flags::exec_start_flags;
use hardway::inventory;
use hardway::render::{self, File, Rendered};
use hardway::versions::{ConfigType, Minor, SUPPORTED};

/// The example inventory for `version`, with `extra` appended before `[addons.aggregation]`,
/// rendered with a fresh PKI.
pub(crate) fn render_example(version: &str, extra: &str) -> Rendered {
    let text = std::fs::read_to_string(example_inventory()).unwrap();
    let from = "kubernetes_version = \"1.37.1\"";
    assert!(text.contains(from), "example.toml no longer sets {from}");
    let text = text
        .replacen(from, &format!("kubernetes_version = \"{version}\""), 1)
        .replacen(
            "[addons.aggregation]",
            &format!("{extra}\n[addons.aggregation]"),
            1,
        );
    let inv = inventory::parse(Path::new("example.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let (pki, _) =
        hardway::pki::generate(&inv, &dir.path().join("pki"), Default::default()).unwrap();
    render::render(&inv, &pki).unwrap()
}

pub(crate) fn file<'a>(r: &'a Rendered, host: &str, path: &str) -> &'a str {
    let f = r.hosts[host]
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("{host} has no {path}"));
    std::str::from_utf8(&f.contents).unwrap()
}

/// Dotted paths of every key in a YAML document, list items under their list's name.
fn key_paths(value: &serde_yaml::Value, prefix: &str, out: &mut Vec<String>) {
    match value {
        serde_yaml::Value::Mapping(m) => {
            for (k, v) in m {
                let k = k.as_str().unwrap_or_default();
                let path = if prefix.is_empty() {
                    k.to_string()
                } else {
                    format!("{prefix}.{k}")
                };
                out.push(path.clone());
                key_paths(v, &path, out);
            }
        }
        serde_yaml::Value::Sequence(items) => items.iter().for_each(|v| key_paths(v, prefix, out)),
        _ => {}
    }
}

/// What in one host's files the version does not have: flags a unit passes that its component
/// lacks (or ignores beside `--config`), and config keys its type lacks. Counts what it checked.
fn unknown_in(
    minor: &Minor,
    host: &str,
    files: &[File],
    checked: &mut BTreeMap<String, usize>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for f in files {
        let text = std::str::from_utf8(&f.contents).unwrap();
        let unit = f
            .path
            .strip_prefix("/etc/systemd/system/")
            .and_then(|p| p.strip_suffix(".service"));
        if let Some(c) = unit
            .and_then(Component::by_unit)
            .filter(|c| minor.lists_flags_of(c.id))
        {
            let flags = exec_start_flags(text);
            let with_config = flags.iter().any(|(n, _)| n == "config");
            for (name, _) in &flags {
                match minor.flag(c.id, name) {
                    None => problems.push(format!(
                        "{host}:{}: --{name}: {} {} has no such flag",
                        f.path,
                        c.name,
                        minor.name()
                    )),
                    Some(flag) if flag.ignored_with_config && with_config => {
                        problems.push(format!(
                            "{host}:{}: --{name}: {} ignores it beside --config",
                            f.path, c.name
                        ))
                    }
                    Some(_) => *checked.entry(format!("flags of {}", c.name)).or_default() += 1,
                }
            }
        }
        let docs = if f.path.ends_with(".yaml") {
            serde_yaml::Deserializer::from_str(text).collect()
        } else {
            Vec::new()
        };
        for doc in docs {
            let doc = <serde_yaml::Value as serde::Deserialize>::deserialize(doc).unwrap();
            let Some(config) = doc["kind"].as_str().and_then(ConfigType::by_kind) else {
                continue;
            };
            if doc["apiVersion"].as_str() != Some(config.api_version()) {
                problems.push(format!(
                    "{host}:{}: apiVersion {:?}, not {}",
                    f.path,
                    doc["apiVersion"],
                    config.api_version()
                ));
            }
            let mut paths = Vec::new();
            key_paths(&doc, "", &mut paths);
            for p in paths.iter().filter(|p| *p != "apiVersion" && *p != "kind") {
                if minor.has_field(config, p) {
                    *checked
                        .entry(format!("fields of {}", config.kind()))
                        .or_default() += 1;
                } else {
                    problems.push(format!(
                        "{host}:{}: {p}: {} {} has no such field",
                        f.path,
                        config.kind(),
                        minor.name()
                    ));
                }
            }
        }
    }
    problems
}

#[test]
fn every_rendered_flag_and_config_field_exists_in_each_supported_version() {
    for minor in SUPPORTED {
        let rendered = render_example(&minor.version.to_string(), "");
        let mut checked = BTreeMap::new();
        let problems: Vec<String> = rendered
            .hosts
            .iter()
            .flat_map(|(host, files)| unknown_in(minor, host, files, &mut checked))
            .collect();
        assert!(
            problems.is_empty(),
            "Kubernetes {}:\n{}",
            minor.version,
            problems.join("\n")
        );
        // Every listed component and config type was actually looked at: the example has them all.
        let seen: Vec<&String> = checked.keys().collect();
        assert_eq!(seen.len(), 8, "{} checked only {seen:?}", minor.version);
        assert!(checked["flags of kube-apiserver"] > 30, "{checked:?}");
    }
}

#[test]
fn the_check_catches_a_flag_the_version_does_not_have() {
    // The same check over a unit that passes a flag 1.37 removed, and one the scheduler ignores.
    let unit = |c: &str, flags: &str| File {
        path: format!("/etc/systemd/system/{c}.service"),
        mode: 0o644,
        contents: format!("[Service]\nExecStart=/usr/local/bin/{c} \\\n  {flags} \\\n  --v=2\n")
            .into_bytes()
            .into(),
        units: vec![],
        anchor: None,
        restarts: true,
        phase: None,
    };
    let [m36, m37] = [&SUPPORTED[1], &SUPPORTED[2]];
    let kcm = [unit(
        "kube-controller-manager",
        "--concurrent-service-syncs=2",
    )];
    assert!(unknown_in(m36, "m1", &kcm, &mut BTreeMap::new()).is_empty());
    let problems = unknown_in(m37, "m1", &kcm, &mut BTreeMap::new());
    assert_eq!(
        problems,
        [
            "m1:/etc/systemd/system/kube-controller-manager.service: --concurrent-service-syncs: kube-controller-manager 1.37 has no such flag"
        ]
    );
    let problems = unknown_in(
        m37,
        "m1",
        &[unit("kube-scheduler", "--config=/x --profiling=false")],
        &mut BTreeMap::new(),
    );
    assert_eq!(problems.len(), 1, "{problems:?}");
}

#[test]
fn extra_args_land_in_execstart_once_and_read_back_as_given() {
    let extra = "[components.kube-apiserver]\nextra_args = { \"audit-log-maxage\" = 7, \"event-ttl\" = \"2h\", \"request-timeout\" = \"1m 0s\" }\n\n\
                 [components.kubelet]\nextra_args = { \"node-labels\" = \"tier=100%\", \"v\" = 4 }\n";
    let r = render_example("1.37.1", extra);
    let api = exec_start_flags(file(
        &r,
        "kmaster2",
        "/etc/systemd/system/kube-apiserver.service",
    ));
    let value = |flags: &[(String, Option<String>)], name: &str| {
        let all: Vec<&Option<String>> = flags
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v)
            .collect();
        assert_eq!(all.len(), 1, "--{name} appears {} times", all.len());
        all[0].clone().unwrap()
    };
    assert_eq!(value(&api, "audit-log-maxage"), "7");
    assert_eq!(value(&api, "event-ttl"), "2h");
    assert_eq!(value(&api, "request-timeout"), "1m 0s");
    let kubelet = exec_start_flags(file(&r, "kworker1", "/etc/systemd/system/kubelet.service"));
    assert_eq!(value(&kubelet, "node-labels"), "tier=100%");
    assert_eq!(value(&kubelet, "v"), "4");
    // And systemd accepts the unit with those words (a stand-in at the binary's path: verify
    // checks that ExecStart's executable exists).
    let analyze = require("systemd-analyze", "systemd");
    let dir = tempfile::tempdir().unwrap();
    let stand_in = dir.path().join("kube-apiserver");
    std::fs::write(&stand_in, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(
        &stand_in,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let unit = dir.path().join("kube-apiserver.service");
    let text = file(&r, "kmaster2", "/etc/systemd/system/kube-apiserver.service");
    std::fs::write(
        &unit,
        text.replace("/usr/local/bin/", &format!("{}/", dir.path().display())),
    )
    .unwrap();
    let out = run(std::process::Command::new(&analyze)
        .args(["verify", "--man=no"])
        .arg(&unit));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// The control plane of issue 10 (items 5 and 7).

#[test]
fn the_scheduler_turns_profiling_off_in_its_config_and_delegates_auth_with_its_own_kubeconfig() {
    let r = render_example("1.37.1", "");
    let config: serde_yaml::Value =
        serde_yaml::from_str(file(&r, "kmaster1", "/etc/kubernetes/kube-scheduler.yaml")).unwrap();
    // --profiling is ignored beside --config: only the config file turns it off.
    assert_eq!(
        config["enableProfiling"].as_bool(),
        Some(false),
        "{config:?}"
    );
    let flags: BTreeMap<String, Option<String>> = exec_start_flags(file(
        &r,
        "kmaster1",
        "/etc/systemd/system/kube-scheduler.service",
    ))
    .into_iter()
    .collect();
    assert!(!flags.contains_key("profiling"), "{flags:?}");
    let own = Some("/etc/kubernetes/scheduler.kubeconfig".to_string());
    assert_eq!(flags["authentication-kubeconfig"], own);
    assert_eq!(flags["authorization-kubeconfig"], own);
    assert_eq!(
        config["clientConnection"]["kubeconfig"].as_str(),
        own.as_deref()
    );
}

#[test]
fn the_api_server_audits_by_policy_reaches_kubelets_by_address_and_serves_no_alpha_apis() {
    let r = render_example("1.37.1", "");
    let flags: BTreeMap<String, Option<String>> = exec_start_flags(file(
        &r,
        "kmaster3",
        "/etc/systemd/system/kube-apiserver.service",
    ))
    .into_iter()
    .collect();
    assert_eq!(
        flags["kubelet-preferred-address-types"].as_deref(),
        Some("InternalIP,ExternalIP,Hostname")
    );
    assert!(
        !flags.contains_key("runtime-config"),
        "--runtime-config=api/all=true serves every alpha API"
    );
    // --audit-log-path logs nothing without a policy: the policy file is passed and rendered.
    let policy_path = flags["audit-policy-file"].clone().unwrap();
    assert!(flags.contains_key("audit-log-path"));
    let policy: serde_yaml::Value =
        serde_yaml::from_str(file(&r, "kmaster3", &policy_path)).unwrap();
    assert_eq!(policy["apiVersion"].as_str(), Some("audit.k8s.io/v1"));
    assert_eq!(policy["kind"].as_str(), Some("Policy"));
    let rules = policy["rules"].as_sequence().unwrap();
    // The first rule matching a request sets its level: for Secrets, ConfigMaps and TokenReviews
    // that level never records a body (None or Metadata).
    let matches = |rule: &serde_yaml::Value, group: &str, resource: &str| {
        let Some(res) = rule["resources"].as_sequence() else {
            return rule["nonResourceURLs"].is_null();
        };
        rule["users"].is_null()
            && rule["userGroups"].is_null()
            && res.iter().any(|r| {
                r["group"].as_str() == Some(group)
                    && r["resources"]
                        .as_sequence()
                        .is_some_and(|rs| rs.iter().any(|x| x.as_str() == Some(resource)))
            })
    };
    for (group, resource) in [
        ("", "secrets"),
        ("", "configmaps"),
        ("authentication.k8s.io", "tokenreviews"),
    ] {
        let first = rules.iter().find(|r| matches(r, group, resource)).unwrap();
        assert_eq!(
            first["level"].as_str(),
            Some("Metadata"),
            "{resource}: {first:?}"
        );
    }
    // The catch-all is last and records metadata: nothing is audited with a body.
    assert!(
        rules
            .iter()
            .all(|r| matches!(r["level"].as_str(), Some("None" | "Metadata"))),
        "{rules:?}"
    );
    assert!(
        rules.last().unwrap()["resources"].is_null()
            && rules.last().unwrap()["nonResourceURLs"].is_null()
    );
}

#[test]
fn the_controller_manager_allocates_no_node_cidrs() {
    // Pod CIDRs are fixed per worker in inventory order (CNI config and routes); the node IPAM
    // controller would hand them out in registration order instead.
    let r = render_example("1.37.1", "");
    let flags: BTreeMap<String, Option<String>> = exec_start_flags(file(
        &r,
        "kmaster1",
        "/etc/systemd/system/kube-controller-manager.service",
    ))
    .into_iter()
    .collect();
    for f in ["allocate-node-cidrs", "cluster-cidr", "node-cidr-mask-size"] {
        assert!(!flags.contains_key(f), "--{f} is set: {flags:?}");
    }
    assert_eq!(
        flags["use-service-account-credentials"].as_deref(),
        Some("true")
    );
    assert_eq!(
        ComponentId::KubeControllerManager.get().name,
        "kube-controller-manager"
    );
}

/// The addons' pins and what `scripts/build-images` builds are one table: every supported
/// minor's CoreDNS, MetalLB, metrics-server and pause releases have an image (and MetalLB's and
/// metrics-server's manifests a file) of that exact release, so a pin changed in one place and
/// not the other fails here, not in a lab that pulls an image nobody built.
#[test]
fn the_addon_pins_are_the_images_scripts_build() {
    let o = run(
        std::process::Command::new(repo().join("scripts/build-images"))
            .arg("--list")
            .env("HW_IMAGES_DIR", "/nonexistent/images"),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let listed = String::from_utf8_lossy(&o.stdout).to_string();
    let words: Vec<&str> = listed.split_whitespace().collect();
    for m in SUPPORTED {
        let p = &m.pins;
        for wanted in [
            format!("registry.k8s.io/coredns/coredns:v{}", p.coredns),
            format!("quay.io/metallb/controller:v{}", p.metallb),
            format!("quay.io/metallb/speaker:v{}", p.metallb),
            format!(
                "registry.k8s.io/metrics-server/metrics-server:v{}",
                p.metrics_server
            ),
            format!("registry.k8s.io/pause:{}", p.pause),
            format!(
                "/nonexistent/images/manifests/metallb-native-v{}.yaml",
                p.metallb
            ),
            format!(
                "/nonexistent/images/manifests/metrics-server-v{}-components.yaml",
                p.metrics_server
            ),
        ] {
            assert!(
                words.contains(&wanted.as_str()),
                "{}: {wanted} is pinned but scripts/build-images does not build it:\n{listed}",
                m.name()
            );
        }
        assert_eq!(
            p.coredns_image(),
            format!("registry.k8s.io/coredns/coredns:v{}", p.coredns)
        );
        assert_eq!(
            p.pause_image(),
            format!("registry.k8s.io/pause:{}", p.pause)
        );
    }
}
