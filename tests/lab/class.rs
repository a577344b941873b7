//! The classroom on labs (`class::lab::*`, root, under the lab lock): every fault scenario
//! breaks a healthy lab deployed to the lb phase, verify FAILs the scenario's check with a hint
//! naming the cause, and after `lab fix` verify passes again; and a class of three students,
//! each lab on its own bridge and /24 with its own key, deployed to etcd, graded, one lab broken
//! and graded, reset, taken down. These labs use their own state directories and subnets
//! (10.223.0.0/16), and are torn down also when the test fails. What needs no lab is in the
//! `it` binary's `class`.

use std::path::{Path, PathBuf};

use crate::common::{hardway, ok, repo, run, text};

/// Where a class test keeps its labs: its own state directory and subnet pool.
struct Place {
    state_dir: PathBuf,
    pool: &'static str,
}

impl Place {
    fn args(&self) -> Vec<String> {
        vec![
            "--state-dir".into(),
            self.state_dir.display().to_string(),
            "--subnet-pool".into(),
            self.pool.into(),
        ]
    }
}

mod lab {
    use std::collections::BTreeSet;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::common::lab::{Turn, place, turn, verify_checks};
    use hardway::class::faults::Expectation;
    use hardway::class::scenarios::SCENARIOS;
    use hardway::lab::{LabOptions, named};

    /// Takes every named lab under its state directory down when dropped, also on panic.
    /// A student's row of `class grade --output json`.
    fn student(grade: &serde_json::Value, name: &str) -> serde_json::Value {
        grade
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["student"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no row for {name}: {grade:#}"))
    }

    struct Labs {
        place: Place,
        /// The labs' inventories and PKIs: removed after the labs are down.
        dir: tempfile::TempDir,
        _turn: Turn,
    }

    impl Labs {
        fn new(state_dir: &str, pool: &'static str) -> Labs {
            let inv =
                hardway::inventory::load(&repo().join("tests/fixtures/lab-etcd.toml")).unwrap();
            hardway::lab::preflight(inv.lab.suite).unwrap_or_else(|e| panic!("{e}"));
            let labs = Labs {
                place: Place {
                    state_dir: state_dir.into(),
                    pool,
                },
                dir: tempfile::tempdir().unwrap(),
                _turn: turn(),
            };
            labs.down_all(); // what a crashed earlier run left
            labs
        }

        /// The class's directory (`class --dir`).
        fn class_dir(&self) -> PathBuf {
            self.dir.path().join("class")
        }

        /// `hardway class ARGS` on this class, in this state directory and subnet pool.
        fn class(&self, args: &[&str]) -> std::process::Command {
            let mut c = hardway();
            c.arg("class")
                .args(args)
                .arg("--dir")
                .arg(self.class_dir())
                .args(self.place.args());
            c
        }

        fn opts(&self) -> LabOptions {
            LabOptions {
                state_dir: self.place.state_dir.clone(),
                ..LabOptions::default()
            }
        }

        fn down_all(&self) {
            for r in named::records(&self.place.state_dir) {
                match hardway::class::labs::find(&self.opts(), &r.name) {
                    Ok((_, inv)) => hardway::lab::down(&inv, &self.opts())
                        .unwrap_or_else(|e| eprintln!("teardown of {}: {e}", r.name)),
                    Err(e) => eprintln!("teardown of {}: {e}", r.name),
                }
            }
        }
    }

    impl Drop for Labs {
        fn drop(&mut self) {
            self.down_all();
            let _ = std::fs::remove_dir_all(&self.place.state_dir);
        }
    }

    fn verify_json(inv: &Path, pki: &Path) -> (bool, Vec<serde_json::Value>) {
        verify_checks(&run(hardway()
            .arg("verify")
            .arg("-i")
            .arg(inv)
            .arg("--pki")
            .arg(pki)
            .args(["--output", "json"])))
    }

    fn fails(checks: &[serde_json::Value]) -> Vec<String> {
        checks
            .iter()
            .filter(|c| c["status"] == "FAIL")
            .map(|c| {
                format!(
                    "{} {}: {} (hint: {})",
                    c["host"], c["check"], c["detail"], c["hint"]
                )
            })
            .collect()
    }

    /// Polls verify until `done` says yes, or fails at the deadline with what verify said last.
    fn verify_until(
        inv: &Path,
        pki: &Path,
        what: &str,
        done: impl Fn(bool, &[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let (passed, checks) = verify_json(inv, pki);
            if done(passed, &checks) {
                return checks;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not so after 90 s; FAILs: {:#?}",
                fails(&checks)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn names_cause(checks: &[serde_json::Value], e: &Expectation) -> bool {
        checks.iter().any(|c| {
            let lower = |k: &str| c[k].as_str().unwrap_or("").to_lowercase();
            place(c) == e.host
                && c["check"] == e.check.as_str()
                && c["status"] == "FAIL"
                && lower("hint").contains(&e.hint_names.to_lowercase())
                && lower("detail").contains(&e.detail_names.to_lowercase())
        })
    }

    #[test]
    fn every_fault_scenario_fails_its_check_naming_the_cause_and_fix_restores_a_passing_lab() {
        let labs = Labs::new("/run/hardway/test-class-faults", "10.223.0.0/20");
        let lab_dir = labs.dir.path().join("faults");
        let up = |extra: &[&str]| {
            ok(hardway()
                .args(["lab", "up", "-i"])
                .arg(repo().join("tests/fixtures/lab-etcd.toml"))
                .args(["--name", "faults", "--dir"])
                .arg(&lab_dir)
                .args(extra)
                .args(labs.place.args()))
        };
        let log = labs.dir.path().join("lab-up.log");
        eprintln!(
            "{}",
            up(&["--to", "lb", "--log-file", log.to_str().unwrap()])
        );
        // `lab up --to` deploys, and logs what it did on the nodes as deploy does.
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            logged.contains("faults-lab-m1") && logged.contains("etcd"),
            "lab up --to wrote no run log of its deploy: {logged:.2000}"
        );
        let (inv, pki) = (lab_dir.join("inventory.toml"), lab_dir.join("pki"));
        verify_until(&inv, &pki, "the fresh lab passes verify", |passed, _| {
            passed
        });
        let fault = |args: &[&str]| {
            run(hardway()
                .arg("lab")
                .args(args)
                .args(["--name", "faults"])
                .args(labs.place.args()))
        };

        // Breaking needs --yes; --dry-run only says what it would do.
        let o = fault(&["break", "etcd-stopped"]);
        assert!(
            !o.status.success() && text(&o).contains("Run again with --yes"),
            "{}",
            text(&o)
        );
        let o = fault(&["break", "etcd-stopped", "--dry-run"]);
        assert!(
            o.status.success() && text(&o).contains("would: faults-lab-m1: systemctl stop etcd"),
            "{}",
            text(&o)
        );
        assert!(verify_json(&inv, &pki).0, "neither changed anything");

        // The scenarios of a lab at the lb phase; those that need a running Kubernetes are
        // cluster::lab's.
        for (step, s) in SCENARIOS
            .iter()
            .filter(|s| s.needs <= hardway::components::Phase::Lb)
            .enumerate()
        {
            eprintln!("step {}: {} ({})", step + 1, s.name, s.breaks);
            let o = fault(&["break", s.name, "--yes", "--output", "json"]);
            if s.name == "clock-skew" {
                // nspawn machines share the host's clock: refused, and nothing changed.
                assert!(
                    !o.status.success() && text(&o).contains("clock of their own"),
                    "{}",
                    text(&o)
                );
                assert!(verify_json(&inv, &pki).0);
                continue;
            }
            assert!(o.status.success(), "break {}: {}", s.name, text(&o));
            let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            let e: Expectation = Expectation {
                host: report["expect"]["host"].as_str().unwrap().into(),
                check: report["expect"]["check"].as_str().unwrap().into(),
                hint_names: report["expect"]["hint_names"].as_str().unwrap().into(),
                detail_names: report["expect"]["detail_names"].as_str().unwrap().into(),
            };
            verify_until(
                &inv,
                &pki,
                &format!(
                    "{}: verify FAILs {} on {} naming {:?}",
                    s.name, e.check, e.host, e.hint_names
                ),
                |passed, checks| !passed && names_cause(checks, &e),
            );
            if step == 0 {
                // Breaking what is broken changes nothing.
                let again = fault(&["break", s.name, "--yes"]);
                assert!(
                    again.status.success() && text(&again).contains("was already broken"),
                    "{}",
                    text(&again)
                );
            }
            // Fixing asks for --yes, as breaking does.
            let o = fault(&["fix", s.name]);
            assert!(
                !o.status.success() && text(&o).contains("--yes"),
                "fix without --yes: {}",
                text(&o)
            );
            let o = fault(&["fix", s.name, "--yes"]);
            assert!(
                o.status.success() && text(&o).contains("is fixed on"),
                "fix {}: {}",
                s.name,
                text(&o)
            );
            if step == 0 {
                // Fixing what is not broken changes nothing either.
                let again = fault(&["fix", s.name, "--yes"]);
                assert!(
                    again.status.success() && text(&again).contains("is not broken"),
                    "{}",
                    text(&again)
                );
            }
            verify_until(
                &inv,
                &pki,
                &format!("{}: verify passes after the fix", s.name),
                |passed, _| passed,
            );
        }
        // A second `up` leaves the lab as it is, on the same subnet.
        let before = std::fs::read_to_string(&inv).unwrap();
        up(&[]);
        assert_eq!(std::fs::read_to_string(&inv).unwrap(), before);
        drop(labs);
    }

    fn cgroup_limit(cluster: &str, node: &str) -> Option<String> {
        let root = Path::new("/sys/fs/cgroup/memory/hardway-lab");
        let lab = std::fs::read_dir(root).ok()?.flatten().find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{cluster}-"))
        })?;
        std::fs::read_to_string(lab.path().join(node).join("memory.limit_in_bytes"))
            .ok()
            .map(|s| s.trim().to_string())
    }

    #[test]
    fn a_class_of_three_side_by_side_deployed_graded_broken_reset_and_down() {
        let labs = Labs::new("/run/hardway/test-class", "10.223.16.0/20");
        let students = labs.dir.path().join("students.txt");
        std::fs::write(&students, "# three students\nalice\nbob\ncarol\n").unwrap();
        let class_dir = labs.class_dir();
        let class = |args: &[&str]| labs.class(args);
        let t = Instant::now();
        let (students, inv) = (
            students.display().to_string(),
            repo()
                .join("tests/fixtures/lab-etcd.toml")
                .display()
                .to_string(),
        );
        eprintln!(
            "{}",
            ok(&mut class(&[
                "up",
                "--to",
                "etcd",
                "--memory-max",
                "768M",
                "--cpu-quota",
                "100%",
                "--students",
                &students,
                "-i",
                &inv
            ]))
        );
        eprintln!("class up (3 students, to etcd) took {:.1?}", t.elapsed());

        // Each its own names, subnet, bridge and key.
        let invs: Vec<hardway::inventory::Inventory> = ["alice", "bob", "carol"]
            .iter()
            .map(|s| hardway::inventory::load(&class_dir.join(s).join("inventory.toml")).unwrap())
            .collect();
        let subnets: BTreeSet<String> = invs
            .iter()
            .map(|i| {
                i.nodes[0]
                    .address
                    .to_string()
                    .rsplit_once('.')
                    .unwrap()
                    .0
                    .to_string()
            })
            .collect();
        assert_eq!(subnets.len(), 3, "one subnet per lab: {subnets:?}");
        let keys: BTreeSet<PathBuf> = invs
            .iter()
            .map(|i| i.ssh.identity_file.clone().unwrap())
            .collect();
        assert_eq!(keys.len(), 3);
        for (inv, s) in invs.iter().zip(["alice", "bob", "carol"]) {
            assert_eq!(inv.cluster.name, s);
            assert!(
                inv.nodes
                    .iter()
                    .all(|n| n.name.starts_with(&format!("{s}-"))),
                "{:?}",
                inv.nodes
            );
            assert_eq!(
                crate::common::mode(inv.ssh.identity_file.as_ref().unwrap()),
                0o600
            );
            assert!(
                Path::new("/sys/class/net").join(format!("hw-{s}")).exists(),
                "bridge hw-{s}"
            );
            assert_eq!(
                cgroup_limit(s, &inv.nodes[0].name).as_deref(),
                Some("805306368"),
                "MemoryMax=768M on {}",
                inv.nodes[0].name
            );
        }
        // One lab cannot reach another's machines.
        let ssh = |inv: &hardway::inventory::Inventory, node: usize, cmd: &str| {
            run(hardway::lab::tools::ssh_command(
                inv.ssh.identity_file.as_ref().unwrap(),
                &inv.ssh.known_hosts,
                inv.nodes[node].address,
            )
            .arg(cmd))
        };
        let probe = format!(
            "timeout 3 bash -c '</dev/tcp/{}/22'",
            invs[1].nodes[0].address
        );
        assert!(ssh(&invs[0], 0, "true").status.success());
        assert!(
            !ssh(&invs[0], 0, &probe).status.success(),
            "alice's machine reached bob's"
        );

        let status: serde_json::Value =
            serde_json::from_str(&ok(&mut class(&["status", "--output", "json"]))).unwrap();
        for row in status.as_array().unwrap() {
            assert_eq!(
                (
                    row["up"].as_u64(),
                    row["reachable"].as_u64(),
                    row["nodes"].as_u64()
                ),
                (Some(5), Some(5), Some(5)),
                "{row}"
            );
        }

        let grade = || -> serde_json::Value {
            serde_json::from_str(&ok(&mut class(&["grade", "--output", "json"]))).unwrap()
        };
        let g = grade();
        for s in ["alice", "bob", "carol"] {
            let r = student(&g, s);
            assert_eq!(r["failed"], 0, "{s}: {}", r["first_failure"]);
            assert!(r["passed"].as_u64().unwrap() > 10, "{r}");
        }

        // Bob's etcd member stops: his grade names it, the others' do not change.
        ok(hardway()
            .args(["lab", "break", "etcd-stopped", "--yes", "--name", "bob"])
            .args(labs.place.args()));
        let g = grade();
        let bob = student(&g, "bob");
        assert!(bob["failed"].as_u64().unwrap() >= 1);
        assert_eq!(bob["first_failure"]["host"], "bob-lab-m1", "{bob}");
        assert!(
            bob["first_failure"]["hint"]
                .as_str()
                .unwrap()
                .contains("etcd"),
            "{bob}"
        );
        assert_eq!(student(&g, "alice")["failed"], 0);
        let table = ok(&mut class(&["status"]));
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("bob") && l.contains("FAIL")),
            "{table}"
        );

        // Reset: fresh machines, the checkpoint again, the old machines' files kept.
        let o = run(&mut class(&["reset", "bob"]));
        assert!(
            !o.status.success() && text(&o).contains("--yes"),
            "{}",
            text(&o)
        );
        eprintln!("{}", ok(&mut class(&["reset", "bob", "--yes"])));
        let saved: Vec<PathBuf> = std::fs::read_dir(class_dir.join("bob/saved"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert_eq!(saved.len(), 1);
        assert!(saved[0].join("bob-lab-m1.tar").is_file(), "{saved:?}");
        assert_eq!(student(&grade(), "bob")["failed"], 0);

        // Down, for one student: dry run first, then for real; the others stay up.
        ok(&mut class(&["down", "alice", "--dry-run"]));
        assert!(
            named::read_record(&labs.place.state_dir, "alice")
                .unwrap()
                .is_some(),
            "a dry run takes nothing down"
        );
        ok(&mut class(&["down", "alice", "--yes"]));
        let status: serde_json::Value =
            serde_json::from_str(&ok(&mut class(&["status", "--output", "json"]))).unwrap();
        let rows = status.as_array().unwrap();
        assert_eq!(
            rows.iter().find(|r| r["student"] == "alice").unwrap()["up"],
            0
        );
        assert_eq!(
            rows.iter().find(|r| r["student"] == "carol").unwrap()["up"],
            5
        );
        assert!(!Path::new("/sys/class/net/hw-alice").exists());
        ok(&mut class(&["down", "--yes"]));
        assert!(named::records(&labs.place.state_dir).is_empty());
        drop(labs);
    }
    /// A classroom of real clusters: two students, each a lab of `inventory/lab.toml`'s six
    /// machines (three masters, the load balancer, two workers) with Kubernetes built here,
    /// brought up a checkpoint at a time — `class up --to control-plane`, `--to workers`, `--to
    /// addons` — and graded at each (`class grade`: verify on every lab) until what the phase
    /// brings passes and what it does not bring yet is not passing: the API servers, then every
    /// node Ready, then the cluster's DNS and metrics-server through the aggregation layer. A
    /// fault only a real cluster shows (the scheduler stopped) on bob's lab is then his first
    /// failure, and nobody else's.
    #[test]
    fn a_class_of_real_clusters_is_deployed_phase_by_phase_and_graded_on_kubernetes() {
        crate::cluster::images_built();
        let m = crate::cluster::minor();
        let labs = Labs::new("/run/hardway/test-class-k8s", "10.223.64.0/20");
        let base = crate::cluster::inventory_for(&m, labs.dir.path());
        let students = labs.dir.path().join("students.txt");
        std::fs::write(&students, "alice\nbob\n").unwrap();
        let class_dir = labs.class_dir();
        let class = |args: &[&str]| labs.class(args);
        let grade = || -> serde_json::Value {
            serde_json::from_str(&ok(&mut class(&["grade", "--output", "json"]))).unwrap()
        };
        let checks = |s: &str| -> Vec<serde_json::Value> {
            let g: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(class_dir.join(s).join("grade.json")).unwrap(),
            )
            .unwrap();
            g["checks"].as_array().cloned().unwrap_or_default()
        };
        let status_of = |checks: &[serde_json::Value], name: &str| -> Vec<String> {
            checks
                .iter()
                .filter(|c| c["check"] == name)
                .map(|c| c["status"].as_str().unwrap_or("").to_string())
                .collect()
        };
        // Graded until `done` holds for both (a kubelet registers a moment after its deploy).
        let graded = |what: &str, done: &dyn Fn(&[serde_json::Value]) -> bool| {
            let deadline = Instant::now() + Duration::from_secs(180);
            loop {
                let g = grade();
                let rows = g.as_array().unwrap();
                if rows.iter().all(|r| r["failed"] == 0)
                    && ["alice", "bob"].iter().all(|s| done(&checks(s)))
                {
                    return g;
                }
                assert!(
                    Instant::now() < deadline,
                    "{what}: not within 180 s; the grades: {g:#}"
                );
                std::thread::sleep(Duration::from_secs(3));
            }
        };
        // A check some hosts have each (`node Ready` on every worker): there, and PASS on all.
        let pass = |c: &[serde_json::Value], n: &str| {
            let s = status_of(c, n);
            !s.is_empty() && s.iter().all(|x| x == "PASS")
        };
        type Expect<'a> = &'a dyn Fn(&[serde_json::Value]) -> bool;
        let phases: [(&str, Expect); 3] = [
            ("control-plane", &|c| {
                pass(c, "api /readyz") && !pass(c, "node Ready")
            }),
            ("workers", &|c| {
                pass(c, "node Ready") && !pass(c, "cluster DNS")
            }),
            ("addons", &|c| {
                pass(c, "node Ready") && pass(c, "cluster DNS") && pass(c, "aggregated APIs")
            }),
        ];
        let up_to = |phase: &str| {
            let t = Instant::now();
            let o = run(&mut class(&[
                "up",
                "--to",
                phase,
                "--api-timeout",
                "240",
                "--students",
                &students.display().to_string(),
                "-i",
                &base.display().to_string(),
            ]));
            assert!(o.status.success(), "class up --to {phase}:\n{}", text(&o));
            eprintln!(
                "class up --to {phase} (2 real clusters) took {:.1?}",
                t.elapsed()
            );
        };

        // Bob builds his control plane by hand on the etcd and HAProxy the class brought up,
        // as kubernetes-the-hard-way v2 does (its paths, file names, flags and units, with the
        // certificates of his class PKI): his grade judges it by the units he wrote.
        up_to("lb");
        let bob = hardway::inventory::load(&class_dir.join("bob/inventory.toml")).unwrap();
        let mut script = std::process::Command::new("sh");
        script
            .arg(repo().join("tests/fixtures/hand-built-control-plane.sh"))
            .arg(labs.dir.path().join("bob-by-hand"))
            .arg(class_dir.join("bob/pki"))
            .arg(&m.bin_dir)
            .arg(bob.ssh.identity_file.as_ref().unwrap())
            .arg(&bob.ssh.known_hosts)
            .arg(bob.load_balancer.as_ref().unwrap().address.to_string())
            .arg(bob.cluster.service_cidr.to_string())
            .args(bob.masters().map(|n| format!("{}={}", n.name, n.address)));
        ok(&mut script);
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let g = grade();
            let row = student(&g, "bob");
            let c = checks("bob");
            if row["failed"] == 0 && pass(&c, "api /readyz") && pass(&c, "unit kube-scheduler") {
                // Each master's API server certificate found where his unit names it.
                let by_hand = c
                    .iter()
                    .filter(|c| {
                        c["status"] == "PASS"
                            && c["check"].as_str().unwrap_or("").starts_with("cert ")
                            && c["detail"]
                                .as_str()
                                .unwrap_or("")
                                .starts_with("/var/lib/kubernetes/kube-api-server.crt:")
                    })
                    .count();
                assert_eq!(by_hand, bob.masters().count(), "{c:#?}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "bob's hand-built control plane does not pass within 180 s: {row}\n{c:#?}"
            );
            std::thread::sleep(Duration::from_secs(3));
        }

        // The instructor's checkpoints from here: `class up --to` brings every lab there,
        // hardway's units in place of bob's.
        for (phase, expect) in phases {
            up_to(phase);
            graded(&format!("graded at {phase}"), expect);
        }

        let broke: serde_json::Value = serde_json::from_str(&ok(hardway()
            .args([
                "lab",
                "break",
                "scheduler-stopped",
                "--yes",
                "--name",
                "bob",
            ])
            .args(["--output", "json"])
            .args(labs.place.args())))
        .unwrap();
        let e = &broke["expect"];
        let names_it = |c: &serde_json::Value| {
            c["status"] == "FAIL"
                && place(c) == e["host"].as_str().unwrap()
                && c["check"] == e["check"]
                && c["hint"]
                    .as_str()
                    .unwrap_or("")
                    .contains(e["hint_names"].as_str().unwrap())
        };
        // Graded until bob's grade names it (the scenario's check, polled with a deadline).
        let deadline = Instant::now() + Duration::from_secs(90);
        let g = loop {
            let g = grade();
            if checks("bob").iter().any(names_it) {
                break g;
            }
            assert!(
                Instant::now() < deadline,
                "bob's grade does not name the stopped scheduler within 90 s ({e}): {:#?}",
                checks("bob")
            );
            std::thread::sleep(Duration::from_secs(3));
        };
        assert!(student(&g, "bob")["failed"].as_u64().unwrap() >= 1, "{g:#}");
        assert_eq!(student(&g, "alice")["failed"], 0, "{g:#}");
        ok(&mut class(&["down", "--yes"]));
        assert!(named::records(&labs.place.state_dir).is_empty());
        drop(labs);
    }
}
