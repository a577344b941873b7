//! The Kubernetes versions hardway supports, and what each of them accepts, as data.
//!
//! Kubernetes supports its three newest minors; in November 2026 those are 1.35, 1.36 and 1.37.
//! For each, [`SUPPORTED`] holds the newest patch release known, the containerd and etcd releases
//! that go with it, and — embedded from `data/kubernetes/<minor>/` — the command-line flags of
//! kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kube-proxy and the field
//! paths of the config types hardway renders. Every data file names its upstream source in its
//! header; the lists were checked against upstream's published references and release notes, not
//! against running binaries (none can be fetched here).
//!
//! The inventory checks `extra_args` against these lists; the integration tests check every flag
//! and config field the templates render, for every supported minor.

use std::fmt;

use crate::components::ComponentId;

/// A Kubernetes release, `1.<minor>.<patch>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Version {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// `1.N.P`, digits only, a leading `v` tolerated; `None` for anything else (`1.35`,
    /// `1.35.0-rc.1`, `2.0.0`: Kubernetes 2 does not exist, and pre-releases are not supported).
    pub fn parse(s: &str) -> Option<Version> {
        let v = s.strip_prefix('v').unwrap_or(s);
        // `parse::<u32>` alone would let "+1" through; every part must be plain digits.
        let number = |p: &str| {
            (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<u32>().ok())
                .flatten()
        };
        let mut parts = v.split('.');
        let (major, minor, patch) = (
            number(parts.next()?)?,
            number(parts.next()?)?,
            number(parts.next()?)?,
        );
        (parts.next().is_none() && major == 1).then_some(Version {
            major,
            minor,
            patch,
        })
    }

    /// The supported minor this release belongs to, if it is one.
    pub fn supported(self) -> Option<&'static Minor> {
        SUPPORTED
            .iter()
            .find(|m| m.version.major == self.major && m.version.minor == self.minor)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A containerd release line and the first patch of it a Kubernetes minor works with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleaseMin {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl fmt::Display for ReleaseMin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}+", self.major, self.minor, self.patch)
    }
}

/// A config file type hardway renders, with its own field list per minor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigType {
    Kubelet,
    KubeProxy,
    KubeScheduler,
}

impl ConfigType {
    pub const ALL: [ConfigType; 3] = [
        ConfigType::Kubelet,
        ConfigType::KubeProxy,
        ConfigType::KubeScheduler,
    ];

    pub fn kind(self) -> &'static str {
        match self {
            ConfigType::Kubelet => "KubeletConfiguration",
            ConfigType::KubeProxy => "KubeProxyConfiguration",
            ConfigType::KubeScheduler => "KubeSchedulerConfiguration",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            ConfigType::Kubelet => "kubelet.config.k8s.io/v1beta1",
            ConfigType::KubeProxy => "kubeproxy.config.k8s.io/v1alpha1",
            ConfigType::KubeScheduler => "kubescheduler.config.k8s.io/v1",
        }
    }

    pub fn by_kind(kind: &str) -> Option<ConfigType> {
        ConfigType::ALL.into_iter().find(|c| c.kind() == kind)
    }

    /// The component that reads it.
    pub fn component(self) -> ComponentId {
        match self {
            ConfigType::Kubelet => ComponentId::Kubelet,
            ConfigType::KubeProxy => ComponentId::KubeProxy,
            ConfigType::KubeScheduler => ComponentId::KubeScheduler,
        }
    }

    /// The template hardway renders it from.
    pub fn template(self) -> &'static str {
        match self {
            ConfigType::Kubelet => "kubelet-config.yaml",
            ConfigType::KubeProxy => "kube-proxy-config.yaml",
            ConfigType::KubeScheduler => "kube-scheduler.yaml",
        }
    }

    /// The config types `[components.<name>] config` may add fields to: the per-node daemons'.
    pub const USER_FIELDS: [ConfigType; 2] = [ConfigType::Kubelet, ConfigType::KubeProxy];
}

/// What one supported minor is and accepts.
pub struct Minor {
    /// The newest patch release of this minor hardway knows of.
    pub version: Version,
    /// containerd: any of these lines, at least the given patch (containerd's RELEASES.md,
    /// "Kubernetes support" table).
    pub containerd: &'static [ReleaseMin],
    /// etcd: any of these lines, at least the given patch.
    pub etcd: &'static [ReleaseMin],
    /// The releases fetched for this minor when `[binaries] source` is upstream's or a mirror
    /// (`crate::releases`); the inventory's `[binaries.versions]` overrides each.
    pub pins: Pins,
    flags: &'static [(ComponentId, &'static str)],
    fields: &'static [(ConfigType, &'static str)],
}

/// A flag as its list has it: the name and whether the component ignores it beside `--config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag<'a> {
    pub name: &'a str,
    /// The reference says the flag "is ignored if a config file is specified" (`--config`).
    pub ignored_with_config: bool,
}

/// The data lines of an embedded list: comments (`#`) and blank lines skipped.
fn data_lines(text: &'static str) -> impl Iterator<Item = &'static str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// Kubernetes components normalise `_` to `-` in flag names (component-base's
/// `WordSepNormalizeFunc`), and kube-proxy's reference still lists klog's `log_dir` spellings.
fn same_flag(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .all(|(x, y)| x == y || ((x == b'_' || x == b'-') && (y == b'_' || y == b'-')))
}

impl Minor {
    /// `1.37`, as people name a minor.
    pub fn name(&self) -> String {
        format!("{}.{}", self.version.major, self.version.minor)
    }

    /// Every flag of `component`, in list order; empty for a component with no list.
    pub fn flags(&self, component: ComponentId) -> impl Iterator<Item = Flag<'static>> + '_ {
        self.flags
            .iter()
            .filter(move |(c, _)| *c == component)
            .flat_map(|(_, text)| data_lines(text))
            .map(|line| {
                let mut words = line.split_whitespace();
                let name = words.next().unwrap_or_default();
                Flag {
                    name,
                    ignored_with_config: words.any(|w| w == "ignored-with-config"),
                }
            })
    }

    /// `component`'s flag `name` (without `--`), if it has one in this minor.
    pub fn flag(&self, component: ComponentId, name: &str) -> Option<Flag<'static>> {
        self.flags(component).find(|f| same_flag(f.name, name))
    }

    /// Does this minor list flags for `component` at all?
    pub fn lists_flags_of(&self, component: ComponentId) -> bool {
        self.flags.iter().any(|(c, _)| *c == component)
    }

    /// Every field path of `config` (`authentication.anonymous.enabled`).
    pub fn fields(&self, config: ConfigType) -> impl Iterator<Item = &'static str> + '_ {
        self.fields
            .iter()
            .filter(move |(c, _)| *c == config)
            .flat_map(|(_, text)| data_lines(text))
    }

    pub fn has_field(&self, config: ConfigType, path: &str) -> bool {
        self.fields(config).any(|f| f == path)
    }
}

macro_rules! minor_data {
    ($dir:literal) => {
        (
            &[
                (
                    ComponentId::KubeApiserver,
                    include_str!(concat!(
                        "../data/kubernetes/",
                        $dir,
                        "/kube-apiserver.flags"
                    )),
                ),
                (
                    ComponentId::KubeControllerManager,
                    include_str!(concat!(
                        "../data/kubernetes/",
                        $dir,
                        "/kube-controller-manager.flags"
                    )),
                ),
                (
                    ComponentId::KubeScheduler,
                    include_str!(concat!(
                        "../data/kubernetes/",
                        $dir,
                        "/kube-scheduler.flags"
                    )),
                ),
                (
                    ComponentId::Kubelet,
                    include_str!(concat!("../data/kubernetes/", $dir, "/kubelet.flags")),
                ),
                (
                    ComponentId::KubeProxy,
                    include_str!(concat!("../data/kubernetes/", $dir, "/kube-proxy.flags")),
                ),
            ],
            &[
                (
                    ConfigType::Kubelet,
                    include_str!(concat!(
                        "../data/kubernetes/",
                        $dir,
                        "/KubeletConfiguration.fields"
                    )),
                ),
                (
                    ConfigType::KubeProxy,
                    include_str!(concat!(
                        "../data/kubernetes/",
                        $dir,
                        "/KubeProxyConfiguration.fields"
                    )),
                ),
                (
                    ConfigType::KubeScheduler,
                    include_str!(concat!(
                        "../data/kubernetes/",
                        $dir,
                        "/KubeSchedulerConfiguration.fields"
                    )),
                ),
            ],
        )
    };
}

const fn rel(major: u32, minor: u32, patch: u32) -> ReleaseMin {
    ReleaseMin {
        major,
        minor,
        patch,
    }
}

/// etcd for every supported minor: the website's "Operating etcd clusters for Kubernetes" page
/// (kubernetes/website's history in the Andygol/k8s-website fork, commit f5ce0d98, 2026-01) recommends 3.4.29+ or 3.5.11+; 3.4 is out of etcd's
/// own support, so hardway takes 3.5.11+ and 3.6 (what kubeadm installs for 1.34–1.36: 3.6.11,
/// CHANGELOG-1.37 alpha.1). 1.37's default of 3.7.0-rc.0 is a release candidate, not listed.
const ETCD: &[ReleaseMin] = &[rel(3, 5, 11), rel(3, 6, 0)];

/// The exact releases of the node software besides Kubernetes that go with a minor: what the
/// lab builds (`scripts/build`, go/*/go.mod) and `crate::releases` fetches.
/// Versions as `major.minor.patch`, without a `v`. `Pins<String>`: the inventory's, with its
/// `[binaries.versions]` over the table's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pins<S = &'static str> {
    pub containerd: S,
    pub runc: S,
    pub cni_plugins: S,
    pub crictl: S,
    pub etcd: S,
    /// The addons' releases: the defaults of `[addons.coredns] image` (CoreDNS), of
    /// `[addons.metallb] manifest` and `[addons.metrics_server] manifest` ([`METALLB`],
    /// [`METRICS_SERVER`]) and of `containerd.sandbox_image` (pause), which override them.
    /// `scripts/build-images` builds these images (a test holds the two together).
    pub coredns: S,
    pub metallb: S,
    pub metrics_server: S,
    pub pause: S,
}

impl Pins {
    pub fn owned(&self) -> Pins<String> {
        Pins {
            containerd: self.containerd.into(),
            runc: self.runc.into(),
            cni_plugins: self.cni_plugins.into(),
            crictl: self.crictl.into(),
            etcd: self.etcd.into(),
            coredns: self.coredns.into(),
            metallb: self.metallb.into(),
            metrics_server: self.metrics_server.into(),
            pause: self.pause.into(),
        }
    }

    /// The default CoreDNS image (kubeadm's registry and tag).
    pub fn coredns_image(&self) -> String {
        format!("{COREDNS_IMAGE_REPO}:v{}", self.coredns)
    }

    /// The default sandbox (pause) image.
    pub fn pause_image(&self) -> String {
        format!("{PAUSE_IMAGE_REPO}:{}", self.pause)
    }
}

/// One row of [`SUPPORTED`]: the data directory is named after the minor.
macro_rules! minor {
    ($dir:literal, $version:expr, $containerd:expr, $pins:expr) => {
        Minor {
            version: $version,
            containerd: $containerd,
            etcd: ETCD,
            pins: $pins,
            flags: minor_data!($dir).0,
            fields: minor_data!($dir).1,
        }
    };
}

/// The supported minors, oldest first; the last is the default. Newest patches: 1.35.7, the
/// newest v0.35 tag of the staging repositories (2026-07-23); 1.36.4, Debian unstable's
/// kubernetes source package; 1.37.2, the newest the Go module proxy serves (2026-12), built
/// and run by the lab (`scripts/build`: 1.35.4, 1.36.3 and 1.37.2).
///
/// containerd: its RELEASES.md at v2.4.2 — 1.35: 2.2.0+, 2.1.5+ or 1.7.28+; 1.36: 2.3.0+ or
/// 2.2.0+; 1.37: 2.4.0+ or 2.3.0+.
///
/// Pins: containerd on the line `scripts/build` builds for the minor (2.2.9; 2.3.7, the LTS
/// line, for 1.36 and 1.37); runc 1.5.3, the CNI plugins 1.10.0 and crictl 1.37.0 for all; etcd
/// as kubeadm's `DefaultEtcdVersion` (3.6.6 in 1.35, 3.6.8 in 1.36) but within [`ETCD`]'s lines,
/// so 3.6.8 for 1.37 too (kubeadm 1.37.2 says 3.7.0).
///
/// CoreDNS: kubeadm's `CoreDNSVersion` — v1.13.1 in kubeadm 1.35 (with etcd 3.6.6 and pause
/// 3.10.1), v1.14.2 in 1.36; 1.37 keeps 1.36's (CoreDNS v1.14.x is the current line). The
/// inventory's `[addons.coredns] image` overrides it.
///
/// Addons for every minor: MetalLB 0.16.1; metrics-server 0.8.0 (its compatibility matrix:
/// Kubernetes 1.31 and later; 0.9.0 is served by the module proxy but is not an approved
/// release here); pause 3.10.1, kubeadm's sandbox image (k8s.io/kubernetes v1.37.2's Makefile
/// says 3.10.2, which changed only the Windows image).
const fn pins(containerd: &'static str, etcd: &'static str, coredns: &'static str) -> Pins {
    Pins {
        containerd,
        runc: "1.5.3",
        cni_plugins: "1.10.0",
        crictl: "1.37.0",
        etcd,
        coredns,
        metallb: "0.16.1",
        metrics_server: "0.8.0",
        pause: "3.10.1",
    }
}

pub const SUPPORTED: &[Minor] = &[
    minor!(
        "1.35",
        Version::new(1, 35, 7),
        &[rel(1, 7, 28), rel(2, 1, 5), rel(2, 2, 0)],
        pins("2.2.9", "3.6.6", "1.13.1")
    ),
    minor!(
        "1.36",
        Version::new(1, 36, 4),
        &[rel(2, 2, 0), rel(2, 3, 0)],
        pins("2.3.7", "3.6.8", "1.14.2")
    ),
    minor!(
        "1.37",
        Version::new(1, 37, 2),
        &[rel(2, 3, 0), rel(2, 4, 0)],
        pins("2.3.7", "3.6.8", "1.14.2")
    ),
];

/// The addons hardway installs from upstream's own manifests, pinned: the release and the
/// manifest's URL (what `[addons.metallb] manifest` and `[addons.metrics_server] manifest`
/// default to). Both are applied by kubectl on the first master, which then needs to reach
/// them; an air-gapped cluster points the inventory at a local copy instead.
pub struct AddonRelease {
    pub name: &'static str,
    /// Its release in a minor's [`Pins`].
    pub pin: fn(&Pins) -> &'static str,
    /// The manifest's URL, `{v}` standing for the release (without `v`).
    manifest_url: &'static str,
}

impl AddonRelease {
    /// The release pinned for `minor`, as upstream tags it (`v0.16.1`).
    pub fn version(&self, minor: &Minor) -> String {
        format!("v{}", (self.pin)(&minor.pins))
    }

    /// The manifest's URL for `minor`'s pin.
    pub fn manifest_url(&self, minor: &Minor) -> String {
        self.manifest_url.replace("{v}", (self.pin)(&minor.pins))
    }
}

/// MetalLB's native (L2, no FRR) manifest, with its webhooks (`failurePolicy: Fail`).
pub const METALLB: AddonRelease = AddonRelease {
    name: "MetalLB",
    pin: |p| p.metallb,
    manifest_url: "https://raw.githubusercontent.com/metallb/metallb/v{v}/config/manifests/metallb-native.yaml",
};

/// metrics-server's release manifest.
pub const METRICS_SERVER: AddonRelease = AddonRelease {
    name: "metrics-server",
    pin: |p| p.metrics_server,
    manifest_url: "https://github.com/kubernetes-sigs/metrics-server/releases/download/v{v}/components.yaml",
};

/// CoreDNS's image repository (registry.k8s.io, as kubeadm uses).
pub const COREDNS_IMAGE_REPO: &str = "registry.k8s.io/coredns/coredns";
/// The pause image's repository.
pub const PAUSE_IMAGE_REPO: &str = "registry.k8s.io/pause";

/// The version an inventory without `kubernetes_version` gets: the newest supported.
pub fn newest() -> Version {
    newest_minor().version
}

/// The newest supported minor's row.
pub fn newest_minor() -> &'static Minor {
    SUPPORTED.last().expect("SUPPORTED is not empty")
}

/// The row of `version`'s minor, or the newest's for a version not supported (which the
/// inventory's validation refuses anyway, so its defaults are only what the message shows).
pub fn minor_or_newest(version: Option<Version>) -> &'static Minor {
    version
        .and_then(|v| v.supported())
        .unwrap_or(newest_minor())
}

/// "1.35, 1.36 and 1.37", for messages.
pub fn supported_names() -> String {
    let names: Vec<String> = SUPPORTED.iter().map(Minor::name).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_strictly() {
        assert_eq!(Version::parse("1.37.1"), Some(Version::new(1, 37, 1)));
        assert_eq!(Version::parse("v1.35.0"), Some(Version::new(1, 35, 0)));
        for bad in [
            "1.37",
            "1.37.1.0",
            "2.0.0",
            "1.+37.1",
            "1.37.1-rc.0",
            "1.37.x",
            "1..2",
            " 1.37.1",
            "",
        ] {
            assert_eq!(Version::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Version::new(1, 37, 1).to_string(), "1.37.1");
        assert!(Version::new(1, 36, 9) < Version::new(1, 37, 0));
    }

    #[test]
    fn three_minors_newest_last() {
        let names: Vec<String> = SUPPORTED.iter().map(Minor::name).collect();
        assert_eq!(names, ["1.35", "1.36", "1.37"]);
        assert_eq!(newest(), Version::new(1, 37, 2));
        assert_eq!(supported_names(), "1.35, 1.36 and 1.37");
        assert!(Version::new(1, 34, 9).supported().is_none());
        assert_eq!(
            Version::new(1, 36, 0)
                .supported()
                .map(Minor::name)
                .as_deref(),
            Some("1.36")
        );
    }

    #[test]
    fn every_list_is_present_and_plausible() {
        for m in SUPPORTED {
            for c in [
                ComponentId::KubeApiserver,
                ComponentId::KubeControllerManager,
                ComponentId::KubeScheduler,
                ComponentId::Kubelet,
                ComponentId::KubeProxy,
            ] {
                assert!(m.lists_flags_of(c), "{} lists no flags of {c:?}", m.name());
                // Every component has --v; a list without it was cut or mis-parsed.
                assert!(m.flag(c, "v").is_some(), "{} {c:?} has no --v", m.name());
                assert!(
                    m.flags(c)
                        .all(|f| f.name.bytes().all(|b| b.is_ascii_lowercase()
                            || b.is_ascii_digit()
                            || b == b'-'
                            || b == b'_'))
                );
            }
            for t in ConfigType::ALL {
                assert!(m.fields(t).count() > 10, "{} {t:?}", m.name());
            }
            assert!(m.has_field(ConfigType::KubeScheduler, "enableProfiling"));
            assert!(!m.containerd.is_empty() && !m.etcd.is_empty());
        }
    }

    #[test]
    fn the_lists_follow_the_release_notes() {
        let [m35, m36, m37] = [0, 1, 2].map(|i| &SUPPORTED[i]);
        // CHANGELOG-1.37: --concurrent-service-syncs removed from kube-controller-manager.
        assert!(
            m36.flag(
                ComponentId::KubeControllerManager,
                "concurrent-service-syncs"
            )
            .is_some()
        );
        assert!(
            m37.flag(
                ComponentId::KubeControllerManager,
                "concurrent-service-syncs"
            )
            .is_none()
        );
        // CHANGELOG-1.36: --tls-curve-preferences added to the shared secure-serving options.
        assert!(
            m35.flag(ComponentId::KubeApiserver, "tls-curve-preferences")
                .is_none()
        );
        assert!(
            m36.flag(ComponentId::KubeScheduler, "tls-curve-preferences")
                .is_some()
        );
        // The scheduler's reference: --profiling is ignored beside --config.
        assert!(
            m37.flag(ComponentId::KubeScheduler, "profiling")
                .unwrap()
                .ignored_with_config
        );
        assert!(
            !m37.flag(ComponentId::KubeScheduler, "bind-address")
                .unwrap()
                .ignored_with_config
        );
        // klog's underscore spellings match their normalised names.
        assert!(m35.flag(ComponentId::KubeProxy, "log-dir").is_some());
        // containerd: 1.35 still takes 1.7.28+; 1.36 wants 2.2+, 1.37 2.3+ (containerd RELEASES.md).
        assert_eq!(m35.containerd[0], rel(1, 7, 28));
        assert_eq!(m36.containerd, [rel(2, 2, 0), rel(2, 3, 0)]);
        assert_eq!(m37.containerd, [rel(2, 3, 0), rel(2, 4, 0)]);
    }
}
