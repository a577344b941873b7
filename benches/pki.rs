//! `cargo bench --bench pki`: `pki generate` + `render` for the seed's 7-node cluster and a
//! generated 200-node inventory, ECDSA P-256 and RSA-2048, against the seed's way of making the
//! same certificates (cfssl + cfssljson, one certificate at a time, RSA-2048).
//!
//! Three measurements per case:
//! - the real binary (`hardway pki generate`, then `hardway render`), each a child process
//!   timed from spawn to exit, its peak RSS read from `wait4`'s rusage — what a user waits for;
//! - the same stages in-process (medians), which splits the binary's time into key generation,
//!   rendering in memory and writing the tree;
//! - cfssl: one shell script doing what seed 004 does (ca-config.json, a CSR JSON per
//!   certificate, `cfssl gencert -initca` per CA, `cfssl gencert ... | cfssljson -bare` per
//!   certificate, the service-account pair, the encryption key), for exactly the certificates
//!   hardway makes (`pki::matrix`: same CNs, Os, SANs and issuing CAs).
//!
//! Every run writes into a fresh directory, and nothing is deleted until the end: on ext4,
//! allocating inodes next to ones deleted in the last ~30 s is several times slower
//! (`recently_deleted` in `find_inode_bit`), and the bench would otherwise measure its own
//! clean-up. Prints Markdown tables; with `HW_BENCH_REPORT=DIR` it also writes them to
//! `DIR/pki.md` (scripts/bench collects them). Needs `cfssl` and `cfssljson` on PATH
//! (`apt-get install golang-cfssl`); without them the baseline is skipped.

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hardway::pki::{self, CaId, San};
use hardway::{inventory, render};

mod common;
use common::{have, mark, mb, median, ms, wait4};

const HARDWAY: &str = env!("CARGO_BIN_EXE_hardway");

fn big_inventory(nodes: usize, algorithm: &str) -> String {
    let mut s = format!(
        "[cluster]\nname = \"big\"\ndomain = \"big.local\"\nkubernetes_version = \"1.37.1\"\n\
         service_cidr = \"10.32.0.0/24\"\npod_cidr = \"10.128.0.0/9\"\n\n\
         [load_balancer]\nnode = \"lb\"\naddress = \"10.10.0.2\"\n\n[pki]\nalgorithm = \"{algorithm}\"\n\n\
         [addons.aggregation]\nenabled = true\n\n\
         [[nodes]]\nname = \"lb\"\naddress = \"10.10.0.2\"\nroles = [\"lb\"]\n"
    );
    for i in 0..nodes - 1 {
        let role = if i < 3 { "master" } else { "worker" };
        s.push_str(&format!(
            "\n[[nodes]]\nname = \"n{i}\"\naddress = \"10.10.{}.{}\"\nroles = [\"{role}\"]\n",
            (i + 10) / 250,
            (i + 10) % 250 + 3
        ));
    }
    s
}

fn example(algorithm: &str) -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/inventory/example.toml"
    ))
    .unwrap();
    text.replace(
        "algorithm = \"ecdsa-p256\"",
        &format!("algorithm = \"{algorithm}\""),
    )
}

/// A child process's wall time (spawn to exit) and peak RSS.
struct Measured {
    wall: Duration,
    max_rss_kb: u64,
}

/// Runs `cmd` to completion; panics with its output if it fails.
fn run_measured(cmd: &mut Command) -> Measured {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t = Instant::now();
    // Reaped by wait4 below, which also yields its rusage.
    #[allow(clippy::zombie_processes)]
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let drain = |mut p: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = p.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let (status, usage) = wait4(child.id() as i32);
    let wall = t.elapsed();
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    if status != 0 {
        panic!(
            "{cmd:?} failed (wait status {status}):\n{}\n{}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&err)
        );
    }
    Measured {
        wall,
        max_rss_kb: usage.ru_maxrss as u64,
    }
}

/// Scratch space on the project's disk, removed when the bench ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let base = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
        let dir = base.join(format!("hardway-bench-pki-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// A new, empty directory.
    fn fresh(&self, name: &str) -> PathBuf {
        for i in 0.. {
            let d = self.0.join(format!("{name}-{i}"));
            if std::fs::create_dir(&d).is_ok() {
                return d;
            }
        }
        unreachable!()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Median in-process times: pki generate, render (in memory), writing the tree.
fn measure_in_process(
    scratch: &Scratch,
    text: &str,
    runs: usize,
) -> (Duration, Duration, Duration) {
    let inv = inventory::parse(Path::new("bench.toml"), text).expect("valid bench inventory");
    let (mut g, mut r, mut w) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let dir = scratch.fresh("in-process");
        let t = Instant::now();
        let (p, _) =
            pki::generate(&inv, &dir.join("pki"), pki::GenerateOptions::default()).unwrap();
        g.push(t.elapsed());
        let t = Instant::now();
        let rendered = render::render(&inv, &p).unwrap();
        r.push(t.elapsed());
        let t = Instant::now();
        rendered.write_to(&dir.join("build")).unwrap();
        w.push(t.elapsed());
    }
    (median(g), median(r), median(w))
}

struct Binary {
    generate: Duration,
    generate_rss_kb: u64,
    render: Duration,
    render_rss_kb: u64,
    /// Median of the per-run sums.
    total: Duration,
}

/// The files of a render and the bytes of their distinct contents (what memory and the
/// hard-linked tree hold).
fn rendered_bytes(text: &str) -> (usize, usize) {
    let inv = inventory::parse(Path::new("bench.toml"), text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (pki, _) = pki::generate(&inv, &dir.path().join("pki"), Default::default()).unwrap();
    let r = render::render(&inv, &pki).unwrap();
    let mut seen = std::collections::HashSet::new();
    let (mut bytes, mut files) = (0, 0);
    for f in r.hosts.values().flatten() {
        files += 1;
        if seen.insert(f.contents.as_ptr()) {
            bytes += f.contents.len();
        }
    }
    (bytes, files)
}

/// `hardway pki generate` then `hardway render`, each from a fresh directory.
fn measure_binary(scratch: &Scratch, text: &str, runs: usize) -> Binary {
    let (mut g, mut r, mut t) = (Vec::new(), Vec::new(), Vec::new());
    let (mut g_rss, mut r_rss) = (0, 0);
    for _ in 0..runs {
        let dir = scratch.fresh("binary");
        let inv = dir.join("inventory.toml");
        std::fs::write(&inv, text).unwrap();
        let generated = run_measured(
            Command::new(HARDWAY)
                .args(["pki", "generate", "-i"])
                .arg(&inv)
                .arg("--out")
                .arg(dir.join("pki")),
        );
        let ren = run_measured(
            Command::new(HARDWAY)
                .args(["render", "-i"])
                .arg(&inv)
                .arg("--pki")
                .arg(dir.join("pki"))
                .arg("--out")
                .arg(dir.join("build")),
        );
        g.push(generated.wall);
        r.push(ren.wall);
        t.push(generated.wall + ren.wall);
        g_rss = g_rss.max(generated.max_rss_kb);
        r_rss = r_rss.max(ren.max_rss_kb);
    }
    Binary {
        generate: median(g),
        generate_rss_kb: g_rss,
        render: median(r),
        render_rss_kb: r_rss,
        total: median(t),
    }
}

/// The seed's procedure for the certificates `inv` needs, as one sh script (RSA-2048, like the
/// seed; cfssl signs with SHA-256).
fn cfssl_script(inv: &inventory::Inventory) -> (String, usize) {
    let names = |o: &str, ou: &str| {
        format!(r#""names":[{{"C":"US","L":"Portland","O":"{o}","OU":"{ou}","ST":"Oregon"}}]"#)
    };
    let mut s = String::from("set -e\n");
    s.push_str(
        "cat > ca-config.json <<'EOF'\n\
         {\"signing\":{\"default\":{\"expiry\":\"8760h\"},\"profiles\":{\"kubernetes\":\
         {\"usages\":[\"signing\",\"key encipherment\",\"server auth\",\"client auth\"],\"expiry\":\"8760h\"}}}}\nEOF\n",
    );
    let mut made = 0;
    let ca_file = |id: CaId| match id {
        CaId::Kubernetes => "ca",
        CaId::Etcd => "etcd-ca",
        CaId::FrontProxy => "front-proxy-ca",
    };
    for ca in pki::CAS
        .iter()
        .filter(|c| inv.addons.aggregation || !c.aggregation_only)
    {
        let f = ca_file(ca.id);
        let _ = write!(
            s,
            "cat > {f}-csr.json <<'EOF'\n{{\"CN\":\"{}\",\"key\":{{\"algo\":\"rsa\",\"size\":2048}},{}}}\nEOF\n\
             cfssl gencert -initca {f}-csr.json 2>/dev/null | cfssljson -bare {f}\n",
            ca.cn,
            names("Kubernetes", "CA")
        );
        made += 1;
    }
    for spec in pki::matrix(inv) {
        let f = spec.name.replace('/', "-");
        let o = spec
            .orgs
            .first()
            .map(String::as_str)
            .unwrap_or("Kubernetes");
        let hosts: Vec<String> = spec
            .sans
            .iter()
            .map(|san| match san {
                San::Dns(d) => d.clone(),
                San::Ip(ip) => ip.to_string(),
            })
            .collect();
        let hostname = if hosts.is_empty() {
            String::new()
        } else {
            format!(" -hostname={}", hosts.join(","))
        };
        let ca = ca_file(spec.ca);
        let _ = write!(
            s,
            "cat > {f}-csr.json <<'EOF'\n{{\"CN\":\"{}\",\"key\":{{\"algo\":\"rsa\",\"size\":2048}},{}}}\nEOF\n\
             cfssl gencert -ca={ca}.pem -ca-key={ca}-key.pem -config=ca-config.json{hostname} -profile=kubernetes {f}-csr.json 2>/dev/null | cfssljson -bare {f}\n",
            spec.cn,
            names(o, "Kubernetes The Hard Way")
        );
        made += 1;
    }
    // The seed's service-account key pair is a certificate too, and the encryption key.
    let _ = write!(
        s,
        "cat > service-account-csr.json <<'EOF'\n{{\"CN\":\"service-accounts\",\"key\":{{\"algo\":\"rsa\",\"size\":2048}},{}}}\nEOF\n\
         cfssl gencert -ca=ca.pem -ca-key=ca-key.pem -config=ca-config.json -profile=kubernetes service-account-csr.json 2>/dev/null | cfssljson -bare service-account\n\
         head -c 32 /dev/urandom | base64 > encryption.key\n",
        names("Kubernetes", "Kubernetes The Hard Way")
    );
    made += 2;
    (s, made)
}

/// Median wall time and peak RSS of the seed's script; checks it made every certificate.
fn measure_cfssl(scratch: &Scratch, text: &str, runs: usize) -> (Duration, u64, usize) {
    let inv = inventory::parse(Path::new("bench.toml"), text).expect("valid bench inventory");
    let (script, made) = cfssl_script(&inv);
    let mut walls = Vec::new();
    let mut rss = 0;
    for _ in 0..runs {
        let dir = scratch.fresh("cfssl");
        std::fs::write(dir.join("make-certs.sh"), &script).unwrap();
        let m = run_measured(Command::new("sh").arg("make-certs.sh").current_dir(&dir));
        let certs = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.ends_with(".pem") && !n.ends_with("-key.pem"))
            })
            .count();
        assert_eq!(
            certs + 1,
            made,
            "cfssl made {certs} certificates (and the encryption key), expected {}",
            made - 1
        );
        walls.push(m.wall);
        rss = rss.max(m.max_rss_kb);
    }
    (median(walls), rss, made)
}

fn main() {
    // `cargo bench` passes --bench (a filter argument is not supported and not needed);
    // `cargo test --all-targets` runs bench targets without it, and should not take minutes.
    if !std::env::args().any(|a| a == "--bench") {
        println!("pki bench: not run (no --bench); use `cargo bench --bench pki` or scripts/bench");
        return;
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let scratch = Scratch::new();
    struct Case {
        nodes: usize,
        alg: &'static str,
        text: String,
        runs: usize,
    }
    let cases = [
        Case {
            nodes: 7,
            alg: "ecdsa-p256",
            text: example("ecdsa-p256"),
            runs: 21,
        },
        Case {
            nodes: 200,
            alg: "ecdsa-p256",
            text: big_inventory(200, "ecdsa-p256"),
            runs: 5,
        },
        Case {
            nodes: 7,
            alg: "rsa-2048",
            text: example("rsa-2048"),
            runs: 5,
        },
        Case {
            nodes: 200,
            alg: "rsa-2048",
            text: big_inventory(200, "rsa-2048"),
            runs: 1,
        },
        // 1000 workers (and 3 masters and the load balancer): render must stay O(n).
        Case {
            nodes: 1004,
            alg: "ecdsa-p256",
            text: big_inventory(1004, "ecdsa-p256"),
            runs: 3,
        },
    ];

    let cfssl = have("cfssl").is_some() && have("cfssljson").is_some();
    let mut baseline: Vec<(usize, Duration, u64, usize)> = Vec::new();
    if cfssl {
        for (nodes, runs) in [(7, 3), (200, 1)] {
            let text = if nodes == 7 {
                example("rsa-2048")
            } else {
                big_inventory(200, "rsa-2048")
            };
            eprintln!("pki bench: cfssl baseline, {nodes} nodes ({runs} runs)");
            let (wall, rss, made) = measure_cfssl(&scratch, &text, runs);
            baseline.push((nodes, wall, rss, made));
        }
    } else {
        eprintln!(
            "pki bench: cfssl/cfssljson not found (apt-get install golang-cfssl); no baseline"
        );
    }

    let mut binary_rows = String::new();
    let mut inproc_rows = String::new();
    let mut targets = String::new();
    for c in &cases {
        eprintln!("pki bench: {} nodes, {} ({} runs)", c.nodes, c.alg, c.runs);
        let inv = inventory::parse(Path::new("bench.toml"), &c.text).unwrap();
        let files = 3 + pki::matrix(&inv).len() + 2 - usize::from(!inv.addons.aggregation);
        let b = measure_binary(&scratch, &c.text, c.runs);
        let (g, r, w) = measure_in_process(&scratch, &c.text, c.runs);
        let base = baseline.iter().find(|x| x.0 == c.nodes);
        let ratio = base
            .map(|x| format!("{:.0}×", x.1.as_secs_f64() / b.generate.as_secs_f64()))
            .unwrap_or("-".into());
        let _ = writeln!(
            binary_rows,
            "| {} nodes, {} | {files} | {} | {} | {} | {} | {} | {ratio} |",
            c.nodes,
            c.alg,
            ms(b.generate),
            mb(b.generate_rss_kb),
            ms(b.render),
            mb(b.render_rss_kb),
            ms(b.total)
        );
        let _ = writeln!(
            inproc_rows,
            "| {} nodes, {} | {} | {} | {} | {} |",
            c.nodes,
            c.alg,
            c.runs,
            ms(g),
            ms(r),
            ms(w)
        );
        if c.alg == "ecdsa-p256" && c.nodes == 7 {
            let _ = writeln!(
                targets,
                "- {} 7 nodes, ECDSA: `pki generate` under 50 ms: {}",
                mark(b.generate < Duration::from_millis(50)),
                ms(b.generate)
            );
            if let Some(x) = base {
                let f = x.1.as_secs_f64() / b.generate.as_secs_f64();
                let _ = writeln!(
                    targets,
                    "- {} 7 nodes, ECDSA: ≥ 25× faster than cfssl: {f:.0}×",
                    mark(f >= 25.0)
                );
            }
        }
        if c.nodes == 1004 {
            let (bytes, files) = rendered_bytes(&c.text);
            let _ = writeln!(
                targets,
                "- {} 1000 workers: `render` under 2 s: {}",
                mark(b.render < Duration::from_secs(2)),
                ms(b.render)
            );
            let _ = writeln!(
                targets,
                "- {} 1000 workers: `render` peak RSS under 50 MB: {}",
                mark(b.render_rss_kb < 50 * 1024),
                mb(b.render_rss_kb)
            );
            let _ = writeln!(
                targets,
                "- {} 1000 workers: rendered bytes O(n): {files} files, {:.1} MB of distinct contents (shared files written once, hard-linked)",
                mark(bytes < 50 * 1024 * 1024),
                bytes as f64 / 1e6
            );
        }
        if c.alg == "ecdsa-p256" && c.nodes == 200 {
            let _ = writeln!(
                targets,
                "- {} 200 nodes, ECDSA: `pki generate` under 1 s: {}",
                mark(b.generate < Duration::from_secs(1)),
                ms(b.generate)
            );
            let _ = writeln!(
                targets,
                "- {} 200 nodes, ECDSA: `pki generate` + `render` under 1 s: {}",
                mark(b.total < Duration::from_secs(1)),
                ms(b.total)
            );
        }
    }

    let mut md = String::new();
    let _ = writeln!(
        md,
        "PKI: the real binary, each command a fresh process from an empty directory (median wall time, peak RSS of the process):\n"
    );
    let _ = writeln!(
        md,
        "| case | PKI entries | `pki generate` | RSS | `render` | RSS | both | cfssl ÷ `pki generate` |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
    md.push_str(&binary_rows);
    if !baseline.is_empty() {
        let _ = writeln!(
            md,
            "\nBaseline, the seed's way: cfssl + cfssljson ({}), one certificate at a time, RSA-2048, the same certificates:\n",
            cfssl_version()
        );
        let _ = writeln!(
            md,
            "| case | PKI entries | wall | peak RSS (largest process) |"
        );
        let _ = writeln!(md, "|---|---|---|---|");
        for (nodes, wall, rss, made) in &baseline {
            let _ = writeln!(
                md,
                "| {nodes} nodes, cfssl rsa-2048 | {made} | {} | {} |",
                ms(*wall),
                mb(*rss)
            );
        }
    }
    let _ = writeln!(
        md,
        "\nThe same stages in-process (`cargo bench --bench pki`, median; {cores} cores):\n"
    );
    let _ = writeln!(md, "| case | runs | pki generate | render | write tree |");
    let _ = writeln!(md, "|---|---|---|---|---|");
    md.push_str(&inproc_rows);
    let _ = writeln!(md, "\nPKI targets:\n");
    md.push_str(&targets);
    println!("{md}");
    if let Some(dir) = std::env::var_os("HW_BENCH_REPORT") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(Path::new(&dir).join("pki.md"), &md).unwrap();
    }
}

fn cfssl_version() -> String {
    Command::new("cfssl")
        .arg("version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(|l| l.trim().to_string()))
        .unwrap_or_else(|| "cfssl".into())
}
