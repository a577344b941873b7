//! What runs on which node, on which ports, from which binary: the component table
//! ([`crate::components`]) applied to one cluster's inventory.
//!
//! These are methods of the table's own types, defined here rather than beside the table
//! because they need an [`Inventory`], and the inventory sits above the table (it names
//! components); callers write `component.runs_on(&inv, node)` or `Port::ApiServer.number(&inv)`
//! as before.

use super::{Inventory, Node, Role};
use crate::components::{BinDir, COMPONENTS, Component, Port, RunsOn};

impl Port {
    /// The port number: upstream's defaults, and the load balancer's from the inventory.
    pub fn number(self, inv: &Inventory) -> u16 {
        match (self, &inv.load_balancer) {
            (Port::LoadBalancer, Some(lb)) => lb.port,
            _ => self.default_number(),
        }
    }
}

impl Component {
    /// Does `node` run this component?
    pub fn runs_on(&self, inv: &Inventory, node: &Node) -> bool {
        self.runs_on.includes(inv, node)
    }

    /// The absolute path of its binary on the nodes.
    pub fn binary_path(&self, inv: &Inventory) -> String {
        let (name, dir) = self.binary;
        match dir {
            BinDir::Inventory => {
                format!("{}/{name}", inv.binaries.remote_dir.trim_end_matches('/'))
            }
            BinDir::Fixed(d) => format!("{d}/{name}"),
            BinDir::Containerd => {
                format!("{}/{name}", inv.containerd.bin_dir.trim_end_matches('/'))
            }
            BinDir::Cni => format!("{}/{name}", inv.cni.bin_dir.trim_end_matches('/')),
        }
    }

    /// Its binary and its companions: (file name, absolute path on the nodes).
    pub fn executables(&self, inv: &Inventory) -> Vec<(&'static str, String)> {
        let bin = self.binary_path(inv);
        let dir = bin.rsplit_once('/').map_or("", |(d, _)| d).to_string();
        std::iter::once((self.binary.0, bin))
            .chain(self.companions.iter().map(|c| (*c, format!("{dir}/{c}"))))
            .collect()
    }
}

impl RunsOn {
    /// Is `node` one of these nodes?
    pub fn includes(self, inv: &Inventory, node: &Node) -> bool {
        match self {
            RunsOn::AllNodes => true,
            RunsOn::EtcdMembers => inv.is_etcd_member(node),
            RunsOn::Masters => node.has(Role::Master),
            RunsOn::Workers => node.has(Role::Worker),
            RunsOn::Lb => node.has(Role::Lb),
            RunsOn::FirstMaster => inv.masters().next().is_some_and(|m| m.name == node.name),
            RunsOn::PodNetwork => node.has(Role::Master) || node.has(Role::Worker),
        }
    }
}

/// The components `node` runs, in table order.
pub fn on_node<'a>(
    inv: &'a Inventory,
    node: &'a Node,
) -> impl Iterator<Item = &'static Component> + 'a {
    COMPONENTS.iter().filter(move |c| c.runs_on(inv, node))
}

/// The units (daemons) `node` runs, in table order.
pub fn units_on<'a>(inv: &'a Inventory, node: &'a Node) -> impl Iterator<Item = &'static str> + 'a {
    on_node(inv, node).filter_map(|c| c.unit)
}
