//! hardway's lab tests (`cargo test --test lab`, as root): every test that boots a lab — nspawn
//! machines or QEMU VMs — with its root networking, a module per command or stage as in the `it`
//! binary. They take one lab at a time (see `common::lab`); `qemu::lab` boots a qemu lab of its
//! own cluster and subnet.

/// The helpers the `it` binary uses too (tests/common/), and the booted lab (`common::lab`).
mod common {
    #[path = "../../common/mod.rs"]
    mod shared;
    pub use shared::*;

    pub mod lab;
}

mod certs;
mod chroot;
mod class;
mod cluster;
mod dataplane;
mod day2;
mod deploy;
mod escape;
mod explain;
mod lab;
mod qemu;
mod release;
mod verify;
