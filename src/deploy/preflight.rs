//! Preflight: connect to every host, read its facts in one round trip, plan it, and check all
//! of them before anything is changed anywhere. The rules ([`problems`]) are a pure function of
//! what the hosts reported, so they are tested without any host.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{Ctx, DeployError, Host};
use crate::components::{BINARY_PACKAGES, COMPONENTS, Component, ComponentId, Need, Phase};
use crate::digest::sha256_hex;
use crate::events::Status;
use crate::inventory::{Installer, Inventory, Node, Role};
use crate::plan::{self, Scope, files_in_phases};
use crate::remote::{Connector, Facts, FactsQuery};
use crate::render::{Anchor, File, Rendered};
use crate::versions::ReleaseMin;

/// Connects to every host, reads its facts and plans it; checks the rules across hosts.
pub(crate) async fn run(ctx: &mut Ctx, connector: Arc<dyn Connector>) -> Result<(), DeployError> {
    connect_and_plan(ctx, connector).await;
    match ctx.opts.scope {
        Scope::Everything => install_prerequisites(ctx).await,
        // From here on the deploy is of what the scope picked, in the phases that place it:
        // the rules below judge only that, as they would a deploy of these files alone.
        Scope::Present(_) => {
            let picked = Rendered {
                hosts: ctx
                    .hosts
                    .iter()
                    .filter(|h| !h.picked.is_empty())
                    .map(|h| (h.node.name.clone(), h.picked.clone()))
                    .collect(),
                local: vec![],
            };
            let phases: BTreeSet<Phase> = picked
                .hosts
                .values()
                .flatten()
                .map(plan::phase_of_file)
                .collect();
            ctx.phases.retain(|p| phases.contains(p));
            ctx.rendered = Arc::new(picked);
        }
    }
    let reached: Vec<(&Node, &Facts)> = ctx
        .hosts
        .iter()
        .filter(|h| h.alive())
        .filter_map(|h| Some((&h.node, h.facts.as_ref()?)))
        .collect();
    let problems = problems(
        &ctx.inv,
        &reached,
        &ctx.rendered,
        &ctx.phases,
        &ctx.opts.replaceable,
    );
    if problems.is_empty() {
        ctx.events
            .emit(None, Some("preflight"), "checks", Status::Ok, None, None);
        Ok(())
    } else {
        ctx.events.emit(
            None,
            Some("preflight"),
            "checks",
            Status::Failed,
            None,
            Some(problems.join("\n")),
        );
        Err(DeployError::Preflight(problems))
    }
}

/// The first step on every host: connect, read its state, plan it. A host that cannot be
/// reached is marked failed (in preflight) and left out from then on.
pub(crate) async fn connect_and_plan(ctx: &mut Ctx, connector: Arc<dyn Connector>) {
    let gather = Gather::of(ctx);
    let events = ctx.events.clone();
    ctx.each_host(move |h| {
        let step = events.start(
            Some(&h.node.name),
            Some("preflight"),
            "connect and read facts",
        );
        match connector.connect(&h.node) {
            Ok(r) => {
                h.remote = Some(r);
                gather.facts_and_plan(h);
            }
            Err(e) => h.fail(Phase::Preflight, e),
        }
        match &h.outcome.error {
            None => step.done(Status::Ok, None),
            Some(e) => step.done(Status::Failed, Some(e.clone())),
        }
    })
    .await;
}

/// What reading a host's facts and planning it needs, owned, for the host tasks.
#[derive(Clone)]
struct Gather {
    inv: Arc<Inventory>,
    rendered: Arc<Rendered>,
    phases: Vec<Phase>,
    restart: BTreeSet<(String, String)>,
    scope: Scope,
    version_cache: Option<String>,
}

impl Gather {
    fn of(ctx: &Ctx) -> Gather {
        Gather {
            inv: ctx.inv.clone(),
            rendered: ctx.rendered.clone(),
            phases: ctx.phases.clone(),
            restart: ctx.opts.restart.clone(),
            scope: ctx.opts.scope.clone(),
            // A dry run writes nothing, not even the nodes' version cache.
            version_cache: (!ctx.opts.dry_run).then(|| crate::remote::VERSION_CACHE.to_string()),
        }
    }

    /// Reads the facts of a connected host and plans it.
    fn facts_and_plan(&self, h: &mut Host) {
        let (inv, rendered, phases) = (&self.inv, &self.rendered, &self.phases);
        let query = facts_query(inv, &h.node, rendered, phases, self.version_cache.clone());
        match h.remote().facts(&query) {
            Ok(f) => h.facts = Some(f),
            Err(e) => return h.fail(Phase::Preflight, e),
        }
        if let Some(facts) = h.facts.as_ref().filter(|_| h.outcome.ok) {
            let mut plan = match &self.scope {
                Scope::Everything => plan::plan_host(rendered, &h.node.name, &facts.files, phases),
                Scope::Present(affected) => {
                    let all = files_in_phases(rendered, &h.node.name, phases);
                    h.picked =
                        plan::pick_present(&h.node.name, &all, facts, affected, &self.restart);
                    let picked: Vec<&File> = h.picked.iter().collect();
                    plan::plan_files(&h.node.name, &picked, &facts.files)
                }
            };
            for u in plan.units.iter_mut().filter(|u| {
                self.restart
                    .contains(&(h.node.name.clone(), u.unit.clone()))
            }) {
                u.restart = true;
            }
            h.plan = Some(plan);
        }
    }
}

fn facts_query(
    inv: &Inventory,
    node: &Node,
    rendered: &Rendered,
    phases: &[Phase],
    version_cache: Option<String>,
) -> FactsQuery {
    let files = files_in_phases(rendered, &node.name, phases);
    let selected: Vec<&Component> = COMPONENTS
        .iter()
        .filter(|c| phases.contains(&c.phase) && c.runs_on(inv, node))
        .collect();
    FactsQuery {
        tools: selected
            .iter()
            .flat_map(|c| c.needs.iter().map(|n| n.tool.to_string()))
            .collect(),
        // The API server's too when only the workers phase runs: a kubelet may not be newer.
        versions: selected
            .iter()
            .copied()
            .chain(
                (phases.contains(&Phase::Workers)
                    && ComponentId::KubeApiserver.get().runs_on(inv, node))
                .then(|| ComponentId::KubeApiserver.get()),
            )
            .filter_map(|c| Some((c.binary_path(inv), c.version_arg?.to_string())))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        paths: files.iter().map(|f| f.path.clone()).collect(),
        fingerprints: files
            .iter()
            .filter(|f| f.anchor == Some(Anchor::EncryptionKey))
            .map(|f| f.path.clone())
            .collect(),
        binaries: selected.iter().map(|c| c.binary_path(inv)).collect(),
        hosts_block: inv.cluster.name.clone(),
        units: crate::inventory::units_on(inv, node)
            .map(str::to_string)
            .collect(),
        version_cache,
    }
}

/// On nodes whose inventory says `install = "apt"`: installs the packages the node lacks for
/// what the selected phases run (each component's `needs`, less what deploy uploads), then
/// reads the node's facts again. A dry run says what it would install and counts those tools
/// as present.
async fn install_prerequisites(ctx: &mut Ctx) {
    let gather = Gather::of(ctx);
    let (events, dry_run) = (ctx.events.clone(), ctx.opts.dry_run);
    ctx.each_host(move |h| {
        let Some(Installer::Apt) = h.node.install else {
            return;
        };
        if !h.outcome.ok {
            return;
        }
        let Some(facts) = h.facts.as_ref() else {
            return;
        };
        let wanted = missing_packages(
            &gather.inv,
            &h.node,
            facts,
            &gather.rendered,
            &gather.phases,
        );
        if wanted.is_empty() {
            return;
        }
        let packages: Vec<String> = wanted.keys().map(|p| p.to_string()).collect();
        // A package with a version table is asked about before anything is installed (a dry run
        // does not refresh the node's package lists).
        let gated: Vec<String> = packages
            .iter()
            .filter(|p| BINARY_PACKAGES.iter().any(|(b, _)| b == p))
            .cloned()
            .collect();
        if !gated.is_empty() {
            let refused = h
                .remote()
                .package_candidates(&gated, !dry_run)
                .map_err(|e| e.to_string())
                .and_then(|candidates| {
                    let problems: Vec<String> = candidates
                        .iter()
                        .filter_map(|(p, c)| candidate_problem(&gather.inv, p, c.as_deref()))
                        .collect();
                    if problems.is_empty() {
                        Ok(())
                    } else {
                        Err(problems.join("; "))
                    }
                });
            if let Err(why) = refused {
                let e = format!(
                    "{why}: nothing was installed; give the node what fits (binaries local_dir, a release \
                     source with [binaries] source, or a package source that has it)"
                );
                events.emit(
                    Some(&h.node.name),
                    Some("preflight"),
                    &format!("install {} (apt)", packages.join(" ")),
                    Status::Failed,
                    None,
                    Some(e.clone()),
                );
                h.fail(Phase::Preflight, e);
                return;
            }
        }
        let what = format!("install {} (apt)", packages.join(" "));
        if dry_run {
            events.emit(
                Some(&h.node.name),
                Some("preflight"),
                &format!("would {what}"),
                Status::Ok,
                None,
                None,
            );
            if let Some(facts) = h.facts.as_mut() {
                facts
                    .tools
                    .extend(wanted.values().flatten().map(|t| t.to_string()));
            }
            return;
        }
        let step = events.start(Some(&h.node.name), Some("preflight"), &what);
        match h.remote().install_packages(&packages) {
            Ok(new) => {
                step.done(
                    Status::Ok,
                    Some(format!(
                        "installed: {}",
                        if new.is_empty() {
                            "nothing new".to_string()
                        } else {
                            new.join(" ")
                        }
                    )),
                );
                gather.facts_and_plan(h);
            }
            Err(e) => {
                step.done(Status::Failed, Some(e.to_string()));
                h.fail(Phase::Preflight, e);
            }
        }
    })
    .await;
}

/// Why apt's `candidate` of `package` must not be installed for this cluster; `None` when it
/// fits (or the package is not one of [`BINARY_PACKAGES`]). Both must land where the
/// inventory's units look for them, and containerd must fit a version table (its RELEASES.md
/// lines per Kubernetes minor; the config hardway renders is for one line).
pub fn candidate_problem(
    inv: &Inventory,
    package: &str,
    candidate: Option<&str>,
) -> Option<String> {
    let &(_, dir) = BINARY_PACKAGES.iter().find(|(p, _)| *p == package)?;
    let (field, wanted) = match package {
        "containerd" => ("containerd.bin_dir", &inv.containerd.bin_dir),
        "containernetworking-plugins" => ("cni.bin_dir", &inv.cni.bin_dir),
        _ => return None,
    };
    let Some(candidate) = candidate else {
        return Some(format!(
            "apt has no {package} package in this node's sources"
        ));
    };
    if wanted.trim_end_matches('/') != dir {
        return Some(format!(
            "Debian's {package} package installs into {dir}, but {field} is {wanted}"
        ));
    }
    if package != "containerd" {
        return None;
    }
    let Some(have) = parse_version(candidate) else {
        return Some(format!("apt's containerd {candidate:?} names no version"));
    };
    let minor = inv.cluster.kubernetes_version.supported()?;
    if !meets(have, minor.containerd) {
        return Some(format!(
            "apt offers containerd {candidate}; Kubernetes {} needs containerd {} (containerd's RELEASES.md)",
            minor.name(),
            either(minor.containerd)
        ));
    }
    let line = inv.containerd.version;
    ((have.0, have.1) != (line.major, line.minor)).then(|| {
        format!(
            "apt offers containerd {candidate}, but containerd.version is {line}, the line its config is rendered for: \
             set containerd.version = \"{}.{}\"",
            have.0, have.1
        )
    })
}

/// The packages a node lacks for what `phases` run on it, each with the tools it provides: a
/// component's `needs` whose tool is not on the node and that deploy does not upload.
pub fn missing_packages(
    inv: &Inventory,
    node: &Node,
    facts: &Facts,
    rendered: &Rendered,
    phases: &[Phase],
) -> std::collections::BTreeMap<&'static str, Vec<&'static str>> {
    let mut wanted: std::collections::BTreeMap<&'static str, Vec<&'static str>> =
        Default::default();
    for (_, need) in missing_needs(inv, node, facts, rendered, phases) {
        let tools = wanted.entry(need.package).or_default();
        if !tools.contains(&need.tool) {
            tools.push(need.tool);
        }
    }
    wanted
}

/// Each component that `phases` run on the node, with each of its `needs` the node lacks: not
/// on its PATH, and not an executable deploy uploads. What preflight names, or installs.
fn missing_needs<'a>(
    inv: &'a Inventory,
    node: &'a Node,
    facts: &'a Facts,
    rendered: &'a Rendered,
    phases: &'a [Phase],
) -> impl Iterator<Item = (&'static Component, &'static Need)> + 'a {
    COMPONENTS
        .iter()
        .filter(move |c| phases.contains(&c.phase) && c.runs_on(inv, node))
        .flat_map(|c| c.needs.iter().map(move |n| (c, n)))
        .filter(move |(c, n)| {
            // A component's own binary counts where its unit runs it from, on the PATH or not.
            let own_binary_there =
                n.tool == c.binary.0 && facts.present_binaries.contains(&c.binary_path(inv));
            !facts.tools.contains(n.tool)
                && !own_binary_there
                && !uploads_tool(rendered, &node.name, n.tool)
        })
}

/// Whether deploy uploads an executable of that name to the node (a release's runc).
fn uploads_tool(rendered: &Rendered, node: &str, tool: &str) -> bool {
    rendered.hosts.get(node).is_some_and(|files| {
        files
            .iter()
            .any(|f| f.mode & 0o111 != 0 && f.path.rsplit('/').next() == Some(tool))
    })
}

/// Preflight's rules over what every reached host reported; one line per problem.
pub fn problems(
    inv: &Inventory,
    hosts: &[(&Node, &Facts)],
    rendered: &Rendered,
    phases: &[Phase],
    replaceable: &BTreeSet<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    for &(node, facts) in hosts {
        let name = &node.name;
        let has_units = files_in_phases(rendered, name, phases)
            .iter()
            .any(|f| f.is_unit());
        if has_units && !facts.systemd {
            problems.push(format!(
                "{name}: systemd is not running (no /run/systemd/system)"
            ));
        }
        for c in COMPONENTS
            .iter()
            .filter(|c| phases.contains(&c.phase) && c.runs_on(inv, node))
        {
            let bin = c.binary_path(inv);
            let uploaded = rendered
                .hosts
                .get(name)
                .is_some_and(|fs| fs.iter().any(|f| f.path == bin));
            if !uploaded && !facts.present_binaries.contains(&bin) {
                let package = c
                    .needs
                    .iter()
                    .find(|n| n.tool == c.binary.0)
                    .map(|n| format!("; Debian package {}", n.package))
                    .unwrap_or_default();
                missing.push(format!("{name}: {bin} (phase {}{package})", c.phase));
            }
            for port in c.ports {
                let number = port.number(inv);
                for l in facts.listeners.iter().filter(|l| l.port == number) {
                    // Our own unit may hold it (whatever its binary is called), or a process
                    // of the component's name started by hand.
                    if l.unit.as_deref() != c.unit && l.process != c.process_name() {
                        problems.push(format!(
                            "{name}: port {number} (phase {}) is held by {:?}, not by {}",
                            c.phase, l.process, c.name
                        ));
                    }
                }
            }
        }
        for f in files_in_phases(rendered, name, phases) {
            if let Some(anchor) = f.anchor
                && holds_another(f, anchor, facts)
                && !facts
                    .files
                    .get(&f.path)
                    .is_some_and(|r| replaceable.contains(&r.sha256))
            {
                problems.push(format!(
                    "{name}: {} holds another {} than this PKI directory's: the node belongs to a cluster deployed with \
                     another PKI, and replacing it would break that cluster. Deploy with the PKI directory the cluster was \
                     deployed with (--pki), or, if the node is to leave that cluster, reset it first",
                    f.path,
                    anchor.describe()
                ));
            }
        }
        let runs =
            |id: ComponentId| phases.contains(&id.get().phase) && id.get().runs_on(inv, node);
        if runs(ComponentId::Kubelet) && !facts.cgroup2 && !allows_cgroup_v1(inv) {
            problems.push(format!(
                "{name}: cgroup v1: the kubelet of Kubernetes 1.35 and later refuses to start on it (failCgroupV1); \
                 boot the node with the unified hierarchy (systemd.unified_cgroup_hierarchy=1, the default of current \
                 distributions), or, where that cannot be (a lab on a cgroup v1 host), set failCgroupV1 = false in \
                 [components.kubelet] config (deprecated upstream; verify warns about it)"
            ));
        }
        if runs(ComponentId::KernelSettings) && !facts.br_netfilter {
            problems.push(format!(
                "{name}: no br_netfilter (neither loaded, built in, nor loadable): bridged pod traffic would bypass \
                 kube-proxy's iptables rules; install the kernel's modules (linux-image-*) or a kernel with it"
            ));
        }
        // A component's own binary is named above, with its path.
        for (c, need) in
            missing_needs(inv, node, facts, rendered, phases).filter(|(c, n)| n.tool != c.binary.0)
        {
            missing.push(format!(
                "{name}: {} (for {}; Debian package {})",
                need.tool, c.name, need.package
            ));
        }
        for c in COMPONENTS
            .iter()
            .filter(|c| phases.contains(&c.phase) && c.runs_on(inv, node))
        {
            // A binary deploy uploads replaces what the node has: the node's version is moot.
            let uploaded = rendered
                .hosts
                .get(name)
                .is_some_and(|fs| fs.iter().any(|f| f.path == c.binary_path(inv)));
            if let (Some(_), Some(line), false) = (
                c.version_arg,
                facts.versions.get(&c.binary_path(inv)),
                uploaded,
            ) && let Some(problem) = version_problem(inv, c, line)
            {
                problems.push(format!("{name}: {problem}"));
            }
        }
        if phases.contains(&Phase::Workers) && node.has(Role::Worker) && facts.swap_active {
            problems.push(format!("{name}: swap is on; the kubelet needs it off (swapoff -a, and remove it from /etc/fstab)"));
        }
    }
    problems.extend(skew_problems(inv, hosts, rendered, phases));
    if !missing.is_empty() {
        problems.push(format!(
            "binaries and tools missing (install them on the nodes; Kubernetes binaries may also be put in \
             binaries.local_dir for deploy to upload):\n    {}",
            missing.join("\n    ")
        ));
    }
    let offsets: Vec<(&str, f64)> = hosts
        .iter()
        .map(|(n, f)| (n.name.as_str(), f.clock_offset))
        .filter(|(_, o)| o.is_finite())
        .collect();
    if let (Some(min), Some(max)) = (
        offsets.iter().min_by(|a, b| a.1.total_cmp(&b.1)),
        offsets.iter().max_by(|a, b| a.1.total_cmp(&b.1)),
    ) && max.1 - min.1 > 2.0
    {
        problems.push(format!(
            "clock skew of {:.1} s between {} and {} (at most 2 s; etcd and TLS need synchronised clocks: enable NTP)",
            max.1 - min.1,
            min.0,
            max.0
        ));
    }
    problems
}

/// Kubernetes' version skew policy, for a deploy that changes the release the nodes run (an
/// upgrade): no downgrade of a minor; the API servers one minor at a time (those of one cluster
/// may differ by one minor only, so 1.35 → 1.37 goes through 1.36); no kubelet newer than the
/// API servers it talks to (a workers-only deploy of a newer release before the control plane).
/// What a node runs now is what its binaries print (`--version`, read by the facts); the rules
/// apply where this deploy replaces the binary (a binary it does not upload must be of the
/// release already: [`version_problem`]).
fn skew_problems(
    inv: &Inventory,
    hosts: &[(&Node, &Facts)],
    rendered: &Rendered,
    phases: &[Phase],
) -> Vec<String> {
    let want = inv.cluster.kubernetes_version;
    let running = |facts: &Facts, id: ComponentId| {
        facts
            .versions
            .get(&id.get().binary_path(inv))
            .and_then(|l| parse_version(l))
    };
    let mut problems = Vec::new();
    for &(node, facts) in hosts {
        for id in [ComponentId::KubeApiserver, ComponentId::Kubelet] {
            let c = id.get();
            if !phases.contains(&c.phase) || !c.runs_on(inv, node) {
                continue;
            }
            let bin = c.binary_path(inv);
            let uploaded = rendered
                .hosts
                .get(&node.name)
                .is_some_and(|fs| fs.iter().any(|f| f.path == bin));
            let Some(have) = running(facts, id).filter(|h| uploaded && h.0 == want.major) else {
                continue;
            };
            if have.1 > want.minor {
                problems.push(format!(
                    "{}: {bin} is {}.{}.{}, newer than the inventory's kubernetes_version {want}: Kubernetes does not support \
                     downgrading a minor (to go back, restore the etcd snapshot taken before the upgrade: hardway etcd restore)",
                    node.name, have.0, have.1, have.2
                ));
            } else if id == ComponentId::KubeApiserver && want.minor > have.1 + 1 {
                problems.push(format!(
                    "{}: {bin} is {}.{}.{}: upgrade one minor at a time ({}.{} first, then {}.{}): the API servers of a cluster \
                     may differ by one minor only (Kubernetes' version skew policy)",
                    node.name, have.0, have.1, have.2, have.0, have.1 + 1, want.major, want.minor
                ));
            }
        }
    }
    // A workers-only deploy: the kubelets get `want` while the API servers stay as they are.
    if phases.contains(&Phase::Workers) && !phases.contains(&Phase::ControlPlane) {
        let oldest_api = hosts
            .iter()
            .filter_map(|(n, f)| Some((n.name.as_str(), running(f, ComponentId::KubeApiserver)?)))
            .min_by_key(|(_, v)| *v);
        if let Some((master, api)) = oldest_api
            && (want.major, want.minor) > (api.0, api.1)
            && hosts
                .iter()
                .any(|(n, _)| ComponentId::Kubelet.get().runs_on(inv, n))
        {
            problems.push(format!(
                "the kubelets would be {want} while {master}'s API server is {}.{}.{}: a kubelet may not be newer than the \
                 API server; deploy the control-plane phase first (or every phase: masters roll before workers)",
                api.0, api.1, api.2
            ));
        }
    }
    problems
}

/// Whether the inventory lets the kubelet run on a cgroup v1 host: `failCgroupV1 = false` in
/// `[components.kubelet] config`.
pub fn allows_cgroup_v1(inv: &Inventory) -> bool {
    inv.component_config
        .get(&ComponentId::Kubelet)
        .and_then(|t| t.get("failCgroupV1"))
        == Some(&toml::Value::Boolean(false))
}

/// The first `MAJOR.MINOR[.PATCH]` in a `--version` line (`Kubernetes v1.37.1`, `etcd Version:
/// 3.5.16`, `containerd github.com/containerd/containerd 1.7.24~ds1 ...`).
pub fn parse_version(line: &str) -> Option<(u32, u32, u32)> {
    line.split(|c: char| c.is_whitespace() || c == 'v' || c == '~' || c == '+' || c == '-')
        .find_map(|w| {
            let mut it = w.split('.');
            let major = it.next()?.parse().ok()?;
            let minor = it.next()?.parse().ok()?;
            let patch = it.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            Some((major, minor, patch))
        })
}

/// `2.3.0+ or 2.4.0+`, for messages.
fn either(mins: &[ReleaseMin]) -> String {
    mins.iter()
        .map(|m| m.to_string())
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Does `have` meet one of the minimums: at least its patch on the same line, or any later line?
fn meets(have: (u32, u32, u32), mins: &[ReleaseMin]) -> bool {
    let newest = mins.iter().map(|m| (m.major, m.minor)).max();
    mins.iter()
        .any(|m| (have.0, have.1) == (m.major, m.minor) && have.2 >= m.patch)
        || newest.is_some_and(|n| (have.0, have.1) > n)
}

/// Whether the version a component's binary reports fits the cluster's Kubernetes version.
fn version_problem(inv: &Inventory, c: &Component, line: &str) -> Option<String> {
    let bin = c.binary_path(inv);
    let Some(have) = parse_version(line) else {
        return Some(format!(
            "{bin} --version said {line:?}, which names no version"
        ));
    };
    let want = inv.cluster.kubernetes_version;
    let minor = want.supported()?;
    match c.id {
        // The Kubernetes binaries are of the cluster's own release.
        ComponentId::KubeApiserver | ComponentId::Kubelet
            if (have.0, have.1) != (want.major, want.minor) =>
        {
            Some(format!(
                "{bin} is {}.{}.{}, but the inventory's kubernetes_version is {want}",
                have.0, have.1, have.2
            ))
        }
        ComponentId::Containerd if !meets(have, minor.containerd) => Some(format!(
            "{bin} is {}.{}.{}; Kubernetes {} needs containerd {} (containerd's RELEASES.md)",
            have.0,
            have.1,
            have.2,
            minor.name(),
            either(minor.containerd)
        )),
        ComponentId::Etcd if !meets(have, minor.etcd) => Some(format!(
            "{bin} is {}.{}.{}; Kubernetes {} supports etcd {}",
            have.0,
            have.1,
            have.2,
            minor.name(),
            either(minor.etcd)
        )),
        _ => None,
    }
}

/// Does the node have this file of the cluster's identity with other contents?
fn holds_another(f: &File, anchor: Anchor, facts: &Facts) -> bool {
    match anchor {
        // Replacing it is safe while the new config still has every key the node's has: all data
        // stays readable. A key of the node's that is missing would make its data unreadable.
        Anchor::EncryptionKey => {
            let ours = crate::render::key_hashes(&String::from_utf8_lossy(&f.contents));
            facts
                .fingerprints
                .get(&f.path)
                .is_some_and(|theirs| !theirs.is_subset(&ours))
        }
        _ => facts
            .files
            .get(&f.path)
            .is_some_and(|r| r.sha256 != sha256_hex(&f.contents)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::Listener;

    fn facts(inv: &Inventory, node: usize, clock_offset: f64) -> Facts {
        let n = &inv.nodes[node];
        let ours = || COMPONENTS.iter().filter(|c| c.runs_on(inv, n));
        Facts {
            systemd: true,
            clock_offset,
            present_binaries: ours().map(|c| c.binary_path(inv)).collect(),
            tools: ours()
                .flat_map(|c| c.needs.iter().map(|x| x.tool.to_string()))
                .collect(),
            cgroup2: true,
            br_netfilter: true,
            hosts_block: true,
            ..Facts::default()
        }
    }

    fn inv() -> Inventory {
        crate::inventory::parse(std::path::Path::new("t.toml"), crate::testing::INVENTORY).unwrap()
    }

    const M1: usize = 0;
    const W1: usize = 4;

    /// Preflight's problems for facts `m1` and `w1` reported (the others unreached), with no
    /// files rendered.
    fn problems_of(inv: &Inventory, m1: Facts, w1: Facts, phases: &[Phase]) -> Vec<String> {
        let rendered = Rendered {
            hosts: inv.nodes.iter().map(|n| (n.name.clone(), vec![])).collect(),
            local: vec![],
        };
        let hosts = [(&inv.nodes[M1], &m1), (&inv.nodes[W1], &w1)];
        problems(inv, &hosts, &rendered, phases, &BTreeSet::new())
    }

    #[test]
    fn a_healthy_pair_passes() {
        let inv = inv();
        assert_eq!(
            problems_of(
                &inv,
                facts(&inv, M1, 0.1),
                facts(&inv, W1, -0.4),
                &Phase::ALL
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn clock_skew_over_two_seconds_between_hosts() {
        let inv = inv();
        let p = problems_of(
            &inv,
            facts(&inv, M1, 1.2),
            facts(&inv, W1, -1.3),
            &[Phase::Etcd],
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("clock skew of 2.5 s between w1 and m1"),
            "{p:?}"
        );
        // A clock that is off by the same amount everywhere is not skew between hosts.
        assert!(
            problems_of(
                &inv,
                facts(&inv, M1, 30.0),
                facts(&inv, W1, 30.5),
                &[Phase::Etcd]
            )
            .is_empty()
        );
    }

    #[test]
    fn swap_on_a_worker_only_matters_for_the_workers_phase() {
        let inv = inv();
        let mut w1 = facts(&inv, W1, 0.0);
        w1.swap_active = true;
        let p = problems_of(&inv, facts(&inv, M1, 0.0), w1.clone(), &[Phase::Workers]);
        assert!(p.iter().any(|l| l.starts_with("w1: swap is on")), "{p:?}");
        assert!(problems_of(&inv, facts(&inv, M1, 0.0), w1, &[Phase::Etcd]).is_empty());
    }

    #[test]
    fn a_port_is_fine_when_our_own_component_holds_it() {
        let inv = inv();
        let mut m1 = facts(&inv, M1, 0.0);
        m1.listeners = vec![
            Listener {
                port: 2379,
                process: "etcd".into(),
                unit: None,
            },
            Listener {
                port: 10257,
                process: "kube-controller".into(),
                unit: Some("kube-controller-manager".into()),
            },
            // A stand-in binary run by our own unit.
            Listener {
                port: 10259,
                process: "openssl".into(),
                unit: Some("kube-scheduler".into()),
            },
            Listener {
                port: 6443,
                process: "nginx".into(),
                unit: Some("nginx".into()),
            },
        ];
        let p = problems_of(
            &inv,
            m1,
            facts(&inv, W1, 0.0),
            &[Phase::Etcd, Phase::ControlPlane],
        );
        assert_eq!(
            p,
            ["m1: port 6443 (phase control-plane) is held by \"nginx\", not by kube-apiserver"]
        );
    }

    #[test]
    fn missing_binaries_are_listed_by_host_and_phase() {
        let inv = inv();
        let mut w1 = facts(&inv, W1, 0.0);
        w1.present_binaries.clear();
        let p = problems_of(&inv, facts(&inv, M1, 0.0), w1, &Phase::ALL);
        assert_eq!(p.len(), 1, "{p:?}");
        for b in [
            "w1: /usr/bin/kubelet (phase workers)",
            // Once, with the package that has it (not again as a missing tool).
            "w1: /usr/bin/containerd (phase workers; Debian package containerd)",
        ] {
            assert_eq!(p[0].matches(b).count(), 1, "{p:?}");
            assert!(p[0].contains(b), "{p:?}");
        }
    }

    #[test]
    fn no_systemd_where_units_go() {
        let inv = inv();
        let mut m1 = facts(&inv, M1, 0.0);
        m1.systemd = false;
        let rendered = crate::render::Rendered {
            hosts: [
                (
                    "m1".to_string(),
                    vec![crate::render::File {
                        path: "/etc/systemd/system/etcd.service".into(),
                        mode: 0o644,
                        contents: vec![].into(),
                        units: vec!["etcd"],
                        anchor: None,
                        restarts: true,
                        phase: None,
                    }],
                ),
                ("w1".to_string(), vec![]),
            ]
            .into(),
            local: vec![],
        };
        let w1 = facts(&inv, W1, 0.0);
        let p = problems(
            &inv,
            &[(&inv.nodes[M1], &m1), (&inv.nodes[W1], &w1)],
            &rendered,
            &[Phase::Etcd],
            &BTreeSet::new(),
        );
        assert_eq!(p, ["m1: systemd is not running (no /run/systemd/system)"]);
    }

    #[test]
    fn a_worker_on_cgroup_v1_without_br_netfilter_or_tools_is_named() {
        let inv = inv();
        let mut w1 = facts(&inv, W1, 0.0);
        w1.cgroup2 = false;
        w1.br_netfilter = false;
        w1.tools.remove("conntrack");
        let p = problems_of(&inv, facts(&inv, M1, 0.0), w1.clone(), &[Phase::Workers]);
        assert!(
            p.iter().any(|l| l
                .starts_with("w1: cgroup v1: the kubelet of Kubernetes 1.35 and later refuses")),
            "{p:#?}"
        );
        assert!(
            p.iter().any(|l| l.starts_with("w1: no br_netfilter")),
            "{p:#?}"
        );
        assert!(
            p.iter()
                .any(|l| l.contains("w1: conntrack (for kube-proxy; Debian package conntrack)")),
            "{p:#?}"
        );
        // None of it matters to a deploy of etcd only.
        assert!(problems_of(&inv, facts(&inv, M1, 0.0), w1, &[Phase::Etcd]).is_empty());
    }

    #[test]
    fn kubernetes_binaries_of_another_release_are_named() {
        let inv = inv();
        let want = inv.cluster.kubernetes_version;
        let mut w1 = facts(&inv, W1, 0.0);
        w1.versions.insert(
            "/usr/bin/kubelet".into(),
            format!("Kubernetes v{}.{}.0", want.major, want.minor + 1),
        );
        let mut m1 = facts(&inv, M1, 0.0);
        m1.versions.insert(
            "/usr/bin/kube-apiserver".into(),
            format!("Kubernetes v{}.{}.9", want.major, want.minor),
        );
        let p = problems_of(&inv, m1, w1, &Phase::ALL);
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(p[0].starts_with("w1: /usr/bin/kubelet is "), "{p:#?}");
    }

    #[test]
    fn an_upgrade_goes_one_minor_at_a_time_never_down_and_masters_first() {
        let inv = inv();
        let want = inv.cluster.kubernetes_version;
        let line = |minor: u32| format!("Kubernetes v{}.{minor}.3", want.major);
        let with = |node: usize, bin: &str, minor: u32| {
            let mut f = facts(&inv, node, 0.0);
            f.versions.insert(format!("/usr/bin/{bin}"), line(minor));
            f
        };
        // Binaries uploaded by the deploy: only the skew rules speak (the release check is moot).
        let uploaded =
            |phases: &[Phase], m1: Facts, w1: Facts| {
                let mut rendered = Rendered {
                    hosts: inv.nodes.iter().map(|n| (n.name.clone(), vec![])).collect(),
                    local: vec![],
                };
                for (node, bin) in [(M1, "kube-apiserver"), (W1, "kubelet")] {
                    rendered.hosts.get_mut(&inv.nodes[node].name).unwrap().push(
                        crate::render::File {
                            path: format!("/usr/bin/{bin}"),
                            mode: 0o755,
                            contents: b"binary".as_slice().into(),
                            units: vec![],
                            anchor: None,
                            restarts: true,
                            phase: None,
                        },
                    );
                }
                let hosts = [(&inv.nodes[M1], &m1), (&inv.nodes[W1], &w1)];
                problems(&inv, &hosts, &rendered, phases, &BTreeSet::new())
            };
        // One minor up, control plane and workers together: allowed.
        assert_eq!(
            uploaded(
                &Phase::ALL,
                with(M1, "kube-apiserver", want.minor - 1),
                with(W1, "kubelet", want.minor - 1)
            ),
            Vec::<String>::new()
        );
        // Two minors up for the API server: refused, naming the step between.
        let p = uploaded(
            &Phase::ALL,
            with(M1, "kube-apiserver", want.minor - 2),
            facts(&inv, W1, 0.0),
        );
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(
            p[0].starts_with(&format!(
                "m1: /usr/bin/kube-apiserver is 1.{}.3: upgrade one minor at a time (1.{} first",
                want.minor - 2,
                want.minor - 1
            )),
            "{p:#?}"
        );
        // Down a minor: refused, for the kubelet too.
        let p = uploaded(
            &Phase::ALL,
            facts(&inv, M1, 0.0),
            with(W1, "kubelet", want.minor + 1),
        );
        assert!(
            p.len() == 1
                && p[0].starts_with("w1: /usr/bin/kubelet is ")
                && p[0].contains("does not support downgrading a minor"),
            "{p:#?}"
        );
        // Workers first while the API servers are a minor behind: the kubelet would be newer.
        let p = uploaded(
            &[Phase::Workers],
            with(M1, "kube-apiserver", want.minor - 1),
            with(W1, "kubelet", want.minor - 1),
        );
        assert!(
            p.len() == 1
                && p[0].starts_with(&format!(
                    "the kubelets would be {want} while m1's API server is 1.{}.3",
                    want.minor - 1
                )),
            "{p:#?}"
        );
        // Once the control plane is at the release, the workers may follow.
        assert_eq!(
            uploaded(
                &[Phase::Workers],
                with(M1, "kube-apiserver", want.minor),
                with(W1, "kubelet", want.minor - 1)
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn versions_are_read_from_what_the_binaries_print() {
        assert_eq!(parse_version("Kubernetes v1.37.1"), Some((1, 37, 1)));
        assert_eq!(parse_version("etcd Version: 3.5.16"), Some((3, 5, 16)));
        assert_eq!(
            parse_version("containerd github.com/containerd/containerd 1.7.24~ds1 1.7.24~ds1-6+b2"),
            Some((1, 7, 24))
        );
        assert_eq!(
            parse_version("containerd containerd.io v2.1.9 7b4b4e1"),
            Some((2, 1, 9))
        );
        assert_eq!(parse_version("no version here"), None);
    }

    #[test]
    fn a_too_old_containerd_or_etcd_is_named_with_what_the_version_needs() {
        let inv = inv();
        let mut w1 = facts(&inv, W1, 0.0);
        // Debian trixie's containerd, for the newest Kubernetes (which needs 2.3).
        w1.versions.insert(
            "/usr/bin/containerd".into(),
            "containerd github.com/containerd/containerd 1.7.24~ds1 1.7.24~ds1-6".into(),
        );
        let mut m1 = facts(&inv, M1, 0.0);
        m1.versions
            .insert("/usr/bin/etcd".into(), "etcd Version: 3.4.23".into());
        let p = problems_of(&inv, m1, w1, &Phase::ALL);
        assert!(p.iter().any(|l| l.starts_with("w1: /usr/bin/containerd is 1.7.24; Kubernetes 1.37 needs containerd 2.3.0+ or 2.4.0+")), "{p:#?}");
        assert!(
            p.iter().any(|l| l.starts_with(
                "m1: /usr/bin/etcd is 3.4.23; Kubernetes 1.37 supports etcd 3.5.11+ or 3.6.0+"
            )),
            "{p:#?}"
        );
        // New enough: 2.5 is past every line listed; 3.5.16 meets 3.5.11.
        let mut w1 = facts(&inv, W1, 0.0);
        w1.versions.insert(
            "/usr/bin/containerd".into(),
            "containerd containerd.io v2.5.0 abc".into(),
        );
        let mut m1 = facts(&inv, M1, 0.0);
        m1.versions
            .insert("/usr/bin/etcd".into(), "etcd Version: 3.5.16".into());
        assert!(problems_of(&inv, m1, w1, &Phase::ALL).is_empty());
    }
}
