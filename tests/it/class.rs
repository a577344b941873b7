//! The classroom without a lab: `hardway class` and `hardway lab break/fix`. A bad students
//! file is refused line by line and nothing is created; the scenarios are listed; an unknown
//! scenario names the known ones; `class up` warns about privileged workers before anything
//! boots. The lab tests are the `lab` binary's `class::lab`.

use crate::common::{hardway, ok, repo, run, text};

#[test]
fn a_bad_students_file_is_refused_line_by_line_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let students = dir.path().join("students.txt");
    std::fs::write(&students, "alice\nBob Smith\nalice\n# fine\ncarol_1\n").unwrap();
    let class = dir.path().join("class");
    let o = run(hardway()
        .args(["class", "up", "--students"])
        .arg(&students)
        .arg("-i")
        .arg(repo().join("tests/fixtures/lab-etcd.toml"))
        .arg("--dir")
        .arg(&class));
    assert!(!o.status.success());
    let msg = text(&o);
    let file = students.display().to_string();
    for want in [
        format!("{file}:2: student \"Bob Smith\""),
        format!("{file}:3: student \"alice\" is already on line 1"),
        format!("{file}:5: student \"carol_1\""),
    ] {
        assert!(msg.contains(&want), "{want:?} missing from:\n{msg}");
    }
    assert!(!class.exists(), "a refused roster must create nothing");

    let o = run(hardway()
        .args(["class", "up", "--students"])
        .arg(&students)
        .args(["--memory-max", "12M"]));
    assert!(!o.status.success());
    assert!(
        text(&o).contains("--memory-max") && text(&o).contains("less than 64M"),
        "{}",
        text(&o)
    );
}

#[test]
fn the_scenarios_are_listed_and_an_unknown_one_is_named() {
    let list = ok(hardway().args(["lab", "break", "--list"]));
    for name in [
        "etcd-stopped",
        "etcd-wrong-initial-cluster",
        "cert-expired",
        "cert-missing-san",
        "key-world-readable",
        "etcd-wrong-ca",
        "haproxy-wrong-backend-port",
        "port-taken",
        "encryption-config-differs",
        "etcd-quota-full",
        "clock-skew",
    ] {
        assert!(list.contains(name), "{name} missing from:\n{list}");
    }
    let o = run(hardway()
        .args(["lab", "break", "no-such-fault", "-i"])
        .arg(repo().join("tests/fixtures/lab-etcd.toml")));
    assert!(!o.status.success());
    assert!(
        text(&o).contains("invalid value 'no-such-fault'") && text(&o).contains("etcd-quota-full"),
        "{}",
        text(&o)
    );
}

/// `class up` with the nspawn driver and an inventory with a worker says, before any lab
/// boots, that the workers are privileged and no boundary between students, and offers the
/// qemu driver; with `--driver qemu` it does not. No lab boots here: the subnet pool given is
/// smaller than the /24 a lab needs, so every lab stops at claiming its subnet.
#[test]
fn class_up_says_privileged_workers_are_not_a_boundary_and_offers_vms() {
    let dir = tempfile::tempdir().unwrap();
    let students = dir.path().join("students.txt");
    std::fs::write(&students, "alice\n").unwrap();
    let class_up = |class: &str, driver: &[&str]| {
        let o = run(hardway()
            .args(["class", "up", "--students"])
            .arg(&students)
            .arg("-i")
            .arg(repo().join("tests/fixtures/lab-etcd.toml"))
            .arg("--dir")
            .arg(dir.path().join(class))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(["--subnet-pool", "10.225.0.0/25"])
            .args(driver));
        assert!(!o.status.success());
        assert!(
            text(&o).contains("smaller than a /24"),
            "class up did not stop where this test expects: {}",
            text(&o)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let err = class_up("nspawn", &[]);
    let warning = err
        .lines()
        .find(|l| l.starts_with("warning:") && l.contains("privileged"))
        .unwrap_or_else(|| panic!("no warning:\n{err}"));
    for want in [
        "lab-w1",
        "not a boundary between students",
        "reach this host and every other student's lab",
        "--driver qemu",
        "SECURITY.md",
    ] {
        assert!(warning.contains(want), "{want:?} missing from {warning:?}");
    }
    // Before anything is booted or claimed.
    assert!(
        err.find("warning:").unwrap() < err.find("smaller than a /24").unwrap(),
        "{err}"
    );
    let class: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("nspawn/class.json")).unwrap(),
    )
    .unwrap();
    assert!(class.get("driver").is_none(), "{class}");

    let err = class_up("qemu", &["--driver", "qemu"]);
    assert!(
        !err.contains("privileged"),
        "VMs are a boundary; no warning expected:\n{err}"
    );
    let class: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("qemu/class.json")).unwrap())
            .unwrap();
    assert_eq!(
        class["driver"], "qemu",
        "class reset must boot VMs again: {class}"
    );
}
