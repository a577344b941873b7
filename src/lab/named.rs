//! Named labs: many labs side by side on one host, each made from the same inventory.
//!
//! `hardway lab up --name NAME` (and `hardway class up`, one per student) derives a new
//! inventory from the base one: the cluster is named `NAME`, every node `NAME-<node>`, every
//! address moved into a /24 of its own taken from [`SUBNET_POOL`], and ssh pointed at the
//! lab's own key and known_hosts. The lab layer then gives that inventory what it gives any
//! other: its own bridge (`hw-NAME`), namespaces, cgroups, state directory and key. Nothing
//! of a named lab's machinery is special; only the names and addresses are chosen here.
//!
//! Named labs keep their state under [`NAMED_STATE_DIR`] (not the default lab's
//! `/run/hardway/lab`), so a lab named like the default lab's cluster can never share its
//! directory. Each has a record, `<state_dir>/NAME/lab.json`: its subnet, the inventory it was
//! made from and the one written for it, its PKI directory and its machines' limits. Subnets
//! are chosen under a lock, skipping those that other records hold and those the host uses
//! for anything else; `lab down` removes the lab directory, and the record with it.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use toml_edit::{DocumentMut, Item, Value};

use super::error::{LabError, Result, io_error};
use super::files::{create_dir_all, lock, resolve, write_file};
use super::limits::MachineLimits;
use super::tools::{command, run};
use super::{LabOptions, layout, net};
use crate::inventory::{Inventory, LabDriver, Role};

/// Parent of every named lab's state directory.
pub const NAMED_STATE_DIR: &str = "/run/hardway/labs";

/// Where named labs' subnets come from, one /24 each: clear of the default lab
/// (10.213.0.0/24), the fan-out bench (10.214.0.0/24) and the QEMU helper's tests.
pub const SUBNET_POOL: &str = "10.222.0.0/16";

/// A lab name is also a cluster name, a bridge name and a prefix of machine names.
pub const MAX_NAME_LEN: usize = 20;

/// What is recorded of a named lab while it exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabRecord {
    pub name: String,
    pub subnet: Ipv4Net,
    /// The inventory it was derived from.
    pub base: PathBuf,
    /// The inventory written for it, with its real addresses.
    pub inventory: PathBuf,
    /// Its PKI directory (used by `lab break` and `class grade`).
    pub pki: PathBuf,
    pub limits: MachineLimits,
}

/// Why a name cannot be a lab's, or `None`: a DNS label of lowercase letters, digits and
/// dashes, starting with a letter, at most [`MAX_NAME_LEN`] characters.
pub fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Some(format!(
            "is {} characters long; at most {MAX_NAME_LEN} (it prefixes every machine name)",
            name.len()
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Some("must start with a lowercase letter".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Some(format!(
            "has {c:?}: only lowercase letters, digits and '-' (it becomes a host name)"
        ));
    }
    if name.ends_with('-') || name.contains("--") {
        return Some("must not end with '-' nor contain \"--\"".into());
    }
    None
}

pub fn record_path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join(name).join("lab.json")
}

/// `name` as a lab's, or an error saying why not: checked before any path is made of it (a
/// name like `../..` would load a record, and an inventory, from anywhere).
pub fn check_name(name: &str) -> Result<()> {
    match name_problem(name) {
        None => Ok(()),
        Some(why) => Err(LabError::Inventory(format!(
            "{name:?} is not a lab name: it {why}"
        ))),
    }
}

/// The record of the named lab `name`, if it exists.
pub fn read_record(state_dir: &Path, name: &str) -> Result<Option<LabRecord>> {
    check_name(name)?;
    let path = record_path(state_dir, name);
    match fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| LabError::BadPath {
                path,
                reason: format!("not a lab record: {e}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("read", &path)(e)),
    }
}

/// Every named lab's record under `state_dir`.
pub fn records(state_dir: &Path) -> Vec<LabRecord> {
    let Ok(entries) = fs::read_dir(state_dir) else {
        return Vec::new();
    };
    let mut out: Vec<LabRecord> = entries
        .flatten()
        .filter(|e| name_problem(&e.file_name().to_string_lossy()).is_none())
        .filter_map(|e| {
            read_record(state_dir, &e.file_name().to_string_lossy())
                .ok()
                .flatten()
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// What `class up` says about how far the students' labs are kept apart on this host, for a
/// class made from `base` with `driver` (SECURITY.md, "The classroom").
pub fn isolation_warnings(base: &Inventory, driver: LabDriver) -> Vec<String> {
    let forwarding =
        fs::read_to_string("/proc/sys/net/ipv4/ip_forward").is_ok_and(|v| v.trim() == "1");
    warnings_for(
        base,
        driver,
        forwarding,
        super::nspawn::confine::devices_enforced(),
    )
}

fn warnings_for(
    base: &Inventory,
    driver: LabDriver,
    forwarding: bool,
    devices_enforced: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    // Labs are apart because this host does not route between its bridges; with IPv4
    // forwarding on, one lab's machines could reach another's (through their default route).
    if forwarding {
        out.push("IPv4 forwarding is on (/proc/sys/net/ipv4/ip_forward): machines of one lab can reach another lab's through this host; turn it off, or drop forwarding between hw-* bridges".to_string());
    }
    if driver != LabDriver::Nspawn {
        return out;
    }
    let workers: Vec<&str> = base
        .nodes
        .iter()
        .filter(|n| n.has(Role::Worker))
        .map(|n| n.name.as_str())
        .collect();
    if !workers.is_empty() {
        out.push(format!(
            "every student's {} {} privileged with the nspawn driver (every capability, no seccomp filter: containerd and the kubelet need them) \
             and {} not a boundary between students: root on a worker can reach this host and every other student's lab (keys, PKI, etcd data). \
             `hardway class up --driver qemu` gives every student VMs, which are (SECURITY.md, \"The classroom\")",
            workers.join(", "),
            if workers.len() == 1 { "machine is" } else { "machines are" },
            if workers.len() == 1 { "is" } else { "are" },
        ));
    }
    if !devices_enforced {
        out.push(
            "this host has no cgroup v1 devices hierarchy: the lab cannot restrict the machines' devices (only the missing CAP_MKNOD and \
             CAP_SYS_ADMIN keep confined machines from the host's disks; workers hold both)"
                .to_string(),
        );
    }
    out
}

/// Records the lab, with `preferred` as its subnet if given (the one its inventory already
/// has), else with the first /24 of [`SUBNET_POOL`] that no other record holds and the host
/// does not use. Under a lock, so that labs claimed at once get different subnets.
pub fn claim(
    state_dir: &Path,
    mut record: LabRecord,
    preferred: Option<Ipv4Net>,
    pool: Ipv4Net,
) -> Result<LabRecord> {
    create_dir_all(state_dir)?;
    let _lock = lock(&state_dir.join(".subnets.lock"))?;
    let others: Vec<LabRecord> = records(state_dir)
        .into_iter()
        .filter(|r| r.name != record.name)
        .collect();
    let bridge = layout::bridge_name(&record.name);
    let held = |s: Ipv4Net| {
        others
            .iter()
            .find(|r| r.subnet == s)
            .map(|r| r.name.clone())
    };
    record.subnet = match preferred {
        Some(s) => {
            if let Some(other) = held(s) {
                return Err(LabError::Inventory(format!(
                    "lab {}: its subnet {s} is held by lab {other}",
                    record.name
                )));
            }
            net::check_subnet_free(&bridge, s)?;
            s
        }
        None => {
            let free = pool
                .subnets(24)
                .map_err(|_| {
                    LabError::Inventory(format!("the subnet pool {pool} is smaller than a /24"))
                })?
                .find(|s| held(*s).is_none() && net::check_subnet_free(&bridge, *s).is_ok());
            free.ok_or_else(|| {
                LabError::Inventory(format!(
                    "no free /24 left in {pool} for lab {}",
                    record.name
                ))
            })?
        }
    };
    let path = record_path(state_dir, &record.name);
    create_dir_all(path.parent().expect("has a parent"))?;
    let text = serde_json::to_string_pretty(&record).expect("a record serializes");
    write_file(&path, text + "\n")?;
    Ok(record)
}

/// The subnet an inventory derived for lab `name` already uses: the /24 of its first node,
/// when its cluster is `name`.
pub fn existing_subnet(inv: &Inventory, name: &str) -> Option<Ipv4Net> {
    if inv.cluster.name != name {
        return None;
    }
    match inv.nodes.first()?.address {
        IpAddr::V4(a) => Some(Ipv4Net::new(a, 24).expect("24 is a valid prefix").trunc()),
        IpAddr::V6(_) => None,
    }
}

/// The inventory text of lab `name`: `base` (the text of `base_inv`) with the cluster and
/// node names, addresses, ssh key and known_hosts of the lab, and relative paths made
/// absolute. Comments and everything else stay as they were.
pub fn derive_inventory(
    base: &Inventory,
    base_text: &str,
    name: &str,
    subnet: Ipv4Net,
    opts: &LabOptions,
) -> Result<String> {
    let base_net = net::lab_network(base)?.subnet;
    let lab_dir = resolve(&opts.state_dir)?.join(name);
    let base_dir = resolve(base.source.parent().unwrap_or(Path::new(".")))?;
    let bad = |reason: String| LabError::Inventory(format!("{}: {reason}", base.source.display()));
    let mut doc: DocumentMut = base_text
        .parse()
        .map_err(|e| bad(format!("not valid TOML: {e}")))?;
    let move_ip = |a: Ipv4Addr| -> Ipv4Addr {
        if base_net.contains(&a) {
            Ipv4Addr::from(
                u32::from(subnet.network()) | (u32::from(a) & !u32::from(base_net.netmask())),
            )
        } else {
            a
        }
    };
    let prefixed = |n: &str| format!("{name}-{n}");

    doc["cluster"]["name"] = toml_edit::value(name);
    for n in doc["nodes"]
        .as_array_of_tables_mut()
        .into_iter()
        .flat_map(|a| a.iter_mut())
    {
        if let Some(v) = n.get("name").and_then(Item::as_str).map(prefixed) {
            n["name"] = toml_edit::value(v);
        }
        for key in ["address", "ssh_address"] {
            map_str(n.get_mut(key), |s| move_addresses(s, &move_ip));
        }
        if let Some(sans) = n.get_mut("extra_sans").and_then(Item::as_array_mut) {
            sans.iter_mut()
                .for_each(|v| map_value(v, |s| move_addresses(s, &move_ip)));
        }
    }
    if let Some(lb) = doc
        .get_mut("load_balancer")
        .and_then(Item::as_table_like_mut)
    {
        map_str(lb.get_mut("node"), |s| Some(prefixed(s)));
        map_str(lb.get_mut("address"), |s| move_addresses(s, &move_ip));
    }
    if let Some(pools) = doc
        .get_mut("addons")
        .and_then(|a| a.get_mut("metallb"))
        .and_then(|m| m.get_mut("addresses"))
        .and_then(Item::as_array_mut)
    {
        pools
            .iter_mut()
            .for_each(|v| map_value(v, |s| move_addresses(s, &move_ip)));
    }
    // Files next to the base inventory stay where they are.
    for (table, key) in [("binaries", "local_dir"), ("addons", "images_dir")] {
        map_str(doc.get_mut(table).and_then(|t| t.get_mut(key)), |s| {
            (!Path::new(s).is_absolute()).then(|| base_dir.join(s).display().to_string())
        });
    }
    if !doc.contains_key("ssh") {
        doc["ssh"] = toml_edit::table();
    }
    doc["ssh"]["identity_file"] =
        toml_edit::value(lab_dir.join("id_ed25519").display().to_string());
    doc["ssh"]["known_hosts"] = toml_edit::value(lab_dir.join("known_hosts").display().to_string());

    let header = format!(
        "# Lab {name}, made by hardway from {} on {subnet} (bridge {}): its addresses are real,\n\
         # its key and known_hosts are the lab's. Written again by every `up`; edit the base instead.\n\n",
        base.source.display(),
        layout::bridge_name(name)
    );
    // The base's comments stay, but what they say of the base's lab (its bridge, its nodes'
    // names and addresses) is said of this one: a comment naming the base's bridge and
    // addresses in a student's inventory sends the student to another lab.
    let mut words: Vec<(String, String)> = base
        .nodes
        .iter()
        .map(|n| (n.name.clone(), prefixed(&n.name)))
        .collect();
    words.push((
        layout::bridge_name(&base.cluster.name),
        layout::bridge_name(name),
    ));
    let body = doc
        .to_string()
        .lines()
        .map(|line| match comment_start(line) {
            Some(i) => format!(
                "{}{}",
                &line[..i],
                rewrite_comment(&line[i..], &words, &move_ip)
            ),
            None => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    Ok(header + &body + "\n")
}

/// Where a TOML line's comment starts: the first `#` outside a string.
fn comment_start(line: &str) -> Option<usize> {
    let (mut quote, mut escaped) = (None::<char>, false);
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (Some('"'), '\\') if !escaped => {
                escaped = true;
                continue;
            }
            (Some(q), c) if c == q && !escaped => quote = None,
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') => return Some(i),
            _ => {}
        }
        escaped = false;
    }
    None
}

/// A comment with the base's names (whole words) and the addresses `f` moves replaced.
fn rewrite_comment(
    comment: &str,
    words: &[(String, String)],
    f: &impl Fn(Ipv4Addr) -> Ipv4Addr,
) -> String {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
    let mut out = String::with_capacity(comment.len());
    let mut rest = comment;
    while let Some(start) = rest.find(is_word) {
        out.push_str(&rest[..start]);
        let len = rest[start..]
            .find(|c| !is_word(c))
            .unwrap_or(rest.len() - start);
        let word = &rest[start..start + len];
        // A sentence's full stop is not part of an address or a name.
        let (core, tail) = match word.strip_suffix('.') {
            Some(c) => (c, "."),
            None => (word, ""),
        };
        // An address or a range of them, as the inventory's values move; a range written short
        // in prose (`10.0.0.11-16`) moves its first address; else a name.
        let moved = move_addresses(core, f).or_else(|| {
            let (a, b) = core.split_once('-')?;
            Some(format!("{}-{b}", f(a.parse().ok()?)))
        });
        match (moved, words.iter().find(|(from, _)| from == core)) {
            (Some(m), _) => out.push_str(&m),
            (None, Some((_, to))) => out.push_str(to),
            (None, None) => out.push_str(core),
        }
        out.push_str(tail);
        rest = &rest[start + len..];
    }
    out.push_str(rest);
    out
}

fn map_str(item: Option<&mut Item>, f: impl Fn(&str) -> Option<String>) {
    if let Some(Item::Value(v)) = item {
        map_value(v, f);
    }
}

fn map_value(v: &mut Value, f: impl Fn(&str) -> Option<String>) {
    if let Some(new) = v.as_str().and_then(&f) {
        let decor = v.decor().clone();
        *v = Value::from(new);
        *v.decor_mut() = decor;
    }
}

/// An address, a CIDR or an `a-b` range, with each IPv4 address moved by `f`; `None` when
/// nothing in it is an IPv4 address (a DNS name stays as it is).
fn move_addresses(s: &str, f: &impl Fn(Ipv4Addr) -> Ipv4Addr) -> Option<String> {
    let one = |p: &str| -> Option<String> {
        let p = p.trim();
        if let Ok(a) = p.parse::<Ipv4Addr>() {
            return Some(f(a).to_string());
        }
        let (a, len) = p.split_once('/')?;
        Some(format!("{}/{len}", f(a.parse().ok()?)))
    };
    match s.split_once('-') {
        Some((a, b)) if a.trim().parse::<Ipv4Addr>().is_ok() => {
            Some(format!("{}-{}", one(a)?, one(b)?))
        }
        _ => one(s),
    }
}

/// Where taking a lab down keeps its machines: `rel` below `base`. `base` is a directory the
/// user chose (a class's student directory); the directories of `rel` are made 0700 and never
/// reached through a link.
#[derive(Debug, Clone)]
pub struct Keep {
    pub base: PathBuf,
    pub rel: PathBuf,
}

impl Keep {
    pub fn path(&self) -> PathBuf {
        self.base.join(&self.rel)
    }
}

/// Stops every machine of the lab and keeps what each wrote (its overlay's upper layer: the
/// files a student made, etcd's data) as `<keep>/<node>.tar`, so that taking the lab down
/// deletes nothing that cannot be looked at again. The archives hold the machines' keys and
/// etcd's data: each is created 0600 (new, never through a link) in 0700 directories. Returns
/// the archives written.
pub fn save_machines(inv: &Inventory, opts: &LabOptions, keep: &Keep) -> Result<Vec<PathBuf>> {
    let layout = layout::Layout::new(inv, opts)?;
    super::stop_machines(&layout, &layout.nodes)?;
    let mut kept = Vec::new();
    let mut dir = None;
    for node in &layout.nodes {
        let upper = node.dir.join("upper");
        if !upper.is_dir() {
            continue;
        }
        let dest = match &dir {
            Some(d) => d,
            None => dir.insert(crate::safe_fs::private_dir(&keep.base, &keep.rel)?),
        };
        let name = format!("{}.tar", node.name);
        let file = dest.create_new(&name, 0o600)?;
        let tar = dest.path().join(&name);
        if let Err(e) = run(command("tar")
            .arg("-C")
            .arg(&upper)
            .args(["-cf", "-", "."])
            .stdout(file))
        {
            let _ = dest.remove(&name);
            return Err(e);
        }
        kept.push(tar);
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab_inventory() -> (Inventory, String) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lab-etcd.toml");
        (
            crate::inventory::load(&path).unwrap(),
            fs::read_to_string(&path).unwrap(),
        )
    }

    /// Workers are privileged with the nspawn driver: a class of them hears that they are no
    /// boundary between students, and that the qemu driver's VMs are; a class without workers,
    /// or of VMs, does not.
    #[test]
    fn a_class_with_privileged_workers_is_told_they_are_not_a_boundary() {
        let (base, _) = lab_inventory();
        let w = warnings_for(&base, LabDriver::Nspawn, false, true);
        assert_eq!(w.len(), 1, "{w:?}");
        for want in [
            "lab-w1 machine is privileged",
            "not a boundary between students",
            "reach this host and every other student's lab",
            "--driver qemu",
        ] {
            assert!(w[0].contains(want), "{want:?} missing from {w:?}");
        }
        assert!(warnings_for(&base, LabDriver::Qemu, false, false).is_empty());
        let mut no_workers = base.clone();
        no_workers.nodes.retain(|n| !n.has(Role::Worker));
        assert!(warnings_for(&no_workers, LabDriver::Nspawn, false, true).is_empty());
        let w = warnings_for(&no_workers, LabDriver::Nspawn, true, false);
        assert!(
            w[0].contains("IPv4 forwarding is on")
                && w[1].contains("no cgroup v1 devices hierarchy"),
            "{w:?}"
        );
    }

    #[test]
    fn names_are_dns_labels_short_enough_to_prefix_machines() {
        assert_eq!(name_problem("alice"), None);
        assert_eq!(name_problem("bob-2"), None);
        for bad in [
            "",
            "Alice",
            "2bob",
            "bob smith",
            "bob_smith",
            "bob-",
            "a--b",
            "a-very-long-student-name",
        ] {
            assert!(name_problem(bad).is_some(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn a_derived_inventory_has_the_labs_names_addresses_and_key() {
        let (base, text) = lab_inventory();
        let opts = LabOptions {
            state_dir: "/run/hardway/labs".into(),
            ..LabOptions::default()
        };
        let subnet: Ipv4Net = "10.222.7.0/24".parse().unwrap();
        let derived = derive_inventory(&base, &text, "alice", subnet, &opts).unwrap();
        let inv = crate::inventory::parse(Path::new("/tmp/alice.toml"), &derived)
            .unwrap_or_else(|e| panic!("{e}\n{derived}"));
        assert_eq!(inv.cluster.name, "alice");
        let nodes: Vec<(String, String)> = inv
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.address.to_string()))
            .collect();
        assert_eq!(
            nodes[0],
            ("alice-lab-m1".to_string(), "10.222.7.11".to_string())
        );
        assert_eq!(
            nodes[4],
            ("alice-lab-w1".to_string(), "10.222.7.15".to_string())
        );
        let lb = inv.load_balancer.as_ref().unwrap();
        assert_eq!(
            (lb.node.as_deref(), lb.address.to_string().as_str()),
            (Some("alice-lab-lb"), "10.222.7.14")
        );
        assert_eq!(
            inv.ssh.identity_file.as_deref(),
            Some(Path::new("/run/hardway/labs/alice/id_ed25519"))
        );
        assert_eq!(
            inv.ssh.known_hosts,
            Path::new("/run/hardway/labs/alice/known_hosts")
        );
        assert_eq!(existing_subnet(&inv, "alice"), Some(subnet));
        assert_eq!(existing_subnet(&inv, "bob"), None);
        // The rest of the base stays as it was, comments included; what they say of the base's
        // lab (its bridge, its nodes, their addresses) is said of this one.
        assert!(
            derived.contains("suite = \"trixie\"                    # Debian's stable release"),
            "{derived}"
        );
        let comments: String = derived
            .lines()
            .filter_map(|l| comment_start(l).map(|i| &l[i..]))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            comments.contains("(hw-alice, gateway\n# 10.222.7.1)")
                && comments.contains("at 10.222.7.11-15"),
            "{comments}"
        );
        for base_word in ["hw-lab", "10.213.0.", " lab-w1", " lab-m1"] {
            assert!(!comments.contains(base_word), "{base_word}: {comments}");
        }
        assert_eq!(net::lab_network(&inv).unwrap().subnet, subnet);
    }

    #[test]
    fn a_comment_starts_at_the_first_hash_outside_a_string() {
        assert_eq!(comment_start("# all"), Some(0));
        assert_eq!(comment_start(r#"a = "x#y" # c"#), Some(10));
        assert_eq!(comment_start(r#"a = 'x#y' # c"#), Some(10));
        assert_eq!(comment_start(r##"a = "q\"#" # c"##), Some(11));
        assert_eq!(comment_start(r#"a = "x#y""#), None);
        let moved = |a: Ipv4Addr| Ipv4Addr::from(u32::from(a) + 256);
        let words = [("lab-m1".to_string(), "bob-lab-m1".to_string())];
        assert_eq!(
            rewrite_comment(
                "# lab-m1 at 10.0.0.11-10.0.0.12, not lab-m10.",
                &words,
                &moved
            ),
            "# bob-lab-m1 at 10.0.1.11-10.0.1.12, not lab-m10."
        );
    }

    #[test]
    fn claims_get_subnets_of_their_own_and_keep_them() {
        let dir = tempfile::tempdir().unwrap();
        let pool: Ipv4Net = "10.229.0.0/22".parse().unwrap();
        let record = |name: &str| LabRecord {
            name: name.into(),
            subnet: "0.0.0.0/0".parse().unwrap(),
            base: "/b.toml".into(),
            inventory: format!("/{name}.toml").into(),
            pki: "/pki".into(),
            limits: MachineLimits::default(),
        };
        let a = claim(dir.path(), record("alice"), None, pool).unwrap();
        let b = claim(dir.path(), record("bob"), None, pool).unwrap();
        assert_ne!(a.subnet, b.subnet);
        assert!(pool.contains(&a.subnet) && pool.contains(&b.subnet));
        assert_eq!(read_record(dir.path(), "alice").unwrap(), Some(a.clone()));
        // Claimed again, a lab keeps its subnet; another's is refused.
        assert_eq!(
            claim(dir.path(), record("alice"), Some(a.subnet), pool)
                .unwrap()
                .subnet,
            a.subnet
        );
        let e = claim(dir.path(), record("carol"), Some(a.subnet), pool)
            .unwrap_err()
            .to_string();
        assert!(e.contains("held by lab alice"), "{e}");
        assert_eq!(
            records(dir.path())
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>(),
            ["alice", "bob"]
        );
        // A pool without a free /24 says so.
        let tiny: Ipv4Net = "10.229.0.0/24".parse().unwrap();
        let e = claim(dir.path(), record("dave"), None, tiny)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no free /24"), "{e}");
    }

    /// What `class down` keeps of a machine holds its keys and etcd's data: 0600 files in 0700
    /// directories, never written through a link.
    #[test]
    fn saved_machines_are_private_and_never_written_through_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
        let t = tempfile::tempdir().unwrap();
        let (base, _) = lab_inventory();
        let opts = LabOptions {
            state_dir: t.path().join("state"),
            ..LabOptions::default()
        };
        let upper = t.path().join("state/lab/lab-m1/upper/etc/etcd/pki");
        fs::create_dir_all(&upper).unwrap();
        fs::write(upper.join("server.key"), "KEY").unwrap();
        let keep = |student: &str, rel: &str| Keep {
            base: t.path().join("class").join(student),
            rel: rel.into(),
        };
        fs::create_dir_all(t.path().join("class/alice")).unwrap();
        let dest = t.path().join("class/alice/saved/20261127T180834512Z");
        let kept =
            save_machines(&base, &opts, &keep("alice", "saved/20261127T180834512Z")).unwrap();
        assert_eq!(kept, [dest.join("lab-m1.tar")]);
        assert_eq!(mode(&kept[0]), 0o600);
        assert_eq!((mode(&dest), mode(dest.parent().unwrap())), (0o700, 0o700));
        // A link where the archive goes, or among the directories: refused, its target untouched.
        let victim = t.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        let again = t.path().join("class/alice/saved/second");
        fs::create_dir_all(&again).unwrap();
        std::os::unix::fs::symlink(&victim, again.join("lab-m1.tar")).unwrap();
        let e = save_machines(&base, &opts, &keep("alice", "saved/second"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("lab-m1.tar") && e.contains("symbolic link"),
            "{e}"
        );
        fs::create_dir(t.path().join("elsewhere")).unwrap();
        fs::create_dir_all(t.path().join("class/carol")).unwrap();
        std::os::unix::fs::symlink(
            t.path().join("elsewhere"),
            t.path().join("class/carol/saved"),
        )
        .unwrap();
        let e = save_machines(&base, &opts, &keep("carol", "saved/x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(fs::read_dir(t.path().join("elsewhere")).unwrap().count(), 0);
    }

    #[test]
    fn addresses_cidrs_and_ranges_move_names_stay() {
        let f = |a: Ipv4Addr| Ipv4Addr::new(10, 1, 1, a.octets()[3]);
        assert_eq!(
            move_addresses("10.213.0.5", &f).as_deref(),
            Some("10.1.1.5")
        );
        assert_eq!(
            move_addresses("10.213.0.240-10.213.0.250", &f).as_deref(),
            Some("10.1.1.240-10.1.1.250")
        );
        assert_eq!(
            move_addresses("10.213.0.128/25", &f).as_deref(),
            Some("10.1.1.128/25")
        );
        assert_eq!(move_addresses("api.lab.example", &f), None);
    }
}
