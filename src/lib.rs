//! hardway: Kubernetes "the hard way", from one inventory file.
//!
//! The library is a pipeline; each stage takes the previous stage's output:
//!
//! ```text
//! inventory::load(path)              -> Inventory    what the cluster is (validated)
//! pki::generate(&inv, dir)           -> Pki          CAs, certificates, keys, encryption key
//! render::render(&inv, &pki)         -> Rendered     every file of every host, in memory
//! plan::plan_host(&rendered, ..)     -> HostPlan     files to send, units to (re)start (pure)
//! remote::Remote                     apply a plan on a node: files, systemctl, facts (SSH or fake)
//! probe::wait_healthy(..)            bootstrap: etcd members answer and agree on a leader
//! verify::verify(..)                 -> Vec<Check>   is it healthy and built right?
//! ```
//!
//! What each daemon is — unit, nodes, phase, binary, ports, restart policy, certificates — is
//! one table, [`components`]. [`deploy`] runs plan → remote → probe phase by phase (one module
//! per phase, kubeadm's names); [`lab`] boots local systemd-nspawn machines to deploy to, and
//! [`class`] runs one lab per student, brings labs to a checkpoint, breaks them on purpose and
//! grades them with verify.
//!
//! [`explain`] prints the same pipeline as the commands a person would type (openssl or cfssl,
//! kubectl config, scp, ssh, systemctl), generated from the same tables.
//!
//! [`cli`] is the command-line front end over these stages (like ripgrep's core/CLI split) and
//! owns the one async runtime; `main.rs` only calls it.

pub mod addons;
pub mod bundle;
pub mod class;
pub mod cli;
pub mod components;
pub mod day2;
pub mod deploy;
pub mod digest;
pub mod etcd;
pub mod events;
pub mod explain;
pub mod flags;
pub mod images;
pub mod inventory;
pub mod kube;
pub mod lab;
pub mod pki;
pub mod plan;
pub mod probe;
pub mod releases;
pub mod remote;
pub mod render;
pub mod runlog;
pub mod safe_fs;
pub mod session;
pub mod snapshot;
pub mod templates;
pub mod verify;
pub mod versions;

#[cfg(test)]
mod key_material_tests;
#[cfg(test)]
mod module_graph_tests;
#[cfg(test)]
mod testing;
