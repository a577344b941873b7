//! Command-line flags in the units hardway renders: the user's `extra_args` written into a
//! component's `ExecStart=` so systemd passes them through unchanged, and `ExecStart=` read back
//! into flags (tests check every rendered flag against the version's lists with it).
//!
//! What may be added is decided in `inventory` (against [`crate::versions`]); this module knows
//! the syntax: how a value must be escaped for systemd, which flags a template already sets, and
//! which of those a user may replace ([`OVERRIDABLE`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::components::{Component, ComponentId};

/// One flag from `[components.<name>] extra_args`, as `inventory` accepted it (checked against
/// the lists of the cluster's Kubernetes version). Defined here, below the inventory, because
/// writing it into a unit is this module's job and needs nothing else of an inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraArg {
    /// Without the leading `--`.
    pub flag: String,
    pub value: String,
    /// `--flag=value` as it goes into `ExecStart=` ([`systemd_word`]).
    pub word: String,
}

/// Flags hardway sets that `extra_args` may replace, per component. Each is a tuning knob with a
/// safe range, not part of the cluster's identity or security: log verbosity, the audit log's
/// rotation, the NodePort range. Everything else hardway sets (certificates, addresses, CIDRs,
/// `--profiling=false`, `--anonymous-auth=false`, `--config`) is refused, so the inventory and
/// the PKI stay the one source of those.
pub const OVERRIDABLE: &[(ComponentId, &[&str])] = &[
    (
        ComponentId::KubeApiserver,
        &[
            "v",
            "audit-log-maxage",
            "audit-log-maxbackup",
            "audit-log-maxsize",
            "service-node-port-range",
        ],
    ),
    (ComponentId::KubeControllerManager, &["v"]),
    (ComponentId::KubeScheduler, &["v"]),
    (ComponentId::Kubelet, &["v"]),
    (ComponentId::KubeProxy, &[]),
];

/// Flags that make a daemon print something and exit: a unit running one would restart forever.
pub const EXITS: &[&str] = &["help", "version", "write-config-to"];

/// The components `extra_args` can name, by the name the inventory uses.
pub const EXTRA_ARGS_COMPONENTS: [ComponentId; 5] = [
    ComponentId::KubeApiserver,
    ComponentId::KubeControllerManager,
    ComponentId::KubeScheduler,
    ComponentId::Kubelet,
    ComponentId::KubeProxy,
];

pub fn overridable(component: ComponentId) -> &'static [&'static str] {
    OVERRIDABLE
        .iter()
        .find(|(c, _)| *c == component)
        .map_or(&[], |(_, f)| f)
}

/// `--flag=value` as one `ExecStart=` word that systemd hands to the daemon as exactly that
/// string, or the character that cannot be written (a control character: a newline would start a
/// new directive). `%` is a specifier and `$` a variable to systemd, so they are doubled; a value
/// with a space, quote, backslash or `;` is double-quoted, with `"` and `\` escaped inside.
pub fn systemd_word(flag: &str, value: &str) -> Result<String, char> {
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(c);
    }
    let mut escaped = String::with_capacity(value.len());
    let mut quote = false;
    for c in value.chars() {
        match c {
            '%' => escaped.push_str("%%"),
            '$' => escaped.push_str("$$"),
            '\\' | '"' => {
                escaped.push('\\');
                escaped.push(c);
                quote = true;
            }
            ' ' | '\'' | ';' => {
                escaped.push(c);
                quote = true;
            }
            c => escaped.push(c),
        }
    }
    Ok(if quote {
        format!("\"--{flag}={escaped}\"")
    } else {
        format!("--{flag}={escaped}")
    })
}

/// The flags a unit template sets on its command line (with or without a value, in any branch of
/// its conditionals): one `--name` per line of its `ExecStart=` continuation.
pub fn set_by_template(template: &str) -> BTreeSet<String> {
    template
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .map(|rest| {
            rest.split(['=', ' '])
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// The flags on a unit's `ExecStart=` line, continuation lines joined and quotes removed the way
/// systemd removes them: `(name, value)` for every `--name[=value]` word after the binary.
pub fn exec_start_flags(unit: &str) -> Vec<(String, Option<String>)> {
    let joined = unit.replace("\\\n", " ");
    let Some(line) = joined.lines().find_map(|l| l.strip_prefix("ExecStart=")) else {
        return Vec::new();
    };
    split_words(line)
        .into_iter()
        .skip(1)
        .filter_map(|w| {
            let flag = w.strip_prefix("--")?;
            Some(match flag.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (flag.to_string(), None),
            })
        })
        .collect()
}

/// systemd's word splitting for the cases [`systemd_word`] produces: double quotes with `\"` and
/// `\\` inside, `%%` and `$$` undoubled.
fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let (mut in_quotes, mut started) = (false, false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                started = true;
            }
            '\\' if in_quotes => word.extend(chars.next()),
            '%' | '$' if chars.peek() == Some(&c) => {
                chars.next();
                word.push(c);
            }
            c if c.is_whitespace() && !in_quotes => {
                if started || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                started = false;
            }
            c => word.push(c),
        }
    }
    if started || !word.is_empty() {
        words.push(word);
    }
    words
}

/// A rendered unit with the component's `extra_args` in its `ExecStart=`: an overridable flag's
/// line gets the user's value, every other flag is inserted after the `ExecStart=` line (which in
/// every hardway unit ends in a continuation, since each daemon has flags of its own).
fn merge(unit: &str, args: &[ExtraArg]) -> String {
    let mut lines: Vec<String> = unit.lines().map(str::to_string).collect();
    let mut new = Vec::new();
    for a in args {
        let prefix_eq = format!("--{}=", a.flag);
        let bare = format!("--{}", a.flag);
        let existing = lines.iter_mut().find(|l| {
            let t = l.trim().trim_end_matches('\\').trim_end();
            t.starts_with(&prefix_eq) || t == bare
        });
        match existing {
            Some(line) => {
                let more = line.trim_end().ends_with('\\');
                *line = format!("  {}{}", a.word, if more { " \\" } else { "" });
            }
            None => new.push(format!("  {} \\", a.word)),
        }
    }
    if let Some(at) = lines.iter().position(|l| l.starts_with("ExecStart=")) {
        lines.splice(at + 1..at + 1, new);
    }
    let mut out = lines.join("\n");
    if unit.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// `text` rendered from `template`, with the `extra_args` (the inventory's, per component) of the
/// component whose unit it is.
pub fn with_extra_args(
    extra_args: &BTreeMap<ComponentId, Vec<ExtraArg>>,
    template: &str,
    text: String,
) -> String {
    let component = template
        .strip_suffix(".service")
        .and_then(Component::by_unit);
    match component.and_then(|c| extra_args.get(&c.id)) {
        Some(args) if !args.is_empty() => merge(&text, args),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg(flag: &str, value: &str) -> ExtraArg {
        ExtraArg {
            flag: flag.into(),
            value: value.into(),
            word: systemd_word(flag, value).unwrap(),
        }
    }

    #[test]
    fn values_are_escaped_and_quoted_for_systemd() {
        assert_eq!(systemd_word("v", "4").unwrap(), "--v=4");
        assert_eq!(systemd_word("x", "50%").unwrap(), "--x=50%%");
        assert_eq!(systemd_word("x", "$HOME").unwrap(), "--x=$$HOME");
        assert_eq!(systemd_word("x", "a b").unwrap(), "\"--x=a b\"");
        assert_eq!(
            systemd_word("x", r#"say "hi" \o/"#).unwrap(),
            r#""--x=say \"hi\" \\o/""#
        );
        assert_eq!(systemd_word("x", "a\nb"), Err('\n'));
        assert_eq!(systemd_word("x", "a\tb"), Err('\t'));
    }

    #[test]
    fn exec_start_reads_back_what_was_written() {
        for value in [
            "4",
            "50%",
            "$HOME",
            "a b",
            r#"say "hi" \o/"#,
            "x;y",
            "it's",
            "",
        ] {
            let unit = format!(
                "[Service]\nExecStart=/bin/d \\\n  {} \\\n  --v=2\n",
                systemd_word("x", value).unwrap()
            );
            let flags = exec_start_flags(&unit);
            assert_eq!(
                flags,
                [
                    ("x".to_string(), Some(value.to_string())),
                    ("v".to_string(), Some("2".to_string()))
                ],
                "{unit}"
            );
        }
    }

    #[test]
    fn extra_args_replace_overridable_lines_and_add_the_rest() {
        let unit =
            "[Service]\nExecStart=/bin/d \\\n  --audit-log-maxage=30 \\\n  --v=2\nRestart=always\n";
        let merged = merge(
            unit,
            &[
                arg("audit-log-maxage", "7"),
                arg("event-ttl", "2h"),
                arg("v", "4"),
            ],
        );
        assert_eq!(
            merged,
            "[Service]\nExecStart=/bin/d \\\n  --event-ttl=2h \\\n  --audit-log-maxage=7 \\\n  --v=4\nRestart=always\n"
        );
        let flags = exec_start_flags(&merged);
        assert_eq!(flags.len(), 3, "{flags:?}");
    }

    #[test]
    fn templates_name_the_flags_they_set() {
        let t = "ExecStart={{ bin.x }} \\\n  --a=1 \\\n{%- if agg %}\n  --b=2 \\\n{%- endif %}\n  --c \\\n  --v=2\n";
        assert_eq!(
            set_by_template(t),
            ["a", "b", "c", "v"].map(String::from).into_iter().collect()
        );
    }
}
