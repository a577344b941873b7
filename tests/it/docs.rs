//! The documentation: README.md, SECURITY.md and the book in docs/. Every page of docs/ is in
//! docs/SUMMARY.md; every relative link names a file that exists and, with `#anchor`, a heading
//! of that file (GitHub's slugs); the README's two commands are .ci/run's.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::common::*;

/// GitHub's anchor of a heading: lowercase, punctuation but `-` and `_` dropped, spaces to `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The headings' anchors and the link targets of a Markdown file, code blocks left out.
fn parse(text: &str) -> (BTreeSet<String>, Vec<String>) {
    let (mut anchors, mut links, mut fence) = (BTreeSet::new(), Vec::new(), false);
    for line in text.lines() {
        if line.starts_with("```") {
            fence = !fence;
            continue;
        }
        if fence {
            continue;
        }
        if let Some(h) = line.strip_prefix('#') {
            anchors.insert(slug(h.trim_start_matches('#')));
        }
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            links.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    (anchors, links)
}

fn pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    pages.sort();
    pages
}

#[test]
fn every_page_is_listed_and_every_link_resolves() {
    let summary = std::fs::read_to_string(repo().join("docs/SUMMARY.md")).unwrap();
    let (_, listed) = parse(&summary);
    for page in pages() {
        let name = page.file_name().unwrap().to_str().unwrap();
        if name != "SUMMARY.md" {
            assert!(
                listed.iter().any(|l| l == name),
                "docs/{name} is not in docs/SUMMARY.md"
            );
        }
    }
    let files: Vec<PathBuf> = [repo().join("README.md"), repo().join("SECURITY.md")]
        .into_iter()
        .chain(pages())
        .collect();
    let mut checked = 0;
    for file in &files {
        let (own, links) = parse(&std::fs::read_to_string(file).unwrap());
        for link in links {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = link
                .split_once('#')
                .map_or((link.as_str(), None), |(p, a)| (p, Some(a)));
            let target: PathBuf = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            assert!(
                target.exists(),
                "{}: the link {link:?} names {}, which does not exist",
                file.display(),
                target.display()
            );
            if let Some(anchor) = anchor {
                let anchors = if path.is_empty() {
                    own.clone()
                } else {
                    parse(&std::fs::read_to_string(&target).unwrap()).0
                };
                assert!(
                    anchors.contains(anchor),
                    "{}: the link {link:?}: {} has no heading #{anchor}",
                    file.display(),
                    target.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 50, "{checked} links");
}

/// The README's test command is what .ci/run runs (setup, builds, then the tests).
#[test]
fn the_readmes_test_command_is_ci_s() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let ci = std::fs::read_to_string(repo().join(".ci/run")).unwrap();
    let command = readme
        .lines()
        .find(|l| l.starts_with("scripts/setup --tests"))
        .expect("the README's test command");
    let steps: Vec<&str> = command.split(" && ").collect();
    for step in &steps {
        assert!(
            ci.lines().any(|l| l.trim() == *step),
            ".ci/run does not run {step:?}"
        );
    }
    assert_eq!(steps.last(), Some(&"cargo test --locked"));
}
