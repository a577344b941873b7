//! The walkthrough against render's output for the same inventory: every file of every host is
//! placed by it with the same path and mode, and every template it writes out is byte for byte
//! what hardway renders (the encryption config aside: its key is the script's own).

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::render;
use crate::testing::Fixture;

/// (node, path) → mode, of every `install` line, and (node, path) → text of every here-document
/// the script stages.
/// By (node, path).
type OnNodes<T> = BTreeMap<(String, String), T>;

fn placed(script: &str) -> (OnNodes<u32>, OnNodes<String>) {
    let (mut installs, mut staged) = (BTreeMap::new(), BTreeMap::new());
    let mut node = String::new();
    let mut lines = script.lines();
    while let Some(l) = lines.next() {
        if let Some(rest) = l.strip_prefix("on_stdin ") {
            node = rest.split_whitespace().next().unwrap().to_string();
        } else if let Some(rest) = l.strip_prefix("install -D -o root -g root -m ") {
            let words: Vec<&str> = rest.split_whitespace().collect();
            installs.insert(
                (node.clone(), words[2].to_string()),
                u32::from_str_radix(words[0], 8).unwrap(),
            );
        } else if let Some(rest) = l.strip_prefix("cat > stage/") {
            let target = rest.split_whitespace().next().unwrap();
            let (n, path) = target.split_at(target.find('/').unwrap());
            let mut text = String::new();
            for body in lines.by_ref() {
                if body == EOF {
                    break;
                }
                text.push_str(body);
                text.push('\n');
            }
            staged.insert((n.to_string(), path.to_string()), text);
        }
    }
    (installs, staged)
}

#[test]
fn every_rendered_file_is_placed_with_its_mode_and_every_template_as_rendered() {
    let f = Fixture::new();
    let rendered = f.rendered();
    let script = walkthrough(&f.inv, &ExplainOptions::default()).unwrap();
    let (installs, staged) = placed(&script);
    let mut want = BTreeMap::new();
    for (host, files) in &rendered.hosts {
        for file in files {
            want.insert((host.clone(), file.path.clone()), file.mode);
        }
    }
    assert_eq!(installs, want);
    let mut compared = BTreeSet::new();
    for ((host, path), text) in &staged {
        let file = rendered.hosts[host]
            .iter()
            .find(|f| &f.path == path)
            .unwrap();
        if path.ends_with(crate::templates::ENCRYPTION_CONFIG) {
            assert!(text.contains("secret: ${ENCRYPTION_KEY}"), "{text}");
            continue;
        }
        assert_eq!(text.as_bytes(), &file.contents[..], "{host}:{path}");
        compared.insert(path.clone());
    }
    for unit in [
        "/etc/systemd/system/etcd.service",
        "/etc/haproxy/haproxy.cfg",
        "/etc/systemd/system/kubelet.service",
        "/etc/hardway/hosts",
    ] {
        assert!(compared.contains(unit), "{unit} was not compared");
    }
}

#[test]
fn a_phase_places_its_files_and_the_files_phase_only() {
    let f = Fixture::new();
    let script = walkthrough(
        &f.inv,
        &ExplainOptions {
            parts: vec![Part::Phase(Phase::Lb)],
            tool: Tool::Openssl,
        },
    )
    .unwrap();
    let (installs, _) = placed(&script);
    let lb: BTreeSet<&str> = installs
        .keys()
        .filter(|(n, _)| n == "lb")
        .map(|(_, p)| p.as_str())
        .collect();
    assert!(
        lb.contains("/etc/haproxy/haproxy.cfg") && lb.contains("/etc/haproxy/pki/healthcheck.pem"),
        "{lb:?}"
    );
    assert!(
        !installs
            .keys()
            .any(|(_, p)| p == "/etc/systemd/system/etcd.service"),
        "etcd's unit is not the lb phase's"
    );
    // The certificates the lb phase's files need, and not etcd's.
    assert!(script.contains("if [ ! -f pki/haproxy-healthcheck.crt ]; then"));
    assert!(!script.contains("pki/etcd/server-m1.crt ]"));
    assert!(script.contains("systemctl enable haproxy && systemctl restart haproxy"));
}

#[test]
fn words_are_quoted_only_when_needed() {
    assert_eq!(
        quote("/etc/etcd/pki/server.crt"),
        "/etc/etcd/pki/server.crt"
    );
    assert_eq!(quote("a b"), "'a b'");
    assert_eq!(quote("it's"), "'it'\\''s'");
    assert_eq!(quote(""), "''");
}

#[test]
fn any_phase_brings_the_files_phase_and_no_part_means_everything() {
    let s = Selection::of(&[Part::Phase(Phase::Etcd)]);
    assert_eq!(s.phases, [Phase::Files, Phase::Etcd]);
    assert!(!s.full_pki);
    let s = Selection::of(&[Part::Pki]);
    assert!(s.full_pki && s.phases.is_empty());
    let s = Selection::of(&[]);
    assert!(s.full_pki && s.phases.len() == 6);
    assert_eq!(Part::parse("preflight"), None);
    assert_eq!(
        Part::parse("control-plane"),
        Some(Part::Phase(Phase::ControlPlane))
    );
}

#[test]
fn a_heredoc_keeps_the_text_or_expands_only_the_named_variables() {
    let mut s = Script::default();
    s.heredoc("/tmp/x", "ExecStart=/bin/x $MAINPID\n", "x")
        .unwrap();
    assert_eq!(
        s.text,
        "cat > /tmp/x <<'HARDWAY_EOF'\nExecStart=/bin/x $MAINPID\nHARDWAY_EOF\n"
    );
    let mut s = Script::default();
    s.heredoc_with(
        "/tmp/y",
        "secret: @KEY@ $x `y`\n",
        &[("@KEY@", "ENCRYPTION_KEY")],
        "y",
    )
    .unwrap();
    assert_eq!(
        s.text,
        "cat > /tmp/y <<HARDWAY_EOF\nsecret: ${ENCRYPTION_KEY} \\$x \\`y\\`\nHARDWAY_EOF\n"
    );
    assert!(
        Script::default()
            .heredoc("/tmp/z", "a\nHARDWAY_EOF\n", "z")
            .is_err()
    );
}

/// After `secrets rotate-encryption-key`, `pki/encryption.key` holds the new key and its name
/// (`key2`) on a second line: the walkthrough's encryption config must be byte for byte what
/// render writes from that PKI (the name from the file, the secret its first line only).
#[test]
fn after_an_encryption_key_rotation_the_walkthrough_writes_what_render_writes() {
    use base64::Engine;
    let f = Fixture::new();
    let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    crate::pki::write_file(
        &f.pki_dir().join("encryption.key"),
        format!("{b64}\nname: key2\n").as_bytes(),
        0o600,
    )
    .unwrap();
    let pki = crate::pki::load(&f.inv, &f.pki_dir()).unwrap();
    let rendered = render::render(&f.inv, &pki).unwrap();
    let want = &rendered.hosts["m1"]
        .iter()
        .find(|x| x.path.ends_with(crate::templates::ENCRYPTION_CONFIG))
        .unwrap()
        .contents;
    let script = walkthrough(
        &f.inv,
        &ExplainOptions {
            parts: vec![Part::Phase(Phase::ControlPlane)],
            tool: Tool::Openssl,
        },
    )
    .unwrap();
    let lines: Vec<&str> = script.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with("cat > stage/m1/etc/kubernetes/encryption-config.yaml"))
        .unwrap();
    let end = start + lines[start..].iter().position(|l| *l == EOF).unwrap();
    let first = (0..start)
        .rev()
        .take_while(|&i| lines[i].starts_with("ENCRYPTION_KEY"))
        .last()
        .unwrap_or(start);
    let part = format!(
        "set -eu\nmkdir -p stage/m1/etc/kubernetes\n{}\n",
        lines[first..=end].join("\n")
    );
    let o = std::process::Command::new("bash")
        .arg("-c")
        .arg(&part)
        .current_dir(f.dir.path())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{part}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let got = std::fs::read(
        f.dir
            .path()
            .join("stage/m1/etc/kubernetes/encryption-config.yaml"),
    )
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(want),
        "{part}"
    );
}
