//! `cargo bench --bench fanout` (as root): deploy's file push to N = 1, 10, 50 light hosts,
//! against the plain sequential `scp` loop a student would write.
//!
//! Each host is `systemd-nspawn --volatile=overlay` on the lab's cached Debian root fs running
//! only sshd (no systemd; ~10 MB), in its own network namespace, on a veth to the bridge
//! `hw-bench` (10.214.0.1/24; hosts from 10.214.0.10). Root trusts the bench key through a
//! read-only bind of `/root/.ssh`; each host has its own ed25519 host key (bound read-only),
//! recorded in the bench's known_hosts, so host keys are checked strictly as in a deploy.
//! Network, hosts and teardown are `hardway::lab`'s building blocks (`lab::net`,
//! `lab::nspawn::machine`); the bench keeps the orchestration: sizes, timings (`fanout/measure.rs`),
//! signal-safe teardown and leftover checks (`fanout/teardown.rs`), and the report (here).
//!
//! Per N, from a fresh inventory of N nodes with roles ["master", "worker"] (the largest file
//! set a node gets), with its PKI and render made in-process beforehand:
//! 1. first push: every file of every phase through `deploy::push_files` — connect, gather,
//!    plan, upload and the /etc/hosts merge, `--parallel 32` (deploy's default) — in a child
//!    process (this binary again), so its peak RSS is its own (`wait4`);
//! 2. the same again with nothing changed;
//! 3. the baseline: one `sh` loop, host after host, `scp -r build/<host>/. root@<host>:/` and
//!    one `ssh root@<host> 'chmod ...'`, OpenSSH with the same key and known_hosts;
//! 4. a check (not timed) that a third push finds nothing to change after the scp loop, i.e.
//!    that the baseline placed the same bytes and modes.
//!
//! Every namespace, veth, the bridge and every nspawn is removed when the bench ends, panics or
//! gets SIGINT/SIGTERM/SIGHUP (a signal thread tears down under the same lock that creation
//! holds); leftovers of a SIGKILLed run are removed at the next start. The end checks `ip netns
//! list`, `ip link` and the process table and fails if anything of the bench is left.
//!
//! Prints Markdown tables; with `HW_BENCH_REPORT=DIR` also writes them to `DIR/fanout.md`.
//! Without root (or systemd-nspawn, ip, ssh, scp, ssh-keygen) it says so and exits 0.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hardway::components::Phase;
use hardway::deploy;
use hardway::lab::net::HostLink;
use hardway::lab::nspawn::machine;
use hardway::lab::{net, tools};
use hardway::remote::ssh::{HostKeyPolicy, SshConnector};
use hardway::{inventory, pki, render};
use ipnet::Ipv4Net;

mod common;
use common::{mark, mb, ms};
#[path = "fanout/measure.rs"]
mod measure;
use measure::{Measured, run_measured};
#[path = "fanout/teardown.rs"]
mod teardown;
use teardown::{Guard, handle_signals, leftovers, remove_stale, resources, teardown_hosts};

const BRIDGE: &str = "hw-bench";
/// The bridge's alias: a bridge of that name without it is someone else's and is left alone.
const BRIDGE_ALIAS: &str = "hardway-bench benches/fanout.rs";
const NETNS_PREFIX: &str = "hwb-";
const VETH_PREFIX: &str = "hwbv";
const NET: [u8; 3] = [10, 214, 0];
const FIRST_HOST: u8 = 10;
/// Host counts, unless `HW_BENCH_HOSTS` lists others (e.g. `HW_BENCH_HOSTS=1,10`; at most 200).
const SIZES: [usize; 3] = [1, 10, 50];
/// deploy's default `--parallel`, unless `HW_BENCH_PARALLEL` says otherwise.
const PARALLEL: usize = 32;
const LOCK_FILE: &str = "/run/hardway-bench.lock";
const CHILD_ENV: &str = "HW_BENCH_PUSH_CHILD";
/// How long a host's nspawn gets after SIGTERM (it then kills its container) before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

fn host_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(NET[0], NET[1], NET[2], FIRST_HOST + i as u8)
}
fn gateway() -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(NET[0], NET[1], NET[2], 1), 24).unwrap()
}
/// Host `i`'s network namespace (also its machine name) and veth.
fn host_link(i: usize) -> HostLink {
    HostLink {
        netns: format!("{NETNS_PREFIX}{i}"),
        veth: format!("{VETH_PREFIX}{i}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The hosts.

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// The bench's directory: key, authorized_keys, host keys, known_hosts, one dir per case.
struct Work {
    dir: PathBuf,
}

impl Work {
    fn key(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }
    fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }
    fn ssh_dir(&self) -> PathBuf {
        self.dir.join("root-ssh")
    }
    fn host_key(&self, i: usize) -> PathBuf {
        self.dir
            .join("host-keys")
            .join(i.to_string())
            .join("ssh_host_ed25519_key")
    }
    fn log(&self, i: usize) -> PathBuf {
        self.dir.join("logs").join(format!("{i}.log"))
    }

    fn create(hosts: usize) -> Work {
        let dir = target_dir().join(format!("hardway-bench-fanout-{}", std::process::id()));
        resources().dirs.push(dir.clone());
        fs::create_dir_all(dir.join("logs")).unwrap();
        let w = Work { dir };
        let keygen = |path: &Path, comment: &str| {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            tools::ssh_keygen(path, comment).unwrap_or_else(|e| panic!("{e}"));
        };
        keygen(&w.key(), "hardway-bench");
        let public = fs::read_to_string(w.key().with_extension("pub")).unwrap();
        // The bench's own directory, bound in as root's ~/.ssh: no machine root to guard.
        fs::create_dir_all(w.ssh_dir()).unwrap();
        fs::set_permissions(
            w.ssh_dir(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        fs::write(
            w.ssh_dir().join("authorized_keys"),
            format!("{}\n", public.trim()),
        )
        .unwrap();
        fs::set_permissions(
            w.ssh_dir().join("authorized_keys"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let mut known = String::new();
        for i in 0..hosts {
            let key = w.host_key(i);
            keygen(&key, &format!("root@{}", host_link(i).netns));
            let public = key.with_extension("pub");
            let (dir, file) = (public.parent().unwrap(), public.file_name().unwrap());
            known.push_str(
                &tools::known_hosts_line(host_addr(i).into(), dir, file.as_ref())
                    .unwrap_or_else(|e| panic!("{e}")),
            );
        }
        fs::write(w.known_hosts(), known).unwrap();
        w
    }
}

fn create_bridge() {
    let mut res = resources();
    res.bridge = true;
    net::ensure_bridge(BRIDGE, BRIDGE_ALIAS, gateway())
        .unwrap_or_else(|e| panic!("fanout bench: {e}"));
}

/// N running hosts; dropping it stops them and removes their network.
struct Fleet {
    hosts: Vec<usize>,
}

impl Fleet {
    fn start(work: &Work, rootfs: &Path, n: usize) -> (Fleet, Duration) {
        let t = Instant::now();
        let fleet = Fleet {
            hosts: (0..n).collect(),
        };
        for i in 0..n {
            let mut res = resources();
            res.hosts.push(i);
            let link = host_link(i);
            net::add_host_link(BRIDGE, &link, host_addr(i).into(), 24, None)
                .unwrap_or_else(|e| panic!("host {i}: {e}"));
            // Spawned from the main thread, which lives as long as the bench: if the bench dies
            // (even by SIGKILL), nspawn gets SIGTERM and kills its container.
            let host = machine::LightSshd {
                rootfs,
                link: &link,
                root_ssh_dir: &work.ssh_dir(),
                host_key: &work.host_key(i),
                log: &work.log(i),
            };
            res.nspawn
                .push(machine::spawn_light_sshd(&host).unwrap_or_else(|e| panic!("host {i}: {e}")));
        }
        // Ready when sshd sends its banner.
        let deadline = Instant::now() + Duration::from_secs(60);
        for i in 0..n {
            if !machine::wait_sshd(host_addr(i).into(), deadline) {
                panic!(
                    "host {i} ({}) did not answer ssh within 60 s; end of {}:\n{}",
                    host_addr(i),
                    work.log(i).display(),
                    fs::read_to_string(work.log(i)).unwrap_or_default()
                );
            }
        }
        (fleet, t.elapsed())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        teardown_hosts(&mut resources(), Some(&self.hosts));
    }
}

// ---------------------------------------------------------------------------------------------
// A case: inventory, PKI, render, the runs.

fn inventory_text(work: &Work, n: usize) -> String {
    let mut s = String::from(
        "[cluster]\nname = \"bench\"\ndomain = \"bench.local\"\nkubernetes_version = \"1.37.1\"\n\
         service_cidr = \"10.32.0.0/24\"\npod_cidr = \"10.200.0.0/16\"\n\n",
    );
    if n > 1 {
        // An external load balancer (no node of its own): several masters need one.
        s.push_str(&format!(
            "[load_balancer]\naddress = \"{}.{}.{}.250\"\nport = 6443\n\n",
            NET[0], NET[1], NET[2]
        ));
    }
    let _ = write!(
        s,
        "[ssh]\nuser = \"root\"\nidentity_file = \"{}\"\nknown_hosts = \"{}\"\n\n[pki]\nalgorithm = \"ecdsa-p256\"\n\n\
         [addons.aggregation]\nenabled = true\n",
        work.key().display(),
        work.known_hosts().display()
    );
    for i in 0..n {
        let _ = write!(
            s,
            "\n[[nodes]]\nname = \"b{i}\"\naddress = \"{}\"\nroles = [\"master\", \"worker\"]\n",
            host_addr(i)
        );
    }
    s
}

struct PushRun {
    /// connect + gather + plan + upload, timed inside the child.
    push: Duration,
    /// The child process, spawn to exit (start, load the PKI, render, push).
    wall: Duration,
    max_rss_kb: u64,
    cpu: Duration,
    machine_cpu: Duration,
    changed: usize,
    unchanged: usize,
}

fn push(case_dir: &Path, hosts: usize) -> PushRun {
    let exe = std::env::current_exe().unwrap();
    let m = run_measured(
        Command::new(exe)
            .env(CHILD_ENV, "1")
            .arg(case_dir.join("inventory.toml"))
            .arg(case_dir.join("pki"))
            .arg(parallel().to_string()),
    );
    let line = m
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("push-result "))
        .unwrap_or_else(|| panic!("push child failed:\n{}\n{}", m.stdout, m.stderr));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let failed = v["failed"].as_array().unwrap();
    assert!(
        m.ok && failed.is_empty(),
        "push to {hosts} hosts: {} failed: {failed:?}\n{}",
        failed.len(),
        m.stderr
    );
    assert_eq!(v["hosts"].as_u64(), Some(hosts as u64));
    PushRun {
        push: Duration::from_secs_f64(v["push_ms"].as_f64().unwrap() / 1e3),
        wall: m.wall,
        max_rss_kb: m.max_rss_kb,
        cpu: m.cpu,
        machine_cpu: m.machine_cpu,
        changed: v["changed"].as_u64().unwrap() as usize,
        unchanged: v["unchanged"].as_u64().unwrap() as usize,
    }
}

/// The bench-only child: load, render and push, then print one result line.
fn child_main() {
    let args: Vec<String> = std::env::args().collect();
    let (inv_path, pki_dir, parallel) = (
        Path::new(&args[1]),
        Path::new(&args[2]),
        args[3].parse::<usize>().unwrap(),
    );
    let inv = inventory::load(inv_path).unwrap();
    let pki = pki::load(&inv, pki_dir).unwrap();
    let rendered = render::render(&inv, &pki).unwrap();
    let connector = Arc::new(SshConnector::new(&inv, HostKeyPolicy::Strict));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let t = Instant::now();
    let outcomes = rt.block_on(deploy::push_files(
        &inv,
        rendered,
        connector,
        &Phase::ALL,
        parallel,
    ));
    let push_ms = t.elapsed().as_secs_f64() * 1e3;
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.error.as_ref().map(|e| format!("{}: {e}", o.node)))
        .collect();
    let result = serde_json::json!({
        "push_ms": push_ms,
        "hosts": outcomes.len(),
        "changed": outcomes.iter().map(|o| o.changed).sum::<usize>(),
        "unchanged": outcomes.iter().map(|o| o.unchanged).sum::<usize>(),
        "failed": failed,
    });
    println!("push-result {result}");
}

/// The sequential OpenSSH loop over the rendered tree; returns its wall time.
fn scp_loop(
    work: &Work,
    case_dir: &Path,
    rendered: &render::Rendered,
    addrs: &BTreeMap<String, Ipv4Addr>,
) -> Measured {
    let opts = format!(
        "-F /dev/null -i {} -o IdentitiesOnly=yes -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null \
         -o StrictHostKeyChecking=yes -o BatchMode=yes -o LogLevel=ERROR",
        work.key().display(),
        work.known_hosts().display()
    );
    let modes_dir = case_dir.join("modes");
    fs::create_dir_all(&modes_dir).unwrap();
    let mut list = Vec::new();
    for (host, files) in &rendered.hosts {
        let mut by_mode: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
        for f in files {
            by_mode.entry(f.mode).or_default().push(&f.path);
        }
        let chmod: Vec<String> = by_mode
            .iter()
            .map(|(m, ps)| format!("chmod {m:o} {}", ps.join(" ")))
            .collect();
        fs::write(modes_dir.join(host), chmod.join("; ")).unwrap();
        list.push(format!("{host}:{}", addrs[host]));
    }
    let script = format!(
        "set -e\ncd {}\nfor h in {}; do\n  host=${{h%%:*}}; addr=${{h#*:}}\n  \
         scp -q -r {opts} build/$host/. root@$addr:/\n  ssh {opts} root@$addr \"$(cat modes/$host)\"\ndone\n",
        case_dir.display(),
        list.join(" ")
    );
    fs::write(case_dir.join("scp-loop.sh"), &script).unwrap();
    let m = run_measured(Command::new("sh").arg(case_dir.join("scp-loop.sh")));
    assert!(m.ok, "the scp loop failed:\n{}", m.stderr);
    m
}

struct CaseResult {
    hosts: usize,
    files_per_host: usize,
    bytes_per_host: usize,
    start: Duration,
    first: PushRun,
    again: PushRun,
    scp: Measured,
}

fn run_case(work: &Work, rootfs: &Path, n: usize) -> CaseResult {
    let case_dir = work.dir.join(format!("case-{n}"));
    fs::create_dir_all(&case_dir).unwrap();
    let text = inventory_text(work, n);
    fs::write(case_dir.join("inventory.toml"), &text).unwrap();
    let inv = inventory::load(&case_dir.join("inventory.toml")).unwrap();
    let (p, _) =
        pki::generate(&inv, &case_dir.join("pki"), pki::GenerateOptions::default()).unwrap();
    let rendered = render::render(&inv, &p).unwrap();
    rendered.write_to(&case_dir.join("build")).unwrap();
    let files_per_host = rendered.hosts.values().map(Vec::len).max().unwrap();
    let bytes_per_host = rendered
        .hosts
        .values()
        .map(|fs| fs.iter().map(|f| f.contents.len()).sum::<usize>())
        .max()
        .unwrap();
    let addrs: BTreeMap<String, Ipv4Addr> = inv
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.address.to_string().parse().unwrap()))
        .collect();

    eprintln!("fanout bench: {n} hosts: starting them");
    let (fleet, start) = Fleet::start(work, rootfs, n);
    eprintln!(
        "fanout bench: {n} hosts up in {:.1} s; first push",
        start.as_secs_f64()
    );
    let first = push(&case_dir, n);
    let total_files: usize = rendered.hosts.values().map(Vec::len).sum();
    assert_eq!(
        first.changed, total_files,
        "the first push sends every file"
    );
    eprintln!("fanout bench: {n} hosts: push with nothing changed");
    let again = push(&case_dir, n);
    assert_eq!(again.changed, 0, "nothing changed, nothing sent");
    assert_eq!(again.unchanged, total_files);
    eprintln!("fanout bench: {n} hosts: sequential scp loop");
    let scp = scp_loop(work, &case_dir, &rendered, &addrs);
    let check = push(&case_dir, n);
    assert_eq!(
        check.changed, 0,
        "after the scp loop every file has the same bytes, mode and owner as hardway's"
    );
    drop(fleet);
    CaseResult {
        hosts: n,
        files_per_host,
        bytes_per_host,
        start,
        first,
        again,
        scp,
    }
}

fn sizes() -> Vec<usize> {
    match std::env::var("HW_BENCH_HOSTS") {
        Ok(v) => v
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .expect("HW_BENCH_HOSTS: comma-separated numbers")
            })
            .filter(|n| (1..=200).contains(n))
            .collect(),
        Err(_) => SIZES.to_vec(),
    }
}

fn parallel() -> usize {
    std::env::var("HW_BENCH_PARALLEL")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(PARALLEL)
}

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return child_main();
    }
    // `cargo bench` passes --bench; `cargo test --all-targets` runs bench targets without it,
    // and a test run should not boot 61 hosts.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "fanout bench: not run (no --bench); use `cargo bench --bench fanout` or scripts/bench"
        );
        return;
    }
    // Before any thread exists, so that every thread inherits the blocked signals.
    handle_signals();
    let uid = unsafe { libc::geteuid() };
    let missing: Vec<&str> = ["systemd-nspawn", "ip", "ssh", "scp", "ssh-keygen"]
        .into_iter()
        .filter(|t| tools::find_tool(t).is_none())
        .collect();
    if uid != 0 || !missing.is_empty() {
        println!(
            "fanout bench skipped: it needs root (uid {uid}) and systemd-nspawn, ip, ssh, scp, ssh-keygen (missing: {missing:?}); scripts/bench installs them"
        );
        return;
    }
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .unwrap();
    if lock.try_lock().is_err() {
        panic!("another fanout bench holds {LOCK_FILE}");
    }
    remove_stale();
    // Nothing else on this machine may use 10.214.0.0/24.
    net::check_subnet_free(BRIDGE, gateway().trunc())
        .unwrap_or_else(|e| panic!("fanout bench: {e}"));
    // The lab's root fs (built once from the host's apt mirror if missing), as a read-only lower
    // layer. HW_BENCH_SUITE picks another suite's: the hosts' sshd and shell are most of the
    // machine's CPU, so runs compare only on the same suite.
    let suite =
        std::env::var("HW_BENCH_SUITE").map_or(hardway::inventory::LabSuite::default(), |s| {
            hardway::inventory::LabSuite::parse(&s)
                .unwrap_or_else(|| panic!("HW_BENCH_SUITE={s}: bookworm, trixie or sid"))
        });
    let rootfs = hardway::lab::cache_rootfs(
        &hardway::lab::LabOptions::default(),
        suite,
        hardway::inventory::LabSoftware::Packages,
    )
    .expect("the lab's root fs");

    let guard = Guard;
    let sizes = sizes();
    let max = *sizes
        .iter()
        .max()
        .expect("HW_BENCH_HOSTS names no host count");
    let work = Work::create(max);
    create_bridge();
    let mut results = Vec::new();
    for &n in &sizes {
        results.push(run_case(&work, &rootfs, n));
    }
    drop(guard);
    let left = leftovers();

    let mut md = String::new();
    let _ = writeln!(
        md,
        "Deploy fan-out to N hosts (systemd-nspawn + sshd, a network namespace each, all on this machine's cores): every file of \
         every phase of a master+worker node through deploy's code path (connect, gather, plan, upload, /etc/hosts merge), \
         `--parallel {}`. *push*: measured inside the process; *process*: spawn to exit (start, load the PKI, render, push); \
         *CPU*: hardway's own user+system time; *machine*: CPU time of all cores meanwhile (hardway + every host's sshd and \
         shell commands):\n",
        parallel()
    );
    let _ = writeln!(
        md,
        "| hosts | files | first push | process | CPU / machine | peak RSS | no-change push | process | CPU / machine | peak RSS | sequential scp loop | scp ÷ hardway |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &results {
        let cpu = |p: &PushRun| {
            format!(
                "{:.2} / {:.2} s",
                p.cpu.as_secs_f64(),
                p.machine_cpu.as_secs_f64()
            )
        };
        let _ = writeln!(
            md,
            "| {} | {} × {} ({} KB) | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1}× |",
            r.hosts,
            r.hosts,
            r.files_per_host,
            r.bytes_per_host / 1024,
            ms(r.first.push),
            ms(r.first.wall),
            cpu(&r.first),
            mb(r.first.max_rss_kb),
            ms(r.again.push),
            ms(r.again.wall),
            cpu(&r.again),
            mb(r.again.max_rss_kb),
            ms(r.scp.wall),
            r.scp.wall.as_secs_f64() / r.first.wall.as_secs_f64()
        );
    }
    let _ = writeln!(md, "\nFan-out targets:\n");
    if let (Some(one), Some(big)) = (
        results.iter().find(|r| r.hosts == 1),
        results.iter().find(|r| r.hosts == max).filter(|_| max > 1),
    ) {
        let ratio = big.first.push.as_secs_f64() / one.first.push.as_secs_f64();
        let _ = writeln!(
            md,
            "- {} {max} hosts within 2× the time of 1 host: {} vs {} ({ratio:.1}×)",
            mark(ratio <= 2.0),
            ms(big.first.push),
            ms(one.first.push)
        );
    }
    let big = results.iter().find(|r| r.hosts == max).unwrap();
    let rss = big.first.max_rss_kb.max(big.again.max_rss_kb);
    let scp_ratio = big.scp.wall.as_secs_f64() / big.first.wall.as_secs_f64();
    let _ = writeln!(
        md,
        "- {} no-change run on {max} hosts under 2 s: {} (process {})",
        mark(big.again.wall < Duration::from_secs(2)),
        ms(big.again.push),
        ms(big.again.wall)
    );
    let _ = writeln!(
        md,
        "- {} peak RSS under 64 MB at {max} hosts: {}",
        mark(rss < 64 * 1024),
        mb(rss)
    );
    let _ = writeln!(
        md,
        "- {} ≥ 10× faster than the sequential scp loop at {max} hosts: {scp_ratio:.1}× ({} vs {})",
        mark(scp_ratio >= 10.0),
        ms(big.scp.wall),
        ms(big.first.wall)
    );
    let starts: Vec<String> = results
        .iter()
        .map(|r| format!("{} in {:.1} s", r.hosts, r.start.as_secs_f64()))
        .collect();
    let _ = writeln!(
        md,
        "\nHosts started (network + nspawn until sshd answers): {}. Root fs: {}.",
        starts.join(", "),
        rootfs.display()
    );
    if left.is_empty() {
        let _ = writeln!(
            md,
            "Cleanup checked: no {NETNS_PREFIX}* namespace, no {VETH_PREFIX}*/{BRIDGE} link, no bench systemd-nspawn left."
        );
    }
    println!("{md}");
    if let Some(dir) = std::env::var_os("HW_BENCH_REPORT") {
        fs::create_dir_all(&dir).unwrap();
        fs::write(Path::new(&dir).join("fanout.md"), &md).unwrap();
    }
    if !left.is_empty() {
        eprintln!("fanout bench: left behind: {}", left.join(", "));
        std::process::exit(1);
    }
    drop(lock);
}
