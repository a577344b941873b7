//! What a lab driver is, and which driver made a lab.
//!
//! A driver makes the machines; everything around them is the lab's life cycle (`super`): the
//! layout, the lock, the bridge and addresses, the key and known_hosts, the boot wait over ssh
//! (`super::boot`). Two drivers are peers behind [`Driver`]: `super::nspawn` (a container per
//! node, on the host's kernel) and `super::qemu` (a VM per node, its own kernel).
//!
//! `up` records the driver in the lab directory, so that `status` and a second `up` deal with
//! the machines that are there, whatever the inventory or `--driver` says now.

use std::fs;

use super::error::{LabError, Result};
use super::files::write_file;
use super::layout::{Layout, NodeLayout};
use super::net::Net;
use super::{Lab, LabOptions, NodeStatus};
use crate::inventory::{Inventory, LabDriver};

/// One way of making a lab's machines.
pub(super) trait Driver: Sync {
    /// What this driver needs beyond [`super::preflight`] (its tools), and whether it can take
    /// `opts`; the error names every missing piece.
    fn preflight(&self, opts: &LabOptions) -> Result<()>;

    /// Brings up every node's machine and waits until each has booted. Called with the lab
    /// locked, its bridge checked as free or its own, its directory made and this driver
    /// recorded. Idempotent: a running machine is left alone.
    fn up(&self, inv: &Inventory, opts: &LabOptions, layout: &Layout, net: &Net) -> Result<Lab>;

    /// The node's machine as `lab status` shows it; `bridge_is_ours` says whether its address
    /// may be contacted.
    fn probe(&self, layout: &Layout, node: &NodeLayout, bridge_is_ours: bool) -> NodeStatus;

    /// The memory the node's running machine uses now, if it runs and that can be known.
    fn memory_usage(&self, layout: &Layout, node: &NodeLayout) -> Option<u64>;

    /// Stops every machine of this driver whose files are in the lab directory (those of nodes
    /// since dropped from the inventory too). Part of `down` whatever driver made the lab.
    fn stop(&self, layout: &Layout, nodes: &[NodeLayout]) -> Result<()>;

    /// Removes what this driver left on the host for `nodes` once their machines are stopped,
    /// before the network goes: `network_ours` is false when the bridge belongs to another lab
    /// of the same cluster name, whose namespaces and links must be left alone.
    fn release(&self, layout: &Layout, nodes: &[NodeLayout], network_ours: bool) -> Result<()>;
}

fn record(layout: &Layout) -> std::path::PathBuf {
    layout.dir.join("driver")
}

/// The driver the lab's machines were made with, if the lab directory has machines. Labs of
/// releases before the record were nspawn labs.
pub(super) fn recorded(layout: &Layout) -> Option<LabDriver> {
    if let Ok(text) = fs::read_to_string(record(layout)) {
        return LabDriver::parse(text.trim());
    }
    layout
        .nodes
        .iter()
        .any(|n| n.dir.is_dir())
        .then_some(LabDriver::Nspawn)
}

/// Records `driver` for a lab about to come up; refuses a lab whose machines are another
/// driver's (a node cannot be a container and a VM at once).
pub(super) fn claim(layout: &Layout, driver: LabDriver) -> Result<()> {
    match recorded(layout) {
        Some(d) if d != driver => Err(LabError::DriverMismatch {
            cluster: layout.cluster.clone(),
            running: d,
            wanted: driver,
        }),
        _ => write_file(&record(layout), format!("{driver}\n")),
    }
}

/// The driver whose machines `status` looks for: the recorded one, else `fallback`.
pub(super) fn current(layout: &Layout, fallback: LabDriver) -> LabDriver {
    recorded(layout).unwrap_or(fallback)
}
