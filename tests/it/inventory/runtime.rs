//! `[containerd]`, `[cni]` and `[lab]`: the runtime's version decides the config format, paths
//! reach units and configs unquoted, the lab's suite decides its packages.

use super::{accepted, as_edits, problems_of, refused, with};
use hardway::inventory::{ContainerdVersion, LabSuite};

#[test]
fn defaults_are_where_debian_puts_things() {
    let inv = accepted(&[]);
    assert_eq!(
        inv.containerd.version,
        ContainerdVersion { major: 2, minor: 3 }
    );
    assert_eq!(inv.containerd.version.config_version(), 3);
    assert_eq!(
        (
            inv.containerd.bin_dir.as_str(),
            inv.cni.bin_dir.as_str(),
            inv.cni.conf_dir.as_str()
        ),
        ("/usr/bin", "/usr/lib/cni", "/etc/cni/net.d")
    );
    assert_eq!(inv.containerd.sandbox_image, "registry.k8s.io/pause:3.10.1");
    assert!(
        !inv.containerd.restrict_oom_score_adj,
        "pods keep the kubelet's OOM scores unless told otherwise"
    );
    assert_eq!(inv.lab.suite, LabSuite::Trixie);
}

#[test]
fn containerd_1_7_reads_config_version_2() {
    let e = with("[containerd]\nversion = \"v1.7.24\"");
    let inv = accepted(&as_edits(&e));
    assert_eq!(
        inv.containerd.version,
        ContainerdVersion { major: 1, minor: 7 }
    );
    assert_eq!(inv.containerd.version.config_version(), 2);
}

#[test]
fn containerd_version_without_a_minor() {
    let e = with("[containerd]\nversion = \"2\"");
    refused(
        &as_edits(&e),
        "containerd.version",
        "version = \"2\"",
        &["\"2\" is not a containerd version like \"2.1\""],
    );
}

#[test]
fn containerd_older_than_1_7() {
    let e = with("[containerd]\nversion = \"1.6.20\"");
    refused(
        &as_edits(&e),
        "containerd.version",
        "version = \"1.6",
        &["containerd 1.6 is not supported", "end of life"],
    );
}

#[test]
fn containerd_of_an_unknown_major() {
    let e = with("[containerd]\nversion = \"3.0\"");
    refused(
        &as_edits(&e),
        "containerd.version",
        "version = \"3.0\"",
        &["containerd 3.0 is newer than any hardway knows"],
    );
}

#[test]
fn containerd_bin_dir_with_a_space() {
    let e = with("[containerd]\nbin_dir = \"/opt/my bin\"");
    refused(
        &as_edits(&e),
        "containerd.bin_dir",
        "bin_dir",
        &["cannot be a directory on the nodes: it contains a space"],
    );
}

#[test]
fn sandbox_image_with_a_quote() {
    let e = with("[containerd]\nsandbox_image = \"pause\\\"3\"");
    refused(
        &as_edits(&e),
        "containerd.sandbox_image",
        "sandbox_image",
        &["is not an image reference", "it contains '\"'"],
    );
}

#[test]
fn cni_conf_dir_must_be_absolute() {
    let e = with("[cni]\nconf_dir = \"etc/cni\"");
    refused(
        &as_edits(&e),
        "cni.conf_dir",
        "conf_dir",
        &["it is not an absolute path"],
    );
}

#[test]
fn cni_paths_of_the_upstream_tarball_are_accepted() {
    let e = with("[cni]\nbin_dir = \"/opt/cni/bin/\"\nconf_dir = \"/etc/cni/net.d\"");
    let inv = accepted(&as_edits(&e));
    assert_eq!(inv.cni.bin_dir, "/opt/cni/bin");
}

#[test]
fn unknown_lab_suite() {
    let e = with("[lab]\nsuite = \"buster\"");
    refused(
        &as_edits(&e),
        "lab.suite",
        "suite",
        &["unknown suite \"buster\" (the lab builds bookworm, trixie, sid)"],
    );
}

#[test]
fn bookworm_lab_is_a_warning() {
    let e = with("[lab]\nsuite = \"bookworm\"");
    let inv = accepted(&as_edits(&e));
    assert_eq!(inv.lab.suite, LabSuite::Bookworm);
    assert!(
        inv.warnings
            .iter()
            .any(|w| w.field == "lab.suite" && w.message.contains("etcd 3.4 is end of life")),
        "{:?}",
        inv.warnings
    );
}

#[test]
fn unknown_key_in_containerd() {
    let e = with("[containerd]\nversoin = \"2.1\"");
    let problems = problems_of(&as_edits(&e));
    assert!(
        problems
            .iter()
            .any(|p| p.message.contains("unknown field `versoin`")),
        "{problems:#?}"
    );
}
