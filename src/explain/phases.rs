//! The kubeconfigs, then each selected deploy phase host by host: every file the phase places
//! (render's file table) staged under `stage/<node>/`, copied with scp, put in place with its
//! owner and mode by `install`; the phase's units started with systemctl (components table);
//! and the phase's check, polled until it holds.

use std::collections::{BTreeMap, BTreeSet};

use super::{ExplainError, Script, Selection, quote, sudo};
use crate::components::{COMPONENTS, ComponentId, Phase, Port, Restart};
use crate::inventory::{Inventory, Manifest, Node, host_for_url};
use crate::pki::{CaId, matrix};
use crate::render::{self, FILES, IMAGES_DIR, Source, Upstream};
use crate::templates::ENCRYPTION_CONFIG;

/// What the files of the selected phases (and their checks) need from the PKI section.
#[derive(Debug, Default)]
pub(crate) struct Needs {
    /// CAs whose certificate (and key, to sign) must exist.
    pub cas: BTreeSet<CaId>,
    /// Leaf certificates by matrix name.
    pub leaves: BTreeSet<String>,
    pub sa: bool,
    pub encryption_key: bool,
    /// Kubeconfigs by file stem: (certificate, user, server URL).
    pub kubeconfigs: BTreeMap<String, (String, String, String)>,
}

/// One file on one node.
struct Placed {
    path: String,
    mode: u32,
    origin: Origin,
}

/// Where a file's bytes come from.
enum Origin {
    Rule(Source),
    /// The inventory's nth image tarball (`[addons] images`), for containerd to import.
    Image(usize),
}

/// Everything the phases do, node by node.
pub(crate) struct Plan {
    pub needs: Needs,
    /// Per phase, per node (inventory order), the files it places.
    files: BTreeMap<Phase, Vec<(Node, Vec<Placed>)>>,
    phases: Vec<Phase>,
}

/// How long a phase's check may take: deploy's default timeouts.
const WAIT_SECS: u64 = 120;

/// The kubeconfig file (under `kubeconfigs/`) for a certificate and server.
fn kubeconfig_stem(cert: &str, server_url: &str, inv: &Inventory) -> String {
    let stem = cert.replace('/', "-");
    if server_url == inv.api_server_url() {
        stem
    } else {
        format!("{stem}-local")
    }
}

impl Plan {
    pub fn new(inv: &Inventory, sel: &Selection) -> Result<Plan, ExplainError> {
        let mut needs = Needs::default();
        if sel.full_pki {
            needs.cas.extend(
                crate::pki::CAS
                    .iter()
                    .filter(|c| inv.addons.aggregation || !c.aggregation_only)
                    .map(|c| c.id),
            );
            needs.leaves.extend(matrix(inv).into_iter().map(|s| s.name));
            needs.sa = true;
            needs.encryption_key = true;
        }
        let mut files: BTreeMap<Phase, Vec<(Node, Vec<Placed>)>> = BTreeMap::new();
        for node in &inv.nodes {
            // Like render: a path several rules give (a master that is also a worker) once,
            // placed by the earliest phase of them.
            let mut by_path: Vec<(Phase, Placed)> = Vec::new();
            for rule in FILES.iter().filter(|r| r.applies(inv, node)) {
                let path = rule.path(inv);
                match by_path.iter_mut().find(|(_, p)| p.path == path) {
                    Some((phase, _)) => *phase = (*phase).min(rule.phase()),
                    None => by_path.push((
                        rule.phase(),
                        Placed {
                            path,
                            mode: rule.mode,
                            origin: Origin::Rule(rule.source),
                        },
                    )),
                }
            }
            if ComponentId::Containerd.get().runs_on(inv, node) {
                for (i, img) in inv.addons.images.iter().enumerate() {
                    let name = img.file_name().unwrap_or_default().to_string_lossy();
                    by_path.push((
                        Phase::Files,
                        Placed {
                            path: format!("{IMAGES_DIR}/{name}"),
                            mode: 0o644,
                            origin: Origin::Image(i),
                        },
                    ));
                }
            }
            for (phase, placed) in by_path.into_iter().filter(|(p, _)| sel.phases.contains(p)) {
                if let Origin::Rule(source) = &placed.origin {
                    needs.add(inv, node, source);
                }
                let per_node = files.entry(phase).or_default();
                match per_node.iter_mut().find(|(n, _)| n.name == node.name) {
                    Some((_, list)) => list.push(placed),
                    None => per_node.push((node.clone(), vec![placed])),
                }
            }
        }
        // What the checks use on this machine.
        if sel.phases.contains(&Phase::Etcd) {
            needs.leaves.insert("etcd/healthcheck-client".into());
            needs.cas.insert(CaId::Etcd);
        }
        if sel.phases.iter().any(|p| *p >= Phase::ControlPlane) {
            needs.add_kubeconfig(inv, "admin", "admin", inv.api_server_url());
        }
        Ok(Plan {
            needs,
            files,
            phases: sel.phases.clone(),
        })
    }

    pub fn write(&self, inv: &Inventory, s: &mut Script) -> Result<(), ExplainError> {
        kubeconfigs(inv, &self.needs, s);
        for phase in &self.phases {
            s.section(&format!("Phase {phase}: {}", about(*phase)));
            for (node, placed) in self.files.get(phase).map(Vec::as_slice).unwrap_or_default() {
                place(inv, node, placed, s)?;
            }
            if *phase == Phase::Files {
                hosts_block(inv, s)?;
            }
            start_units(inv, *phase, s);
            check(inv, *phase, s);
        }
        Ok(())
    }
}

impl Needs {
    fn add(&mut self, inv: &Inventory, node: &Node, source: &Source) {
        let subst = |p: &str| p.replace("{node}", &node.name);
        match *source {
            Source::CaCert(id) | Source::CaSigner(id) | Source::CaKey(id) => {
                self.cas.insert(id);
            }
            Source::Cert(p) | Source::Key(p) | Source::CertAndKey(p) => {
                self.leaves.insert(subst(p));
            }
            Source::SaKey | Source::SaPub => self.sa = true,
            Source::Template(ENCRYPTION_CONFIG) => self.encryption_key = true,
            Source::Kubeconfig { cert, user, server } => {
                self.add_kubeconfig(inv, &subst(cert), &subst(user), server.url(inv))
            }
            Source::Template(_) | Source::Manifest(_) => {}
        }
    }

    fn add_kubeconfig(&mut self, inv: &Inventory, cert: &str, user: &str, url: String) {
        self.cas.insert(CaId::Kubernetes);
        self.leaves.insert(cert.to_string());
        self.kubeconfigs.insert(
            kubeconfig_stem(cert, &url, inv),
            (cert.to_string(), user.to_string(), url),
        );
    }
}

fn about(phase: Phase) -> &'static str {
    match phase {
        Phase::Preflight => "checks before anything changes",
        Phase::Files => "files no unit reads (the hosts block, client certificates), on every node",
        Phase::Etcd => {
            "etcd on its members, started together (each one's start waits for a quorum)"
        }
        Phase::Lb => "HAProxy in front of the API servers",
        Phase::ControlPlane => "API servers, controller managers, schedulers",
        Phase::Workers => "kernel settings, containerd, kubelet, kube-proxy, pod routes",
        Phase::Addons => "manifests applied with kubectl on the first master",
    }
}

/// `kubectl config` for each kubeconfig, as kubernetes-the-hard-way makes them.
fn kubeconfigs(inv: &Inventory, needs: &Needs, s: &mut Script) {
    if needs.kubeconfigs.is_empty() {
        return;
    }
    let cluster = quote(&inv.cluster.name);
    s.section(
        "Kubeconfigs: the API server's address, the cluster CA and a client certificate, embedded",
    );
    for (stem, (cert, user, url)) in &needs.kubeconfigs {
        let kc = format!("kubeconfigs/{stem}.kubeconfig");
        s.comment(format!("{kc}: user {user} at {url}"));
        s.line(format!("kubectl config set-cluster {cluster} --certificate-authority=pki/ca.crt --embed-certs=true --server={url} --kubeconfig={kc}"));
        s.line(format!(
            "kubectl config set-credentials {} --client-certificate=pki/{cert}.crt --client-key=pki/{cert}.key --embed-certs=true --kubeconfig={kc}",
            quote(user)
        ));
        s.line(format!(
            "kubectl config set-context default --cluster={cluster} --user={} --kubeconfig={kc}",
            quote(user)
        ));
        s.line(format!(
            "kubectl config use-context default --kubeconfig={kc}"
        ));
    }
}

/// The local file a source comes from (for [`place`]): a copy command into `dst`.
fn stage_command(inv: &Inventory, node: &Node, origin: &Origin, dst: &str) -> Option<String> {
    let source = match origin {
        Origin::Rule(s) => s,
        Origin::Image(i) => {
            return Some(format!(
                "cp {} {dst}",
                quote(&inv.addons.images.get(*i)?.display().to_string())
            ));
        }
    };
    let subst = |p: &str| p.replace("{node}", &node.name);
    let ca_file = |id: CaId| {
        crate::pki::CAS
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.file)
            .unwrap_or_default()
    };
    let from = match *source {
        // Outside a rotation the bundle is the one CA that signs.
        Source::CaCert(id) | Source::CaSigner(id) => format!("pki/{}.crt", ca_file(id)),
        Source::CaKey(id) => format!("pki/{}.key", ca_file(id)),
        Source::Cert(p) => format!("pki/{}.crt", subst(p)),
        Source::Key(p) => format!("pki/{}.key", subst(p)),
        Source::CertAndKey(p) => {
            return Some(format!("cat pki/{0}.crt pki/{0}.key > {dst}", subst(p)));
        }
        Source::SaKey => format!("pki/{}", crate::pki::SA_KEY_FILE),
        Source::SaPub => format!("pki/{}", crate::pki::SA_PUB_FILE),
        Source::Kubeconfig { cert, server, .. } => format!(
            "kubeconfigs/{}.kubeconfig",
            kubeconfig_stem(&subst(cert), &server.url(inv), inv)
        ),
        Source::Manifest(which) => {
            let m = match which {
                Upstream::Metallb => &inv.addons.metallb.manifest,
                Upstream::MetricsServer => &inv.addons.metrics_server,
            };
            match m {
                Some(Manifest::File(p)) => quote(&p.display().to_string()),
                _ => return None,
            }
        }
        Source::Template(_) => return None,
    };
    Some(format!("cp {from} {dst}"))
}

/// Stages a node's files of one phase, copies them over and installs them.
fn place(
    inv: &Inventory,
    node: &Node,
    placed: &[Placed],
    s: &mut Script,
) -> Result<(), ExplainError> {
    let n = &node.name;
    let stage = format!("stage/{n}");
    s.blank();
    s.comment(format!(
        "{n}: {} files, staged under {stage}/ as they will be on the node",
        placed.len()
    ));
    s.line(format!("rm -rf {stage}"));
    let dirs: BTreeSet<String> = placed
        .iter()
        .filter_map(|p| {
            std::path::Path::new(&p.path)
                .parent()
                .map(|d| format!("{stage}{}", d.display()))
        })
        .collect();
    s.line(format!(
        "mkdir -p {}",
        dirs.into_iter().collect::<Vec<_>>().join(" ")
    ));
    for p in placed {
        let dst = format!("{stage}{}", p.path);
        match &p.origin {
            Origin::Rule(Source::Template(name)) if *name == ENCRYPTION_CONFIG => {
                // The key goes in through a variable: never on a command line, never in this
                // script. pki/encryption.key is the key's base64 on its first line, and after a
                // rotation its name on a `name:` line (key1 without one), as hardway reads it.
                const KEY: &str = "@ENCRYPTION_KEY@";
                const NAME: &str = "@ENCRYPTION_KEY_NAME@";
                let text = render::render_template(inv, node, name, NAME, KEY)?;
                s.line("ENCRYPTION_KEY=$(sed -n 1p pki/encryption.key)");
                s.line(format!(
                    "ENCRYPTION_KEY_NAME=$(sed -n 's/^name:[[:space:]]*//p' pki/encryption.key); ENCRYPTION_KEY_NAME=${{ENCRYPTION_KEY_NAME:-{}}}",
                    crate::pki::FIRST_ENCRYPTION_KEY_NAME
                ));
                s.heredoc_with(
                    &dst,
                    &text,
                    &[(KEY, "ENCRYPTION_KEY"), (NAME, "ENCRYPTION_KEY_NAME")],
                    &p.path,
                )?;
            }
            Origin::Rule(Source::Template(name)) => s.heredoc(
                &dst,
                &render::render_template(inv, node, name, "", "")?,
                &p.path,
            )?,
            other => {
                if let Some(cmd) = stage_command(inv, node, other, &dst) {
                    s.line(cmd);
                }
            }
        }
    }
    let tops: BTreeSet<String> = placed
        .iter()
        .filter_map(|p| {
            p.path
                .trim_start_matches('/')
                .split('/')
                .next()
                .map(|t| format!("{stage}/{t}"))
        })
        .collect();
    let root = sudo(inv, node);
    s.comment(format!(
        "copy them to {n}, then put each in place, owned by root, with its mode"
    ));
    s.line(format!(
        "on {n} 'rm -rf hardway-upload && mkdir -m 700 hardway-upload'"
    ));
    s.line(format!(
        "scp \"${{SSH_OPTS[@]}}\" -P \"${{PORT[{n}]}}\" -r {} \"${{HOST[{n}]}}:hardway-upload/\"",
        tops.into_iter().collect::<Vec<_>>().join(" ")
    ));
    let mut remote = vec!["set -e".to_string()];
    for p in placed {
        remote.push(format!(
            "install -D -o root -g root -m {:o} hardway-upload{1} {1}",
            p.mode,
            quote(&p.path)
        ));
    }
    remote.push("rm -rf hardway-upload".into());
    s.remote(
        n,
        root,
        &remote.join("\n"),
        &format!("the install commands for {n}"),
    )
}

/// The cluster's names in every node's /etc/hosts, between markers, as deploy merges them.
fn hosts_block(inv: &Inventory, s: &mut Script) -> Result<(), ExplainError> {
    let block = render::path_of_template("hosts").unwrap_or("/etc/hardway/hosts");
    let (begin, end) = (
        format!("# BEGIN hardway {}", inv.cluster.name),
        format!("# END hardway {}", inv.cluster.name),
    );
    s.blank();
    s.comment(format!(
        "Every node: {block} replaces the lines between its markers in /etc/hosts."
    ));
    let script = format!(
        "set -e\nawk -v b={} -v e={} '$0==b{{skip=1}} !skip{{print}} $0==e{{skip=0}}' /etc/hosts > /etc/hosts.hardway-tmp\n\
         cat {block} >> /etc/hosts.hardway-tmp\ncat /etc/hosts.hardway-tmp > /etc/hosts\nrm /etc/hosts.hardway-tmp",
        quote(&begin),
        quote(&end)
    );
    for node in &inv.nodes {
        s.remote(&node.name, sudo(inv, node), &script, "the hosts block")?;
    }
    Ok(())
}

/// systemctl for the phase's units on each node that runs them.
fn start_units(inv: &Inventory, phase: Phase, s: &mut Script) {
    let components: Vec<_> = COMPONENTS
        .iter()
        .filter(|c| c.phase == phase && c.unit.is_some())
        .collect();
    if components.is_empty() {
        return;
    }
    s.blank();
    let bootstrap = components
        .iter()
        .any(|c| c.restart == Restart::Rolling && c.id == ComponentId::Etcd);
    if bootstrap {
        s.comment("Start every member without waiting (--no-block): a member's start waits for a quorum of the others.");
    } else {
        s.comment("Start the units (restart: a unit that runs already reads its new files).");
    }
    for node in &inv.nodes {
        let units: Vec<&str> = components
            .iter()
            .filter(|c| c.runs_on(inv, node))
            .filter_map(|c| c.unit)
            .collect();
        if units.is_empty() {
            continue;
        }
        let root = sudo(inv, node);
        let no_block = if bootstrap { "--no-block " } else { "" };
        s.line(format!(
            "on {} '{root}systemctl daemon-reload && {root}systemctl enable {u} && {root}systemctl restart {no_block}{u}'",
            node.name,
            u = units.join(" ")
        ));
    }
}

/// The check that the phase worked, polled until it holds (deploy waits the same way).
fn check(inv: &Inventory, phase: Phase, s: &mut Script) {
    let admin = "kubectl --kubeconfig kubeconfigs/admin.kubeconfig";
    match phase {
        Phase::Etcd => {
            let endpoints: Vec<String> = inv
                .etcd_members()
                .iter()
                .map(|m| {
                    format!(
                        "https://{}:{}",
                        host_for_url(m.address),
                        Port::EtcdClient.number(inv)
                    )
                })
                .collect();
            let etcdctl = format!(
                "etcdctl --endpoints={} --cacert=pki/etcd/ca.crt --cert=pki/etcd/healthcheck-client.crt --key=pki/etcd/healthcheck-client.key",
                endpoints.join(",")
            );
            s.blank();
            s.comment("Every member healthy, one leader (etcdctl from this machine, as the health-check client).");
            s.line(format!(
                "wait_for {WAIT_SECS} 'etcd healthy' {etcdctl} endpoint health"
            ));
            s.line(format!("{etcdctl} endpoint status -w table"));
            s.line(format!("{etcdctl} member list -w table"));
        }
        Phase::Lb => {
            for lb in inv
                .nodes
                .iter()
                .filter(|n| ComponentId::Haproxy.get().runs_on(inv, n))
            {
                let root = sudo(inv, lb);
                let cfg =
                    render::path_of_template("haproxy.cfg").unwrap_or("/etc/haproxy/haproxy.cfg");
                s.blank();
                s.comment(format!(
                    "HAProxy on {} accepts its config and runs.",
                    lb.name
                ));
                s.line(format!(
                    "on {} '{root}haproxy -c -f {cfg} && systemctl is-active haproxy'",
                    lb.name
                ));
            }
        }
        Phase::ControlPlane => {
            s.blank();
            s.comment("The API answers through the load balancer.");
            s.line(format!(
                "wait_for {WAIT_SECS} 'the API ready' {admin} get --raw /readyz"
            ));
            apply_on_first_master(inv, s, crate::addons::control_plane_plan());
        }
        Phase::Workers => {
            s.blank();
            s.comment("Every worker registered and Ready.");
            for w in inv.workers() {
                s.line(format!(
                    "wait_for {WAIT_SECS} 'node {0} registered' {admin} get node {0}",
                    w.name
                ));
                s.line(format!(
                    "{admin} wait --for=condition=Ready node/{} --timeout={WAIT_SECS}s",
                    w.name
                ));
            }
        }
        Phase::Addons => apply_on_first_master(inv, s, crate::addons::plan(inv)),
        Phase::Preflight | Phase::Files => {}
    }
}

/// `plan` (the addons; the control plane's kubelet access RBAC), applied on the first master
/// with its admin kubeconfig.
fn apply_on_first_master(inv: &Inventory, s: &mut Script, plan: Vec<crate::addons::Addon>) {
    let Some(first) = inv.masters().next() else {
        return;
    };
    let kubectl = ComponentId::Kubectl.get().binary_path(inv);
    let kc = FILES
        .iter()
        .find(|r| {
            matches!(r.source, Source::Kubeconfig { cert: "admin", .. }) && r.applies(inv, first)
        })
        .map(|r| r.path(inv))
        .unwrap_or_default();
    let root = sudo(inv, first);
    let k = format!("{root}{kubectl} --kubeconfig {kc}");
    for addon in plan {
        s.blank();
        s.comment(addon.name);
        for step in &addon.steps {
            use crate::addons::Step;
            match step {
                Step::Apply(m) => s.line(format!(
                    "on {} {}",
                    first.name,
                    quote(&format!("{k} apply -f {m}"))
                )),
                Step::ApplyUntilAccepted(m) => s.line(format!(
                    "wait_for {WAIT_SECS} 'accepted by its webhook' on {} {}",
                    first.name,
                    quote(&format!("{k} apply -f {m}"))
                )),
                Step::Rollout { namespace, object } => s.line(format!(
                    "on {} {}",
                    first.name,
                    quote(&format!(
                        "{k} -n {namespace} rollout status {object} --timeout={WAIT_SECS}s"
                    ))
                )),
                Step::Available { object } => s.line(format!(
                    "on {} {}",
                    first.name,
                    quote(&format!(
                        "{k} wait --for=condition=Available {object} --timeout={WAIT_SECS}s"
                    ))
                )),
            }
        }
    }
}
