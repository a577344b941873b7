//! hardway: Kubernetes "the hard way", from one inventory file.
//!
//! The library is a pipeline; each stage takes the previous stage's type and returns its own:
//!
//! ```text
//! inventory::load(path)                 -> Inventory   what the cluster is (validated)
//! pki::generate(&inv, dir)              -> Pki         CAs, certificates, keys, encryption key
//! render::render(&inv, &pki)            -> Rendered    every file of every host, in memory
//! plan::plan_host(&rendered, host, ..)  -> HostPlan    files to send, units to (re)start
//! apply::{upload, systemctl}(conn, ..)  over ssh::Conn, one round trip each
//! bootstrap::wait_healthy(&inv, ..)     -> etcd members' status, one leader
//! ```
//!
//! `deploy` runs plan → apply → bootstrap phase by phase across hosts (kubeadm's phase names);
//! `lab` boots local systemd-nspawn machines to deploy to.
//!
//! `cli` is the command-line front end over these stages (like ripgrep's core/CLI split);
//! `main.rs` only calls it.

pub mod apply;
pub mod bootstrap;
pub mod cli;
pub mod components;
pub mod deploy;
pub mod inventory;
pub mod lab;
pub mod pki;
pub mod plan;
pub mod render;
pub mod ssh;
pub mod verify;
