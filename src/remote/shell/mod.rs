//! [`Remote`] as shell scripts over a [`Transport`]: each operation builds one script with
//! [`Script`], sends it in one round trip, and reads the answer with [`Sections`].
//!
//! Uploads are staged in a `.hardway-new` directory beside their targets (same file system, so
//! each `mv` is an atomic rename — a unit never reads half a file), all checked by one
//! `sha256sum -c` before any is moved, then given their mode and owner. Text goes through the
//! shell's printf builtin, so a host costs a fixed handful of processes however many files it
//! gets: per-file commands were most of a 50-host push (see the README's performance section).
//!
//! Here: the [`Transport`] trait and the operations; `install` builds the upload script,
//! `parse` reads the answers' formats, `local` is the transport that is this machine's `sh`.

mod install;
mod local;
mod parse;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use super::script::{Script, Sections, quote, quote_all};
use super::{
    Apply, Facts, FactsQuery, HostsBlock, ImportImages, KeyCheck, Output, Pairing, READ_LIMIT,
    Remote, RemoteError, RemoteFile, UnitInfo, UnitOps, Upload,
};
use crate::addons::Step as AddonStep;
use crate::runlog::RunLog;
use install::install_script;
pub use local::LocalShell;
use parse::{enabled_units, parse_ss, parse_stats, stat_sections, unit_states_of};

/// Carries scripts to a node and back: an SSH session, or this machine's own `sh`.
pub trait Transport: Send {
    /// Runs `script` with `sh -s` as root.
    fn run(&self, script: &str) -> Result<Output, RemoteError>;
    /// Runs a script that may say nothing for `quiet` (a wait with its own deadline): a
    /// transport that gives up on a silent node must wait longer than that.
    fn run_quiet(&self, script: &str, quiet: std::time::Duration) -> Result<Output, RemoteError> {
        let _ = quiet;
        self.run(script)
    }
    /// Sends `request` to a Unix socket on the node and returns the whole answer.
    fn socket_request(&self, socket: &str, request: &[u8]) -> Result<String, RemoteError>;
}

/// The scripts' side of [`Remote`], over any transport.
pub struct ShellRemote<T: Transport> {
    node: String,
    transport: T,
    log: Option<Arc<RunLog>>,
}

impl<T: Transport> ShellRemote<T> {
    pub fn new(node: impl Into<String>, transport: T) -> ShellRemote<T> {
        ShellRemote {
            node: node.into(),
            transport,
            log: None,
        }
    }

    /// Logs every script (redacted) and what it returned.
    pub fn with_log(mut self, log: Option<Arc<RunLog>>) -> ShellRemote<T> {
        self.log = log;
        self
    }

    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// Runs a script, and logs it as [`Script::redacted`] shows it.
    fn exec(&self, script: &Script) -> Result<Output, RemoteError> {
        self.exec_quiet(script, None)
    }

    /// [`Self::exec`] of a script that may be silent for `quiet`.
    fn exec_quiet(
        &self,
        script: &Script,
        quiet: Option<std::time::Duration>,
    ) -> Result<Output, RemoteError> {
        let t = std::time::Instant::now();
        let out = match quiet {
            Some(q) => self.transport.run_quiet(script.text(), q),
            None => self.transport.run(script.text()),
        };
        if let Some(log) = &self.log {
            match &out {
                Ok(o) => log.remote(
                    &self.node,
                    script.redacted(),
                    Some(o.status),
                    &o.stdout,
                    &o.stderr,
                    t.elapsed(),
                ),
                Err(e) => log.remote(
                    &self.node,
                    script.redacted(),
                    None,
                    "",
                    &e.to_string(),
                    t.elapsed(),
                ),
            }
        }
        out
    }

    /// Runs a script that must succeed; its failure becomes `op`'s error with the node's stderr.
    fn run_ok(&self, op: &'static str, script: &Script) -> Result<Output, RemoteError> {
        let out = self.exec(script)?;
        if !out.ok() {
            return Err(RemoteError::failed(
                op,
                format!("exit {}: {}", out.status, out.stderr.trim()),
            ));
        }
        Ok(out)
    }
}

/// The size in bytes of the regular file `q` (quoted), nothing when there is none.
fn size_of(q: &str) -> String {
    format!("[ -f {q} ] && wc -c < {q} 2>/dev/null; true")
}

/// The first of `paths` whose `size:<i>` section says it is larger than [`READ_LIMIT`].
fn too_large(sec: &Sections, paths: &[String]) -> Result<(), RemoteError> {
    for (i, p) in paths.iter().enumerate() {
        if let Some(size) = sec
            .first(&format!("size:{i}"))
            .and_then(|s| s.trim().parse::<u64>().ok())
            && size > READ_LIMIT
        {
            return Err(RemoteError::TooLarge {
                path: p.clone(),
                size: Some(size),
                limit: READ_LIMIT,
            });
        }
    }
    Ok(())
}

fn unit_file(unit: &str) -> String {
    format!("{unit}.service")
}

/// Fails the script (exit 3) naming the path when kubectl is not on the node.
fn require_kubectl(kubectl: &str) -> String {
    let k = quote(kubectl);
    format!(
        "[ -x {k} ] || {{ printf 'kubectl is not at %s (the addons phase places it)\\n' {k} >&2; exit 3; }}"
    )
}

/// `apply` (a script line) run only when `kubectl diff` finds the manifest differs from what
/// the API server holds, or cannot tell; else the manifest is reported `unchanged`.
fn unless_unchanged(kubectl: &str, manifest: &str, apply: &str) -> String {
    let m = quote(manifest);
    format!("if {kubectl} diff -f {m} >/dev/null 2>&1; then echo {m}: unchanged; else {apply}; fi")
}

impl<T: Transport> Remote for ShellRemote<T> {
    fn node(&self) -> &str {
        &self.node
    }

    fn move_aside(&self, path: &str, suffix: &str) -> Result<Option<String>, RemoteError> {
        let (p, to) = (quote(path), quote(&format!("{path}.{suffix}")));
        let mut s = Script::strict();
        // Never onto something that exists: a second move gets a number.
        s.raw(&format!(
            "if [ -e {p} ] || [ -L {p} ]; then t={to}; n=1; while [ -e \"$t\" ]; do t={to}.$n; n=$((n+1)); done; mv -- {p} \"$t\"; echo \"$t\"; fi"
        ));
        let out = self.run_ok("moving aside", &s)?;
        Ok(out.stdout.lines().next().map(str::to_string))
    }

    fn remove_paths(&self, paths: &[String]) -> Result<(), RemoteError> {
        if paths.is_empty() {
            return Ok(());
        }
        let mut s = Script::strict();
        s.raw(&format!(
            "rm -rf --one-file-system -- {}",
            quote_all(paths.iter().map(String::as_str))
        ));
        self.run_ok("removing files", &s).map(|_| ())
    }

    fn install_packages(&self, packages: &[String]) -> Result<Vec<String>, RemoteError> {
        if packages.is_empty() {
            return Ok(Vec::new());
        }
        let pkgs = quote_all(packages.iter().map(String::as_str));
        let mut s = Script::strict();
        s.raw("command -v apt-get >/dev/null || { echo 'no apt-get on this node (install = \"apt\" needs Debian or Ubuntu)' >&2; exit 3; }");
        s.raw("installed() { dpkg-query -W -f='${Status}' \"$1\" 2>/dev/null | grep -q 'ok installed'; }");
        s.raw(&format!("before=''; for p in {pkgs}; do if installed \"$p\"; then before=\"$before $p \"; fi; done"));
        s.raw("export DEBIAN_FRONTEND=noninteractive");
        // Its output goes to stderr, which a failure's error carries.
        s.raw("apt-get update -q >&2");
        s.raw(&format!(
            "apt-get install -y -q --no-install-recommends {pkgs} >&2"
        ));
        let sec = s.section("installed");
        sec.raw(&format!(
            "for p in {pkgs}; do case \"$before\" in *\" $p \"*) ;; *) installed \"$p\" && echo \"$p\";; esac; done"
        ));
        let out = self.run_ok("installing packages with apt", &s)?;
        Ok(Sections::parse(&out.stdout)
            .lines("installed")
            .iter()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect())
    }

    fn package_candidates(
        &self,
        packages: &[String],
        refresh: bool,
    ) -> Result<BTreeMap<String, Option<String>>, RemoteError> {
        let mut s = Script::strict();
        s.raw("command -v apt-cache >/dev/null || { echo 'no apt-cache on this node (install = \"apt\" needs Debian or Ubuntu)' >&2; exit 3; }");
        if refresh {
            s.raw("DEBIAN_FRONTEND=noninteractive apt-get update -q >&2");
        }
        for (i, p) in packages.iter().enumerate() {
            // `Candidate: (none)` where no source has it.
            s.section(&format!("candidate:{i}")).raw(&format!(
                "LC_ALL=C apt-cache policy {} | sed -n 's/^ *Candidate: //p'",
                quote(p)
            ));
        }
        let out = self.run_ok("asking apt for package versions", &s)?;
        let sec = Sections::parse(&out.stdout);
        Ok(packages
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let c = sec
                    .first(&format!("candidate:{i}"))
                    .map(str::trim)
                    .filter(|c| !c.is_empty() && *c != "(none)")
                    .map(str::to_string);
                (p.clone(), c)
            })
            .collect())
    }

    fn remove_pods(&self, crictl: &str, socket: &str) -> Result<usize, RemoteError> {
        let (crictl, socket) = (quote(crictl), quote(socket));
        let mut s = Script::strict();
        let sec = s.section("pods");
        sec.raw(&format!(
            "if [ -x {crictl} ] && [ -S {socket} ]; then \
               c() {{ {crictl} --runtime-endpoint \"unix://\"{socket} --timeout 60s \"$@\"; }}; \
               c pods -q | wc -l; c rmp --all --force >&2; \
             else echo 0; fi"
        ));
        let out = self.run_ok("removing the node's pods with crictl", &s)?;
        Ok(Sections::parse(&out.stdout)
            .lines("pods")
            .first()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0))
    }

    fn lab_fault(&self, scenario: &str, script: &str) -> Result<Output, RemoteError> {
        let mut s = Script::new();
        s.raw(&format!("# hardway lab fault: {scenario}"));
        s.raw(script);
        self.exec(&s)
    }

    fn placed_files(&self) -> Result<Vec<String>, RemoteError> {
        Ok(self
            .read_config(super::PLACED)?
            .map(|t| {
                t.lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default())
    }

    fn restore_etcd(&self, r: &super::EtcdRestore<'_>) -> Result<(), RemoteError> {
        let args = format!(
            "snapshot restore {} --name {} --initial-cluster {} --initial-cluster-token {} --initial-advertise-peer-urls {} --data-dir {}",
            quote(r.snapshot),
            quote(r.name),
            quote(r.initial_cluster),
            quote(r.token),
            quote(r.peer_url),
            quote(r.data_dir)
        );
        let mut s = Script::strict();
        s.raw(&format!("export PATH=\"$PATH\":{}", quote(r.bin_dir)));
        s.raw(&format!("if [ -e {} ]; then echo 'the data dir is not empty: move it aside first' >&2; exit 1; fi", quote(r.data_dir)));
        // etcdutl since etcd 3.5; etcdctl's restore before it.
        // Where etcdutl knows it (3.5.16 and 3.6 here do), the revision is bumped past the snapshot's
        // and marked compacted: see `BUMP_REVISION`.
        let bump = format!("--bump-revision {} --mark-compacted", super::BUMP_REVISION);
        s.raw(&format!("if command -v etcdutl >/dev/null; then \
            if etcdutl snapshot restore --help 2>&1 | grep -q -- --bump-revision; then etcdutl {args} {bump}; else etcdutl {args}; fi; \
            else ETCDCTL_API=3 etcdctl {args}; fi"));
        self.run_ok("restoring the etcd snapshot", &s).map(|_| ())
    }

    fn snapshot_status(
        &self,
        snapshot: &str,
        bin_dir: &str,
    ) -> Result<Result<String, String>, RemoteError> {
        let f = quote(snapshot);
        let mut s = Script::new();
        s.raw(&format!("export PATH=\"$PATH\":{}", quote(bin_dir)));
        // etcdutl since etcd 3.5 (Debian's etcd-client has both); etcdctl's before it.
        s.raw(&format!(
            "if command -v etcdutl >/dev/null; then etcdutl snapshot status {f} -w json; \
             elif command -v etcdctl >/dev/null; then ETCDCTL_API=3 etcdctl snapshot status {f} -w json; \
             else echo 'neither etcdutl nor etcdctl is on the node (etcd-client)' >&2; exit 127; fi"
        ));
        let out = self.exec(&s)?;
        if !out.ok() {
            let why = out.stderr.trim();
            return Ok(Err(if why.is_empty() {
                format!("exit {}", out.status)
            } else {
                why.to_string()
            }));
        }
        // It opened the database and read it through: that is the check. The numbers are for
        // the report, when the tool gives them as JSON.
        let Ok(v) = serde_json::from_str::<serde_json::Value>(out.stdout.trim()) else {
            return Ok(Ok(out
                .stdout
                .trim()
                .lines()
                .next()
                .unwrap_or("ok")
                .to_string()));
        };
        let n = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
        Ok(Ok(format!(
            "revision {}, {} keys, {} bytes",
            n("revision"),
            n("totalKey"),
            n("totalSize")
        )))
    }

    fn move_back(&self, from: &str, to: &str) -> Result<(), RemoteError> {
        let (f, t) = (quote(from), quote(to));
        let mut s = Script::strict();
        s.raw(&format!("if [ -e {t} ] || [ -L {t} ]; then echo \"{to} exists: not moving {from} over it\" >&2; exit 1; fi"));
        s.raw(&format!("mv -T -- {f} {t}"));
        self.run_ok("moving back", &s).map(|_| ())
    }

    fn remove_hosts_block(&self, cluster: &str, target: &str) -> Result<(), RemoteError> {
        let (begin, end, t) = (
            quote(&format!("# BEGIN hardway {cluster}")),
            quote(&format!("# END hardway {cluster}")),
            quote(target),
        );
        let tmp = quote(&format!("{target}.hardway-tmp"));
        let mut s = Script::strict();
        s.raw(&format!("[ -f {t} ] || exit 0"));
        s.raw(&format!("grep -qxF {begin} {t} || exit 0"));
        s.raw(&format!("awk -v b={begin} -v e={end} '$0==b{{skip=1}} !skip{{print}} $0==e{{skip=0}}' {t} > {tmp}"));
        s.raw(&format!("chmod 644 {tmp}"));
        s.raw(&format!(
            "if grep -q \" $(realpath {t}) \" /proc/self/mountinfo 2>/dev/null; then cat {tmp} > {t}; rm -f {tmp}; else mv -f {tmp} {t}; fi"
        ));
        self.run_ok("updating the hosts file", &s).map(|_| ())
    }

    fn facts(&self, q: &FactsQuery) -> Result<Facts, RemoteError> {
        // A case pattern: quoted, so every character of the cluster name is literal.
        let begin = quote(&format!("# BEGIN hardway {}", q.hosts_block));
        let mut s = Script::new();
        s.section("systemd")
            .raw("if [ -d /run/systemd/system ]; then echo yes; else echo no; fi");
        s.section("time").raw("date +%s.%N");
        // Shell builtins where they do: every process counts on 50 hosts sharing two cores
        // (`scripts/bench`, the no-change push).
        s.section("swap").raw("if [ -r /proc/swaps ]; then { read -r _ && while IFS= read -r l; do echo \"$l\"; done; } < /proc/swaps; fi; true");
        let bins = quote_all(q.binaries.iter().map(String::as_str));
        s.section("bins").raw(&format!(
            "for b in {bins}; do [ -x \"$b\" ] && echo \"$b\"; done; true"
        ));
        // Each listener with the unit its process runs in (from /proc/PID/cgroup, with shell
        // builtins only: a fixed number of processes per host).
        s.section("listen").raw(
            "ss -Htlnp 2>/dev/null | while IFS= read -r l; do u=; case $l in *pid=*) p=${l#*pid=}; p=${p%%,*}; \
             while IFS= read -r c; do case $c in *.service) u=${c##*/};; esac; done 2>/dev/null < /proc/$p/cgroup;; esac; \
             echo \"$l unit=$u\"; done",
        );
        s.section("hosts").raw(&format!(
            "n=0; if [ -r /etc/hosts ]; then while IFS= read -r l; do case $l in {begin}) n=$((n + 1));; esac; done < /etc/hosts; fi; echo $n"
        ));
        stat_sections(&mut s, &q.paths);
        // One systemctl for all units (one line each, in order): a process per unit was most of
        // the no-change push's cost on 50 hosts.
        if !q.units.is_empty() {
            let files: Vec<String> = q.units.iter().map(|u| unit_file(u)).collect();
            s.section("states").raw(&format!(
                "systemctl is-active {} 2>/dev/null; true",
                quote_all(files.iter().map(String::as_str))
            ));
            s.section("enabled").raw(&format!(
                "systemctl is-enabled {} 2>/dev/null; true",
                quote_all(files.iter().map(String::as_str))
            ));
        }
        // render::key_hashes, on the node: only the hashes of the keys leave it.
        for (i, p) in q.fingerprints.iter().enumerate() {
            let p = quote(p);
            s.section(&format!("fp:{i}")).raw(&format!(
                "[ -f {p} ] && echo file && sed -n 's/^[[:space:]]*secret:[[:space:]]*//p' {p} | while IFS= read -r k; do \
                 [ -n \"$k\" ] && printf '%s' \"$k\" | sha256sum; done; true"
            ));
        }
        // cgroup v2 alone (unified): its root has cgroup.controllers; a hybrid or v1 host's
        // /sys/fs/cgroup is a tmpfs without it.
        s.section("cgroup")
            .raw("if [ -f /sys/fs/cgroup/cgroup.controllers ]; then echo cgroup2fs; fi; true");
        // Loaded (or built in), or there to load for the running kernel (any compression).
        s.section("brnf").raw(
            "if [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]; then echo yes; elif [ -r /proc/sys/kernel/osrelease ]; then read -r r < /proc/sys/kernel/osrelease; \
             for f in /lib/modules/$r/kernel/net/bridge/br_netfilter.ko*; do [ -e \"$f\" ] && echo yes && break; done; fi; true",
        );
        if !q.tools.is_empty() {
            let tools = quote_all(q.tools.iter().map(String::as_str));
            s.section("tools").raw(&format!(
                "for t in {tools}; do command -v \"$t\" >/dev/null 2>&1 && echo \"$t\"; done; true"
            ));
        }
        for (i, (bin, arg)) in q.versions.iter().enumerate() {
            let (b, run) = (
                quote(bin),
                format!("{} {} 2>&1 | head -n 1", quote(bin), quote(arg)),
            );
            let line = match &q.version_cache {
                None => format!("[ -x {b} ] && {run}; true"),
                // The cache file holds the key (inode, size, mtime: a replaced binary, by apt or
                // by hardway's rename, has a new inode) and the line.
                Some(dir) => {
                    let file = quote(&format!(
                        "{}/{}",
                        dir.trim_end_matches('/'),
                        bin.replace('/', "%")
                    ));
                    format!(
                        "if [ -x {b} ]; then k=$(stat -Lc '%i %s %Y' {b} 2>/dev/null) || k=; ck=; v=; \
                         if [ -n \"$k\" ] && [ -r {file} ]; then {{ read -r ck && read -r v; }} < {file} || true; [ \"$ck\" = \"$k\" ] || v=; fi; \
                         if [ -z \"$v\" ]; then v=$({run}); if [ -n \"$k\" ]; then (umask 022; mkdir -p {d}) && printf '%s\\n%s\\n' \"$k\" \"$v\" > {file}.tmp && mv -f {file}.tmp {file} || true; fi; fi; \
                         printf '%s\\n' \"$v\"; fi; true",
                        d = quote(dir)
                    )
                }
            };
            s.section(&format!("version:{i}")).raw(&line);
        }
        let t0 = super::unix_now();
        let out = self.run_ok("reading the node's state", &s)?;
        let t1 = super::unix_now();
        let sec = Sections::parse(&out.stdout);
        let remote_time: f64 = sec
            .first("time")
            .and_then(|t| t.parse().ok())
            .unwrap_or(f64::NAN);
        Ok(Facts {
            systemd: sec.first("systemd") == Some("yes"),
            clock_offset: remote_time - (t0 + t1) / 2.0,
            clock_uncertainty: (t1 - t0) / 2.0,
            swap_active: sec.lines("swap").iter().any(|l| !l.trim().is_empty()),
            present_binaries: sec.lines("bins").iter().cloned().collect(),
            listeners: sec
                .lines("listen")
                .iter()
                .filter_map(|l| parse_ss(l))
                .collect(),
            hosts_block: sec
                .first("hosts")
                .and_then(|n| n.parse::<u32>().ok())
                .unwrap_or(0)
                > 0,
            files: parse_stats(&sec),
            units: unit_states_of(&q.units, &sec),
            enabled: enabled_units(&q.units, &sec),
            cgroup2: sec.first("cgroup") == Some("cgroup2fs"),
            br_netfilter: sec.first("brnf") == Some("yes"),
            tools: sec.lines("tools").iter().cloned().collect(),
            versions: q
                .versions
                .iter()
                .enumerate()
                .filter_map(|(i, (bin, _))| {
                    Some((
                        bin.clone(),
                        sec.first(&format!("version:{i}"))
                            .filter(|l| !l.is_empty())?
                            .to_string(),
                    ))
                })
                .collect(),
            fingerprints: q
                .fingerprints
                .iter()
                .enumerate()
                .filter(|(i, _)| sec.first(&format!("fp:{i}")) == Some("file"))
                .map(|(i, p)| {
                    let hashes = sec
                        .lines(&format!("fp:{i}"))
                        .iter()
                        .skip(1)
                        .filter_map(|l| l.split_whitespace().next())
                        .map(str::to_string);
                    (p.clone(), hashes.collect())
                })
                .collect(),
        })
    }

    fn install_files(&self, uploads: &[Upload<'_>]) -> Result<(), RemoteError> {
        if uploads.is_empty() {
            return Ok(());
        }
        let script = install_script(uploads);
        self.run_ok("installing files", &script).map(|_| ())
    }

    fn merge_hosts_block(&self, b: &HostsBlock<'_>) -> Result<(), RemoteError> {
        let begin = quote(&format!("# BEGIN hardway {}", b.cluster));
        let end = quote(&format!("# END hardway {}", b.cluster));
        let (source, target) = (quote(b.source), quote(b.target));
        let tmp = quote(&format!("{}.hardway-tmp", b.target));
        let mut s = Script::strict();
        // A BEGIN without its END would make "skip to END" drop the rest of the file: refuse.
        let unpaired = quote(&format!(
            "{}: the hardway block's BEGIN and END lines do not pair up; fix the file by hand",
            b.target
        ));
        s.raw(&format!(
            "if [ -f {target} ] && [ \"$(grep -cxF {begin} {target})\" != \"$(grep -cxF {end} {target})\" ]; then \
             echo {unpaired} >&2; exit 1; fi"
        ));
        s.raw(&format!("touch {target}"));
        s.raw(&format!("awk -v b={begin} -v e={end} '$0==b{{skip=1}} !skip{{print}} $0==e{{skip=0}}' {target} > {tmp}"));
        s.raw(&format!("cat {source} >> {tmp}"));
        s.raw(&format!("chmod 644 {tmp}"));
        // rename(2) is atomic, but a bind-mounted hosts file (containers) cannot be replaced by
        // a rename: then it is rewritten in place.
        s.raw(&format!(
            "if grep -q \" $(realpath {target}) \" /proc/self/mountinfo 2>/dev/null; then cat {tmp} > {target}; rm -f {tmp}; \
             else mv -f {tmp} {target}; fi"
        ));
        self.run_ok("updating the hosts file", &s).map(|_| ())
    }

    fn systemctl(&self, ops: &UnitOps) -> Result<(), RemoteError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut s = Script::strict();
        for (verb, units) in [("stop", &ops.stop), ("disable", &ops.disable)] {
            if !units.is_empty() {
                let files: Vec<String> = units.iter().map(|u| unit_file(u)).collect();
                let mut words = vec!["systemctl", verb, "--quiet"];
                words.extend(files.iter().map(String::as_str));
                // A unit that is not there is already stopped and disabled.
                s.raw(&format!(
                    "{} 2>/dev/null || true",
                    quote_all(words.iter().copied())
                ));
            }
        }
        if ops.daemon_reload {
            s.cmd(&["systemctl", "daemon-reload"]);
        }
        let all: Vec<String> = ops
            .restart
            .iter()
            .chain(&ops.start)
            .map(|u| unit_file(u))
            .collect();
        let nb: &[&str] = if ops.no_block { &["--no-block"] } else { &[] };
        if !all.is_empty() {
            let words: Vec<&str> = ["systemctl", "enable", "--quiet"]
                .into_iter()
                .chain(all.iter().map(String::as_str))
                .collect();
            s.cmd(&words);
        }
        for (verb, units) in [
            ("restart", &ops.restart),
            ("start", &ops.start),
            ("reload", &ops.reload),
        ] {
            if !units.is_empty() {
                let files: Vec<String> = units.iter().map(|u| unit_file(u)).collect();
                let words: Vec<&str> = ["systemctl", verb]
                    .into_iter()
                    .chain(nb.iter().copied())
                    .chain(files.iter().map(String::as_str))
                    .collect();
                s.cmd(&words);
            }
        }
        let out = self.exec(&s)?;
        if !out.ok() {
            let units: Vec<String> = ops
                .restart
                .iter()
                .chain(&ops.start)
                .chain(&ops.reload)
                .cloned()
                .collect();
            let journal = self.journal_tail(&units, 15).unwrap_or_default();
            return Err(RemoteError::failed(
                "systemctl",
                format!("{}\n{journal}", out.stderr.trim()),
            ));
        }
        Ok(())
    }

    fn unit_states(&self, units: &[String]) -> Result<BTreeMap<String, String>, RemoteError> {
        if units.is_empty() {
            return Ok(BTreeMap::new());
        }
        let files: Vec<String> = units.iter().map(|u| unit_file(u)).collect();
        let mut s = Script::new();
        s.section("states").raw(&format!(
            "systemctl is-active {} 2>/dev/null; true",
            quote_all(files.iter().map(String::as_str))
        ));
        let out = self.exec(&s)?;
        Ok(unit_states_of(units, &Sections::parse(&out.stdout)))
    }

    fn journal_tail(&self, units: &[String], lines: u32) -> Result<String, RemoteError> {
        let mut s = Script::new();
        for u in units {
            s.raw(&format!("echo {}", quote(&format!("--- journal of {u}:"))));
            s.raw(&format!(
                "journalctl -u {} -n {lines} --no-pager -o cat 2>&1; true",
                quote(&unit_file(u))
            ));
        }
        Ok(self.exec(&s)?.stdout)
    }

    fn units(&self, units: &[String]) -> Result<BTreeMap<String, UnitInfo>, RemoteError> {
        let mut s = Script::new();
        for u in units {
            let q = quote(&unit_file(u));
            s.section(&format!("show:{u}")).raw(&format!(
                "systemctl show -p LoadState -p ActiveState -p UnitFileState {q} 2>/dev/null; true"
            ));
            s.section(&format!("cat:{u}")).raw(&format!(
                "systemctl cat {q} 2>/dev/null | head -c {}; true",
                READ_LIMIT + 1
            ));
        }
        let out = self.exec(&s)?;
        let sec = Sections::parse(&out.stdout);
        if let Some(u) = units
            .iter()
            .find(|u| sec.text(&format!("cat:{u}")).len() as u64 > READ_LIMIT)
        {
            return Err(RemoteError::TooLarge {
                path: format!("the unit {} (systemctl cat)", unit_file(u)),
                size: None,
                limit: READ_LIMIT,
            });
        }
        Ok(units
            .iter()
            .map(|u| {
                let props: BTreeMap<&str, &str> = sec
                    .lines(&format!("show:{u}"))
                    .iter()
                    .filter_map(|l| l.split_once('='))
                    .collect();
                let prop = |k: &str| props.get(k).copied().unwrap_or_default().to_string();
                let info = UnitInfo {
                    load: prop("LoadState"),
                    active: prop("ActiveState"),
                    enabled: prop("UnitFileState"),
                    text: sec.text(&format!("cat:{u}")),
                };
                (u.clone(), info)
            })
            .collect())
    }

    fn read_certificates(
        &self,
        paths: &[String],
    ) -> Result<BTreeMap<String, Option<String>>, RemoteError> {
        let mut s = Script::new();
        for (i, p) in paths.iter().enumerate() {
            let q = quote(p);
            s.section(&format!("exists:{i}"))
                .raw(&format!("[ -f {q} ] && echo yes; true"));
            s.section(&format!("size:{i}")).raw(&size_of(&q));
            // Only the certificate blocks leave the node, whatever else the file holds; a
            // kubeconfig's are base64 in its certificate fields (its key field is never read).
            // A block is printed only once its END line is read, and a block holding anything
            // but base64 (another BEGIN or END: a key after a certificate cut short) is dropped:
            // a file without END lines gives nothing.
            let blocks = "awk '{ l = $0; sub(/\\r$/, \"\", l); sub(/^[ \\t]+/, \"\", l); sub(/[ \\t]+$/, \"\", l) } \
                          l == \"-----BEGIN CERTIFICATE-----\" { b = l ORS; inb = 1; next } \
                          inb && l == \"-----END CERTIFICATE-----\" { printf \"%s%s\\n\", b, l; inb = 0; b = \"\"; next } \
                          inb && l ~ /^[A-Za-z0-9+\\/=]*$/ { b = b l ORS; next } \
                          { inb = 0; b = \"\" }'";
            s.section(&format!("cert:{i}")).raw(&format!(
                "{{ head -c {READ_LIMIT} {q}; head -c {READ_LIMIT} {q} | sed -n -e 's/^[[:space:]]*certificate-authority-data:[[:space:]]*//p' \
                 -e 's/^[[:space:]]*client-certificate-data:[[:space:]]*//p' | \
                 while read -r v; do printf '%s' \"$v\" | base64 -d; echo; done; }} 2>/dev/null | {blocks}; true"
            ));
        }
        let out = self.exec(&s)?;
        let sec = Sections::parse(&out.stdout);
        too_large(&sec, paths)?;
        Ok(paths
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let found = sec.first(&format!("exists:{i}")) == Some("yes");
                (p.clone(), found.then(|| sec.text(&format!("cert:{i}"))))
            })
            .collect())
    }

    fn read_config(&self, path: &str) -> Result<Option<String>, RemoteError> {
        let q = quote(path);
        let mut s = Script::new();
        s.section("exists:0")
            .raw(&format!("[ -f {q} ] && echo yes; true"));
        s.section("size:0").raw(&size_of(&q));
        s.section("text")
            .raw(&format!("head -c {READ_LIMIT} {q} 2>/dev/null; true"));
        let out = self.exec(&s)?;
        let sec = Sections::parse(&out.stdout);
        too_large(&sec, &[path.to_string()])?;
        Ok((sec.first("exists:0") == Some("yes")).then(|| sec.text("text")))
    }

    fn read_masked(
        &self,
        paths: &[String],
    ) -> Result<BTreeMap<String, Option<String>>, RemoteError> {
        let fields = crate::render::SECRET_FIELDS.join("|");
        let public = crate::render::PUBLIC_PEM;
        // render::mask_secrets, in awk.
        let program = format!(
            "inb {{ if ($0 ~ /^-----END /) inb = 0; next }} \
             /^-----BEGIN / && $0 != \"{public}\" {{ l = $0; sub(/^-----BEGIN /, \"\", l); sub(/-----$/, \"\", l); print \"<\" l \" masked>\"; inb = 1; next }} \
             /^[ \t]*({fields}):[ \t]*[^ \t]/ {{ p = $0; sub(/:.*$/, \":\", p); print p \" <masked>\"; next }} \
             {{ print }}"
        );
        let mut s = Script::new();
        for (i, p) in paths.iter().enumerate() {
            let q = quote(p);
            s.section(&format!("exists:{i}"))
                .raw(&format!("[ -f {q} ] && echo yes; true"));
            s.section(&format!("size:{i}")).raw(&size_of(&q));
            s.section(&format!("text:{i}")).raw(&format!(
                "head -c {READ_LIMIT} {q} 2>/dev/null | awk {}; true",
                quote(&program)
            ));
        }
        let out = self.exec(&s)?;
        let sec = Sections::parse(&out.stdout);
        too_large(&sec, paths)?;
        Ok(paths
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (
                    p.clone(),
                    (sec.first(&format!("exists:{i}")) == Some("yes"))
                        .then(|| sec.text(&format!("text:{i}"))),
                )
            })
            .collect())
    }

    fn check_keys(&self, pairs: &[(String, String)]) -> Result<Vec<KeyCheck>, RemoteError> {
        let mut s = Script::new();
        for (i, (cert, key)) in pairs.iter().enumerate() {
            let (c, k) = (quote(cert), quote(key));
            s.section(&format!("keystat:{i}"))
                .raw(&format!("stat -c '%a %U' {k} 2>/dev/null; true"));
            s.section(&format!("pair:{i}")).raw(&format!(
                "if command -v openssl >/dev/null; then a=$(openssl x509 -in {c} -noout -pubkey 2>/dev/null | sha256sum); \
                 b=$(openssl pkey -in {k} -pubout 2>/dev/null | sha256sum); [ \"$a\" = \"$b\" ] && echo match || echo differ; \
                 else echo no-openssl; fi"
            ));
        }
        let out = self.exec(&s)?;
        let sec = Sections::parse(&out.stdout);
        Ok((0..pairs.len())
            .map(|i| {
                let mode_owner = sec.first(&format!("keystat:{i}")).and_then(|l| {
                    let (mode, user) = l.split_once(' ')?;
                    Some((u32::from_str_radix(mode, 8).ok()?, user.to_string()))
                });
                let pairing = match sec.first(&format!("pair:{i}")) {
                    Some("match") => Pairing::Match,
                    Some("no-openssl") => Pairing::NoOpenssl,
                    _ => Pairing::Differ,
                };
                KeyCheck {
                    mode_owner,
                    pairing,
                }
            })
            .collect())
    }

    fn stat_files(&self, paths: &[String]) -> Result<BTreeMap<String, RemoteFile>, RemoteError> {
        let mut s = Script::new();
        stat_sections(&mut s, paths);
        let out = self.exec(&s)?;
        Ok(parse_stats(&Sections::parse(&out.stdout)))
    }

    fn haproxy_check(&self, config: &str) -> Result<Result<(), String>, RemoteError> {
        let mut s = Script::new();
        s.section("check").raw(&format!(
            "haproxy -c -q -f {} 2>&1 && echo @@valid; true",
            quote(config)
        ));
        let out = self.exec(&s)?;
        let text = Sections::parse(&out.stdout).text("check");
        Ok(if text.lines().any(|l| l == "@@valid") {
            Ok(())
        } else {
            Err(text.trim().to_string())
        })
    }

    fn socket_request(&self, socket: &str, request: &[u8]) -> Result<String, RemoteError> {
        self.transport.socket_request(socket, request)
    }

    fn apply(&self, a: &Apply<'_>) -> Result<Vec<String>, RemoteError> {
        let (k, kc, t) = (quote(a.kubectl), quote(a.kubeconfig), a.timeout_secs);
        let kubectl = format!("{k} --kubeconfig {kc}");
        let mut s = Script::strict();
        // Else the wait below would blame the API server for a missing kubectl.
        s.raw(&require_kubectl(a.kubectl));
        s.raw(&format!("[ -r {kc} ] || {{ printf 'no kubeconfig at %s (the files phase places it)\\n' {kc} >&2; exit 3; }}"));
        s.raw(&format!(
            "i=0; until {kubectl} get --raw /readyz >/dev/null 2>&1; do i=$((i+1)); \
             [ $i -lt {t} ] || {{ echo 'the API server was not ready after {t} s' >&2; exit 1; }}; sleep 1; done"
        ));
        for (addon, step) in crate::addons::in_order(a.addons) {
            let fail = quote(&format!("addon {}: {} failed", addon.name, step.describe()));
            let line = match step {
                // `kubectl diff` first (exit 0: the API server would change nothing): apply
                // says `configured` for a patch that changes nothing too (a manifest's `100m`
                // against the stored `0.1`, a webhook's injected caBundle), so only a manifest
                // that differs, or that diff cannot judge (its CRDs not there yet), is applied.
                AddonStep::Apply(m) => unless_unchanged(
                    &kubectl,
                    m,
                    &format!(
                        "{kubectl} apply -f {} || {{ echo {fail} >&2; exit 1; }}",
                        quote(m)
                    ),
                ),
                // Until the webhook answers, apply fails with "failed calling webhook";
                // the last answer is printed when time runs out.
                AddonStep::ApplyUntilAccepted(m) => unless_unchanged(
                    &kubectl,
                    m,
                    &format!(
                        "i=0; until out=$({kubectl} apply -f {} 2>&1); do i=$((i+2)); \
                         [ $i -lt {t} ] || {{ echo \"$out\" >&2; echo {fail}: not accepted within {t} s >&2; exit 1; }}; sleep 2; done; echo \"$out\"",
                        quote(m)
                    ),
                ),
                AddonStep::Rollout { namespace, object } => format!(
                    "{kubectl} -n {} rollout status {} --timeout={t}s || {{ {kubectl} -n {} get pods -o wide >&2; echo {fail}: not ready within {t} s >&2; exit 1; }}",
                    quote(namespace),
                    quote(object),
                    quote(namespace)
                ),
                AddonStep::Available { object } => format!(
                    "{kubectl} wait --for=condition=Available {} --timeout={t}s || {{ {kubectl} get {} -o yaml >&2; echo {fail}: not Available within {t} s >&2; exit 1; }}",
                    quote(object),
                    quote(object)
                ),
            };
            s.raw(&line);
        }
        // Each wait may be silent for up to `t` seconds (kubectl prints when something changes).
        let out = self.exec_quiet(&s, Some(std::time::Duration::from_secs(u64::from(t))))?;
        if !out.ok() {
            return Err(RemoteError::failed(
                "applying addons",
                format!("exit {}: {}", out.status, out.stderr.trim()),
            ));
        }
        // kubectl apply says `<kind>/<name> created|configured|unchanged` per object.
        Ok(out
            .stdout
            .lines()
            .map(str::trim)
            .filter(|l| l.ends_with(" created") || l.ends_with(" configured"))
            .map(String::from)
            .collect())
    }

    fn import_images(&self, import: &ImportImages<'_>) -> Result<Vec<String>, RemoteError> {
        let ctr = quote(import.ctr);
        let mut s = Script::strict();
        // What containerd has, once; an archive is imported when one of its images is missing
        // (or it names none).
        s.raw(&format!("have=$({ctr} -n k8s.io images ls -q)"));
        s.raw("lacks() { [ $# -eq 0 ] && return 0; for r in \"$@\"; do printf '%s\\n' \"$have\" | grep -qxF -- \"$r\" || return 0; done; return 1; }");
        let sec = s.section("imported");
        for (t, refs) in &import.tarballs {
            let refs = quote_all(refs.iter().map(String::as_str));
            sec.raw(&format!(
                "if lacks {refs}; then {ctr} -n k8s.io images import {} >&2; echo {}; fi",
                quote(t),
                quote(t)
            ));
        }
        let out = self.run_ok("importing images into containerd", &s)?;
        Ok(Sections::parse(&out.stdout)
            .lines("imported")
            .iter()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect())
    }

    fn rewrite_secrets(&self, kubectl: &str, kubeconfig: &str) -> Result<usize, RemoteError> {
        let (k, c) = (quote(kubectl), quote(&format!("--kubeconfig={kubeconfig}")));
        let mut s = Script::strict();
        s.raw(&require_kubectl(kubectl));
        // The API answers, and lists the Secrets, before anything is rewritten.
        s.raw(&format!(
            "n=$({k} {c} get secrets --all-namespaces -o name | wc -l)"
        ));
        s.raw("out=$(mktemp)");
        // sh reports a pipeline's last status: replace's, which fails when get did, or on a
        // conflict with a Secret written meanwhile (the step is then run again).
        s.raw(&format!("if [ \"$n\" -gt 0 ]; then {k} {c} get secrets --all-namespaces -o json | {k} {c} replace -f - > \"$out\" || {{ rm -f \"$out\"; exit 1; }}; fi"));
        s.section("replaced")
            .raw("grep -c ' replaced$' \"$out\" || true; rm -f \"$out\"");
        let out = self.run_ok("rewriting the Secrets", &s)?;
        Ok(Sections::parse(&out.stdout)
            .first("replaced")
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0))
    }
}
