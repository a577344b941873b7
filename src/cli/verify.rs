//! `hardway verify`: the options and the report.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;

use super::{InventoryArg, LogArg, OutputFormat, load_inventory, observe, runtime};
use crate::verify;

/// `hardway verify`.
#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub inv: InventoryArg,
    #[command(flatten)]
    pub lab: super::LabNameArg,
    /// Where the CAs and client certificates are (hardway's layout)
    /// (default: the cluster's own: `pki/` beside the inventory or `./pki` if made for this
    /// cluster, else `./pki/<cluster>`)
    #[arg(long)]
    pub pki: Option<PathBuf>,
    /// The cluster CA, if not <pki>/ca.crt.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// The etcd CA, if not <pki>/etcd/ca.crt.
    #[arg(long)]
    pub etcd_ca: Option<PathBuf>,
    /// An etcd client certificate, if not <pki>/etcd/healthcheck-client.crt.
    #[arg(long, requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    /// The key of --etcd-cert.
    #[arg(long, requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    /// An admin client certificate, if not <pki>/admin.crt.
    #[arg(long, requires = "admin_key")]
    pub admin_cert: Option<PathBuf>,
    /// The key of --admin-cert.
    #[arg(long, requires = "admin_cert")]
    pub admin_key: Option<PathBuf>,
    /// Hosts checked at once.
    #[arg(long, default_value_t = 32, value_parser = super::parse_parallel)]
    pub parallel: usize,
    /// Record host keys that are not in known_hosts yet (changed keys are always refused).
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// text; json (at the end: the verdict, the counts and every check; a cluster-wide check's
    /// host is null); jsonl (one event per line as it happens).
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub log: LogArg,
}

pub(super) fn run(args: VerifyArgs) -> Result<ExitCode> {
    let VerifyArgs {
        inv,
        lab,
        pki: dir,
        ca,
        etcd_ca,
        etcd_cert,
        etcd_key,
        admin_cert,
        admin_key,
        parallel,
        accept_new_host_keys,
        output,
        log,
    } = args;
    let (inv_path, dir) = lab.resolve(&inv, dir)?;
    let inv = load_inventory(&inv_path)?;
    let dir = dir.unwrap_or_else(|| crate::pki::default_dir(&inv));
    // Another cluster's PKI would make every check of this one FAIL, each for the wrong reason.
    crate::pki::check_cluster(&inv, &dir)?;
    let opts = verify::VerifyOptions {
        ca,
        etcd_ca,
        etcd_cert,
        etcd_key,
        admin_cert,
        admin_key,
        parallel,
        ..verify::VerifyOptions::new(dir)
    };
    let creds = verify::Credentials::load(&opts)?;
    let (probe, api_error) = creds.probe(&inv);
    let (events, run_log) = observe("verify", output, &log, &inv)?;
    let connector = crate::session::connector(
        &inv,
        super::deploy::access(&inv, accept_new_host_keys, run_log)?,
    );
    let checks = runtime()?.block_on(verify::verify(
        &inv,
        creds,
        connector,
        Arc::new(probe),
        api_error,
        parallel,
        events,
    ));
    let failed = checks.iter().any(|c| c.status == verify::Status::Fail);
    match output {
        OutputFormat::Json => out!(
            "{}",
            serde_json::to_string_pretty(&verify::Report::new(&inv, checks))?
        ),
        OutputFormat::Jsonl => {}
        OutputFormat::Text => out!("{}", verify::format_report(&checks)),
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
