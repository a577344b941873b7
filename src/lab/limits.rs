//! Memory and CPU limits per machine, so that one student's runaway etcd cannot starve the
//! other labs on the host.
//!
//! They are written as systemd's resource-control properties (`MemoryMax=`, `CPUQuota=`), the
//! names `systemd-nspawn --property` takes. That flag needs systemd as the host's PID 1 (it
//! asks it for a scope unit), which a lab host may not have: the lab does what systemd would
//! do, on the machine's own cgroups, which it creates anyway. A cgroup v2 hierarchy with the
//! controllers gets `memory.max` and `cpu.max`; a v1 `memory` or `cpu` hierarchy (a hybrid
//! host like this one) `memory.limit_in_bytes` and `cpu.cfs_quota_us`. Asking for a limit on
//! a host that has none of these is an error, never a silent no-op.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{LabError, Result, io_error};

/// The CFS period the quota is a share of (systemd's default, 100 ms).
const CPU_PERIOD_US: u64 = 100_000;

/// Limits for every machine of a lab; none by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineLimits {
    /// `MemoryMax=`, in bytes.
    pub memory_max: Option<u64>,
    /// `CPUQuota=`, in percent of one CPU (200 = two CPUs).
    pub cpu_quota: Option<u32>,
}

impl MachineLimits {
    pub fn is_none(&self) -> bool {
        self.memory_max.is_none() && self.cpu_quota.is_none()
    }

    /// As systemd properties, e.g. `MemoryMax=1G CPUQuota=50%`.
    pub fn properties(&self) -> String {
        let mut out = Vec::new();
        if let Some(m) = self.memory_max {
            out.push(format!("MemoryMax={}", format_bytes(m)));
        }
        if let Some(q) = self.cpu_quota {
            out.push(format!("CPUQuota={q}%"));
        }
        if out.is_empty() {
            "none".into()
        } else {
            out.join(" ")
        }
    }
}

/// `1G`, `512M`, `300K` or plain bytes, as systemd's `MemoryMax=` takes them (base 1024).
pub fn parse_memory(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (like 512M or 1G)"))?;
    let mult: u64 = match unit {
        "" => 1,
        "K" | "k" => 1 << 10,
        "M" | "m" => 1 << 20,
        "G" | "g" => 1 << 30,
        "T" | "t" => 1 << 40,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (K, M, G or T)")),
    };
    let bytes = n
        .checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))?;
    // Below that a machine's systemd does not even boot.
    if bytes < 64 << 20 {
        return Err(format!(
            "{s:?} is less than 64M, too little for a machine to boot"
        ));
    }
    Ok(bytes)
}

/// `50%` (of one CPU), as systemd's `CPUQuota=` takes it.
pub fn parse_cpu_quota(s: &str) -> std::result::Result<u32, String> {
    let n = s
        .trim()
        .strip_suffix('%')
        .ok_or_else(|| format!("{s:?}: a percentage of one CPU, like 50% or 200%"))?;
    match n.parse::<u32>() {
        Ok(q) if (1..=100_000).contains(&q) => Ok(q),
        _ => Err(format!("{s:?}: a percentage from 1% up, like 50% or 200%")),
    }
}

fn format_bytes(b: u64) -> String {
    for (unit, size) in [
        ("T", 1u64 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ] {
        if b.is_multiple_of(size) {
            return format!("{}{unit}", b / size);
        }
    }
    b.to_string()
}

fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(io_error("write", path))
}

/// Writes the limits into the machine's cgroups (one per hierarchy), before its first process
/// joins them. Returns an error when a limit was asked for and no cgroup could carry it.
pub(super) fn apply(cgroups: &[PathBuf], limits: &MachineLimits) -> Result<()> {
    let (mut memory, mut cpu) = (limits.memory_max.is_none(), limits.cpu_quota.is_none());
    for cg in cgroups {
        if let Some(bytes) = limits.memory_max {
            if cg.join("memory.max").is_file() {
                write(&cg.join("memory.max"), &bytes.to_string())?;
                memory = true;
            } else if cg.join("memory.limit_in_bytes").is_file() {
                write(&cg.join("memory.limit_in_bytes"), &bytes.to_string())?;
                memory = true;
            }
        }
        if let Some(q) = limits.cpu_quota {
            let quota = u64::from(q) * CPU_PERIOD_US / 100;
            if cg.join("cpu.max").is_file() {
                write(&cg.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
                cpu = true;
            } else if cg.join("cpu.cfs_quota_us").is_file() {
                write(&cg.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                write(&cg.join("cpu.cfs_quota_us"), &quota.to_string())?;
                cpu = true;
            }
        }
    }
    if memory && cpu {
        return Ok(());
    }
    let missing = if memory { "CPUQuota" } else { "MemoryMax" };
    Err(LabError::Inventory(format!(
        "{missing} cannot be applied: none of the machine's cgroups ({}) has that controller",
        cgroups
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// inotify instances a booted machine takes from root's per-user limit (its systemd, journald,
/// udevd, logind and dbus: 7 on trixie), with room to spare. Machines share the host's kernel
/// and root's uid, so Linux's default limit of 128 ends at about 17 machines: systemd then
/// exits at boot with "Failed to create control group inotify object: Too many open files".
const INOTIFY_PER_MACHINE: u64 = 12;
/// What the host keeps for itself.
const INOTIFY_HOST: u64 = 128;
const INOTIFY_LIMIT: &str = "/proc/sys/fs/inotify/max_user_instances";

/// Makes sure `fs.inotify.max_user_instances` holds `machines` booted machines: raises it
/// (never lowers it) and returns (old, new) when it did.
pub fn reserve_inotify(machines: usize) -> Result<Option<(u64, u64)>> {
    let path = Path::new(INOTIFY_LIMIT);
    let current: u64 = fs::read_to_string(path)
        .map_err(io_error("read", path))?
        .trim()
        .parse()
        .unwrap_or(0);
    let needed = INOTIFY_HOST + INOTIFY_PER_MACHINE * machines as u64;
    if current >= needed {
        return Ok(None);
    }
    write(path, &needed.to_string())?;
    Ok(Some((current, needed)))
}

/// The memory a machine's cgroups account for now, in bytes (the largest reading of its
/// hierarchies: v1 `memory.usage_in_bytes` or v2 `memory.current`).
pub(super) fn memory_usage(cgroups: &[PathBuf]) -> Option<u64> {
    cgroups
        .iter()
        .flat_map(|cg| ["memory.current", "memory.usage_in_bytes"].map(|f| cg.join(f)))
        .filter_map(|p| fs::read_to_string(p).ok()?.trim().parse::<u64>().ok())
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_quotas_as_systemd_writes_them() {
        assert_eq!(parse_memory("1G"), Ok(1 << 30));
        assert_eq!(parse_memory("768M"), Ok(768 << 20));
        assert!(parse_memory("12M").unwrap_err().contains("less than 64M"));
        assert!(parse_memory("1Q").unwrap_err().contains("unknown unit"));
        assert!(parse_memory("lots").is_err());
        assert_eq!(parse_cpu_quota("50%"), Ok(50));
        assert_eq!(parse_cpu_quota("200%"), Ok(200));
        assert!(parse_cpu_quota("50").is_err());
        assert!(parse_cpu_quota("0%").is_err());
        let l = MachineLimits {
            memory_max: Some(768 << 20),
            cpu_quota: Some(50),
        };
        assert_eq!(l.properties(), "MemoryMax=768M CPUQuota=50%");
        assert_eq!(MachineLimits::default().properties(), "none");
    }

    #[test]
    fn limits_land_in_whichever_hierarchy_has_the_controller() {
        let dir = tempfile::tempdir().unwrap();
        let (v1mem, v1cpu, v2) = (
            dir.path().join("memory"),
            dir.path().join("cpu"),
            dir.path().join("unified"),
        );
        for d in [&v1mem, &v1cpu, &v2] {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(v1mem.join("memory.limit_in_bytes"), "").unwrap();
        fs::write(v1cpu.join("cpu.cfs_quota_us"), "").unwrap();
        fs::write(v1cpu.join("cpu.cfs_period_us"), "").unwrap();
        let limits = MachineLimits {
            memory_max: Some(1 << 30),
            cpu_quota: Some(50),
        };
        apply(&[v1mem.clone(), v1cpu.clone(), v2.clone()], &limits).unwrap();
        assert_eq!(
            fs::read_to_string(v1mem.join("memory.limit_in_bytes")).unwrap(),
            "1073741824"
        );
        assert_eq!(
            fs::read_to_string(v1cpu.join("cpu.cfs_quota_us")).unwrap(),
            "50000"
        );
        // Without a cpu controller anywhere, asking for CPUQuota is an error, not a no-op.
        let e = apply(&[v1mem, v2], &limits).unwrap_err().to_string();
        assert!(e.contains("CPUQuota cannot be applied"), "{e}");
        apply(&[], &MachineLimits::default()).unwrap();
    }
}
