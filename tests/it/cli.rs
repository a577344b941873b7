//! The command line as a user meets it: bad arguments are refused with a clear message and exit
//! code 2, never a panic, and every command takes the inventory as an argument or with -i.

use crate::common::*;

#[test]
fn absurd_numbers_are_refused_not_panicked_on() {
    for args in [
        &["deploy", "--etcd-timeout", "18446744073709551615"][..],
        &["deploy", "--etcd-timeout", "0"],
        &["deploy", "--api-timeout", "99999999999"],
        &["deploy", "--parallel", "0"],
        &["verify", "--parallel", "0"],
        &["certs", "check", "--parallel", "0"],
    ] {
        let o = run(hardway().args(args));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("error: invalid value") && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
}

/// Every command (as `["certs", "renew"]`) whose help offers `-i, --inventory`, found by walking
/// the binary's own help, and whether its usage takes the inventory as an argument too.
fn commands_taking_an_inventory() -> Vec<(Vec<String>, bool)> {
    fn walk(path: Vec<String>, out: &mut Vec<(Vec<String>, bool)>) {
        let help = ok(hardway().args(&path).arg("--help"));
        if help.contains("-i, --inventory <INVENTORY>") {
            let usage = help
                .lines()
                .find(|l| l.starts_with("Usage:"))
                .unwrap_or_default();
            out.push((path.clone(), usage.contains("[INVENTORY]")));
        }
        let commands = help.split("\nCommands:\n").nth(1).unwrap_or_default();
        for line in commands.lines().take_while(|l| !l.is_empty()) {
            let name = line.split_whitespace().next().unwrap_or_default();
            if name != "help" {
                walk([path.clone(), vec![name.to_string()]].concat(), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(vec![], &mut out);
    out
}

/// Each command reads the inventory it is given, with `-i` and as an argument where its usage
/// has one, and ./inventory.toml without either: a path that does not exist, one of its own
/// per command and form, is what the error names, and it is an error of reading (exit 1), not
/// of the arguments (exit 2). They run in an empty directory, which stays so: every command
/// reads the inventory before it does anything.
#[test]
fn the_inventory_is_an_argument_or_an_option_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("students.txt"), "alice\n").unwrap();
    // What each command needs besides the inventory to get as far as reading it.
    let needs = |cmd: &str| -> &[&str] {
        match cmd {
            "etcd restore" => &["snapshot.db"],
            "certs renew" => &["--all"],
            "certs rotate-ca" => &["etcd"],
            "node remove" | "node add" => &["m1"],
            "reset" => &["--node", "m1"],
            "lab render-libvirt" => &["--out", "xml"],
            "bundle" => &["--out", "bundle.tar"],
            "lab break" | "lab fix" => &["etcd-stopped"],
            "class up" => &["--students", "students.txt"],
            _ => &[],
        }
    };
    let commands = commands_taking_an_inventory();
    let names: Vec<String> = commands.iter().map(|(c, _)| c.join(" ")).collect();
    for known in [
        "validate",
        "deploy",
        "verify",
        "pki generate",
        "certs renew",
        "etcd snapshot save",
        "lab up",
        "class up",
    ] {
        assert!(
            names.iter().any(|n| n == known),
            "{known:?} not found in the help: {names:?}"
        );
    }
    let mut tried = 0;
    for (cmd, positional) in &commands {
        let name = cmd.join(" ");
        let file = |form: &str| {
            dir.path()
                .join("absent")
                .join(format!("{}-{form}.toml", cmd.join("-")))
        };
        let mut forms = vec![(
            vec!["-i".to_string(), file("flag").display().to_string()],
            file("flag"),
        )];
        if *positional {
            forms.push((
                vec![file("argument").display().to_string()],
                file("argument"),
            ));
        }
        forms.push((vec![], "inventory.toml".into()));
        for (how, path) in forms {
            let o = run(hardway()
                .current_dir(dir.path())
                .args(cmd)
                .args(needs(&name))
                .args(&how));
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(1), "{name} {how:?}: {err}");
            assert!(
                err.contains(&format!("{}: ", path.display())) && err.contains("No such file"),
                "{name} {how:?} did not read {}: {err}",
                path.display()
            );
            tried += 1;
        }
    }
    assert!(tried >= 3 * 20, "{tried} runs for {names:?}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "a command made something before reading the inventory"
    );
    let o = run(hardway().args(["validate", "a.toml", "-i", "b.toml"]));
    assert_eq!(o.status.code(), Some(2), "both forms at once are refused");
}

#[test]
fn completions_and_the_manual_come_from_the_command_definitions() {
    let bash = ok(hardway().args(["completions", "bash"]));
    assert!(
        bash.contains("complete -F")
            && bash.contains("deploy")
            && bash.contains("--accept-new-host-keys"),
        "{bash}"
    );
    // Values are offered too: the fault scenarios of `lab break`, the phases of `--phases`/`--to`.
    for value in ["etcd-stopped", "coredns-scaled-to-zero", "control-plane"] {
        assert!(bash.contains(value), "bash completion offers no {value}");
    }
    for shell in ["zsh", "fish"] {
        assert!(
            ok(hardway().args(["completions", shell])).contains("verify"),
            "{shell}"
        );
    }
    let man = ok(hardway().arg("man"));
    assert!(
        man.starts_with(".ie") || man.contains(".TH hardway"),
        "{man}"
    );
    assert!(man.contains("deploy") && man.contains("verify"), "{man}");
}

/// bash completes student names from the class the command line names (asking hardway at TAB
/// time), offers no hidden flag, and still completes subcommands and scenarios; zsh and fish
/// scripts (no shell here to run them) carry the same question.
#[test]
fn completions_offer_the_class_students_and_no_hidden_flag() {
    let bash_bin = require("bash", "bash");
    let dir = tempfile::tempdir().unwrap();
    for (class, students) in [("class", ["alice", "bob"]), ("other", ["carol", "dave"])] {
        std::fs::create_dir(dir.path().join(class)).unwrap();
        std::fs::write(
            dir.path().join(class).join("class.json"),
            serde_json::json!({
                "base": "/nonexistent/base.toml",
                "students": students,
                "limits": {"memory_max": null, "cpu_quota": null},
                "to": null,
            })
            .to_string(),
        )
        .unwrap();
    }
    let script = dir.path().join("hardway.bash");
    std::fs::write(&script, ok(hardway().args(["completions", "bash"]))).unwrap();
    let bin = env!("CARGO_BIN_EXE_hardway");
    // What bash offers after the words of `line` (the last word is the one being completed).
    let complete = |line: &str| -> Vec<String> {
        let words: Vec<&str> = line.split(' ').collect();
        let program = format!(
            "source {script}; COMP_WORDS=({words}); COMP_CWORD={cword}; \
             _hardway {bin} {cur:?} {prev:?}; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script = script.display(),
            words = std::iter::once(bin)
                .chain(words[1..].iter().copied())
                .map(|w| format!("{w:?}"))
                .collect::<Vec<_>>()
                .join(" "),
            cword = words.len() - 1,
            cur = words[words.len() - 1],
            prev = words[words.len() - 2],
        );
        let out = ok(std::process::Command::new(&bash_bin)
            .current_dir(dir.path())
            .args(["-c", &program]));
        out.lines().map(str::to_string).collect()
    };
    let offered = complete("hardway class grade ");
    assert!(
        offered.contains(&"alice".to_string()) && offered.contains(&"bob".to_string()),
        "{offered:?}"
    );
    assert!(!offered.iter().any(|w| w == "carol"), "{offered:?}");
    let other = complete("hardway class down --dir other ");
    assert!(
        other.contains(&"carol".to_string()) && !other.contains(&"alice".to_string()),
        "{other:?}"
    );
    assert_eq!(complete("hardway class reset b"), ["bob"]);
    let flags = complete("hardway class grade --");
    assert!(flags.contains(&"--dir".to_string()), "{flags:?}");
    assert!(
        !flags
            .iter()
            .any(|f| f == "--state-dir" || f == "--subnet-pool"),
        "hidden flags offered: {flags:?}"
    );
    assert!(complete("hardway lab break etcd-st").contains(&"etcd-stopped".to_string()));
    assert!(complete("hardway cla").contains(&"class".to_string()));
    // No class directory: nothing offered, nothing printed into the command line.
    assert!(
        !complete("hardway class grade --dir nowhere ")
            .iter()
            .any(|w| w == "alice")
    );
    for shell in ["zsh", "fish"] {
        let text = ok(hardway().args(["completions", shell]));
        assert!(
            text.contains("HARDWAY_COMPLETE=students hardway"),
            "{shell}"
        );
        assert!(!text.contains("state-dir"), "{shell} offers a hidden flag");
    }
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
    let _ = run(hardway()
        .env("XDG_STATE_HOME", &state)
        .args(["verify", "--pki", "/nonexistent", "--parallel", "1"])
        .arg(&inv)
        .args(["--output", "jsonl"]));
    let path = ok(hardway().env("XDG_STATE_HOME", &state).arg("logs"));
    let path = std::path::PathBuf::from(path.trim());
    assert!(
        path.starts_with(state.join("hardway/logs")) && path.is_file(),
        "{}",
        path.display()
    );
    assert_eq!(mode(&path), 0o600);
}

/// Without HOME (cron, systemd services), run logs must not go to a shared directory with
/// predictable names (`/var/tmp/hardway/logs`, 0755): a private one under /run/user, or a
/// clear refusal.
#[test]
fn without_home_run_logs_never_go_to_a_shared_directory() {
    let o = run(hardway()
        .arg("logs")
        .env_remove("HOME")
        .env_remove("XDG_STATE_HOME"));
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(
        !out.contains("/var/tmp") && !err.contains("/var/tmp"),
        "{out}{err}"
    );
    let uid = unsafe { libc::geteuid() };
    assert!(
        err.contains(&format!("/run/user/{uid}")) || err.contains("HOME"),
        "{out}{err}"
    );
}

/// `--name` of the lab commands is a lab name (a DNS label), refused with exit 2 before any
/// path is made of it.
#[test]
fn a_lab_name_that_is_a_path_is_refused() {
    for cmd in [
        &["lab", "status"][..],
        &["lab", "down"],
        &["lab", "break", "etcd-stopped"],
        &["lab", "fix", "etcd-stopped"],
    ] {
        let o =
            run(hardway()
                .args(cmd)
                .args(["--name", "../../..", "--state-dir", "/nonexistent"]));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{cmd:?}: {err}");
        assert!(
            err.contains("\"../../..\" is not a lab name"),
            "{cmd:?}: {err}"
        );
    }
}

#[test]
fn a_named_lab_that_is_not_there_is_down_and_its_status_says_so() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().to_str().unwrap();
    for _ in 0..2 {
        let o = run(hardway().args(["lab", "down", "--name", "gone", "--state-dir", dir]));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stdout).contains("lab gone is down"));
    }
    let o = run(hardway().args(["lab", "status", "--name", "gone", "--state-dir", dir]));
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("no lab named \"gone\""),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn every_manual_page_a_page_refers_to_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let said = ok(hardway().args(["man", "--dir"]).arg(dir.path()));
    let pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        said.starts_with(&format!("{} manual pages", pages.len())),
        "{said}"
    );
    assert!(
        pages.contains(&"hardway.1".to_string())
            && pages.contains(&"hardway-lab-break.1".to_string()),
        "{pages:?}"
    );
    let mut texts: Vec<String> = pages
        .iter()
        .map(|p| std::fs::read_to_string(dir.path().join(p)).unwrap())
        .collect();
    texts.push(ok(hardway().arg("man")));
    for text in &texts {
        // roff escapes the dash: `hardway\-lab\-break(1)`.
        for reference in text
            .split_whitespace()
            .filter(|w| w.starts_with("hardway\\-") && w.ends_with("(1)"))
        {
            let page = format!(
                "{}.1",
                reference.trim_end_matches("(1)").replace("\\-", "-")
            );
            assert!(
                pages.contains(&page),
                "{reference} is referred to, but no {page} was written: {pages:?}"
            );
        }
    }
}

/// An error's cause is said once (the library's message already names it).
#[test]
fn an_error_names_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(hardway().arg("deploy").arg(dir.path().join("absent.toml")));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("absent.toml: cannot read inventory"), "{err}");
    assert_eq!(err.matches("(os error 2)").count(), 1, "{err}");
}

/// `deploy --name` and `verify --name` take a named lab's inventory and PKI from the record
/// `lab up --name` wrote, refuse an inventory beside it, and name the command that makes the lab
/// when there is none.
#[test]
fn deploy_and_verify_find_a_named_lab_by_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("labs");
    let lab = dir.path().join("alice");
    std::fs::create_dir_all(state.join("alice")).unwrap();
    std::fs::create_dir_all(&lab).unwrap();
    // An inventory whose only nodes are on loopback where nothing listens: no traffic leaves.
    let inv = lab.join("inventory.toml");
    std::fs::write(
        &inv,
        "[cluster]\nname = \"alice\"\nkubernetes_version = \"1.37.2\"\nservice_cidr = \"10.32.0.0/24\"\n\
         pod_cidr = \"10.200.0.0/16\"\n\n[[nodes]]\nname = \"alice-m1\"\naddress = \"127.0.0.1\"\nssh_port = 1\n\
         roles = [\"master\"]\n\n[ssh]\nuser = \"root\"\n",
    )
    .unwrap();
    pki_generate(&inv, &lab.join("pki"));
    std::fs::write(
        state.join("alice/lab.json"),
        serde_json::json!({
            "name": "alice",
            "subnet": "10.222.9.0/24",
            "base": "/nonexistent/base.toml",
            "inventory": inv,
            "pki": lab.join("pki"),
            "limits": {"memory_max": null, "cpu_quota": null},
        })
        .to_string(),
    )
    .unwrap();
    let named = |args: &[&str]| {
        run(hardway()
            .args(args)
            .arg("--state-dir")
            .arg(&state)
            .current_dir(dir.path()))
    };
    // The dry run plans for the lab's node, with the lab's PKI (no ./pki is made).
    let o = named(&["deploy", "--name", "alice", "--dry-run"]);
    let said = text(&o);
    assert!(said.contains("alice-m1"), "{said}");
    assert!(
        !dir.path().join("pki").exists(),
        "a PKI was made beside: {said}"
    );
    let o = named(&["verify", "--name", "alice", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    assert_eq!(v["cluster"], "alice", "{v:#}");
    let checks = v["checks"].as_array().unwrap();
    let any = |f: &dyn Fn(&serde_json::Value) -> bool| checks.iter().any(f);
    assert!(any(&|c| c["host"] == "alice-m1"), "{v:#}");
    // No load balancer node: the checks through the API's address are the cluster's, not a
    // made-up host's.
    assert!(
        !any(&|c| c["host"] != "alice-m1" && !c["host"].is_null()),
        "{v:#}"
    );
    assert!(
        any(&|c| c["host"].is_null() && c["check"] == "api /readyz"),
        "{v:#}"
    );
    let o = named(&["verify", "--name", "bob"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("no lab named \"bob\" is up")
            && err.contains("hardway lab up -i BASE --name bob"),
        "{err}"
    );
    let o = named(&["verify", "--name", "alice", "-i", "other.toml"]);
    assert_eq!(o.status.code(), Some(2), "--name and an inventory at once");
}
