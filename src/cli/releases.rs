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
/// local directory at them. Without one: nothing.
pub(super) fn prepare(inv: &mut Inventory, args: &ReleaseArgs) -> Result<()> {
    if inv.binaries.release.is_none() {
        return Ok(());
    }
    let report = fetch(inv, args)?;
    inv.binaries.local_dir = Some(report.dir);
    Ok(())
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
            let inv = load_inventory(&inv.path())?;
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
