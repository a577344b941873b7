//! `[binaries]`: where the executables go on the nodes, and where deploy gets them — a local
//! directory, or release archives from upstream or a mirror of its layout, at the versions the
//! Kubernetes minor pins (`versions::Pins`) or `[binaries.versions]` names.

use crate::inventory::raw::{RawBinaries, RawBinaryVersions, RawCni, RawContainerd, RawInventory};
use crate::inventory::validator::Validator;
use crate::inventory::values::{self, PATH_RULE, remote_dir_fault};
use crate::inventory::{
    Arch, Binaries, ContainerdVersion, Installer, Inventory, Node, ReleaseSource,
};
use crate::versions::{Pins, Version};

const UPSTREAM: &str = "upstream";
/// Where upstream's CNI plugin tarball suggests its plugins go (Debian's package uses
/// /usr/lib/cni, the default without a release source).
const RELEASE_CNI_BIN_DIR: &str = "/opt/cni/bin";

/// `1.2.3`, digits only (a leading `v` dropped), as the release archives' names spell versions.
fn release_version(s: &str) -> Option<String> {
    let v = s.strip_prefix('v').unwrap_or(s);
    let parts: Vec<&str> = v.split('.').collect();
    (parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())))
    .then(|| v.to_string())
}

impl Validator<'_> {
    pub(super) fn binaries(
        &mut self,
        b: &RawBinaries,
        version: Option<Version>,
        dir: &std::path::Path,
    ) -> Binaries {
        let remote_dir = b
            .remote_dir
            .clone()
            .unwrap_or_else(|| "/usr/local/bin".into());
        if let Some(fault) = remote_dir_fault(&remote_dir) {
            self.error(
                "binaries.remote_dir",
                format!(
                    "{remote_dir:?} cannot be the directory of the binaries on the nodes: {fault} (allowed: {PATH_RULE}; \
                     it goes unquoted into every unit's ExecStart= line)"
                ),
            );
        }
        let mut local_dir = b.local_dir.as_deref().map(values::expand_home);
        let bundle = b
            .bundle
            .as_deref()
            .map(|f| dir.join(values::expand_home(f)));
        if let Some(other) = [
            ("source", b.source.is_some()),
            ("local_dir", b.local_dir.is_some()),
        ]
        .iter()
        .find(|o| o.1)
        .filter(|_| bundle.is_some())
        {
            self.error(
                "binaries.bundle",
                format!("binaries.bundle and binaries.{} both say where the binaries come from: keep one", other.0),
            );
        }
        if let Some(f) = &bundle
            && !f.is_file()
        {
            self.error(
                "binaries.bundle",
                format!("{}: no such file (`hardway bundle` makes one)", f.display()),
            );
        }
        let mut mirror = None;
        let from_release = match b.source.as_deref() {
            None => false,
            Some(_) if b.local_dir.is_some() => {
                self.error(
                    "binaries.source",
                    "binaries.source and binaries.local_dir both say where the binaries come from: keep one \
                     (source = \"/a/directory\" is the same as local_dir)",
                );
                false
            }
            Some(UPSTREAM) => true,
            Some(url) if url.starts_with("https://") || url.starts_with("http://") => {
                let base = url.trim_end_matches('/');
                if base.contains(char::is_whitespace)
                    || base.split("://").nth(1).is_none_or(str::is_empty)
                {
                    self.error(
                        "binaries.source",
                        format!("{url:?} is not a mirror URL like \"https://mirror.example/k8s\""),
                    );
                }
                mirror = Some(base.to_string());
                true
            }
            Some("") => {
                self.error(
                    "binaries.source",
                    "it is empty: \"upstream\", a mirror's http(s) URL or a local directory",
                );
                false
            }
            Some(dir) => {
                local_dir = Some(values::expand_home(dir));
                false
            }
        };
        let arch = match b.arch.as_deref() {
            None => Some(Arch::Amd64),
            Some(a) => Arch::parse(a).or_else(|| {
                let names: Vec<&str> = Arch::ALL.iter().map(|a| a.name()).collect();
                self.error(
                    "binaries.arch",
                    format!(
                        "{a:?} is not an architecture upstream publishes binaries for ({})",
                        names.join(", ")
                    ),
                );
                None
            }),
        };
        if !from_release && bundle.is_none() {
            if b.arch.is_some() {
                self.error("binaries.arch", "it applies to release archives only: set binaries.source = \"upstream\" or a mirror's URL");
            }
            if versions_given(&b.versions) {
                self.error("binaries.versions", "it applies to release archives only: set binaries.source = \"upstream\" or a mirror's URL");
            }
        }
        let pins = version
            .and_then(|v| v.supported())
            .map(|m| self.pins(&m.pins, &b.versions));
        let release = match (from_release, arch, pins) {
            (true, Some(arch), Some(Some(pins))) => Some(ReleaseSource { mirror, arch, pins }),
            _ => None,
        };
        Binaries {
            remote_dir,
            local_dir,
            release,
            bundle,
        }
    }

    /// Each node's `install`, else `[binaries] install`: "apt" or "none".
    pub(super) fn installers(&mut self, nodes: &mut [Node], raw: &RawInventory) {
        let mut parse = |field: &str, v: Option<&str>| match v {
            None | Some("none") => None,
            Some("apt") => Some(Installer::Apt),
            Some(other) => {
                self.error(
                    field,
                    format!("{other:?} is not a way to install packages: \"apt\" or \"none\""),
                );
                None
            }
        };
        let default = parse("binaries.install", raw.binaries.install.as_deref());
        for (i, r) in raw.nodes.iter().enumerate() {
            let own = r
                .install
                .as_deref()
                .map(|v| parse(&format!("nodes[{i}].install"), Some(v)));
            if let Some(node) = nodes.iter_mut().find(|n| n.name == r.name) {
                node.install = own.unwrap_or(default);
            }
        }
    }

    /// The minor's pins with `[binaries.versions]` over them; `None` when one does not parse.
    fn pins(&mut self, table: &Pins, over: &RawBinaryVersions) -> Option<Pins<String>> {
        let mut pins = table.owned();
        let mut ok = true;
        for (key, given, slot) in [
            ("containerd", &over.containerd, &mut pins.containerd),
            ("runc", &over.runc, &mut pins.runc),
            ("cni_plugins", &over.cni_plugins, &mut pins.cni_plugins),
            ("crictl", &over.crictl, &mut pins.crictl),
            ("etcd", &over.etcd, &mut pins.etcd),
        ] {
            let Some(given) = given else { continue };
            match release_version(given) {
                Some(v) => *slot = v,
                None => {
                    self.error(
                        &format!("binaries.versions.{key}"),
                        format!("{given:?} is not a release like \"1.2.3\""),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(pins)
    }

    /// With a release source (or a bundle, made from one) the runtime's defaults are the
    /// release's: containerd's config format follows the containerd it fetches (a different
    /// `containerd.version` is refused; a bundle's is checked when it is opened), and containerd
    /// and the CNI plugins go where upstream's archives suggest, not over a distribution
    /// package's files.
    pub(super) fn release_runtime(
        &mut self,
        inv: &mut Inventory,
        containerd: &RawContainerd,
        cni: &RawCni,
    ) {
        if inv.binaries.release.is_none() && inv.binaries.bundle.is_none() {
            return;
        }
        if let Some(release) = &inv.binaries.release
            && let Some(fetched) = ContainerdVersion::parse(&release.pins.containerd)
        {
            if containerd.version.is_none() {
                inv.containerd.version = fetched;
            } else if inv.containerd.version != fetched {
                self.error(
                    "containerd.version",
                    format!(
                        "{} is not the containerd the release source fetches ({}, binaries.versions.containerd or the \
                         Kubernetes minor's pin): drop containerd.version or make them agree",
                        inv.containerd.version, release.pins.containerd
                    ),
                );
            }
        }
        if containerd.bin_dir.is_none() {
            inv.containerd.bin_dir = inv.binaries.remote_dir.clone();
        }
        if cni.bin_dir.is_none() {
            inv.cni.bin_dir = RELEASE_CNI_BIN_DIR.into();
        }
    }
}

fn versions_given(v: &RawBinaryVersions) -> bool {
    [&v.containerd, &v.runc, &v.cni_plugins, &v.crictl, &v.etcd]
        .iter()
        .any(|v| v.is_some())
}
