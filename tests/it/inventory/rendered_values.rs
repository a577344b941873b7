//! Values that reach rendered files (issue 16, item 8): paths, names, domains and versions that
//! land in units, configs and /etc/hosts, where a newline, space, quote or `%` would change
//! what the file says. Each refused with its field, line and reason.

use super::{VERSION, accepted, refused};

const REMOTE_DIR: &str = r#"remote_dir = "/usr/local/bin""#;

#[test]
fn remote_dir_with_a_newline() {
    // It would add an ExecStartPre= line to every unit.
    let edits = [(
        REMOTE_DIR,
        r#"remote_dir = "/usr/local/bin\nExecStartPre=/bin/sh -c reboot""#,
    )];
    let p = refused(
        &edits,
        "binaries.remote_dir",
        "remote_dir",
        &["contains a newline", "letters, digits and . _ / + -"],
    );
    assert!(
        !p.message.contains('\n'),
        "the message shows the newline escaped: {p:?}"
    );
}

#[test]
fn remote_dir_with_a_space() {
    let edits = [(REMOTE_DIR, r#"remote_dir = "/usr/local/bin ""#)];
    refused(
        &edits,
        "binaries.remote_dir",
        "remote_dir",
        &["contains a space", "ExecStart="],
    );
}

#[test]
fn remote_dir_with_a_percent() {
    let edits = [(REMOTE_DIR, r#"remote_dir = "/opt/%n/bin""#)];
    refused(
        &edits,
        "binaries.remote_dir",
        "remote_dir",
        &["contains '%'"],
    );
}

#[test]
fn remote_dir_with_a_quote() {
    let edits = [(REMOTE_DIR, r#"remote_dir = '/opt/"k8s"/bin'"#)];
    refused(
        &edits,
        "binaries.remote_dir",
        "remote_dir",
        &["contains '\"'"],
    );
}

#[test]
fn remote_dir_must_be_absolute() {
    let edits = [(REMOTE_DIR, r#"remote_dir = "usr/local/bin""#)];
    refused(
        &edits,
        "binaries.remote_dir",
        "remote_dir",
        &["is not an absolute path"],
    );
}

#[test]
fn remote_dir_of_plain_path_characters_is_accepted() {
    let inv = accepted(&[(REMOTE_DIR, r#"remote_dir = "/opt/k8s-1.31_2+x/bin/""#)]);
    assert_eq!(inv.binaries.remote_dir, "/opt/k8s-1.31_2+x/bin/");
}

#[test]
fn cluster_name_with_an_uppercase_letter() {
    let edits = [(r#"name = "systemv""#, r#"name = "Systemv""#)];
    refused(
        &edits,
        "cluster.name",
        "Systemv",
        &[
            "not a valid DNS label",
            "uppercase letter 'S'",
            "lowercase letters",
        ],
    );
}

#[test]
fn cluster_name_with_an_underscore() {
    let edits = [(r#"name = "systemv""#, r#"name = "system_v""#)];
    refused(
        &edits,
        "cluster.name",
        "system_v",
        &["not a valid DNS label", "contains '_'"],
    );
}

#[test]
fn cluster_name_with_a_newline() {
    let edits = [(
        r#"name = "systemv""#,
        r#"name = "systemv\nExecStartPre=/bin/true""#,
    )];
    refused(
        &edits,
        "cluster.name",
        "systemv\\n",
        &["not a valid DNS label", "contains a newline"],
    );
}

#[test]
fn domain_with_an_uppercase_letter() {
    let edits = [(r#"domain = "systemv.local""#, r#"domain = "Systemv.local""#)];
    refused(
        &edits,
        "cluster.domain",
        "Systemv",
        &[
            "not a valid DNS domain",
            "label \"Systemv\"",
            "uppercase letter 'S'",
        ],
    );
}

#[test]
fn domain_with_an_underscore() {
    let edits = [(
        r#"domain = "systemv.local""#,
        r#"domain = "systemv_lab.local""#,
    )];
    refused(
        &edits,
        "cluster.domain",
        "systemv_lab",
        &["not a valid DNS domain", "contains '_'"],
    );
}

#[test]
fn domain_with_a_newline() {
    let edits = [(
        r#"domain = "systemv.local""#,
        r#"domain = "systemv.local\n10.0.0.1 evil""#,
    )];
    refused(
        &edits,
        "cluster.domain",
        "systemv.local\\n",
        &["not a valid DNS domain", "contains a newline"],
    );
}

#[test]
fn domain_with_a_trailing_dot() {
    let edits = [(
        r#"domain = "systemv.local""#,
        r#"domain = "systemv.local.""#,
    )];
    refused(
        &edits,
        "cluster.domain",
        "domain = \"systemv.local.",
        &["not a valid DNS domain", "empty label"],
    );
}

#[test]
fn cluster_domain_with_an_uppercase_letter() {
    let edits = [(
        r#"cluster_domain = "cluster.local""#,
        r#"cluster_domain = "Cluster.local""#,
    )];
    refused(
        &edits,
        "cluster.cluster_domain",
        "Cluster.local",
        &["not a valid DNS domain", "uppercase letter 'C'"],
    );
}

#[test]
fn cluster_domain_with_an_underscore() {
    let edits = [(
        r#"cluster_domain = "cluster.local""#,
        r#"cluster_domain = "cluster_local""#,
    )];
    refused(
        &edits,
        "cluster.cluster_domain",
        "cluster_local",
        &["not a valid DNS domain", "contains '_'"],
    );
}

#[test]
fn cluster_domain_with_a_newline() {
    // It lands in kubelet-config.yaml, where a newline starts a new key.
    let edits = [(
        r#"cluster_domain = "cluster.local""#,
        r#"cluster_domain = "cluster.local\nreadOnlyPort: 10255""#,
    )];
    refused(
        &edits,
        "cluster.cluster_domain",
        "cluster_domain",
        &["not a valid DNS domain", "contains a newline"],
    );
}

#[test]
fn node_name_with_a_newline() {
    let edits = [(r#"name = "kworker2""#, r#"name = "kworker2\n""#)];
    refused(
        &edits,
        "nodes[4].name",
        "kworker2",
        &["not a valid DNS label", "contains a newline"],
    );
}

#[test]
fn load_balancer_dns_name_with_an_uppercase_letter() {
    let edits = [(
        r#"dns_name = "haproxy.systemv.local""#,
        r#"dns_name = "HAProxy.systemv.local""#,
    )];
    refused(
        &edits,
        "load_balancer.dns_name",
        "dns_name",
        &["not a valid DNS name", "uppercase letter 'H'"],
    );
}

#[test]
fn load_balancer_dns_name_with_an_underscore() {
    let edits = [(
        r#"dns_name = "haproxy.systemv.local""#,
        r#"dns_name = "ha_proxy.systemv.local""#,
    )];
    refused(
        &edits,
        "load_balancer.dns_name",
        "dns_name",
        &["not a valid DNS name", "contains '_'"],
    );
}

#[test]
fn load_balancer_dns_name_with_a_newline() {
    // It lands in /etc/hosts, where a newline starts another entry.
    let edits = [(
        r#"dns_name = "haproxy.systemv.local""#,
        r#"dns_name = "haproxy.systemv.local\n203.0.113.9 kmaster1""#,
    )];
    refused(
        &edits,
        "load_balancer.dns_name",
        "dns_name",
        &["not a valid DNS name", "contains a newline"],
    );
}

#[test]
fn kubernetes_version_without_a_patch() {
    let edits = [(VERSION, r#"kubernetes_version = "1.37""#)];
    refused(
        &edits,
        "cluster.kubernetes_version",
        "kubernetes_version",
        &["not a version like \"1.37.2\"", "digits only"],
    );
}

#[test]
fn kubernetes_version_with_a_suffix() {
    let edits = [(VERSION, r#"kubernetes_version = "1.37.1-rc.0""#)];
    refused(
        &edits,
        "cluster.kubernetes_version",
        "kubernetes_version",
        &["not a version like"],
    );
}

#[test]
fn kubernetes_version_with_a_newline() {
    let edits = [(VERSION, r#"kubernetes_version = "1.37.1\n""#)];
    refused(
        &edits,
        "cluster.kubernetes_version",
        "kubernetes_version",
        &["not a version like"],
    );
}

#[test]
fn kubernetes_version_with_a_sign() {
    // "+31" parses as a number; it is not digits only.
    let edits = [(VERSION, r#"kubernetes_version = "1.+31.2""#)];
    refused(
        &edits,
        "cluster.kubernetes_version",
        "kubernetes_version",
        &["not a version like"],
    );
}

#[test]
fn kubernetes_version_of_another_major() {
    let edits = [(VERSION, r#"kubernetes_version = "2.0.0""#)];
    refused(
        &edits,
        "cluster.kubernetes_version",
        "kubernetes_version",
        &["1.<minor>.<patch>"],
    );
}

#[test]
fn kubernetes_version_with_a_v_is_stored_without_it() {
    let inv = accepted(&[(VERSION, r#"kubernetes_version = "v1.37.1""#)]);
    assert_eq!(inv.cluster.kubernetes_version.to_string(), "1.37.1");
}

#[test]
fn metallb_pool_goes_to_yaml_without_its_spacing() {
    let inv = accepted(&[(
        "\"192.168.96.240-192.168.96.250\"",
        "\"192.168.96.240 -\\n192.168.96.250\", \" 192.168.96.224/28 \"",
    )]);
    assert_eq!(
        inv.addons.metallb.addresses,
        ["192.168.96.240-192.168.96.250", "192.168.96.224/28"]
    );
}
