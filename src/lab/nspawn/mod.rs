//! The lab's nspawn driver (`[lab] driver = "nspawn"`, the default): one `systemd-nspawn --boot`
//! container per inventory node, on its own overlay of the cached Debian root fs, in its own
//! cgroups and network namespace, sharing the host's kernel. Per node:
//!
//! ```text
//! <state_dir>/<cluster>/<node>/rootfs     overlay: <cache_dir>/<suite>-rootfs below, upper/ above
//! <state_dir>/<cluster>/<node>/pid        systemd-nspawn's PID
//! <state_dir>/<cluster>/<node>/console.log
//! netns hw-<cluster>-<node>, veth hwv<hash> on bridge hw-<cluster>
//! ```
//!
//! | module | holds |
//! |---|---|
//! | [`machine`] | systemd-nspawn: start, find, stop, cgroups, light sshd hosts |
//! | [`confine`] | what a machine may do to the host: capabilities, seccomp, device rules per machine kind |
//! | `containers` | what workers need for containerd, runc and the kubelet: capabilities, cgroup controllers, host sysctls |

pub mod confine;
mod containers;
pub mod machine;

use std::collections::BTreeSet;
use std::time::Instant;

use super::driver::Driver;
use super::error::Result;
use super::files::{is_mount_point, write_file};
use super::layout::{Layout, NodeLayout};
use super::net::{self, Net};
use super::{Lab, LabOptions, NodeStatus, boot, cache_rootfs, parallel, reserve_machines, rootfs};
use crate::inventory::Inventory;

/// The nspawn driver.
pub(super) struct Nspawn;

impl Driver for Nspawn {
    fn preflight(&self, _opts: &LabOptions) -> Result<()> {
        // systemd-nspawn is one of every lab's tools (the qemu driver builds its image with it).
        Ok(())
    }

    fn up(&self, inv: &Inventory, opts: &LabOptions, layout: &Layout, net: &Net) -> Result<Lab> {
        let lab_pub = rootfs::ensure_lab_key(layout)?;
        let cache = if layout.nodes.iter().any(|n| !is_mount_point(&n.rootfs())) {
            Some(cache_rootfs(opts, inv.lab.suite, inv.lab.software)?)
        } else {
            None
        };
        let hosts = rootfs::hosts_file(inv);
        parallel(&layout.nodes, |node| {
            rootfs::ensure_node_rootfs(cache.as_deref(), node, &hosts, &lab_pub)?;
            if let Some(cgroups) = node.containers {
                containers::prepare_node(node, cgroups)?;
            }
            confine::prepare_node(node)
        })?;
        rootfs::write_known_hosts(layout)?;

        net::ensure_lab_bridge(layout, net)?;
        for node in &layout.nodes {
            net::ensure_node_network(layout, net, node)?;
        }

        if layout.nodes.iter().any(|n| n.containers.is_some()) {
            for (name, old, new) in containers::host_sysctls()? {
                eprintln!(
                    "lab: set {name} from {old} to {new} on this host: the kubelet requires it, and the machines share this kernel"
                );
            }
        }
        let starting = layout
            .nodes
            .iter()
            .filter(|n| machine::node_pid(n).is_none())
            .count();
        reserve_machines(machine::nspawn_pids().len() + starting)?;
        let deadline = Instant::now() + machine::BOOT_TIMEOUT;
        for node in &layout.nodes {
            match machine::node_pid(node) {
                // Rewritten in case it was found by scanning rather than through the pid file.
                Some(pid) => write_file(&node.pid_file(), format!("{pid}\n"))?,
                None => {
                    // check_bridge_available has made sure that the namespace is this lab's.
                    machine::kill_leftovers(layout, node, true)?;
                    machine::start_node(layout, node)?;
                }
            }
        }
        let nodes = parallel(&layout.nodes, |node| {
            boot::wait_ready(&machine::NSPAWN, layout, node, deadline)
        })?;
        Ok(Lab {
            ssh_key: layout.key(),
            known_hosts: layout.known_hosts(),
            nodes,
        })
    }

    fn probe(&self, layout: &Layout, node: &NodeLayout, bridge_is_ours: bool) -> NodeStatus {
        boot::probe(&machine::NSPAWN, layout, node, bridge_is_ours)
    }

    fn memory_usage(&self, layout: &Layout, node: &NodeLayout) -> Option<u64> {
        machine::node_pid(node).and_then(|_| machine::memory_usage(layout, node))
    }

    fn stop(&self, layout: &Layout, nodes: &[NodeLayout]) -> Result<()> {
        let mut pids: BTreeSet<u32> = machine::nspawn_processes()
            .into_iter()
            .filter(|(_, root)| root.starts_with(&layout.dir))
            .map(|(p, _)| p)
            .collect();
        pids.extend(nodes.iter().filter_map(machine::node_pid));
        machine::stop_processes(&pids.into_iter().collect::<Vec<_>>(), machine::STOP_TIMEOUT)
    }

    fn release(&self, layout: &Layout, nodes: &[NodeLayout], network_ours: bool) -> Result<()> {
        for node in nodes {
            machine::kill_leftovers(layout, node, network_ours)?;
        }
        machine::remove_cgroups(layout, nodes)
    }
}

/// Every systemd-nspawn machine running on this host, of any lab (each needs its own inotify
/// instances: [`reserve_machines`]).
pub fn running_machines() -> usize {
    machine::nspawn_pids().len()
}
