//! Which driver made a lab: `up` records it in the lab directory, so that `status` and a
//! second `up` deal with the machines that are there, whatever the inventory or `--driver`
//! says now.

use std::fs;

use super::error::{LabError, Result};
use super::files::write_file;
use super::layout::Layout;
use crate::inventory::LabDriver;

fn record(layout: &Layout) -> std::path::PathBuf {
    layout.dir.join("driver")
}

/// The driver the lab's machines were made with, if the lab directory has machines. Labs of
/// releases before the record were nspawn labs.
pub(super) fn recorded(layout: &Layout) -> Option<LabDriver> {
    if let Ok(text) = fs::read_to_string(record(layout)) {
        return LabDriver::parse(text.trim());
    }
    layout.nodes.iter().any(|n| n.dir.is_dir()).then_some(LabDriver::Nspawn)
}

/// Records `driver` for a lab about to come up; refuses a lab whose machines are another
/// driver's (a node cannot be a container and a VM at once).
pub(super) fn claim(layout: &Layout, driver: LabDriver) -> Result<()> {
    match recorded(layout) {
        Some(d) if d != driver => Err(LabError::DriverMismatch { cluster: layout.cluster.clone(), running: d, wanted: driver }),
        _ => write_file(&record(layout), format!("{driver}\n")),
    }
}

/// The driver whose machines `status` looks for: the recorded one, else `fallback`.
pub(super) fn current(layout: &Layout, fallback: LabDriver) -> LabDriver {
    recorded(layout).unwrap_or(fallback)
}
