//! Reading PEM back: [`CertInfo`] (the parts of a certificate decisions and reports need),
//! private and public keys, and what no longer fits the inventory. Nothing here knows file
//! names; callers wrap a [`Malformed`] into a `PkiError` naming the file.

use std::collections::BTreeSet;
use std::net::IpAddr;

use rcgen::{KeyPair, PublicKeyData};
use time::OffsetDateTime;
use x509_parser::prelude::FromDer;

use super::RENEW_BEFORE_DAYS;
use super::matrix::{CertSpec, San};
use crate::inventory::KeyAlgorithm;

/// What is wrong with some bytes that should have been a certificate or key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

/// The parts of a certificate that decisions and reports need.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub cn: String,
    pub orgs: Vec<String>,
    pub issuer_cn: String,
    pub sans: BTreeSet<San>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// The serial number as colon-separated hex pairs (`3a:0f:…`): what tells two issues of one
    /// certificate apart.
    pub serial: String,
    /// A CA certificate (basicConstraints CA:TRUE): in a trust bundle, not a leaf.
    pub is_ca: bool,
    pub subject_key_id: Option<Vec<u8>>,
    pub authority_key_id: Option<Vec<u8>>,
    pub public_key: Vec<u8>,
}

impl CertInfo {
    pub fn parse(pem: &str) -> Result<CertInfo, Malformed> {
        use x509_parser::extensions::{GeneralName, ParsedExtension};
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .map_err(|e| Malformed(format!("not a PEM certificate ({e})")))?;
        let cert = p
            .parse_x509()
            .map_err(|e| Malformed(format!("not an X.509 certificate ({e})")))?;
        let name_of = |n: &x509_parser::x509::X509Name<'_>| {
            n.iter_common_name()
                .next()
                .and_then(|c| c.as_str().ok())
                .unwrap_or("")
                .to_string()
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
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    aki = a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => {}
            }
        }
        let time = |t: x509_parser::time::ASN1Time, what: &str| {
            OffsetDateTime::from_unix_timestamp(t.timestamp())
                .map_err(|e| Malformed(format!("{what} is out of range ({e})")))
        };
        let not_before = time(cert.validity().not_before, "notBefore")?;
        let not_after = time(cert.validity().not_after, "notAfter")?;
        Ok(CertInfo {
            cn: name_of(cert.subject()),
            orgs: cert
                .subject()
                .iter_organization()
                .filter_map(|o| o.as_str().ok())
                .map(str::to_string)
                .collect(),
            issuer_cn: name_of(cert.issuer()),
            sans,
            not_before,
            not_after,
            serial: cert.raw_serial_as_string(),
            is_ca: cert.is_ca(),
            subject_key_id: ski,
            authority_key_id: aki,
            public_key: cert.public_key().subject_public_key.data.to_vec(),
        })
    }

    /// Whole days until `not_after`, rounded down: negative as soon as it has passed (a
    /// certificate that expired an hour ago is expired, not "expires in 0 days").
    pub fn days_left(&self, now: OffsetDateTime) -> i64 {
        days_floor(self.not_after - now)
    }

    pub fn matches_key(&self, key_pem: &str) -> Result<bool, Malformed> {
        Ok(self.is_for(&parse_key(key_pem)?))
    }

    /// Is `key` the private half of this certificate's public key?
    pub(crate) fn is_for(&self, key: &KeyPair) -> bool {
        key.public_key_raw() == self.public_key.as_slice()
    }

    /// Was this certificate signed by `ca`? Compared by key identifier, as chain building does.
    pub fn issued_by(&self, ca: &CertInfo) -> bool {
        self.issuer_cn == ca.cn
            && self.authority_key_id.is_some()
            && self.authority_key_id == ca.subject_key_id
    }

    /// What no longer matches the inventory or the CA: subject, SANs, issuer.
    pub(crate) fn misfits(&self, spec: &CertSpec, ca: &CertInfo) -> Vec<String> {
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
        let missing: Vec<String> = spec
            .sans
            .difference(&self.sans)
            .map(|s| format!("+{s}"))
            .collect();
        let extra: Vec<String> = self
            .sans
            .difference(&spec.sans)
            .map(|s| format!("-{s}"))
            .collect();
        if !missing.is_empty() || !extra.is_empty() {
            why.push(format!(
                "SANs changed ({})",
                [missing, extra].concat().join(" ")
            ));
        }
        if !self.issued_by(ca) {
            why.push(format!("not signed by the current {} CA", ca.cn));
        }
        why
    }

    /// "expires in N days" within [`RENEW_BEFORE_DAYS`], "expired N days ago" after.
    pub(crate) fn expiry_problem(&self, now: OffsetDateTime) -> Option<String> {
        self.expiry_within(now, RENEW_BEFORE_DAYS)
    }

    /// "expires in N days" within `days`, "expired N days ago" after (`certs check --warn-days`).
    pub fn expiry_within(&self, now: OffsetDateTime, days: i64) -> Option<String> {
        let left = self.days_left(now);
        (left < days).then(|| {
            if left < 0 {
                format!("expired {} days ago", -left)
            } else {
                format!("expires in {left} days")
            }
        })
    }
}

/// `d` in whole days, rounded toward minus infinity (`whole_days` rounds toward zero).
fn days_floor(d: time::Duration) -> i64 {
    let whole = d.whole_days();
    if d < time::Duration::days(whole) {
        whole - 1
    } else {
        whole
    }
}

#[cfg(test)]
#[test]
fn days_left_is_negative_once_expired() {
    let h = time::Duration::hours;
    assert_eq!(days_floor(h(-12)), -1, "expired half a day ago");
    assert_eq!(days_floor(h(-24)), -1);
    assert_eq!(days_floor(h(-25)), -2);
    assert_eq!(days_floor(h(12)), 0, "expires later today");
    assert_eq!(days_floor(h(36)), 1);
    assert_eq!(days_floor(time::Duration::ZERO), 0);
}

/// A private key, as rcgen reads it (PKCS#8, SEC1 or PKCS#1 PEM).
pub(crate) fn parse_key(pem: &str) -> Result<KeyPair, Malformed> {
    KeyPair::from_pem(pem).map_err(|e| Malformed(format!("not a private key in PEM ({e})")))
}

/// A `PUBLIC KEY` PEM block; returns its DER (a SubjectPublicKeyInfo) after checking it parses.
pub(crate) fn parse_public_key(pem: &str) -> Result<Vec<u8>, Malformed> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| Malformed(format!("not a PEM public key ({e})")))?;
    if p.label != "PUBLIC KEY" {
        return Err(Malformed(format!(
            "a {} PEM block, where a PUBLIC KEY belongs",
            p.label
        )));
    }
    match x509_parser::x509::SubjectPublicKeyInfo::from_der(&p.contents) {
        Ok(([], _)) => Ok(p.contents),
        Ok(_) => Err(Malformed("trailing bytes after the public key".into())),
        Err(e) => Err(Malformed(format!("not a public key ({e})"))),
    }
}

/// Does `spki_der` (from [`parse_public_key`]) belong to `key`?
pub(crate) fn public_key_matches(spki_der: &[u8], key: &KeyPair) -> bool {
    key.subject_public_key_info() == spki_der
}

pub(crate) fn key_algorithm_of(key: &KeyPair) -> Result<KeyAlgorithm, Malformed> {
    let alg = key.algorithm();
    if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
        return Ok(KeyAlgorithm::EcdsaP256);
    }
    // RSA sizes are told apart by the modulus: the raw public key of a 4096-bit key is over 512
    // bytes, of a 2048-bit one about 270.
    if alg == &rcgen::PKCS_RSA_SHA256
        || alg == &rcgen::PKCS_RSA_SHA384
        || alg == &rcgen::PKCS_RSA_SHA512
    {
        return Ok(if key.der_bytes().len() > 400 {
            KeyAlgorithm::Rsa4096
        } else {
            KeyAlgorithm::Rsa2048
        });
    }
    Err(Malformed(
        "a key of an algorithm hardway does not use (ECDSA P-256 or RSA)".into(),
    ))
}

/// `2026-11-27 15:09Z`, as `pki check` lists expiry.
pub(crate) fn fmt_time(t: OffsetDateTime) -> String {
    format!("{} {:02}:{:02}Z", fmt_date(t), t.hour(), t.minute())
}

/// `2026-11-27T15:09:42Z`: to the second, where two issues minutes apart must compare.
pub(crate) fn fmt_seconds(t: OffsetDateTime) -> String {
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        fmt_date(t),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `2026-11-27`, for messages.
pub(crate) fn fmt_date(t: OffsetDateTime) -> String {
    format!("{:04}-{:02}-{:02}", t.year(), t.month() as u8, t.day())
}

impl CertInfo {
    /// One line of what tells this certificate apart: subject, issuer, serial, validity, SANs.
    pub fn summary(&self) -> String {
        let mut s = format!("CN={}", self.cn);
        for o in &self.orgs {
            s.push_str(&format!(" O={o}"));
        }
        s.push_str(&format!(
            ", issuer CN={}, serial {}, valid {} to {}",
            self.issuer_cn,
            self.serial,
            fmt_seconds(self.not_before),
            fmt_seconds(self.not_after)
        ));
        if !self.sans.is_empty() {
            let sans: Vec<String> = self.sans.iter().map(ToString::to_string).collect();
            s.push_str(&format!(", SANs {}", sans.join(",")));
        }
        s
    }
}

/// `text` with each PEM certificate, and each kubeconfig certificate field
/// (`client-certificate-data`, `certificate-authority-data`: base64 of PEM), replaced by a
/// line of what it is ([`CertInfo::summary`]): a diff of a renewed certificate then says what
/// changed (the serial, the dates) instead of fifty lines of base64.
pub fn describe_certificates(text: &str) -> String {
    use base64::Engine;
    const FIELDS: [&str; 2] = ["client-certificate-data", "certificate-authority-data"];
    let describe = |pem: &str| -> Vec<String> {
        pem_certificates(pem)
            .iter()
            .map(|block| match CertInfo::parse(block) {
                Ok(c) => format!("<certificate {}>", c.summary()),
                Err(e) => format!("<certificate that does not parse: {e}>"),
            })
            .collect()
    };
    let mut out = String::with_capacity(text.len());
    let mut block: Option<String> = None;
    for line in text.lines() {
        if let Some(b) = block.as_mut() {
            b.push_str(line);
            b.push('\n');
            if line.starts_with("-----END ") {
                out.push_str(&describe(b).join("\n"));
                out.push('\n');
                block = None;
            }
            continue;
        }
        if line == "-----BEGIN CERTIFICATE-----" {
            block = Some(format!("{line}\n"));
            continue;
        }
        let trimmed = line.trim_start_matches([' ', '\t']);
        let field = FIELDS.iter().find_map(|f| {
            let value = trimmed.strip_prefix(f)?.strip_prefix(':')?.trim();
            (!value.is_empty()).then_some((f, value))
        });
        match field.map(|(f, v)| (f, base64::engine::general_purpose::STANDARD.decode(v))) {
            Some((f, Ok(pem))) => out.push_str(&format!(
                "{}{f}: {}\n",
                &line[..line.len() - trimmed.len()],
                describe(&String::from_utf8_lossy(&pem)).join("; ")
            )),
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    // An unterminated block is shown as it is.
    if let Some(b) = block {
        out.push_str(&b);
    }
    out
}

/// The PEM certificate blocks of a text (a bundle has several), each with its BEGIN and END
/// lines.
pub(crate) fn pem_certificates(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        // A BEGIN starts the block anew: an unterminated one before it is dropped.
        if line == "-----BEGIN CERTIFICATE-----" {
            cur = Some(String::new());
        }
        if let Some(c) = cur.as_mut() {
            c.push_str(line);
            c.push('\n');
        }
        if line == "-----END CERTIFICATE-----" {
            out.extend(cur.take());
        }
    }
    out
}
