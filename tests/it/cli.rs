//! The command line as a user meets it: bad arguments are refused with a clear message and exit
//! code 2, never a panic, and every command takes the inventory as an argument or with -i.

use crate::common::*;

#[test]
fn absurd_numbers_are_refused_not_panicked_on() {
    for args in [
        &["deploy", "--etcd-timeout", "18446744073709551615"][..],
        &["deploy", "--etcd-timeout", "0"],
        &["deploy", "--api-timeout", "99999999999"],
    ] {
        let o = run(hardway().args(args));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("error: invalid value") && !err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn the_inventory_is_an_argument_or_an_option_for_every_command() {
    let inv = example_inventory();
    for cmd in [&["validate"][..], &["pki", "check"], &["lab", "status"]] {
        for how in [vec![inv.to_str().unwrap()], vec!["-i", inv.to_str().unwrap()]] {
            let o = run(hardway().args(cmd).args(&how));
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!err.contains("unexpected argument") && !err.contains("Usage:"), "{cmd:?} {how:?}: {err}");
        }
    }
    let o = run(hardway().args(["validate", "a.toml", "-i", "b.toml"]));
    assert_eq!(o.status.code(), Some(2), "both forms at once are refused");
}

#[test]
fn completions_and_the_manual_come_from_the_command_definitions() {
    let bash = ok(hardway().args(["completions", "bash"]));
    assert!(bash.contains("complete -F") && bash.contains("deploy") && bash.contains("--accept-new-host-keys"), "{bash}");
    for shell in ["zsh", "fish"] {
        assert!(ok(hardway().args(["completions", shell])).contains("verify"), "{shell}");
    }
    let man = ok(hardway().arg("man"));
    assert!(man.starts_with(".ie") || man.contains(".TH hardway"), "{man}");
    assert!(man.contains("deploy") && man.contains("verify"), "{man}");
}

#[test]
fn logs_names_the_newest_run_log() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // A run that fails early still leaves its log (verify of an unreachable cluster).
    let o = run(hardway().env("XDG_STATE_HOME", &state).args(["logs"]));
    assert_eq!(o.status.code(), Some(1), "no log yet");
    // One node on loopback where nothing listens: refused at once, no traffic leaves the host,
    // and tried once (not again after 1 s and 2 s).
    let inv = dir.path().join("loopback.toml");
    std::fs::write(
        &inv,
        "[cluster]\nname = \"l\"\nkubernetes_version = \"1.37.1\"\nservice_cidr = \"10.32.0.0/24\"\npod_cidr = \"10.200.0.0/16\"\n\
         [ssh]\nconnect_attempts = 1\n[[nodes]]\nname = \"m1\"\naddress = \"127.0.0.46\"\nroles = [\"master\"]\n",
    )
    .unwrap();
    let _ = run(hardway().env("XDG_STATE_HOME", &state).args(["verify", "--pki", "/nonexistent", "--parallel", "1"]).arg(&inv).args(["--output", "jsonl"]));
    let path = ok(hardway().env("XDG_STATE_HOME", &state).arg("logs"));
    let path = std::path::PathBuf::from(path.trim());
    assert!(path.starts_with(state.join("hardway/logs")) && path.is_file(), "{}", path.display());
    assert_eq!(mode(&path), 0o600);
}

/// Without HOME (cron, systemd services), run logs must not go to a shared directory with
/// predictable names (`/var/tmp/hardway/logs`, 0755): a private one under /run/user, or a
/// clear refusal.
#[test]
fn without_home_run_logs_never_go_to_a_shared_directory() {
    let o = run(hardway().arg("logs").env_remove("HOME").env_remove("XDG_STATE_HOME"));
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(!out.contains("/var/tmp") && !err.contains("/var/tmp"), "{out}{err}");
    let uid = unsafe { libc::geteuid() };
    assert!(err.contains(&format!("/run/user/{uid}")) || err.contains("HOME"), "{out}{err}");
}

/// `--name` of the lab commands is a lab name (a DNS label), refused with exit 2 before any
/// path is made of it.
#[test]
fn a_lab_name_that_is_a_path_is_refused() {
    for cmd in [&["lab", "status"][..], &["lab", "down"], &["lab", "break", "etcd-stopped"], &["lab", "fix", "etcd-stopped"]] {
        let o = run(hardway().args(cmd).args(["--name", "../../..", "--state-dir", "/nonexistent"]));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{cmd:?}: {err}");
        assert!(err.contains("\"../../..\" is not a lab name"), "{cmd:?}: {err}");
    }
}
