//! What the addons phase does, as data: each addon's manifests in the order they are applied
//! and what "ready" means for it before the next one starts. `deploy::addons` runs it over the
//! first master's [`crate::remote::Remote`]; `--dry-run` prints it.
//!
//! | addon | applied | ready when |
//! |---|---|---|
//! | CoreDNS | hardway's manifest | `deployment/coredns` rolled out |
//! | MetalLB | upstream's manifest (URL or local copy) | `deployment/controller` and `daemonset/speaker` rolled out |
//! | MetalLB pool | hardway's `IPAddressPool` + `L2Advertisement` | MetalLB's webhook accepted it (retried until it answers) |
//! | metrics-server | upstream's manifest | `deployment/metrics-server` rolled out, `apiservice/v1beta1.metrics.k8s.io` Available |
//!
//! The RBAC that lets the API server reach the kubelets (`kubectl logs`, `exec`, metrics) is not
//! an addon: the control-plane phase applies it last, the same way ([`control_plane_plan`]), so
//! a cluster deployed up to the workers already answers `kubectl logs`.
//!
//! Every manifest is applied first, in this order, so that the addons' pods start together;
//! then each addon's waits run in this order ([`in_order`]). Every wait has the phase's timeout,
//! and a failure names the addon and what did not happen.

use crate::inventory::{Inventory, Manifest};
use crate::render::ADDONS_DIR;

/// One thing the addons phase does on the first master, with kubectl.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `kubectl apply -f` a path on the node or an https URL.
    Apply(String),
    /// Apply, again until the API server accepts it: the admission webhook it goes through
    /// (MetalLB's, `failurePolicy: Fail`) may not answer yet.
    ApplyUntilAccepted(String),
    /// `kubectl rollout status` of a Deployment or DaemonSet.
    Rollout {
        namespace: &'static str,
        object: &'static str,
    },
    /// `kubectl wait --for=condition=Available` of a cluster-scoped object (an APIService).
    Available { object: &'static str },
}

/// One addon: its name (in messages) and its steps, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addon {
    pub name: &'static str,
    pub steps: Vec<Step>,
}

impl Step {
    /// What the step does, for `--dry-run` and messages.
    pub fn describe(&self) -> String {
        match self {
            Step::Apply(m) => format!("kubectl apply -f {m}"),
            Step::ApplyUntilAccepted(m) => {
                format!("kubectl apply -f {m}, again until its admission webhook accepts it")
            }
            Step::Rollout { namespace, object } => {
                format!("wait for {object} in {namespace} to roll out")
            }
            Step::Available { object } => format!("wait for {object} to be Available"),
        }
    }
}

fn on_node(file: &str) -> String {
    format!("{ADDONS_DIR}/{file}")
}

/// Where kubectl takes an upstream manifest from: its URL, or the copy render placed.
fn source(m: &Manifest, placed_as: &str) -> String {
    match m {
        Manifest::Url(u) => u.clone(),
        Manifest::File(_) => on_node(placed_as),
    }
}

/// The steps as they run: every `Apply` first (in plan order), then the other steps (in plan
/// order): MetalLB's pool is applied through its webhook only after the controller rolled out.
pub fn in_order(plan: &[Addon]) -> Vec<(&Addon, &Step)> {
    let applies = plan.iter().flat_map(|a| {
        a.steps
            .iter()
            .filter(|s| matches!(s, Step::Apply(_)))
            .map(move |s| (a, s))
    });
    let rest = plan.iter().flat_map(|a| {
        a.steps
            .iter()
            .filter(|s| !matches!(s, Step::Apply(_)))
            .map(move |s| (a, s))
    });
    applies.chain(rest).collect()
}

/// What the control-plane phase applies last, on the first master: the RBAC that lets the API
/// server's kubelet client certificate reach the kubelets (kubernetes-the-hard-way's "RBAC for
/// Kubelet Authorization", done once the API server answers).
pub fn control_plane_plan() -> Vec<Addon> {
    vec![Addon {
        name: "kubelet access RBAC",
        steps: vec![Step::Apply(on_node("apiserver-to-kubelet-rbac.yaml"))],
    }]
}

/// The addons of this inventory, in the order they are applied.
pub fn plan(inv: &Inventory) -> Vec<Addon> {
    let mut out = Vec::new();
    if inv.addons.coredns.is_some() {
        out.push(Addon {
            name: "CoreDNS",
            steps: vec![
                Step::Apply(on_node("coredns.yaml")),
                Step::Rollout {
                    namespace: "kube-system",
                    object: "deployment/coredns",
                },
            ],
        });
    }
    if let Some(m) = inv
        .addons
        .metallb
        .manifest
        .as_ref()
        .filter(|_| inv.addons.metallb.enabled)
    {
        out.push(Addon {
            name: "MetalLB",
            steps: vec![
                Step::Apply(source(m, "metallb-native.yaml")),
                Step::Rollout {
                    namespace: "metallb-system",
                    object: "deployment/controller",
                },
                Step::Rollout {
                    namespace: "metallb-system",
                    object: "daemonset/speaker",
                },
                Step::ApplyUntilAccepted(on_node("metallb-pool.yaml")),
            ],
        });
    }
    if let Some(m) = &inv.addons.metrics_server {
        out.push(Addon {
            name: "metrics-server",
            steps: vec![
                Step::Apply(source(m, "metrics-server.yaml")),
                Step::Rollout {
                    namespace: "kube-system",
                    object: "deployment/metrics-server",
                },
                Step::Available {
                    object: "apiservice/v1beta1.metrics.k8s.io",
                },
            ],
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_installs_dns_then_metallb_then_metrics_server_each_waited_on() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("inventory/example.toml");
        let inv = crate::inventory::load(&path).unwrap();
        let plan = plan(&inv);
        let names: Vec<&str> = plan.iter().map(|a| a.name).collect();
        assert_eq!(names, ["CoreDNS", "MetalLB", "metrics-server"]);
        // The pool goes through MetalLB's webhook only after its controller has rolled out.
        let metallb = &plan[1].steps;
        assert!(
            matches!(&metallb[0], Step::Apply(u) if u.starts_with("https://") && u.contains(&crate::versions::METALLB.version(crate::versions::newest_minor())))
        );
        assert_eq!(
            metallb[1],
            Step::Rollout {
                namespace: "metallb-system",
                object: "deployment/controller"
            }
        );
        assert_eq!(
            metallb[3],
            Step::ApplyUntilAccepted("/etc/kubernetes/addons/metallb-pool.yaml".into())
        );
        assert_eq!(
            plan[2].steps[2],
            Step::Available {
                object: "apiservice/v1beta1.metrics.k8s.io"
            }
        );
        // As they run: every manifest, then the waits; the pool after MetalLB's rollouts.
        let order: Vec<String> = in_order(&plan).iter().map(|(_, s)| s.describe()).collect();
        let first_wait = order.iter().position(|d| d.starts_with("wait")).unwrap();
        assert!(
            order[..first_wait]
                .iter()
                .all(|d| d.starts_with("kubectl apply")),
            "{order:#?}"
        );
        assert_eq!(first_wait, 3, "{order:#?}");
        let pool = order
            .iter()
            .position(|d| d.contains("metallb-pool"))
            .unwrap();
        let speaker = order
            .iter()
            .position(|d| d.contains("daemonset/speaker"))
            .unwrap();
        assert!(pool > speaker, "{order:#?}");
    }
}
