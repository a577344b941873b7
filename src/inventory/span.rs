//! Where a field is in the inventory text: the line and column every problem is reported at.
//!
//! Serde's structs forget positions, so the same text is also parsed with `toml_edit`, which
//! keeps a byte span for every key and value. Validation names fields by dotted path
//! (`nodes[2].roles[0]`); [`span_of`] finds that path's span, [`path_at`] goes the other way for
//! serde's own errors, which only carry a byte offset.

use std::ops::Range;

use toml_edit::{Document, Item};

/// 1-based line and column (in characters, as editors count) of a byte offset.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

/// Finds the dotted path of the innermost key or value whose span covers `offset`.
pub(super) fn path_at(doc: &Document<&str>, offset: usize) -> String {
    fn walk(item: &Item, prefix: &str, offset: usize, best: &mut Option<String>) {
        let covers = |span: Option<Range<usize>>| span.is_some_and(|s| s.contains(&offset));
        if let Some(t) = item.as_table_like() {
            for (k, v) in t.iter() {
                let p = if prefix.is_empty() {
                    k.to_string()
                } else {
                    format!("{prefix}.{k}")
                };
                if covers(t.get_key_value(k).and_then(|(k, _)| k.span())) || covers(v.span()) {
                    *best = Some(p.clone());
                }
                walk(v, &p, offset, best);
            }
        } else if let Item::ArrayOfTables(a) = item {
            for (i, t) in a.iter().enumerate() {
                let p = format!("{prefix}[{i}]");
                if covers(t.span()) {
                    *best = Some(p.clone());
                }
                walk(&Item::Table(t.clone()), &p, offset, best);
            }
        }
    }
    let mut best = None;
    walk(doc.as_item(), "", offset, &mut best);
    best.unwrap_or_default()
}

/// Looks up a dotted path like `nodes[2].roles[0]` in the parsed document and returns the span
/// of the deepest part of it that exists, so a key left out (a default that is wrong) points at
/// its table rather than nowhere.
pub(super) fn span_of(doc: &Document<&str>, field: &str) -> Option<Range<usize>> {
    let mut item: &Item = doc.as_item();
    let mut span = None;
    for seg in field.split('.') {
        let (key, index) = match seg.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (seg, None),
        };
        let key_span = item
            .as_table_like()
            .and_then(|t| t.get_key_value(key))
            .and_then(|(k, _)| k.span());
        let Some(next) = item.get(key) else { break };
        item = next;
        span = item.span().or(key_span).or(span);
        if let Some(i) = index {
            let Some(next) = item.get(i) else { break };
            item = next;
            span = item.span().or(span);
        }
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[cluster]\nname = \"x\"\n\n[[nodes]]\nroles = [\"master\", \"wroker\"]\n";

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("a\nbc\n", 0), (1, 1));
        assert_eq!(line_col("a\nbc\n", 3), (2, 2));
    }

    #[test]
    fn paths_and_spans_find_each_other() {
        let doc = Document::parse(TEXT).unwrap();
        let span = span_of(&doc, "nodes[0].roles[1]").unwrap();
        assert_eq!(&TEXT[span.clone()], "\"wroker\"");
        assert_eq!(line_col(TEXT, span.start), (5, 20));
        assert_eq!(path_at(&doc, span.start), "nodes[0].roles");
        // A key that is not there points at the deepest part that is.
        assert_eq!(
            span_of(&doc, "cluster.name.nope"),
            span_of(&doc, "cluster.name")
        );
    }
}
