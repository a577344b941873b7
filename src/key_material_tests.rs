//! Everything hardway writes that holds key material — saved machines, etcd snapshots, a
//! rotation's directory and state, what is kept aside in the PKI, run logs — is 0600 in 0700
//! directories (public halves, `*.crt` and `*.pub`, may be 0644). Each writer is run here on
//! temporary directories and every mode below them is listed and checked.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::lab::LabOptions;
use crate::lab::named::{Keep, save_machines};
use crate::pki::rotate::{self, Subject};
use crate::runlog::RunLog;
use crate::testing::block_on;

/// (path relative to `root`, mode) of every directory and file below `root`, links refused.
fn modes(root: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = vec![(
        PathBuf::from("."),
        std::fs::symlink_metadata(root)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
    )];
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            assert!(!m.file_type().is_symlink(), "{} is a link", p.display());
            out.push((
                p.strip_prefix(root).unwrap().to_path_buf(),
                m.permissions().mode() & 0o7777,
            ));
            if m.is_dir() {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}

fn check(root: &Path, what: &str) -> Vec<(PathBuf, u32)> {
    let all = modes(root);
    assert!(!all.is_empty(), "{what}: nothing written");
    let listing: Vec<String> = all
        .iter()
        .map(|(p, m)| format!("{m:04o} {}", p.display()))
        .collect();
    eprintln!("{what}:\n  {}", listing.join("\n  "));
    for (p, m) in &all {
        let public = p.extension().is_some_and(|e| e == "crt" || e == "pub");
        let dir = root.join(p).is_dir();
        let ok = if dir {
            *m == 0o700
        } else if public {
            *m == 0o600 || *m == 0o644
        } else {
            *m == 0o600
        };
        assert!(
            ok,
            "{what}: {} is {m:04o}\n  {}",
            p.display(),
            listing.join("\n  ")
        );
    }
    all
}

#[test]
fn every_file_holding_key_material_is_0600_in_0700_directories() {
    let t = tempfile::tempdir().unwrap();

    // Saved machines (class down / reset).
    let (inv, _) = (
        crate::inventory::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lab-etcd.toml"),
        )
        .unwrap(),
        (),
    );
    let opts = LabOptions {
        state_dir: t.path().join("state"),
        ..LabOptions::default()
    };
    let upper = t.path().join("state/lab/lab-m1/upper/etc/etcd/pki");
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::write(upper.join("server.key"), "KEY").unwrap();
    let student = t.path().join("class/alice");
    std::fs::create_dir_all(&student).unwrap();
    let kept = save_machines(
        &inv,
        &opts,
        &Keep {
            base: student.clone(),
            rel: "saved/20261127T180834512Z".into(),
        },
    )
    .unwrap();
    assert_eq!(kept.len(), 1);
    check(&student.join("saved"), "saved machines");

    // Snapshots (etcd snapshot save, and before deploy, node remove, renewals, rotations).
    let f = crate::day2::tests::deployed(&[crate::components::Phase::Etcd]);
    let snaps = t.path().join("snapshots");
    block_on(crate::snapshot::save(
        &f.inv,
        f.fake.as_ref(),
        &snaps,
        Some(3),
    ))
    .unwrap();
    let all = check(&snaps, "snapshots");
    assert!(
        all.iter()
            .any(|(p, _)| p.extension().is_some_and(|e| e == "db"))
    );
    assert_eq!(
        std::fs::metadata(&snaps).unwrap().permissions().mode() & 0o7777,
        0o700
    );

    // A rotation under way, the switch keeping the old key aside, then its end.
    let s = Subject::Encryption;
    let (_, pair) =
        rotate::begin(&f.inv, &f.pki, s, time::OffsetDateTime::now_utc(), false).unwrap();
    let aside = crate::pki::aside_dir(&f.pki_dir(), "rotate-encryption", "20261127T180834512Z");
    rotate::switch_commit(&f.pki, s, &pair, &f.pki, &[], &aside).unwrap();
    check(&f.pki_dir().join("rotation"), "rotation under way");
    rotate::finish(&f.pki_dir(), s, &aside).unwrap();
    let all = check(&f.pki_dir().join("aside"), "aside after the rotation");
    assert!(
        all.iter().any(|(p, _)| p.ends_with("encryption.key")),
        "the old key is kept aside"
    );

    // A run log, at --log-file in a directory it makes.
    let log = RunLog::create(
        Some(&t.path().join("logs/run/deploy.log")),
        "deploy",
        &["hardway".into()],
    )
    .unwrap();
    log.write("x\n");
    check(&t.path().join("logs"), "run log");
}
