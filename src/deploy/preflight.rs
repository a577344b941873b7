//! Preflight: connect to every host, read its facts in one round trip, plan it, and check all
//! of them before anything is changed anywhere. The rules ([`problems`]) are a pure function of
//! what the hosts reported, so they are tested without any host.

use std::sync::Arc;

use super::{Ctx, DeployError, Host};
use crate::components::{COMPONENTS, Phase};
use crate::inventory::{Inventory, Node, Role};
use crate::plan::{self, files_in_phases};
use crate::remote::{Connector, Facts, FactsQuery};
use crate::plan::sha256_hex;
use crate::render::{Anchor, File, Rendered};

/// Connects to every host, reads its facts and plans it; checks the rules across hosts.
pub(crate) async fn run(ctx: &mut Ctx, connector: Arc<dyn Connector>) -> Result<(), DeployError> {
    connect_and_plan(ctx, connector).await;
    let reached: Vec<(&Node, &Facts)> =
        ctx.hosts.iter().filter(|h| h.alive()).filter_map(|h| Some((&h.node, h.facts.as_ref()?))).collect();
    let problems = problems(&ctx.inv, &reached, &ctx.rendered, &ctx.phases);
    if problems.is_empty() { Ok(()) } else { Err(DeployError::Preflight(problems)) }
}

/// The first step on every host: connect, read its state, plan it. A host that cannot be
/// reached is marked failed (in preflight) and left out from then on.
pub(crate) async fn connect_and_plan(ctx: &mut Ctx, connector: Arc<dyn Connector>) {
    let (inv, rendered, phases, progress) = (ctx.inv.clone(), ctx.rendered.clone(), ctx.phases.clone(), ctx.progress.clone());
    ctx.each_host(move |h| {
        progress.say(&h.node.name, "preflight: connecting");
        connect_and_gather(h, connector.as_ref(), &inv, &rendered, &phases);
        if let Some(facts) = h.facts.as_ref().filter(|_| h.outcome.ok) {
            h.plan = Some(plan::plan_host(&rendered, &h.node.name, &facts.files, &phases));
        }
        progress.say(&h.node.name, "preflight: done");
    })
    .await;
}

fn connect_and_gather(h: &mut Host, connector: &dyn Connector, inv: &Inventory, rendered: &Rendered, phases: &[Phase]) {
    match connector.connect(&h.node) {
        Ok(r) => h.remote = Some(r),
        Err(e) => return h.fail(Phase::Preflight, e),
    }
    let files = files_in_phases(rendered, &h.node.name, phases);
    let query = FactsQuery {
        paths: files.iter().map(|f| f.path.clone()).collect(),
        fingerprints: files.iter().filter(|f| f.anchor == Some(Anchor::EncryptionKey)).map(|f| f.path.clone()).collect(),
        binaries: COMPONENTS
            .iter()
            .filter(|c| phases.contains(&c.phase) && c.runs_on(inv, &h.node))
            .map(|c| c.binary_path(inv))
            .collect(),
        hosts_block: inv.cluster.name.clone(),
        units: crate::components::units_on(inv, &h.node).map(str::to_string).collect(),
    };
    match h.remote().facts(&query) {
        Ok(f) => h.facts = Some(f),
        Err(e) => h.fail(Phase::Preflight, e),
    }
}

/// Preflight's rules over what every reached host reported; one line per problem.
pub fn problems(inv: &Inventory, hosts: &[(&Node, &Facts)], rendered: &Rendered, phases: &[Phase]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    for &(node, facts) in hosts {
        let name = &node.name;
        let has_units = files_in_phases(rendered, name, phases).iter().any(|f| f.is_unit());
        if has_units && !facts.systemd {
            problems.push(format!("{name}: systemd is not running (no /run/systemd/system)"));
        }
        for c in COMPONENTS.iter().filter(|c| phases.contains(&c.phase) && c.runs_on(inv, node)) {
            let bin = c.binary_path(inv);
            let uploaded = rendered.hosts.get(name).is_some_and(|fs| fs.iter().any(|f| f.path == bin));
            if !uploaded && !facts.present_binaries.contains(&bin) {
                missing.push(format!("{name}: {bin} (phase {})", c.phase));
            }
            for port in c.ports {
                let number = port.number(inv);
                for l in facts.listeners.iter().filter(|l| l.port == number) {
                    // Our own unit may hold it (whatever its binary is called), or a process
                    // of the component's name started by hand.
                    if l.unit.as_deref() != c.unit && l.process != c.process_name() {
                        problems.push(format!(
                            "{name}: port {number} (phase {}) is held by {:?}, not by {}",
                            c.phase,
                            l.process,
                            c.name
                        ));
                    }
                }
            }
        }
        for f in files_in_phases(rendered, name, phases) {
            if let Some(anchor) = f.anchor
                && holds_another(f, anchor, facts)
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
        if phases.contains(&Phase::Workers) && node.has(Role::Worker) && facts.swap_active {
            problems.push(format!("{name}: swap is on; the kubelet needs it off (swapoff -a, and remove it from /etc/fstab)"));
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
    if let (Some(min), Some(max)) =
        (offsets.iter().min_by(|a, b| a.1.total_cmp(&b.1)), offsets.iter().max_by(|a, b| a.1.total_cmp(&b.1)))
        && max.1 - min.1 > 2.0
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

/// Does the node have this file of the cluster's identity with other contents?
fn holds_another(f: &File, anchor: Anchor, facts: &Facts) -> bool {
    match anchor {
        Anchor::EncryptionKey => facts
            .fingerprints
            .get(&f.path)
            .is_some_and(|theirs| *theirs != crate::render::secrets_fingerprint(&String::from_utf8_lossy(&f.contents))),
        _ => facts.files.get(&f.path).is_some_and(|r| r.sha256 != sha256_hex(&f.contents)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::Listener;


    fn facts(inv: &Inventory, node: usize, clock_offset: f64) -> Facts {
        let n = &inv.nodes[node];
        Facts {
            systemd: true,
            clock_offset,
            present_binaries: COMPONENTS.iter().filter(|c| c.runs_on(inv, n)).map(|c| c.binary_path(inv)).collect(),
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
        let rendered = Rendered { hosts: inv.nodes.iter().map(|n| (n.name.clone(), vec![])).collect(), local: vec![] };
        let hosts = [(&inv.nodes[M1], &m1), (&inv.nodes[W1], &w1)];
        problems(inv, &hosts, &rendered, phases)
    }

    #[test]
    fn a_healthy_pair_passes() {
        let inv = inv();
        assert_eq!(problems_of(&inv, facts(&inv, M1, 0.1), facts(&inv, W1, -0.4), &Phase::ALL), Vec::<String>::new());
    }

    #[test]
    fn clock_skew_over_two_seconds_between_hosts() {
        let inv = inv();
        let p = problems_of(&inv, facts(&inv, M1, 1.2), facts(&inv, W1, -1.3), &[Phase::Etcd]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("clock skew of 2.5 s between w1 and m1"), "{p:?}");
        // A clock that is off by the same amount everywhere is not skew between hosts.
        assert!(problems_of(&inv, facts(&inv, M1, 30.0), facts(&inv, W1, 30.5), &[Phase::Etcd]).is_empty());
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
            Listener { port: 2379, process: "etcd".into(), unit: None },
            Listener { port: 10257, process: "kube-controller".into(), unit: Some("kube-controller-manager".into()) },
            // A stand-in binary run by our own unit.
            Listener { port: 10259, process: "openssl".into(), unit: Some("kube-scheduler".into()) },
            Listener { port: 6443, process: "nginx".into(), unit: Some("nginx".into()) },
        ];
        let p = problems_of(&inv, m1, facts(&inv, W1, 0.0), &[Phase::Etcd, Phase::ControlPlane]);
        assert_eq!(p, ["m1: port 6443 (phase control-plane) is held by \"nginx\", not by kube-apiserver"]);
    }

    #[test]
    fn missing_binaries_are_listed_by_host_and_phase() {
        let inv = inv();
        let mut w1 = facts(&inv, W1, 0.0);
        w1.present_binaries.clear();
        let p = problems_of(&inv, facts(&inv, M1, 0.0), w1, &Phase::ALL);
        assert_eq!(p.len(), 1, "{p:?}");
        for b in ["w1: /usr/bin/kubelet (phase workers)", "w1: /usr/bin/containerd (phase workers)"] {
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
                ("m1".to_string(), vec![crate::render::File { path: "/etc/systemd/system/etcd.service".into(), mode: 0o644, contents: vec![], units: vec!["etcd"], anchor: None }]),
                ("w1".to_string(), vec![]),
            ]
            .into(),
            local: vec![],
        };
        let w1 = facts(&inv, W1, 0.0);
        let p = problems(&inv, &[(&inv.nodes[M1], &m1), (&inv.nodes[W1], &w1)], &rendered, &[Phase::Etcd]);
        assert_eq!(p, ["m1: systemd is not running (no /run/systemd/system)"]);
    }
}
