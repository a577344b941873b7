//! What verify learns about one host over its session, read by the host checks (`host`), the
//! fault checks (`faults_support`) and the checks across hosts (`cluster`): its units as found,
//! with their flags, the certificates they name, and the checks made so far.

use std::collections::BTreeMap;

use super::Check;
use super::certs::Found;
use crate::inventory::Node;
use crate::remote::UnitInfo;

/// A unit as found on the node, with the flags of its ExecStart (and of its config file).
#[derive(Debug, Clone, Default)]
pub(crate) struct Unit {
    pub info: UnitInfo,
    pub flags: BTreeMap<String, String>,
    /// Files the unit names that were too large to read ([`crate::remote::READ_LIMIT`]).
    pub unread: Vec<String>,
}

impl Unit {
    pub fn deployed(&self) -> bool {
        self.info.deployed()
    }
}

/// Everything checked over one host's session.
pub(crate) struct HostWork {
    pub node: Node,
    pub checks: Vec<Check>,
    pub units: BTreeMap<String, Unit>,
    pub encryption_sha: Option<String>,
    /// (server, address, status) from the stats socket, on LB nodes.
    pub backends: Option<Vec<(String, String, String)>>,
    /// The certificates found where the units say, checked once every host's units are read
    /// (a client on another node may need a SAN: `sans::add_clients`).
    pub found: Vec<Found>,
}

impl HostWork {
    pub fn new(node: &Node) -> HostWork {
        HostWork {
            node: node.clone(),
            checks: vec![],
            units: BTreeMap::new(),
            encryption_sha: None,
            backends: None,
            found: vec![],
        }
    }

    /// The node answered over SSH (its `ssh` check passed): what it runs is known.
    pub fn reached(&self) -> bool {
        self.checks
            .iter()
            .any(|c| c.check == "ssh" && c.status == super::Status::Pass)
    }

    pub fn deployed(&self, unit: &str) -> bool {
        self.units.get(unit).is_some_and(Unit::deployed)
    }

    /// A unit flag (or config-file key) as the node has it.
    pub fn flag(&self, unit: &str, flag: &str) -> Option<&str> {
        self.units.get(unit)?.flags.get(flag).map(String::as_str)
    }
}
