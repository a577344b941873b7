//! `hardway explain`: the walkthrough by hand, printed as a bash script.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args;

use super::{InventoryArg, load_inventory};
use crate::explain::{self, ExplainOptions, Part, Tool};

#[derive(Clone, Copy, clap::ValueEnum)]
pub(super) enum ToolArg {
    Openssl,
    Cfssl,
}

/// `hardway explain`.
#[derive(Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    inv: InventoryArg,
    /// Only these parts, comma-separated: pki, files, etcd, lb, control-plane, workers, addons
    /// (a phase brings the certificates and kubeconfigs its files need; default: everything).
    #[arg(long = "phase", value_delimiter = ',', value_name = "PART")]
    phases: Vec<String>,
    /// What makes the certificates.
    #[arg(long, value_enum, default_value_t = ToolArg::Openssl)]
    tool: ToolArg,
}

pub(super) fn run(args: ExplainArgs) -> Result<ExitCode> {
    let inv = load_inventory(&args.inv.path())?;
    let mut parts = Vec::new();
    for p in &args.phases {
        match Part::parse(p) {
            Some(part) => parts.push(part),
            None => bail!("unknown part {p:?}: one of {}", Part::names().join(", ")),
        }
    }
    let tool = match args.tool {
        ToolArg::Openssl => Tool::Openssl,
        ToolArg::Cfssl => Tool::Cfssl,
    };
    let script = explain::walkthrough(&inv, &ExplainOptions { parts, tool })?;
    out!("{}", script.trim_end());
    Ok(ExitCode::SUCCESS)
}
