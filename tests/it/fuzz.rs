//! Property tests (proptest, a fixed number of cases so CI's budget is bounded; raise it with
//! PROPTEST_CASES): the inventory parser and validator never panic, whatever the text; and a
//! value the validator accepts never changes the structure of a file it is rendered into — a
//! systemd unit keeps its sections, keys and ExecStart words, YAML and JSON their keys and
//! scalar kinds, haproxy.cfg its directives — compared with the example inventory's render.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::*;
use hardway::{inventory, pki, render};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};

fn config() -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(96),
        failure_persistence: None,
        ..Config::default()
    }
}

/// Characters that matter to one of the rendered syntaxes, and some that do not.
const PALETTE: &[char] = &[
    'a', 'k', 'z', 'A', 'Z', '0', '1', '9', '-', '.', '/', '_', ' ', '\n', '\t', '"', '\'', '%',
    '$', '{', '}', '\\', '*', ':', '=', '#', ',', '[', ']', '&', '!', '|', '>', 'é', '\u{7f}',
];

/// Values to put into the inventory: arbitrary text from the palette (mostly refused), names
/// that are valid but look like other YAML types, and valid names with one odd character.
fn text() -> impl Strategy<Value = String> {
    let arbitrary = prop::collection::vec(prop::sample::select(PALETTE), 0..20)
        .prop_map(|c| c.into_iter().collect::<String>());
    let yamlish = prop::sample::select(vec![
        "true", "null", "yes", "no", "on", "off", "1234", "0x1f", "1e3", "007", "nan", "inf",
    ])
    .prop_map(str::to_string);
    let name = "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?){0,2}";
    let odd = (name, prop::sample::select(PALETTE), 0..10usize).prop_map(|(n, c, at)| {
        let mut v: Vec<char> = n.chars().collect();
        v.insert(at.min(v.len()), c);
        v.into_iter().collect()
    });
    prop_oneof![arbitrary, yamlish, name.prop_map(|s| s), odd]
}

/// A TOML basic string holding `s` exactly.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Places in the example inventory that reach templates, as (text to replace, replacement with
/// `{}` where the TOML string goes).
const SLOTS: &[(&str, &str)] = &[
    ("name = \"systemv\"", "name = {}"),
    ("domain = \"systemv.local\"", "domain = {}"),
    ("kubernetes_version = \"1.37.1\"", "kubernetes_version = {}"),
    ("cluster_domain = \"cluster.local\"", "cluster_domain = {}"),
    ("dns_name = \"haproxy.systemv.local\"", "dns_name = {}"),
    ("remote_dir = \"/usr/local/bin\"", "remote_dir = {}"),
    ("name = \"kmaster2\"", "name = {}"),
    ("name = \"kworker1\"", "name = {}"),
    (
        "roles = [\"worker\"]",
        "roles = [\"worker\"]\nextra_sans = [{}]",
    ),
    (
        "addresses = [\"192.168.96.240-192.168.96.250\"]",
        "addresses = [{}]",
    ),
];

fn example() -> String {
    std::fs::read_to_string(example_inventory()).unwrap()
}

fn structure(path: &str, text: &str) -> Vec<String> {
    if path.ends_with(".service") {
        unit_structure(text)
    } else if path.ends_with(".yaml") || path.ends_with("kubeconfig") {
        let mut out = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(text) {
            match <serde_yaml::Value as serde::Deserialize>::deserialize(doc) {
                Ok(v) => yaml_paths(&v, "", &mut out),
                Err(e) => out.push(format!("?yaml {e}")),
            }
        }
        out
    } else if path.ends_with("haproxy.cfg") {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                l.split_whitespace()
                    .take(if l.starts_with("server ") { 1 } else { 2 })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    } else if path.contains("/cni/") {
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) => {
                let mut out = Vec::new();
                json_paths(&v, "", &mut out);
                out
            }
            Err(e) => vec![format!("?json {e}")],
        }
    } else if path.ends_with(".toml") {
        match text.parse::<toml::Table>() {
            Ok(t) => t.keys().cloned().collect(),
            Err(e) => vec![format!("?toml {e}")],
        }
    } else if path == "/etc/hardway/hosts" {
        // Every line an address and names, or the block's markers; how many depends on names.
        let mut kinds: Vec<String> = text
            .lines()
            .map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                if l.starts_with("# BEGIN hardway ") || l.starts_with("# END hardway ") {
                    "marker".to_string()
                } else if w.len() >= 2 && w[0].parse::<std::net::IpAddr>().is_ok() {
                    "entry".to_string()
                } else {
                    format!("?line {l:?}")
                }
            })
            .collect();
        kinds.sort();
        kinds.dedup();
        kinds
    } else {
        vec![]
    }
}

/// Sections, keys, and for Exec lines the number of words and the flag names.
fn unit_structure(text: &str) -> Vec<String> {
    let joined = text.replace("\\\n", " ");
    let mut section = String::new();
    let mut out = Vec::new();
    for line in joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        if line.starts_with('[') && line.ends_with(']') {
            section = line.to_string();
            out.push(section.clone());
        } else if let Some((key, value)) = line.split_once('=') {
            out.push(format!("{section} {key}"));
            if key.starts_with("Exec") {
                let words: Vec<&str> = value.split_whitespace().collect();
                out.push(format!("{key}: {} words", words.len()));
                out.extend(
                    words
                        .iter()
                        .filter_map(|w| w.strip_prefix("--"))
                        .map(|f| format!("--{}", f.split('=').next().unwrap_or(""))),
                );
            }
        } else {
            out.push(format!("?line {line:?}"));
        }
    }
    out
}

fn yaml_paths(v: &serde_yaml::Value, at: &str, out: &mut Vec<String>) {
    use serde_yaml::Value;
    match v {
        Value::Mapping(m) => {
            for (k, v) in m {
                let k = k
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("?key {k:?}"));
                yaml_paths(v, &format!("{at}.{k}"), out);
            }
        }
        Value::Sequence(s) => {
            out.push(format!("{at}[{}]", s.len()));
            for v in s {
                yaml_paths(v, &format!("{at}[]"), out);
            }
        }
        Value::String(_) => out.push(format!("{at}: string")),
        Value::Number(_) => out.push(format!("{at}: number")),
        Value::Bool(_) => out.push(format!("{at}: bool")),
        Value::Null => out.push(format!("{at}: null")),
        Value::Tagged(t) => out.push(format!("{at}: tagged {}", t.tag)),
    }
}

fn json_paths(v: &serde_json::Value, at: &str, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => m
            .iter()
            .for_each(|(k, v)| json_paths(v, &format!("{at}.{k}"), out)),
        serde_json::Value::Array(a) => {
            out.push(format!("{at}[{}]", a.len()));
            a.iter()
                .for_each(|v| json_paths(v, &format!("{at}[]"), out));
        }
        other => out.push(format!(
            "{at}: {}",
            if other.is_string() { "string" } else { "other" }
        )),
    }
}

/// Every rendered file's structure, by node index (names may be what changed) and path.
fn rendered_structure(inv: &inventory::Inventory) -> BTreeMap<(usize, String), Vec<String>> {
    // A dry run issues the whole PKI in memory and writes nothing.
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = pki::generate(
        inv,
        &dir.path().join("pki"),
        pki::GenerateOptions {
            dry_run: true,
            ..Default::default()
        },
    )
    .unwrap();
    let r = render::render(inv, &p)
        .unwrap_or_else(|e| panic!("an accepted inventory does not render: {e:#}"));
    let mut out = BTreeMap::new();
    for (i, n) in inv.nodes.iter().enumerate() {
        for f in &r.hosts[&n.name] {
            out.insert(
                (i, f.path.clone()),
                structure(&f.path, &String::from_utf8_lossy(&f.contents)),
            );
        }
    }
    out
}

#[test]
fn the_inventory_loader_never_panics() {
    let base = example();
    let lines: Vec<String> = base.lines().map(str::to_string).collect();
    let n = lines.len();
    proptest!(config(), |(garbage in prop::collection::vec(any::<char>(), 0..200), cut in 0..n, dup in 0..n, value in text())| {
        let _ = inventory::parse(Path::new("fuzz.toml"), &garbage.into_iter().collect::<String>());
        // The example with a line removed, one duplicated, and one value replaced.
        let mut edited = lines.clone();
        edited.remove(cut);
        edited.insert(dup.min(edited.len()), lines[dup].clone());
        let text = edited.join("\n").replacen("\"systemv\"", &toml_string(&value), 1);
        let _ = inventory::parse(Path::new("fuzz.toml"), &text);
    });
}

#[test]
fn an_accepted_value_never_changes_a_rendered_files_structure() {
    let base_text = example();
    let base = inventory::parse(Path::new("example.toml"), &base_text).unwrap();
    let reference = rendered_structure(&base);
    let accepted = std::cell::Cell::new(0u32);
    proptest!(config(), |(slot in 0..SLOTS.len(), value in text())| {
        let (from, to) = SLOTS[slot];
        let text = base_text.replacen(from, &to.replace("{}", &toml_string(&value)), 1);
        let Ok(inv) = inventory::parse(Path::new("fuzz.toml"), &text) else { return Ok(()) };
        accepted.set(accepted.get() + 1);
        let got = rendered_structure(&inv);
        let paths = |m: &BTreeMap<(usize, String), Vec<String>>| m.keys().cloned().collect::<Vec<_>>();
        prop_assert_eq!(paths(&got), paths(&reference), "slot {} = {:?}: other files", slot, value);
        for (k, want) in &reference {
            if &got[k] != want {
                let diff: Vec<String> = got[k].iter().zip(want).filter(|(g, w)| g != w).map(|(g, w)| format!("{g:?} instead of {w:?}")).take(3).collect();
                return Err(TestCaseError::fail(format!("slot {slot} = {value:?} changes the structure of {} on node {}: {}", k.1, k.0, diff.join("; "))));
            }
        }
    });
    // Most random values are refused; the property means something only if some are accepted.
    assert!(
        accepted.get() > 0,
        "no generated value was accepted: the property was never checked"
    );
}

#[test]
fn values_that_look_like_other_yaml_types_stay_strings() {
    // Names of digits only are valid DNS labels; unquoted in YAML they would be numbers.
    let text = example()
        .replacen("name = \"systemv\"", "name = \"1234\"", 1)
        .replacen("name = \"kworker1\"", "name = \"42\"", 1);
    let inv = inventory::parse(Path::new("digits.toml"), &text).unwrap();
    let base = inventory::parse(Path::new("example.toml"), &example()).unwrap();
    let (got, want) = (rendered_structure(&inv), rendered_structure(&base));
    for (k, w) in &want {
        assert_eq!(&got[k], w, "{} on node {}", k.1, k.0);
    }
}
