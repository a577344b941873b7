//! `[lab]`: the lab's driver and the VM size of each node. Sizes are checked against what a
//! Debian VM needs to boot and what the lab accepts, and a per-node table must name a node.

use std::collections::BTreeMap;

use crate::inventory::raw::{RawLab, RawLabVm, RawNode};
use crate::inventory::validator::Validator;
use crate::inventory::{LabDriver, LabSettings, VmResources};

impl Validator<'_> {
    /// `[lab]` without `suite` (see `runtime`), which it leaves at its default.
    pub(super) fn lab_machines(&mut self, l: &RawLab, nodes: &[RawNode]) -> Option<LabSettings> {
        let driver = match l.driver.as_deref() {
            None => Some(LabDriver::default()),
            Some(s) => {
                let d = LabDriver::parse(s);
                if d.is_none() {
                    let known: Vec<&str> = LabDriver::ALL.iter().map(|d| d.as_str()).collect();
                    self.error(
                        "lab.driver",
                        format!("unknown driver {s:?} (known drivers: {})", known.join(", ")),
                    );
                }
                d
            }
        };
        let all = self.vm_resources(
            "lab",
            &RawLabVm {
                memory_mib: l.memory_mib,
                vcpus: l.vcpus,
            },
            VmResources::DEFAULT,
        );
        let mut per_node = BTreeMap::new();
        for (name, vm) in &l.nodes {
            let field = format!("lab.nodes.{name}");
            if !nodes.iter().any(|n| &n.name == name) {
                self.error(&field, format!("no node named {name:?} in [[nodes]]"));
                continue;
            }
            if let Some(r) = self.vm_resources(&field, vm, all.unwrap_or(VmResources::DEFAULT)) {
                per_node.insert(name.clone(), r);
            }
        }
        let vm = (l.memory_mib.is_some() || l.vcpus.is_some())
            .then_some(all)
            .flatten();
        if driver == Some(LabDriver::Nspawn) && (vm.is_some() || !l.nodes.is_empty()) {
            self.warn(
                "lab",
                "memory_mib and vcpus size the qemu driver's VMs only; this lab's driver is nspawn",
            );
        }
        Some(LabSettings {
            driver: driver?,
            vm,
            nodes: per_node,
            ..LabSettings::default()
        })
    }

    /// memory_mib and vcpus of `table`, each `inherit`'s where left out; `None` if one is out of
    /// range (reported).
    fn vm_resources(
        &mut self,
        table: &str,
        raw: &RawLabVm,
        inherit: VmResources,
    ) -> Option<VmResources> {
        let [memory, vcpus] = VmResources::LIMITS;
        let memory_mib = self.in_limits(table, raw.memory_mib, inherit.memory_mib, memory);
        let vcpus = self.in_limits(table, raw.vcpus, inherit.vcpus, vcpus);
        Some(VmResources {
            memory_mib: memory_mib?,
            vcpus: vcpus?,
        })
    }

    fn in_limits(
        &mut self,
        table: &str,
        value: Option<i64>,
        inherit: u32,
        (key, min, max, unit): (&str, u32, u32, &str),
    ) -> Option<u32> {
        let Some(v) = value else { return Some(inherit) };
        match u32::try_from(v) {
            Ok(v) if (min..=max).contains(&v) => Some(v),
            _ => {
                self.error(
                    &format!("{table}.{key}"),
                    format!("{v} is out of range: a lab VM has {min} to {max} {unit}"),
                );
                None
            }
        }
    }
}
