//! `[lab] driver`, `memory_mib`, `vcpus` and `[lab.nodes.<name>]`: what the lab's machines are
//! and how big each VM is; every bad value refused with its field, line and limits.

use super::{accepted, as_edits, assert_has, error_of, line_of, problems_of, refused, with};
use hardway::inventory::{LabDriver, VmResources};

#[test]
fn without_a_lab_section_the_lab_is_nspawn_with_default_vm_sizes() {
    let inv = accepted(&[]);
    assert_eq!(inv.lab.driver, LabDriver::Nspawn);
    assert_eq!(
        inv.lab.vm("kmaster1"),
        VmResources {
            memory_mib: 1024,
            vcpus: 1
        }
    );
    assert!(
        inv.warnings.iter().all(|w| !w.field.starts_with("lab")),
        "{:?}",
        inv.warnings
    );
}

#[test]
fn sizes_for_every_vm_and_per_node() {
    let e = with(
        "[lab]\ndriver = \"qemu\"\nmemory_mib = 2048\nvcpus = 2\n\n[lab.nodes.kworker1]\nmemory_mib = 4096",
    );
    let inv = accepted(&as_edits(&e));
    assert_eq!(inv.lab.driver, LabDriver::Qemu);
    assert_eq!(
        inv.lab.vm("kmaster1"),
        VmResources {
            memory_mib: 2048,
            vcpus: 2
        }
    );
    // vcpus left out of the node's table: the lab-wide value.
    assert_eq!(
        inv.lab.vm("kworker1"),
        VmResources {
            memory_mib: 4096,
            vcpus: 2
        }
    );
    assert!(
        inv.warnings.iter().all(|w| !w.field.starts_with("lab")),
        "{:?}",
        inv.warnings
    );
}

#[test]
fn unknown_driver() {
    let e = with("[lab]\ndriver = \"kvm\"");
    refused(
        &as_edits(&e),
        "lab.driver",
        "driver = \"kvm\"",
        &["unknown driver \"kvm\" (known drivers: nspawn, qemu)"],
    );
}

#[test]
fn too_little_memory() {
    let e = with("[lab]\ndriver = \"qemu\"\nmemory_mib = 128");
    refused(
        &as_edits(&e),
        "lab.memory_mib",
        "memory_mib = 128",
        &["128 is out of range: a lab VM has 256 to 262144 MiB"],
    );
}

#[test]
fn negative_vcpus() {
    let e = with("[lab]\ndriver = \"qemu\"\nvcpus = -1");
    refused(
        &as_edits(&e),
        "lab.vcpus",
        "vcpus = -1",
        &["-1 is out of range: a lab VM has 1 to 64 vCPUs"],
    );
}

#[test]
fn a_node_table_must_name_a_node() {
    let e = with("[lab]\ndriver = \"qemu\"\n\n[lab.nodes.kworker9]\nvcpus = 2");
    refused(
        &as_edits(&e),
        "lab.nodes.kworker9",
        "[lab.nodes.kworker9]",
        &["no node named \"kworker9\" in [[nodes]]"],
    );
}

#[test]
fn a_node_table_is_checked_like_the_lab_wide_values() {
    let e = with("[lab]\ndriver = \"qemu\"\n\n[lab.nodes.kworker1]\nvcpus = 0");
    refused(
        &as_edits(&e),
        "lab.nodes.kworker1.vcpus",
        "vcpus = 0",
        &["0 is out of range"],
    );
}

#[test]
fn unknown_key_in_a_node_table() {
    let e = with("[lab]\ndriver = \"qemu\"\n\n[lab.nodes.kworker1]\nmemory = 2048");
    let err = error_of(&as_edits(&e));
    let line = line_of(&as_edits(&e), "memory = 2048");
    assert_has(
        &err,
        &[&format!("bad.toml:{line}:"), "unknown field `memory`"],
    );
}

#[test]
fn sizes_with_the_nspawn_driver_are_a_warning() {
    let e = with("[lab]\nmemory_mib = 2048");
    let inv = accepted(&as_edits(&e));
    assert!(
        inv.warnings
            .iter()
            .any(|w| w.field == "lab" && w.message.contains("qemu driver's VMs only")),
        "{:?}",
        inv.warnings
    );
}

#[test]
fn every_lab_problem_at_once() {
    let e = with("[lab]\ndriver = \"vm\"\nmemory_mib = 100000000\n\n[lab.nodes.nobody]\nvcpus = 1");
    let fields: Vec<String> = problems_of(&as_edits(&e))
        .into_iter()
        .map(|p| p.field)
        .collect();
    for want in ["lab.driver", "lab.memory_mib", "lab.nodes.nobody"] {
        assert!(
            fields.iter().any(|f| f == want),
            "{want} missing from {fields:?}"
        );
    }
}
