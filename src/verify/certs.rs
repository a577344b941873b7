//! One certificate on a node against what it must be: signed by its CA (the signature is
//! checked, not the issuer's name), carrying the SANs clients use (`sans`: what the units
//! configure is required, hardway's further conventions only warned about), not expired, and
//! with its key readable by root only and belonging to it (decided on the node).

use super::sans::{Sans, covers};
use super::{Check, Credentials, Status, check};
use crate::pki::{self, CaId, CertInfo, San};
use crate::remote::{KeyCheck, Pairing};

/// A certificate a node should have, and what it must satisfy.
#[derive(Debug, Clone)]
pub(crate) struct Site {
    pub what: &'static str,
    pub cert: String,
    pub key: String,
    pub ca: CaId,
    /// What a serving certificate must cover; none for client certificates.
    pub sans: Option<Sans>,
}

/// A site with what the node has there: the certificate (`None`: missing) and its key check.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub site: Site,
    pub pem: Option<String>,
    pub key: KeyCheck,
}

fn ca_name(ca: CaId) -> &'static str {
    match ca {
        CaId::Kubernetes => "cluster CA",
        CaId::Etcd => "etcd CA",
        CaId::FrontProxy => "front-proxy CA",
    }
}

fn parse_pem_cert(pem: &str) -> Option<(CertInfo, Vec<u8>)> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    Some((CertInfo::parse(pem).ok()?, p.contents))
}

/// Verifies `cert_der`'s signature with the public key of `ca_pem`.
fn signed_by(cert_der: &[u8], ca_pem: &str) -> bool {
    let Ok((_, ca_p)) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()) else {
        return false;
    };
    let Ok(ca) = ca_p.parse_x509() else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert_der) else {
        return false;
    };
    cert.verify_signature(Some(ca.public_key())).is_ok()
}

/// The check of one site, from the certificate the node has (`None`: missing) and its key check.
pub(crate) fn check_site(
    host: &str,
    site: &Site,
    pem: Option<&str>,
    key: &KeyCheck,
    creds: &Credentials,
) -> Check {
    let name = format!("cert {}", site.what);
    let Some((info, der)) = pem.and_then(parse_pem_cert) else {
        return check(
            host,
            name,
            Status::Fail,
            format!("{} is missing or not a certificate", site.cert),
            Some("hardway deploy puts it in place"),
        );
    };
    let mut problems: Vec<(Status, String, String)> = Vec::new();
    let ca_name = ca_name(site.ca);
    match creds.cas.get(&site.ca) {
        Some(ca) if !signed_by(&der, ca) => problems.push((
            Status::Fail,
            format!("{} is not signed by the {ca_name}", site.cert),
            "re-issue it from the right CA (hardway pki generate) and redeploy".into(),
        )),
        Some(_) => {}
        None => problems.push((
            Status::Warn,
            format!("no {ca_name} given, chain not checked"),
            "pass the CA (--pki or --ca/--etcd-ca)".into(),
        )),
    }
    if let Some(want) = &site.sans {
        problems.extend(san_problems(site, want, &info));
    }
    let days = info.days_left(time::OffsetDateTime::now_utc());
    if days < 0 {
        problems.push((
            Status::Fail,
            format!("{} expired {} days ago", site.cert, -days),
            "renew: hardway pki generate, then deploy".into(),
        ));
    } else if days < pki::RENEW_BEFORE_DAYS {
        problems.push((
            Status::Warn,
            format!("{} expires in {days} days", site.cert),
            "renew soon: hardway pki generate, then deploy".into(),
        ));
    }
    let k = &site.key;
    match &key.mode_owner {
        None => problems.push((
            Status::Fail,
            format!("key {k} is missing"),
            "hardway deploy puts it in place".into(),
        )),
        Some((0o600 | 0o400, user)) if user == "root" => {}
        Some((mode, user)) => problems.push((
            Status::Fail,
            format!("key {k} is {mode:o} {user} (mode, owner); must be 600 root"),
            format!("chmod 600 {k}; chown root:root {k}"),
        )),
    }
    match key.pairing {
        Pairing::Match => {}
        Pairing::NoOpenssl => problems.push((
            Status::Warn,
            "openssl is not on the node: key/cert pairing not checked".into(),
            "apt-get install openssl on the node".into(),
        )),
        Pairing::Differ => problems.push((
            Status::Fail,
            format!("key {k} does not belong to {}", site.cert),
            "deploy the matching key and certificate together".into(),
        )),
    }
    if problems.is_empty() {
        check(
            host,
            name,
            Status::Pass,
            format!("{}: {}, {} days left", site.cert, info.cn, days),
            None,
        )
    } else {
        let worst = problems.iter().map(|p| p.0).max().expect("not empty");
        let detail: Vec<&str> = problems.iter().map(|p| p.1.as_str()).collect();
        check(host, name, worst, detail.join("; "), Some(&problems[0].2))
    }
}

/// A FAIL for each SAN a configured client needs and the certificate lacks, naming who needs
/// it; a WARN for hardway's conventional SANs that it lacks and nothing configured uses.
fn san_problems(site: &Site, want: &Sans, info: &CertInfo) -> Vec<(Status, String, String)> {
    let mut out = Vec::new();
    let missing: Vec<String> = want
        .required
        .iter()
        .filter(|(san, _)| !covers(&info.sans, san))
        .map(|(san, why)| {
            format!(
                "{san} ({})",
                why.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    if !missing.is_empty() {
        out.push((
            Status::Fail,
            format!("{} lacks SAN {}", site.cert, missing.join(", ")),
            "clients using that name or address are refused: re-issue it with them (hardway pki generate) and redeploy".into(),
        ));
    }
    let unused: Vec<&San> = want
        .conventional
        .iter()
        .filter(|s| !want.required.contains_key(*s) && !covers(&info.sans, s))
        .collect();
    if !unused.is_empty() {
        let list: Vec<String> = unused.iter().map(|s| s.to_string()).collect();
        let refused: Vec<String> = unused
            .iter()
            .map(|s| {
                let host = match s {
                    San::Dns(d) => d.clone(),
                    San::Ip(ip) => crate::inventory::host_for_url(*ip),
                };
                match &want.scheme_port {
                    Some((scheme, port)) => format!("{scheme}://{host}:{port}"),
                    None => host,
                }
            })
            .collect();
        out.push((
            Status::Warn,
            format!(
                "{} lacks {}, which no unit here uses (hardway's certificates carry them): a client reaching the {} at {} would be refused",
                site.cert,
                list.join(", "),
                site.what,
                refused.join(" or ")
            ),
            "nothing configured needs them; add them when re-issuing if clients will use those names".into(),
        ));
    }
    out
}
