//! The network: a bridge with the gateway address, and per host a network namespace whose
//! `eth0` is the peer of a host-side veth on that bridge. The building blocks are public, and
//! idempotent where they say so, so that other local fleets (the fan-out bench) set up and
//! tear down their hosts exactly as the lab does.

use std::collections::BTreeSet;
use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;

use super::error::{LabError, Result};
pub use super::layout::HostLink;
use super::layout::{Layout, NodeLayout};
use super::process;
use super::tools::{command, output, run};
use crate::inventory::Inventory;

fn ip(args: &[&str]) -> Result<String> {
    run(command("ip").args(args))
}

pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Deletes a network interface (a veth takes its peer along).
pub fn delete_link(name: &str) -> Result<()> {
    ip(&["link", "del", name]).map(drop)
}

/// Every network interface of the host.
pub fn link_names() -> Vec<String> {
    let entries = fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten();
    entries
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Every named network namespace (`ip netns list`).
pub fn netns_names() -> Result<Vec<String>> {
    Ok(ip(&["netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// The processes in a host's network namespace.
pub fn netns_pids(link: &HostLink) -> Result<Vec<u32>> {
    Ok(ip(&["netns", "pids", &link.netns])?
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

/// The alias of a bridge, which names whoever created it.
pub fn bridge_owner(bridge: &str) -> Option<String> {
    fs::read_to_string(Path::new("/sys/class/net").join(bridge).join("ifalias"))
        .ok()
        .map(|s| s.trim().to_string())
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Refuses a subnet that an interface other than `bridge`, or a route not through it, already
/// covers: the bridge would take someone else's traffic.
pub fn check_subnet_free(bridge: &str, subnet: Ipv4Net) -> Result<()> {
    let in_use = |user: String| LabError::SubnetInUse {
        subnet,
        bridge: bridge.to_string(),
        user,
    };
    for line in ip(&["-o", "-4", "addr", "show"])?.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        if let (Some(dev), Some(Ok(a))) = (t.get(1), t.get(3).map(|a| a.parse::<Ipv4Net>()))
            && *dev != bridge
            && overlaps(a.trunc(), subnet)
        {
            return Err(in_use(format!("{dev} has address {a}")));
        }
    }
    for line in ip(&["-o", "-4", "route", "show"])?.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        let Some(dest) = t.iter().find_map(|w| {
            w.parse::<Ipv4Net>()
                .ok()
                .or_else(|| w.parse::<Ipv4Addr>().ok().map(Ipv4Net::from))
        }) else {
            continue;
        };
        let dev = t
            .iter()
            .position(|w| *w == "dev")
            .and_then(|i| t.get(i + 1))
            .copied()
            .unwrap_or("");
        if dev != bridge && overlaps(dest, subnet) {
            return Err(in_use(format!("routed: {line}")));
        }
    }
    Ok(())
}

/// Creates the bridge `name` (with `alias` as its owner mark) if missing, gives it `gateway`
/// (address and prefix) and brings it up. Idempotent.
pub fn ensure_bridge(name: &str, alias: &str, gateway: Ipv4Net) -> Result<()> {
    let created = !link_exists(name);
    if created {
        ip(&["link", "add", name, "type", "bridge"])?;
        ip(&["link", "set", "dev", name, "alias", alias])?;
    }
    let cidr = gateway.to_string();
    if created
        || !ip(&["-o", "-4", "addr", "show", "dev", name])?
            .split_whitespace()
            .any(|w| w == cidr)
    {
        ip(&["addr", "add", &cidr, "dev", name])?;
    }
    ip(&["link", "set", "dev", name, "up"])?;
    Ok(())
}

/// Plugs a host into `bridge`: its namespace, the veth pair, `address/prefix_len` on `eth0`,
/// both ends and `lo` up, and a default route through `gateway` if given. Idempotent, and
/// repairs a half-made pair.
pub fn add_host_link(
    bridge: &str,
    link: &HostLink,
    address: IpAddr,
    prefix_len: u8,
    gateway: Option<Ipv4Addr>,
) -> Result<()> {
    let (ns, veth) = (link.netns.as_str(), link.veth.as_str());
    let new_netns = !link.netns_path().exists();
    if new_netns {
        ip(&["netns", "add", ns])?;
    }
    let pair_ok = !new_netns
        && link_exists(veth)
        && output(command("ip").args(["-n", ns, "link", "show", "dev", "eth0"]))?
            .status
            .success();
    if !pair_ok {
        // Half a pair (the namespace recreated, or a leftover eth0) cannot be repaired; redo both.
        if link_exists(veth) {
            delete_link(veth)?;
        }
        if !new_netns {
            let _ = output(command("ip").args(["-n", ns, "link", "del", "eth0"]));
        }
        ip(&[
            "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ])?;
    }
    ip(&["link", "set", "dev", veth, "master", bridge, "up"])?;
    let cidr = format!("{address}/{prefix_len}");
    if !pair_ok
        || !ip(&["-n", ns, "-o", "-4", "addr", "show", "dev", "eth0"])?
            .split_whitespace()
            .any(|w| w == cidr)
    {
        ip(&["-n", ns, "addr", "add", &cidr, "dev", "eth0"])?;
    }
    ip(&["-n", ns, "link", "set", "dev", "eth0", "up"])?;
    ip(&["-n", ns, "link", "set", "dev", "lo", "up"])?;
    if let Some(gateway) = gateway {
        ip(&[
            "-n",
            ns,
            "route",
            "replace",
            "default",
            "via",
            &gateway.to_string(),
            "dev",
            "eth0",
        ])?;
    }
    Ok(())
}

/// Unplugs a host: kills whatever still runs in its namespace, deletes the veth and the
/// namespace. Tries every step, and returns the first failure. Idempotent.
pub fn remove_host_link(link: &HostLink) -> Result<()> {
    let mut first_error = None;
    let mut note = |r: Result<()>| {
        if let Err(e) = r {
            first_error.get_or_insert(e);
        }
    };
    if link.netns_path().exists() {
        // A namespace outlives its file while any process is inside, and keeps its veth.
        note(netns_pids(link).and_then(|pids| {
            process::kill(&pids, || format!("in network namespace {}", link.netns))
        }));
    }
    if link_exists(&link.veth) {
        note(delete_link(&link.veth));
    }
    if link.netns_path().exists() {
        note(ip(&["netns", "del", &link.netns]).map(drop));
    }
    first_error.map_or(Ok(()), Err)
}

/// Deletes a bridge and every port still on it (ports that do not delete are left to the
/// kernel). Returns the names deleted, for [`wait_links_gone`].
pub fn remove_bridge(bridge: &str) -> Result<Vec<String>> {
    let mut links = Vec::new();
    if !link_exists(bridge) {
        return Ok(links);
    }
    if let Ok(ports) = fs::read_dir(Path::new("/sys/class/net").join(bridge).join("brif")) {
        for p in ports.flatten() {
            let name = p.file_name().to_string_lossy().into_owned();
            if link_exists(&name) {
                let _ = delete_link(&name);
            }
            links.push(name);
        }
    }
    delete_link(bridge)?;
    links.push(bridge.to_string());
    Ok(links)
}

/// Waits until none of `links` exists: namespace teardown happens asynchronously in the kernel.
pub fn wait_links_gone(links: &[String], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while links.iter().any(|l| link_exists(l)) {
        if Instant::now() >= deadline {
            return Err(LabError::LinksLeft(
                links.iter().filter(|l| link_exists(l)).cloned().collect(),
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The lab's network.

/// The one /24 every node sits on, and the bridge's address in it.
pub(super) struct Net {
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
}

pub(super) fn lab_network(inv: &Inventory) -> Result<Net> {
    let unsupported = |reason: String| Err(LabError::Inventory(reason));
    let mut addrs = Vec::new();
    for n in &inv.nodes {
        match n.address {
            IpAddr::V4(a) => addrs.push((n.name.as_str(), a)),
            IpAddr::V6(a) => {
                return unsupported(format!(
                    "node {}: the lab supports IPv4 node addresses only, {a} is IPv6",
                    n.name
                ));
            }
        }
    }
    let Some(&(first_name, first)) = addrs.first() else {
        return unsupported("the inventory has no nodes".into());
    };
    let subnet = Ipv4Net::new(first, 24)
        .expect("24 is a valid prefix")
        .trunc();
    for (name, a) in &addrs {
        if !subnet.contains(a) {
            return unsupported(format!(
                "the lab puts all nodes on one /24 bridge, but node {name} ({a}) is outside {subnet} (where {first_name} is)"
            ));
        }
        if *a == subnet.network() || *a == subnet.broadcast() {
            return unsupported(format!(
                "node {name}: {a} is the network or broadcast address of {subnet}"
            ));
        }
    }
    let mut used: BTreeSet<Ipv4Addr> = addrs.iter().map(|(_, a)| *a).collect();
    if let Some(IpAddr::V4(lb)) = inv.load_balancer.as_ref().map(|l| l.address) {
        used.insert(lb);
    }
    let octets = subnet.network().octets();
    let gateway = [1u8, 254]
        .into_iter()
        .map(|last| Ipv4Addr::new(octets[0], octets[1], octets[2], last))
        .find(|g| !used.contains(g));
    let Some(gateway) = gateway else {
        return unsupported(format!(
            "the bridge needs .1 or .254 of {subnet}, but nodes use both"
        ));
    };
    Ok(Net { subnet, gateway })
}

/// Refuses a bridge of this name that some other lab (or anyone else) created, and a subnet
/// the host already uses elsewhere: both would mean routing someone else's traffic into the lab.
pub(super) fn check_bridge_available(layout: &Layout, net: &Net) -> Result<()> {
    let sys = Path::new("/sys/class/net").join(&layout.bridge);
    if sys.exists() {
        if !sys.join("bridge").is_dir() {
            return Err(LabError::NotABridge {
                name: layout.bridge.clone(),
                cluster: layout.cluster.clone(),
            });
        }
        let owner = bridge_owner(&layout.bridge).unwrap_or_default();
        if owner != layout.owner {
            return Err(LabError::ForeignBridge {
                bridge: layout.bridge.clone(),
                owner,
                ours: layout.owner.clone(),
            });
        }
    }
    check_subnet_free(&layout.bridge, net.subnet)
}

pub(super) fn ensure_lab_bridge(layout: &Layout, net: &Net) -> Result<()> {
    let gateway = Ipv4Net::new(net.gateway, net.subnet.prefix_len()).expect("the subnet's prefix");
    ensure_bridge(&layout.bridge, &layout.owner, gateway)
}

pub(super) fn ensure_node_network(layout: &Layout, net: &Net, node: &NodeLayout) -> Result<()> {
    add_host_link(
        &layout.bridge,
        &node.link,
        node.address,
        net.subnet.prefix_len(),
        Some(net.gateway),
    )
}

pub(super) fn teardown_network(layout: &Layout, nodes: &[NodeLayout]) -> Result<()> {
    let mut links: Vec<String> = Vec::new();
    for node in nodes {
        remove_host_link(&node.link)?;
        links.push(node.link.veth.clone());
    }
    // Ports the inventory no longer names are still this lab's: the bridge is.
    links.extend(remove_bridge(&layout.bridge)?);
    links.push(layout.bridge.clone());
    wait_links_gone(&links, process::KILL_TIMEOUT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_is_a_free_end_of_the_nodes_24() {
        let inv = crate::inventory::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lab-etcd.toml"),
        )
        .unwrap();
        let net = lab_network(&inv).unwrap();
        assert_eq!(net.subnet.to_string(), "10.213.0.0/24");
        assert_eq!(net.gateway, Ipv4Addr::new(10, 213, 0, 1));
    }

    #[test]
    fn subnets_overlap_when_either_contains_the_other() {
        let n = |s: &str| s.parse::<Ipv4Net>().unwrap();
        assert!(overlaps(n("10.0.0.0/8"), n("10.214.0.0/24")));
        assert!(overlaps(n("10.214.0.0/24"), n("10.214.0.7/32")));
        assert!(!overlaps(n("10.213.0.0/24"), n("10.214.0.0/24")));
    }
}
