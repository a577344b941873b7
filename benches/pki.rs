//! `cargo bench --bench pki`: time of `pki generate` (+ `render`) from an empty PKI directory,
//! for the seed's 7-node cluster and a generated 200-node inventory, ECDSA P-256 and RSA-2048.
//! Prints a table; targets are in the README (performance section).

use std::path::Path;
use std::time::{Duration, Instant};

use hardway::{inventory, pki, render};

fn big_inventory(nodes: usize, algorithm: &str) -> String {
    let mut s = format!(
        "[cluster]\nname = \"big\"\ndomain = \"big.local\"\nkubernetes_version = \"1.31.2\"\n\
         service_cidr = \"10.32.0.0/24\"\npod_cidr = \"10.200.0.0/16\"\n\n\
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
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/inventory/example.toml")).unwrap();
    text.replace("algorithm = \"ecdsa-p256\"", &format!("algorithm = \"{algorithm}\""))
}

/// Median wall times of `runs` fresh runs: pki generate, render (in memory), writing the tree.
fn measure(text: &str, runs: usize) -> (Duration, Duration, Duration, usize) {
    let inv = inventory::parse(Path::new("bench.toml"), text).expect("valid bench inventory");
    let mut gen_times = Vec::new();
    let mut render_times = Vec::new();
    let mut write_times = Vec::new();
    let mut certs = 0;
    for _ in 0..runs {
        let dir = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let (p, report) = pki::generate(&inv, &dir.path().join("pki"), pki::GenerateOptions::default()).unwrap();
        gen_times.push(t.elapsed());
        certs = report.entries.len();
        let t = Instant::now();
        let r = render::render(&inv, &p).unwrap();
        render_times.push(t.elapsed());
        let t = Instant::now();
        r.write_to(&dir.path().join("build")).unwrap();
        write_times.push(t.elapsed());
    }
    for v in [&mut gen_times, &mut render_times, &mut write_times] {
        v.sort();
    }
    (gen_times[runs / 2], render_times[runs / 2], write_times[runs / 2], certs)
}

fn main() {
    // `cargo bench` passes --bench; a filter argument is not supported and not needed.
    println!("hardway pki generate + render, median of N fresh runs ({} cores)", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    println!("{:<24} {:>5} {:>6} {:>14} {:>12} {:>12}", "case", "runs", "PKI", "pki generate", "render", "write tree");
    let cases: Vec<(&str, String, usize)> = vec![
        ("7 nodes, ecdsa-p256", example("ecdsa-p256"), 21),
        ("200 nodes, ecdsa-p256", big_inventory(200, "ecdsa-p256"), 5),
        ("7 nodes, rsa-2048", example("rsa-2048"), 5),
        ("200 nodes, rsa-2048", big_inventory(200, "rsa-2048"), 1),
    ];
    for (name, text, runs) in cases {
        let (g, r, w, n) = measure(&text, runs);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!("{name:<24} {runs:>5} {n:>6} {:>11.1} ms {:>9.1} ms {:>9.1} ms", ms(g), ms(r), ms(w));
    }
}
