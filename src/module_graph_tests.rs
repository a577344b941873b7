//! No import circles among the library's top-level modules.
//!
//! The library is a pipeline (`lib.rs`): a stage may use the stages below it, never one above,
//! or the stages stop being readable, testable and replaceable one at a time. This test reads the
//! source tree, draws an edge A → B whenever code in top-level module A names `crate::B` (in a
//! `use`, a grouped `use crate::{B, ..}` or an inline path), finds the strongly connected
//! components of that graph (Tarjan) and fails on every one with more than one module, naming the
//! files and lines that create each edge inside it.
//!
//! What counts, and why:
//! - a top-level module is what `lib.rs` declares (a file or directory directly under `src/`);
//!   `lib.rs` itself only declares them and `main.rs` is the binary, so neither is in the graph;
//! - comments (doc comments too), string and char literals are removed first: prose and
//!   messages that name a module are no dependency;
//! - test code is left out: every item under `#[cfg(test)]` (the `mod tests` blocks, `#[test]`
//!   functions) and every file declared under it — `testing.rs`, `key_material_tests.rs`, this
//!   file, and the `tests.rs` files of deploy, verify, explain, day2, day2/certs and
//!   remote/shell. Tests build fixtures from any stage (`testing::Fixture` renders a whole
//!   cluster into a fake one) and check one stage against another; that does not make the
//!   library's stages depend on each other;
//! - `super::` paths that climb to the crate root from a file count like `crate::` (none do
//!   today; an inline module inside a file is not counted as a level).
//!
//! Every `.rs` file under `src/` must be reached from `lib.rs` through `mod` declarations, so a
//! file the walk cannot see (a `#[path]` attribute, a module declared inside an inline one)
//! fails the test instead of silently leaving edges out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Where each edge comes from: (from, to) → `file:line` under `src/`.
type Edges = BTreeMap<(String, String), Vec<String>>;

#[test]
fn sibling_modules_form_no_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = module_edges(&src);
    let circles = circles(&edges);
    assert!(
        circles.is_empty(),
        "import circles among sibling modules of src/ (a stage may use only the stages below it):\n{}",
        report(&circles, &edges)
    );
}

/// The edges between sibling modules (the children of one module: the top-level modules, the
/// children of `lab`, of `lab::qemu`, ...), named by their paths (`deploy`, `lab::files`), from
/// every non-test file the crate compiles. A path from a file in child C of module M to child D
/// of M, C ≠ D, is an edge C → D; a module using its own children (a `mod.rs` composing them) or
/// an item of an ancestor is not.
fn module_edges(src: &Path) -> Edges {
    let files = walk(src);
    let reached: BTreeSet<&str> = files.iter().map(|f| f.rel.as_str()).collect();
    let on_disk = rust_files(src, src);
    let unreached: Vec<&String> = on_disk
        .iter()
        .filter(|f| *f != "main.rs" && !reached.contains(f.as_str()))
        .collect();
    assert!(
        unreached.is_empty(),
        "files under src/ not reached from lib.rs by `mod` declarations: {unreached:?}"
    );

    let modules: BTreeSet<&[String]> = files.iter().map(|f| f.module.as_slice()).collect();
    let mut edges = Edges::new();
    for f in files
        .iter()
        .filter(|f| !f.test_only && !f.module.is_empty())
    {
        for (offset, target) in absolute_paths(&f.code, &f.module) {
            let common = f
                .module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if common == f.module.len()
                || common == target.len()
                || !modules.contains(&target[..=common])
            {
                continue;
            }
            let (from, to) = (f.module[..=common].join("::"), target[..=common].join("::"));
            let line = f.code[..offset].matches('\n').count() + 1;
            let sites = edges.entry((from, to)).or_default();
            let site = format!("{}:{line}", f.rel);
            if sites.last() != Some(&site) {
                sites.push(site);
            }
        }
    }
    edges
}

/// One source file of the crate, as the module tree declares it.
struct SourceFile {
    /// Path under `src/`.
    rel: String,
    /// Its module path: `[]` for lib.rs, `[plan]` for `plan.rs`, `[deploy]` for
    /// `deploy/mod.rs`, `[deploy, etcd]` for `deploy/etcd.rs`.
    module: Vec<String>,
    /// Declared under `#[cfg(test)]`, itself or a module above it.
    test_only: bool,
    /// Its code without comments, literals and `#[cfg(test)]` items.
    code: String,
}

/// Every file reached from `lib.rs` through `mod NAME;` declarations.
fn walk(src: &Path) -> Vec<SourceFile> {
    let mut out = Vec::new();
    let mut todo = vec![("lib.rs".to_string(), Vec::<String>::new(), false)];
    while let Some((rel, module, test_only)) = todo.pop() {
        let text =
            std::fs::read_to_string(src.join(&rel)).unwrap_or_else(|e| panic!("src/{rel}: {e}"));
        let (code, test_mods) = without_test_items(&strip_comments_and_literals(&text));
        // A file's children live beside it (lib.rs, mod.rs) or in the directory of its name.
        let dir = match rel.rsplit_once('/') {
            _ if rel == "lib.rs" => String::new(),
            Some((d, "mod.rs")) => format!("{d}/"),
            _ => format!("{}/", rel.trim_end_matches(".rs")),
        };
        let children = mod_declarations(&code)
            .into_iter()
            .map(|m| (m, test_only))
            .chain(test_mods.into_iter().map(|m| (m, true)));
        for (name, test) in children {
            let file = [format!("{dir}{name}.rs"), format!("{dir}{name}/mod.rs")]
                .into_iter()
                .find(|p| src.join(p).is_file())
                .unwrap_or_else(|| panic!("src/{rel}: no file for `mod {name};`"));
            let mut child = module.clone();
            child.push(name);
            todo.push((file, child, test));
        }
        out.push(SourceFile {
            rel,
            module,
            test_only,
            code,
        });
    }
    out
}

/// Every `.rs` file below `dir`, as a path under `src`.
fn rust_files(src: &Path, dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path: PathBuf = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(src, &path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(
                path.strip_prefix(src)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    out
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `text` with comments, string literals (raw and byte strings too) and char literals blanked
/// out, newlines kept so offsets still give the line.
fn strip_comments_and_literals(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to.min(b.len())] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        let prev_ident = i > 0 && is_ident(b[i - 1]);
        if b[i..].starts_with(b"//") {
            let end = b[i..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |p| i + p);
            blank(&mut out, i, end);
            i = end;
        } else if b[i..].starts_with(b"/*") {
            // Block comments nest.
            let (mut depth, mut j) = (0, i);
            while j < b.len() {
                if b[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if b[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if b[i] == b'r'
            && (!prev_ident || (b[i - 1] == b'b' && (i < 2 || !is_ident(b[i - 2]))))
            && raw_string_end(b, i).is_some()
        {
            let end = raw_string_end(b, i).unwrap();
            blank(&mut out, i, end);
            i = end;
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            blank(&mut out, i, j + 1);
            i = j + 1;
        } else if b[i] == b'\'' {
            // A char literal ('x', '\n', '\''), or a lifetime or label ('a), which stays.
            let end = if b.get(i + 1) == Some(&b'\\') {
                b[i + 3..]
                    .iter()
                    .position(|&c| c == b'\'')
                    .map(|p| i + 3 + p + 1)
            } else {
                let len = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                (b.get(i + 1 + len) == Some(&b'\'')).then_some(i + 2 + len)
            };
            match end {
                Some(end) => {
                    blank(&mut out, i, end);
                    i = end;
                }
                None => i += 1,
            }
        } else {
            i += 1;
        }
    }
    String::from_utf8(out).expect("only whole characters are blanked")
}

/// The end of a raw string `r#".."#` starting at `b[i] == 'r'`, if one starts there.
fn raw_string_end(b: &[u8], i: usize) -> Option<usize> {
    let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
    if b.get(i + 1 + hashes) != Some(&b'"') {
        return None;
    }
    let close: Vec<u8> = std::iter::once(b'"')
        .chain(std::iter::repeat_n(b'#', hashes))
        .collect();
    let body = i + 2 + hashes;
    b[body..]
        .windows(close.len())
        .position(|w| w == close)
        .map(|p| body + p + close.len())
}

/// `code` with every `#[cfg(test)]` item blanked out, and the names of the modules declared
/// under it (`#[cfg(test)] mod tests;`), whose files are test code too.
fn without_test_items(code: &str) -> (String, Vec<String>) {
    const ATTR: &str = "#[cfg(test)]";
    let b = code.as_bytes();
    let mut out = b.to_vec();
    let mut test_mods = Vec::new();
    let mut from = 0;
    while let Some(p) = code[from..].find(ATTR) {
        let start = from + p;
        let mut i = start + ATTR.len();
        // Further attributes of the same item (`#[test]`).
        loop {
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if b.get(i) != Some(&b'#') {
                break;
            }
            i = matching(b, i + 1, b'[', b']');
        }
        let header_start = i;
        // The item ends at its first `;` or with the block its first `{` opens.
        let mut depth = 0i32;
        while i < b.len() {
            match b[i] {
                b'(' | b'[' => depth += 1,
                b')' | b']' => depth -= 1,
                b';' if depth == 0 => break,
                b'{' if depth == 0 => break,
                _ => {}
            }
            i += 1;
        }
        let end = if b.get(i) == Some(&b'{') {
            matching(b, i, b'{', b'}')
        } else {
            i + 1
        };
        let header: Vec<&str> = code[header_start..i].split_whitespace().collect();
        if b.get(i) == Some(&b';')
            && let [.., "mod", name] = header.as_slice()
        {
            test_mods.push(name.to_string());
        }
        for c in &mut out[start..end.min(b.len())] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
        from = end.min(b.len());
    }
    (
        String::from_utf8(out).expect("only whole characters are blanked"),
        test_mods,
    )
}

/// The index just past the `close` that matches the `open` at `b[i]`.
fn matching(b: &[u8], i: usize, open: u8, close: u8) -> usize {
    let mut depth = 0;
    for (j, &c) in b.iter().enumerate().skip(i) {
        if c == open {
            depth += 1;
        } else if c == close {
            depth -= 1;
            if depth == 0 {
                return j + 1;
            }
        }
    }
    b.len()
}

/// Identifier tokens of `code`, with their offsets.
fn tokens(code: &str) -> Vec<(usize, &str)> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if is_ident(b[i]) {
            let start = i;
            while i < b.len() && is_ident(b[i]) {
                i += 1;
            }
            out.push((start, &code[start..i]));
        } else {
            i += 1;
        }
    }
    out
}

/// The file modules `code` declares: `mod NAME;` (any visibility).
fn mod_declarations(code: &str) -> Vec<String> {
    let toks = tokens(code);
    toks.windows(2)
        .filter(|w| w[0].1 == "mod")
        .filter(|w| code[w[1].0 + w[1].1.len()..].trim_start().starts_with(';'))
        .map(|w| w[1].1.to_string())
        .collect()
}

/// Every path in `code` that starts at the crate root or climbs to an ancestor of `module` (the
/// file's module path), made absolute: `crate::a::b`, each item of `crate::{a, b::{c, d}}`,
/// `super::x` (one level up per `super`) and `self::x`. Only identifiers count as segments.
/// (offset, segments)
fn absolute_paths(code: &str, module: &[String]) -> Vec<(usize, Vec<String>)> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    // After the word ending at `at`: the offset past `::` (with any spaces), if `::` follows.
    let path_sep = |at: usize| {
        let rest = &code[at..];
        let trimmed = rest.trim_start();
        trimmed
            .strip_prefix("::")
            .map(|r| at + rest.len() - r.trim_start().len())
    };
    let ident_at = |at: usize| -> String {
        code[at..]
            .chars()
            .take_while(|&c| c.is_ascii_alphanumeric() || c == '_')
            .collect()
    };
    for (offset, word) in tokens(code) {
        if code[..offset].trim_end().ends_with("::") {
            continue;
        }
        let (mut base, mut at) = match word {
            "crate" => (Vec::new(), offset + word.len()),
            "self" => (module.to_vec(), offset + word.len()),
            "super" => {
                let (mut at, mut n) = (offset + word.len(), 1);
                while let Some(next) = path_sep(at).filter(|&p| ident_at(p) == "super") {
                    at = next + 5;
                    n += 1;
                }
                let Some(keep) = module.len().checked_sub(n) else {
                    continue;
                };
                (module[..keep].to_vec(), at)
            }
            _ => continue,
        };
        // Plain segments, then perhaps a group.
        while let Some(next) = path_sep(at) {
            let name = ident_at(next);
            if name.is_empty() {
                if b.get(next) == Some(&b'{') {
                    group(code, next, &base, offset, &mut out);
                    base.clear();
                }
                break;
            }
            base.push(name.clone());
            at = next + name.len();
        }
        if !(base.is_empty() || word == "self" && base.len() == module.len()) {
            out.push((offset, base));
        }
    }
    out
}

/// The paths of the group `{...}` that opens at `code[open]`, each prefixed with `base`
/// (`self` inside it is `base` itself, which says nothing new).
fn group(
    code: &str,
    open: usize,
    base: &[String],
    offset: usize,
    out: &mut Vec<(usize, Vec<String>)>,
) {
    let b = code.as_bytes();
    let end = matching(b, open, b'{', b'}') - 1;
    let mut i = open + 1;
    while i < end {
        // One item: segments separated by `::`, perhaps ending in a nested group.
        let mut path = base.to_vec();
        loop {
            while i < end && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if b.get(i) == Some(&b'{') {
                group(code, i, &path, offset, out);
                i = matching(b, i, b'{', b'}');
                path.truncate(base.len());
                break;
            }
            let name: String = code[i..end]
                .chars()
                .take_while(|&c| c.is_ascii_alphanumeric() || c == '_')
                .collect();
            if name.is_empty() {
                break;
            }
            i += name.len();
            if name != "self" {
                path.push(name);
            }
            let rest = code[i..end].trim_start();
            match rest.strip_prefix("::") {
                Some(r) => i = end - r.len(),
                None => break,
            }
        }
        if path.len() > base.len() {
            out.push((offset, path));
        }
        // On to the next item.
        let mut depth = 0;
        while i < end {
            match b[i] {
                b'{' => depth += 1,
                b'}' => depth -= 1,
                b',' if depth == 0 => {
                    i += 1;
                    break;
                }
                _ => {}
            }
            i += 1;
        }
    }
}

/// The strongly connected components of more than one module (Tarjan), each sorted.
fn circles(edges: &Edges) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&str> = edges
        .keys()
        .flat_map(|(a, b)| [a.as_str(), b.as_str()])
        .collect();
    let mut t = Tarjan {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for n in nodes {
        if !t.index.contains_key(n) {
            t.visit(n);
        }
    }
    let mut out = t.out;
    out.retain(|c| c.len() > 1);
    for c in &mut out {
        c.sort();
    }
    out.sort();
    out
}

struct Tarjan<'a> {
    edges: &'a Edges,
    index: BTreeMap<&'a str, usize>,
    low: BTreeMap<&'a str, usize>,
    stack: Vec<&'a str>,
    on_stack: BTreeSet<&'a str>,
    next: usize,
    out: Vec<Vec<String>>,
}

impl<'a> Tarjan<'a> {
    fn visit(&mut self, v: &'a str) {
        self.index.insert(v, self.next);
        self.low.insert(v, self.next);
        self.next += 1;
        self.stack.push(v);
        self.on_stack.insert(v);
        let edges = self.edges;
        for (_, w) in edges.keys().filter(|(a, _)| a == v) {
            let w = w.as_str();
            if !self.index.contains_key(w) {
                self.visit(w);
                self.low.insert(v, self.low[v].min(self.low[w]));
            } else if self.on_stack.contains(w) {
                self.low.insert(v, self.low[v].min(self.index[w]));
            }
        }
        if self.low[v] == self.index[v] {
            let mut component = Vec::new();
            while let Some(w) = self.stack.pop() {
                self.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            self.out.push(component);
        }
    }
}

/// Each circle: its modules, one shortest cycle through them as an example, and every edge
/// inside it with the places that create it.
fn report(circles: &[Vec<String>], edges: &Edges) -> String {
    let mut s = String::new();
    for (n, c) in circles.iter().enumerate() {
        let inside = |(a, b): &(String, String)| c.contains(a) && c.contains(b);
        s += &format!(
            "circle {}: {}\n  e.g. {}\n",
            n + 1,
            c.join(", "),
            shortest_cycle(&c[0], edges, c).join(" -> ")
        );
        for (edge, sites) in edges.iter().filter(|(e, _)| inside(e)) {
            s += &format!("  {} -> {}: {}\n", edge.0, edge.1, sites.join(", "));
        }
    }
    s
}

/// A shortest path from `start` back to itself within `within` (breadth first).
fn shortest_cycle(start: &str, edges: &Edges, within: &[String]) -> Vec<String> {
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for (_, w) in edges.keys().filter(|(a, b)| a == v && within.contains(b)) {
            if w == start {
                let mut path = vec![start.to_string()];
                let mut at = v;
                while at != start {
                    path.push(at.to_string());
                    at = came_from[at];
                }
                path.push(start.to_string());
                path.reverse();
                return path;
            }
            if !came_from.contains_key(w.as_str()) {
                came_from.insert(w.as_str(), v);
                queue.push_back(w.as_str());
            }
        }
    }
    vec![start.to_string()]
}

#[test]
fn comments_literals_and_test_items_do_not_count() {
    let code = r##"
use crate::{alpha, beta::{x, y}, self};
/// see crate::gamma
/* crate::delta /* nested */ crate::delta */
const S: &str = "crate::epsilon";
const R: &str = r#"crate::zeta "still"#;
const C: char = '{';
fn f<'a>(x: &'a str) { crate::eta::f(); }
#[cfg(test)]
mod tests { use crate::theta; fn g() -> char { '}' } }
#[cfg(test)]
#[test]
fn t() { crate::iota::g(); }
#[cfg(test)]
mod fixtures;
mod real;
"##;
    let (code, test_mods) = without_test_items(&strip_comments_and_literals(code));
    let found: Vec<String> = absolute_paths(&code, &["m".to_string()])
        .into_iter()
        .map(|(_, p)| p.join("::"))
        .collect();
    assert_eq!(found, ["alpha", "beta::x", "beta::y", "eta::f"]);
    assert_eq!(test_mods, ["fixtures"]);
    assert_eq!(mod_declarations(&code), ["real"]);
}

#[test]
fn super_and_self_climb_from_the_files_module() {
    let code = "use super::super::alpha;\nuse super::{beta, gamma::{d, e::f}};\nuse self::delta::x;\nfn g() { crate::lab::net::up(); }\n";
    let module = ["lab".to_string(), "qemu".to_string(), "vm".to_string()];
    let found: Vec<String> = absolute_paths(code, &module)
        .into_iter()
        .map(|(_, p)| p.join("::"))
        .collect();
    assert_eq!(
        found,
        [
            "lab::alpha",
            "lab::qemu::beta",
            "lab::qemu::gamma::d",
            "lab::qemu::gamma::e::f",
            "lab::qemu::vm::delta::x",
            "lab::net::up"
        ]
    );
    // More `super` than levels: not a path of this crate.
    assert!(absolute_paths("use super::super::x;", &["a".to_string()]).is_empty());
}

#[test]
fn circles_are_found_with_their_edges() {
    let mut edges = Edges::new();
    for (a, b) in [
        ("a", "b"),
        ("b", "c"),
        ("c", "a"),
        ("c", "d"),
        ("d", "e"),
        ("e", "d"),
        ("f", "a"),
    ] {
        edges.insert((a.into(), b.into()), vec![format!("{a}.rs:1")]);
    }
    assert_eq!(circles(&edges), [vec!["a", "b", "c"], vec!["d", "e"]]);
    assert_eq!(
        shortest_cycle("a", &edges, &["a".into(), "b".into(), "c".into()]),
        ["a", "b", "c", "a"]
    );
}
