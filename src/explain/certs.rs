//! The PKI section: every CA and certificate the selected parts need, from the PKI matrix, made
//! with openssl (a config file per certificate: subject, usages, SANs) or with cfssl (a CSR
//! JSON per certificate, `-hostname` for the SANs, profiles by usage), in hardway's layout
//! (`pki/NAME.crt` beside `pki/NAME.key`, PKCS#8 keys) so that `hardway pki check`, `render`
//! and `verify --pki` read the result. Each file is made only when it is missing. Configs,
//! CSRs and serials go to `csr/`.

use std::collections::BTreeSet;
use std::path::Path;

use super::phases::Needs;
use super::{ExplainError, Script, Tool, quote};
use crate::inventory::{Inventory, KeyAlgorithm};
use crate::pki::{CAS, CaProfile, CertSpec, San, Usage, matrix};

pub(crate) fn section(
    inv: &Inventory,
    tool: Tool,
    needs: &Needs,
    s: &mut Script,
) -> Result<(), ExplainError> {
    let specs: Vec<CertSpec> = matrix(inv)
        .into_iter()
        .filter(|c| needs.leaves.contains(&c.name))
        .collect();
    let cas: Vec<&CaProfile> = CAS
        .iter()
        .filter(|c| needs.cas.contains(&c.id) || specs.iter().any(|l| l.ca == c.id))
        .collect();
    if cas.is_empty() && !needs.sa && !needs.encryption_key {
        return Ok(());
    }
    s.section(match tool {
        Tool::Openssl => "Certificates, with openssl: a key, a config (subject, usages, SANs), a CSR, signed by its CA",
        Tool::Cfssl => "Certificates, with cfssl: a CSR in JSON, signed by its CA with a profile per usage; cfssljson writes the files",
    });
    let dirs: BTreeSet<String> = cas
        .iter()
        .map(|c| c.file)
        .chain(specs.iter().map(|c| c.name.as_str()))
        .filter_map(|f| {
            Path::new(f)
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(|p| p.display().to_string())
        })
        .collect();
    let mkdirs: Vec<String> = dirs
        .iter()
        .flat_map(|d| [format!("pki/{d}"), format!("csr/{d}")])
        .collect();
    s.line(format!("mkdir -p pki csr {}", mkdirs.join(" ")).trim_end());
    if tool == Tool::Cfssl {
        s.comment(
            "One signing profile per usage: what a certificate may be used for, and how long.",
        );
        s.line("if [ ! -f csr/ca-config.json ]; then");
        s.heredoc(
            "csr/ca-config.json",
            &cfssl_profiles(inv.pki.cert_validity_days),
            "ca-config.json",
        )?;
        s.line("fi");
    }
    for ca in &cas {
        s.blank();
        s.comment(format!(
            "CA {}: CN={}, {} days",
            ca.file, ca.cn, inv.pki.ca_validity_days
        ));
        s.line(format!("if [ ! -f pki/{}.crt ]; then", ca.file));
        match tool {
            Tool::Openssl => openssl_ca(inv, ca, s)?,
            Tool::Cfssl => cfssl_ca(inv, ca, s)?,
        }
        s.line("fi");
    }
    for spec in &specs {
        let ca = CAS
            .iter()
            .find(|c| c.id == spec.ca)
            .expect("every CaId has a row in CAS");
        s.blank();
        s.comment(format!(
            "{}: {}, {}, signed by {}, {} days",
            spec.name,
            subject(spec).replace('/', " ").trim(),
            usage_words(spec.usage),
            ca.file,
            inv.pki.cert_validity_days
        ));
        if !spec.sans.is_empty() {
            s.comment(format!(
                "SANs: {}",
                spec.sans
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        s.line(format!("if [ ! -f pki/{}.crt ]; then", spec.name));
        match tool {
            Tool::Openssl => openssl_leaf(inv, spec, ca, s)?,
            Tool::Cfssl => cfssl_leaf(inv, spec, ca, s)?,
        }
        s.line("fi");
    }
    if needs.sa {
        s.blank();
        s.comment("The service-account key pair: the API server signs tokens with it (openssl with either tool).");
        s.line(format!("if [ ! -f pki/{} ]; then", crate::pki::SA_KEY_FILE));
        s.line(format!(
            "  {}",
            genpkey(
                inv.pki.algorithm,
                &format!("pki/{}", crate::pki::SA_KEY_FILE)
            )
        ));
        s.line(format!(
            "  openssl pkey -in pki/{} -pubout -out pki/{}",
            crate::pki::SA_KEY_FILE,
            crate::pki::SA_PUB_FILE
        ));
        s.line("fi");
    }
    if needs.encryption_key {
        s.blank();
        s.comment("The key Secrets are encrypted with in etcd: 32 random bytes, base64. Lose it and no Secret can be read.");
        s.line(format!(
            "[ -f pki/{0} ] || head -c 32 /dev/urandom | base64 > pki/{0}",
            crate::pki::ENCRYPTION_KEY_FILE
        ));
    }
    Ok(())
}

fn usage_words(u: Usage) -> &'static str {
    match u {
        Usage::Client => "client",
        Usage::Server => "server",
        Usage::ServerAndClient => "server and client",
    }
}

/// `/CN=…/O=…`.
fn subject(spec: &CertSpec) -> String {
    let mut s = format!("/CN={}", spec.cn);
    for o in &spec.orgs {
        s.push_str(&format!("/O={o}"));
    }
    s
}

fn genpkey(alg: KeyAlgorithm, out: &str) -> String {
    let how = match alg {
        KeyAlgorithm::EcdsaP256 => "-algorithm EC -pkeyopt ec_paramgen_curve:P-256",
        KeyAlgorithm::Rsa2048 => "-algorithm RSA -pkeyopt rsa_keygen_bits:2048",
        KeyAlgorithm::Rsa4096 => "-algorithm RSA -pkeyopt rsa_keygen_bits:4096",
    };
    format!("openssl genpkey {how} -out {out}")
}

fn openssl_ca(inv: &Inventory, ca: &CaProfile, s: &mut Script) -> Result<(), ExplainError> {
    let cnf = format!("csr/{}.cnf", ca.file);
    let config = format!(
        "[req]\nprompt = no\ndistinguished_name = dn\nx509_extensions = ca\n[dn]\nCN = {}\n[ca]\n\
         basicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign, digitalSignature\nsubjectKeyIdentifier = hash\n",
        ca.cn
    );
    s.heredoc(&cnf, &config, &cnf)?;
    s.line(format!(
        "  {}",
        genpkey(inv.pki.algorithm, &format!("pki/{}.key", ca.file))
    ));
    s.line(format!("  openssl req -x509 -new -config {cnf} -key pki/{0}.key -sha256 -days {1} -out pki/{0}.crt", ca.file, inv.pki.ca_validity_days));
    Ok(())
}

fn openssl_leaf(
    inv: &Inventory,
    spec: &CertSpec,
    ca: &CaProfile,
    s: &mut Script,
) -> Result<(), ExplainError> {
    let cnf = format!("csr/{}.cnf", spec.name);
    let mut config = format!(
        "[req]\nprompt = no\ndistinguished_name = dn\n[dn]\nCN = {}\n",
        spec.cn
    );
    for o in &spec.orgs {
        config.push_str(&format!("O = {o}\n"));
    }
    let eku = match spec.usage {
        Usage::Client => "clientAuth",
        Usage::Server => "serverAuth",
        Usage::ServerAndClient => "serverAuth, clientAuth",
    };
    config.push_str(&format!(
        "[ext]\nbasicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature, keyEncipherment\nextendedKeyUsage = {eku}\n\
         authorityKeyIdentifier = keyid\n"
    ));
    if !spec.sans.is_empty() {
        let sans: Vec<String> = spec.sans.iter().map(|s| s.to_string()).collect();
        config.push_str(&format!("subjectAltName = {}\n", sans.join(", ")));
    }
    s.heredoc(&cnf, &config, &cnf)?;
    let (n, c) = (&spec.name, ca.file);
    s.line(format!(
        "  {}",
        genpkey(inv.pki.algorithm, &format!("pki/{n}.key"))
    ));
    s.line(format!(
        "  openssl req -new -config {cnf} -key pki/{n}.key -out csr/{n}.csr"
    ));
    s.line(format!(
        "  openssl x509 -req -in csr/{n}.csr -CA pki/{c}.crt -CAkey pki/{c}.key -CAserial csr/{c}.srl -CAcreateserial -days {} -sha256 -extfile {cnf} -extensions ext -out pki/{n}.crt",
        inv.pki.cert_validity_days
    ));
    Ok(())
}

fn cfssl_key(alg: KeyAlgorithm) -> serde_json::Value {
    match alg {
        KeyAlgorithm::EcdsaP256 => serde_json::json!({"algo": "ecdsa", "size": 256}),
        KeyAlgorithm::Rsa2048 => serde_json::json!({"algo": "rsa", "size": 2048}),
        KeyAlgorithm::Rsa4096 => serde_json::json!({"algo": "rsa", "size": 4096}),
    }
}

fn cfssl_profiles(days: u32) -> String {
    let hours = format!("{}h", u64::from(days) * 24);
    let profile = |usages: &[&str]| serde_json::json!({"usages": usages, "expiry": hours});
    let v = serde_json::json!({"signing": {"default": {"expiry": hours}, "profiles": {
        "client": profile(&["signing", "key encipherment", "client auth"]),
        "server": profile(&["signing", "key encipherment", "server auth"]),
        "server-and-client": profile(&["signing", "key encipherment", "server auth", "client auth"]),
    }}});
    serde_json::to_string_pretty(&v).expect("JSON") + "\n"
}

/// cfssljson writes NAME.pem, NAME-key.pem and NAME.csr under csr/: the certificate and the
/// key (as PKCS#8, what hardway reads) go to pki/.
fn cfssl_move(name: &str, s: &mut Script) {
    s.line(format!("  mv csr/{name}.pem pki/{name}.crt"));
    s.line(format!(
        "  openssl pkey -in csr/{name}-key.pem -out pki/{name}.key && rm csr/{name}-key.pem"
    ));
}

fn cfssl_ca(inv: &Inventory, ca: &CaProfile, s: &mut Script) -> Result<(), ExplainError> {
    let csr = format!("csr/{}-csr.json", ca.file);
    let hours = format!("{}h", u64::from(inv.pki.ca_validity_days) * 24);
    let json = serde_json::json!({"CN": ca.cn, "key": cfssl_key(inv.pki.algorithm), "ca": {"expiry": hours}});
    s.heredoc(
        &csr,
        &(serde_json::to_string_pretty(&json).expect("JSON") + "\n"),
        &csr,
    )?;
    s.line(format!(
        "  cfssl gencert -initca {csr} | cfssljson -bare csr/{}",
        ca.file
    ));
    cfssl_move(ca.file, s);
    Ok(())
}

fn cfssl_leaf(
    inv: &Inventory,
    spec: &CertSpec,
    ca: &CaProfile,
    s: &mut Script,
) -> Result<(), ExplainError> {
    let csr = format!("csr/{}-csr.json", spec.name);
    let mut json = serde_json::json!({"CN": spec.cn, "key": cfssl_key(inv.pki.algorithm)});
    if !spec.orgs.is_empty() {
        json["names"] = spec
            .orgs
            .iter()
            .map(|o| serde_json::json!({"O": o}))
            .collect();
    }
    s.heredoc(
        &csr,
        &(serde_json::to_string_pretty(&json).expect("JSON") + "\n"),
        &csr,
    )?;
    let profile = match spec.usage {
        Usage::Client => "client",
        Usage::Server => "server",
        Usage::ServerAndClient => "server-and-client",
    };
    let hosts: Vec<String> = spec
        .sans
        .iter()
        .map(|s| match s {
            San::Dns(d) => d.clone(),
            San::Ip(ip) => ip.to_string(),
        })
        .collect();
    let hostname = if hosts.is_empty() {
        String::new()
    } else {
        format!(" -hostname={}", quote(&hosts.join(",")))
    };
    s.line(format!(
        "  cfssl gencert -ca=pki/{c}.crt -ca-key=pki/{c}.key -config=csr/ca-config.json -profile={profile}{hostname} {csr} | cfssljson -bare csr/{n}",
        c = ca.file,
        n = spec.name
    ));
    cfssl_move(&spec.name, s);
    Ok(())
}
