//! Which names and addresses a serving certificate must cover, judged by what the cluster runs
//! rather than by hardway's conventions, so a cluster built by hand is held to its own design:
//!
//! - **required** (missing: FAIL): every host in the URLs and address flags of the unit that
//!   serves it (`CertSite::urls`: etcd's `--advertise-client-urls`, `--listen-client-urls`, …),
//!   every host its clients' units use to reach it ([`CLIENTS`]: kube-apiserver's
//!   `--etcd-servers`), the inventory's address of the node (what hardway and the inventory's
//!   users dial), and for the API server the load balancer's address and the first service IP;
//! - **conventional** (missing: WARN): the SANs hardway's own certificate would carry beyond
//!   those (the node's name, `localhost`, …). Nothing configured uses them; the WARN says which
//!   client would be refused if one did.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::pki::San;

/// Units that reach another component's certificate: the client's unit, the flag with the URLs
/// it dials, and the certificate site (`CertSite::what`) those URLs reach on the node they name.
pub(crate) const CLIENTS: &[(&str, &str, &str)] =
    &[("kube-apiserver", "etcd-servers", "etcd server")];

/// What one serving certificate must cover, and why.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sans {
    /// Each required SAN with who uses it ("--advertise-client-urls", "kube-apiserver
    /// --etcd-servers on m2").
    pub required: BTreeMap<San, BTreeSet<String>>,
    /// hardway's convention for this certificate (the PKI matrix).
    pub conventional: BTreeSet<San>,
    /// How clients reach it (`https`, port), for naming a refused client in a WARN.
    pub scheme_port: Option<(String, u16)>,
}

impl Sans {
    pub fn require(&mut self, san: San, why: impl Into<String>) {
        self.required.entry(san).or_default().insert(why.into());
    }
}

/// One host named in a URL (`https://10.0.0.1:2379`) or an address flag (`10.0.0.1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub scheme: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

/// The endpoints of a flag's value: comma-separated URLs or bare addresses.
pub(crate) fn endpoints(value: &str) -> Vec<Endpoint> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let (scheme, rest) = match item.split_once("://") {
                Some((s, r)) => (Some(s.to_ascii_lowercase()), r),
                None => (None, item),
            };
            let authority = rest.split('/').next().unwrap_or_default();
            let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
                let (h, after) = v6.split_once(']').unwrap_or((v6, ""));
                (
                    h.to_string(),
                    after.strip_prefix(':').and_then(|p| p.parse().ok()),
                )
            } else if authority.matches(':').count() == 1 {
                let (h, p) = authority.split_once(':').expect("one colon");
                (h.to_string(), p.parse().ok())
            } else {
                // A bare address, IPv6 included.
                (authority.to_string(), None)
            };
            Endpoint { scheme, host, port }
        })
        .collect()
}

/// The SAN a client dialing `host` checks; none for a wildcard listen address.
pub(crate) fn san_of_host(host: &str) -> Option<San> {
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() => None,
        Ok(ip) => Some(San::Ip(ip)),
        Err(_) if host.is_empty() => None,
        Err(_) => Some(San::Dns(host.to_ascii_lowercase())),
    }
}

/// Does a certificate with `sans` satisfy a client that checks `want`? DNS names compare
/// without case, and `*.example.org` covers exactly one label.
pub(crate) fn covers(sans: &BTreeSet<San>, want: &San) -> bool {
    if sans.contains(want) {
        return true;
    }
    let San::Dns(name) = want else { return false };
    sans.iter().any(|s| match s {
        San::Dns(d) if d.eq_ignore_ascii_case(name) => true,
        San::Dns(d) => d.strip_prefix("*.").is_some_and(|suffix| {
            name.split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(suffix))
        }),
        San::Ip(_) => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_of_urls_and_addresses() {
        let e = endpoints(
            "https://10.0.0.1:2379, https://[fd00::1]:2379/x,http://etcd-1:80,10.0.0.9,fd00::2,[fd00::3]:6443",
        );
        let hosts: Vec<(&str, Option<u16>)> = e.iter().map(|e| (e.host.as_str(), e.port)).collect();
        assert_eq!(
            hosts,
            [
                ("10.0.0.1", Some(2379)),
                ("fd00::1", Some(2379)),
                ("etcd-1", Some(80)),
                ("10.0.0.9", None),
                ("fd00::2", None),
                ("fd00::3", Some(6443))
            ]
        );
        assert_eq!(e[0].scheme.as_deref(), Some("https"));
        assert_eq!(e[3].scheme, None);
    }

    #[test]
    fn wildcard_listen_addresses_need_no_san() {
        assert_eq!(san_of_host("0.0.0.0"), None);
        assert_eq!(san_of_host("::"), None);
        assert_eq!(san_of_host("Lab-M1"), Some(San::Dns("lab-m1".into())));
        assert_eq!(
            san_of_host("127.0.0.1"),
            Some(San::Ip([127, 0, 0, 1].into()))
        );
    }

    #[test]
    fn coverage_by_exact_name_address_and_one_label_wildcard() {
        let sans: BTreeSet<San> = [
            San::Dns("*.lab.local".into()),
            San::Dns("M1".into()),
            San::Ip([10, 0, 0, 1].into()),
        ]
        .into();
        assert!(covers(&sans, &San::Dns("m1".into())));
        assert!(covers(&sans, &San::Dns("m2.lab.local".into())));
        assert!(!covers(&sans, &San::Dns("a.m2.lab.local".into())));
        assert!(!covers(&sans, &San::Dns("lab.local".into())));
        assert!(covers(&sans, &San::Ip([10, 0, 0, 1].into())));
        assert!(!covers(&sans, &San::Ip([10, 0, 0, 2].into())));
    }
}
