//! `hardway pki generate` / `pki check`, validated with the real openssl.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use hardway::inventory;
use hardway::pki::{self, CaId};

fn openssl() -> Command {
    Command::new(require("openssl", "openssl"))
}

fn generate(inv: &Path, out: &Path, extra: &[&str]) -> String {
    ok(hardway()
        .args(["pki", "generate", "-i"])
        .arg(inv)
        .arg("--out")
        .arg(out)
        .args(extra))
}

/// Every file below the PKI dir with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    files_below(dir)
        .into_iter()
        .map(|f| (f.clone(), std::fs::read(dir.join(&f)).unwrap()))
        .collect()
}

fn ca_file(ca: CaId) -> &'static str {
    pki::CAS.iter().find(|c| c.id == ca).unwrap().file
}

fn subject(cert: &Path) -> String {
    ok(openssl()
        .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"])
        .arg(cert))
    .trim()
    .to_string()
}

fn pubkey_of_cert(cert: &Path) -> String {
    ok(openssl()
        .args(["x509", "-noout", "-pubkey", "-in"])
        .arg(cert))
}

fn pubkey_of_key(key: &Path) -> String {
    ok(openssl().args(["pkey", "-pubout", "-in"]).arg(key))
}

/// Whole days until a certificate's notAfter, read with x509-parser rather than hardway.
fn days_left(cert: &Path) -> i64 {
    let pem = std::fs::read(cert).unwrap();
    let (_, p) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let not_after = p.parse_x509().unwrap().validity().not_after.timestamp();
    (time::OffsetDateTime::from_unix_timestamp(not_after).unwrap()
        - time::OffsetDateTime::now_utc())
    .whole_days()
}

fn end_date(cert: &Path) -> String {
    ok(openssl()
        .args(["x509", "-noout", "-enddate", "-in"])
        .arg(cert))
    .trim()
    .to_string()
}

fn assert_names(msg: &str, file: impl AsRef<Path>) {
    let file = file.as_ref().to_string_lossy();
    assert!(msg.contains(&*file), "{msg:?} does not name {file}");
}

/// Asserts that `$result` failed with `PkiError::$variant` and that its message names every
/// file given; evaluates to the error.
macro_rules! assert_pki_err {
    ($result:expr, $variant:ident, [$($file:expr),+ $(,)?]) => {{
        let err = match $result {
            Ok(_) => panic!("expected PkiError::{}, got Ok", stringify!($variant)),
            Err(e) => e,
        };
        assert!(matches!(err, pki::PkiError::$variant { .. }), "expected PkiError::{}, got {err:?}", stringify!($variant));
        let msg = err.to_string();
        $( assert_names(&msg, $file); )+
        err
    }};
}

/// Asserts that `generate` refuses with `PkiError::$variant`, naming every file given, and
/// leaves the PKI directory as it was; evaluates to the error.
macro_rules! assert_refused {
    ($inv:expr, $out:expr, $variant:ident, [$($file:expr),+ $(,)?]) => {{
        let before = snapshot($out);
        let err = assert_pki_err!(try_generate($inv, $out), $variant, [$($file),+]);
        assert_eq!(before, snapshot($out), "a refused run changed the PKI");
        err
    }};
}

/// A temp dir, the PKI directory's path in it (not created), and the example inventory with
/// these validities (set directly: the inventory's own validator is not under test here).
fn with_validity(
    ca_days: u32,
    cert_days: u32,
) -> (tempfile::TempDir, PathBuf, inventory::Inventory) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    let mut inv = inventory::load(&example_inventory()).unwrap();
    inv.pki.ca_validity_days = ca_days;
    inv.pki.cert_validity_days = cert_days;
    (dir, out, inv)
}

/// The example inventory, loaded, and a PKI generated for it in a temp dir.
fn generated() -> (tempfile::TempDir, PathBuf, inventory::Inventory) {
    let (dir, out, inv) = with_validity(3650, 365);
    try_generate(&inv, &out).unwrap();
    (dir, out, inv)
}

fn try_generate(
    inv: &inventory::Inventory,
    out: &Path,
) -> Result<(pki::Pki, pki::Report), pki::PkiError> {
    pki::generate(inv, out, pki::GenerateOptions::default())
}

fn lib_generate(inv: &inventory::Inventory, out: &Path, force: bool) -> String {
    pki::generate(
        inv,
        out,
        pki::GenerateOptions {
            force,
            ..Default::default()
        },
    )
    .unwrap()
    .1
    .to_string()
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in files_below(from) {
        std::fs::create_dir_all(to.join(&f).parent().unwrap()).unwrap();
        std::fs::copy(from.join(&f), to.join(&f)).unwrap();
    }
}

#[test]
fn every_certificate_verifies_matches_its_key_and_has_its_sans() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    let report = generate(&example_inventory(), &out, &[]);
    assert!(report.contains("created   ca"), "{report}");
    assert!(
        !report.contains("PRIVATE KEY"),
        "a key was printed:\n{report}"
    );

    let inv = inventory::load(&example_inventory()).unwrap();
    let specs = pki::matrix(&inv);
    // 7-node seed cluster: admin, 3 kubelets, cm, scheduler, proxy, apiserver, kubelet-client,
    // haproxy health checks, 3 etcd servers, 3 peers, etcd client, healthcheck, front-proxy-client.
    assert_eq!(specs.len(), 19);

    for ca in pki::CAS {
        let crt = out.join(format!("{}.crt", ca.file));
        ok(openssl().args(["verify", "-CAfile"]).arg(&crt).arg(&crt));
        assert_eq!(
            mode(&out.join(format!("{}.key", ca.file))),
            0o600,
            "{} key mode",
            ca.file
        );
    }
    for spec in &specs {
        let crt = out.join(format!("{}.crt", spec.name));
        let key = out.join(format!("{}.key", spec.name));
        let ca = out.join(format!("{}.crt", ca_file(spec.ca)));
        let v = ok(openssl().args(["verify", "-CAfile"]).arg(&ca).arg(&crt));
        assert!(v.trim().ends_with(": OK"), "{v}");
        assert_eq!(
            pubkey_of_cert(&crt),
            pubkey_of_key(&key),
            "{} key does not match",
            spec.name
        );
        assert_eq!(mode(&key), 0o600, "{} key mode", spec.name);
        assert_eq!(mode(&crt), 0o644, "{} cert mode", spec.name);
        for san in &spec.sans {
            let (flag, value) = match san {
                pki::San::Ip(ip) => ("-checkip", ip.to_string()),
                pki::San::Dns(d) => ("-checkhost", d.clone()),
            };
            let o = ok(openssl()
                .args(["x509", "-noout", flag, &value, "-in"])
                .arg(&crt));
            assert!(
                o.contains("does match certificate"),
                "{}: {value}: {o}",
                spec.name
            );
        }
        let neg = ok(openssl()
            .args(["x509", "-noout", "-checkip", "203.0.113.9", "-in"])
            .arg(&crt));
        assert!(neg.contains("does NOT match"), "{}: {neg}", spec.name);
    }
    assert_eq!(mode(&out.join("sa.key")), 0o600);
    assert_eq!(mode(&out.join("encryption.key")), 0o600);
    assert_eq!(
        pubkey_of_key(&out.join("sa.key")),
        std::fs::read_to_string(out.join("sa.pub")).unwrap()
    );
}

#[test]
fn subjects_follow_the_node_authorizer_and_rbac_conventions() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    generate(&example_inventory(), &out, &[]);
    let cases = [
        ("admin", "subject=O=system:masters,CN=admin"),
        (
            "kubelet-kworker2",
            "subject=O=system:nodes,CN=system:node:kworker2",
        ),
        (
            "kube-proxy",
            "subject=O=system:node-proxier,CN=system:kube-proxy",
        ),
        (
            "kube-controller-manager",
            "subject=O=system:kube-controller-manager,CN=system:kube-controller-manager",
        ),
        (
            "kube-scheduler",
            "subject=O=system:kube-scheduler,CN=system:kube-scheduler",
        ),
        ("front-proxy-client", "subject=CN=front-proxy-client"),
        ("etcd/server-kmaster2", "subject=CN=kmaster2"),
        // Not in system:masters (which RBAC cannot restrict): the addons bind its user to the
        // kubelet API only.
        (
            "apiserver-kubelet-client",
            "subject=CN=kube-apiserver-kubelet-client",
        ),
    ];
    for (name, want) in cases {
        assert_eq!(subject(&out.join(format!("{name}.crt"))), want, "{name}");
    }
    let rbac =
        std::fs::read_to_string(repo().join("templates/apiserver-to-kubelet-rbac.yaml.tera"))
            .unwrap();
    assert!(
        rbac.contains("kind: User\n    name: kube-apiserver-kubelet-client"),
        "the RBAC binding must name the certificate's CN"
    );
    // The API server's SANs as the seed needs them: LB, masters, 127.0.0.1, first service IP.
    let api = out.join("apiserver.crt");
    for ip in [
        "192.168.96.7",
        "192.168.96.46",
        "192.168.96.47",
        "192.168.96.48",
        "127.0.0.1",
        "10.32.0.1",
    ] {
        let o = ok(openssl()
            .args(["x509", "-noout", "-checkip", ip, "-in"])
            .arg(&api));
        assert!(o.contains("does match"), "apiserver lacks {ip}");
    }
    for host in [
        "haproxy.systemv.local",
        "kubernetes.default.svc.cluster.local",
        "kmaster3.systemv.local",
    ] {
        let o = ok(openssl()
            .args(["x509", "-noout", "-checkhost", host, "-in"])
            .arg(&api));
        assert!(o.contains("does match"), "apiserver lacks {host}");
    }
    // Usages: kubelets serve and are clients; admin is a client only.
    let ext = ok(openssl()
        .args(["x509", "-noout", "-ext", "extendedKeyUsage", "-in"])
        .arg(out.join("kubelet-kworker1.crt")));
    assert!(
        ext.contains("TLS Web Server Authentication")
            && ext.contains("TLS Web Client Authentication"),
        "{ext}"
    );
    let ext = ok(openssl()
        .args(["x509", "-noout", "-ext", "extendedKeyUsage", "-in"])
        .arg(out.join("admin.crt")));
    assert!(!ext.contains("Server"), "{ext}");
}

#[test]
fn etcd_has_its_own_ca() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    generate(&example_inventory(), &out, &[]);
    let o = run(openssl()
        .args(["verify", "-CAfile"])
        .arg(out.join("ca.crt"))
        .arg(out.join("etcd/server-kmaster1.crt")));
    assert!(
        !o.status.success(),
        "an etcd certificate verified against the cluster CA"
    );
    let o = run(openssl()
        .args(["verify", "-CAfile"])
        .arg(out.join("etcd/ca.crt"))
        .arg(out.join("admin.crt")));
    assert!(
        !o.status.success(),
        "the admin certificate verified against the etcd CA"
    );
}

#[test]
fn rerun_keeps_everything_and_force_keeps_the_encryption_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    generate(&example_inventory(), &out, &[]);
    let first = snapshot(&out);
    let report = generate(&example_inventory(), &out, &[]);
    assert!(report.contains("0 created or re-issued"), "{report}");
    assert_eq!(first, snapshot(&out), "a second run changed files");

    let report = generate(&example_inventory(), &out, &["--force"]);
    assert!(report.contains("reissued  ca: --force"), "{report}");
    let forced = snapshot(&out);
    for (f, bytes) in &first {
        let name = f.to_string_lossy();
        if name == "encryption.key" || name == pki::CLUSTER_FILE {
            assert_eq!(&forced[f], bytes, "--force replaced {name}");
        } else {
            assert_ne!(&forced[f], bytes, "--force kept {name}");
        }
    }
    // And everything still chains to the new CA.
    ok(openssl()
        .args(["verify", "-CAfile"])
        .arg(out.join("ca.crt"))
        .arg(out.join("apiserver.crt")));
}

#[test]
fn a_new_san_reissues_only_that_certificate_and_keeps_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    generate(&example_inventory(), &out, &[]);
    let before = snapshot(&out);
    let changed = inventory_variant(
        dir.path(),
        "changed.toml",
        &[(
            "address = \"192.168.96.49\"\n",
            "address = \"192.168.96.49\"\nextra_sans = [\"kworker1.lab.example\", \"10.9.9.9\"]\n",
        )],
    );
    let report = generate(&changed, &out, &[]);
    assert!(
        report.contains(
            "reissued  kubelet-kworker1: SANs changed (+DNS:kworker1.lab.example +IP:10.9.9.9)"
        ),
        "{report}"
    );
    assert!(report.contains("1 created or re-issued"), "{report}");
    let after = snapshot(&out);
    for (f, bytes) in &before {
        if f == Path::new("kubelet-kworker1.crt") {
            assert_ne!(&after[f], bytes);
        } else {
            assert_eq!(&after[f], bytes, "{} changed", f.display());
        }
    }
    let crt = out.join("kubelet-kworker1.crt");
    ok(openssl()
        .args(["verify", "-CAfile"])
        .arg(out.join("ca.crt"))
        .arg(&crt));
    let o = ok(openssl()
        .args(["x509", "-noout", "-checkip", "10.9.9.9", "-in"])
        .arg(&crt));
    assert!(o.contains("does match"), "{o}");
}

#[test]
fn a_ca_without_its_key_is_an_error_that_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    generate(&example_inventory(), &out, &[]);
    std::fs::remove_file(out.join("ca.key")).unwrap();
    std::fs::remove_file(out.join("admin.crt")).unwrap();
    let before = snapshot(&out);
    let inv = inventory::load(&example_inventory()).unwrap();
    let err = assert_pki_err!(
        try_generate(&inv, &out),
        MissingKey,
        [out.join("ca.crt"), out.join("ca.key")]
    );
    assert!(err.to_string().contains("--force"), "{err}");
    // The command line says the same and fails.
    let o = run(hardway()
        .args(["pki", "generate", "-i"])
        .arg(example_inventory())
        .arg("--out")
        .arg(&out));
    assert!(!o.status.success());
    assert_names(&String::from_utf8_lossy(&o.stderr), out.join("ca.key"));
    assert_eq!(before, snapshot(&out), "a failed run changed the PKI");
}

#[test]
fn check_lists_every_certificate_and_flags_san_mismatches() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    generate(&example_inventory(), &out, &[]);
    let listing = ok(hardway()
        .args(["pki", "check", "-i"])
        .arg(example_inventory())
        .arg("--pki")
        .arg(&out));
    let inv = inventory::load(&example_inventory()).unwrap();
    for spec in pki::matrix(&inv) {
        assert!(
            listing.contains(&spec.name),
            "{} missing from:\n{listing}",
            spec.name
        );
    }
    assert!(
        listing.contains("22 certificates, 0 with problems"),
        "{listing}"
    );
    assert!(
        listing.contains("CN=system:node:kworker1,O=system:nodes"),
        "{listing}"
    );
    // Days left as computed from each certificate's notAfter, in the listing and in the rows.
    let rows = pki::check(&inv, &out).unwrap();
    assert_eq!(rows.len(), 22);
    for row in &rows {
        assert_eq!(
            row.days_left,
            days_left(&out.join(format!("{}.crt", row.name))),
            "{}",
            row.name
        );
    }
    let admin_days = days_left(&out.join("admin.crt")).to_string();
    let admin = listing
        .lines()
        .find(|l| l.starts_with("admin "))
        .expect("admin row");
    assert!(
        admin.split_whitespace().any(|t| t == admin_days),
        "{admin_days} days left not shown:\n{admin}"
    );

    // The inventory moves a master: the API server and that member's etcd certs no longer fit.
    let moved = inventory_variant(
        dir.path(),
        "moved.toml",
        &[("192.168.96.48", "192.168.96.58")],
    );
    let o = run(hardway()
        .args(["pki", "check", "-i"])
        .arg(&moved)
        .arg("--pki")
        .arg(&out));
    assert_eq!(o.status.code(), Some(1));
    let listing = String::from_utf8_lossy(&o.stdout);
    let bad: Vec<&str> = listing
        .lines()
        .filter(|l| l.contains("SANs changed"))
        .collect();
    assert_eq!(bad.len(), 3, "{listing}");
    assert!(
        bad.iter()
            .any(|l| l.starts_with("apiserver ")
                && l.contains("+IP:192.168.96.58 -IP:192.168.96.48")),
        "{listing}"
    );
    assert!(
        bad.iter().any(|l| l.starts_with("etcd/server-kmaster3")),
        "{listing}"
    );
}

#[test]
fn rsa_keys_work_too() {
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory_variant(
        dir.path(),
        "rsa.toml",
        &[("algorithm = \"ecdsa-p256\"", "algorithm = \"rsa-2048\"")],
    );
    let out = dir.path().join("pki");
    generate(&inv, &out, &[]);
    let text = ok(openssl()
        .args(["x509", "-noout", "-text", "-in"])
        .arg(out.join("apiserver.crt")));
    assert!(text.contains("Public-Key: (2048 bit)"), "{text}");
    ok(openssl()
        .args(["verify", "-CAfile"])
        .arg(out.join("ca.crt"))
        .arg(out.join("apiserver.crt")));
    // Switching the inventory back re-issues with ECDSA keys.
    let report = generate(&example_inventory(), &out, &[]);
    assert!(
        report.contains("reissued  admin: key is rsa-2048, inventory asks for ecdsa-p256"),
        "{report}"
    );
}

// ---------------------------------------------------------------------------------------------
// Failure modes: keys are never replaced without --force, every file is parsed, nothing leaks.

#[test]
fn a_ca_key_without_its_certificate_is_refused_and_kept() {
    let (_tmp, out, inv) = generated();
    std::fs::remove_file(out.join("ca.crt")).unwrap();
    let err = assert_refused!(
        &inv,
        &out,
        MissingCertificate,
        [out.join("ca.key"), out.join("ca.crt")]
    );
    assert!(err.to_string().contains("--force"), "{err}");
    // --force is the way out, and only then is it named as the reason.
    let report = lib_generate(&inv, &out, true);
    assert!(report.contains("reissued  ca: --force"), "{report}");
    ok(openssl()
        .args(["verify", "-CAfile"])
        .arg(out.join("ca.crt"))
        .arg(out.join("admin.crt")));
}

#[test]
fn sa_pub_is_derived_from_sa_key_when_missing() {
    let (_tmp, out, inv) = generated();
    let key = std::fs::read(out.join("sa.key")).unwrap();
    std::fs::remove_file(out.join("sa.pub")).unwrap();
    let report = lib_generate(&inv, &out, false);
    assert!(report.contains("created sa.pub from sa.key"), "{report}");
    assert!(
        !report.contains("--force"),
        "--force named although not given:\n{report}"
    );
    assert_eq!(
        std::fs::read(out.join("sa.key")).unwrap(),
        key,
        "sa.key was replaced"
    );
    assert_eq!(
        pubkey_of_key(&out.join("sa.key")),
        std::fs::read_to_string(out.join("sa.pub")).unwrap()
    );
    assert_eq!(mode(&out.join("sa.pub")), 0o644);
}

#[test]
fn sa_pub_without_sa_key_is_refused() {
    let (_tmp, out, inv) = generated();
    std::fs::remove_file(out.join("sa.key")).unwrap();
    assert_refused!(
        &inv,
        &out,
        MissingKey,
        [out.join("sa.key"), out.join("sa.pub")]
    );
}

#[test]
fn a_ca_whose_key_does_not_match_is_refused_by_generate_load_and_check() {
    let (_tmp, out, inv) = generated();
    // Both ECDSA P-256, so only the pairing is wrong; admin.crt would be signed by the wrong key.
    std::fs::copy(out.join("etcd/ca.key"), out.join("ca.key")).unwrap();
    std::fs::remove_file(out.join("admin.crt")).unwrap();
    assert_refused!(
        &inv,
        &out,
        KeyMismatch,
        [out.join("ca.crt"), out.join("ca.key")]
    );
    std::fs::copy(out.join("etcd/ca.crt"), out.join("admin.crt")).unwrap(); // any parseable cert
    assert_pki_err!(
        pki::load(&inv, &out),
        KeyMismatch,
        [out.join("ca.crt"), out.join("ca.key")]
    );
    let rows = pki::check(&inv, &out).unwrap();
    let ca = rows.iter().find(|r| r.name == "ca").unwrap();
    assert!(
        ca.problems.iter().any(|p| p.contains("key does not match")),
        "{:?}",
        ca.problems
    );
}

#[test]
fn a_leaf_whose_key_does_not_match_is_refused_by_load_and_reissued_by_generate() {
    let (_tmp, out, inv) = generated();
    std::fs::copy(out.join("kube-proxy.key"), out.join("admin.key")).unwrap();
    assert_pki_err!(
        pki::load(&inv, &out),
        KeyMismatch,
        [out.join("admin.crt"), out.join("admin.key")]
    );
    let report = lib_generate(&inv, &out, false);
    assert!(
        report.contains("reissued  admin: key does not match the certificate"),
        "{report}"
    );
    assert!(report.contains("1 created or re-issued"), "{report}");
    assert_eq!(
        pubkey_of_cert(&out.join("admin.crt")),
        pubkey_of_key(&out.join("admin.key"))
    );
    pki::load(&inv, &out).unwrap();
}

/// Replaces `ca.crt` by a certificate for the same key and name that expired two days ago.
fn expire_the_cluster_ca(out: &Path) {
    let key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(out.join("ca.key")).unwrap()).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kubernetes");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(400);
    params.not_after = now - time::Duration::days(2);
    std::fs::write(out.join("ca.crt"), params.self_signed(&key).unwrap().pem()).unwrap();
}

#[test]
fn an_expired_ca_is_an_error_for_generate_and_a_problem_for_check() {
    let (_tmp, out, inv) = generated();
    expire_the_cluster_ca(&out);
    std::fs::remove_file(out.join("admin.crt")).unwrap();
    let err = assert_refused!(&inv, &out, ExpiredCa, [out.join("ca.crt")]);
    assert!(err.to_string().contains("--force"), "{err}");
    let rows = pki::check(&inv, &out).unwrap();
    let ca = rows.iter().find(|r| r.name == "ca").unwrap();
    assert!(
        ca.problems.iter().any(|p| p.contains("expired")),
        "{:?}",
        ca.problems
    );
    // --force creates a new CA and everything chains to it.
    lib_generate(&inv, &out, true);
    ok(openssl()
        .args(["verify", "-CAfile"])
        .arg(out.join("ca.crt"))
        .arg(out.join("admin.crt")));
}

#[test]
fn a_ca_close_to_expiry_warns_and_rerunning_keeps_its_leaves() {
    let (_tmp, out, inv) = with_validity(20, 20);
    let (_, first) = try_generate(&inv, &out).unwrap();
    assert!(
        first
            .warnings
            .iter()
            .any(|w| w.starts_with("CA ca expires in 20 days")),
        "{first}"
    );
    // The leaves end with their CA: re-issuing them cannot help, so a re-run keeps them.
    let before = snapshot(&out);
    let (_, second) = try_generate(&inv, &out).unwrap();
    assert_eq!(second.changed(), 0, "{second}");
    // 19 days, or still 20 within the same second.
    let warned = |days: u32| {
        second
            .warnings
            .iter()
            .any(|w| w.starts_with(&format!("CA ca expires in {days} days")))
    };
    assert!(warned(19) || warned(20), "{second}");
    assert_eq!(before, snapshot(&out));
}

#[test]
fn a_leaf_never_outlives_its_ca() {
    let (_tmp, out, mut inv) = with_validity(100, 100);
    let first = lib_generate(&inv, &out, false);
    assert!(
        !first.lines().any(|l| l.starts_with("note:")),
        "nothing was capped:\n{first}"
    );
    inv.pki.ca_validity_days = 3650;
    inv.pki.cert_validity_days = 365;
    std::fs::remove_file(out.join("admin.crt")).unwrap();
    let report = lib_generate(&inv, &out, false);
    assert_eq!(
        end_date(&out.join("admin.crt")),
        end_date(&out.join("ca.crt"))
    );
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("note:") && l.contains("admin")),
        "capping not reported:\n{report}"
    );
    ok(openssl()
        .args(["verify", "-CAfile"])
        .arg(out.join("ca.crt"))
        .arg(out.join("admin.crt")));
}

#[test]
fn validity_past_the_last_x509_date_is_an_error_not_a_panic() {
    let (_tmp, out, mut inv) = with_validity(4_000_000, 365);
    let err = assert_pki_err!(
        try_generate(&inv, &out),
        Validity,
        [Path::new("pki.ca_validity_days")]
    );
    assert!(
        matches!(err, pki::PkiError::Validity { field: "pki.ca_validity_days", days: 4_000_000, limit } if limit < 3_000_000)
    );
    assert!(err.to_string().contains("9999-12-31"), "{err}");
    inv.pki.ca_validity_days = 3650;
    inv.pki.cert_validity_days = u32::MAX;
    let err = assert_pki_err!(
        try_generate(&inv, &out),
        Validity,
        [Path::new("pki.cert_validity_days")]
    );
    assert!(
        matches!(
            err,
            pki::PkiError::Validity {
                field: "pki.cert_validity_days",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!out.exists(), "a refused run wrote {}", out.display());
}

#[test]
fn corrupt_files_are_errors_naming_the_file() {
    let (tmp, base, inv) = generated();
    let cert_as_key = std::fs::read_to_string(base.join("kube-proxy.crt")).unwrap();
    let cases: &[(&str, &str)] = &[
        ("ca.key", "garbage\n"),
        ("etcd/ca.crt", "garbage\n"),
        (
            "admin.crt",
            "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n",
        ),
        ("kube-proxy.key", &cert_as_key),
        ("sa.key", "garbage\n"),
        (
            "sa.pub",
            "-----BEGIN PUBLIC KEY-----\nZ2FyYmFnZQ==\n-----END PUBLIC KEY-----\n",
        ),
    ];
    let corrupt = |case: &str, file: &str, text: &str| {
        let out = tmp.path().join(case);
        copy_tree(&base, &out);
        std::fs::write(out.join(file), text).unwrap();
        (out.clone(), out.join(file))
    };
    for (i, (file, text)) in cases.iter().enumerate() {
        let (out, path) = corrupt(&format!("case{i}"), file, text);
        assert_pki_err!(pki::load(&inv, &out), BadPem, [&path]);
        assert_refused!(&inv, &out, BadPem, [&path]);
    }
    // Five bytes, not 32: never silently replaced (that would make every stored Secret unreadable).
    let (out, path) = corrupt("enc", "encryption.key", "c2hvcnQ=\n");
    assert_pki_err!(pki::load(&inv, &out), BadEncryptionKey, [&path]);
    assert_refused!(&inv, &out, BadEncryptionKey, [&path]);
    // `render` stops instead of copying garbage into its output; `check` lists it as a problem.
    let out = tmp.path().join("case0");
    let rows = pki::check(&inv, &out).unwrap();
    let ca = rows.iter().find(|r| r.name == "ca").unwrap();
    assert!(
        ca.problems
            .iter()
            .any(|p| p.starts_with(&*out.join("ca.key").to_string_lossy())),
        "{:?}",
        ca.problems
    );
    let o = run(hardway()
        .args(["render", "-i"])
        .arg(example_inventory())
        .arg("--pki")
        .arg(&out)
        .arg("--out")
        .arg(tmp.path().join("build")));
    assert!(!o.status.success(), "render accepted a corrupt ca.key");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&*out.join("ca.key").to_string_lossy()),
        "{err}"
    );
}

#[test]
fn debug_output_never_shows_key_material() {
    let (_tmp, out, inv) = generated();
    let pki = pki::load(&inv, &out).unwrap();
    let mut secrets = vec![pki.encryption_key_b64.clone()];
    let keys = pki
        .cas
        .values()
        .chain(pki.certs.values())
        .map(|kc| &kc.key_pem)
        .chain([&pki.sa_key_pem]);
    for pem in keys {
        // Debug escapes newlines, so look for each base64 line of the key's body.
        secrets.extend(
            pem.lines()
                .filter(|l| !l.starts_with("-----") && l.len() >= 16)
                .map(str::to_string),
        );
    }
    assert!(secrets.len() > 40, "{} secrets", secrets.len());
    for text in [format!("{pki:?}"), format!("{pki:#?}")] {
        assert!(
            text.contains("BEGIN CERTIFICATE"),
            "certificates may be shown"
        );
        for s in &secrets {
            assert!(!text.contains(s.as_str()), "Debug shows key material {s:?}");
        }
    }
}

#[test]
fn pki_directories_are_0700_and_a_wrong_mode_is_fixed() {
    let (_tmp, out, inv) = generated();
    assert_eq!(mode(&out), 0o700, "pki/");
    assert_eq!(mode(&out.join("etcd")), 0o700, "pki/etcd/");
    for d in [&out, &out.join("etcd")] {
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let report = lib_generate(&inv, &out, false);
    assert_eq!(mode(&out), 0o700, "pki/ mode not fixed");
    assert_eq!(mode(&out.join("etcd")), 0o700, "pki/etcd/ mode not fixed");
    let notes: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("note:") && l.contains("0700"))
        .collect();
    assert_eq!(notes.len(), 2, "{report}");
    assert!(
        notes
            .iter()
            .any(|n| n.contains(&*out.join("etcd").to_string_lossy())),
        "{report}"
    );
}

#[test]
fn write_file_replaces_a_stale_temp_file_without_following_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::write(&outside, "untouched").unwrap();
    let pki_dir = dir.path().join("pki");
    std::fs::create_dir(&pki_dir).unwrap();
    std::os::unix::fs::symlink(&outside, pki_dir.join(".x.key.tmp")).unwrap();
    pki::write_file(&pki_dir.join("x.key"), b"secret", 0o600).unwrap();
    assert_eq!(
        std::fs::read_to_string(&outside).unwrap(),
        "untouched",
        "followed a planted symlink"
    );
    assert_eq!(
        std::fs::read_to_string(pki_dir.join("x.key")).unwrap(),
        "secret"
    );
    assert_eq!(mode(&pki_dir.join("x.key")), 0o600);
    // A stale regular temp file with a loose mode is replaced, not reused.
    std::fs::write(pki_dir.join(".y.crt.tmp"), "stale stale stale").unwrap();
    std::fs::set_permissions(
        pki_dir.join(".y.crt.tmp"),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    pki::write_file(&pki_dir.join("y.crt"), b"cert", 0o644).unwrap();
    assert_eq!(
        std::fs::read_to_string(pki_dir.join("y.crt")).unwrap(),
        "cert"
    );
    assert_eq!(mode(&pki_dir.join("y.crt")), 0o644);
    assert_eq!(
        files_below(&pki_dir),
        [PathBuf::from("x.key"), PathBuf::from("y.crt")]
    );
}

#[test]
fn deploys_mode_never_creates_a_ca_or_key_and_writes_nothing() {
    let (_dir, out, inv) = with_validity(3650, 365);
    let deploy_mode = pki::GenerateOptions {
        existing_trust_only: true,
        ..Default::default()
    };
    let err = pki::generate(&inv, &out, deploy_mode).unwrap_err();
    let pki::PkiError::NoTrust { missing, .. } = &err else {
        panic!("{err}")
    };
    for f in [
        "ca.crt",
        "ca.key",
        "etcd/ca.crt",
        "sa.key",
        "encryption.key",
    ] {
        assert!(
            missing.iter().any(|m| m == f),
            "{f} not named in {missing:?}"
        );
    }
    assert!(err.to_string().contains("hardway pki generate -i"), "{err}");
    assert!(!out.exists(), "deploy's mode wrote {}", out.display());
    // With the trust anchors in place, it re-issues leaves and keeps everything else.
    try_generate(&inv, &out).unwrap();
    let before = snapshot(&out);
    std::fs::remove_file(out.join("admin.crt")).unwrap();
    let (_, report) = pki::generate(&inv, &out, deploy_mode).unwrap();
    assert_eq!(report.changed(), 1, "{report}");
    let after = snapshot(&out);
    for f in [
        "ca.key",
        "ca.crt",
        "sa.key",
        "encryption.key",
        "etcd/ca.key",
    ] {
        assert_eq!(
            before[&PathBuf::from(f)],
            after[&PathBuf::from(f)],
            "{f} changed"
        );
    }
}

#[test]
fn a_dry_run_decides_in_memory_and_writes_nothing() {
    let (_dir, out, inv) = generated();
    std::fs::remove_file(out.join("admin.crt")).unwrap();
    let before = snapshot(&out);
    let (pki, report) = pki::generate(
        &inv,
        &out,
        pki::GenerateOptions {
            dry_run: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(report.changed(), 1, "{report}");
    assert!(
        pki.cert("admin")
            .cert_pem
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    assert_eq!(snapshot(&out), before);
}

/// A PKI directory belongs to the cluster it was made for (its `cluster` file): `pki generate`,
/// `pki check` and `render` with another cluster's inventory are refused naming both clusters
/// and the way out, and leave every file as it was (before, generate re-issued the other
/// cluster's leaves from this one's CAs: two clusters sharing a CA).
#[test]
fn a_pki_directory_is_refused_for_another_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    generate(&example_inventory(), &out, &[]);
    assert_eq!(
        std::fs::read_to_string(out.join(pki::CLUSTER_FILE)).unwrap(),
        "systemv\n"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(out.join(pki::CLUSTER_FILE))
            .unwrap()
            .permissions(),
    ) & 0o777;
    assert_eq!(mode, 0o600);
    let other = inventory_variant(
        dir.path(),
        "other.toml",
        &[("name = \"systemv\"", "name = \"other\"")],
    );
    let before = snapshot(&out);
    for args in [
        vec!["pki", "generate", "--out"],
        vec!["pki", "generate", "--force", "--out"],
        vec!["pki", "check", "--pki"],
        vec!["render", "--out", "/nonexistent-render-out", "--pki"],
    ] {
        let o = run(hardway().args(&args).arg(&out).arg("-i").arg(&other));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&format!(
                "{} holds the PKI of cluster \"systemv\" (its `cluster` file), not of \"other\"",
                out.display()
            )) && err.contains("--pki DIR"),
            "{args:?}: {err}"
        );
        assert_eq!(snapshot(&out), before, "{args:?} changed the PKI directory");
    }
    // The same inventory still works, and a PKI made before the file existed gets it.
    std::fs::remove_file(out.join(pki::CLUSTER_FILE)).unwrap();
    generate(&example_inventory(), &out, &[]);
    assert_eq!(
        std::fs::read_to_string(out.join(pki::CLUSTER_FILE)).unwrap(),
        "systemv\n"
    );
}

/// Without `--out`/`--pki` each cluster gets a PKI of its own (`./pki/<cluster>`), which the
/// other commands then find; a PKI beside the inventory made for its cluster (a named lab's)
/// is used; and `./pki` made before hardway recorded the cluster is still the default.
#[test]
fn each_cluster_has_its_own_pki_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let a = inventory_variant(cwd, "a.toml", &[]);
    let b = inventory_variant(cwd, "b.toml", &[("name = \"systemv\"", "name = \"other\"")]);
    let in_cwd = |args: &[&str]| run(hardway().current_dir(cwd).args(args));
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    for (inv, cluster) in [(&a, "systemv"), (&b, "other")] {
        let o = in_cwd(&["pki", "generate", "-i", inv.to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o));
        let made = cwd.join("pki").join(cluster);
        assert_eq!(
            std::fs::read_to_string(made.join("cluster"))
                .unwrap()
                .trim(),
            cluster
        );
        let o = in_cwd(&["pki", "check", "-i", inv.to_str().unwrap()]);
        assert!(
            o.status.success(),
            "pki check found no PKI of {cluster}: {}",
            text(&o)
        );
    }
    assert_ne!(
        std::fs::read(cwd.join("pki/systemv/ca.crt")).unwrap(),
        std::fs::read(cwd.join("pki/other/ca.crt")).unwrap(),
        "two clusters share a CA"
    );
    let o = in_cwd(&["kubeconfig", "-i", "a.toml"]);
    assert!(
        o.status.success()
            && String::from_utf8_lossy(&o.stdout).contains("certificate-authority-data"),
        "{}",
        text(&o)
    );

    // A named lab's layout: the inventory with its PKI beside it.
    let lab = cwd.join("labs/x");
    std::fs::create_dir_all(&lab).unwrap();
    let lab_inv = inventory_variant(
        &lab,
        "inventory.toml",
        &[("name = \"systemv\"", "name = \"x\"")],
    );
    pki_generate(&lab_inv, &lab.join("pki"));
    let o = in_cwd(&["pki", "check", "-i", "labs/x/inventory.toml"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !cwd.join("pki/x").exists(),
        "a PKI beside the inventory was not used"
    );

    // The old default: ./pki with a CA and no cluster file, in a directory of its own.
    let old = tempfile::tempdir().unwrap();
    let inv = inventory_variant(old.path(), "inventory.toml", &[]);
    pki_generate(&inv, &old.path().join("pki"));
    std::fs::remove_file(old.path().join("pki/cluster")).unwrap();
    let o = run(hardway()
        .current_dir(old.path())
        .args(["pki", "check", "-i", "inventory.toml"]));
    assert!(o.status.success(), "{}", text(&o));
    assert!(!old.path().join("pki/systemv").exists());
}
