//! The lab's qemu driver's libvirt XML, judged by libvirt's own schemas (`virt-xml-validate`,
//! Debian's libvirt-clients), for tests/fixtures/qemu-lab.toml. The qemu lab itself boots in
//! the `lab` binary's `qemu::lab`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

const QEMU_LAB: &str = "tests/fixtures/qemu-lab.toml";

fn validate_xml(file: &Path, schema: &str) -> std::process::Output {
    run(Command::new(require(
        "virt-xml-validate",
        "libvirt-clients libxml2-utils",
    ))
    .arg(file)
    .arg(schema))
}

/// `hardway lab render-libvirt` writes a network and a domain per node that libvirt's schemas
/// accept, for KVM and for software emulation; the schemas do reject a broken domain, so the
/// check means something.
#[test]
fn libvirt_xml_validates_against_libvirts_schemas() {
    require("xmllint", "libxml2-utils");
    let dir = tempfile::tempdir().unwrap();
    for accel in ["kvm", "tcg"] {
        let out = dir.path().join(accel);
        let listed = ok(hardway()
            .args([
                "lab",
                "render-libvirt",
                "-i",
                QEMU_LAB,
                "--accel",
                accel,
                "--out",
            ])
            .arg(&out));
        let files: Vec<PathBuf> = listed.lines().map(PathBuf::from).collect();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "network-hw-qlab.xml",
                "domain-qlab-m1.xml",
                "domain-qlab-w1.xml"
            ]
        );
        for f in &files {
            let schema = if f.ends_with("network-hw-qlab.xml") {
                "network"
            } else {
                "domain"
            };
            let v = validate_xml(f, schema);
            assert!(
                v.status.success(),
                "{} does not validate:\n{}{}",
                f.display(),
                String::from_utf8_lossy(&v.stdout),
                String::from_utf8_lossy(&v.stderr)
            );
        }
        let m1 = std::fs::read_to_string(&files[1]).unwrap();
        let w1 = std::fs::read_to_string(&files[2]).unwrap();
        let domain_type = if accel == "kvm" { "kvm" } else { "qemu" };
        assert!(
            m1.contains(&format!("<domain type=\"{domain_type}\">")),
            "{m1}"
        );
        // Sizes per node from the inventory: qlab-m1 and qlab-w1 each have a table of their own.
        assert!(
            m1.contains("<memory unit=\"MiB\">2048</memory>")
                && w1.contains("<memory unit=\"MiB\">768</memory>"),
            "{m1}\n{w1}"
        );
        assert!(
            m1.contains("<source file=\"/run/hardway/lab/qlab/qlab-m1/disk.qcow2\"/>"),
            "{m1}"
        );
        assert!(
            m1.contains("<source network=\"hw-qlab\"/>")
                && m1.contains("<target dev=\"vdb\" bus=\"virtio\"/>")
        );
        let mac = |t: &str| {
            t.split("<mac address=\"")
                .nth(1)
                .map(|r| r[..17].to_string())
                .unwrap()
        };
        assert_ne!(mac(&m1), mac(&w1), "every node needs its own MAC");

        let broken = out.join("broken.xml");
        std::fs::write(
            &broken,
            w1.replace(
                "<vcpu placement=\"static\">1</vcpu>",
                "<vcpu placement=\"static\">one</vcpu>",
            ),
        )
        .unwrap();
        assert!(
            !validate_xml(&broken, "domain").status.success(),
            "virt-xml-validate accepted a vcpu count of \"one\""
        );
    }
}

/// A bad `[lab]` is refused before anything is written, naming the file, the field and why.
#[test]
fn render_libvirt_refuses_a_bad_lab_section_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo().join(QEMU_LAB))
        .unwrap()
        .replace("memory_mib = 768", "memory_mib = 64");
    let inv = dir.path().join("bad.toml");
    std::fs::write(&inv, text).unwrap();
    let out = dir.path().join("xml");
    let o = run(hardway()
        .args(["lab", "render-libvirt", "--out"])
        .arg(&out)
        .arg("-i")
        .arg(&inv));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("bad.toml:")
            && err.contains("lab.nodes.qlab-w1.memory_mib")
            && err.contains("64 is out of range"),
        "{err}"
    );
    assert!(!out.exists(), "nothing may be written for a bad inventory");
}
