//! A VM's plug into the lab bridge: a persistent tap device that QEMU opens by name, and the
//! MAC address of the VM's virtio NIC. Both are derived from the cluster and node names, like
//! the nspawn lab's veths, so that `down` finds what an older `up` made.

use super::super::error::Result;
use super::super::layout::fnv1a;
use super::super::net::{delete_link, link_exists};
use super::super::tools::{command, run};

/// `hwt` and 12 hex digits: 15 bytes, the most an interface name may have (IFNAMSIZ - 1).
pub(crate) fn tap_name(cluster: &str, node: &str) -> String {
    format!(
        "hwt{:012x}",
        fnv1a(&format!("{cluster}/{node}")) & 0xffff_ffff_ffff
    )
}

/// QEMU's own prefix 52:54:00 (locally administered), then three bytes of the names' hash.
pub(crate) fn mac_address(cluster: &str, node: &str) -> String {
    let h = fnv1a(&format!("mac {cluster}/{node}"));
    format!(
        "52:54:00:{:02x}:{:02x}:{:02x}",
        (h >> 16) & 0xff,
        (h >> 8) & 0xff,
        h & 0xff
    )
}

/// Creates the tap if missing and plugs it into `bridge`, up. Idempotent. The tap is
/// persistent (it outlives QEMU), so a VM restarted by a later `up` finds it in place.
pub(super) fn ensure_tap(name: &str, bridge: &str) -> Result<()> {
    if !link_exists(name) {
        run(command("ip").args(["tuntap", "add", "dev", name, "mode", "tap"]))?;
    }
    run(command("ip").args(["link", "set", "dev", name, "master", bridge, "up"]))?;
    Ok(())
}

/// Deletes the tap if it exists. Idempotent.
pub(super) fn remove_tap(name: &str) -> Result<()> {
    if link_exists(name) {
        delete_link(name)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names already on hosts (labs of earlier binaries) must keep matching.
    #[test]
    fn names_are_stable_and_fit() {
        let t = tap_name("lab", "lab-m1");
        assert_eq!(t.len(), 15);
        assert_eq!(
            t, "hwt77f27cafa64d",
            "the same hash as the nspawn lab's veth, another prefix"
        );
        assert_ne!(t, tap_name("lab", "lab-m2"));
        let mac = mac_address("qlab", "qlab-m1");
        assert!(mac.starts_with("52:54:00:") && mac.len() == 17, "{mac}");
        assert_ne!(mac, mac_address("qlab", "qlab-w1"));
    }
}
