//! A freshly booted VM's clock, set from this machine's.
//!
//! The guest kernel reads the time from QEMU's RTC, which counts whole seconds, and the lab has
//! no route out to an NTP server: measured here, a TCG guest came up 1.3 s behind the host,
//! beyond the 1 s etcd tolerates between members (verify's `clock` check FAILs on it). A
//! nspawn machine shares the host's kernel clock and needs none of this.
//!
//! The offset is measured NTP-style over one ssh session that is already open (the node prints
//! its time for each line it reads; the sample with the shortest round trip wins, its error at
//! most half that round trip), then the node moves its own clock by that offset. Moving it
//! relative to its own reading makes the second session's start-up time (seconds under TCG)
//! irrelevant.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::super::error::{LabError, Result};
use super::super::layout::{Layout, NodeLayout};
use super::super::tools::{output_until, ssh_command};

/// Round trips measured per node.
const SAMPLES: usize = 5;
/// For each answer and for the whole adjustment: a stalled session must not hang `lab up`.
const TIMEOUT: Duration = Duration::from_secs(60);

fn failed(node: &NodeLayout, reason: impl Into<String>) -> LabError {
    LabError::Machine {
        node: node.name.clone(),
        reason: format!(
            "setting the VM's clock from this machine's: {}",
            reason.into()
        ),
    }
}

/// The node's clock minus this machine's, in seconds, and the measurement's uncertainty (half
/// the shortest round trip).
pub(super) fn offset(layout: &Layout, node: &NodeLayout) -> Result<(f64, f64)> {
    let mut ssh = ssh_command(&layout.key(), &layout.known_hosts(), node.address);
    ssh.args(["while read -r _; do date +%s.%N; done"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = ssh
        .spawn()
        .map_err(|e| failed(node, format!("cannot run ssh: {e}")))?;
    let (mut stdin, stdout) = (
        child.stdin.take().expect("piped"),
        child.stdout.take().expect("piped"),
    );
    let (tx, rx) = mpsc::channel();
    // The reader ends with the session, when stdin is closed below or ssh dies.
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send((line, crate::remote::unix_now())).is_err() {
                break;
            }
        }
    });
    let mut best: Option<(f64, f64)> = None;
    let mut result = Ok(());
    for _ in 0..SAMPLES {
        let sent = crate::remote::unix_now();
        if let Err(e) = stdin.write_all(b"t\n").and_then(|_| stdin.flush()) {
            result = Err(failed(node, format!("the ssh session ended: {e}")));
            break;
        }
        match rx.recv_timeout(TIMEOUT) {
            Ok((Ok(line), received)) => match line.trim().parse::<f64>() {
                Ok(theirs) => {
                    let half = (received - sent) / 2.0;
                    if best.is_none_or(|(_, h)| half < h) {
                        best = Some((theirs - (sent + received) / 2.0, half));
                    }
                }
                Err(_) => {
                    result = Err(failed(node, format!("`date +%s.%N` printed {line:?}")));
                    break;
                }
            },
            Ok((Err(e), _)) => {
                result = Err(failed(node, format!("reading the node's answer: {e}")));
                break;
            }
            Err(_) => {
                result = Err(failed(
                    node,
                    format!("no answer within {} s", TIMEOUT.as_secs()),
                ));
                break;
            }
        }
    }
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    result?;
    best.ok_or_else(|| failed(node, "no sample"))
}

/// Moves the node's clock by minus its offset to this machine's; returns the offset it had.
pub(super) fn sync(layout: &Layout, node: &NodeLayout) -> Result<f64> {
    let (offset, _) = offset(layout, node)?;
    let mut ssh = ssh_command(&layout.key(), &layout.known_hosts(), node.address);
    // The node subtracts the offset from its own time when the command runs; awk because the
    // guest's shell has no floating point.
    ssh.arg(format!("date -s \"@$(awk -v t=\"$(date +%s.%N)\" -v o={offset:.6} 'BEGIN {{ printf \"%.6f\", t - o }}')\" >/dev/null"));
    match output_until(&mut ssh, Instant::now() + TIMEOUT)? {
        Some(out) if out.status.success() => Ok(offset),
        Some(out) => Err(failed(
            node,
            format!(
                "`date -s` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        )),
        None => Err(failed(
            node,
            format!("`date -s` did not return within {} s", TIMEOUT.as_secs()),
        )),
    }
}
