//! `[lab]`'s machines: the driver, and the VM size of each node. Only the local lab reads it;
//! deploy and verify see SSH hosts whichever driver made them.

use std::fmt;

use super::LabSettings;

/// What each lab node is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LabDriver {
    /// A systemd-nspawn container on the host's kernel: boots in seconds, light on memory.
    #[default]
    Nspawn,
    /// A QEMU virtual machine with its own kernel, disks and NIC (KVM when it works, else
    /// software emulation).
    Qemu,
}

impl LabDriver {
    pub const ALL: [LabDriver; 2] = [LabDriver::Nspawn, LabDriver::Qemu];

    pub fn as_str(self) -> &'static str {
        match self {
            LabDriver::Nspawn => "nspawn",
            LabDriver::Qemu => "qemu",
        }
    }

    pub fn parse(s: &str) -> Option<LabDriver> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

impl fmt::Display for LabDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Memory and virtual CPUs of one VM (qemu driver only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmResources {
    pub memory_mib: u32,
    pub vcpus: u32,
}

impl VmResources {
    /// Debian with systemd, sshd and etcd runs in well under 1 GiB.
    pub const DEFAULT: VmResources = VmResources {
        memory_mib: 1024,
        vcpus: 1,
    };
    /// The smallest and largest values accepted, per field: (field, min, max, unit).
    pub const LIMITS: [(&'static str, u32, u32, &'static str); 2] = [
        ("memory_mib", 256, 262_144, "MiB"),
        ("vcpus", 1, 64, "vCPUs"),
    ];
}

impl LabSettings {
    /// The VM size of the node `name`.
    pub fn vm(&self, name: &str) -> VmResources {
        self.nodes
            .get(name)
            .copied()
            .or(self.vm)
            .unwrap_or(VmResources::DEFAULT)
    }
}
