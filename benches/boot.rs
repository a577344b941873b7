//! `cargo bench --bench boot` (as root): how long a lab machine takes from `hardway lab up` to
//! answering SSH and to a finished boot, per driver: a systemd-nspawn container, a QEMU VM
//! under TCG (software emulation), and a QEMU VM under KVM where KVM works (the driver's own
//! probe decides; where it does not, the report says why).
//!
//! Each case is `hardway::lab::up` of a fresh lab with its own inventory (cluster `hwboot`,
//! 10.232.0.0/24, state under /run/hardway/bench-boot), timed from the call until it returns:
//! then ssh works with the lab's key and strict host keys, and `systemctl is-system-running
//! --wait` has returned on every node. (sshd's banner, polled from another thread, was tried
//! and is no measure: in the nspawn runs it came later than `up`'s own login.) One node `RUNS`
//! times, then two nodes at once (both on this machine's cores). `lab down` is timed too. The caches (the debootstrapped root
//! fs, the VM image) are built by an untimed first `up` and reused, as every `up` after the
//! first on a machine does.
//!
//! Prints a Markdown table; with `HW_BENCH_REPORT=DIR` also writes it to `DIR/boot.md`.
//! Without root or a tool the lab needs, it fails naming what is missing.
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use hardway::inventory::{self, Inventory, LabDriver};
use hardway::lab::qemu::vm::Accel;
use hardway::lab::{self, LabOptions};

mod common;
use common::median;

const STATE_DIR: &str = "/run/hardway/bench-boot";
const RUNS: usize = 3;

fn inventory_text(nodes: usize) -> String {
    let mut s = String::from(
        "[cluster]\nname = \"hwboot\"\nservice_cidr = \"10.32.0.0/24\"\npod_cidr = \"10.200.0.0/16\"\n\n\
         [lab]\nmemory_mib = 1024\nvcpus = 1\n",
    );
    for i in 0..nodes {
        let role = if i == 0 { "master" } else { "worker" };
        let _ = write!(
            s,
            "\n[[nodes]]\nname = \"hwboot-{i}\"\naddress = \"10.232.0.{}\"\nroles = [\"{role}\"]\n",
            11 + i
        );
    }
    s
}

struct Case {
    name: String,
    accel: String,
    nodes: usize,
    ready: Vec<Duration>,
    down: Vec<Duration>,
}

fn load(dir: &Path, nodes: usize) -> Inventory {
    let path = dir.join(format!("boot-{nodes}.toml"));
    fs::write(&path, inventory_text(nodes)).unwrap();
    inventory::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// One `up` of a fresh lab, timed until it returns, then `down`, timed too.
fn one_run(inv: &Inventory, opts: &LabOptions) -> (Duration, Duration) {
    let start = Instant::now();
    lab::up(inv, opts).unwrap_or_else(|e| panic!("lab up: {e}"));
    let ready = start.elapsed();
    let t = Instant::now();
    lab::down(inv, opts).unwrap_or_else(|e| panic!("lab down: {e}"));
    (ready, t.elapsed())
}

fn run_case(name: &str, accel: &str, inv: &Inventory, opts: &LabOptions, runs: usize) -> Case {
    let mut c = Case {
        name: name.into(),
        accel: accel.into(),
        nodes: inv.nodes.len(),
        ready: vec![],
        down: vec![],
    };
    for i in 0..runs {
        let (ready, down) = one_run(inv, opts);
        eprintln!(
            "boot bench: {name} ({accel}), {} node(s), run {}: ready {ready:.1?}, down {down:.1?}",
            c.nodes,
            i + 1
        );
        c.ready.push(ready);
        c.down.push(down);
    }
    c
}

fn secs(v: &[Duration]) -> String {
    let min = v.iter().min().unwrap().as_secs_f64();
    let max = v.iter().max().unwrap().as_secs_f64();
    let med = median(v.to_vec()).as_secs_f64();
    if v.len() == 1 {
        format!("{med:.1} s")
    } else {
        format!("{med:.1} s ({min:.1}–{max:.1})")
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "boot bench: not run (no --bench); use `cargo bench --bench boot` or scripts/bench"
        );
        return;
    }
    let load_before = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let dir = tempfile::tempdir().unwrap();
    let one = load(dir.path(), 1);
    let two = load(dir.path(), 2);
    lab::preflight(one.lab.suite).unwrap_or_else(|e| panic!("boot bench: {e}"));
    lab::qemu::preflight().unwrap_or_else(|e| panic!("boot bench: {e}"));
    let base = LabOptions {
        state_dir: STATE_DIR.into(),
        ..LabOptions::default()
    };
    let with = |driver, accel| LabOptions {
        driver: Some(driver),
        accel,
        ..base.clone()
    };
    // Leftovers of an interrupted run, then the caches (untimed).
    lab::down(&one, &base).unwrap();
    for driver in [LabDriver::Nspawn, LabDriver::Qemu] {
        let opts = with(driver, Some(Accel::Tcg));
        let t = Instant::now();
        lab::up(&one, &opts).unwrap_or_else(|e| panic!("lab up: {e}"));
        lab::down(&one, &opts).unwrap();
        eprintln!("boot bench: warm-up {driver} (caches) {:.1?}", t.elapsed());
    }
    let (kvm, why) = lab::qemu::probe_accel(&one, &base).unwrap();

    let mut cases = Vec::new();
    let nspawn = with(LabDriver::Nspawn, None);
    cases.push(run_case(
        "systemd-nspawn",
        "host kernel",
        &one,
        &nspawn,
        RUNS,
    ));
    cases.push(run_case("systemd-nspawn", "host kernel", &two, &nspawn, 1));
    let tcg = with(LabDriver::Qemu, Some(Accel::Tcg));
    cases.push(run_case("QEMU VM", "TCG", &one, &tcg, RUNS));
    cases.push(run_case("QEMU VM", "TCG", &two, &tcg, 1));
    if kvm == Accel::Kvm {
        let kvm = with(LabDriver::Qemu, Some(Accel::Kvm));
        cases.push(run_case("QEMU VM", "KVM", &one, &kvm, RUNS));
        cases.push(run_case("QEMU VM", "KVM", &two, &kvm, 1));
    }

    let mut md = String::new();
    let _ = writeln!(
        md,
        "Lab machine boot per driver: `hardway lab up` of a fresh lab (caches built) until it returns, i.e. until every node \
         answers SSH (the lab key, strict host keys) with a finished boot (`systemctl is-system-running --wait`); median \
         (min–max) of {RUNS} runs for one node, one run for two nodes booting at once on this machine's cores; each VM 1 vCPU, \
         1024 MiB:\n"
    );
    let _ = writeln!(
        md,
        "| machine | CPU | nodes | `lab up` to SSH, boot finished | `lab down` |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|");
    for c in &cases {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            c.name,
            c.accel,
            c.nodes,
            secs(&c.ready),
            secs(&c.down)
        );
    }
    let _ = writeln!(
        md,
        "\nKVM: {}.",
        if kvm == Accel::Kvm {
            format!("works here ({why})")
        } else {
            format!("not used here: {why}; QEMU runs under TCG")
        }
    );
    let load = |l: &str| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    let load_after = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let _ = writeln!(
        md,
        "Load average before the runs: {}; after: {} (other work on the machine slows TCG most).",
        load(&load_before),
        load(&load_after)
    );
    println!("{md}");
    if let Some(dir) = std::env::var_os("HW_BENCH_REPORT") {
        fs::create_dir_all(&dir).unwrap();
        fs::write(Path::new(&dir).join("boot.md"), &md).unwrap();
    }
    let left = Path::new(STATE_DIR).join("hwboot");
    assert!(!left.exists(), "{} left behind", left.display());
}
