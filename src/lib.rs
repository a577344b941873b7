//! hardway: Kubernetes "the hard way", from one inventory file.
//!
//! The library is a pipeline; each stage takes the previous stage's type and returns its own:
//!
//! ```text
//! inventory::load(path)        -> Inventory   what the cluster is (validated)
//! pki::generate(&inv, dir)     -> Pki         CAs, certificates, keys, encryption key
//! render::render(&inv, &pki)   -> Rendered    every file of every host, in memory
//! ```
//!
//! `cli` is the command-line front end over these stages (like ripgrep's core/CLI split);
//! `main.rs` only calls it.

pub mod cli;
pub mod inventory;
pub mod pki;
pub mod render;
