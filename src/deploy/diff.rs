//! `deploy --dry-run --diff`: for every file a deploy would change, a unified diff of what the
//! node has against what would be placed. Both sides are masked the same way
//! (`render::mask_secrets`; the node's side on the node), so no key reaches the diff; a file
//! that is a private key is named, never shown. Certificates are public: each is shown as a
//! line of what it is (`pki::describe_certificates`), so a renewal's diff names the serials.

use serde::Serialize;

use super::Ctx;
use crate::pki::describe_certificates;
use crate::plan::ChangeKind;
use crate::render::mask_secrets;

#[derive(Debug, Clone, Serialize)]
pub struct FileDiff {
    pub path: String,
    /// Unified diff (`--- node`, `+++ hardway`), or why there is none.
    pub diff: String,
}

fn is_private_key(text: &str) -> bool {
    text.lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.contains("PRIVATE KEY"))
        && !text.contains("apiVersion")
}

/// Every changed file's diff, per host, read from the nodes in one round trip each.
pub(crate) async fn collect(ctx: &mut Ctx) -> std::collections::BTreeMap<String, Vec<FileDiff>> {
    ctx.each_host(|h| {
        if !h.alive() {
            return;
        }
        let updates: Vec<String> = h
            .plan()
            .changes
            .iter()
            .filter(|c| {
                c.kind == ChangeKind::Update
                    && std::str::from_utf8(&c.file.contents).is_ok_and(|t| !is_private_key(t))
            })
            .map(|c| c.path.clone())
            .collect();
        let theirs = match h.remote().read_masked(&updates) {
            Ok(t) => t,
            Err(e) => {
                h.diffs = vec![FileDiff {
                    path: "*".into(),
                    diff: format!("cannot read the node's files: {e}"),
                }];
                return;
            }
        };
        let mut diffs = Vec::new();
        for c in &h.plan().changes {
            let Ok(ours) = std::str::from_utf8(&c.file.contents) else {
                diffs.push(FileDiff {
                    path: c.path.clone(),
                    diff: format!("binary, {} bytes", c.file.contents.len()),
                });
                continue;
            };
            let diff = if is_private_key(ours) {
                "private key: not shown".to_string()
            } else if c.kind == ChangeKind::Metadata {
                format!("same contents; mode {:o} root:root", c.file.mode)
            } else {
                let old = theirs.get(&c.path).cloned().flatten().unwrap_or_default();
                let (old, new) = (
                    describe_certificates(&old),
                    describe_certificates(&mask_secrets(ours)),
                );
                similar::TextDiff::from_lines(&old, &new)
                    .unified_diff()
                    .context_radius(2)
                    .header("node", "hardway")
                    .to_string()
            };
            diffs.push(FileDiff {
                path: c.path.clone(),
                diff,
            });
        }
        h.diffs = diffs;
    })
    .await;
    ctx.hosts
        .iter()
        .filter(|h| !h.diffs.is_empty())
        .map(|h| (h.node.name.clone(), h.diffs.clone()))
        .collect()
}
