//! The syntax of single inventory values, each judged on its own.
//!
//! Many values end up verbatim in rendered files: systemd units (`ExecStart=` takes the binary
//! directory, where a newline starts a new directive and `%` is a specifier), YAML, HAProxy's
//! configuration, `/etc/hosts`, certificate SANs. Rather than escape a value for each of those
//! syntaxes, the inventory admits only values that need no escaping in any of them: DNS names
//! of lowercase labels, plain paths, dotted version numbers. Each check says *why* a value is
//! refused, so the message can name the offending character or label.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;

/// What a DNS label may be, for messages.
pub(super) const LABEL_RULE: &str =
    "1-63 lowercase letters, digits or '-', starting and ending with a letter or digit";

/// What a DNS name may be, for messages.
pub(super) const NAME_RULE: &str = "dot-separated labels of 1-63 lowercase letters, digits or '-', each starting and ending with a letter or digit; \
     at most 253 characters";

/// What `binaries.remote_dir` may be, for messages.
pub(super) const PATH_RULE: &str = "an absolute path of letters, digits and . _ / + -";

/// RFC 1123 label, lowercase as Kubernetes node names must be.
pub fn is_dns_label(s: &str) -> bool {
    label_fault(s).is_none()
}

/// A character as a person would name it in a message (control characters are invisible).
pub(crate) fn describe(c: char) -> String {
    match c {
        '\n' => "a newline".into(),
        '\r' => "a carriage return".into(),
        '\t' => "a tab".into(),
        ' ' => "a space".into(),
        c if c.is_control() => format!("the control character {c:?}"),
        c => format!("{c:?}"),
    }
}

/// Why `s` is not an RFC 1123 label, lowercase; `None` when it is one.
pub(super) fn label_fault(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("it is empty".into());
    }
    if s.len() > 63 {
        return Some(format!("it is {} characters long", s.len()));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Some(if c.is_ascii_uppercase() {
            format!("it contains the uppercase letter {c:?}")
        } else {
            format!("it contains {}", describe(c))
        });
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Some("it starts or ends with '-'".into());
    }
    None
}

/// Why `s` is not a DNS name of lowercase labels (no trailing dot); `None` when it is one.
pub(super) fn name_fault(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("it is empty".into());
    }
    if s.len() > 253 {
        return Some(format!("it is {} characters long", s.len()));
    }
    s.split('.').find_map(|label| {
        if label.is_empty() {
            Some("it has an empty label (a leading, trailing or doubled '.')".to_string())
        } else {
            label_fault(label).map(|fault| format!("label {label:?}: {fault}"))
        }
    })
}

/// Why `s` cannot be `binaries.remote_dir`; `None` when it can.
///
/// The directory goes unquoted into every unit's `ExecStart=`: a space splits the command, a
/// newline adds directives, `%` is a systemd specifier, quotes and `\` are unit-file escapes, `$`
/// expands variables. None of those belongs in a binary directory, so only plain path
/// characters are allowed.
pub(super) fn remote_dir_fault(s: &str) -> Option<String> {
    if !s.starts_with('/') {
        return Some("it is not an absolute path".into());
    }
    let plain = |c: char| c.is_ascii_alphanumeric() || "._/+-".contains(c);
    s.chars()
        .find(|c| !plain(*c))
        .map(|c| format!("it contains {}", describe(c)))
}

/// A MetalLB pool entry as an inclusive IPv4 range, and the entry rewritten as MetalLB reads it
/// (`a-b`, or a CIDR without host bits).
///
/// The rewritten form is what goes into the pool manifest: it has no whitespace, so spacing the
/// user put around `-` (even a newline) cannot leak into the YAML.
pub(super) fn parse_pool(s: &str) -> Option<(u32, u32, String)> {
    if let Some((a, b)) = s.split_once('-') {
        let a: Ipv4Addr = a.trim().parse().ok()?;
        let b: Ipv4Addr = b.trim().parse().ok()?;
        return Some((u32::from(a), u32::from(b), format!("{a}-{b}")));
    }
    let net: Ipv4Net = s.trim().parse().ok()?;
    Some((
        u32::from(net.network()),
        u32::from(net.broadcast()),
        net.trunc().to_string(),
    ))
}

/// `~/x` → `$HOME/x`. Other paths stay as written: relative ones are relative to the directory
/// hardway runs in, as users expect of paths they type.
pub(super) fn expand_home(p: &str) -> PathBuf {
    if let Some(rest) = p.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    PathBuf::from(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        assert!(is_dns_label("kmaster1"));
        assert!(!is_dns_label("KMaster"));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label(""));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert_eq!(label_fault("k_1").as_deref(), Some("it contains '_'"));
        assert_eq!(
            label_fault("a\nb").as_deref(),
            Some("it contains a newline")
        );
    }

    #[test]
    fn dns_names() {
        assert_eq!(name_fault("cluster.local"), None);
        assert_eq!(
            name_fault("Cluster.local").as_deref(),
            Some("label \"Cluster\": it contains the uppercase letter 'C'")
        );
        assert!(
            name_fault("cluster.local.")
                .unwrap()
                .contains("empty label")
        );
        assert!(name_fault("").is_some());
        assert!(
            name_fault(&format!("{}.x", vec!["a".repeat(63); 4].join(".")))
                .unwrap()
                .contains("characters long")
        );
    }

    #[test]
    fn remote_dirs() {
        assert_eq!(remote_dir_fault("/usr/local/bin"), None);
        assert_eq!(remote_dir_fault("/opt/k8s-1.31/bin_x+y"), None);
        assert!(remote_dir_fault("usr/bin").unwrap().contains("absolute"));
        assert_eq!(
            remote_dir_fault("/usr/bin ").as_deref(),
            Some("it contains a space")
        );
        assert_eq!(remote_dir_fault("/a%b").as_deref(), Some("it contains '%'"));
    }

    #[test]
    fn pools_parse_ranges_and_cidrs() {
        assert_eq!(
            parse_pool("10.0.0.1-10.0.0.3"),
            Some((0x0a000001, 0x0a000003, "10.0.0.1-10.0.0.3".into()))
        );
        assert_eq!(
            parse_pool("10.0.0.1 -\n10.0.0.3"),
            Some((0x0a000001, 0x0a000003, "10.0.0.1-10.0.0.3".into()))
        );
        assert_eq!(
            parse_pool("10.0.0.0/30"),
            Some((0x0a000000, 0x0a000003, "10.0.0.0/30".into()))
        );
        assert_eq!(parse_pool("nonsense"), None);
    }
}
