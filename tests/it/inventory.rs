//! One test per inventory validation rule: each asserts the file, line, field and reason.

use std::path::Path;

use crate::common::*;
use hardway::inventory::{self, Inventory, InventoryError, Problem};

fn example_text() -> String {
    std::fs::read_to_string(example_inventory()).unwrap()
}

/// The example with each edit applied once (each must still find its text).
fn edited(edits: &[(&str, &str)]) -> String {
    let mut text = example_text();
    for (from, to) in edits {
        assert!(text.contains(from), "example.toml no longer contains {from:?}");
        text = text.replacen(from, to, 1);
    }
    text
}

/// Applies edits to the example and returns the validation error text.
fn error_of(edits: &[(&str, &str)]) -> String {
    match inventory::parse(Path::new("bad.toml"), &edited(edits)) {
        Ok(_) => panic!("inventory with edits {edits:?} was accepted"),
        Err(e @ InventoryError::Invalid { .. }) => e.to_string(),
        Err(e) => panic!("unexpected error kind: {e}"),
    }
}

/// 1-based line of the first occurrence of `needle` in the edited text.
fn line_of(edits: &[(&str, &str)], needle: &str) -> usize {
    let text = edited(edits);
    let at = text.find(needle).unwrap_or_else(|| panic!("{needle:?} not in edited text"));
    text[..at].matches('\n').count() + 1
}

/// Applies edits to the example and returns the problems validation found.
fn problems_of(edits: &[(&str, &str)]) -> Vec<Problem> {
    match inventory::parse(Path::new("bad.toml"), &edited(edits)) {
        Ok(_) => panic!("inventory with edits {edits:?} was accepted"),
        Err(InventoryError::Invalid { problems, .. }) => problems,
        Err(e) => panic!("unexpected error kind: {e}"),
    }
}

/// Asserts that the edits are refused with a problem about `field`, located on the line of
/// `at` in the edited text, whose message mentions every one of `parts`; returns it.
fn refused(edits: &[(&str, &str)], field: &str, at: &str, parts: &[&str]) -> Problem {
    let problems = problems_of(edits);
    let p = problems
        .iter()
        .find(|p| p.field == field && parts.iter().all(|part| p.message.contains(part)))
        .unwrap_or_else(|| panic!("no problem for {field} mentioning {parts:?} among {problems:#?}"));
    assert_eq!(p.position.map(|(line, _)| line), Some(line_of(edits, at)), "{p:?}");
    p.clone()
}

/// Parses the edited example, which must be accepted.
fn accepted(edits: &[(&str, &str)]) -> Inventory {
    inventory::parse(Path::new("good.toml"), &edited(edits)).unwrap_or_else(|e| panic!("{e}"))
}

fn assert_has(err: &str, parts: &[&str]) {
    for p in parts {
        assert!(err.contains(p), "error does not mention {p:?}:\n{err}");
    }
}

#[test]
fn example_is_valid() {
    let inv = inventory::load(&example_inventory()).unwrap();
    assert_eq!(inv.masters().count(), 3);
    assert_eq!(inv.workers().count(), 3);
    assert_eq!(inv.etcd_members().len(), 3);
    assert_eq!(inv.api_server_url(), "https://192.168.96.7:6443");
    assert_eq!(inv.cluster.first_service_ip().to_string(), "10.32.0.1");
    assert!(inv.warnings.is_empty(), "{:?}", inv.warnings);
    let pods: Vec<String> = inv.workers().map(|w| w.pod_cidr.unwrap().to_string()).collect();
    assert_eq!(pods, ["10.200.0.0/24", "10.200.1.0/24", "10.200.2.0/24"]);
}

#[test]
fn unknown_key() {
    let edits = [("name = \"kworker1\"\n", "name = \"kworker1\"\nadress = \"192.168.96.99\"\n")];
    let err = error_of(&edits);
    let line = line_of(&edits, "adress");
    assert_has(&err, &[&format!("bad.toml:{line}:"), "nodes[3].adress", "unknown field `adress`"]);
}

#[test]
fn unknown_key_in_section() {
    let edits = [("[pki]\n", "[pki]\nalgorythm = \"rsa-2048\"\n")];
    let err = error_of(&edits);
    let line = line_of(&edits, "algorythm");
    assert_has(&err, &[&format!("bad.toml:{line}:"), "pki.algorythm", "unknown field"]);
}

#[test]
fn toml_syntax_error_has_a_line() {
    let edits = [("port = 6443", "port = = 6443")];
    let err = error_of(&edits);
    let line = line_of(&edits, "port = =");
    assert_has(&err, &[&format!("bad.toml:{line}:"), "not valid TOML"]);
}

#[test]
fn duplicate_node_name() {
    let edits = [("name = \"kmaster2\"", "name = \"kmaster1\"")];
    let err = error_of(&edits);
    let line = line_of(&[], "name = \"kmaster2\"");
    assert_has(&err, &[&format!("bad.toml:{line}:"), "nodes[1].name", "duplicate node name \"kmaster1\" (also nodes[0])"]);
}

#[test]
fn duplicate_node_address() {
    let edits = [("address = \"192.168.96.47\"", "address = \"192.168.96.46\"")];
    let err = error_of(&edits);
    let line = line_of(&[], "address = \"192.168.96.47\"");
    assert_has(&err, &[&format!("bad.toml:{line}:"), "nodes[1].address", "duplicate node address 192.168.96.46"]);
}

#[test]
fn invalid_ip() {
    let edits = [("address = \"192.168.96.49\"", "address = \"192.168.96.349\"")];
    let err = error_of(&edits);
    let line = line_of(&edits, "192.168.96.349");
    assert_has(&err, &[&format!("bad.toml:{line}:"), "nodes[3].address", "\"192.168.96.349\" is not a valid IP address"]);
}

#[test]
fn invalid_cidr() {
    let edits = [("service_cidr = \"10.32.0.0/24\"", "service_cidr = \"10.32.0.0/33\"")];
    let err = error_of(&edits);
    let line = line_of(&edits, "service_cidr");
    assert_has(&err, &[&format!("bad.toml:{line}:"), "cluster.service_cidr", "not a valid CIDR"]);
}

#[test]
fn cidr_with_host_bits() {
    let err = error_of(&[("pod_cidr = \"10.200.0.0/16\"", "pod_cidr = \"10.200.5.0/16\"")]);
    assert_has(&err, &["cluster.pod_cidr", "host bits set; did you mean 10.200.0.0/16"]);
}

#[test]
fn service_and_pod_cidrs_overlap() {
    let edits = [("pod_cidr = \"10.200.0.0/16\"", "pod_cidr = \"10.32.0.0/16\"")];
    let err = error_of(&edits);
    let line = line_of(&edits, "pod_cidr");
    assert_has(&err, &[&format!("bad.toml:{line}:"), "cluster.pod_cidr", "pod network 10.32.0.0/16 overlaps the service network 10.32.0.0/24"]);
}

#[test]
fn node_address_inside_a_cluster_cidr() {
    let edits = [("address = \"192.168.96.50\"", "address = \"10.200.3.4\"")];
    let err = error_of(&edits);
    let line = line_of(&edits, "10.200.3.4");
    assert_has(&err, &[&format!("bad.toml:{line}:"), "nodes[4].address", "node address 10.200.3.4 lies inside cluster.pod_cidr 10.200.0.0/16"]);
}

#[test]
fn metallb_pool_overlaps_a_node() {
    let edits = [("192.168.96.240-192.168.96.250", "192.168.96.40-192.168.96.60")];
    let err = error_of(&edits);
    let line = line_of(&edits, "192.168.96.40-");
    assert_has(&err, &[&format!("bad.toml:{line}:"), "addons.metallb.addresses[0]", "contains node kmaster1's address 192.168.96.46"]);
}

#[test]
fn metallb_pool_overlaps_a_cidr() {
    let err = error_of(&[("\"192.168.96.240-192.168.96.250\"", "\"10.32.0.128/25\"")]);
    assert_has(&err, &["addons.metallb.addresses[0]", "pool 10.32.0.128/25 overlaps cluster.service_cidr 10.32.0.0/24"]);
}

#[test]
fn metallb_pool_garbage() {
    let err = error_of(&[("\"192.168.96.240-192.168.96.250\"", "\"lots of addresses\"")]);
    assert_has(&err, &["addons.metallb.addresses[0]", "neither an IPv4 range"]);
}

#[test]
fn no_master() {
    let err = error_of(&[
        ("roles = [\"master\"]", "roles = [\"worker\"]"),
        ("roles = [\"master\"]", "roles = [\"worker\"]"),
        ("roles = [\"master\"]", "roles = [\"worker\"]"),
    ]);
    assert_has(&err, &["bad.toml", "nodes: no node has role \"master\""]);
}

#[test]
fn several_masters_need_a_load_balancer() {
    let mut text = example_text();
    let start = text.find("[load_balancer]").unwrap();
    let end = text.find("[ssh]").unwrap();
    text.replace_range(start..end, "");
    text = text.replace("roles = [\"lb\"]", "roles = [\"worker\"]");
    let err = inventory::parse(Path::new("bad.toml"), &text).unwrap_err().to_string();
    assert_has(&err, &["load_balancer", "3 masters but no [load_balancer]"]);
}

#[test]
fn even_etcd_member_count_is_a_warning() {
    let mut text = example_text();
    text = text.replacen("roles = [\"worker\"]", "roles = [\"master\"]", 1);
    let inv = inventory::parse(Path::new("warn.toml"), &text).expect("an even member count is allowed");
    assert_eq!(inv.etcd_members().len(), 4);
    let w: Vec<String> = inv.warnings.iter().map(|w| w.display_in(Path::new("warn.toml"))).collect();
    assert!(w.iter().any(|w| w.contains("4 etcd members") && w.contains("quorum is 3")), "{w:?}");
}

#[test]
fn unknown_role() {
    let edits = [("roles = [\"worker\"]", "roles = [\"wroker\"]")];
    let err = error_of(&edits);
    let line = line_of(&edits, "wroker");
    assert_has(&err, &[&format!("bad.toml:{line}:"), "nodes[3].roles[0]", "unknown role \"wroker\" (known roles: master, worker, lb, etcd)"]);
}

#[test]
fn node_name_must_be_a_dns_label() {
    let edits = [("name = \"kworker2\"", "name = \"KWorker_2\"")];
    let err = error_of(&edits);
    let line = line_of(&edits, "KWorker_2");
    assert_has(&err, &[&format!("bad.toml:{line}:"), "nodes[4].name", "\"KWorker_2\" is not a valid DNS label"]);
}

#[test]
fn load_balancer_node_must_have_role_lb() {
    let err = error_of(&[("node = \"haproxy\"", "node = \"kworker1\"")]);
    assert_has(&err, &["load_balancer.node", "node \"kworker1\" does not have role \"lb\""]);
}

#[test]
fn cluster_dns_inside_service_cidr() {
    let err = error_of(&[("cluster_dns = \"10.32.0.10\"", "cluster_dns = \"10.33.0.10\"")]);
    assert_has(&err, &["cluster.cluster_dns", "10.33.0.10 is outside service_cidr 10.32.0.0/24"]);
}

#[test]
fn unknown_algorithm() {
    let err = error_of(&[("algorithm = \"ecdsa-p256\"", "algorithm = \"dsa-1024\"")]);
    assert_has(&err, &["pki.algorithm", "unknown algorithm \"dsa-1024\""]);
}

#[test]
fn every_problem_is_reported_at_once() {
    let err = error_of(&[
        ("address = \"192.168.96.49\"", "address = \"nope\""),
        ("roles = [\"worker\"]", "roles = [\"wroker\"]"),
    ]);
    assert_has(&err, &["2 problem(s)", "nodes[3].address", "nodes[3].roles[0]"]);
}

#[test]
fn bad_inventory_changes_nothing_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory_variant(dir.path(), "bad.toml", &[("roles = [\"worker\"]", "roles = [\"wroker\"]")]);
    for args in [vec!["pki", "generate", "--out"], vec!["render", "--out"]] {
        let out_dir = dir.path().join("out");
        let out = run(hardway().args(&args).arg(&out_dir).arg("-i").arg(&inv));
        assert_eq!(out.status.code(), Some(1), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("bad.toml:") && stderr.contains("unknown role \"wroker\""), "{stderr}");
        assert!(!out_dir.exists(), "{args:?} wrote {} despite a bad inventory", out_dir.display());
    }
}

#[test]
fn lab_inventory_is_valid() {
    // Its load balancer's address is the LB node's own: that must stay allowed.
    let inv = inventory::load(&repo().join("inventory/lab.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(inv.api_server_url(), "https://10.213.0.14:6443");
}

// ---------------------------------------------------------------------------------------------
// Values that reach rendered files (issue 16, item 8).

const REMOTE_DIR: &str = r#"remote_dir = "/usr/local/bin""#;

#[test]
fn remote_dir_with_a_newline() {
    // It would add an ExecStartPre= line to every unit.
    let edits = [(REMOTE_DIR, r#"remote_dir = "/usr/local/bin\nExecStartPre=/bin/sh -c reboot""#)];
    let p = refused(&edits, "binaries.remote_dir", "remote_dir", &["contains a newline", "letters, digits and . _ / + -"]);
    assert!(!p.message.contains('\n'), "the message shows the newline escaped: {p:?}");
}

#[test]
fn remote_dir_with_a_space() {
    let edits = [(REMOTE_DIR, r#"remote_dir = "/usr/local/bin ""#)];
    refused(&edits, "binaries.remote_dir", "remote_dir", &["contains a space", "ExecStart="]);
}

#[test]
fn remote_dir_with_a_percent() {
    let edits = [(REMOTE_DIR, r#"remote_dir = "/opt/%n/bin""#)];
    refused(&edits, "binaries.remote_dir", "remote_dir", &["contains '%'"]);
}

#[test]
fn remote_dir_with_a_quote() {
    let edits = [(REMOTE_DIR, r#"remote_dir = '/opt/"k8s"/bin'"#)];
    refused(&edits, "binaries.remote_dir", "remote_dir", &["contains '\"'"]);
}

#[test]
fn remote_dir_must_be_absolute() {
    let edits = [(REMOTE_DIR, r#"remote_dir = "usr/local/bin""#)];
    refused(&edits, "binaries.remote_dir", "remote_dir", &["is not an absolute path"]);
}

#[test]
fn remote_dir_of_plain_path_characters_is_accepted() {
    let inv = accepted(&[(REMOTE_DIR, r#"remote_dir = "/opt/k8s-1.31_2+x/bin/""#)]);
    assert_eq!(inv.binaries.remote_dir, "/opt/k8s-1.31_2+x/bin/");
}

#[test]
fn cluster_name_with_an_uppercase_letter() {
    let edits = [(r#"name = "systemv""#, r#"name = "Systemv""#)];
    refused(&edits, "cluster.name", "Systemv", &["not a valid DNS label", "uppercase letter 'S'", "lowercase letters"]);
}

#[test]
fn cluster_name_with_an_underscore() {
    let edits = [(r#"name = "systemv""#, r#"name = "system_v""#)];
    refused(&edits, "cluster.name", "system_v", &["not a valid DNS label", "contains '_'"]);
}

#[test]
fn cluster_name_with_a_newline() {
    let edits = [(r#"name = "systemv""#, r#"name = "systemv\nExecStartPre=/bin/true""#)];
    refused(&edits, "cluster.name", "systemv\\n", &["not a valid DNS label", "contains a newline"]);
}

#[test]
fn domain_with_an_uppercase_letter() {
    let edits = [(r#"domain = "systemv.local""#, r#"domain = "Systemv.local""#)];
    refused(&edits, "cluster.domain", "Systemv", &["not a valid DNS domain", "label \"Systemv\"", "uppercase letter 'S'"]);
}

#[test]
fn domain_with_an_underscore() {
    let edits = [(r#"domain = "systemv.local""#, r#"domain = "systemv_lab.local""#)];
    refused(&edits, "cluster.domain", "systemv_lab", &["not a valid DNS domain", "contains '_'"]);
}

#[test]
fn domain_with_a_newline() {
    let edits = [(r#"domain = "systemv.local""#, r#"domain = "systemv.local\n10.0.0.1 evil""#)];
    refused(&edits, "cluster.domain", "systemv.local\\n", &["not a valid DNS domain", "contains a newline"]);
}

#[test]
fn domain_with_a_trailing_dot() {
    let edits = [(r#"domain = "systemv.local""#, r#"domain = "systemv.local.""#)];
    refused(&edits, "cluster.domain", "domain = \"systemv.local.", &["not a valid DNS domain", "empty label"]);
}

#[test]
fn cluster_domain_with_an_uppercase_letter() {
    let edits = [(r#"cluster_domain = "cluster.local""#, r#"cluster_domain = "Cluster.local""#)];
    refused(&edits, "cluster.cluster_domain", "Cluster.local", &["not a valid DNS domain", "uppercase letter 'C'"]);
}

#[test]
fn cluster_domain_with_an_underscore() {
    let edits = [(r#"cluster_domain = "cluster.local""#, r#"cluster_domain = "cluster_local""#)];
    refused(&edits, "cluster.cluster_domain", "cluster_local", &["not a valid DNS domain", "contains '_'"]);
}

#[test]
fn cluster_domain_with_a_newline() {
    // It lands in kubelet-config.yaml, where a newline starts a new key.
    let edits = [(r#"cluster_domain = "cluster.local""#, r#"cluster_domain = "cluster.local\nreadOnlyPort: 10255""#)];
    refused(&edits, "cluster.cluster_domain", "cluster_domain", &["not a valid DNS domain", "contains a newline"]);
}

#[test]
fn node_name_with_a_newline() {
    let edits = [(r#"name = "kworker2""#, r#"name = "kworker2\n""#)];
    refused(&edits, "nodes[4].name", "kworker2", &["not a valid DNS label", "contains a newline"]);
}

#[test]
fn load_balancer_dns_name_with_an_uppercase_letter() {
    let edits = [(r#"dns_name = "haproxy.systemv.local""#, r#"dns_name = "HAProxy.systemv.local""#)];
    refused(&edits, "load_balancer.dns_name", "dns_name", &["not a valid DNS name", "uppercase letter 'H'"]);
}

#[test]
fn load_balancer_dns_name_with_an_underscore() {
    let edits = [(r#"dns_name = "haproxy.systemv.local""#, r#"dns_name = "ha_proxy.systemv.local""#)];
    refused(&edits, "load_balancer.dns_name", "dns_name", &["not a valid DNS name", "contains '_'"]);
}

#[test]
fn load_balancer_dns_name_with_a_newline() {
    // It lands in /etc/hosts, where a newline starts another entry.
    let edits = [(r#"dns_name = "haproxy.systemv.local""#, r#"dns_name = "haproxy.systemv.local\n203.0.113.9 kmaster1""#)];
    refused(&edits, "load_balancer.dns_name", "dns_name", &["not a valid DNS name", "contains a newline"]);
}

const VERSION: &str = r#"kubernetes_version = "1.37.1""#;

#[test]
fn kubernetes_version_without_a_patch() {
    let edits = [(VERSION, r#"kubernetes_version = "1.37""#)];
    refused(&edits, "cluster.kubernetes_version", "kubernetes_version", &["not a version like \"1.37.1\"", "digits only"]);
}

#[test]
fn kubernetes_version_with_a_suffix() {
    let edits = [(VERSION, r#"kubernetes_version = "1.37.1-rc.0""#)];
    refused(&edits, "cluster.kubernetes_version", "kubernetes_version", &["not a version like"]);
}

#[test]
fn kubernetes_version_with_a_newline() {
    let edits = [(VERSION, r#"kubernetes_version = "1.37.1\n""#)];
    refused(&edits, "cluster.kubernetes_version", "kubernetes_version", &["not a version like"]);
}

#[test]
fn kubernetes_version_with_a_sign() {
    // "+31" parses as a number; it is not digits only.
    let edits = [(VERSION, r#"kubernetes_version = "1.+31.2""#)];
    refused(&edits, "cluster.kubernetes_version", "kubernetes_version", &["not a version like"]);
}

#[test]
fn kubernetes_version_of_another_major() {
    let edits = [(VERSION, r#"kubernetes_version = "2.0.0""#)];
    refused(&edits, "cluster.kubernetes_version", "kubernetes_version", &["1.<minor>.<patch>"]);
}

#[test]
fn kubernetes_version_with_a_v_is_stored_without_it() {
    let inv = accepted(&[(VERSION, r#"kubernetes_version = "v1.37.1""#)]);
    assert_eq!(inv.cluster.kubernetes_version.to_string(), "1.37.1");
}

#[test]
fn metallb_pool_goes_to_yaml_without_its_spacing() {
    let inv = accepted(&[("\"192.168.96.240-192.168.96.250\"", "\"192.168.96.240 -\\n192.168.96.250\", \" 192.168.96.224/28 \"")]);
    assert_eq!(inv.addons.metallb.addresses, ["192.168.96.240-192.168.96.250", "192.168.96.224/28"]);
}

// ---------------------------------------------------------------------------------------------
// Accepted but wrong (issue 16, items 12 and 13).

#[test]
fn service_cidr_without_room_for_the_default_cluster_dns() {
    let edits = [(r#"service_cidr = "10.32.0.0/24""#, r#"service_cidr = "10.32.0.0/29""#), ("cluster_dns = \"10.32.0.10\"\n", "")];
    refused(
        &edits,
        "cluster.service_cidr",
        "service_cidr",
        &["10.32.0.0/29 has no room for the default cluster DNS address", "10.32.0.10", "/28 or larger"],
    );
}

#[test]
fn small_service_cidr_with_its_own_cluster_dns_is_accepted() {
    let inv = accepted(&[
        (r#"service_cidr = "10.32.0.0/24""#, r#"service_cidr = "10.32.0.0/29""#),
        (r#"cluster_dns = "10.32.0.10""#, r#"cluster_dns = "10.32.0.2""#),
    ]);
    assert_eq!(inv.cluster.cluster_dns.to_string(), "10.32.0.2");
}

#[test]
fn cluster_dns_on_the_network_address() {
    let edits = [(r#"cluster_dns = "10.32.0.10""#, r#"cluster_dns = "10.32.0.0""#)];
    refused(&edits, "cluster.cluster_dns", "cluster_dns", &["10.32.0.0 is the network address of service_cidr 10.32.0.0/24"]);
}

#[test]
fn cluster_dns_on_the_broadcast_address() {
    let edits = [(r#"cluster_dns = "10.32.0.10""#, r#"cluster_dns = "10.32.0.255""#)];
    refused(&edits, "cluster.cluster_dns", "cluster_dns", &["10.32.0.255 is the broadcast address of service_cidr 10.32.0.0/24"]);
}

#[test]
fn cluster_dns_on_the_first_service_ip() {
    let edits = [(r#"cluster_dns = "10.32.0.10""#, r#"cluster_dns = "10.32.0.1""#)];
    refused(&edits, "cluster.cluster_dns", "cluster_dns", &["10.32.0.1 is the first service IP", "kubernetes.default"]);
}

#[test]
fn load_balancer_on_a_master_with_the_api_server_port() {
    let edits = [(r#"roles = ["lb"]"#, r#"roles = ["lb", "master"]"#)];
    refused(
        &edits,
        "load_balancer.port",
        "port = 6443",
        &["6443 is also the port of kube-apiserver", "load-balancer node \"haproxy\"", "haproxy and kube-apiserver would both bind it"],
    );
}

#[test]
fn load_balancer_on_a_worker_with_the_kubelet_port() {
    let edits = [(r#"roles = ["lb"]"#, r#"roles = ["lb", "worker"]"#), ("port = 6443", "port = 10250")];
    refused(&edits, "load_balancer.port", "port = 10250", &["10250 is also the port of kubelet"]);
}

#[test]
fn load_balancer_on_an_etcd_member_with_the_etcd_peer_port() {
    let edits = [(r#"roles = ["lb"]"#, r#"roles = ["lb", "etcd"]"#), ("port = 6443", "port = 2380")];
    refused(&edits, "load_balancer.port", "port = 2380", &["2380 is also the port of etcd"]);
}

#[test]
fn load_balancer_on_a_master_with_its_own_port_is_accepted() {
    let inv = accepted(&[(r#"roles = ["lb"]"#, r#"roles = ["lb", "master"]"#), ("port = 6443", "port = 8443")]);
    assert_eq!(inv.api_server_url(), "https://192.168.96.7:8443");
}

#[test]
fn load_balancer_address_of_another_node() {
    let edits = [(r#"address = "192.168.96.7""#, r#"address = "192.168.96.46""#)];
    refused(
        &edits,
        "load_balancer.address",
        "192.168.96.46",
        &["192.168.96.46 is the address of node \"kmaster1\"", "load_balancer.node is \"haproxy\""],
    );
}

#[test]
fn external_load_balancer_address_of_a_node() {
    // No load_balancer.node: the haproxy host becomes a worker, still at the LB's address.
    let edits = [("node = \"haproxy\"\n", ""), (r#"roles = ["lb"]"#, r#"roles = ["worker"]"#)];
    refused(&edits, "load_balancer.address", "192.168.96.7", &["is the address of node \"haproxy\"", "external"]);
}

/// kworker1's table (nodes[3]) starts with this line; edits add keys after it.
const KWORKER1: &str = "name = \"kworker1\"\n";

#[test]
fn node_ssh_port_zero() {
    let edits = [(KWORKER1, "name = \"kworker1\"\nssh_port = 0\n")];
    refused(&edits, "nodes[3].ssh_port", "ssh_port", &["port 0 is not a valid port"]);
}

#[test]
fn ssh_port_zero() {
    let edits = [("port = 22", "port = 0")];
    refused(&edits, "ssh.port", "port = 0", &["port 0 is not a valid port"]);
}

#[test]
fn ssh_connect_timeout_zero() {
    let edits = [("[ssh]\n", "[ssh]\nconnect_timeout_secs = 0\n")];
    refused(&edits, "ssh.connect_timeout_secs", "connect_timeout_secs", &["0 seconds", "at least 1"]);
}

#[test]
fn ssh_connect_timeout_of_a_day() {
    let edits = [("[ssh]\n", "[ssh]\nconnect_timeout_secs = 86400\n")];
    refused(&edits, "ssh.connect_timeout_secs", "connect_timeout_secs", &["86400 seconds is more than an hour", "at most 3600"]);
}

/// kworker1 (nodes[3]) with `extra_sans = ["10.9.9.9", san]`.
fn with_san(san: &str) -> String {
    format!("{KWORKER1}extra_sans = [\"10.9.9.9\", {san:?}]\n")
}

fn refused_san(san: &str, parts: &[&str]) {
    refused(&[(KWORKER1, &with_san(san))], "nodes[3].extra_sans[1]", "extra_sans", parts);
}

#[test]
fn extra_san_star() {
    refused_san("*", &["\"*\" is a wildcard", "must name that node only"]);
}

#[test]
fn extra_san_wildcard_domain() {
    refused_san("*.systemv.local", &["\"*.systemv.local\" is a wildcard"]);
}

#[test]
fn extra_san_with_an_underscore() {
    refused_san("k_worker1.systemv.local", &["neither an IP address nor a DNS name", "contains '_'"]);
}

#[test]
fn extra_san_with_a_space() {
    refused_san("kworker1 ", &["neither an IP address nor a DNS name", "contains a space"]);
}

#[test]
fn extra_sans_of_names_and_addresses_are_accepted() {
    let inv = accepted(&[(KWORKER1, &with_san("fd00::1"))]);
    assert_eq!(inv.nodes[3].extra_sans, ["10.9.9.9", "fd00::1"]);
    accepted(&[(KWORKER1, &with_san("kworker1.lab.example"))]);
}

#[test]
fn ca_validity_beyond_a_century() {
    // 4,000,000 days used to pass here and panic later in the certificate's date arithmetic.
    let edits = [("ca_validity_days = 3650", "ca_validity_days = 4000000")];
    refused(&edits, "pki.ca_validity_days", "ca_validity_days", &["4000000 days is more than 100 years", "at most 36500"]);
}

#[test]
fn cert_validity_beyond_a_century() {
    let edits = [("cert_validity_days = 365", "cert_validity_days = 40000")];
    let problems = problems_of(&edits);
    let about_certs: Vec<&Problem> = problems.iter().filter(|p| p.field == "pki.cert_validity_days").collect();
    assert_eq!(about_certs.len(), 1, "one problem per field: {problems:#?}");
    refused(&edits, "pki.cert_validity_days", "cert_validity_days", &["40000 days is more than 100 years"]);
}

/// `[addons]`.
mod addons;
/// The rules that depend on the Kubernetes version: supported releases and `extra_args`.
mod kubernetes;
/// `[containerd]`, `[cni]` and `[lab]`.
mod runtime;
