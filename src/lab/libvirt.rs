//! libvirt XML for a qemu lab (`hardway lab render-libvirt`): a domain per node and the lab's
//! network, for those who manage their guests with virsh or virt-manager, as the seed's
//! cluster was. Each domain is rendered from the same [`VmSpec`] as the QEMU command line of
//! `hardway lab up`, so both describe the same machine: kernel, initramfs and command line,
//! memory and vCPUs from the inventory, the qcow2 overlay on the lab's base image as vda, the
//! seed disk as vdb, a virtio NIC with the lab's MAC on the lab's bridge, the serial console
//! logged to the node's console.log. Templates: templates/libvirt/.
//!
//! Rendering reads nothing but the inventory and writes nothing but the XML; the disks the
//! XML names are made by [`super::qemu::prepare_images`] (or `lab up`).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::LabOptions;
use super::error::LabError;
use super::layout::Layout;
use super::net;
use super::qemu::vm::{Accel, VmSpec};
use super::qemu::{vm_image, vm_spec};
use crate::inventory::Inventory;

const TEMPLATES: &[(&str, &str)] = &[
    (
        "domain",
        include_str!("../../templates/libvirt/domain.xml.tera"),
    ),
    (
        "network",
        include_str!("../../templates/libvirt/network.xml.tera"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum LibvirtError {
    #[error(transparent)]
    Lab(#[from] LabError),
    /// A template failed to render: a bug in hardway, not in the inventory.
    #[error("rendering the libvirt {template} template: {source:#}")]
    Template {
        template: &'static str,
        source: tera::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One XML file: its name in the output directory and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlFile {
    pub name: String,
    pub text: String,
}

#[derive(Serialize)]
struct DomainCtx<'a> {
    vm: &'a VmSpec,
    cluster: &'a str,
    /// libvirt's domain type: `kvm`, or `qemu` for software emulation.
    domain_type: &'static str,
    network: &'a str,
    file: &'a str,
}

#[derive(Serialize)]
struct NetworkCtx<'a> {
    name: &'a str,
    cluster: &'a str,
    bridge: &'a str,
    gateway: String,
    prefix: u8,
    file: &'a str,
}

/// XML's five special characters; everything else goes through as is (paths stay readable).
fn xml_escape(value: &tera::Value, _: &HashMap<String, tera::Value>) -> tera::Result<tera::Value> {
    let s = tera::try_get_value!("xml", "value", String, value);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    Ok(tera::Value::String(out))
}

fn tera() -> Result<tera::Tera, LibvirtError> {
    let mut t = tera::Tera::default();
    // Escaping is explicit (`| xml`): tera's own is HTML's, which also rewrites every `/`.
    t.autoescape_on(Vec::new());
    t.register_filter("xml", xml_escape);
    t.add_raw_templates(TEMPLATES.iter().copied())
        .map_err(|source| LibvirtError::Template {
            template: "all",
            source,
        })?;
    Ok(t)
}

fn render_one(
    t: &tera::Tera,
    template: &'static str,
    ctx: &impl Serialize,
) -> Result<String, LibvirtError> {
    let ctx = tera::Context::from_serialize(ctx)
        .map_err(|source| LibvirtError::Template { template, source })?;
    let mut text = t
        .render(template, &ctx)
        .map_err(|source| LibvirtError::Template { template, source })?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// The network XML (`network-<name>.xml`) and a domain XML per node (`domain-<node>.xml`), in
/// inventory order. `accel` picks the domain type: KVM for hosts where it works, TCG otherwise.
pub fn render(
    inv: &Inventory,
    opts: &LabOptions,
    accel: Accel,
) -> Result<Vec<XmlFile>, LibvirtError> {
    let layout = Layout::new(inv, opts)?;
    let lab_net = net::lab_network(inv)?;
    let img = vm_image(inv, opts)?;
    let t = tera()?;
    // The lab's bridge name doubles as the libvirt network's name.
    let network = layout.bridge.as_str();
    let net_file = format!("network-{network}.xml");
    let mut files = vec![XmlFile {
        text: render_one(
            &t,
            "network",
            &NetworkCtx {
                name: network,
                cluster: &layout.cluster,
                bridge: &layout.bridge,
                gateway: lab_net.gateway.to_string(),
                prefix: lab_net.subnet.prefix_len(),
                file: &net_file,
            },
        )?,
        name: net_file,
    }];
    let domain_type = match accel {
        Accel::Kvm => "kvm",
        Accel::Tcg => "qemu",
    };
    for node in &layout.nodes {
        let vm = vm_spec(inv, &layout, node, &img);
        let file = format!("domain-{}.xml", node.name);
        let ctx = DomainCtx {
            vm: &vm,
            cluster: &layout.cluster,
            domain_type,
            network,
            file: &file,
        };
        files.push(XmlFile {
            text: render_one(&t, "domain", &ctx)?,
            name: file,
        });
    }
    Ok(files)
}

/// [`render`] into `out` (created if missing); returns the paths written.
pub fn write(
    inv: &Inventory,
    opts: &LabOptions,
    accel: Accel,
    out: &Path,
) -> Result<Vec<PathBuf>, LibvirtError> {
    let files = render(inv, opts, accel)?;
    fs::create_dir_all(out).map_err(|source| LibvirtError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    files
        .into_iter()
        .map(|f| {
            let path = out.join(&f.name);
            fs::write(&path, f.text).map_err(|source| LibvirtError::Write {
                path: path.clone(),
                source,
            })?;
            Ok(path)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qemu_lab() -> Inventory {
        crate::inventory::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qemu-lab.toml"),
        )
        .unwrap()
    }

    #[test]
    fn special_characters_are_escaped_and_paths_are_not() {
        let v = xml_escape(&tera::Value::from("/run/a&b/<c>'d\""), &HashMap::new()).unwrap();
        assert_eq!(v.as_str().unwrap(), "/run/a&amp;b/&lt;c&gt;&apos;d&quot;");
    }

    /// The domain describes the machine `lab up` starts: the same files, MAC, sizes and kernel
    /// command line as QEMU's arguments.
    #[test]
    fn each_domain_is_the_vm_that_lab_up_starts() {
        let inv = qemu_lab();
        let opts = LabOptions {
            state_dir: "/run/x".into(),
            cache_dir: "/var/cache/x".into(),
            ..LabOptions::default()
        };
        let files = render(&inv, &opts, Accel::Tcg).unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "network-hw-qlab.xml",
                "domain-qlab-m1.xml",
                "domain-qlab-w1.xml"
            ]
        );
        let layout = Layout::new(&inv, &opts).unwrap();
        let img = vm_image(&inv, &opts).unwrap();
        for (node, file) in layout.nodes.iter().zip(&files[1..]) {
            let vm = vm_spec(&inv, &layout, node, &img);
            let args: Vec<String> =
                super::super::qemu::vm::qemu_args(&vm, Accel::Tcg, Path::new("/p"))
                    .into_iter()
                    .map(|a| a.into_string().unwrap())
                    .collect();
            let text = &file.text;
            assert!(text.contains("<domain type=\"qemu\">"), "{text}");
            assert!(text.contains(&format!("<memory unit=\"MiB\">{}</memory>", vm.memory_mib)));
            assert!(text.contains(&format!("<vcpu placement=\"static\">{}</vcpu>", vm.vcpus)));
            assert!(text.contains(&format!("<mac address=\"{}\"/>", vm.mac)));
            assert!(text.contains(&format!("<cmdline>{}</cmdline>", vm.cmdline)));
            assert!(args.contains(&vm.cmdline) && args.iter().any(|a| a.contains(&vm.mac)));
            for path in [
                &vm.disk,
                &vm.seed,
                &vm.base_disk,
                &vm.kernel,
                &vm.initrd,
                &vm.console_log,
            ] {
                let p = path.display().to_string();
                assert!(
                    text.contains(&format!("{p}<")) || text.contains(&format!("\"{p}\"")),
                    "{p} missing:\n{text}"
                );
            }
            assert!(vm.disk.starts_with("/run/x/qlab") && vm.base_disk.starts_with("/var/cache/x"));
        }
        assert!(
            files[0]
                .text
                .contains("<ip address=\"10.231.0.1\" prefix=\"24\"/>"),
            "{}",
            files[0].text
        );
        let kvm = render(&inv, &opts, Accel::Kvm).unwrap();
        assert!(
            kvm[1].text.contains("<domain type=\"kvm\">")
                && kvm[1].text.contains("host-passthrough")
        );
    }
}
