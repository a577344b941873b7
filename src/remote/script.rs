//! Shell scripts for the nodes, built with every value quoted, and the one parser for their
//! answers.
//!
//! A script that asks several things prints each answer under a section header line
//! (`@@hardway:NAME`); [`Sections`] splits the output at those lines. Every value that comes
//! from outside (paths, unit names, file contents) goes through [`quote`]: single quotes, with
//! embedded ones closed, escaped and reopened, which `sh` reads back byte for byte.

use std::collections::BTreeMap;

/// The header line that starts a section of a script's output.
const MARK: &str = "@@hardway:";

/// Single-quotes a string for `sh`.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Quotes each of `words` and joins them with spaces.
pub fn quote_all<'a>(words: impl IntoIterator<Item = &'a str>) -> String {
    words.into_iter().map(quote).collect::<Vec<_>>().join(" ")
}

/// A script under construction. Starts in the C locale, so tools print what the parsers expect.
/// Keeps a second, redacted text for logs, where [`Script::secret`] lines are replaced.
#[derive(Debug, Clone)]
pub struct Script {
    text: String,
    redacted: String,
}

impl Default for Script {
    fn default() -> Self {
        Script::new()
    }
}

impl Script {
    pub fn new() -> Script {
        Script {
            text: String::from("export LC_ALL=C\n"),
            redacted: String::from("export LC_ALL=C\n"),
        }
    }

    /// A script that stops at the first failing command.
    pub fn strict() -> Script {
        let mut s = Script::new();
        s.raw("set -e");
        s
    }

    /// Starts a section of the output named `name` (no white space in it).
    pub fn section(&mut self, name: &str) -> &mut Self {
        debug_assert!(
            !name.contains(char::is_whitespace),
            "section names are one word"
        );
        self.raw(&format!("echo {}", quote(&format!("{MARK}{name}"))))
    }

    /// A command whose every word is quoted: `cmd(&["systemctl", "restart", unit])`.
    pub fn cmd(&mut self, words: &[&str]) -> &mut Self {
        self.raw(&quote_all(words.iter().copied()))
    }

    /// A line of shell as written. Callers quote every value in it with [`quote`].
    pub fn raw(&mut self, line: &str) -> &mut Self {
        self.secret(line, line)
    }

    /// A line that carries secret data: it runs as `line`, and logs show `shown` instead.
    pub fn secret(&mut self, line: &str, shown: &str) -> &mut Self {
        for (buf, l) in [(&mut self.text, line), (&mut self.redacted, shown)] {
            buf.push_str(l);
            if !l.ends_with('\n') {
                buf.push('\n');
            }
        }
        self
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The script as logs show it.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }
}

/// A script's output split into its sections, each the lines after its header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sections(BTreeMap<String, Vec<String>>);

impl Sections {
    pub fn parse(stdout: &str) -> Sections {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut current: Option<String> = None;
        for line in stdout.lines() {
            if let Some(name) = line.strip_prefix(MARK) {
                current = Some(name.to_string());
                map.entry(name.to_string()).or_default();
            } else if let Some(c) = &current {
                map.entry(c.clone()).or_default().push(line.to_string());
            }
        }
        Sections(map)
    }

    /// The section's lines; none when the script never reached it.
    pub fn lines(&self, name: &str) -> &[String] {
        self.0.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The section's text, lines joined with newlines (a trailing one each).
    pub fn text(&self, name: &str) -> String {
        self.lines(name).iter().map(|l| format!("{l}\n")).collect()
    }

    /// The first line, trimmed.
    pub fn first(&self, name: &str) -> Option<&str> {
        self.lines(name).first().map(|l| l.trim())
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes_and_newlines() {
        assert_eq!(quote("a'b"), r"'a'\''b'");
        assert_eq!(quote_all(["x y", "z"]), "'x y' 'z'");
    }

    #[test]
    fn sections_split_at_headers_and_ignore_what_comes_before() {
        let s = Sections::parse("noise\n@@hardway:a\n1\n2\n@@hardway:b\n@@hardway:c\nx\n");
        assert_eq!(s.lines("a"), ["1", "2"]);
        assert!(s.has("b") && s.lines("b").is_empty());
        assert_eq!(s.first("c"), Some("x"));
        assert!(!s.has("noise") && !s.has("d"));
        assert_eq!(s.text("a"), "1\n2\n");
    }

    #[test]
    fn secret_lines_run_but_are_not_shown() {
        let mut s = Script::new();
        s.secret(
            "printf '%s' 'KEY-MATERIAL' > /x",
            "printf '%s' <12 bytes> > /x",
        )
        .raw("echo done");
        assert!(s.text().contains("KEY-MATERIAL") && !s.redacted().contains("KEY-MATERIAL"));
        assert!(
            s.redacted()
                .ends_with("printf '%s' <12 bytes> > /x\necho done\n"),
            "{}",
            s.redacted()
        );
    }

    #[test]
    fn a_script_runs_in_sh_and_its_sections_come_back() {
        // The builder's output is valid sh: run it and parse what it prints.
        let mut s = Script::strict();
        s.section("greeting")
            .cmd(&["printf", "%s\\n", "it's a \"value\"", "$HOME"]);
        s.section("empty");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(s.text())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sec = Sections::parse(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(sec.lines("greeting"), ["it's a \"value\"", "$HOME"]);
        assert!(sec.has("empty"));
    }
}
