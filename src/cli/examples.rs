//! An example for every command, as data: applied to the clap command tree once, so that
//! `--help`, the manual pages and the completions all carry the same examples. A test checks
//! that every command has one and that each parses.

/// (command path, example lines): every line is a whole command a user can type.
pub(super) const EXAMPLES: &[(&str, &[&str])] = &[
    (
        "pki generate",
        &["hardway pki generate -i inventory.toml --out pki"],
    ),
    (
        "pki check",
        &["hardway pki check -i inventory.toml --pki pki"],
    ),
    (
        "render",
        &["hardway render -i inventory.toml --pki pki --out build"],
    ),
    (
        "deploy",
        &[
            "hardway deploy inventory.toml --pki pki --dry-run --diff",
            "hardway deploy inventory.toml --pki pki --phases etcd,lb",
            "hardway deploy --name alice --phases control-plane",
        ],
    ),
    (
        "bundle",
        &["hardway bundle -i inventory.toml --out cluster-bundle.tar"],
    ),
    (
        "binaries fetch",
        &["hardway binaries fetch -i inventory.toml --offline"],
    ),
    (
        "kubeconfig",
        &["hardway kubeconfig -i inventory.toml --pki pki --out admin.kubeconfig"],
    ),
    (
        "verify",
        &[
            "hardway verify -i inventory.toml --pki pki --output json",
            "hardway verify --name alice",
        ],
    ),
    (
        "explain",
        &["hardway explain -i inventory.toml --phase pki,etcd --tool cfssl > walkthrough.sh"],
    ),
    (
        "etcd snapshot save",
        &["hardway etcd snapshot save inventory.toml --out snapshots --keep 5"],
    ),
    (
        "etcd snapshot list",
        &["hardway etcd snapshot list --dir snapshots"],
    ),
    (
        "etcd restore",
        &["hardway etcd restore snapshots/etcd-2026-12-07T01-00-00Z.db inventory.toml --dry-run"],
    ),
    (
        "secrets rotate-encryption-key",
        &["hardway secrets rotate-encryption-key -i inventory.toml --step 1 --yes"],
    ),
    (
        "secrets rotate-service-account-key",
        &["hardway secrets rotate-service-account-key -i inventory.toml --step 1 --yes"],
    ),
    (
        "certs check",
        &["hardway certs check -i inventory.toml --warn-days 60"],
    ),
    (
        "certs renew",
        &[
            "hardway certs renew --all -i inventory.toml --dry-run",
            "hardway certs renew apiserver -i inventory.toml --yes",
        ],
    ),
    (
        "certs rotate-ca",
        &["hardway certs rotate-ca etcd -i inventory.toml --step 1 --yes"],
    ),
    (
        "node add",
        &[
            "hardway node add kworker4 inventory.toml --dry-run",
            "hardway node add kworker4 inventory.toml --accept-new-host-keys",
        ],
    ),
    (
        "node remove",
        &["hardway node remove kworker3 inventory.toml --dry-run"],
    ),
    (
        "reset",
        &["hardway reset inventory.toml --node kworker3 --dry-run"],
    ),
    ("logs", &["less $(hardway logs)"]),
    (
        "completions",
        &["hardway completions bash > /etc/bash_completion.d/hardway"],
    ),
    ("man", &["hardway man --dir /usr/local/share/man/man1"]),
    (
        "lab up",
        &[
            "hardway lab up -i inventory/lab.toml",
            "hardway lab up -i inventory/lab.toml --name alice --to etcd",
        ],
    ),
    ("lab status", &["hardway lab status -i inventory/lab.toml"]),
    (
        "lab down",
        &["hardway lab down -i inventory/lab.toml --name alice"],
    ),
    (
        "lab render-libvirt",
        &["hardway lab render-libvirt -i inventory/lab.toml --out libvirt --accel tcg"],
    ),
    (
        "lab break",
        &[
            "hardway lab break --list",
            "hardway lab break etcd-stopped -i inventory/lab.toml --name alice --yes",
        ],
    ),
    (
        "lab fix",
        &["hardway lab fix etcd-stopped -i inventory/lab.toml --name alice --yes"],
    ),
    (
        "class up",
        &["hardway class up --students students.txt -i inventory/lab.toml --dir class --to lb"],
    ),
    ("class status", &["hardway class status --dir class"]),
    ("class down", &["hardway class down --dir class --yes"]),
    (
        "class reset",
        &["hardway class reset alice --dir class --yes"],
    ),
    (
        "class grade",
        &["hardway class grade --dir class --output json"],
    ),
    ("validate", &["hardway validate inventory.toml"]),
];

/// `cmd` with each example as its `after_help`.
pub(super) fn with_examples(cmd: clap::Command) -> clap::Command {
    EXAMPLES.iter().fold(cmd, |cmd, (path, lines)| {
        let text = format!(
            "Examples:\n{}",
            lines
                .iter()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let words: Vec<&str> = path.split(' ').collect();
        attach(cmd, &words, text)
    })
}

fn attach(cmd: clap::Command, path: &[&str], text: String) -> clap::Command {
    match path {
        [] => cmd.after_help(text),
        [first, rest @ ..] => {
            let first = first.to_string();
            cmd.mut_subcommand(first, |sub| attach(sub, rest, text))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(cmd: &clap::Command, path: Vec<String>, out: &mut Vec<(String, clap::Command)>) {
        let subs: Vec<&clap::Command> = cmd
            .get_subcommands()
            .filter(|c| c.get_name() != "help")
            .collect();
        if subs.is_empty() {
            out.push((path.join(" "), cmd.clone()));
        }
        for s in subs {
            let mut p = path.clone();
            p.push(s.get_name().to_string());
            leaves(s, p, out);
        }
    }

    /// Every command has an example in its help, and every example parses as that command
    /// (the shell's part of `logs`' aside).
    #[test]
    fn every_command_has_an_example_that_parses() {
        let root = with_examples(<super::super::Cli as clap::CommandFactory>::command());
        let mut all = Vec::new();
        leaves(&root, vec![], &mut all);
        assert!(all.len() > 30, "{}", all.len());
        for (path, cmd) in &all {
            let help = cmd
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(
                help.starts_with("Examples:\n  "),
                "hardway {path} has no example"
            );
        }
        for (path, lines) in EXAMPLES {
            assert!(
                all.iter().any(|(p, _)| p == path),
                "an example for {path:?}, which is no command"
            );
            for line in *lines {
                let Some(args) = line
                    .split(" > ")
                    .next()
                    .and_then(|l| l.strip_prefix("hardway "))
                else {
                    assert!(line.contains("$(hardway "), "{line}");
                    continue;
                };
                let argv = std::iter::once("hardway").chain(args.split_whitespace());
                if let Err(e) = root.clone().try_get_matches_from(argv) {
                    panic!("the example {line:?} does not parse: {e}");
                }
            }
        }
    }
}
