//! One way to open a cluster, for every command that acts on one: `deploy`, the day-2 commands
//! and the classroom. A [`Session`] is the inventory, its PKI (brought up to date, or as it is),
//! an SSH connector to the nodes and a probe of the endpoints with the PKI's identities; the
//! files a phase places come from [`Session::files`], rendered and with the local binaries, the
//! same whichever command asks.
//!
//! Below deploy, verify, day 2 and class, which take what a session holds; above the stages it
//! puts together (inventory, pki, render, remote, probe). The CLI only says how to reach the nodes
//! ([`Access`]: host keys, the run log, a sudo password) and prints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::components::{BinDir, COMPONENTS, Phase};
use crate::inventory::Inventory;
use crate::pki::{self, CaId, GenerateOptions, Pki, PkiError};
use crate::probe::{self, EtcdAuth, NetProbe};
use crate::remote::ssh::{HostKeyPolicy, SshConnector, SudoPassword};
use crate::render::{self, Contents, File, RenderError, Rendered};
use crate::runlog::RunLog;

/// Why a cluster could not be opened, or its files made.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("reading {path} (binaries.local_dir): {source}")]
    LocalBinary {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How the PKI directory is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PkiUse {
    /// As it is: day-2 commands create nothing (a missing piece is an error naming it).
    AsItIs,
    /// Brought up to date where it no longer fits the inventory, keeping every CA and key that
    /// still does and creating none (deploy's mode); with `dry_run` decided in memory only.
    UpToDate { dry_run: bool },
    /// Created where missing, CAs included (a classroom lab's first checkpoint).
    Created,
}

/// How the nodes are reached.
#[derive(Clone)]
pub struct Access {
    pub host_keys: HostKeyPolicy,
    /// Where every remote operation is logged.
    pub run_log: Option<Arc<RunLog>>,
    /// For `ssh.sudo = "password"`.
    pub sudo_password: Option<SudoPassword>,
}

impl Default for Access {
    /// Known host keys only, no log, no sudo password: the classroom's labs.
    fn default() -> Self {
        Access {
            host_keys: HostKeyPolicy::Strict,
            run_log: None,
            sudo_password: None,
        }
    }
}

/// An opened cluster.
pub struct Session {
    pub inv: Inventory,
    pub pki: Pki,
    /// What bringing the PKI up to date did (empty for [`PkiUse::AsItIs`]).
    pub pki_report: pki::Report,
    pub connector: Arc<SshConnector>,
    pub probe: Arc<NetProbe>,
}

impl Session {
    /// Opens the cluster of `inv` with the PKI in `pki_dir`, which must be this cluster's.
    pub fn open(
        inv: Inventory,
        pki_dir: &Path,
        use_pki: PkiUse,
        access: Access,
    ) -> Result<Session, SessionError> {
        let (pki, pki_report) = pki_of(&inv, pki_dir, use_pki)?;
        let connector = connector(&inv, access);
        let probe = Arc::new(probe_of(&inv, &pki));
        Ok(Session {
            inv,
            pki,
            pki_report,
            connector,
            probe,
        })
    }

    /// What the nodes get for `phases`: [`files`] of this session's inventory and PKI.
    pub fn files(&self, phases: &[Phase]) -> Result<Rendered, SessionError> {
        files(&self.inv, &self.pki, phases)
    }
}

/// The PKI in `pki_dir` for `inv`, taken as `use_pki` says, and what bringing it up to date
/// did (empty for [`PkiUse::AsItIs`]).
pub fn pki_of(
    inv: &Inventory,
    pki_dir: &Path,
    use_pki: PkiUse,
) -> Result<(Pki, pki::Report), SessionError> {
    Ok(match use_pki {
        PkiUse::AsItIs => (pki::load(inv, pki_dir)?, pki::Report::default()),
        PkiUse::UpToDate { dry_run } => pki::generate(
            inv,
            pki_dir,
            GenerateOptions {
                force: false,
                dry_run,
                existing_trust_only: true,
            },
        )?,
        PkiUse::Created => pki::generate(inv, pki_dir, GenerateOptions::default())?,
    })
}

/// The SSH side of a cluster: one connector to its nodes, reached as `access` says. `verify`
/// takes only this of a session, since it judges a cluster with whatever credentials it is given
/// (a cluster built by hand has no hardway PKI), as does `certs check`, which reads no key.
pub fn connector(inv: &Inventory, access: Access) -> Arc<SshConnector> {
    Arc::new(
        SshConnector::new(inv, access.host_keys)
            .with_log(access.run_log)
            .with_sudo_password(access.sudo_password),
    )
}

/// The endpoints' side of a cluster, with a PKI's CAs and client certificates (etcd's, and the
/// admin's for the API server).
pub fn probe_of(inv: &Inventory, pki: &Pki) -> NetProbe {
    let admin = pki.cert("admin");
    let api = probe::api_tls_config(
        &pki.ca(CaId::Kubernetes).cert_pem,
        &admin.cert_pem,
        &admin.key_pem,
    )
    .ok();
    NetProbe::new(inv, Some(EtcdAuth::from_pki(pki)), api)
}

/// Every file the nodes of `inv` get, rendered with `pki`, and for the components of `phases`
/// the executables found in `binaries.local_dir` (each read once however many nodes get it):
/// each component's binary and its companions (containerd's shim, ctr and runc; the CNI
/// plugins), into the directory the inventory gives it. Only a distribution's fixed places
/// (HAProxy, systemd's tools, ip) are never written.
/// One function for deploy, node removal (which renders the inventory without the node) and the
/// classroom, so that none of them places a different set.
pub fn files(inv: &Inventory, pki: &Pki, phases: &[Phase]) -> Result<Rendered, SessionError> {
    let mut rendered = render::render(inv, pki)?;
    let Some(local) = &inv.binaries.local_dir else {
        return Ok(rendered);
    };
    let mut cache: BTreeMap<PathBuf, Contents> = BTreeMap::new();
    for node in &inv.nodes {
        let files = rendered
            .hosts
            .get_mut(&node.name)
            .expect("every node is rendered");
        for c in COMPONENTS
            .iter()
            .filter(|c| phases.contains(&c.phase) && c.runs_on(inv, node))
        {
            if matches!(c.binary.1, BinDir::Fixed(_)) {
                continue;
            }
            for (name, remote) in c.executables(inv) {
                let src = local.join(name);
                if !src.is_file() || files.iter().any(|f| f.path == remote) {
                    continue;
                }
                if !cache.contains_key(&src) {
                    let bytes =
                        std::fs::read(&src).map_err(|source| SessionError::LocalBinary {
                            path: src.clone(),
                            source,
                        })?;
                    cache.insert(src.clone(), bytes.into());
                }
                files.push(File {
                    path: remote,
                    mode: 0o755,
                    contents: cache[&src].clone(),
                    units: c.unit.into_iter().collect(),
                    anchor: None,
                    restarts: true,
                    phase: Some(c.phase),
                });
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
    }
    Ok(rendered)
}
