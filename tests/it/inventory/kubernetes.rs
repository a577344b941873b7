//! Supported Kubernetes versions and `[components.<name>] extra_args`, each rule with its file,
//! line, field and reason.

use std::path::Path;

use super::{VERSION, accepted, as_edits, edited, error_of, refused};
use hardway::components::ComponentId;
use hardway::inventory::{self, InventoryError};

/// The example with `[components.<component>]` appended, for `version`.
fn with_args(version: &str, component: &str, args: &str) -> Vec<(String, String)> {
    vec![
        (
            VERSION.to_string(),
            format!("kubernetes_version = \"{version}\""),
        ),
        (
            "[addons.aggregation]".to_string(),
            format!("[components.{component}]\nextra_args = {{ {args} }}\n\n[addons.aggregation]"),
        ),
    ]
}

#[test]
fn kubernetes_version_defaults_to_the_newest_supported() {
    let inv = accepted(&[(VERSION, "")]);
    assert_eq!(inv.cluster.kubernetes_version.to_string(), "1.37.2");
}

#[test]
fn an_unsupported_kubernetes_version_is_refused_naming_the_supported_ones() {
    for old in ["1.34.9", "1.31.2", "1.38.0"] {
        let edits = [(VERSION, &*format!("kubernetes_version = \"{old}\""))];
        let p = refused(
            &edits,
            "cluster.kubernetes_version",
            "kubernetes_version",
            &["not supported", "1.35, 1.36 and 1.37"],
        );
        assert!(p.message.contains(old), "{p:?}");
    }
    // Every supported minor, also at a patch newer than hardway knows of, is accepted.
    for ok in ["1.35.0", "1.36.4", "1.37.9"] {
        accepted(&[(VERSION, &*format!("kubernetes_version = \"{ok}\""))]);
    }
}

#[test]
fn extra_args_are_kept_per_component_with_their_systemd_words() {
    let edits = with_args(
        "1.37.1",
        "kube-apiserver",
        r#""audit-log-maxage" = 7, "event-ttl" = "2h", "v" = 4, "request-timeout" = "1m 0s""#,
    );
    let inv = accepted(&as_edits(&edits));
    let args = &inv.extra_args[&ComponentId::KubeApiserver];
    let words: Vec<&str> = args.iter().map(|a| a.word.as_str()).collect();
    // Sorted by flag; numbers become their decimal text; a space makes the word quoted.
    assert_eq!(
        words,
        [
            "--audit-log-maxage=7",
            "--event-ttl=2h",
            "\"--request-timeout=1m 0s\"",
            "--v=4"
        ]
    );
}

#[test]
fn an_unknown_flag_is_refused_naming_the_version_and_its_list() {
    let edits = with_args("1.37.1", "kube-apiserver", r#""no-such-flag" = "1""#);
    refused(
        &as_edits(&edits),
        "components.kube-apiserver.extra_args.no-such-flag",
        "\"no-such-flag\"",
        &[
            "kube-apiserver 1.37 has no flag --no-such-flag",
            "data/kubernetes/1.37/kube-apiserver.flags",
        ],
    );
}

#[test]
fn a_flag_removed_upstream_is_accepted_before_and_refused_after() {
    // CHANGELOG-1.37: kube-controller-manager's --concurrent-service-syncs is gone.
    let field = "components.kube-controller-manager.extra_args.concurrent-service-syncs";
    accepted(&as_edits(&with_args(
        "1.36.4",
        "kube-controller-manager",
        r#""concurrent-service-syncs" = 2"#,
    )));
    let edits = with_args(
        "1.37.1",
        "kube-controller-manager",
        r#""concurrent-service-syncs" = 2"#,
    );
    refused(
        &as_edits(&edits),
        field,
        "\"concurrent-service-syncs\"",
        &["1.37 has no flag --concurrent-service-syncs"],
    );
}

#[test]
fn a_flag_hardway_sets_is_refused_unless_overridable() {
    let edits = with_args("1.37.1", "kube-apiserver", r#""anonymous-auth" = true"#);
    refused(
        &as_edits(&edits),
        "components.kube-apiserver.extra_args.anonymous-auth",
        "\"anonymous-auth\"",
        &[
            "hardway already sets --anonymous-auth",
            "--v, --audit-log-maxage, --audit-log-maxbackup, --audit-log-maxsize, --service-node-port-range",
        ],
    );
    accepted(&as_edits(&with_args(
        "1.37.1",
        "kube-apiserver",
        r#""service-node-port-range" = "30000-31000""#,
    )));
}

#[test]
fn a_flag_the_component_ignores_beside_its_config_is_refused() {
    // The scheduler's reference: --profiling "is ignored if a config file is specified".
    let edits = with_args("1.37.1", "kube-scheduler", r#""profiling" = false"#);
    refused(
        &as_edits(&edits),
        "components.kube-scheduler.extra_args.profiling",
        "\"profiling\"",
        &["ignores --profiling when --config is given"],
    );
    let edits = with_args("1.37.1", "kube-proxy", r#""proxy-mode" = "ipvs""#);
    refused(
        &as_edits(&edits),
        "components.kube-proxy.extra_args.proxy-mode",
        "\"proxy-mode\"",
        &["ignores --proxy-mode"],
    );
}

#[test]
fn values_that_cannot_be_written_into_execstart_are_refused() {
    let edits = with_args(
        "1.37.1",
        "kubelet",
        r#""node-labels" = "a=b\nExecStartPre=/bin/evil""#,
    );
    refused(
        &as_edits(&edits),
        "components.kubelet.extra_args.node-labels",
        "\"node-labels\"",
        &["contains a newline", "ExecStart="],
    );
    let edits = with_args("1.37.1", "kubelet", r#""node-labels" = ["a", "b"]"#);
    refused(
        &as_edits(&edits),
        "components.kubelet.extra_args.node-labels",
        "\"node-labels\"",
        &["string, number or boolean, not array"],
    );
}

#[test]
fn flags_that_exit_dashes_and_unknown_components_are_refused() {
    let edits = with_args("1.37.1", "kubelet", r#""version" = true"#);
    refused(
        &as_edits(&edits),
        "components.kubelet.extra_args.version",
        "\"version\"",
        &["print and exit"],
    );
    let edits = with_args("1.37.1", "kubelet", r#""--v" = 3"#);
    refused(
        &as_edits(&edits),
        "components.kubelet.extra_args.--v",
        "\"--v\"",
        &["without its dashes: \"v\""],
    );
    let edits = with_args("1.37.1", "etcd", r#""v" = 3"#);
    refused(
        &as_edits(&edits),
        "components.etcd",
        "[components.etcd]",
        &[
            "unknown component \"etcd\"",
            "kube-apiserver, kube-controller-manager",
        ],
    );
}

#[test]
fn every_extra_args_problem_is_reported_at_once_with_file_line_and_column() {
    let edits = with_args(
        "1.37.1",
        "kube-apiserver",
        r#""no-such-flag" = "1", "anonymous-auth" = true"#,
    );
    let err = error_of(&as_edits(&edits));
    assert!(err.contains("2 problem(s)"), "{err}");
    // Each problem points at its flag's value, where an editor jumps to fix it.
    let text = edited(&as_edits(&edits));
    let line = text
        .lines()
        .position(|l| l.starts_with("extra_args"))
        .unwrap()
        + 1;
    let col = text.lines().nth(line - 1).unwrap().find("\"1\"").unwrap() + 1;
    assert!(
        err.contains(&format!(
            "bad.toml:{line}:{col}: components.kube-apiserver.extra_args.no-such-flag"
        )),
        "{err}"
    );
    match inventory::parse(Path::new("bad.toml"), &text) {
        Err(InventoryError::Invalid { problems, .. }) => {
            assert_eq!(problems.len(), 2, "{problems:#?}")
        }
        other => panic!("{other:?}"),
    }
}
