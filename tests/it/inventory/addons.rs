//! `[addons]`: CoreDNS, MetalLB's and metrics-server's manifests, the image directory — each
//! rule with its file, line, field and reason, and the defaults pinned per version.

use std::path::Path;

use super::{accepted, refused};
use hardway::inventory::{self, Manifest};
use hardway::versions;

#[test]
fn coredns_is_on_by_default_with_the_image_kubeadm_pins_for_the_minor() {
    for (version, tag) in [
        ("1.35.7", "v1.13.1"),
        ("1.36.4", "v1.14.2"),
        ("1.37.1", "v1.14.2"),
    ] {
        let inv = accepted(&[(
            super::VERSION,
            &format!("kubernetes_version = \"{version}\""),
        )]);
        let dns = inv.addons.coredns.expect("CoreDNS is on by default");
        assert_eq!(
            dns.image,
            format!("registry.k8s.io/coredns/coredns:{tag}"),
            "{version}"
        );
        assert_eq!(dns.replicas, 2);
    }
    let off = accepted(&[(
        "[addons.aggregation]",
        "[addons.coredns]\nenabled = false\n\n[addons.aggregation]",
    )]);
    assert!(off.addons.coredns.is_none());
}

#[test]
fn a_coredns_image_without_a_tag_is_refused() {
    let edits = [(
        "[addons.aggregation]",
        "[addons.coredns]\nimage = \"registry.k8s.io/coredns/coredns\"\n\n[addons.aggregation]",
    )];
    refused(
        &edits,
        "addons.coredns.image",
        "image = ",
        &["no tag or digest"],
    );
    let edits = [(
        "[addons.aggregation]",
        "[addons.coredns]\nreplicas = 0\n\n[addons.aggregation]",
    )];
    refused(
        &edits,
        "addons.coredns.replicas",
        "replicas = 0",
        &["must be 1 to 10"],
    );
}

#[test]
fn upstream_manifests_default_to_the_pinned_release_urls() {
    let inv = accepted(&[]);
    let minor = inv.cluster.kubernetes_version.supported().unwrap();
    assert_eq!(
        inv.addons.metallb.manifest,
        Some(Manifest::Url(
            "https://raw.githubusercontent.com/metallb/metallb/v0.16.1/config/manifests/metallb-native.yaml".into()
        ))
    );
    assert_eq!(versions::METALLB.version(minor), "v0.16.1");
    assert_eq!(
        inv.addons.metrics_server,
        Some(Manifest::Url(
            "https://github.com/kubernetes-sigs/metrics-server/releases/download/v0.8.0/components.yaml".into()
        ))
    );
    // The sandbox image and CoreDNS's follow the same table.
    assert_eq!(inv.containerd.sandbox_image, "registry.k8s.io/pause:3.10.1");
    assert_eq!(
        inv.addons.coredns.as_ref().unwrap().image,
        format!("registry.k8s.io/coredns/coredns:v{}", minor.pins.coredns)
    );
}

#[test]
fn a_plain_http_manifest_url_is_refused() {
    let edits = [(
        "[addons.metallb]\nenabled = true",
        "[addons.metallb]\nenabled = true\nmanifest = \"http://example.org/metallb.yaml\"",
    )];
    refused(
        &edits,
        "addons.metallb.manifest",
        "manifest = \"http:",
        &["plain http", "use https or a local file"],
    );
}

#[test]
fn a_local_manifest_is_relative_to_the_inventory_and_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("metallb-native.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: metallb-system\n",
    )
    .unwrap();
    let text = super::edited(&[(
        "[addons.metallb]\nenabled = true",
        "[addons.metallb]\nenabled = true\nmanifest = \"metallb-native.yaml\"",
    )]);
    let inv = inventory::parse(&dir.path().join("inventory.toml"), &text)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        inv.addons.metallb.manifest,
        Some(Manifest::File(dir.path().join("metallb-native.yaml")))
    );
    // The same inventory elsewhere does not find it.
    let err = inventory::parse(Path::new("/nonexistent/inventory.toml"), &text)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("addons.metallb.manifest") && err.contains("/nonexistent/metallb-native.yaml"),
        "{err}"
    );
}

#[test]
fn metrics_server_needs_the_aggregation_layer() {
    let edits = [
        (
            "[addons.aggregation]\nenabled = true",
            "[addons.aggregation]\nenabled = false",
        ),
        (
            "[addons.metrics_server]\nenabled = true",
            "[addons.metrics_server]\nenabled = true  # on",
        ),
    ];
    refused(
        &edits,
        "addons.metrics_server.enabled",
        "enabled = true  # on",
        &["aggregation layer"],
    );
}

#[test]
fn an_images_dir_must_hold_image_tarballs() {
    let dir = tempfile::tempdir().unwrap();
    let with = |d: &str| {
        super::edited(&[(
            "[addons.metallb]",
            &format!("[addons]\nimages_dir = \"{d}\"\n\n[addons.metallb]"),
        )])
    };
    let err = inventory::parse(&dir.path().join("i.toml"), &with("images"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("addons.images_dir") && err.contains("images"),
        "{err}"
    );
    std::fs::create_dir(dir.path().join("images")).unwrap();
    let err = inventory::parse(&dir.path().join("i.toml"), &with("images"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("has no image tarballs"), "{err}");
    std::fs::write(dir.path().join("images/b.tar"), b"x").unwrap();
    std::fs::write(dir.path().join("images/a.tar"), b"x").unwrap();
    let inv = inventory::parse(&dir.path().join("i.toml"), &with("images"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        inv.addons.images,
        [
            dir.path().join("images/a.tar"),
            dir.path().join("images/b.tar")
        ]
    );
}
