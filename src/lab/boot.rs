//! Waiting for a lab machine's boot and probing it, whichever driver started it: a machine is
//! ready when its sshd answers with the lab's key and its systemd has finished booting, as a
//! real machine is for `deploy`. A driver says how to find its machine's host process ([`Kind`]).

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use super::NodeStatus;
use super::error::{LabError, Result};
use super::files::tail;
use super::layout::{Layout, NodeLayout};
use super::tools::{output_until, ssh_command};

const POLL: Duration = Duration::from_millis(200);

pub(super) fn boot_error(node: &NodeLayout, reason: String) -> LabError {
    LabError::Boot {
        node: node.name.clone(),
        reason,
        console: node.console_log(),
        console_tail: tail(&node.console_log(), 20),
    }
}

pub(super) fn tcp_open(address: IpAddr, port: u16, timeout: Duration) -> bool {
    TcpStream::connect_timeout(&SocketAddr::new(address, port), timeout).is_ok()
}

/// What a machine is to the code that waits for and probes it, whichever driver started it.
pub(crate) struct Kind {
    /// The host process that is the machine (systemd-nspawn, QEMU), if running.
    pub pid_of: fn(&NodeLayout) -> Option<u32>,
    pub process: &'static str,
    /// How long a boot may take.
    pub boot_timeout: Duration,
}

/// Waits until the node answers ssh and its systemd has finished booting.
pub(super) fn wait_ready(
    kind: &Kind,
    layout: &Layout,
    node: &NodeLayout,
    deadline: Instant,
) -> Result<NodeStatus> {
    let mut last = String::from("TCP port 22 never answered");
    loop {
        let Some(pid) = (kind.pid_of)(node) else {
            return Err(boot_error(
                node,
                format!("{} exited while booting", kind.process),
            ));
        };
        if tcp_open(node.address, 22, Duration::from_millis(500)) {
            let mut ssh = ssh_command(&layout.key(), &layout.known_hosts(), node.address);
            ssh.args(["systemctl", "is-system-running", "--wait"]);
            match output_until(&mut ssh, deadline)? {
                None => last = "`systemctl is-system-running --wait` did not return".into(),
                Some(out) if out.status.code() == Some(255) => {
                    last = format!(
                        "ssh failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    )
                }
                Some(out) => {
                    let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
                    if state == "running" || state == "degraded" {
                        return Ok(NodeStatus {
                            name: node.name.clone(),
                            address: node.address,
                            running: true,
                            reachable: true,
                            system_state: Some(state),
                            pid: Some(pid),
                        });
                    }
                    return Err(LabError::Machine {
                        node: node.name.clone(),
                        reason: format!(
                            "booted into state {state:?}; `systemctl --failed` on the node says why"
                        ),
                    });
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(boot_error(
                node,
                format!("not ready after {} s: {last}", kind.boot_timeout.as_secs()),
            ));
        }
        thread::sleep(POLL);
    }
}

/// The node as `lab status` shows it: its machine's process, and whether it answers ssh.
pub(super) fn probe(
    kind: &Kind,
    layout: &Layout,
    node: &NodeLayout,
    bridge_is_ours: bool,
) -> NodeStatus {
    let pid = (kind.pid_of)(node);
    // Only addresses this lab is known to own are ever contacted.
    let reachable =
        pid.is_some() && bridge_is_ours && tcp_open(node.address, 22, Duration::from_secs(1));
    let system_state = if reachable && layout.key().is_file() {
        let mut ssh = ssh_command(&layout.key(), &layout.known_hosts(), node.address);
        ssh.args(["systemctl", "is-system-running"]);
        match output_until(&mut ssh, Instant::now() + Duration::from_secs(15)) {
            Ok(Some(out)) if out.status.code() != Some(255) => {
                Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
            }
            _ => None,
        }
    } else {
        None
    };
    NodeStatus {
        name: node.name.clone(),
        address: node.address,
        running: pid.is_some(),
        reachable,
        system_state,
        pid,
    }
}
