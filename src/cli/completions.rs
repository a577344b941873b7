//! `hardway completions SHELL`: clap_complete's script, mended where a script written once
//! cannot know enough. Hidden flags are taken out (clap_complete lists them with the others),
//! and the student arguments of `class down`, `class grade` and `class reset` ask hardway for
//! the class's names when the user presses TAB, as kubectl completes pod names: the script runs
//! `HARDWAY_COMPLETE=students hardway WORDS…` with the words of the command line, and hardway
//! prints the names of the class whose `--dir` they name (not a subcommand: clap_complete would
//! offer it). bash, zsh and fish get the names; elvish and PowerShell get clap_complete's script
//! as is.

use std::collections::BTreeSet;

use clap_complete::Shell;

/// The environment variable, and its value, that asks hardway for the student names.
const ASK: (&str, &str) = ("HARDWAY_COMPLETE", "students");

/// A completion script's question, answered (the student names of the class the arguments
/// name, one per line), if this run is one; nothing is printed on errors, which would land in
/// the user's command line: no class, no names.
pub(super) fn answer() -> Option<std::process::ExitCode> {
    if std::env::var_os(ASK.0)? != ASK.1 {
        return None;
    }
    let words: Vec<String> = std::env::args().skip(1).collect();
    if let Ok(class) = crate::class::Class::open(&class_dir(&words)) {
        for s in class.file.students {
            out!("{s}");
        }
    }
    Some(std::process::ExitCode::SUCCESS)
}

/// The `class` subcommands whose positional arguments are student names.
const TAKE_STUDENTS: [&str; 3] = ["down", "grade", "reset"];

/// The completion script for `shell`.
pub(super) fn script(shell: Shell, mut cmd: clap::Command) -> String {
    cmd.build();
    let hidden = hidden_only(&cmd);
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "hardway", &mut buf);
    let text = String::from_utf8(buf).expect("clap_complete writes UTF-8");
    match shell {
        Shell::Bash => bash(&text, &hidden),
        Shell::Zsh => zsh(&text, &hidden),
        Shell::Fish => fish(&text, &hidden),
        _ => text,
    }
}

/// The class directory named by the words of a command line being completed (`--dir D`,
/// `--dir=D`, or bash's split `--dir = D`), else `class`, `--dir`'s default.
pub(super) fn class_dir(words: &[String]) -> std::path::PathBuf {
    let mut dir = super::class::CLASS_DIR;
    let mut it = words.iter().map(String::as_str).peekable();
    while let Some(w) = it.next() {
        if let Some(d) = w.strip_prefix("--dir=") {
            dir = d;
        } else if w == "--dir" {
            if it.peek() == Some(&"=") {
                it.next();
            }
            if let Some(d) = it.next() {
                dir = d;
            }
        }
    }
    dir.into()
}

/// Long flags hidden wherever they are defined (a flag hidden in one command but shown in
/// another stays).
fn hidden_only(cmd: &clap::Command) -> BTreeSet<String> {
    fn walk(cmd: &clap::Command, hidden: &mut BTreeSet<String>, shown: &mut BTreeSet<String>) {
        for a in cmd.get_arguments() {
            if let Some(l) = a.get_long() {
                if a.is_hide_set() {
                    hidden.insert(l.to_string());
                } else {
                    shown.insert(l.to_string());
                }
            }
        }
        for s in cmd.get_subcommands() {
            walk(s, hidden, shown);
        }
    }
    let (mut hidden, mut shown) = (BTreeSet::new(), BTreeSet::new());
    walk(cmd, &mut hidden, &mut shown);
    hidden.difference(&shown).cloned().collect()
}

const BASH_STUDENTS: &str = r#"
_hardway_students() {
    HARDWAY_COMPLETE=students "${COMP_WORDS[0]}" "${COMP_WORDS[@]:1}" 2>/dev/null
}
"#;

fn bash(text: &str, hidden: &BTreeSet<String>) -> String {
    let mut out = String::with_capacity(text.len() + BASH_STUDENTS.len());
    let mut takes_students = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("opts=\"") {
            let indent = &line[..line.len() - trimmed.len()];
            let words = rest.trim_end_matches('"').split(' ');
            let mut kept: Vec<&str> = words
                .filter(|w| !w.strip_prefix("--").is_some_and(|f| hidden.contains(f)))
                .collect();
            if std::mem::take(&mut takes_students) {
                kept.push("$(_hardway_students)");
            }
            out.push_str(&format!("{indent}opts=\"{}\"\n", kept.join(" ")));
            continue;
        }
        takes_students = TAKE_STUDENTS
            .iter()
            .any(|c| trimmed == format!("hardway__subcmd__class__subcmd__{c})"));
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(BASH_STUDENTS);
    out
}

fn zsh(text: &str, hidden: &BTreeSet<String>) -> String {
    // `*::` narrows zsh's `words` to the positional arguments: the class directory comes from
    // the flags _arguments has parsed (no `:` in the action, which would end it).
    let names = format!(
        r#"{{compadd -- ${{(f)"$(HARDWAY_COMPLETE=students hardway --dir ${{opt_args[--dir]-{}}} 2>/dev/null)"}}}}"#,
        super::class::CLASS_DIR
    );
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let t = line.trim_start();
        if hidden
            .iter()
            .any(|f| t.starts_with(&format!("'--{f}=")) || t.starts_with(&format!("'--{f}[")))
        {
            continue;
        }
        let student = t.starts_with("'*::students -- ") || t.starts_with("':student -- ");
        match line.rsplit_once(":_default'") {
            Some((head, tail)) if student => {
                out.push_str(&format!("{head}:{names}'{tail}\n"));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

fn fish(text: &str, hidden: &BTreeSet<String>) -> String {
    let mut out: String = text
        .lines()
        .filter(|l| !hidden.iter().any(|f| l.contains(&format!(" -l {f} "))))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(&format!(
        "complete -c hardway -n \"__fish_hardway_using_subcommand class; and __fish_seen_subcommand_from {}\" -f -a \"(HARDWAY_COMPLETE=students hardway (commandline -opc)[2..-1])\"\n",
        TAKE_STUDENTS.join(" ")
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_class_directory_is_read_from_any_spelling_of_dir() {
        let w = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            class_dir(&w("hardway class grade ")),
            std::path::Path::new("class")
        );
        assert_eq!(
            class_dir(&w("hardway class grade --dir c2 a")),
            std::path::Path::new("c2")
        );
        assert_eq!(
            class_dir(&w("hardway class grade --dir=c3")),
            std::path::Path::new("c3")
        );
        assert_eq!(
            class_dir(&w("hardway class grade --dir = c4 ")),
            std::path::Path::new("c4")
        );
    }
}
