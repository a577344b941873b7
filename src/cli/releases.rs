//! `hardway binaries fetch`, and the release step of deploy: binaries from upstream's release
//! servers or a mirror, into the cache and one directory deploy reads (`crate::releases`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::{InventoryArg, load_inventory};
use crate::inventory::Inventory;
use crate::releases::{self, Network};

/// Where release binaries come from, for commands that push them.
#[derive(Args, Clone)]
pub struct ReleaseArgs {
    /// Use cached release downloads only; name what is missing instead of downloading.
    #[arg(long)]
    pub offline: bool,
    /// The download cache (default: $HARDWAY_CACHE_DIR, else $XDG_CACHE_HOME/hardway, else
    /// ~/.cache/hardway; releases under releases/).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

impl ReleaseArgs {
    fn cache(&self) -> PathBuf {
        self.cache_dir
            .as_ref()
            .map(|d| d.join("releases"))
            .unwrap_or_else(releases::default_cache)
    }
    fn network(&self) -> Network {
        if self.offline {
            Network::Offline
        } else {
            Network::Online
        }
    }
}

#[derive(Subcommand)]
pub enum BinariesCommand {
    /// Download (or find in the cache) every release binary the inventory's
    /// `[binaries] source` names, verify each against its published checksum, and print the
    /// directory deploy pushes them from.
    Fetch {
        #[command(flatten)]
        inv: InventoryArg,
        #[command(flatten)]
        release: ReleaseArgs,
    },
}

/// With a release source: fetches and verifies the binaries, and points the inventory's
/// local directory at them. With a bundle: unpacks and verifies it, and takes its executables
/// and (where the inventory names none) its addon images. Otherwise: nothing.
pub(super) fn prepare(inv: &mut Inventory, args: &ReleaseArgs) -> Result<()> {
    if let Some(bundle) = inv.binaries.bundle.clone() {
        let opened = crate::bundle::open(&bundle, inv, &args.cache())
            .with_context(|| format!("{}: binaries.bundle", inv.source.display()))?;
        eprintln!(
            "binaries: bundle {} verified ({} executables, {} images)",
            bundle.display(),
            std::fs::read_dir(&opened.bin_dir)
                .map(|d| d.count())
                .unwrap_or(0),
            opened.images.len()
        );
        inv.binaries.local_dir = Some(opened.bin_dir);
        if inv.addons.images.is_empty() {
            inv.addons.images = opened.images;
        }
        return Ok(());
    }
    if inv.binaries.release.is_none() {
        return Ok(());
    }
    let report = fetch(inv, args)?;
    inv.binaries.local_dir = Some(report.dir);
    Ok(())
}

/// Where the inventory's binaries come from, in a line (`hardway validate`).
pub(super) fn describe_source(inv: &Inventory) -> String {
    let b = &inv.binaries;
    let install = match inv.nodes.iter().filter(|n| n.install.is_some()).count() {
        0 => String::new(),
        n => format!(
            "; preflight installs missing packages with apt on {n} of {} nodes",
            inv.nodes.len()
        ),
    };
    let from = if let Some(bundle) = &b.bundle {
        format!("from the bundle {}", bundle.display())
    } else if let Some(r) = &b.release {
        let p = &r.pins;
        format!(
            "release archives from {} for {} (Kubernetes {}, etcd {}, containerd {}, runc {}, CNI plugins {}, crictl {})",
            r.mirror
                .as_deref()
                .unwrap_or("upstream (dl.k8s.io, github.com)"),
            r.arch.name(),
            inv.cluster.kubernetes_version,
            p.etcd,
            p.containerd,
            p.runc,
            p.cni_plugins,
            p.crictl
        )
    } else if let Some(dir) = &b.local_dir {
        format!("pushed from {}", dir.display())
    } else {
        "expected on the nodes (none pushed)".to_string()
    };
    format!("{from}, into {}{install}", b.remote_dir)
}

/// `hardway bundle`: the inventory's executables (fetched first for a release source) and
/// addon images into one archive.
pub(super) fn bundle(
    inv: &std::path::Path,
    out: &std::path::Path,
    release: &ReleaseArgs,
) -> Result<ExitCode> {
    let mut inv = load_inventory(inv)?;
    if inv.binaries.bundle.is_some() {
        anyhow::bail!(
            "{}: binaries.bundle: the binaries already come from a bundle",
            inv.source.display()
        );
    }
    prepare(&mut inv, release)?;
    let bin_dir = inv
        .binaries
        .local_dir
        .clone()
        .ok_or(crate::bundle::BundleError::NothingToBundle)?;
    let written = crate::bundle::write(&inv, &bin_dir, out)
        .with_context(|| format!("writing the bundle {}", out.display()))?;
    for (member, sum) in &written.files {
        out!("{member}  sha256:{sum}");
    }
    out!(
        "{}: Kubernetes {}, {} files; deploy from it with [binaries] bundle = {:?}",
        out.display(),
        written.meta.kubernetes_version,
        written.files.len(),
        out.display().to_string()
    );
    Ok(ExitCode::SUCCESS)
}

fn fetch(inv: &Inventory, args: &ReleaseArgs) -> Result<releases::FetchReport> {
    let cache = args.cache();
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let report = releases::fetch(inv, &cache, args.network(), progress)
        .with_context(|| format!("{}: binaries.source", inv.source.display()))?;
    eprintln!(
        "binaries: {} downloaded, {} from the cache, every checksum verified: {}",
        report.downloaded.len(),
        report.cached.len(),
        report.dir.display()
    );
    Ok(report)
}

pub(super) fn run(command: BinariesCommand) -> Result<ExitCode> {
    match command {
        BinariesCommand::Fetch { inv, release } => {
            let mut inv = load_inventory(&inv.path())?;
            if inv.binaries.bundle.is_some() {
                prepare(&mut inv, &release)?;
                out!(
                    "{}",
                    inv.binaries
                        .local_dir
                        .as_deref()
                        .unwrap_or(std::path::Path::new(""))
                        .display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            if inv.binaries.release.is_none() {
                anyhow::bail!(
                    "{}: binaries.source is not \"upstream\" or a mirror's URL: there is nothing to fetch",
                    inv.source.display()
                );
            }
            let report = fetch(&inv, &release)?;
            for url in &report.downloaded {
                out!("downloaded {url}");
            }
            for (name, sum) in &report.executables {
                out!("{name}  sha256:{sum}");
            }
            out!("{}", report.dir.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
