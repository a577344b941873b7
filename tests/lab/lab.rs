//! End to end test of `hardway::lab` on tests/fixtures/lab-etcd.toml: boots one systemd-nspawn machine per
//! node, checks each over ssh, checks that a second `up` changes nothing and that `down` leaves
//! no process, namespace, interface or state behind.
//!
//! Needs root and debootstrap, systemd-container, iproute2 and openssh-client; without them it
//! fails, naming what to install (it never skips). The root fs cache is the real one, so
//! debootstrap runs only on the first run on a machine. Everything is in one test function
//! because two labs of the same cluster cannot share the host's bridge and addresses.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::common::lab::LabGuard;
use hardway::inventory::Inventory;
use hardway::lab::{Lab, LabOptions};

const STATE_DIR: &str = "/run/hardway/test-lab";

fn ssh_ok(lab: &Lab, address: IpAddr, cmd: &str) -> String {
    crate::common::ok(lab.ssh(address).arg(cmd))
        .trim()
        .to_string()
}

fn pids(lab: &Lab) -> Vec<Option<u32>> {
    lab.nodes.iter().map(|n| n.pid).collect()
}

/// PIDs of every systemd-nspawn whose command line mentions `dir`.
fn nspawns_under(dir: &Path) -> Vec<u32> {
    let dir = dir.display().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("systemd-nspawn") && cmdline.contains(&dir) {
            found.push(pid);
        }
    }
    found
}

fn assert_lab_healthy(inv: &Inventory, lab: &Lab) {
    assert_eq!(lab.nodes.len(), inv.nodes.len());
    for (node, st) in inv.nodes.iter().zip(&lab.nodes) {
        assert_eq!(st.name, node.name);
        assert_eq!(st.address, node.address);
        assert!(
            st.running && st.reachable && st.pid.is_some(),
            "{} is not up: {st:?}",
            node.name
        );
        let state = st.system_state.as_deref().unwrap_or("");
        assert!(
            state == "running" || state == "degraded",
            "{}: system state {state:?}",
            node.name
        );
    }
}

#[test]
fn lab_boots_every_node_is_idempotent_and_leaves_nothing_behind() {
    // Fails naming every missing tool and its package (the library's own table).
    let guard = LabGuard::new(STATE_DIR);
    let inv = &guard.inv;
    let lab_dir = Path::new(STATE_DIR).join(&inv.cluster.name);
    let bridge = format!("hw-{}", inv.cluster.name);

    // A crashed earlier run may have left its lab behind.
    guard.down();

    let t = Instant::now();
    let first = guard.up();
    eprintln!("lab up (from scratch) took {:.1?}", t.elapsed());
    for n in &first.nodes {
        eprintln!(
            "  {} {} pid {:?} {:?}",
            n.name, n.address, n.pid, n.system_state
        );
    }
    assert_lab_healthy(inv, &first);
    assert_eq!(
        crate::common::mode(&first.ssh_key),
        0o600,
        "the lab key must be private"
    );
    assert!(first.ssh_key.starts_with(&lab_dir) && first.known_hosts.starts_with(&lab_dir));

    let mut machine_ids = BTreeSet::new();
    for node in &inv.nodes {
        let a = node.address;
        assert_eq!(
            ssh_ok(&first, a, "hostname"),
            node.name,
            "hostname of {}",
            node.name
        );
        ssh_ok(
            &first,
            a,
            "test -x /usr/bin/etcd && test -x /usr/bin/etcdctl && test -x /usr/sbin/haproxy",
        );
        // The packaged units stay off: the deploy installs and starts its own.
        let enabled = crate::common::run(
            first
                .ssh(a)
                .arg("systemctl is-enabled etcd.service haproxy.service"),
        );
        assert_eq!(
            String::from_utf8_lossy(&enabled.stdout)
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["disabled", "disabled"]
        );
        machine_ids.insert(ssh_ok(&first, a, "cat /etc/machine-id"));
        // Nodes reach each other over the bridge, not only the host.
        for other in inv.nodes.iter().filter(|o| o.name != node.name) {
            ssh_ok(
                &first,
                a,
                &format!("timeout 5 bash -c '</dev/tcp/{}/22'", other.address),
            );
        }
    }
    assert_eq!(
        machine_ids.len(),
        inv.nodes.len(),
        "every node needs its own machine-id: {machine_ids:?}"
    );

    let ports =
        crate::common::ok(Command::new("ip").args(["-o", "link", "show", "master", &bridge]));
    let veths: Vec<String> = ports
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap().to_string())
        .collect();
    assert_eq!(
        veths.len(),
        inv.nodes.len(),
        "one veth per node on {bridge}: {ports}"
    );

    let t = Instant::now();
    let second = guard.up();
    eprintln!("lab up (already up) took {:.1?}", t.elapsed());
    assert_lab_healthy(inv, &second);
    assert_eq!(
        pids(&second),
        pids(&first),
        "a second up must leave running machines alone"
    );

    let status = guard.status();
    assert_lab_healthy(inv, &status);
    assert_eq!(pids(&status), pids(&first));

    let t = Instant::now();
    guard.down();
    eprintln!("lab down took {:.1?}", t.elapsed());

    let netns = crate::common::ok(Command::new("ip").args(["netns", "list"]));
    for node in &inv.nodes {
        let ns = format!("hw-{}-{}", inv.cluster.name, node.name);
        assert!(
            !netns.split_whitespace().any(|w| w == ns),
            "netns {ns} left behind:\n{netns}"
        );
    }
    let links = crate::common::ok(Command::new("ip").args(["-o", "link", "show"]));
    let names: Vec<&str> = links
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap())
        .collect();
    assert!(
        !names.contains(&bridge.as_str()),
        "bridge {bridge} left behind:\n{links}"
    );
    for v in &veths {
        assert!(
            !names.contains(&v.as_str()),
            "veth {v} left behind:\n{links}"
        );
    }
    assert_eq!(
        nspawns_under(&lab_dir),
        Vec::<u32>::new(),
        "systemd-nspawn processes left behind"
    );
    assert!(!lab_dir.exists(), "{} left behind", lab_dir.display());
    assert!(
        LabOptions::default()
            .cache_dir
            .join(format!("{}-rootfs/etc/hardway-lab-rootfs", inv.lab.suite))
            .is_file(),
        "down must keep the root fs cache"
    );

    let after = guard.status();
    assert!(
        after
            .nodes
            .iter()
            .all(|n| !n.running && !n.reachable && n.pid.is_none()),
        "{:?}",
        after.nodes
    );
    guard.down();
}
