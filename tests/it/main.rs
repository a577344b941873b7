//! hardway's integration tests that need no root and boot nothing (`cargo test --test it`): each
//! module tests one command or stage with the real tools that consume what hardway makes. Every
//! test that boots a lab is in the `lab` binary (tests/lab/); the helpers both use are
//! tests/common/.

#[path = "../common/mod.rs"]
mod common;

mod addons;
mod class;
mod cli;
mod docs;
mod explain;
mod fuzz;
mod inventory;
mod pki;
mod qemu;
mod releases;
mod render;
mod ssh;
mod versions;
