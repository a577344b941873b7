//! Stage 2: the cluster's PKI — CAs, every leaf certificate, the service-account key pair and
//! the encryption key, kept in a kubeadm-style directory (`NAME.crt` beside `NAME.key`).
//!
//! The certificate matrix is data: [`CAS`] and [`PROFILES`] are tables, expanded against the
//! inventory by [`matrix`] into one [`CertSpec`] per file. [`generate`] then compares every spec
//! with what is on disk and only creates or re-issues what is missing, different or about to
//! expire — so re-running is safe and CA, keys and the encryption key survive (a lost encryption
//! key means Secrets nobody can read). All reading and deciding happens before the first write.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine;
use rayon::prelude::*;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::inventory::{Inventory, KeyAlgorithm, Node};

/// Leaf certificates closer than this to expiry are re-issued (kubeadm warns at the same mark).
pub const RENEW_BEFORE_DAYS: i64 = 30;

// ---------------------------------------------------------------------------------------------
// The matrix, as data.

/// The certificate authorities. The etcd CA is separate from the cluster CA (CIS 2.7), so a
/// kubelet or admin certificate can never authenticate to etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CaId {
    Kubernetes,
    Etcd,
    FrontProxy,
}

pub struct CaProfile {
    pub id: CaId,
    pub file: &'static str,
    pub cn: &'static str,
    /// Only created when the aggregation layer is enabled.
    pub aggregation_only: bool,
}

pub const CAS: &[CaProfile] = &[
    CaProfile { id: CaId::Kubernetes, file: "ca", cn: "kubernetes", aggregation_only: false },
    CaProfile { id: CaId::Etcd, file: "etcd/ca", cn: "etcd-ca", aggregation_only: false },
    CaProfile { id: CaId::FrontProxy, file: "front-proxy-ca", cn: "front-proxy-ca", aggregation_only: true },
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Client,
    Server,
    ServerAndClient,
}

/// Who gets a certificate of a profile: `{node}` in names is replaced per node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Cluster,
    EachWorker,
    EachEtcdMember,
    /// One per cluster, only with the aggregation layer.
    Aggregation,
}

/// Which subject alternative names a profile carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanSet {
    None,
    /// The node's name, FQDN, address and extra_sans (kubelet serving).
    Node,
    /// Every name and address clients use for the API server.
    ApiServer,
    /// The member's name, FQDN, address, localhost and 127.0.0.1.
    EtcdMember,
}

pub struct Profile {
    pub file: &'static str,
    pub ca: CaId,
    pub scope: Scope,
    pub cn: &'static str,
    pub org: Option<&'static str>,
    pub usage: Usage,
    pub sans: SanSet,
}

/// Every leaf certificate a cluster needs (Kubernetes the hard way + kubeadm names).
pub const PROFILES: &[Profile] = &[
    Profile { file: "admin", ca: CaId::Kubernetes, scope: Scope::Cluster, cn: "admin", org: Some("system:masters"), usage: Usage::Client, sans: SanSet::None },
    Profile { file: "kubelet-{node}", ca: CaId::Kubernetes, scope: Scope::EachWorker, cn: "system:node:{node}", org: Some("system:nodes"), usage: Usage::ServerAndClient, sans: SanSet::Node },
    Profile { file: "kube-controller-manager", ca: CaId::Kubernetes, scope: Scope::Cluster, cn: "system:kube-controller-manager", org: Some("system:kube-controller-manager"), usage: Usage::Client, sans: SanSet::None },
    Profile { file: "kube-scheduler", ca: CaId::Kubernetes, scope: Scope::Cluster, cn: "system:kube-scheduler", org: Some("system:kube-scheduler"), usage: Usage::Client, sans: SanSet::None },
    Profile { file: "kube-proxy", ca: CaId::Kubernetes, scope: Scope::Cluster, cn: "system:kube-proxy", org: Some("system:node-proxier"), usage: Usage::Client, sans: SanSet::None },
    Profile { file: "apiserver", ca: CaId::Kubernetes, scope: Scope::Cluster, cn: "kube-apiserver", org: None, usage: Usage::Server, sans: SanSet::ApiServer },
    Profile { file: "apiserver-kubelet-client", ca: CaId::Kubernetes, scope: Scope::Cluster, cn: "kube-apiserver-kubelet-client", org: Some("system:masters"), usage: Usage::Client, sans: SanSet::None },
    Profile { file: "etcd/server-{node}", ca: CaId::Etcd, scope: Scope::EachEtcdMember, cn: "{node}", org: None, usage: Usage::ServerAndClient, sans: SanSet::EtcdMember },
    Profile { file: "etcd/peer-{node}", ca: CaId::Etcd, scope: Scope::EachEtcdMember, cn: "{node}", org: None, usage: Usage::ServerAndClient, sans: SanSet::EtcdMember },
    Profile { file: "apiserver-etcd-client", ca: CaId::Etcd, scope: Scope::Cluster, cn: "kube-apiserver-etcd-client", org: None, usage: Usage::Client, sans: SanSet::None },
    Profile { file: "etcd/healthcheck-client", ca: CaId::Etcd, scope: Scope::Cluster, cn: "kube-etcd-healthcheck-client", org: None, usage: Usage::Client, sans: SanSet::None },
    // HAProxy's health checks: with --anonymous-auth=false an API server answers /readyz only to
    // an authenticated client (system:public-info-viewer lets any of them read it).
    Profile { file: "haproxy-healthcheck", ca: CaId::Kubernetes, scope: Scope::Cluster, cn: "haproxy-healthcheck", org: None, usage: Usage::Client, sans: SanSet::None },
    Profile { file: "front-proxy-client", ca: CaId::FrontProxy, scope: Scope::Aggregation, cn: "front-proxy-client", org: None, usage: Usage::Client, sans: SanSet::None },
];

/// A subject alternative name; ordered so SAN sets compare and print deterministically.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum San {
    Dns(String),
    Ip(IpAddr),
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Dns(d) => write!(f, "DNS:{d}"),
            San::Ip(ip) => write!(f, "IP:{ip}"),
        }
    }
}

impl San {
    fn parse(s: &str) -> San {
        s.parse::<IpAddr>().map(San::Ip).unwrap_or_else(|_| San::Dns(s.to_string()))
    }
}

/// One leaf certificate the inventory calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    /// Path below the PKI directory without extension, e.g. `etcd/server-kmaster1`.
    pub name: String,
    pub ca: CaId,
    pub cn: String,
    pub orgs: Vec<String>,
    pub usage: Usage,
    pub sans: BTreeSet<San>,
    pub node: Option<String>,
}

/// Expands [`PROFILES`] against the inventory.
pub fn matrix(inv: &Inventory) -> Vec<CertSpec> {
    let mut out = Vec::new();
    for p in PROFILES {
        let nodes: Vec<Option<&Node>> = match p.scope {
            Scope::Cluster => vec![None],
            Scope::Aggregation if inv.addons.aggregation => vec![None],
            Scope::Aggregation => vec![],
            Scope::EachWorker => inv.workers().map(Some).collect(),
            Scope::EachEtcdMember => inv.etcd_members().into_iter().map(Some).collect(),
        };
        for node in nodes {
            let subst = |s: &str| match node {
                Some(n) => s.replace("{node}", &n.name),
                None => s.to_string(),
            };
            out.push(CertSpec {
                name: subst(p.file),
                ca: p.ca,
                cn: subst(p.cn),
                orgs: p.org.map(|o| vec![o.to_string()]).unwrap_or_default(),
                usage: p.usage,
                sans: sans_for(inv, p.sans, node),
                node: node.map(|n| n.name.clone()),
            });
        }
    }
    out
}

fn sans_for(inv: &Inventory, set: SanSet, node: Option<&Node>) -> BTreeSet<San> {
    let mut s = BTreeSet::new();
    let add_node = |s: &mut BTreeSet<San>, n: &Node| {
        s.insert(San::Dns(n.name.clone()));
        if let Some(fqdn) = inv.fqdn(n) {
            s.insert(San::Dns(fqdn));
        }
        s.insert(San::Ip(n.address));
        s.extend(n.extra_sans.iter().map(|x| San::parse(x)));
    };
    match set {
        SanSet::None => {}
        SanSet::Node => add_node(&mut s, node.expect("per-node profile")),
        SanSet::EtcdMember => {
            add_node(&mut s, node.expect("per-node profile"));
            s.insert(San::Dns("localhost".into()));
            s.insert(San::Ip(IpAddr::from([127, 0, 0, 1])));
        }
        SanSet::ApiServer => {
            if let Some(lb) = &inv.load_balancer {
                s.insert(San::Ip(lb.address));
                if let Some(d) = &lb.dns_name {
                    s.insert(San::Dns(d.clone()));
                }
            }
            for m in inv.masters() {
                add_node(&mut s, m);
            }
            s.insert(San::Ip(IpAddr::from([127, 0, 0, 1])));
            s.insert(San::Dns("localhost".into()));
            s.insert(San::Ip(IpAddr::V4(inv.cluster.first_service_ip())));
            for d in ["kubernetes", "kubernetes.default", "kubernetes.default.svc"] {
                s.insert(San::Dns(d.into()));
            }
            s.insert(San::Dns(format!("kubernetes.default.svc.{}", inv.cluster.cluster_domain)));
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------
// The loaded PKI: what later stages (render, deploy, verify) read.

/// A certificate with its private key, both PEM.
#[derive(Clone)]
pub struct KeyedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for KeyedCert {
    // Private keys never reach logs, not even through a stray `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCert").field("cert_pem", &self.cert_pem).field("key_pem", &"<redacted>").finish()
    }
}

/// Everything in the PKI directory that the inventory needs.
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
    pub cas: BTreeMap<CaId, KeyedCert>,
    /// Leaf certificates by spec name.
    pub certs: BTreeMap<String, KeyedCert>,
    pub sa_key_pem: String,
    pub sa_pub_pem: String,
    /// Base64 of the 32-byte AES-CBC key, as the EncryptionConfiguration wants it.
    pub encryption_key_b64: String,
}

impl Pki {
    pub fn ca(&self, id: CaId) -> &KeyedCert {
        &self.cas[&id]
    }

    pub fn cert(&self, name: &str) -> &KeyedCert {
        self.certs.get(name).unwrap_or_else(|| panic!("certificate {name} is not in the matrix"))
    }
}

pub const ENCRYPTION_KEY_FILE: &str = "encryption.key";
pub const SA_KEY_FILE: &str = "sa.key";
pub const SA_PUB_FILE: &str = "sa.pub";

// ---------------------------------------------------------------------------------------------
// Generate.

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Created,
    Kept,
    Reissued(String),
}

#[derive(Debug, Clone)]
pub struct Report {
    /// (file stem, action), in matrix order.
    pub entries: Vec<(String, Action)>,
    pub warnings: Vec<String>,
}

impl Report {
    pub fn changed(&self) -> usize {
        self.entries.iter().filter(|(_, a)| *a != Action::Kept).count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, action) in &self.entries {
            match action {
                Action::Created => writeln!(f, "created   {name}")?,
                Action::Kept => writeln!(f, "kept      {name}")?,
                Action::Reissued(why) => writeln!(f, "reissued  {name}: {why}")?,
            }
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        write!(f, "{} created or re-issued, {} kept", self.changed(), self.entries.len() - self.changed())
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct GenerateOptions {
    /// Re-issue every CA, key and certificate. The encryption key is still kept.
    pub force: bool,
}

/// What to do with one certificate, decided before anything is written.
enum Plan {
    Keep(KeyedCert),
    /// Issue with this key (an existing one is kept), and report it as created or re-issued.
    Issue { key: Option<String>, action: Action },
}

/// Brings the PKI directory in line with the inventory and returns the loaded PKI.
pub fn generate(inv: &Inventory, dir: &Path, opts: GenerateOptions) -> Result<(Pki, Report)> {
    let now = OffsetDateTime::now_utc();
    let mut entries = Vec::new();
    let mut warnings = Vec::new();
    let cas_wanted: Vec<&CaProfile> = CAS.iter().filter(|c| inv.addons.aggregation || !c.aggregation_only).collect();
    let specs = matrix(inv);

    // 1. Read and decide (no writes).
    let mut ca_plans = Vec::new();
    for ca in &cas_wanted {
        let existing = read_pair(dir, ca.file)?;
        let plan = match existing {
            (Some(_), None) if !opts.force => bail!(
                "{}: the CA certificate exists but its key {} is missing; restore the key, or pass --force to \
                 create a new CA (every certificate is then re-issued and must be redeployed)",
                dir.join(format!("{}.crt", ca.file)).display(),
                dir.join(format!("{}.key", ca.file)).display()
            ),
            (Some(cert), Some(key)) if !opts.force => {
                let info = CertInfo::parse(&cert).with_context(|| format!("{}/{}.crt", dir.display(), ca.file))?;
                if info.days_left(now) < RENEW_BEFORE_DAYS {
                    warnings.push(format!(
                        "CA {} expires in {} days; renewing a CA is a manual decision (run with --force)",
                        ca.file,
                        info.days_left(now)
                    ));
                }
                Plan::Keep(KeyedCert { cert_pem: cert, key_pem: key })
            }
            (None, None) => Plan::Issue { key: None, action: Action::Created },
            _ => Plan::Issue { key: None, action: Action::Reissued("--force".into()) },
        };
        ca_plans.push((ca, plan));
    }

    // 2. Issue CAs first: leaves are checked against the CA they will be signed by.
    let algorithm = inv.pki.algorithm;
    let issued_cas: Vec<(CaId, KeyedCert, Action)> = ca_plans
        .into_par_iter()
        .map(|(ca, plan)| -> Result<_> {
            Ok(match plan {
                Plan::Keep(kc) => (ca.id, kc, Action::Kept),
                Plan::Issue { action, .. } => (ca.id, issue_ca(ca, algorithm, inv.pki.ca_validity_days, now)?, action),
            })
        })
        .collect::<Result<_>>()?;
    let mut cas = BTreeMap::new();
    for (ca, (id, kc, action)) in cas_wanted.iter().zip(issued_cas) {
        entries.push((ca.file.to_string(), action));
        cas.insert(id, kc);
    }
    let ca_infos: BTreeMap<CaId, CertInfo> =
        cas.iter().map(|(id, kc)| Ok((*id, CertInfo::parse(&kc.cert_pem)?))).collect::<Result<_>>()?;

    let mut leaf_plans = Vec::new();
    for spec in &specs {
        let (cert, key) = read_pair(dir, &spec.name)?;
        let plan = if opts.force {
            if cert.is_some() {
                Plan::Issue { key: None, action: Action::Reissued("--force".into()) }
            } else {
                Plan::Issue { key: None, action: Action::Created }
            }
        } else {
            match (cert, key) {
                (None, key) => Plan::Issue { key, action: Action::Created },
                (Some(_), None) => Plan::Issue { key: None, action: Action::Reissued("its key file was missing".into()) },
                (Some(cert), Some(key)) => {
                    let info = CertInfo::parse(&cert).with_context(|| format!("{}/{}.crt", dir.display(), spec.name))?;
                    let key_alg = key_algorithm_of(&key).with_context(|| format!("{}/{}.key", dir.display(), spec.name))?;
                    let reasons = info.mismatches(spec, &ca_infos[&spec.ca], now);
                    if key_alg != algorithm {
                        Plan::Issue {
                            key: None,
                            action: Action::Reissued(format!("key is {}, inventory asks for {}", key_alg.as_str(), algorithm.as_str())),
                        }
                    } else if !info.matches_key(&key)? {
                        Plan::Issue { key: Some(key), action: Action::Reissued("key does not match the certificate".into()) }
                    } else if reasons.is_empty() {
                        Plan::Keep(KeyedCert { cert_pem: cert, key_pem: key })
                    } else {
                        Plan::Issue { key: Some(key), action: Action::Reissued(reasons.join("; ")) }
                    }
                }
            }
        };
        leaf_plans.push((spec, plan));
    }

    let sa = read_pair_files(dir, SA_PUB_FILE, SA_KEY_FILE)?;
    let enc = read_opt(&dir.join(ENCRYPTION_KEY_FILE))?;
    if let Some(e) = &enc {
        decode_encryption_key(e).with_context(|| format!("{}", dir.join(ENCRYPTION_KEY_FILE).display()))?;
    }

    // 3. Issue leaves in parallel: RSA key generation is the slow part and spreads over cores.
    let ca_keys: BTreeMap<CaId, (String, KeyPair)> = cas
        .iter()
        .map(|(id, kc)| Ok((*id, (kc.cert_pem.clone(), KeyPair::from_pem(&kc.key_pem)?))))
        .collect::<Result<_>>()?;
    let issuers: BTreeMap<CaId, Issuer<'_, &KeyPair>> = ca_keys
        .iter()
        .map(|(id, (pem, key))| Ok((*id, Issuer::from_ca_cert_pem(pem, key)?)))
        .collect::<Result<_>>()?;
    let leaves: Vec<(String, KeyedCert, Action)> = leaf_plans
        .into_par_iter()
        .map(|(spec, plan)| -> Result<_> {
            Ok(match plan {
                Plan::Keep(kc) => (spec.name.clone(), kc, Action::Kept),
                Plan::Issue { key, action } => {
                    let kc = issue_leaf(spec, key, algorithm, &issuers[&spec.ca], inv.pki.cert_validity_days, now)
                        .with_context(|| format!("issuing {}", spec.name))?;
                    (spec.name.clone(), kc, action)
                }
            })
        })
        .collect::<Result<_>>()?;

    let (sa_pub, sa_key, sa_action) = match sa {
        (Some(p), Some(k)) if !opts.force => (p, k, Action::Kept),
        (p, _) => {
            let key = new_key(algorithm)?;
            let action = if p.is_some() { Action::Reissued("--force".into()) } else { Action::Created };
            (key.public_key_pem(), key.serialize_pem(), action)
        }
    };
    let (enc_b64, enc_action) = match enc {
        Some(e) => (e.trim().to_string(), Action::Kept),
        None => {
            let mut raw = [0u8; 32];
            getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("no randomness for the encryption key: {e}"))?;
            (base64::engine::general_purpose::STANDARD.encode(raw), Action::Created)
        }
    };

    // 4. Write what changed, each file atomically.
    ensure_dir(dir)?;
    for ca in &cas_wanted {
        let (_, action) = entries.iter().find(|(n, _)| n == ca.file).expect("CA entry");
        if *action != Action::Kept {
            write_pair(dir, ca.file, &cas[&ca.id])?;
        }
    }
    let mut certs = BTreeMap::new();
    for (name, kc, action) in leaves {
        if action != Action::Kept {
            write_pair(dir, &name, &kc)?;
        }
        entries.push((name.clone(), action));
        certs.insert(name, kc);
    }
    if sa_action != Action::Kept {
        write_file(&dir.join(SA_KEY_FILE), sa_key.as_bytes(), 0o600)?;
        write_file(&dir.join(SA_PUB_FILE), sa_pub.as_bytes(), 0o644)?;
    }
    entries.push(("sa".into(), sa_action));
    if enc_action != Action::Kept {
        write_file(&dir.join(ENCRYPTION_KEY_FILE), format!("{enc_b64}\n").as_bytes(), 0o600)?;
    }
    entries.push(("encryption.key".into(), enc_action));

    let pki = Pki {
        dir: dir.to_path_buf(),
        cas,
        certs,
        sa_key_pem: sa_key,
        sa_pub_pem: sa_pub,
        encryption_key_b64: enc_b64,
    };
    Ok((pki, Report { entries, warnings }))
}

/// Reads an existing PKI for the inventory, failing with the list of missing files.
pub fn load(inv: &Inventory, dir: &Path) -> Result<Pki> {
    let mut missing = Vec::new();
    let mut cas = BTreeMap::new();
    for ca in CAS.iter().filter(|c| inv.addons.aggregation || !c.aggregation_only) {
        match read_pair(dir, ca.file)? {
            (Some(c), Some(k)) => {
                cas.insert(ca.id, KeyedCert { cert_pem: c, key_pem: k });
            }
            _ => missing.push(ca.file.to_string()),
        }
    }
    let mut certs = BTreeMap::new();
    for spec in matrix(inv) {
        match read_pair(dir, &spec.name)? {
            (Some(c), Some(k)) => {
                certs.insert(spec.name, KeyedCert { cert_pem: c, key_pem: k });
            }
            _ => missing.push(spec.name),
        }
    }
    let (sa_pub, sa_key) = read_pair_files(dir, SA_PUB_FILE, SA_KEY_FILE)?;
    let enc = read_opt(&dir.join(ENCRYPTION_KEY_FILE))?;
    if sa_pub.is_none() || sa_key.is_none() {
        missing.push("sa".into());
    }
    if enc.is_none() {
        missing.push(ENCRYPTION_KEY_FILE.into());
    }
    if !missing.is_empty() {
        bail!(
            "{}: the PKI is incomplete for {} (missing: {}); run `hardway pki generate -i {}` first",
            dir.display(),
            inv.source.display(),
            missing.join(", "),
            inv.source.display()
        );
    }
    let enc = enc.expect("checked").trim().to_string();
    decode_encryption_key(&enc).with_context(|| format!("{}", dir.join(ENCRYPTION_KEY_FILE).display()))?;
    Ok(Pki {
        dir: dir.to_path_buf(),
        cas,
        certs,
        sa_key_pem: sa_key.expect("checked"),
        sa_pub_pem: sa_pub.expect("checked"),
        encryption_key_b64: enc,
    })
}

fn decode_encryption_key(b64: &str) -> Result<()> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .context("the encryption key is not valid base64")?;
    if raw.len() != 32 {
        bail!("the encryption key is {} bytes; aescbc needs exactly 32", raw.len());
    }
    Ok(())
}

fn new_key(alg: KeyAlgorithm) -> Result<KeyPair> {
    Ok(match alg {
        KeyAlgorithm::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
        KeyAlgorithm::Rsa2048 => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)?,
        KeyAlgorithm::Rsa4096 => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_4096)?,
    })
}

fn key_algorithm_of(key_pem: &str) -> Result<KeyAlgorithm> {
    let key = KeyPair::from_pem(key_pem).context("not a readable private key")?;
    let alg = key.algorithm();
    if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
        return Ok(KeyAlgorithm::EcdsaP256);
    }
    // RSA sizes are told apart by the modulus: the SPKI of a 4096-bit key is over 512 bytes.
    if alg == &rcgen::PKCS_RSA_SHA256 || alg == &rcgen::PKCS_RSA_SHA384 || alg == &rcgen::PKCS_RSA_SHA512 {
        use rcgen::PublicKeyData;
        return Ok(if key.der_bytes().len() > 400 { KeyAlgorithm::Rsa4096 } else { KeyAlgorithm::Rsa2048 });
    }
    bail!("unsupported key algorithm")
}

fn random_serial() -> Result<SerialNumber> {
    let mut s = [0u8; 16];
    getrandom::fill(&mut s).map_err(|e| anyhow::anyhow!("no randomness for a serial number: {e}"))?;
    s[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&s))
}

fn validity(params: &mut CertificateParams, now: OffsetDateTime, days: u32) {
    // A little backdating absorbs clock skew between the host that issues and the nodes.
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(days as i64);
}

fn issue_ca(ca: &CaProfile, alg: KeyAlgorithm, days: u32, now: OffsetDateTime) -> Result<KeyedCert> {
    let key = new_key(alg)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, ca.cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.serial_number = Some(random_serial()?);
    validity(&mut params, now, days);
    let cert = params.self_signed(&key).with_context(|| format!("self-signing {}", ca.file))?;
    Ok(KeyedCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

fn issue_leaf(
    spec: &CertSpec,
    key_pem: Option<String>,
    alg: KeyAlgorithm,
    issuer: &Issuer<'_, &KeyPair>,
    days: u32,
    now: OffsetDateTime,
) -> Result<KeyedCert> {
    let key = match &key_pem {
        Some(pem) => KeyPair::from_pem(pem)?,
        None => new_key(alg)?,
    };
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, spec.cn.as_str());
    for o in &spec.orgs {
        params.distinguished_name.push(DnType::OrganizationName, o.as_str());
    }
    params.subject_alt_names = spec
        .sans
        .iter()
        .map(|s| match s {
            San::Dns(d) => Ok(SanType::DnsName(d.clone().try_into()?)),
            San::Ip(ip) => Ok(SanType::IpAddress(*ip)),
        })
        .collect::<Result<_, rcgen::Error>>()?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = match spec.usage {
        Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        Usage::ServerAndClient => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    validity(&mut params, now, days);
    let cert = params.signed_by(&key, issuer)?;
    Ok(KeyedCert { cert_pem: cert.pem(), key_pem: key_pem.unwrap_or_else(|| key.serialize_pem()) })
}

// ---------------------------------------------------------------------------------------------
// Reading certificates back.

/// The parts of a certificate that decisions and reports need.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub cn: String,
    pub orgs: Vec<String>,
    pub issuer_cn: String,
    pub sans: BTreeSet<San>,
    pub not_after: OffsetDateTime,
    pub subject_key_id: Option<Vec<u8>>,
    pub authority_key_id: Option<Vec<u8>>,
    pub public_key: Vec<u8>,
}

impl CertInfo {
    pub fn parse(pem: &str) -> Result<CertInfo> {
        use x509_parser::extensions::{GeneralName, ParsedExtension};
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| anyhow::anyhow!("not PEM: {e}"))?;
        let cert = p.parse_x509().map_err(|e| anyhow::anyhow!("not an X.509 certificate: {e}"))?;
        let name_of = |n: &x509_parser::x509::X509Name<'_>| {
            n.iter_common_name().next().and_then(|c| c.as_str().ok()).unwrap_or("").to_string()
        };
        let mut sans = BTreeSet::new();
        let mut ski = None;
        let mut aki = None;
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => {
                    for g in &san.general_names {
                        match g {
                            GeneralName::DNSName(d) => {
                                sans.insert(San::Dns(d.to_string()));
                            }
                            GeneralName::IPAddress(b) => {
                                let ip = match b.len() {
                                    4 => IpAddr::from(<[u8; 4]>::try_from(*b).expect("len 4")),
                                    16 => IpAddr::from(<[u8; 16]>::try_from(*b).expect("len 16")),
                                    _ => continue,
                                };
                                sans.insert(San::Ip(ip));
                            }
                            _ => {}
                        }
                    }
                }
                ParsedExtension::SubjectKeyIdentifier(k) => ski = Some(k.0.to_vec()),
                ParsedExtension::AuthorityKeyIdentifier(a) => aki = a.key_identifier.as_ref().map(|k| k.0.to_vec()),
                _ => {}
            }
        }
        Ok(CertInfo {
            cn: name_of(cert.subject()),
            orgs: cert.subject().iter_organization().filter_map(|o| o.as_str().ok()).map(str::to_string).collect(),
            issuer_cn: name_of(cert.issuer()),
            sans,
            not_after: OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp())?,
            subject_key_id: ski,
            authority_key_id: aki,
            public_key: cert.public_key().subject_public_key.data.to_vec(),
        })
    }

    pub fn days_left(&self, now: OffsetDateTime) -> i64 {
        (self.not_after - now).whole_days()
    }

    pub fn matches_key(&self, key_pem: &str) -> Result<bool> {
        let key = KeyPair::from_pem(key_pem).context("not a readable private key")?;
        Ok(key.public_key_raw() == self.public_key.as_slice())
    }

    /// Was this certificate signed by `ca`? Compared by key identifier, as chain building does.
    pub fn issued_by(&self, ca: &CertInfo) -> bool {
        self.issuer_cn == ca.cn && self.authority_key_id.is_some() && self.authority_key_id == ca.subject_key_id
    }

    /// Every reason this certificate does not serve `spec` any more; empty when it does.
    pub fn mismatches(&self, spec: &CertSpec, ca: &CertInfo, now: OffsetDateTime) -> Vec<String> {
        let mut why = Vec::new();
        if self.cn != spec.cn || self.orgs != spec.orgs {
            why.push(format!(
                "subject is CN={} O={}, inventory needs CN={} O={}",
                self.cn,
                self.orgs.join(","),
                spec.cn,
                spec.orgs.join(",")
            ));
        }
        let missing: Vec<String> = spec.sans.difference(&self.sans).map(|s| format!("+{s}")).collect();
        let extra: Vec<String> = self.sans.difference(&spec.sans).map(|s| format!("-{s}")).collect();
        if !missing.is_empty() || !extra.is_empty() {
            why.push(format!("SANs changed ({})", [missing, extra].concat().join(" ")));
        }
        if !self.issued_by(ca) {
            why.push(format!("not signed by the current {} CA", ca.cn));
        }
        let days = self.days_left(now);
        if days < RENEW_BEFORE_DAYS {
            why.push(if days < 0 { format!("expired {} days ago", -days) } else { format!("expires in {days} days") });
        }
        why
    }
}

// ---------------------------------------------------------------------------------------------
// `pki check`.

#[derive(Debug, Clone)]
pub struct CheckRow {
    pub name: String,
    pub subject: String,
    pub sans: Vec<String>,
    pub issuer: String,
    pub not_after: String,
    pub days_left: i64,
    /// Empty when the certificate is fine.
    pub problems: Vec<String>,
}

/// Lists every certificate the inventory needs, like `kubeadm certs check-expiration`, and
/// says what no longer matches the inventory.
pub fn check(inv: &Inventory, dir: &Path) -> Result<Vec<CheckRow>> {
    let now = OffsetDateTime::now_utc();
    let mut rows = Vec::new();
    let mut ca_infos = BTreeMap::new();
    let fmt_time = |t: OffsetDateTime| {
        format!("{:04}-{:02}-{:02} {:02}:{:02}Z", t.year(), t.month() as u8, t.day(), t.hour(), t.minute())
    };
    for ca in CAS.iter().filter(|c| inv.addons.aggregation || !c.aggregation_only) {
        let (cert, key) = read_pair(dir, ca.file)?;
        let Some(cert) = cert else {
            rows.push(missing_row(ca.file));
            continue;
        };
        let info = CertInfo::parse(&cert).with_context(|| format!("{}/{}.crt", dir.display(), ca.file))?;
        let mut problems = Vec::new();
        if key.is_none() {
            problems.push("key file missing".to_string());
        }
        if info.days_left(now) < 0 {
            problems.push("expired".into());
        }
        rows.push(CheckRow {
            name: ca.file.into(),
            subject: subject_string(&info),
            sans: vec![],
            issuer: info.issuer_cn.clone(),
            not_after: fmt_time(info.not_after),
            days_left: info.days_left(now),
            problems,
        });
        ca_infos.insert(ca.id, info);
    }
    for spec in matrix(inv) {
        let (cert, key) = read_pair(dir, &spec.name)?;
        let Some(cert) = cert else {
            rows.push(missing_row(&spec.name));
            continue;
        };
        let info = CertInfo::parse(&cert).with_context(|| format!("{}/{}.crt", dir.display(), spec.name))?;
        let mut problems = match ca_infos.get(&spec.ca) {
            Some(ca) => info.mismatches(&spec, ca, now),
            None => vec!["its CA is missing".into()],
        };
        match key {
            None => problems.push("key file missing".into()),
            Some(k) if !info.matches_key(&k)? => problems.push("key does not match the certificate".into()),
            Some(_) => {}
        }
        rows.push(CheckRow {
            name: spec.name.clone(),
            subject: subject_string(&info),
            sans: info.sans.iter().map(|s| s.to_string()).collect(),
            issuer: info.issuer_cn.clone(),
            not_after: fmt_time(info.not_after),
            days_left: info.days_left(now),
            problems,
        });
    }
    Ok(rows)
}

fn subject_string(info: &CertInfo) -> String {
    let mut s = format!("CN={}", info.cn);
    for o in &info.orgs {
        s.push_str(&format!(",O={o}"));
    }
    s
}

fn missing_row(name: &str) -> CheckRow {
    CheckRow {
        name: name.into(),
        subject: String::new(),
        sans: vec![],
        issuer: String::new(),
        not_after: String::new(),
        days_left: 0,
        problems: vec!["missing: run `hardway pki generate`".into()],
    }
}

// ---------------------------------------------------------------------------------------------
// Files.

fn read_opt(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn read_pair(dir: &Path, stem: &str) -> Result<(Option<String>, Option<String>)> {
    read_pair_files(dir, &format!("{stem}.crt"), &format!("{stem}.key"))
}

fn read_pair_files(dir: &Path, public: &str, private: &str) -> Result<(Option<String>, Option<String>)> {
    Ok((read_opt(&dir.join(public))?, read_opt(&dir.join(private))?))
}

fn ensure_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

fn write_pair(dir: &Path, stem: &str, kc: &KeyedCert) -> Result<()> {
    write_file(&dir.join(format!("{stem}.key")), kc.key_pem.as_bytes(), 0o600)?;
    write_file(&dir.join(format!("{stem}.crt")), kc.cert_pem.as_bytes(), 0o644)
}

/// Writes through a temporary file created with its final mode, then renames: a reader never
/// sees half a key, and a key is never world-readable, not even for a moment.
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = parent.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("file")));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(data).with_context(|| format!("writing {}", tmp.display()))?;
    // The mode given to open() is filtered by the umask and ignored for an existing file.
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}
