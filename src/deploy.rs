//! `hardway deploy`: runs the pipeline against real machines, phase by phase.
//!
//! ```text
//! pki::generate → render → connect + apply::gather (all hosts) → preflight → plan::plan_host
//!   → apply::upload → per phase: apply::systemctl → bootstrap::wait_healthy (etcd) → addons
//! ```
//!
//! Hosts are worked on concurrently, at most `--parallel` at a time, each with its own SSH
//! session on tokio's blocking pool. A host that fails (unreachable, refused host key, a unit
//! that does not start) is reported and skipped for the later phases while the others go on;
//! a failed preflight (missing binaries, busy ports, clock skew, swap) stops the deploy before
//! anything is changed anywhere.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::apply::{self, Facts};
use crate::bootstrap::{self, EtcdAuth, MemberStatus};
use crate::inventory::{Inventory, Node, Role};
use crate::plan::{self, HostPlan, Phase, Plan};
use crate::render::{self, File, Rendered};
use crate::ssh::{Conn, HostKeyPolicy, Target, fan_out};
use crate::pki;

#[derive(Debug, Clone)]
pub struct DeployOptions {
    pub pki_dir: PathBuf,
    /// The phases to run besides preflight, which always runs.
    pub phases: Vec<Phase>,
    pub dry_run: bool,
    pub parallel: usize,
    pub accept_new_host_keys: bool,
    pub etcd_timeout: Duration,
    /// Draw one progress line per host on a terminal.
    pub progress: bool,
}

impl DeployOptions {
    pub fn new(pki_dir: PathBuf) -> DeployOptions {
        DeployOptions {
            pki_dir,
            phases: Phase::ALL.to_vec(),
            dry_run: false,
            parallel: 32,
            accept_new_host_keys: false,
            etcd_timeout: Duration::from_secs(120),
            progress: false,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct HostOutcome {
    pub node: String,
    pub ok: bool,
    /// The phase the host failed in, if it did.
    pub failed_phase: Option<Phase>,
    pub error: Option<String>,
    pub changed: usize,
    pub restarted: Vec<String>,
    pub started: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeployReport {
    pub dry_run: bool,
    pub phases: Vec<Phase>,
    /// Certificates created or re-issued by the implicit `pki generate`.
    pub pki_changes: Vec<String>,
    pub plan: Plan,
    pub hosts: Vec<HostOutcome>,
    pub etcd: Vec<MemberStatus>,
}

impl DeployReport {
    pub fn failed(&self) -> Vec<&HostOutcome> {
        self.hosts.iter().filter(|h| !h.ok).collect()
    }

    pub fn changed(&self) -> usize {
        self.hosts.iter().map(|h| h.changed).sum()
    }

    /// The final summary, one row per host.
    pub fn table(&self) -> String {
        let mut s = format!("{:<16} {:<7} {:>8}  {:<40} {}\n", "HOST", "STATUS", "CHANGED", "RESTARTED", "ERROR");
        for h in &self.hosts {
            let status = if h.ok { "ok" } else { "FAILED" };
            let restarted = if h.restarted.is_empty() { "-".to_string() } else { h.restarted.join(",") };
            let error = match (&h.failed_phase, &h.error) {
                (Some(p), Some(e)) => format!("[{p}] {}", e.lines().next().unwrap_or("")),
                (None, Some(e)) => e.lines().next().unwrap_or("").to_string(),
                _ => String::new(),
            };
            s.push_str(&format!("{:<16} {:<7} {:>8}  {:<40} {error}\n", h.node, status, h.changed, restarted));
        }
        let restarts: usize = self.hosts.iter().map(|h| h.restarted.len()).sum();
        s.push_str(&format!(
            "{} changes, {restarts} restarts, {} of {} hosts failed",
            self.changed(),
            self.failed().len(),
            self.hosts.len()
        ));
        s
    }
}

/// The binaries a phase needs on a node, by role: (path, unit it belongs to).
fn needed_binaries(inv: &Inventory, node: &Node, phase: Phase) -> Vec<(String, Option<&'static str>)> {
    let dir = &inv.binaries.remote_dir;
    let bin = |name: &str| format!("{dir}/{name}");
    match phase {
        Phase::Etcd if inv.is_etcd_member(node) => vec![(bin("etcd"), Some("etcd"))],
        // HAProxy is a distribution package on the LB host, not a Kubernetes release binary.
        Phase::Lb if node.has(Role::Lb) => vec![("/usr/sbin/haproxy".into(), None)],
        Phase::ControlPlane if node.has(Role::Master) => vec![
            (bin("kube-apiserver"), Some("kube-apiserver")),
            (bin("kube-controller-manager"), Some("kube-controller-manager")),
            (bin("kube-scheduler"), Some("kube-scheduler")),
        ],
        Phase::Workers if node.has(Role::Worker) => vec![
            (bin("kubelet"), Some("kubelet")),
            (bin("kube-proxy"), Some("kube-proxy")),
            (bin("containerd"), Some("containerd")),
        ],
        Phase::Addons if inv.masters().next().is_some_and(|m| m.name == node.name) => vec![(bin("kubectl"), None)],
        _ => vec![],
    }
}

/// Ports a phase's units listen on, with the process expected to hold them.
fn phase_ports(inv: &Inventory, node: &Node, phase: Phase) -> Vec<(u16, &'static str)> {
    match phase {
        Phase::Etcd if inv.is_etcd_member(node) => vec![(2379, "etcd"), (2380, "etcd")],
        Phase::Lb if node.has(Role::Lb) => {
            vec![(inv.load_balancer.as_ref().map(|l| l.port).unwrap_or(6443), "haproxy"), (9000, "haproxy")]
        }
        Phase::ControlPlane if node.has(Role::Master) => {
            vec![(6443, "kube-apiserver"), (10257, "kube-controller"), (10259, "kube-scheduler")]
        }
        Phase::Workers if node.has(Role::Worker) => vec![(10250, "kubelet"), (10256, "kube-proxy")],
        _ => vec![],
    }
}

/// One host's working state across phases.
struct Host {
    node: Node,
    target: Target,
    conn: Option<Conn>,
    facts: Option<Facts>,
    plan: Option<HostPlan>,
    outcome: HostOutcome,
}

impl Host {
    fn fail(&mut self, phase: Phase, e: impl std::fmt::Display) {
        self.outcome.ok = false;
        self.outcome.failed_phase = Some(phase);
        self.outcome.error = Some(e.to_string());
        self.conn = None;
    }

    fn alive(&self) -> bool {
        self.outcome.ok && self.conn.is_some()
    }
}

/// Adds binaries found in `binaries.local_dir` to the files of the hosts that need them.
fn add_local_binaries(inv: &Inventory, rendered: &mut Rendered, phases: &[Phase]) -> Result<()> {
    let Some(local) = &inv.binaries.local_dir else { return Ok(()) };
    let mut cache: BTreeMap<PathBuf, Vec<u8>> = BTreeMap::new();
    for node in &inv.nodes {
        for &phase in phases {
            for (remote, unit) in needed_binaries(inv, node, phase) {
                let name = remote.rsplit('/').next().expect("a path");
                let src = local.join(name);
                if !src.is_file() || !remote.starts_with(&inv.binaries.remote_dir) {
                    continue;
                }
                if !cache.contains_key(&src) {
                    let bytes = std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
                    cache.insert(src.clone(), bytes);
                }
                let files = rendered.hosts.get_mut(&node.name).expect("every node is rendered");
                files.push(File { path: remote.clone(), mode: 0o755, contents: cache[&src].clone(), units: unit.into_iter().collect() });
                files.sort_by(|a, b| a.path.cmp(&b.path));
            }
        }
    }
    Ok(())
}

/// Copies a directory tree (the PKI, for a dry run), keeping modes; a missing source is empty.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    std::fs::set_permissions(to, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let Ok(entries) = std::fs::read_dir(from) else { return Ok(()) };
    for e in entries {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), &dest).with_context(|| format!("copying {}", e.path().display()))?;
        }
    }
    Ok(())
}

/// Deploys the inventory. Errors are for problems that stop everything (PKI, preflight); per-host
/// failures are in the report.
pub fn deploy(inv: &Inventory, opts: &DeployOptions) -> Result<DeployReport> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(opts.parallel.max(1) + 2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(deploy_async(inv.clone(), opts.clone()))
}

async fn deploy_async(inv: Inventory, opts: DeployOptions) -> Result<DeployReport> {
    let mut phases: Vec<Phase> = opts.phases.iter().copied().filter(|p| *p != Phase::Preflight).collect();
    phases.sort();
    phases.dedup();

    // The PKI is brought up to date (kept where it still fits), then everything is rendered. A
    // dry run does the same on a throwaway copy, so its plan shows exactly what a deploy would
    // re-issue and send, and the real PKI directory stays as it is.
    let scratch = opts.dry_run.then(|| std::env::temp_dir().join(format!("hardway-dry-run-{}", std::process::id())));
    let generated = match &scratch {
        Some(tmp) => copy_dir(&opts.pki_dir, tmp).and_then(|()| Ok(pki::generate(&inv, tmp, pki::GenerateOptions::default())?)),
        None => Ok(pki::generate(&inv, &opts.pki_dir, pki::GenerateOptions::default())?),
    };
    if let Some(tmp) = &scratch {
        let _ = std::fs::remove_dir_all(tmp);
    }
    let (pki, pki_report) = generated?;
    let would = if opts.dry_run { "would be " } else { "" };
    let pki_changes: Vec<String> = pki_report
        .entries
        .iter()
        .filter(|(_, a)| *a != pki::Action::Kept)
        .map(|(n, a)| match a {
            pki::Action::Reissued(why) => format!("{n}: {would}re-issued ({why})"),
            _ => format!("{n}: {would}created"),
        })
        .collect();
    let mut rendered = render::render(&inv, &pki)?;
    add_local_binaries(&inv, &mut rendered, &phases)?;
    let rendered = Arc::new(rendered);
    let inv = Arc::new(inv);

    let progress = indicatif::MultiProgress::with_draw_target(if opts.progress {
        indicatif::ProgressDrawTarget::stderr()
    } else {
        indicatif::ProgressDrawTarget::hidden()
    });
    let mut bars = BTreeMap::new();
    let style = indicatif::ProgressStyle::with_template("{prefix:>16} {spinner} {msg}").expect("valid template");
    for n in &inv.nodes {
        let bar = progress.add(indicatif::ProgressBar::new_spinner().with_style(style.clone()).with_prefix(n.name.clone()));
        bar.enable_steady_tick(Duration::from_millis(120));
        bars.insert(n.name.clone(), bar);
    }
    let bars = Arc::new(bars);

    let mut hosts: Vec<Host> = inv.nodes.iter().map(|n| new_host(&inv, n)).collect();

    // Preflight, part 1: connect and read every host's state.
    let policy = if opts.accept_new_host_keys { HostKeyPolicy::AcceptNew } else { HostKeyPolicy::Strict };
    {
        let (inv, rendered, bars, phases) = (inv.clone(), rendered.clone(), bars.clone(), phases.clone());
        hosts = fan_out(hosts, opts.parallel, move |h| {
            let bar = &bars[&h.node.name];
            bar.set_message("preflight: connecting");
            connect_and_gather(h, &inv, &rendered, &phases, policy);
            bar.set_message("preflight: done");
        })
        .await;
    }

    // Preflight, part 2: checks across hosts. Any failure here stops the deploy untouched.
    let reached: Vec<(&Node, &Facts)> = hosts.iter().filter(|h| h.alive()).filter_map(|h| Some((&h.node, h.facts.as_ref()?))).collect();
    let problems = preflight_problems(&inv, &reached, &rendered, &phases);
    if !problems.is_empty() {
        progress.clear().ok();
        bail!("preflight failed; nothing was changed:\n  {}", problems.join("\n  "));
    }

    // Plan.
    for h in hosts.iter_mut().filter(|h| h.alive()) {
        let facts = h.facts.as_ref().expect("alive hosts have facts");
        h.plan = Some(plan::plan_host(&rendered, &h.node.name, &facts.files, &phases));
    }
    let plan = Plan { phases: phases.clone(), hosts: hosts.iter().filter_map(|h| h.plan.clone().map(|p| (h.node.name.clone(), p))).collect() };

    if opts.dry_run {
        progress.clear().ok();
        return Ok(report(&hosts, plan, phases, pki_changes, vec![], true));
    }

    // Files: every changed file of the selected phases, one round trip per host.
    {
        let (bars, inv, files_phase) = (bars.clone(), inv.clone(), phases.contains(&Phase::Files));
        hosts = fan_out(hosts, opts.parallel, move |h| {
            let bar = &bars[&h.node.name];
            bar.set_message("files: sending");
            send_files(h, &inv.cluster.name, files_phase);
            bar.set_message(format!("files: {} sent", h.outcome.changed));
        })
        .await;
    }

    // Units, phase by phase.
    let mut etcd = vec![];
    let mut reloaded: BTreeMap<String, bool> = BTreeMap::new();
    for &phase in &phases {
        if phase == Phase::Files || phase == Phase::Addons {
            continue;
        }
        let no_block = phase == Phase::Etcd;
        let reloaded_before = Arc::new(reloaded.clone());
        let bars2 = bars.clone();
        hosts = fan_out(hosts, opts.parallel, move |h| {
            if !h.alive() {
                return;
            }
            let plan = h.plan.as_ref().expect("planned");
            let units: Vec<_> = plan.units.iter().filter(|u| u.phase == phase).collect();
            if units.is_empty() {
                return;
            }
            bars2[&h.node.name].set_message(format!("{phase}: starting {}", units.iter().map(|u| u.unit.as_str()).collect::<Vec<_>>().join(",")));
            let restart: Vec<String> = units.iter().filter(|u| u.restart).map(|u| u.unit.clone()).collect();
            let start: Vec<String> = units.iter().filter(|u| !u.restart).map(|u| u.unit.clone()).collect();
            let reload = plan.daemon_reload && !reloaded_before.get(&h.node.name).copied().unwrap_or(false);
            let conn = h.conn.as_ref().expect("alive");
            if let Err(e) = apply::systemctl(conn, reload, &restart, &start, no_block) {
                return h.fail(phase, format!("{e:#}"));
            }
            if !no_block {
                match apply::unit_states(conn, &units.iter().map(|u| u.unit.clone()).collect::<Vec<_>>()) {
                    Ok(states) => {
                        let bad: Vec<String> = states.iter().filter(|(_, s)| *s != "active").map(|(u, s)| format!("{u} is {s}")).collect();
                        if !bad.is_empty() {
                            let journal = apply::journal_tail(conn, &units.iter().map(|u| u.unit.clone()).collect::<Vec<_>>(), 15).unwrap_or_default();
                            return h.fail(phase, format!("{}\n{journal}", bad.join(", ")));
                        }
                    }
                    Err(e) => return h.fail(phase, e),
                }
            }
            h.outcome.restarted.extend(restart);
            h.outcome.started.extend(start);
        })
        .await;
        for h in &hosts {
            if h.plan.as_ref().is_some_and(|p| p.daemon_reload && p.units.iter().any(|u| u.phase == phase)) {
                reloaded.insert(h.node.name.clone(), true);
            }
        }

        if phase == Phase::Etcd {
            let (ok, members) = wait_for_etcd(&inv, &pki, &hosts, opts.etcd_timeout).await;
            if !ok {
                // Name every member's state and the end of its journal, then stop: nothing
                // after etcd can work without it.
                let mut detail = String::new();
                for h in hosts.iter().filter(|h| h.alive() && inv.is_etcd_member(&h.node)) {
                    let conn = h.conn.as_ref().expect("alive");
                    let state = apply::unit_states(conn, &["etcd".to_string()]).ok().and_then(|s| s.get("etcd").cloned()).unwrap_or_default();
                    let journal = apply::journal_tail(conn, &["etcd".to_string()], 10).unwrap_or_default();
                    detail.push_str(&format!("{}: etcd is {state}\n{journal}\n", h.node.name));
                }
                for m in &members {
                    detail.push_str(&format!("{}\n", bootstrap::describe(m)));
                }
                for h in hosts.iter_mut().filter(|h| h.alive() && inv.is_etcd_member(&h.node)) {
                    h.fail(Phase::Etcd, format!("etcd not healthy within {} s", opts.etcd_timeout.as_secs()));
                }
                progress.clear().ok();
                let mut r = report(&hosts, plan, phases, pki_changes, members, false);
                r.hosts.iter_mut().for_each(|h| {
                    if h.failed_phase == Some(Phase::Etcd) {
                        h.error = Some(format!("etcd not healthy within {} s:\n{detail}", opts.etcd_timeout.as_secs()));
                    }
                });
                return Ok(r);
            }
            etcd = members;
        }
    }

    if phases.contains(&Phase::Addons)
        && let Some(first) = hosts.iter_mut().find(|h| h.node.has(Role::Master) && h.alive())
            && let Err(e) = apply_addons(first) {
                first.fail(Phase::Addons, format!("{e:#}"));
            }

    for b in bars.values() {
        b.finish_and_clear();
    }
    Ok(report(&hosts, plan, phases, pki_changes, etcd, false))
}

/// Waits for the members whose hosts are up; a member on an unreachable host is already
/// reported as that host's failure, and the rest may still hold quorum.
async fn wait_for_etcd(inv: &Inventory, pki: &pki::Pki, hosts: &[Host], timeout: Duration) -> (bool, Vec<MemberStatus>) {
    let mut reachable = inv.clone();
    reachable.nodes.retain(|n| !inv.is_etcd_member(n) || hosts.iter().any(|h| h.node.name == n.name && h.alive()));
    if reachable.etcd_members().is_empty() {
        return (false, vec![]);
    }
    // Without dedicated etcd nodes, members are the masters: keep that rule on the subset.
    bootstrap::wait_healthy(&reachable, &EtcdAuth::from_pki(pki), timeout).await
}

fn apply_addons(h: &mut Host) -> Result<()> {
    let conn = h.conn.as_ref().expect("alive");
    let script = "set -e\nKC=/etc/kubernetes/admin.kubeconfig\n\
        i=0; until kubectl --kubeconfig $KC get --raw /readyz >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 120 ] || { echo 'API server not ready after 120 s' >&2; exit 1; }; sleep 1; done\n\
        kubectl --kubeconfig $KC apply -f /etc/kubernetes/addons/apiserver-to-kubelet-rbac.yaml\n\
        if [ -f /etc/kubernetes/addons/metallb-pool.yaml ]; then\n\
          if kubectl --kubeconfig $KC get crd ipaddresspools.metallb.io >/dev/null 2>&1; then\n\
            kubectl --kubeconfig $KC apply -f /etc/kubernetes/addons/metallb-pool.yaml\n\
          else echo 'MetalLB is not installed (no ipaddresspools.metallb.io CRD): install it, then re-run --phases addons' >&2; exit 1; fi\n\
        fi\n";
    let out = conn.script(&format!("export PATH=$PATH:/usr/local/bin\n{script}"))?;
    if !out.ok() {
        bail!("{}", out.stderr.trim());
    }
    Ok(())
}

/// Preflight's first step on one host: connect, then read its state in one round trip.
fn connect_and_gather(h: &mut Host, inv: &Inventory, rendered: &Rendered, phases: &[Phase], policy: HostKeyPolicy) {
    match Conn::connect(&h.target, policy) {
        Ok(c) => h.conn = Some(c),
        Err(e) => return h.fail(Phase::Preflight, e),
    }
    let files: Vec<&str> = plan::files_in_phases(rendered, &h.node.name, phases).iter().map(|f| f.path.as_str()).collect();
    let bins: Vec<String> = phases.iter().flat_map(|p| needed_binaries(inv, &h.node, *p)).map(|(b, _)| b).collect();
    match apply::gather(h.conn.as_ref().expect("connected"), &files, &bins, &inv.cluster.name) {
        Ok(f) => h.facts = Some(f),
        Err(e) => h.fail(Phase::Preflight, format!("{e:#}")),
    }
}

/// The files step on one planned host: send every change in one round trip, and bring its
/// /etc/hosts block up to date when the `files` phase runs.
fn send_files(h: &mut Host, cluster: &str, files_phase: bool) {
    if !h.alive() {
        return;
    }
    let plan = h.plan.as_ref().expect("planned");
    let conn = h.conn.as_ref().expect("alive");
    if let Err(e) = apply::upload(conn, &plan.changes) {
        return h.fail(Phase::Files, format!("{e:#}"));
    }
    h.outcome.changed = plan.changes.len();
    let hosts_changed = plan.changes.iter().any(|c| c.path == "/etc/hardway/hosts");
    if files_phase
        && (hosts_changed || !h.facts.as_ref().is_some_and(|f| f.hosts_block))
        && let Err(e) = apply::merge_hosts_block(conn, cluster)
    {
        h.fail(Phase::Files, format!("{e:#}"));
    }
}

fn new_host(inv: &Inventory, n: &Node) -> Host {
    Host {
        node: n.clone(),
        target: Target::for_node(inv, n),
        conn: None,
        facts: None,
        plan: None,
        outcome: HostOutcome { node: n.name.clone(), ok: true, failed_phase: None, error: None, changed: 0, restarted: vec![], started: vec![] },
    }
}

fn report(hosts: &[Host], plan: Plan, phases: Vec<Phase>, pki_changes: Vec<String>, etcd: Vec<MemberStatus>, dry_run: bool) -> DeployReport {
    DeployReport { dry_run, phases, pki_changes, plan, hosts: hosts.iter().map(|h| h.outcome.clone()).collect(), etcd }
}

/// Cross-host and per-host checks on the gathered facts.
/// Preflight's rules over what every reached host reported; one line per problem.
fn preflight_problems(inv: &Inventory, hosts: &[(&Node, &Facts)], rendered: &Rendered, phases: &[Phase]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    for &(node, facts) in hosts {
        let name = &node.name;
        let has_units = plan::files_in_phases(rendered, name, phases).iter().any(|f| f.is_unit());
        if has_units && !facts.systemd {
            problems.push(format!("{name}: systemd is not running (no /run/systemd/system)"));
        }
        for &phase in phases {
            for (bin, _) in needed_binaries(inv, node, phase) {
                let uploaded = rendered.hosts.get(name).is_some_and(|fs| fs.iter().any(|f| f.path == bin));
                if !uploaded && !facts.present_binaries.contains(&bin) {
                    missing.push(format!("{name}: {bin} (phase {phase})"));
                }
            }
            for (port, process) in phase_ports(inv, node, phase) {
                for l in facts.listeners.iter().filter(|l| l.port == port) {
                    // ss truncates process names to 15 characters, as the kernel does.
                    if !process.starts_with(&l.process) && !l.process.starts_with(process) {
                        problems.push(format!("{name}: port {port} (phase {phase}) is held by {:?}, not by {process}", l.process));
                    }
                }
            }
            if phase == Phase::Workers && node.has(Role::Worker) && facts.swap_active {
                problems.push(format!("{name}: swap is on; the kubelet needs it off (swapoff -a, and remove it from /etc/fstab)"));
            }
        }
    }
    if !missing.is_empty() {
        problems.push(format!(
            "binaries missing (install them on the nodes, or put them in binaries.local_dir for deploy to upload):\n    {}",
            missing.join("\n    ")
        ));
    }
    let offsets: Vec<(&str, f64)> =
        hosts.iter().map(|(n, f)| (n.name.as_str(), f.clock_offset)).filter(|(_, o)| o.is_finite()).collect();
    if let (Some(min), Some(max)) = (
        offsets.iter().min_by(|a, b| a.1.total_cmp(&b.1)),
        offsets.iter().max_by(|a, b| a.1.total_cmp(&b.1)),
    )
        && max.1 - min.1 > 2.0 {
            problems.push(format!(
                "clock skew of {:.1} s between {} and {} (at most 2 s; etcd and TLS need synchronised clocks: enable NTP)",
                max.1 - min.1,
                min.0,
                max.0
            ));
        }
    problems
}

/// One host's result of [`push_files`].
#[derive(Debug, Clone, Serialize)]
pub struct PushOutcome {
    pub node: String,
    /// Files sent: created, updated, or given the right mode and owner.
    pub changed: usize,
    /// Files that were already right and were not sent.
    pub unchanged: usize,
    pub error: Option<String>,
}

/// Places every file of `phases` on every host: the file steps of [`deploy`] on their own, in
/// the same order and over the same code — connect and [`apply::gather`] on all hosts, then
/// [`plan::plan_host`], [`apply::upload`] and the /etc/hosts merge — at most `parallel` hosts at
/// once through [`fan_out`]. Unlike `deploy` it checks no preflight rules, runs no systemctl
/// and generates no PKI: `rendered` is sent as given. `benches/fanout.rs` times it, on hosts
/// that run sshd without systemd.
pub fn push_files(inv: &Inventory, rendered: Arc<Rendered>, phases: &[Phase], parallel: usize, policy: HostKeyPolicy) -> Result<Vec<PushOutcome>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(parallel.max(1) + 2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let inv = Arc::new(inv.clone());
    let mut phases: Vec<Phase> = phases.iter().copied().filter(|p| *p != Phase::Preflight).collect();
    phases.sort();
    phases.dedup();
    let hosts: Vec<Host> = inv.nodes.iter().map(|n| new_host(&inv, n)).collect();
    let hosts = rt.block_on(async move {
        // As in deploy: every host is connected and read before any is written to.
        let (inv2, rendered2, phases2) = (inv.clone(), rendered.clone(), phases.clone());
        let hosts = fan_out(hosts, parallel, move |h| {
            connect_and_gather(h, &inv2, &rendered2, &phases2, policy);
            if let Some(facts) = h.facts.as_ref().filter(|_| h.alive()) {
                h.plan = Some(plan::plan_host(&rendered2, &h.node.name, &facts.files, &phases2));
            }
        })
        .await;
        let files_phase = phases.contains(&Phase::Files);
        fan_out(hosts, parallel, move |h| send_files(h, &inv.cluster.name, files_phase)).await
    });
    Ok(hosts
        .into_iter()
        .map(|h| PushOutcome {
            unchanged: h.plan.as_ref().map(|p| p.unchanged).unwrap_or(0),
            node: h.outcome.node,
            changed: h.outcome.changed,
            error: h.outcome.error,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::Listener;

    const INV: &str = r#"
[cluster]
name = "t"
kubernetes_version = "1.31.2"
service_cidr = "10.32.0.0/24"
pod_cidr = "10.200.0.0/16"

[[nodes]]
name = "m1"
address = "10.0.0.1"
roles = ["master"]

[[nodes]]
name = "w1"
address = "10.0.0.2"
roles = ["worker"]
"#;

    fn facts(clock_offset: f64) -> Facts {
        Facts {
            systemd: true,
            clock_offset,
            swap_active: false,
            present_binaries: ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "containerd", "kubectl"]
                .iter()
                .map(|b| format!("/usr/local/bin/{b}"))
                .collect(),
            listeners: vec![],
            hosts_block: true,
            files: BTreeMap::new(),
        }
    }

    /// Preflight's problems for facts `m1` and `w1` reported, on a rendered test cluster.
    fn problems(m1: Facts, w1: Facts, phases: &[Phase]) -> Vec<String> {
        let inv = crate::inventory::parse(std::path::Path::new("t.toml"), INV).unwrap();
        let rendered = Rendered { hosts: inv.nodes.iter().map(|n| (n.name.clone(), vec![])).collect(), local: vec![] };
        let hosts = [(&inv.nodes[0], &m1), (&inv.nodes[1], &w1)];
        preflight_problems(&inv, &hosts, &rendered, phases)
    }

    #[test]
    fn a_healthy_pair_passes() {
        assert_eq!(problems(facts(0.1), facts(-0.4), &Phase::ALL), Vec::<String>::new());
    }

    #[test]
    fn clock_skew_over_two_seconds_between_hosts() {
        let p = problems(facts(1.2), facts(-1.3), &[Phase::Etcd]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("clock skew of 2.5 s between w1 and m1"), "{p:?}");
        // A clock that is off by the same amount everywhere is not skew between hosts.
        assert!(problems(facts(30.0), facts(30.5), &[Phase::Etcd]).is_empty());
    }

    #[test]
    fn swap_on_a_worker_only_matters_for_the_workers_phase() {
        let mut w1 = facts(0.0);
        w1.swap_active = true;
        let p = problems(facts(0.0), w1.clone(), &[Phase::Workers]);
        assert!(p.iter().any(|l| l.starts_with("w1: swap is on")), "{p:?}");
        assert!(problems(facts(0.0), w1, &[Phase::Etcd]).is_empty());
    }

    #[test]
    fn a_port_is_fine_when_our_own_component_holds_it() {
        let mut m1 = facts(0.0);
        m1.listeners = vec![Listener { port: 2379, process: "etcd".into() }, Listener { port: 6443, process: "nginx".into() }];
        let p = problems(m1, facts(0.0), &[Phase::Etcd, Phase::ControlPlane]);
        assert_eq!(p, ["m1: port 6443 (phase control-plane) is held by \"nginx\", not by kube-apiserver"]);
    }

    #[test]
    fn missing_binaries_are_listed_by_host_and_phase() {
        let mut w1 = facts(0.0);
        w1.present_binaries.clear();
        let p = problems(facts(0.0), w1, &Phase::ALL);
        assert_eq!(p.len(), 1, "{p:?}");
        for b in ["w1: /usr/local/bin/kubelet (phase workers)", "w1: /usr/local/bin/containerd (phase workers)"] {
            assert!(p[0].contains(b), "{p:?}");
        }
    }
}
