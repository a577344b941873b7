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
        assert!(
            text.contains(from),
            "example.toml no longer contains {from:?}"
        );
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
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in edited text"));
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
        .unwrap_or_else(|| {
            panic!("no problem for {field} mentioning {parts:?} among {problems:#?}")
        });
    assert_eq!(
        p.position.map(|(line, _)| line),
        Some(line_of(edits, at)),
        "{p:?}"
    );
    p.clone()
}

/// Parses the edited example, which must be accepted.
fn accepted(edits: &[(&str, &str)]) -> Inventory {
    inventory::parse(Path::new("good.toml"), &edited(edits)).unwrap_or_else(|e| panic!("{e}"))
}

/// Puts `section` (a TOML table) before `[addons.metallb]` in the example.
fn with(section: &str) -> [(&'static str, String); 1] {
    [("[addons.metallb]", format!("{section}\n\n[addons.metallb]"))]
}

/// Edits built with `format!` (owned strings), as the `&str` pairs the helpers above take.
fn as_edits<A: AsRef<str>, B: AsRef<str>>(edits: &[(A, B)]) -> Vec<(&str, &str)> {
    edits
        .iter()
        .map(|(a, b)| (a.as_ref(), b.as_ref()))
        .collect()
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
    let pods: Vec<String> = inv
        .workers()
        .map(|w| w.pod_cidr.unwrap().to_string())
        .collect();
    assert_eq!(pods, ["10.200.0.0/24", "10.200.1.0/24", "10.200.2.0/24"]);
}

#[test]
fn unknown_key() {
    let edits = [(
        "name = \"kworker1\"\n",
        "name = \"kworker1\"\nadress = \"192.168.96.99\"\n",
    )];
    let err = error_of(&edits);
    let line = line_of(&edits, "adress");
    assert_has(
        &err,
        &[
            &format!("bad.toml:{line}:"),
            "nodes[3].adress",
            "unknown field `adress`",
        ],
    );
}

#[test]
fn unknown_key_in_section() {
    let edits = [("[pki]\n", "[pki]\nalgorythm = \"rsa-2048\"\n")];
    let err = error_of(&edits);
    let line = line_of(&edits, "algorythm");
    assert_has(
        &err,
        &[
            &format!("bad.toml:{line}:"),
            "pki.algorythm",
            "unknown field",
        ],
    );
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
    assert_has(
        &err,
        &[
            &format!("bad.toml:{line}:"),
            "nodes[1].name",
            "duplicate node name \"kmaster1\" (also nodes[0])",
        ],
    );
}

#[test]
fn duplicate_node_address() {
    let edits = [("address = \"192.168.96.47\"", "address = \"192.168.96.46\"")];
    let err = error_of(&edits);
    let line = line_of(&[], "address = \"192.168.96.47\"");
    assert_has(
        &err,
        &[
            &format!("bad.toml:{line}:"),
            "nodes[1].address",
            "duplicate node address 192.168.96.46",
        ],
    );
}

#[test]
fn invalid_ip() {
    let edits = [(
        "address = \"192.168.96.49\"",
        "address = \"192.168.96.349\"",
    )];
    let err = error_of(&edits);
    let line = line_of(&edits, "192.168.96.349");
    assert_has(
        &err,
        &[
            &format!("bad.toml:{line}:"),
            "nodes[3].address",
            "\"192.168.96.349\" is not a valid IP address",
        ],
    );
}

#[test]
fn invalid_cidr() {
    let edits = [(
        "service_cidr = \"10.32.0.0/24\"",
        "service_cidr = \"10.32.0.0/33\"",
    )];
    let err = error_of(&edits);
    let line = line_of(&edits, "service_cidr");
    assert_has(
        &err,
        &[
            &format!("bad.toml:{line}:"),
            "cluster.service_cidr",
            "not a valid CIDR",
        ],
    );
}

#[test]
fn cidr_with_host_bits() {
    let err = error_of(&[(
        "pod_cidr = \"10.200.0.0/16\"",
        "pod_cidr = \"10.200.5.0/16\"",
    )]);
    assert_has(
        &err,
        &[
            "cluster.pod_cidr",
            "host bits set; did you mean 10.200.0.0/16",
        ],
    );
}

#[test]
fn service_and_pod_cidrs_overlap() {
    let edits = [(
        "pod_cidr = \"10.200.0.0/16\"",
        "pod_cidr = \"10.32.0.0/16\"",
    )];
    let err = error_of(&edits);
    let line = line_of(&edits, "pod_cidr");
    assert_has(
        &err,
        &[
            &format!("bad.toml:{line}:"),
            "cluster.pod_cidr",
            "pod network 10.32.0.0/16 overlaps the service network 10.32.0.0/24",
        ],
    );
}

#[test]
fn node_address_inside_a_cluster_cidr() {
    let edits = [("address = \"192.168.96.50\"", "address = \"10.200.3.4\"")];
    let err = error_of(&edits);
    let line = line_of(&edits, "10.200.3.4");
    assert_has(
        &err,
        &[
            &format!("bad.toml:{line}:"),
            "nodes[4].address",
            "node address 10.200.3.4 lies inside cluster.pod_cidr 10.200.0.0/16",
        ],
    );
}

#[test]
fn metallb_pool_overlaps_a_node() {
    let edits = [(
        "192.168.96.240-192.168.96.250",
        "192.168.96.40-192.168.96.60",
    )];
    let err = error_of(&edits);
    let line = line_of(&edits, "192.168.96.40-");
    assert_has(
        &err,
        &[
            &format!("bad.toml:{line}:"),
            "addons.metallb.addresses[0]",
            "contains node kmaster1's address 192.168.96.46",
        ],
    );
}

#[test]
fn metallb_pool_overlaps_a_cidr() {
    let err = error_of(&[("\"192.168.96.240-192.168.96.250\"", "\"10.32.0.128/25\"")]);
    assert_has(
        &err,
        &[
            "addons.metallb.addresses[0]",
            "pool 10.32.0.128/25 overlaps cluster.service_cidr 10.32.0.0/24",
        ],
    );
}

#[test]
fn metallb_pool_garbage() {
    let err = error_of(&[("\"192.168.96.240-192.168.96.250\"", "\"lots of addresses\"")]);
    assert_has(
        &err,
        &["addons.metallb.addresses[0]", "neither an IPv4 range"],
    );
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
    let err = inventory::parse(Path::new("bad.toml"), &text)
        .unwrap_err()
        .to_string();
    assert_has(&err, &["load_balancer", "3 masters but no [load_balancer]"]);
    // A table that is missing has no line of its own: the error stands at the third master's.
    let third = text
        .match_indices("roles = [\"master\"]")
        .nth(2)
        .map(|(i, _)| text[..i].lines().count() + 1)
        .expect("three masters");
    assert!(
        err.contains(&format!("bad.toml:{third}:")),
        "no line {third} in: {err}"
    );
}

#[test]
fn even_etcd_member_count_is_a_warning() {
    let mut text = example_text();
    text = text.replacen("roles = [\"worker\"]", "roles = [\"master\"]", 1);
    let inv =
        inventory::parse(Path::new("warn.toml"), &text).expect("an even member count is allowed");
    assert_eq!(inv.etcd_members().len(), 4);
    let w: Vec<String> = inv
        .warnings
        .iter()
        .map(|w| w.display_in(Path::new("warn.toml")))
        .collect();
    assert!(
        w.iter().any(|w| w.contains(
            "4 etcd members: an even count tolerates no more failures than 3 (1; quorum is 3)"
        )),
        "{w:?}"
    );
}

#[test]
fn unknown_role() {
    let edits = [("roles = [\"worker\"]", "roles = [\"wroker\"]")];
    let err = error_of(&edits);
    let line = line_of(&edits, "wroker");
    assert_has(
        &err,
        &[
            &format!("bad.toml:{line}:"),
            "nodes[3].roles[0]",
            "unknown role \"wroker\" (known roles: master, worker, lb, etcd)",
        ],
    );
}

#[test]
fn node_name_must_be_a_dns_label() {
    let edits = [("name = \"kworker2\"", "name = \"KWorker_2\"")];
    let err = error_of(&edits);
    let line = line_of(&edits, "KWorker_2");
    assert_has(
        &err,
        &[
            &format!("bad.toml:{line}:"),
            "nodes[4].name",
            "\"KWorker_2\" is not a valid DNS label",
        ],
    );
}

#[test]
fn load_balancer_node_must_have_role_lb() {
    let err = error_of(&[("node = \"haproxy\"", "node = \"kworker1\"")]);
    assert_has(
        &err,
        &[
            "load_balancer.node",
            "node \"kworker1\" does not have role \"lb\"",
        ],
    );
}

#[test]
fn cluster_dns_inside_service_cidr() {
    let err = error_of(&[(
        "cluster_dns = \"10.32.0.10\"",
        "cluster_dns = \"10.33.0.10\"",
    )]);
    assert_has(
        &err,
        &[
            "cluster.cluster_dns",
            "10.33.0.10 is outside service_cidr 10.32.0.0/24",
        ],
    );
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
    assert_has(
        &err,
        &["2 problem(s)", "nodes[3].address", "nodes[3].roles[0]"],
    );
}

#[test]
fn bad_inventory_changes_nothing_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory_variant(
        dir.path(),
        "bad.toml",
        &[("roles = [\"worker\"]", "roles = [\"wroker\"]")],
    );
    for args in [vec!["pki", "generate", "--out"], vec!["render", "--out"]] {
        let out_dir = dir.path().join("out");
        let out = run(hardway().args(&args).arg(&out_dir).arg("-i").arg(&inv));
        assert_eq!(out.status.code(), Some(1), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("bad.toml:") && stderr.contains("unknown role \"wroker\""),
            "{stderr}"
        );
        assert!(
            !out_dir.exists(),
            "{args:?} wrote {} despite a bad inventory",
            out_dir.display()
        );
    }
}

#[test]
fn lab_inventory_is_valid() {
    // Its load balancer's address is the LB node's own: that must stay allowed.
    let inv = inventory::load(&repo().join("tests/fixtures/lab-etcd.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(inv.api_server_url(), "https://10.213.0.14:6443");
}

/// The example's version line; the tests of versions edit it.
const VERSION: &str = r#"kubernetes_version = "1.37.1""#;

/// Accepted once, wrong all the same (issue 16, items 12 and 13).
mod accepted_but_wrong;
/// `[addons]`.
mod addons;
/// The rules that depend on the Kubernetes version: supported releases and `extra_args`.
mod kubernetes;
/// `[lab]`: driver and VM sizes.
mod lab_vms;
/// Values that would not round-trip through rendered units, configs and /etc/hosts.
mod rendered_values;
/// `[containerd]`, `[cni]` and `[lab]`.
mod runtime;

#[test]
fn an_ipv6_node_address_is_refused_with_the_way_to_use_ipv6_for_ssh() {
    let edits = [("address = \"192.168.96.50\"", "address = \"fd00::50\"")];
    let err = error_of(&edits);
    let line = line_of(&edits, "fd00::50");
    assert_has(
        &err,
        &[
            &format!("bad.toml:{line}:"),
            ".address",
            "fd00::50 is an IPv6 address: the cluster's networks are IPv4 only",
            "ssh_address",
        ],
    );
}

/// A value of the wrong TOML type is named in TOML's words, not Rust's (`u16`, `sequence`).
#[test]
fn type_errors_speak_toml() {
    let err = error_of(&[("port = 22", "port = \"a\"")]);
    assert_has(
        &err,
        &["ssh.port", "expected a whole number from 0 to 65535"],
    );
    assert!(!err.contains("u16"), "{err}");
    let err = error_of(&[("roles = [\"master\"]", "roles = \"master\"")]);
    assert_has(&err, &["roles", "expected a list"]);
    assert!(!err.contains("sequence"), "{err}");
}

/// `ssh_address` is an IP address or a host name; a port in it would be looked up as part of
/// a host name and fail only when deploy connects.
#[test]
fn an_ssh_address_with_a_port_is_refused_with_the_fix() {
    for (given, want) in [
        (
            "10.0.0.9:2222",
            "write ssh_address = \"10.0.0.9\" and ssh_port = 2222",
        ),
        (
            "[fd00::9]:2222",
            "write ssh_address = \"fd00::9\" and ssh_port = 2222",
        ),
        ("bad_host!", "is not a valid IP address or host name"),
    ] {
        let line = format!("address = \"192.168.96.46\"\nssh_address = \"{given}\"");
        refused(
            &[("address = \"192.168.96.46\"", line.as_str())],
            "nodes[0].ssh_address",
            "ssh_address",
            &[want],
        );
    }
    for fine in ["10.0.0.9", "fd00::9", "kmaster1.example.org"] {
        let line = format!("address = \"192.168.96.46\"\nssh_address = \"{fine}\"");
        accepted(&[("address = \"192.168.96.46\"", line.as_str())]);
    }
}
