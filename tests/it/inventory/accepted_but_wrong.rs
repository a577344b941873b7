//! Values the validator once accepted but that were wrong (issue 16, items 12 and 13): cluster
//! DNS and service CIDR, load-balancer ports and addresses, ports and timeouts, extra SANs and
//! validity periods. Each refused with its field, line and reason.

use super::{accepted, problems_of, refused};
use hardway::inventory::Problem;

#[test]
fn service_cidr_without_room_for_the_default_cluster_dns() {
    let edits = [
        (
            r#"service_cidr = "10.32.0.0/24""#,
            r#"service_cidr = "10.32.0.0/29""#,
        ),
        ("cluster_dns = \"10.32.0.10\"\n", ""),
    ];
    refused(
        &edits,
        "cluster.service_cidr",
        "service_cidr",
        &[
            "10.32.0.0/29 has no room for the default cluster DNS address",
            "10.32.0.10",
            "/28 or larger",
        ],
    );
}

#[test]
fn small_service_cidr_with_its_own_cluster_dns_is_accepted() {
    let inv = accepted(&[
        (
            r#"service_cidr = "10.32.0.0/24""#,
            r#"service_cidr = "10.32.0.0/29""#,
        ),
        (
            r#"cluster_dns = "10.32.0.10""#,
            r#"cluster_dns = "10.32.0.2""#,
        ),
    ]);
    assert_eq!(inv.cluster.cluster_dns.to_string(), "10.32.0.2");
}

#[test]
fn cluster_dns_on_the_network_address() {
    let edits = [(
        r#"cluster_dns = "10.32.0.10""#,
        r#"cluster_dns = "10.32.0.0""#,
    )];
    refused(
        &edits,
        "cluster.cluster_dns",
        "cluster_dns",
        &["10.32.0.0 is the network address of service_cidr 10.32.0.0/24"],
    );
}

#[test]
fn cluster_dns_on_the_broadcast_address() {
    let edits = [(
        r#"cluster_dns = "10.32.0.10""#,
        r#"cluster_dns = "10.32.0.255""#,
    )];
    refused(
        &edits,
        "cluster.cluster_dns",
        "cluster_dns",
        &["10.32.0.255 is the broadcast address of service_cidr 10.32.0.0/24"],
    );
}

#[test]
fn cluster_dns_on_the_first_service_ip() {
    let edits = [(
        r#"cluster_dns = "10.32.0.10""#,
        r#"cluster_dns = "10.32.0.1""#,
    )];
    refused(
        &edits,
        "cluster.cluster_dns",
        "cluster_dns",
        &["10.32.0.1 is the first service IP", "kubernetes.default"],
    );
}

#[test]
fn load_balancer_on_a_master_with_the_api_server_port() {
    let edits = [(r#"roles = ["lb"]"#, r#"roles = ["lb", "master"]"#)];
    refused(
        &edits,
        "load_balancer.port",
        "port = 6443",
        &[
            "6443 is also the port of kube-apiserver",
            "load-balancer node \"haproxy\"",
            "haproxy and kube-apiserver would both bind it",
        ],
    );
}

#[test]
fn load_balancer_on_a_worker_with_the_kubelet_port() {
    let edits = [
        (r#"roles = ["lb"]"#, r#"roles = ["lb", "worker"]"#),
        ("port = 6443", "port = 10250"),
    ];
    refused(
        &edits,
        "load_balancer.port",
        "port = 10250",
        &["10250 is also the port of kubelet"],
    );
}

#[test]
fn load_balancer_on_an_etcd_member_with_the_etcd_peer_port() {
    let edits = [
        (r#"roles = ["lb"]"#, r#"roles = ["lb", "etcd"]"#),
        ("port = 6443", "port = 2380"),
    ];
    refused(
        &edits,
        "load_balancer.port",
        "port = 2380",
        &["2380 is also the port of etcd"],
    );
}

#[test]
fn load_balancer_on_a_master_with_its_own_port_is_accepted() {
    let inv = accepted(&[
        (r#"roles = ["lb"]"#, r#"roles = ["lb", "master"]"#),
        ("port = 6443", "port = 8443"),
    ]);
    assert_eq!(inv.api_server_url(), "https://192.168.96.7:8443");
}

#[test]
fn load_balancer_address_of_another_node() {
    let edits = [(
        r#"address = "192.168.96.7""#,
        r#"address = "192.168.96.46""#,
    )];
    refused(
        &edits,
        "load_balancer.address",
        "192.168.96.46",
        &[
            "192.168.96.46 is the address of node \"kmaster1\"",
            "load_balancer.node is \"haproxy\"",
        ],
    );
}

#[test]
fn external_load_balancer_address_of_a_node() {
    // No load_balancer.node: the haproxy host becomes a worker, still at the LB's address.
    let edits = [
        ("node = \"haproxy\"\n", ""),
        (r#"roles = ["lb"]"#, r#"roles = ["worker"]"#),
    ];
    refused(
        &edits,
        "load_balancer.address",
        "192.168.96.7",
        &["is the address of node \"haproxy\"", "external"],
    );
}

/// kworker1's table (nodes[3]) starts with this line; edits add keys after it.
const KWORKER1: &str = "name = \"kworker1\"\n";

#[test]
fn node_ssh_port_zero() {
    let edits = [(KWORKER1, "name = \"kworker1\"\nssh_port = 0\n")];
    refused(
        &edits,
        "nodes[3].ssh_port",
        "ssh_port",
        &["port 0 is not a valid port"],
    );
}

#[test]
fn ssh_port_zero() {
    let edits = [("port = 22", "port = 0")];
    refused(
        &edits,
        "ssh.port",
        "port = 0",
        &["port 0 is not a valid port"],
    );
}

#[test]
fn ssh_connect_timeout_zero() {
    let edits = [("[ssh]\n", "[ssh]\nconnect_timeout_secs = 0\n")];
    refused(
        &edits,
        "ssh.connect_timeout_secs",
        "connect_timeout_secs",
        &["0 seconds", "at least 1"],
    );
}

#[test]
fn ssh_connect_timeout_of_a_day() {
    let edits = [("[ssh]\n", "[ssh]\nconnect_timeout_secs = 86400\n")];
    refused(
        &edits,
        "ssh.connect_timeout_secs",
        "connect_timeout_secs",
        &["86400 seconds is more than an hour", "at most 3600"],
    );
}

#[test]
fn ssh_connect_attempts_zero() {
    let edits = [("[ssh]\n", "[ssh]\nconnect_attempts = 0\n")];
    refused(
        &edits,
        "ssh.connect_attempts",
        "connect_attempts",
        &["0 attempts never connect", "at least 1"],
    );
}

#[test]
fn ssh_connect_attempts_that_would_stall_for_minutes() {
    let edits = [("[ssh]\n", "[ssh]\nconnect_attempts = 10\n")];
    refused(
        &edits,
        "ssh.connect_attempts",
        "connect_attempts",
        &["10 attempts is more than 6", "twice as long"],
    );
}

/// kworker1 (nodes[3]) with `extra_sans = ["10.9.9.9", san]`.
fn with_san(san: &str) -> String {
    format!("{KWORKER1}extra_sans = [\"10.9.9.9\", {san:?}]\n")
}

fn refused_san(san: &str, parts: &[&str]) {
    refused(
        &[(KWORKER1, &with_san(san))],
        "nodes[3].extra_sans[1]",
        "extra_sans",
        parts,
    );
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
    refused_san(
        "k_worker1.systemv.local",
        &["neither an IP address nor a DNS name", "contains '_'"],
    );
}

#[test]
fn extra_san_with_a_space() {
    refused_san(
        "kworker1 ",
        &["neither an IP address nor a DNS name", "contains a space"],
    );
}

/// A worker's key must not pass as another node, the load balancer or the API server: its
/// extra_sans may name no other node, nor the API server's names and addresses.
#[test]
fn extra_sans_naming_another_node_the_lb_or_the_api_server_are_refused() {
    for (san, parts) in [
        (
            "192.168.96.47",
            &["192.168.96.47", "kmaster2", "address"][..],
        ),
        ("kmaster2", &["kmaster2", "name"]),
        ("KMaster2.systemv.local", &["kmaster2", "name"]),
        ("192.168.96.7", &["load balancer", "address"]),
        ("haproxy.systemv.local", &["load balancer"]),
        ("kubernetes", &["API server"]),
        ("kubernetes.default.svc.cluster.local", &["API server"]),
        ("kubernetes.default", &["API server"]),
        ("10.32.0.1", &["service", "10.32.0.0/24"]),
        ("localhost", &["loopback", "worker"]),
        ("127.0.0.1", &["loopback", "worker"]),
        ("::1", &["loopback", "worker"]),
    ] {
        let p = refused(
            &[(KWORKER1, &with_san(san))],
            "nodes[3].extra_sans[1]",
            "extra_sans",
            parts,
        );
        assert!(p.message.contains(san), "{san}: {p:?}");
    }
    // Its own name, FQDN and address are its own.
    accepted(&[(KWORKER1, &with_san("kworker1.systemv.local"))]);
    accepted(&[(KWORKER1, &with_san("192.168.96.49"))]);
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
    refused(
        &edits,
        "pki.ca_validity_days",
        "ca_validity_days",
        &["4000000 days is more than 100 years", "at most 36500"],
    );
}

#[test]
fn cert_validity_beyond_a_century() {
    let edits = [("cert_validity_days = 365", "cert_validity_days = 40000")];
    let problems = problems_of(&edits);
    let about_certs: Vec<&Problem> = problems
        .iter()
        .filter(|p| p.field == "pki.cert_validity_days")
        .collect();
    assert_eq!(about_certs.len(), 1, "one problem per field: {problems:#?}");
    refused(
        &edits,
        "pki.cert_validity_days",
        "cert_validity_days",
        &["40000 days is more than 100 years"],
    );
}
