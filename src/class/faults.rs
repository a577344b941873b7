//! `hardway lab break` and `lab fix`: runs a scenario of [`super::scenarios`] on one node of a
//! lab, over the same SSH as deploy (the inventory's key and known_hosts, host keys checked).
//!
//! The runner picks the node (the scenario's kind of node, `--node` or the first one), makes
//! what the scenario needs on this side (a certificate re-signed with the lab's etcd CA, the
//! control-plane files), and sends one script: the variables, [`super::scenarios::PRELUDE`]
//! and the scenario's break or fix. Breaking asks for `--yes` like every destructive command;
//! `--dry-run` says what would be done. Certificates sent are public; private keys stay where
//! they are (the faulty certificates are made for the node's existing key).

use std::path::Path;
use std::sync::Arc;

use rcgen::{Issuer, KeyPair};
use serde::Serialize;

use super::ClassError;
use super::scenarios::{self, CheckOn, Input, SCENARIOS, Scenario, Target};
use crate::components::{ComponentId, Phase, Port};
use crate::day2::{Confirm, Day2Error};
use crate::inventory::{Inventory, Node};
use crate::pki::{self, CaId};
use crate::remote::Connector;
use crate::remote::script::quote;
use crate::{deploy, render};

/// Break, or undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Break,
    Fix,
}

impl Action {
    /// The command's word for it (`lab break`, `lab fix`).
    pub fn verb(self) -> &'static str {
        match self {
            Action::Break => "break",
            Action::Fix => "fix",
        }
    }
}

/// What a node's script says when there was nothing to do: the scenario was broken already
/// (break), or was not broken (fix). The report's `changed` is read from it.
const ALREADY_BROKEN: &str = "already broken";
const NOT_BROKEN: &str = "not broken";

/// What was (or would be) done.
#[derive(Debug, Clone, Serialize)]
pub struct FaultReport {
    pub scenario: String,
    pub action: Action,
    pub node: String,
    pub dry_run: bool,
    pub steps: Vec<String>,
    /// Whether any node changed: breaking what is broken, or fixing what is not, changes nothing.
    pub changed: bool,
    /// What verify must now say: the check, where, and what its hint names.
    pub expect: Expectation,
}

/// The verify check a broken scenario must fail, resolved for a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expectation {
    pub host: String,
    pub check: String,
    pub hint_names: String,
    pub detail_names: String,
}

/// The node `scenario` breaks: `wanted` if it is of the right kind, else the first that is.
pub fn pick_node<'a>(
    inv: &'a Inventory,
    scenario: &Scenario,
    wanted: Option<&str>,
) -> Result<&'a Node, ClassError> {
    let (kind, candidates): (&str, Vec<&Node>) = match scenario.target {
        Target::EtcdMember => ("an etcd member", inv.etcd_members()),
        Target::Master | Target::Masters => ("a master", inv.masters().collect()),
        Target::Worker => ("a worker", inv.workers().collect()),
        Target::Lb => (
            "the load balancer",
            inv.load_balancer
                .as_ref()
                .and_then(|l| l.node.as_deref())
                .and_then(|n| inv.nodes.iter().find(|x| x.name == n))
                .into_iter()
                .collect(),
        ),
    };
    let bad = |reason: String| ClassError::Lab {
        name: inv.cluster.name.clone(),
        reason,
    };
    match wanted {
        Some(w) => candidates.into_iter().find(|n| n.name == w).ok_or_else(|| {
            bad(format!(
                "{} needs {kind}; --node {w} is not (in {})",
                scenario.name,
                inv.source.display()
            ))
        }),
        None => candidates.into_iter().next().ok_or_else(|| {
            bad(format!(
                "{} needs {kind}, and {} has none",
                scenario.name,
                inv.source.display()
            ))
        }),
    }
}

/// What verify must report once `scenario` is broken on `node`.
pub fn expectation(inv: &Inventory, scenario: &Scenario, node: &Node) -> Expectation {
    let host = match scenario.check_on {
        CheckOn::Node => node.name.clone(),
        CheckOn::Lb => inv
            .load_balancer
            .as_ref()
            .and_then(|l| l.node.clone())
            .unwrap_or_default(),
        CheckOn::Cluster => crate::verify::CLUSTER.to_string(),
    };
    let detail = scenario
        .detail_names
        .replace("{node}", &node.name)
        .replace("{addr}", &node.address.to_string());
    Expectation {
        host,
        check: scenario.check.into(),
        hint_names: scenario.hint_names.into(),
        detail_names: detail,
    }
}

/// The scenario called `name`, or an error listing them all.
pub fn scenario(name: &str) -> Result<&'static Scenario, ClassError> {
    scenarios::find(name).ok_or_else(|| ClassError::Lab {
        name: name.to_string(),
        reason: format!(
            "no such scenario (scenarios: {})",
            SCENARIOS
                .iter()
                .map(|s| s.name)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// Breaks or fixes `scenario` on a node of the lab of `inv`, whose PKI is in `pki_dir`: each
/// node's script through [`crate::remote::Remote::lab_fault`] over `connector` (the session's,
/// with the lab's known host keys and the run log; the fake nodes in tests).
pub async fn run(
    inv: &Inventory,
    pki_dir: &Path,
    scenario: &'static Scenario,
    node: Option<&str>,
    action: Action,
    confirm: Confirm,
    connector: Arc<dyn Connector>,
) -> Result<FaultReport, ClassError> {
    let Confirm { dry_run, yes, .. } = confirm;
    let node = pick_node(inv, scenario, node)?.clone();
    // The nodes the script runs on: the one picked, or every master.
    let nodes: Vec<Node> = match scenario.target {
        Target::Masters => inv.masters().cloned().collect(),
        _ => vec![node.clone()],
    };
    let mut steps = Vec::new();
    if action == Action::Break && scenario.input == Input::ControlPlaneFiles {
        steps.push(
            "every master: place the control-plane files hardway renders (no unit is started)"
                .to_string(),
        );
    }
    for n in &nodes {
        steps.push(format!(
            "{}: {}",
            n.name,
            if action == Action::Break {
                scenario.how
            } else {
                scenario.fix_how
            }
        ));
    }
    let mut report = FaultReport {
        scenario: scenario.name.into(),
        action,
        node: node.name.clone(),
        dry_run,
        expect: expectation(inv, scenario, &node),
        steps,
        changed: false,
    };
    if dry_run {
        return Ok(report);
    }
    if !yes {
        return Err(Day2Error::NeedsYes {
            what: format!("{} {} on {}", action.verb(), scenario.name, node.name),
            steps: report.steps,
        }
        .into());
    }

    if action == Action::Break && scenario.input == Input::ControlPlaneFiles {
        place_control_plane_files(inv, pki_dir, connector.clone()).await?;
    }
    for node in nodes {
        let mut vars = base_vars(inv, scenario, &node);
        if action == Action::Break
            && matches!(
                scenario.input,
                Input::ExpiredServerCert
                    | Input::ServerCertWithoutAddress
                    | Input::KubeletCertWithoutAddress
            )
        {
            vars.push((
                "INPUT_PEM",
                base64_of(&faulty_cert(inv, pki_dir, &node, scenario.input)?),
            ));
        }
        let body = match action {
            Action::Break => format!(
                "if [ -e \"$SAVE/broken\" ]; then echo \"{ALREADY_BROKEN}\"; exit 0; fi\n{}touch \"$SAVE/broken\"\n",
                scenario.break_script
            ),
            // Only what was broken is fixed: a second fix restarts nothing.
            Action::Fix => format!(
                "if [ ! -e \"$SAVE/broken\" ]; then echo \"{NOT_BROKEN}\"; exit 0; fi\n{}rm -rf \"$SAVE\"\n",
                scenario.fix_script
            ),
        };
        let mut script: String = vars
            .iter()
            .map(|(k, v)| format!("{k}={}\n", quote(v)))
            .collect();
        script.push_str(scenarios::PRELUDE);
        script.push_str(&body);

        let (connector, on) = (connector.clone(), node.clone());
        let out = tokio::task::spawn_blocking(move || {
            connector.connect(&on)?.lab_fault(scenario.name, &script)
        })
        .await
        .expect("the ssh task panicked")?;
        let said = out.stdout.lines().last().unwrap_or_default().trim();
        report.changed |= out.status == 0 && ![ALREADY_BROKEN, NOT_BROKEN].contains(&said);
        if out.status != 0 {
            let said = format!("{}{}", out.stdout, out.stderr);
            let verb = action.verb();
            return Err(ClassError::Lab {
                name: inv.cluster.name.clone(),
                reason: format!(
                    "{verb} {} on {} failed (exit {}): {}",
                    scenario.name,
                    node.name,
                    out.status,
                    said.trim()
                ),
            });
        }
    }
    Ok(report)
}

/// The variables every script gets.
fn base_vars(inv: &Inventory, scenario: &Scenario, node: &Node) -> Vec<(&'static str, String)> {
    let path = |p: &str| p.to_string();
    vec![
        ("SCENARIO", scenario.name.to_string()),
        ("NODE", node.name.clone()),
        ("ADDR", node.address.to_string()),
        ("ETCD_CLIENT_PORT", Port::EtcdClient.number(inv).to_string()),
        ("ETCD_PEER_PORT", Port::EtcdPeer.number(inv).to_string()),
        ("API_PORT", Port::ApiServer.number(inv).to_string()),
        ("ETCD_CA", path("/etc/etcd/pki/ca.crt")),
        (
            "ETCD_CLIENT_CERT",
            path("/etc/etcd/pki/healthcheck-client.crt"),
        ),
        (
            "ETCD_CLIENT_KEY",
            path("/etc/etcd/pki/healthcheck-client.key"),
        ),
        ("KUBECTL", ComponentId::Kubectl.get().binary_path(inv)),
        (
            "ADMIN_KUBECONFIG",
            render::path_of_kubeconfig("admin")
                .unwrap_or("/etc/kubernetes/admin.kubeconfig")
                .to_string(),
        ),
    ]
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The node's etcd server certificate (or, for the kubelet's input, its kubelet serving
/// certificate), re-signed by its CA for the node's own key, with one thing wrong: expired since
/// yesterday, or without the node's address.
fn faulty_cert(
    inv: &Inventory,
    pki_dir: &Path,
    node: &Node,
    input: Input,
) -> Result<String, ClassError> {
    let pki = pki::load(inv, pki_dir)?;
    let (name, ca) = match input {
        Input::KubeletCertWithoutAddress => (format!("kubelet-{}", node.name), CaId::Kubernetes),
        _ => (format!("etcd/server-{}", node.name), CaId::Etcd),
    };
    let leaf = pki.certs.get(&name).ok_or_else(|| ClassError::Lab {
        name: inv.cluster.name.clone(),
        reason: format!("{} has no {name}", pki_dir.display()),
    })?;
    let mut spec = pki::matrix(inv)
        .into_iter()
        .find(|s| s.name == name)
        .expect("the node's certificate is in the matrix");
    let ca = pki.ca(ca);
    let issue = |e: rcgen::Error| ClassError::Lab {
        name: inv.cluster.name.clone(),
        reason: format!("making the faulty certificate: {e}"),
    };
    let now = time::OffsetDateTime::now_utc();
    let (from, until) = match input {
        Input::ExpiredServerCert => (
            now - time::Duration::days(366),
            now - time::Duration::days(1),
        ),
        _ => {
            spec.sans.remove(&pki::San::Ip(node.address));
            (now, now + time::Duration::days(365))
        }
    };
    let key = KeyPair::from_pem(&leaf.key_pem).map_err(issue)?;
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(issue)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, &ca_key).map_err(issue)?;
    Ok(pki::issue_leaf(
        &spec,
        Some((leaf.key_pem.clone(), key)),
        inv.pki.algorithm,
        &issuer,
        from,
        until,
    )?
    .cert_pem)
}

/// The control-plane phase's files on every master, as deploy would place them (the binaries
/// too), without starting anything: the scenario's fix, not a deploy, says what runs.
async fn place_control_plane_files(
    inv: &Inventory,
    pki_dir: &Path,
    connector: Arc<dyn Connector>,
) -> Result<(), ClassError> {
    let rendered = crate::session::files(inv, &pki::load(inv, pki_dir)?, &[Phase::ControlPlane])?;
    let outcomes = deploy::push_files(inv, rendered, connector, &[Phase::ControlPlane], 8).await;
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| Some(format!("{}: {}", o.node, o.error.as_ref()?)))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(ClassError::Lab {
            name: inv.cluster.name.clone(),
            reason: format!("placing the control-plane files: {}", failed.join("; ")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_scenario_goes_to_a_node_of_its_kind_and_expects_its_check_there() {
        let inv = crate::inventory::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lab-etcd.toml"),
        )
        .unwrap();
        let s = scenarios::find("etcd-quota-full").unwrap();
        assert_eq!(pick_node(&inv, s, None).unwrap().name, "lab-m1");
        assert_eq!(pick_node(&inv, s, Some("lab-m3")).unwrap().name, "lab-m3");
        let e = pick_node(&inv, s, Some("lab-lb")).unwrap_err().to_string();
        assert!(
            e.contains("needs an etcd member; --node lab-lb is not"),
            "{e}"
        );
        assert_eq!(expectation(&inv, s, &inv.nodes[0]).host, "cluster");
        let lb = scenarios::find("haproxy-wrong-backend-port").unwrap();
        assert_eq!(pick_node(&inv, lb, None).unwrap().name, "lab-lb");
        let san = scenarios::find("cert-missing-san").unwrap();
        let x = expectation(&inv, san, &inv.nodes[1]);
        assert_eq!(
            (x.host.as_str(), x.check.as_str(), x.detail_names.as_str()),
            ("lab-m2", "cert etcd server", "IP:10.213.0.12")
        );
        assert!(
            scenario("nope")
                .unwrap_err()
                .to_string()
                .contains("etcd-stopped")
        );
    }

    #[test]
    fn a_fault_runs_through_the_remote_only_when_confirmed() {
        let f = crate::testing::Fixture::new();
        let s = scenarios::find("etcd-stopped").unwrap();
        let connector: Arc<dyn Connector> = f.fake.clone();
        let go = |dry_run, yes| {
            crate::testing::block_on(run(
                &f.inv,
                &f.pki_dir(),
                s,
                None,
                Action::Break,
                Confirm {
                    dry_run,
                    yes,
                    force: false,
                },
                connector.clone(),
            ))
        };
        let faults = || {
            f.fake
                .events()
                .into_iter()
                .filter(|e| e.what.starts_with("fault "))
                .map(|e| format!("{}: {}", e.node, e.what))
                .collect::<Vec<_>>()
        };
        let planned = go(true, false).unwrap();
        assert!(planned.dry_run && planned.steps.len() == 1, "{planned:?}");
        assert!(go(false, false).unwrap_err().to_string().contains("--yes"));
        assert!(
            faults().is_empty(),
            "a dry run or an unconfirmed break reached a node: {:?}",
            faults()
        );
        let fix = crate::testing::block_on(run(
            &f.inv,
            &f.pki_dir(),
            s,
            None,
            Action::Fix,
            Confirm {
                dry_run: false,
                yes: false,
                force: false,
            },
            connector.clone(),
        ));
        assert!(
            fix.unwrap_err().to_string().contains("fix etcd-stopped"),
            "a fix asks for --yes too"
        );
        assert!(
            faults().is_empty(),
            "a dry run or an unconfirmed break or fix reached a node: {:?}",
            faults()
        );
        let done = go(false, true).unwrap();
        assert!(done.changed);
        assert_eq!(faults(), [format!("{}: fault etcd-stopped", done.node)]);
    }

    #[test]
    fn faulty_certificates_have_exactly_their_fault() {
        let inv = crate::inventory::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lab-etcd.toml"),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (pki, _) = pki::generate(&inv, dir.path(), pki::GenerateOptions::default()).unwrap();
        let node = &inv.nodes[0];
        let good = pki::CertInfo::parse(&pki.cert("etcd/server-lab-m1").cert_pem).unwrap();
        let now = time::OffsetDateTime::now_utc();
        let expired = pki::CertInfo::parse(
            &faulty_cert(&inv, dir.path(), node, Input::ExpiredServerCert).unwrap(),
        )
        .unwrap();
        // Ended a day before it was made (a moment after `now`): past, whatever the clock's
        // sub-second part (`days_left` rounds toward zero, so compare the times themselves).
        assert!(
            expired.not_after < now && expired.not_after > now - time::Duration::days(2),
            "{}",
            expired.not_after
        );
        assert_eq!(expired.sans, good.sans);
        assert!(
            expired
                .matches_key(&pki.cert("etcd/server-lab-m1").key_pem)
                .unwrap(),
            "made for the node's own key"
        );
        let no_san = pki::CertInfo::parse(
            &faulty_cert(&inv, dir.path(), node, Input::ServerCertWithoutAddress).unwrap(),
        )
        .unwrap();
        let missing: Vec<_> = good.sans.difference(&no_san.sans).collect();
        assert_eq!(missing, [&pki::San::Ip(node.address)]);
        assert!(no_san.days_left(now) > 300);
    }
}
