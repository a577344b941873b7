//! hardway's integration tests, one binary (`cargo test --test it`): each module tests one
//! command or stage with the real tools that consume what hardway makes. The modules that boot
//! a lab (`lab`, `deploy`, `verify`, `dataplane`) take one lab at a time (see `common::lab`);
//! `qemu::lab` boots a qemu lab of its own cluster and subnet; everything else runs in parallel.

mod common;

mod addons;
mod certs;
mod class;
mod cli;
mod cluster;
mod day2;
mod dataplane;
mod deploy;
mod escape;
mod explain;
mod fuzz;
mod inventory;
mod lab;
mod pki;
mod qemu;
mod render;
mod ssh;
mod verify;
mod versions;
