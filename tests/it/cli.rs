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
