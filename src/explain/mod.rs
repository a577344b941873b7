//! `hardway explain`: the commands a person would type to do what hardway does, for one
//! inventory, as a bash script that runs (`set -euo pipefail`): the PKI with openssl or cfssl
//! (config and SANs of every certificate), the kubeconfigs with `kubectl config`, and per deploy
//! phase and host the files staged, copied with scp and put in place over ssh, the units started
//! with systemctl, and the phase's health check (etcdctl, haproxy -c, kubectl).
//!
//! Nothing here is a second copy of hardway's knowledge: the certificates come from the PKI
//! matrix ([`crate::pki::matrix`]), the files from render's file table (`render::FILES`) and its
//! templates, the units, phases and binaries from [`crate::components`], the addons from
//! [`crate::addons`]. The walkthrough is tested by running it on a lab and verifying the result.
//!
//! - `certs`: the PKI section, for openssl or cfssl;
//! - `phases`: kubeconfigs, then each phase host by host;
//! - `tests`: the script against render's output for the same inventory.
//!
//! Keys are made on the operator's machine by the commands the script runs (umask 077); no key
//! material is ever part of the script, and none reaches a command line: the encryption key goes
//! into its config through a shell variable in a here-document.

mod certs;
mod phases;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::components::Phase;
use crate::inventory::{Inventory, Node, Sudo};
use crate::render::RenderError;

/// Which tool makes the certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tool {
    #[default]
    Openssl,
    /// cfssl and cfssljson, as kubernetes-the-hard-way v1 (and the seed's KVM walkthrough) do.
    Cfssl,
}

/// A part of the walkthrough: the PKI alone, or a deploy phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    /// Every CA, certificate and key of the inventory (`hardway pki generate`).
    Pki,
    Phase(Phase),
}

impl Part {
    /// `pki`, or a deploy phase's name (`etcd`, `lb`, …).
    pub fn parse(s: &str) -> Option<Part> {
        match s {
            "pki" => Some(Part::Pki),
            "preflight" => None,
            _ => Phase::parse(s).map(Part::Phase),
        }
    }

    /// The names `parse` accepts, for messages.
    pub fn names() -> Vec<&'static str> {
        std::iter::once("pki")
            .chain(
                Phase::ALL
                    .iter()
                    .filter(|p| **p != Phase::Preflight)
                    .map(|p| p.name()),
            )
            .collect()
    }
}

#[derive(Debug, Clone, Default)]
pub struct ExplainOptions {
    /// The parts to print; empty: all of them.
    pub parts: Vec<Part>,
    pub tool: Tool,
}

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("{what} contains the line {delimiter}, which ends its here-document in the script")]
    Delimiter {
        what: String,
        delimiter: &'static str,
    },
}

/// What the selected parts come to: the PKI in full, or the phases (`files` always runs with
/// any phase, as in `hardway deploy`).
pub(crate) struct Selection {
    pub full_pki: bool,
    pub phases: Vec<Phase>,
}

impl Selection {
    fn of(parts: &[Part]) -> Selection {
        let all = parts.is_empty();
        let mut phases: BTreeSet<Phase> = parts
            .iter()
            .filter_map(|p| match p {
                Part::Phase(ph) => Some(*ph),
                Part::Pki => None,
            })
            .collect();
        if all {
            phases.extend(
                Phase::ALL
                    .iter()
                    .copied()
                    .filter(|p| *p != Phase::Preflight),
            );
        }
        if !phases.is_empty() {
            phases.insert(Phase::Files);
        }
        Selection {
            full_pki: all || parts.contains(&Part::Pki),
            phases: phases.into_iter().collect(),
        }
    }
}

/// The walkthrough for `inv`: a bash script.
pub fn walkthrough(inv: &Inventory, opts: &ExplainOptions) -> Result<String, ExplainError> {
    let sel = Selection::of(&opts.parts);
    let mut s = Script::default();
    prelude(inv, &sel, opts.tool, &mut s);
    let plan = phases::Plan::new(inv, &sel)?;
    certs::section(inv, opts.tool, &plan.needs, &mut s)?;
    plan.write(inv, &mut s)?;
    s.section("Done");
    s.line("echo 'walkthrough finished: check it with `hardway verify`' >&2");
    Ok(s.text)
}

/// The script being written, with the few shapes every section uses.
#[derive(Default)]
pub(crate) struct Script {
    pub text: String,
}

/// Ends every here-document; a file containing this line could not be written by the script.
pub(crate) const EOF: &str = "HARDWAY_EOF";

impl Script {
    pub fn line(&mut self, l: impl AsRef<str>) {
        self.text.push_str(l.as_ref());
        self.text.push('\n');
    }

    pub fn blank(&mut self) {
        self.text.push('\n');
    }

    /// `# text`, wrapped lines each commented.
    pub fn comment(&mut self, text: impl AsRef<str>) {
        for l in text.as_ref().lines() {
            let _ = writeln!(self.text, "# {l}");
        }
    }

    pub fn section(&mut self, title: &str) {
        let _ = write!(
            self.text,
            "\n# {}\n# {title}\n# {}\n",
            "=".repeat(94),
            "=".repeat(94)
        );
    }

    /// `cat > path <<'EOF'`: the text as it is, nothing expanded.
    pub fn heredoc(&mut self, path: &str, text: &str, what: &str) -> Result<(), ExplainError> {
        if text.lines().any(|l| l == EOF) {
            return Err(ExplainError::Delimiter {
                what: what.to_string(),
                delimiter: EOF,
            });
        }
        let _ = write!(self.text, "cat > {} <<'{EOF}'\n{text}", quote(path));
        if !text.ends_with('\n') {
            self.text.push('\n');
        }
        self.line(EOF);
        Ok(())
    }

    /// `on_stdin NODE sh <<'EOF'`: a script run on the node, as root (`sudo`: the node's prefix).
    pub fn remote(
        &mut self,
        node: &str,
        sudo: &str,
        script: &str,
        what: &str,
    ) -> Result<(), ExplainError> {
        if script.lines().any(|l| l == EOF) {
            return Err(ExplainError::Delimiter {
                what: what.to_string(),
                delimiter: EOF,
            });
        }
        let _ = write!(
            self.text,
            "on_stdin {node} {sudo}sh <<'{EOF}'\n{script}\n{EOF}\n"
        );
        Ok(())
    }

    /// Like [`Script::heredoc`], with `${VAR}` in `text` expanded from the script's variables
    /// (everything else in it escaped, so it stays as it is).
    pub fn heredoc_with(
        &mut self,
        path: &str,
        text: &str,
        vars: &[(&str, &str)],
        what: &str,
    ) -> Result<(), ExplainError> {
        if text.lines().any(|l| l == EOF) {
            return Err(ExplainError::Delimiter {
                what: what.to_string(),
                delimiter: EOF,
            });
        }
        let mut body = text
            .replace('\\', "\\\\")
            .replace('$', "\\$")
            .replace('`', "\\`");
        for (placeholder, var) in vars {
            body = body.replace(placeholder, &format!("${{{var}}}"));
        }
        let _ = write!(self.text, "cat > {} <<{EOF}\n{body}", quote(path));
        if !body.ends_with('\n') {
            self.text.push('\n');
        }
        self.line(EOF);
        Ok(())
    }
}

/// A word for the shell: as it is when it is safe, else in single quotes.
pub(crate) fn quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:=,@%+-".contains(c));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// How commands on a node become root: the inventory's `ssh.sudo` for its user.
pub(crate) fn sudo(inv: &Inventory, node: &Node) -> &'static str {
    let user = node.user.as_deref().unwrap_or(&inv.ssh.user);
    match inv.ssh.sudo {
        Sudo::IfNotRoot if user == "root" => "",
        Sudo::IfNotRoot | Sudo::Always => "sudo -n ",
        // It asks for the password on the terminal ssh gives it (`ssh -t`).
        Sudo::WithPassword => "sudo ",
    }
}

/// A path the inventory names, as the script's shell should read it (`~/` is the home).
fn local_path(p: &std::path::Path) -> String {
    let s = p.display().to_string();
    match s.strip_prefix("~/") {
        Some(rest) => format!("\"$HOME\"/{}", quote(rest)),
        None => quote(&s),
    }
}

/// The header, strict mode, the working directory and how the nodes are reached.
fn prelude(inv: &Inventory, sel: &Selection, tool: Tool, s: &mut Script) {
    s.line("#!/usr/bin/env bash");
    let parts: Vec<&str> = sel
        .full_pki
        .then_some("pki")
        .into_iter()
        .chain(sel.phases.iter().map(|p| p.name()))
        .collect();
    s.comment(format!(
        "Kubernetes the hard way, by hand, for cluster {:?} ({}): {}.\n\
         Generated by `hardway explain` from hardway's own tables (the certificate matrix, the file\n\
         table, the components); it does what `hardway pki generate` and `hardway deploy` do, step by\n\
         step, and runs as it is. Certificates: {}. Run it on your machine, in an empty directory or\n\
         with WORKDIR set; what it made before (keys, certificates) is kept.",
        inv.cluster.name,
        inv.source.display(),
        parts.join(", "),
        match tool {
            Tool::Openssl => "openssl",
            Tool::Cfssl => "cfssl and cfssljson (Debian: golang-cfssl)",
        }
    ));
    s.line("set -euo pipefail");
    s.comment("Private keys are made here: readable by you alone.");
    s.line("umask 077");
    s.line("WORKDIR=${WORKDIR:-hardway-walkthrough}");
    s.line("mkdir -p \"$WORKDIR\" && cd \"$WORKDIR\"");
    s.line("mkdir -p pki kubeconfigs stage");
    s.blank();
    s.comment(
        "How this machine reaches the nodes (the inventory's [ssh]). Host keys must be known:\n\
         add them to the known_hosts file first (ssh-keyscan, checked against each node's console).",
    );
    let mut opts = vec![
        "-o BatchMode=yes".to_string(),
        "-o StrictHostKeyChecking=yes".to_string(),
    ];
    opts.push(format!(
        "-o UserKnownHostsFile={}",
        local_path(&inv.ssh.known_hosts)
    ));
    opts.push(format!(
        "-o ConnectTimeout={}",
        inv.ssh.connect_timeout_secs
    ));
    if let Some(id) = &inv.ssh.identity_file {
        opts.push(format!("-i {}", local_path(id)));
    }
    if let Some(b) = &inv.ssh.bastion {
        opts.push(format!(
            "-J {}",
            quote(&format!("{}@{}:{}", b.user, b.host, b.port))
        ));
    }
    s.line(format!("SSH_OPTS=({})", opts.join(" ")));
    let hosts: Vec<String> = inv
        .nodes
        .iter()
        .map(|n| {
            let user = n.user.as_deref().unwrap_or(&inv.ssh.user);
            let host = n
                .ssh_address
                .clone()
                .unwrap_or_else(|| n.address.to_string());
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host
            };
            format!("[{}]={}", n.name, quote(&format!("{user}@{host}")))
        })
        .collect();
    s.line(format!("declare -A HOST=({})", hosts.join(" ")));
    let ports: Vec<String> = inv
        .nodes
        .iter()
        .map(|n| format!("[{}]={}", n.name, n.ssh_port.unwrap_or(inv.ssh.port)))
        .collect();
    s.line(format!("declare -A PORT=({})", ports.join(" ")));
    s.comment("on NODE COMMAND: runs COMMAND on NODE over ssh; on_stdin NODE COMMAND: the same, with this\nscript's standard input (a here-document) as COMMAND's.");
    s.line("on() { local node=$1; shift; ssh -n \"${SSH_OPTS[@]}\" -p \"${PORT[$node]}\" \"${HOST[$node]}\" \"$@\"; }");
    s.line("on_stdin() { local node=$1; shift; ssh \"${SSH_OPTS[@]}\" -p \"${PORT[$node]}\" \"${HOST[$node]}\" \"$@\"; }");
    s.comment(
        "wait_for SECONDS WHAT COMMAND...: runs COMMAND until it succeeds; gives up after SECONDS.",
    );
    s.line("wait_for() {");
    s.line("  local secs=$1 what=$2; shift 2");
    s.line("  local deadline=$((SECONDS + secs))");
    s.line("  until \"$@\"; do");
    s.line("    if [ \"$SECONDS\" -ge \"$deadline\" ]; then echo \"not $what after $secs s\" >&2; return 1; fi");
    s.line("    sleep 2");
    s.line("  done");
    s.line("}");
}
