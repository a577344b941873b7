//! What containerd, the CNI plugins and the pod-network routes get, read the way their consumers
//! read it: containerd's TOML as a table, the CNI config as JSON, the routes table line by line.
//! The lab test `dataplane` runs the same files on real containerd, runc and CNI plugins.

use std::path::{Path, PathBuf};

use crate::common::pki_and_render;
use crate::common::*;

fn read(build: &Path, host: &str, path: &str) -> String {
    std::fs::read_to_string(build.join(host).join(path.trim_start_matches('/')))
        .unwrap_or_else(|e| panic!("{host}:{path}: {e}"))
}

/// The example with a `[containerd]` or `[cni]` table, rendered.
fn render_with(dir: &Path, section: &str) -> PathBuf {
    let inv = inventory_variant(
        dir,
        "v.toml",
        &[(
            "[addons.metallb]",
            &format!("{section}\n\n[addons.metallb]"),
        )],
    );
    pki_and_render(&inv, dir)
}

fn containerd_config(build: &Path) -> toml::Table {
    read(build, "kworker1", "/etc/containerd/config.toml")
        .parse()
        .expect("containerd's config is TOML")
}

/// `plugins.<id>.<path...>` of a containerd config.
fn at<'a>(t: &'a toml::Table, id: &str, path: &[&str]) -> &'a toml::Value {
    let mut v = &t["plugins"][id];
    for p in path {
        v = v
            .get(*p)
            .unwrap_or_else(|| panic!("no {id}.{} in {t:#?}", path.join(".")));
    }
    v
}

#[test]
fn every_node_that_reaches_pods_gets_the_same_route_table_and_unit() {
    let dir = tempfile::tempdir().unwrap();
    let build = pki_and_render(&example_inventory(), dir.path());
    let nodes = [
        "kmaster1", "kmaster2", "kmaster3", "kworker1", "kworker2", "kworker3",
    ];
    let table = read(&build, "kmaster1", "/etc/hardway/pod-routes");
    let unit = read(&build, "kmaster1", "/etc/systemd/system/pod-routes.service");
    for n in nodes {
        // The API servers dial pod IPs (aggregated APIs, webhooks): masters need the routes too.
        assert_eq!(
            read(&build, n, "/etc/hardway/pod-routes"),
            table,
            "{n} has another table"
        );
        assert_eq!(
            read(&build, n, "/etc/systemd/system/pod-routes.service"),
            unit,
            "{n} has another unit"
        );
    }
    assert!(
        !build.join("haproxy/etc/hardway/pod-routes").exists(),
        "the load balancer does not reach pods"
    );
    let routes: Vec<&str> = table.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        routes,
        [
            "10.200.0.0/24 192.168.96.49 kworker1",
            "10.200.1.0/24 192.168.96.50 kworker2",
            "10.200.2.0/24 192.168.96.51 kworker3"
        ]
    );
    assert!(
        unit.contains("</etc/hardway/pod-routes") && unit.contains("-o addr show to"),
        "{unit}"
    );
    // Pods leaving the pod network are masqueraded by the node, pods talking to pods are not.
    assert!(
        unit.contains("iptables -t nat -A POSTROUTING -s 10.200.0.0/16 ! -d 10.200.0.0/16 "),
        "{unit}"
    );
}

#[test]
fn the_route_files_do_not_grow_with_the_cluster_on_each_node() {
    // Twice the workers: the table grows by their lines, the unit not at all, and no node's
    // file names another node (render stays O(n) per node, O(n) once shared between nodes).
    let dir = tempfile::tempdir().unwrap();
    let small = pki_and_render(&example_inventory(), &dir.path().join("small"));
    let mut text = std::fs::read_to_string(example_inventory()).unwrap();
    for (i, a) in [(4, 52), (5, 53), (6, 54)] {
        text.push_str(&format!("\n[[nodes]]\nname = \"kworker{i}\"\naddress = \"192.168.96.{a}\"\nroles = [\"worker\"]\n"));
    }
    let big_inv = dir.path().join("big.toml");
    std::fs::write(&big_inv, text).unwrap();
    let big = pki_and_render(&big_inv, &dir.path().join("big"));
    let unit = "/etc/systemd/system/pod-routes.service";
    assert_eq!(read(&small, "kworker1", unit), read(&big, "kworker1", unit));
    let table = "/etc/hardway/pod-routes";
    assert_eq!(
        read(&big, "kworker1", table).lines().count(),
        read(&small, "kworker1", table).lines().count() + 3
    );
    assert!(!read(&big, "kworker1", unit).contains("kworker"));
}

#[test]
fn containerd_runs_from_debians_path_with_a_finite_file_limit() {
    let dir = tempfile::tempdir().unwrap();
    let build = pki_and_render(&example_inventory(), dir.path());
    let unit = read(&build, "kworker1", "/etc/systemd/system/containerd.service");
    assert!(unit.contains("\nExecStart=/usr/bin/containerd\n"), "{unit}");
    // upstream dropped infinity in 2.0: it made programs in containers allocate per descriptor.
    assert!(
        unit.contains("\nLimitNOFILE=1048576\n") && !unit.contains("LimitNOFILE=infinity"),
        "{unit}"
    );
}

#[test]
fn containerd_2_gets_config_version_3_with_debians_cni_paths() {
    let dir = tempfile::tempdir().unwrap();
    let build = pki_and_render(&example_inventory(), dir.path());
    let c = containerd_config(&build);
    assert_eq!(c["version"].as_integer(), Some(3));
    assert_eq!(
        at(
            &c,
            "io.containerd.cri.v1.images",
            &["pinned_images", "sandbox"]
        )
        .as_str(),
        Some("registry.k8s.io/pause:3.10.1")
    );
    assert_eq!(
        at(&c, "io.containerd.cri.v1.images", &["snapshotter"]).as_str(),
        Some("overlayfs")
    );
    let runc = at(
        &c,
        "io.containerd.cri.v1.runtime",
        &["containerd", "runtimes", "runc"],
    );
    assert_eq!(runc["options"]["SystemdCgroup"].as_bool(), Some(true));
    let cni = at(&c, "io.containerd.cri.v1.runtime", &["cni"]);
    // containerd 2.1 and later: a list (its `bin_dir` goes away in 2.3).
    assert_eq!(
        cni["bin_dirs"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>()),
        Some(vec!["/usr/lib/cni"])
    );
    assert_eq!(cni["conf_dir"].as_str(), Some("/etc/cni/net.d"));
    assert!(
        c["plugins"].get("io.containerd.grpc.v1.cri").is_none(),
        "a version-2 section in a version-3 config"
    );
    // Pods keep the kubelet's OOM scores unless the inventory says the nodes cannot have them.
    assert!(
        at(&c, "io.containerd.cri.v1.runtime", &[])
            .get("restrict_oom_score_adj")
            .is_none()
    );
    for host in ["kworker1", "kworker2", "kworker3"] {
        for f in files_below(&build.join(host)) {
            let text = std::fs::read_to_string(build.join(host).join(&f)).unwrap_or_default();
            assert!(
                !text.contains("/opt/cni/bin"),
                "{host}:{} names /opt/cni/bin",
                f.display()
            );
        }
    }
}

#[test]
fn containerd_2_0_gets_the_single_cni_bin_dir() {
    let dir = tempfile::tempdir().unwrap();
    let c = containerd_config(&render_with(
        dir.path(),
        "[containerd]\nversion = \"2.0\"\nrestrict_oom_score_adj = true",
    ));
    assert_eq!(c["version"].as_integer(), Some(3));
    assert_eq!(
        at(
            &c,
            "io.containerd.cri.v1.runtime",
            &["restrict_oom_score_adj"]
        )
        .as_bool(),
        Some(true)
    );
    let cni = at(&c, "io.containerd.cri.v1.runtime", &["cni"]);
    assert_eq!(cni["bin_dir"].as_str(), Some("/usr/lib/cni"));
    assert!(cni.get("bin_dirs").is_none());
}

#[test]
fn containerd_1_7_gets_config_version_2() {
    let dir = tempfile::tempdir().unwrap();
    let section = "[containerd]\nversion = \"1.7\"\nsandbox_image = \"registry.example/pause:3.9\"\nrestrict_oom_score_adj = true";
    let c = containerd_config(&render_with(dir.path(), section));
    assert_eq!(c["version"].as_integer(), Some(2));
    let cri = at(&c, "io.containerd.grpc.v1.cri", &[]);
    assert_eq!(cri["restrict_oom_score_adj"].as_bool(), Some(true));
    assert_eq!(
        cri["sandbox_image"].as_str(),
        Some("registry.example/pause:3.9")
    );
    assert_eq!(
        cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"].as_bool(),
        Some(true)
    );
    assert_eq!(cri["cni"]["bin_dir"].as_str(), Some("/usr/lib/cni"));
    assert!(
        c["plugins"].get("io.containerd.cri.v1.runtime").is_none(),
        "containerd 1.7 refuses version-3 sections"
    );
}

#[test]
fn one_cni_config_where_the_inventory_says_and_no_loopback_file() {
    let dir = tempfile::tempdir().unwrap();
    let build = render_with(
        dir.path(),
        "[cni]\nbin_dir = \"/opt/cni/bin\"\nconf_dir = \"/etc/cni/hardway.d\"",
    );
    for host in ["kworker1", "kworker2", "kworker3"] {
        let confs: Vec<PathBuf> = files_below(&build.join(host))
            .into_iter()
            .filter(|f| f.starts_with("etc/cni"))
            .collect();
        // containerd's CRI plugin reads one config and sets up loopback itself.
        assert_eq!(
            confs,
            [PathBuf::from("etc/cni/hardway.d/10-bridge.conf")],
            "{host}"
        );
    }
    let conf: serde_json::Value = serde_json::from_str(&read(
        &build,
        "kworker2",
        "/etc/cni/hardway.d/10-bridge.conf",
    ))
    .unwrap();
    assert_eq!(conf["type"], "bridge");
    // The bridge's own masquerading would hide pods behind their nodes from other pods.
    assert_eq!(conf["ipMasq"], false);
    assert_eq!(conf["ipam"]["ranges"][0][0]["subnet"], "10.200.1.0/24");
    let cni = at(
        &containerd_config(&build),
        "io.containerd.cri.v1.runtime",
        &["cni"],
    )
    .clone();
    assert_eq!(cni["conf_dir"].as_str(), Some("/etc/cni/hardway.d"));
    assert_eq!(cni["bin_dirs"][0].as_str(), Some("/opt/cni/bin"));
}
