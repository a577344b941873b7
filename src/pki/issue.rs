//! Making keys and certificates with rcgen: CAs, leaves for a [`CertSpec`], the encryption key,
//! and the validity arithmetic (checked: a validity from the inventory can be anything).

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Date, Duration, Month, OffsetDateTime, Time};

use super::KeyedCert;
use super::error::PkiError;
use super::matrix::{CaProfile, CertSpec, San, Usage};
use crate::inventory::KeyAlgorithm;

/// The last instant a certificate can carry: GeneralizedTime has four-digit years (and `time`
/// stops there too without its large-dates feature).
fn last_x509_time() -> OffsetDateTime {
    let day = Date::from_calendar_date(9999, Month::December, 31).expect("a valid date");
    day.with_time(Time::from_hms(23, 59, 59).expect("a valid time"))
        .assume_utc()
}

/// `now + days`, or an error naming `field` when that is past [`last_x509_time`]. Checked,
/// because `OffsetDateTime + Duration` panics on overflow and the inventory may say anything.
pub(crate) fn end_of_validity(
    now: OffsetDateTime,
    field: &'static str,
    days: u32,
) -> Result<OffsetDateTime, PkiError> {
    let last = last_x509_time();
    match now.checked_add(Duration::days(i64::from(days))) {
        Some(end) if end <= last => Ok(end),
        _ => Err(PkiError::Validity {
            field,
            days,
            limit: (last - now).whole_days(),
        }),
    }
}

pub(crate) fn new_key(alg: KeyAlgorithm, name: &str) -> Result<KeyPair, PkiError> {
    match alg {
        KeyAlgorithm::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        KeyAlgorithm::Rsa2048 => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        }
        KeyAlgorithm::Rsa4096 => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_4096)
        }
    }
    .map_err(|source| PkiError::Issue {
        name: name.to_string(),
        source,
    })
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut s = [0u8; 16];
    getrandom::fill(&mut s).map_err(|source| PkiError::Random {
        what: "a serial number",
        source,
    })?;
    // Positive: the first bit of a DER INTEGER is its sign.
    s[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&s))
}

/// 32 random bytes, base64, as the EncryptionConfiguration's aescbc provider wants them.
pub(crate) fn new_encryption_key() -> Result<String, PkiError> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|source| PkiError::Random {
        what: "the encryption key",
        source,
    })?;
    Ok(base64::engine::general_purpose::STANDARD.encode(raw))
}

fn params(
    cn: &str,
    now: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.serial_number = Some(random_serial()?);
    // A little backdating absorbs clock skew between the host that issues and the nodes.
    params.not_before = now - Duration::minutes(5);
    params.not_after = not_after;
    Ok(params)
}

/// A self-signed CA with a new key; returns the key too, for signing the leaves.
pub(crate) fn issue_ca(
    ca: &CaProfile,
    alg: KeyAlgorithm,
    now: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<(KeyedCert, KeyPair), PkiError> {
    let key = new_key(alg, ca.file)?;
    let mut params = params(ca.cn, now, not_after)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).map_err(|source| PkiError::Issue {
        name: ca.file.to_string(),
        source,
    })?;
    Ok((
        KeyedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        },
        key,
    ))
}

/// A leaf for `spec`, with `key` (PEM and parsed) when one is kept, else with a new key.
pub(crate) fn issue_leaf(
    spec: &CertSpec,
    key: Option<(String, KeyPair)>,
    alg: KeyAlgorithm,
    issuer: &Issuer<'_, &KeyPair>,
    now: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<KeyedCert, PkiError> {
    let (key_pem, key) = match key {
        Some(kept) => kept,
        None => {
            let key = new_key(alg, &spec.name)?;
            (key.serialize_pem(), key)
        }
    };
    let issue_err = |source| PkiError::Issue {
        name: spec.name.clone(),
        source,
    };
    let mut params = params(&spec.cn, now, not_after)?;
    for o in &spec.orgs {
        params
            .distinguished_name
            .push(DnType::OrganizationName, o.as_str());
    }
    params.subject_alt_names = spec
        .sans
        .iter()
        .map(|s| match s {
            San::Dns(d) => Ok(SanType::DnsName(d.clone().try_into()?)),
            San::Ip(ip) => Ok(SanType::IpAddress(*ip)),
        })
        .collect::<Result<_, rcgen::Error>>()
        .map_err(issue_err)?;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = match spec.usage {
        Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        Usage::ServerAndClient => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    };
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, issuer).map_err(issue_err)?;
    Ok(KeyedCert {
        cert_pem: cert.pem(),
        key_pem,
    })
}
