//! The fault scenarios of `hardway lab break`, as data: what each breaks, how (a shell script
//! run as root on the node), how `lab fix` undoes it, and which `hardway verify` check must
//! then FAIL with a hint naming the cause. The lab test breaks a healthy lab with every row
//! and holds verify to that column.
//!
//! Every script runs after [`PRELUDE`], which sets `set -eu`, the variables the runner passes
//! (`NODE`, `ADDR`, ports, the etcd client files, and the row's inputs) and helpers: `flag
//! UNIT NAME` reads `--NAME=` from the unit as systemd has it, `keep FILE` saves a file's
//! original once under `$SAVE` (`/var/lib/hardway/faults/<scenario>` on the node) and
//! `put_back FILE` moves it back. Breaking twice is a no-op (the runner checks `$SAVE/broken`);
//! fixing what is not broken puts nothing back and only makes sure the service runs.

use crate::components::Phase;

/// Which node a scenario breaks when `--node` is not given, and which it may break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// An etcd member (the first, by default).
    EtcdMember,
    /// The load balancer node.
    Lb,
    /// A master (the first, by default).
    Master,
    /// Every master (a leader-elected component must stop everywhere to stop).
    Masters,
    /// A worker (the first, by default).
    Worker,
}

/// What the runner prepares on the operator's side before the script runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    None,
    /// `INPUT_PEM`: the node's etcd server certificate re-signed by the etcd CA, for the
    /// same key, with a validity that ended yesterday.
    ExpiredServerCert,
    /// `INPUT_PEM`: the same, valid, without the node's address among its SANs.
    ServerCertWithoutAddress,
    /// The control-plane files hardway renders are placed on every master first (no unit is
    /// started: the lab may have no Kubernetes binaries), so there is an encryption config to differ.
    ControlPlaneFiles,
    /// `INPUT_PEM`: the node's kubelet serving certificate re-signed by the cluster CA, for the
    /// same key, without the node's address among its SANs.
    KubeletCertWithoutAddress,
}

/// Where verify reports the check a scenario must fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckOn {
    /// The broken node.
    Node,
    /// The load balancer node (whatever node was broken).
    Lb,
    /// Cluster-wide ([`verify::CLUSTER`](crate::verify::CLUSTER) in the report).
    Cluster,
}

/// One fault scenario.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub name: &'static str,
    /// What it breaks (for `--list`).
    pub breaks: &'static str,
    /// How it breaks it, and how `fix` undoes it (what `--dry-run` says).
    pub how: &'static str,
    pub fix_how: &'static str,
    pub target: Target,
    pub input: Input,
    pub break_script: &'static str,
    pub fix_script: &'static str,
    /// The verify check that must FAIL, and where.
    pub check: &'static str,
    pub check_on: CheckOn,
    /// What that check's hint must name; `{port}`-style placeholders are not used here.
    pub hint_names: &'static str,
    /// What its detail must name (`{node}` and `{addr}` stand for the broken node's).
    pub detail_names: &'static str,
    /// The phase the lab must have been deployed to: `Lb` for etcd and HAProxy, `Addons` for a
    /// running Kubernetes.
    pub needs: Phase,
}

/// Set before every script; the runner prepends the variables.
pub const PRELUDE: &str = r#"set -eu
umask 077
SAVE="/var/lib/hardway/faults/$SCENARIO"
mkdir -p "$SAVE"
flag() { systemctl cat "$1" 2>/dev/null | tr ' \t\\' '\n\n\n' | sed -n "s/^--$2=//p" | tail -n 1; }
saved() { printf '%s/%s' "$SAVE" "$(printf %s "$1" | tr / %)"; }
keep() { [ -e "$(saved "$1")" ] || cp -a "$1" "$(saved "$1")"; }
put_back() { if [ -e "$(saved "$1")" ]; then mv -f "$(saved "$1")" "$1"; fi; }
# Lessons restart etcd often: systemd's start rate limit must not turn a fault into another.
restart() { systemctl reset-failed "$1" 2>/dev/null || true; systemctl restart "$1"; }
# Moves the clock by $1 seconds from where it is, to the microsecond (the shell has integers only).
move_clock() { date -s "@$(awk -v t="$(date +%s.%N)" -v d="$1" 'BEGIN { printf "%.6f", t + d }')" >/dev/null; }
ec() { etcdctl --endpoints="https://$ADDR:$ETCD_CLIENT_PORT" --cacert="$ETCD_CA" --cert="$ETCD_CLIENT_CERT" --key="$ETCD_CLIENT_KEY" "$@"; }
# kubectl as the cluster admin, on a master (the Kubernetes scenarios).
kc() {
  [ -x "$KUBECTL" ] || { echo "$NODE has no $KUBECTL: this scenario needs a running Kubernetes (hardway deploy, every phase)"; exit 3; }
  "$KUBECTL" --kubeconfig "$ADMIN_KUBECONFIG" "$@"
}
# Scales a Deployment to zero, keeping its replicas to scale it back.
scale_down() { [ -e "$SAVE/$2.replicas" ] || kc -n "$1" get deployment "$2" -o 'jsonpath={.spec.replicas}' > "$SAVE/$2.replicas"; kc -n "$1" scale deployment "$2" --replicas=0 >/dev/null; }
scale_back() { n=2; [ -e "$SAVE/$2.replicas" ] && n=$(cat "$SAVE/$2.replicas"); kc -n "$1" scale deployment "$2" --replicas="$n" >/dev/null; }
"#;

/// Replaces the etcd server certificate with `INPUT_PEM` (same mode), and restarts etcd.
const SWAP_SERVER_CERT: &str = r#"CERT=$(flag etcd cert-file)
keep "$CERT"
printf %s "$INPUT_PEM" | base64 -d > "$CERT.hardway-fault"
chmod --reference="$CERT" "$CERT.hardway-fault"
mv -f "$CERT.hardway-fault" "$CERT"
restart etcd
"#;

const PUT_BACK_SERVER_CERT: &str = r#"put_back "$(flag etcd cert-file)"
restart etcd
"#;

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "etcd-stopped",
        breaks: "an etcd member is down",
        how: "systemctl stop etcd",
        fix_how: "systemctl start etcd",
        target: Target::EtcdMember,
        input: Input::None,
        break_script: "systemctl stop etcd\n",
        fix_script: "restart etcd\n",
        check: "unit etcd",
        check_on: CheckOn::Node,
        hint_names: "systemctl restart etcd",
        detail_names: "inactive",
        needs: Phase::Lb,
    },
    Scenario {
        name: "etcd-wrong-initial-cluster",
        breaks: "an etcd member rebuilt with a wrong --initial-cluster",
        how: "stop etcd, give the node's own entry of ETCD_INITIAL_CLUSTER (/etc/etcd/etcd.env) peer port 2390, move its data dir aside, start etcd (which fails)",
        fix_how: "stop etcd, put etcd.env and the data dir back, start etcd",
        target: Target::EtcdMember,
        input: Input::None,
        break_script: r#"ENV=/etc/etcd/etcd.env
DATA=$(flag etcd data-dir)
systemctl stop etcd
keep "$ENV"
sed -i "/^ETCD_INITIAL_CLUSTER=/s#\([=,]$NODE=https://[^,]*\):$ETCD_PEER_PORT#\1:2390#" "$ENV"
grep -q "[=,]$NODE=https://[^,]*:2390" "$ENV" || { echo "no entry for $NODE in ETCD_INITIAL_CLUSTER of $ENV"; exit 1; }
mv "${DATA:-/var/lib/etcd}" "$SAVE/data"
systemctl reset-failed etcd 2>/dev/null || true
systemctl start etcd >/dev/null 2>&1 || true
"#,
        fix_script: r#"DATA=$(flag etcd data-dir)
DATA=${DATA:-/var/lib/etcd}
systemctl stop etcd
put_back /etc/etcd/etcd.env
# What the failed start made of the data dir is the fault's, not the member's.
if [ -d "$SAVE/data" ]; then rm -rf "$DATA"; mv "$SAVE/data" "$DATA"; fi
restart etcd
"#,
        check: "etcd initial-cluster",
        check_on: CheckOn::Node,
        hint_names: "--initial-cluster",
        detail_names: "{node}=https://{addr}:2390",
        needs: Phase::Lb,
    },
    Scenario {
        name: "cert-expired",
        breaks: "etcd serves an expired certificate",
        how: "replace /etc/etcd/pki/server.crt with the same certificate (same key, same etcd CA) expired yesterday, restart etcd",
        fix_how: "put the original certificate back, restart etcd",
        target: Target::EtcdMember,
        input: Input::ExpiredServerCert,
        break_script: SWAP_SERVER_CERT,
        fix_script: PUT_BACK_SERVER_CERT,
        check: "cert etcd server",
        check_on: CheckOn::Node,
        hint_names: "renew",
        detail_names: "expired",
        needs: Phase::Lb,
    },
    Scenario {
        name: "cert-missing-san",
        breaks: "etcd's certificate lacks the node's address",
        how: "replace /etc/etcd/pki/server.crt with the same certificate without the node's IP SAN, restart etcd",
        fix_how: "put the original certificate back, restart etcd",
        target: Target::EtcdMember,
        input: Input::ServerCertWithoutAddress,
        break_script: SWAP_SERVER_CERT,
        fix_script: PUT_BACK_SERVER_CERT,
        check: "cert etcd server",
        check_on: CheckOn::Node,
        hint_names: "re-issue",
        detail_names: "IP:{addr}",
        needs: Phase::Lb,
    },
    Scenario {
        name: "key-world-readable",
        breaks: "etcd's private key is readable by everyone",
        how: "chmod 0644 the etcd server key",
        fix_how: "give the key its mode back",
        target: Target::EtcdMember,
        input: Input::None,
        break_script: r#"KEY=$(flag etcd key-file)
stat -c %a "$KEY" > "$SAVE/mode"
chmod 0644 "$KEY"
"#,
        fix_script: r#"KEY=$(flag etcd key-file)
if [ -f "$SAVE/mode" ]; then chmod "$(cat "$SAVE/mode")" "$KEY"; fi
"#,
        check: "cert etcd server",
        check_on: CheckOn::Node,
        hint_names: "chmod 600",
        detail_names: "644",
        needs: Phase::Lb,
    },
    Scenario {
        name: "etcd-wrong-ca",
        breaks: "etcd's unit points at a wrong CA file",
        how: "make another CA (ca-old.crt beside the etcd CA), point etcd's --trusted-ca-file at it, daemon-reload, restart etcd",
        fix_how: "put the unit back, remove ca-old.crt, daemon-reload, restart etcd",
        target: Target::EtcdMember,
        input: Input::None,
        break_script: r#"UNIT=$(systemctl show -P FragmentPath etcd)
CA=$(flag etcd trusted-ca-file)
WRONG="$(dirname "$CA")/ca-old.crt"
keep "$UNIT"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null -subj /CN=etcd-ca -days 30 -out "$WRONG" 2>/dev/null
printf %s "$WRONG" > "$SAVE/wrong-ca"
sed -i "s#--trusted-ca-file=$CA\([[:space:]]\)#--trusted-ca-file=$WRONG\1#" "$UNIT"
systemctl daemon-reload
restart etcd
"#,
        fix_script: r#"put_back "$(systemctl show -P FragmentPath etcd)"
if [ -f "$SAVE/wrong-ca" ]; then rm -f "$(cat "$SAVE/wrong-ca")"; fi
systemctl daemon-reload
restart etcd
"#,
        check: "etcd CA files",
        check_on: CheckOn::Node,
        hint_names: "--trusted-ca-file",
        detail_names: "ca-old.crt",
        needs: Phase::Lb,
    },
    Scenario {
        name: "haproxy-wrong-backend-port",
        breaks: "HAProxy sends API traffic to the wrong port",
        how: "change every `server` line of haproxy.cfg from the API server port to 6444, reload HAProxy",
        fix_how: "put haproxy.cfg back, reload HAProxy",
        target: Target::Lb,
        input: Input::None,
        break_script: r#"CFG=/etc/haproxy/haproxy.cfg
keep "$CFG"
sed -i "/^[[:space:]]*server /s/:$API_PORT\([[:space:]]\|\$\)/:6444\1/" "$CFG"
grep -q "^[[:space:]]*server .*:6444" "$CFG" || { echo "no server line with port $API_PORT in $CFG"; exit 1; }
systemctl reload haproxy
"#,
        fix_script: r#"put_back /etc/haproxy/haproxy.cfg
systemctl reload-or-restart haproxy
"#,
        check: "haproxy backend port",
        check_on: CheckOn::Lb,
        hint_names: "wrong backend port",
        detail_names: ":6444",
        needs: Phase::Lb,
    },
    Scenario {
        name: "port-taken",
        breaks: "another process holds etcd's client port",
        how: "stop etcd, start socat listening on the etcd client port (a transient unit etcd-grpc-proxy, a name a real cluster could have), start etcd (which cannot bind)",
        fix_how: "stop etcd-grpc-proxy, start etcd",
        target: Target::EtcdMember,
        input: Input::None,
        break_script: r#"systemctl stop etcd
systemd-run --unit=etcd-grpc-proxy --description="etcd gRPC proxy" socat "TCP-LISTEN:$ETCD_CLIENT_PORT,reuseaddr,fork" SYSTEM:true
i=0
until ss -Hltn "sport = :$ETCD_CLIENT_PORT" | grep -q .; do
  i=$((i+1)); [ $i -lt 100 ] || { echo "socat did not listen on $ETCD_CLIENT_PORT"; exit 1; }; sleep 0.1
done
systemctl reset-failed etcd 2>/dev/null || true
systemctl start etcd >/dev/null 2>&1 || true
"#,
        fix_script: r#"systemctl stop etcd-grpc-proxy 2>/dev/null || true
systemctl reset-failed etcd-grpc-proxy 2>/dev/null || true
restart etcd
"#,
        check: "ports",
        check_on: CheckOn::Node,
        hint_names: "socat",
        detail_names: "port 2379",
        needs: Phase::Lb,
    },
    Scenario {
        name: "encryption-config-differs",
        breaks: "one master's encryption config has another key",
        how: "place the control-plane files on every master (no unit started), then give this master's encryption-config.yaml a new random key",
        fix_how: "put this master's encryption config back",
        target: Target::Master,
        input: Input::ControlPlaneFiles,
        break_script: r#"CFG=$(flag kube-apiserver encryption-provider-config)
CFG=${CFG:-/etc/kubernetes/encryption-config.yaml}
[ -f "$CFG" ] || { echo "$CFG is missing"; exit 1; }
keep "$CFG"
# The new key goes through a file (printf is the shell's own), never a command line.
printf 's#secret: .*#secret: %s#\n' "$(head -c 32 /dev/urandom | base64)" > "$SAVE/key.sed"
sed -i -f "$SAVE/key.sed" "$CFG"
rm -f "$SAVE/key.sed"
"#,
        fix_script: r#"CFG=$(flag kube-apiserver encryption-provider-config)
put_back "${CFG:-/etc/kubernetes/encryption-config.yaml}"
"#,
        check: "encryption config",
        check_on: CheckOn::Node,
        hint_names: "different keys",
        detail_names: "differs between masters",
        needs: Phase::Lb,
    },
    Scenario {
        name: "etcd-quota-full",
        breaks: "etcd's space quota is full: the NOSPACE alarm, writes refused",
        how: "lower this member's quota to 2 MiB (drop-in with ETCD_QUOTA_BACKEND_BYTES), restart it, write 256 KiB values through it until etcd raises NOSPACE",
        fix_how: "delete the values, compact, defragment, remove the drop-in, restart etcd, etcdctl alarm disarm",
        target: Target::EtcdMember,
        input: Input::None,
        break_script: r#"DROPIN=/etc/systemd/system/etcd.service.d/10-backend-quota.conf
mkdir -p "$(dirname "$DROPIN")"
printf '[Service]\nEnvironment=ETCD_QUOTA_BACKEND_BYTES=2097152\n' > "$DROPIN"
systemctl daemon-reload
restart etcd
head -c 262144 /dev/zero | tr '\0' x > "$SAVE/value"
i=0
while [ $i -lt 100 ]; do
  if ! out=$(ec put "/cache/blobs/$i" < "$SAVE/value" 2>&1); then
    case "$out" in *"database space exceeded"*) break ;; *) echo "$out"; exit 1 ;; esac
  fi
  i=$((i+1))
done
ec alarm list | grep -q NOSPACE || { echo "etcd raised no NOSPACE alarm after $i writes"; exit 1; }
"#,
        fix_script: r#"DROPIN=/etc/systemd/system/etcd.service.d/10-backend-quota.conf
ec del --prefix /cache/blobs/ >/dev/null
REV=$(ec endpoint status -w json | tr ',' '\n' | sed -n 's/.*"revision":\([0-9]*\).*/\1/p' | head -n 1)
ec compact "$REV" >/dev/null 2>&1 || true
ec defrag >/dev/null
rm -f "$DROPIN"
systemctl daemon-reload
restart etcd
ec alarm disarm >/dev/null
"#,
        check: "etcd alarms",
        check_on: CheckOn::Cluster,
        hint_names: "alarm disarm",
        detail_names: "NOSPACE",
        needs: Phase::Lb,
    },
    Scenario {
        name: "clock-skew",
        breaks: "a node's clock runs 90 s ahead (needs machines with their own clock: VMs)",
        how: "turn NTP off and move the clock 90 s ahead of where it was",
        fix_how: "move the clock 90 s back (relative, so the slow start of a session does not add skew), turn NTP back on",
        target: Target::EtcdMember,
        input: Input::None,
        break_script: r#"if systemd-detect-virt --container --quiet; then
  echo "$NODE is a container ($(systemd-detect-virt --container)) sharing its host's clock: clock skew needs machines with a clock of their own (VMs)"; exit 3
fi
timedatectl set-ntp false 2>/dev/null || true
move_clock 90
"#,
        // Relative to the node's own clock: setting it to this machine's time as sent would
        // leave it behind by however long the session took to start (seconds on a TCG VM).
        fix_script: r#"if [ -e "$SAVE/broken" ]; then move_clock -90; fi
timedatectl set-ntp true 2>/dev/null || true
"#,
        check: "clock",
        check_on: CheckOn::Node,
        hint_names: "clock skew",
        detail_names: "ahead of",
        needs: Phase::Lb,
    },
    Scenario {
        name: "kubelet-cert-no-ip",
        breaks: "the kubelet serves a certificate without its node's address: logs, exec and metrics fail",
        how: "replace the kubelet's serving certificate (tlsCertFile) with the same one (same key, same CA) without the node's IP SAN, restart the kubelet",
        fix_how: "put the original certificate back, restart the kubelet",
        target: Target::Worker,
        input: Input::KubeletCertWithoutAddress,
        break_script: r#"CFG=$(flag kubelet config)
CERT=$(sed -n 's/^tlsCertFile: *//p' "${CFG:-/var/lib/kubelet/kubelet-config.yaml}" | tr -d '"')
[ -n "$CERT" ] || { echo "the kubelet's config names no tlsCertFile"; exit 1; }
printf %s "$CERT" > "$SAVE/cert"
keep "$CERT"
printf %s "$INPUT_PEM" | base64 -d > "$CERT.hardway-fault"
chmod --reference="$CERT" "$CERT.hardway-fault"
mv -f "$CERT.hardway-fault" "$CERT"
restart kubelet
"#,
        fix_script: r#"if [ -f "$SAVE/cert" ]; then put_back "$(cat "$SAVE/cert")"; fi
restart kubelet
"#,
        check: "kubelet API",
        check_on: CheckOn::Node,
        hint_names: "serving certificate",
        detail_names: "{addr}",
        needs: Phase::Addons,
    },
    Scenario {
        name: "scheduler-stopped",
        breaks: "no kube-scheduler runs: new pods stay Pending",
        how: "systemctl stop kube-scheduler on every master",
        fix_how: "systemctl start kube-scheduler on every master",
        target: Target::Masters,
        input: Input::None,
        break_script: "systemctl stop kube-scheduler\n",
        fix_script: "restart kube-scheduler\n",
        check: "scheduler leader",
        check_on: CheckOn::Lb,
        hint_names: "systemctl start kube-scheduler",
        detail_names: "Pending",
        needs: Phase::Addons,
    },
    Scenario {
        name: "coredns-scaled-to-zero",
        breaks: "CoreDNS scaled to zero: names do not resolve in pods",
        how: "kubectl -n kube-system scale deployment coredns --replicas=0 (its replicas kept)",
        fix_how: "scale coredns back to its replicas",
        target: Target::Master,
        input: Input::None,
        break_script: "scale_down kube-system coredns\n",
        fix_script: "scale_back kube-system coredns\n",
        check: "cluster DNS",
        check_on: CheckOn::Lb,
        hint_names: "scale deployment coredns",
        detail_names: "no ready endpoints",
        needs: Phase::Addons,
    },
    Scenario {
        name: "metrics-server-unavailable",
        breaks: "metrics-server's APIService is unavailable: kubectl top fails",
        how: "kubectl -n kube-system scale deployment metrics-server --replicas=0 (its replicas kept)",
        fix_how: "scale metrics-server back to its replicas",
        target: Target::Master,
        input: Input::None,
        break_script: "scale_down kube-system metrics-server\n",
        fix_script: "scale_back kube-system metrics-server\n",
        check: "aggregated APIs",
        check_on: CheckOn::Lb,
        hint_names: "metrics-server",
        detail_names: "v1beta1.metrics.k8s.io",
        needs: Phase::Addons,
    },
];

/// The scenario called `name`.
pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_every_row_names_a_check_and_a_cause() {
        let mut names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), SCENARIOS.len());
        assert!(SCENARIOS.len() >= 10);
        for s in SCENARIOS {
            assert!(
                !s.check.is_empty() && !s.hint_names.is_empty() && !s.detail_names.is_empty(),
                "{}",
                s.name
            );
            assert!(
                !s.break_script.is_empty() && !s.fix_script.is_empty(),
                "{}",
                s.name
            );
        }
    }

    /// What a break leaves for the student to find (a unit, its description, a drop-in, an etcd
    /// key) does not say it is a fault: `systemctl status` showing `hardway-fault-port-taken`
    /// gives the lesson away.
    #[test]
    fn nothing_a_break_leaves_on_the_node_names_the_fault() {
        for s in SCENARIOS {
            for line in s.break_script.lines().filter(|l| {
                ["systemd-run", "DROPIN=", " put ", "--unit", "--description"]
                    .iter()
                    .any(|w| l.contains(w))
            }) {
                let lower = line.to_lowercase();
                assert!(
                    !["fault", "break", "hardway", s.name]
                        .iter()
                        .any(|w| lower.contains(w)),
                    "{}: {line}",
                    s.name
                );
            }
        }
    }

    /// Every script is valid sh (`sh -n`), with the prelude.
    #[test]
    fn scripts_parse() {
        for s in SCENARIOS {
            for script in [s.break_script, s.fix_script] {
                let text = format!("{PRELUDE}{script}");
                let out = std::process::Command::new("sh")
                    .args(["-n", "-c", &text])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}: {}",
                    s.name,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}
