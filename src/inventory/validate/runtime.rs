//! `[containerd]`, `[cni]` and `[lab]`: the container runtime and the CNI plugins on the
//! workers, and the Debian release of the local lab. Their values reach rendered files
//! unquoted (unit `ExecStart=` lines, CNI paths) or inside TOML strings (containerd's config),
//! so each is checked for those syntaxes; defaults are where Debian's packages put things.

use crate::inventory::raw::{RawCni, RawContainerd, RawLab};
use crate::inventory::validator::Validator;
use crate::inventory::values::{PATH_RULE, describe, remote_dir_fault};
use crate::inventory::{Cni, Containerd, ContainerdVersion, LabSettings, LabSoftware, LabSuite};
use crate::versions::Minor;

/// The oldest containerd line that every supported Kubernetes minor accepts (1.37 needs 2.3 or
/// later, containerd's RELEASES.md; 2.3 is its long-term support line); Debian's trixie (1.7)
/// and sid (2.1) need it set.
pub(crate) const DEFAULT_CONTAINERD_VERSION: ContainerdVersion =
    ContainerdVersion { major: 2, minor: 3 };
/// Debian's and Ubuntu's `containerd` package.
const DEFAULT_CONTAINERD_BIN_DIR: &str = "/usr/bin";
/// Debian's `containernetworking-plugins` (upstream's tarball suggests /opt/cni/bin).
const DEFAULT_CNI_BIN_DIR: &str = "/usr/lib/cni";
const DEFAULT_CNI_CONF_DIR: &str = "/etc/cni/net.d";

/// The oldest and the newest major.minor hardway renders a config for.
const OLDEST_CONTAINERD: ContainerdVersion = ContainerdVersion { major: 1, minor: 7 };
const NEWEST_CONTAINERD_MAJOR: u32 = 2;

/// Why `s` cannot be an image reference in containerd's config; `None` when it can. It goes
/// into a TOML string, and the CRI plugin parses it as `[registry/]path[:tag][@digest]`.
fn image_fault(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("it is empty".into());
    }
    let plain = |c: char| c.is_ascii_alphanumeric() || "._-/:@".contains(c);
    if let Some(c) = s.chars().find(|c| !plain(*c)) {
        return Some(format!("it contains {}", describe(c)));
    }
    (!s.starts_with(|c: char| c.is_ascii_alphanumeric()))
        .then(|| "it does not start with a letter or digit".into())
}

impl Validator<'_> {
    /// The sandbox image defaults to the pause release pinned for the cluster's `minor`.
    pub(super) fn containerd(&mut self, c: &RawContainerd, minor: &Minor) -> Option<Containerd> {
        let version = match c.version.as_deref() {
            None => Some(DEFAULT_CONTAINERD_VERSION),
            Some(s) => self.containerd_version(s),
        };
        let bin_dir = self.path(
            "containerd.bin_dir",
            c.bin_dir.as_deref().unwrap_or(DEFAULT_CONTAINERD_BIN_DIR),
        );
        let pause = minor.pins.pause_image();
        let sandbox_image = c.sandbox_image.clone().unwrap_or_else(|| pause.clone());
        if let Some(fault) = image_fault(&sandbox_image) {
            self.error(
                "containerd.sandbox_image",
                format!("{sandbox_image:?} is not an image reference like {pause:?}: {fault}"),
            );
        }
        let restrict_oom_score_adj = c.restrict_oom_score_adj.unwrap_or(false);
        Some(Containerd {
            version: version?,
            bin_dir,
            sandbox_image,
            restrict_oom_score_adj,
        })
    }

    fn containerd_version(&mut self, s: &str) -> Option<ContainerdVersion> {
        const FIELD: &str = "containerd.version";
        let Some(v) = ContainerdVersion::parse(s) else {
            self.error(FIELD, format!("{s:?} is not a containerd version like \"2.1\" (major.minor, optionally .patch)"));
            return None;
        };
        if v < OLDEST_CONTAINERD {
            self.error(
                FIELD,
                format!(
                    "containerd {v} is not supported: hardway renders the config of containerd {OLDEST_CONTAINERD} \
                     (config version 2) and 2.x (version 3); 1.6 and older are end of life"
                ),
            );
            return None;
        }
        if v.major > NEWEST_CONTAINERD_MAJOR {
            self.error(FIELD, format!("containerd {v} is newer than any hardway knows (1.7 and 2.x): its config format is unknown"));
            return None;
        }
        Some(v)
    }

    pub(super) fn cni(&mut self, c: &RawCni) -> Cni {
        Cni {
            bin_dir: self.path(
                "cni.bin_dir",
                c.bin_dir.as_deref().unwrap_or(DEFAULT_CNI_BIN_DIR),
            ),
            conf_dir: self.path(
                "cni.conf_dir",
                c.conf_dir.as_deref().unwrap_or(DEFAULT_CNI_CONF_DIR),
            ),
        }
    }

    pub(super) fn lab(&mut self, l: &RawLab) -> Option<LabSettings> {
        let software = match l.software.as_deref() {
            None => LabSoftware::default(),
            Some(s) => match LabSoftware::parse(s) {
                Some(v) => v,
                None => {
                    let known: Vec<&str> = LabSoftware::ALL.iter().map(|s| s.as_str()).collect();
                    self.error(
                        "lab.software",
                        format!(
                            "unknown root fs {s:?} (the lab builds {})",
                            known.join(", ")
                        ),
                    );
                    return None;
                }
            },
        };
        let Some(name) = &l.suite else {
            return Some(LabSettings {
                software,
                ..LabSettings::default()
            });
        };
        let Some(suite) = LabSuite::parse(name) else {
            let known: Vec<&str> = LabSuite::ALL.iter().map(|s| s.as_str()).collect();
            self.error(
                "lab.suite",
                format!(
                    "unknown suite {name:?} (the lab builds {})",
                    known.join(", ")
                ),
            );
            return None;
        };
        if suite == LabSuite::Bookworm {
            self.warn(
                "lab.suite",
                "bookworm's etcd 3.4 is end of life and its containerd 1.6 older than hardway supports; \
                 trixie is Debian's stable release",
            );
        }
        Some(LabSettings {
            suite,
            software,
            ..LabSettings::default()
        })
    }

    /// A directory on the nodes, as written (it goes into units and configs unquoted).
    fn path(&mut self, field: &str, dir: &str) -> String {
        if let Some(fault) = remote_dir_fault(dir) {
            self.error(
                field,
                format!(
                    "{dir:?} cannot be a directory on the nodes: {fault} (allowed: {PATH_RULE})"
                ),
            );
        }
        match dir.trim_end_matches('/') {
            "" => "/".to_string(),
            trimmed => trimmed.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_versions() {
        let v = |major, minor| Some(ContainerdVersion { major, minor });
        assert_eq!(ContainerdVersion::parse("2.1"), v(2, 1));
        assert_eq!(ContainerdVersion::parse("v1.7.24"), v(1, 7));
        assert_eq!(ContainerdVersion::parse("2"), None);
        assert_eq!(ContainerdVersion::parse("2.1.9+ds1"), None);
        assert_eq!(ContainerdVersion::parse("2.+1"), None);
        assert_eq!(ContainerdVersion::parse("2.1.0.1"), None);
    }

    #[test]
    fn config_format_follows_the_version() {
        let v = |s| ContainerdVersion::parse(s).unwrap();
        assert_eq!(
            (
                v("1.7").config_version(),
                v("2.0").config_version(),
                v("2.2").config_version()
            ),
            (2, 3, 3)
        );
        assert!(
            !v("2.0").has_cni_bin_dirs()
                && v("2.1").has_cni_bin_dirs()
                && !v("1.7").has_cni_bin_dirs()
        );
    }

    #[test]
    fn image_references() {
        assert_eq!(image_fault("registry.k8s.io/pause:3.10.1"), None);
        assert_eq!(image_fault("pause@sha256:0123abcd"), None);
        assert_eq!(image_fault("pause\" x"), Some("it contains '\"'".into()));
        assert_eq!(
            image_fault(":3.10"),
            Some("it does not start with a letter or digit".into())
        );
    }
}
