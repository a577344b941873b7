//! Direct checks from the operator's machine to the cluster's endpoints, without SSH: each etcd
//! member's Status over mTLS, the member list and alarms, and GETs to API servers over TLS.
//!
//! Every member is asked with its own client — a client given several endpoints answers for
//! whichever it picked, which would hide a dead member. The cluster is healthy when every member
//! answers and all name the same, non-zero leader. Deploy waits on that ([`wait_healthy`]) to
//! bootstrap etcd and between the steps of a rolling restart; verify reports it.
//!
//! [`Probe`] is the seam: [`NetProbe`] talks to the real endpoints, `remote::fake::FakeCluster`
//! answers from its in-memory nodes.

use std::future::Future;
use std::net::{IpAddr, TcpStream};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use serde::Serialize;

use crate::components::Port;
use crate::etcd::{EtcdError, Operation};
use crate::inventory::{Inventory, Node, host_for_url};
use crate::pki::{CaId, Pki};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What one member said, or why it said nothing.
#[derive(Debug, Clone, Serialize)]
pub struct MemberStatus {
    pub name: String,
    pub address: IpAddr,
    pub member_id: Option<u64>,
    pub leader: Option<u64>,
    pub raft_index: Option<u64>,
    pub db_size: Option<i64>,
    pub version: Option<String>,
    pub errors: Vec<String>,
    pub error: Option<String>,
}

impl MemberStatus {
    pub fn no_answer(name: &str, address: IpAddr, error: impl Into<String>) -> MemberStatus {
        MemberStatus {
            name: name.to_string(),
            address,
            member_id: None,
            leader: None,
            raft_index: None,
            db_size: None,
            version: None,
            errors: vec![],
            error: Some(error.into()),
        }
    }

    pub fn answered(&self) -> bool {
        self.error.is_none()
    }
}

/// An etcd member as the member list shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EtcdMember {
    pub id: u64,
    /// Empty for a member added but not started yet.
    pub name: String,
    /// Its first peer URL.
    pub peer_url: String,
    pub learner: bool,
}

pub type Membership = Vec<EtcdMember>;

/// The endpoints' side of the cluster, as seen from the operator's machine.
pub trait Probe: Send + Sync {
    /// One etcd member's Status, within `timeout`.
    fn etcd_member<'a>(
        &'a self,
        name: &'a str,
        address: IpAddr,
        timeout: Duration,
    ) -> BoxFuture<'a, MemberStatus>;

    /// The member list and active alarms, asked of the member at `address`.
    fn etcd_membership(
        &self,
        address: IpAddr,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<(Membership, Vec<String>), EtcdError>>;

    /// Adds a member (as a learner: it gets no vote until promoted), through the member at
    /// `address`; its new ID.
    fn etcd_member_add<'a>(
        &'a self,
        address: IpAddr,
        peer_url: &'a str,
    ) -> BoxFuture<'a, Result<u64, EtcdError>>;

    /// Gives a learner its vote; fails while it has not caught up with the leader.
    fn etcd_member_promote(&self, address: IpAddr, id: u64)
    -> BoxFuture<'_, Result<(), EtcdError>>;

    /// Removes a member, through the member at `address` (not the one removed).
    fn etcd_member_remove(&self, address: IpAddr, id: u64) -> BoxFuture<'_, Result<(), EtcdError>>;

    /// Asks the leader at `leader` to hand leadership to member `to` (etcd's MoveLeader).
    fn etcd_move_leader(&self, leader: IpAddr, to: u64) -> BoxFuture<'_, Result<(), EtcdError>>;

    /// Streams a snapshot of the keyspace from the member at `address` into `out`; the bytes
    /// written and the member's revision.
    fn etcd_snapshot<'a>(
        &'a self,
        address: IpAddr,
        out: &'a mut (dyn std::io::Write + Send),
    ) -> BoxFuture<'a, Result<(u64, i64), EtcdError>>;

    /// GET `path` from the API server at `address:port`, as the admin: status code and body.
    fn api_get<'a>(
        &'a self,
        address: IpAddr,
        port: u16,
        path: &'a str,
    ) -> BoxFuture<'a, Result<(u16, String), String>> {
        self.api_request(address, port, ApiRequest::get(path))
    }

    /// Sends `request` to the API server at `address:port`, as the admin: status code and body.
    fn api_request<'a>(
        &'a self,
        address: IpAddr,
        port: u16,
        request: ApiRequest<'a>,
    ) -> BoxFuture<'a, Result<(u16, String), String>>;

    /// The member at `address` serves clients on `port`, not etcd's default (a hand-built
    /// member's unit says so; verify reads it). Probes that do not model ports ignore it.
    fn set_etcd_port(&self, _address: IpAddr, _port: u16) {}
}

/// The client identity used for etcd health checks (`etcd/healthcheck-client`).
#[derive(Clone)]
pub struct EtcdAuth {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for EtcdAuth {
    // The key never reaches a log, not even through a stray `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EtcdAuth(<redacted>)")
    }
}

impl EtcdAuth {
    pub fn from_pki(pki: &Pki) -> EtcdAuth {
        let c = pki.cert("etcd/healthcheck-client");
        EtcdAuth {
            ca_pem: pki.ca(CaId::Etcd).cert_pem.clone(),
            cert_pem: c.cert_pem.clone(),
            key_pem: c.key_pem.clone(),
        }
    }

    pub fn from_pem(ca_pem: String, cert_pem: String, key_pem: String) -> EtcdAuth {
        EtcdAuth {
            ca_pem,
            cert_pem,
            key_pem,
        }
    }

    fn connect_options(&self, timeout: Duration) -> ConnectOptions {
        let tls = TlsOptions::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem));
        ConnectOptions::new()
            .with_tls(tls)
            .with_connect_timeout(timeout)
            .with_timeout(timeout)
    }
}

/// An etcd client for the one member at `address` (never several: a client given several
/// endpoints answers for whichever it picked).
pub async fn etcd_client(
    auth: &EtcdAuth,
    address: IpAddr,
    port: u16,
    timeout: Duration,
) -> Result<Client, EtcdError> {
    let url = format!("https://{}:{port}", host_for_url(address));
    Client::connect([url.as_str()], Some(auth.connect_options(timeout)))
        .await
        .map_err(|e| EtcdError::Unreachable {
            message: e.to_string(),
            url,
        })
}

/// An mTLS client configuration for the API servers: the cluster CA and a client certificate.
pub fn api_tls_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    let err = |what: &str, e: &dyn std::fmt::Display| format!("{what}: {e}");
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(c.map_err(|e| err("the cluster CA", &e))?)
            .map_err(|e| err("the cluster CA", &e))?;
    }
    let chain: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| err("the client certificate", &e))?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| err("the client key", &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err("TLS", &e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| err("the client certificate", &e))?;
    Ok(Arc::new(config))
}

/// The real endpoints: etcd-client for etcd, rustls for the API servers.
#[derive(Debug, Default, Clone)]
pub struct NetProbe {
    pub etcd: Option<EtcdAuth>,
    pub api: Option<Arc<rustls::ClientConfig>>,
    /// etcd's client port (the component table's).
    pub etcd_port: u16,
    /// Members that serve clients on another port (`Probe::set_etcd_port`).
    pub etcd_ports: Arc<std::sync::Mutex<std::collections::BTreeMap<IpAddr, u16>>>,
}

impl NetProbe {
    pub fn new(
        inv: &Inventory,
        etcd: Option<EtcdAuth>,
        api: Option<Arc<rustls::ClientConfig>>,
    ) -> NetProbe {
        NetProbe {
            etcd,
            api,
            etcd_port: Port::EtcdClient.number(inv),
            etcd_ports: Arc::default(),
        }
    }

    fn etcd_port_of(&self, address: IpAddr) -> u16 {
        self.etcd_ports
            .lock()
            .map(|m| m.get(&address).copied())
            .ok()
            .flatten()
            .unwrap_or(self.etcd_port)
    }

    async fn etcd_client(&self, address: IpAddr, timeout: Duration) -> Result<Client, EtcdError> {
        let auth = self.etcd.as_ref().ok_or(EtcdError::NoCredentials)?;
        etcd_client(auth, address, self.etcd_port_of(address), timeout).await
    }
}

impl Probe for NetProbe {
    fn etcd_member<'a>(
        &'a self,
        name: &'a str,
        address: IpAddr,
        timeout: Duration,
    ) -> BoxFuture<'a, MemberStatus> {
        Box::pin(async move {
            let url = format!(
                "https://{}:{}",
                host_for_url(address),
                self.etcd_port_of(address)
            );
            let result = tokio::time::timeout(timeout * 2, async {
                let mut client = self.etcd_client(address, timeout).await?;
                client.status().await.map_err(|e| EtcdError::Unreachable {
                    url: url.clone(),
                    message: e.to_string(),
                })
            })
            .await;
            match result {
                Err(_) => MemberStatus::no_answer(
                    name,
                    address,
                    format!("{url}: no answer within {} s", (timeout * 2).as_secs()),
                ),
                Ok(Err(e)) => MemberStatus::no_answer(name, address, e.to_string()),
                Ok(Ok(st)) => MemberStatus {
                    name: name.to_string(),
                    address,
                    member_id: st.header().map(|h| h.member_id()),
                    leader: Some(st.leader()),
                    raft_index: Some(st.raft_index()),
                    db_size: Some(st.db_size()),
                    version: Some(st.version().to_string()),
                    errors: st.errors().to_vec(),
                    error: None,
                },
            }
        })
    }

    fn etcd_membership(
        &self,
        address: IpAddr,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<(Membership, Vec<String>), EtcdError>> {
        Box::pin(async move {
            let mut client = self.etcd_client(address, timeout).await?;
            let members = client
                .member_list()
                .await
                .map_err(|e| EtcdError::refused(Operation::MemberList, e))?
                .members()
                .iter()
                .map(|m| EtcdMember {
                    id: m.id(),
                    name: m.name().to_string(),
                    peer_url: m.peer_urls().first().cloned().unwrap_or_default(),
                    learner: m.is_learner(),
                })
                .collect();
            let alarms = client
                .alarm(
                    etcd_client::AlarmAction::Get,
                    etcd_client::AlarmType::None,
                    None,
                )
                .await
                .map_err(|e| EtcdError::refused(Operation::Alarms, e))?
                .alarms()
                .iter()
                .map(|a| format!("{:?} on member {:x}", a.alarm(), a.member_id()))
                .collect();
            Ok((members, alarms))
        })
    }

    fn etcd_member_add<'a>(
        &'a self,
        address: IpAddr,
        peer_url: &'a str,
    ) -> BoxFuture<'a, Result<u64, EtcdError>> {
        Box::pin(async move {
            let mut client = self.etcd_client(address, Duration::from_secs(5)).await?;
            let opts = etcd_client::MemberAddOptions::new().with_is_learner();
            let added = client
                .member_add([peer_url], Some(opts))
                .await
                .map_err(|e| EtcdError::refused(Operation::MemberAdd, e))?;
            added.member().map(|m| m.id()).ok_or(EtcdError::Incomplete {
                operation: Operation::MemberAdd,
                missing: "the new member",
            })
        })
    }

    fn etcd_member_promote(
        &self,
        address: IpAddr,
        id: u64,
    ) -> BoxFuture<'_, Result<(), EtcdError>> {
        Box::pin(async move {
            let mut client = self.etcd_client(address, Duration::from_secs(5)).await?;
            client
                .member_promote(id)
                .await
                .map(|_| ())
                .map_err(|e| EtcdError::refused(Operation::MemberPromote, e))
        })
    }

    fn etcd_member_remove(&self, address: IpAddr, id: u64) -> BoxFuture<'_, Result<(), EtcdError>> {
        Box::pin(async move {
            let mut client = self.etcd_client(address, Duration::from_secs(5)).await?;
            client
                .member_remove(id)
                .await
                .map(|_| ())
                .map_err(|e| EtcdError::refused(Operation::MemberRemove, e))
        })
    }

    fn etcd_move_leader(&self, leader: IpAddr, to: u64) -> BoxFuture<'_, Result<(), EtcdError>> {
        Box::pin(async move {
            let mut client = self.etcd_client(leader, Duration::from_secs(5)).await?;
            client
                .move_leader(to)
                .await
                .map(|_| ())
                .map_err(|e| EtcdError::refused(Operation::MoveLeader, e))
        })
    }

    fn etcd_snapshot<'a>(
        &'a self,
        address: IpAddr,
        out: &'a mut (dyn std::io::Write + Send),
    ) -> BoxFuture<'a, Result<(u64, i64), EtcdError>> {
        Box::pin(async move {
            let mut client = self.etcd_client(address, Duration::from_secs(10)).await?;
            // The revision first: the snapshot holds at least everything up to it.
            let revision = client
                .status()
                .await
                .map_err(|e| EtcdError::refused(Operation::Status, e))?
                .header()
                .map(|h| h.revision())
                .unwrap_or(0);
            let mut stream = client
                .snapshot()
                .await
                .map_err(|e| EtcdError::refused(Operation::Snapshot, e))?;
            let mut size = 0u64;
            while let Some(chunk) = stream
                .message()
                .await
                .map_err(|e| EtcdError::refused(Operation::Snapshot, e))?
            {
                out.write_all(chunk.blob())
                    .map_err(|e| EtcdError::Write(e.to_string()))?;
                size += chunk.blob().len() as u64;
            }
            Ok((size, revision))
        })
    }

    fn set_etcd_port(&self, address: IpAddr, port: u16) {
        if let Ok(mut m) = self.etcd_ports.lock() {
            m.insert(address, port);
        }
    }

    fn api_request<'a>(
        &'a self,
        address: IpAddr,
        port: u16,
        request: ApiRequest<'a>,
    ) -> BoxFuture<'a, Result<(u16, String), String>> {
        let config = self.api.clone();
        let (method, path) = (request.method, request.path.to_string());
        let body = request.body.map(|(t, b)| (t, b.to_string()));
        Box::pin(async move {
            let config = config.ok_or("no cluster CA or admin certificate")?;
            tokio::task::spawn_blocking(move || {
                let body = body.as_ref().map(|(t, b)| (*t, b.as_str()));
                https_request(address, port, method, &path, body, &config)
            })
            .await
            .map_err(|e| format!("the request task failed: {e}"))?
        })
    }
}

/// One request to an API server: a method, a path and, for writes, a body and its type.
#[derive(Debug, Clone, Copy)]
pub struct ApiRequest<'a> {
    pub method: &'static str,
    pub path: &'a str,
    /// The body's content type and text.
    pub body: Option<(&'static str, &'a str)>,
}

impl<'a> ApiRequest<'a> {
    pub fn get(path: &'a str) -> ApiRequest<'a> {
        ApiRequest {
            method: "GET",
            path,
            body: None,
        }
    }
}

/// A request over TLS; HTTP/1.0 so the answer is never chunked.
fn https_request(
    addr: IpAddr,
    port: u16,
    method: &str,
    path: &str,
    body: Option<(&str, &str)>,
    config: &Arc<rustls::ClientConfig>,
) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let sock = std::net::SocketAddr::new(addr, port);
    let tcp = TcpStream::connect_timeout(&sock, Duration::from_secs(3))
        .map_err(|e| format!("connecting to {sock}: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let server = rustls::pki_types::ServerName::IpAddress(addr.into());
    let conn = rustls::ClientConnection::new(config.clone(), server).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let (content, text) = match body {
        Some((kind, text)) => (
            format!("Content-Type: {kind}\r\nContent-Length: {}\r\n", text.len()),
            text,
        ),
        None => (String::new(), ""),
    };
    write!(
        tls,
        "{method} {path} HTTP/1.0\r\nHost: {}\r\nAccept: application/json\r\n{content}\r\n{text}",
        host_for_url(addr)
    )
    .map_err(|e| format!("sending to {sock}: {e}"))?;
    let mut buf = Vec::new();
    match tls.read_to_end(&mut buf) {
        Ok(_) => {}
        // Servers that close without close_notify still sent a whole HTTP/1.0 answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => {}
        Err(e) => return Err(format!("reading {path} from {sock}: {}", readable(&e))),
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_string()))
}

/// An error of a TLS stream in words: rustls shows a refused certificate with its Debug text
/// (`NotValidForNameContext { expected: IpAddress(V4(…`), which is no message for a user.
fn readable(e: &std::io::Error) -> String {
    use rustls::pki_types::ServerName;
    use rustls::{CertificateError, Error};
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) else {
        return e.to_string();
    };
    let Error::InvalidCertificate(cert) = tls else {
        return tls.to_string();
    };
    let secs = |t: &rustls::pki_types::UnixTime| {
        time::OffsetDateTime::from_unix_timestamp(t.as_secs() as i64)
            .map(|d| d.date().to_string())
            .unwrap_or_else(|_| t.as_secs().to_string())
    };
    match cert {
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => {
            let expected = match expected {
                ServerName::IpAddress(ip) => IpAddr::from(*ip).to_string(),
                ServerName::DnsName(name) => name.as_ref().to_string(),
                other => format!("{other:?}"),
            };
            format!(
                "the server's certificate is not valid for {expected}: its names are {}",
                presented.join(", ")
            )
        }
        CertificateError::NotValidForName => {
            "the server's certificate is not valid for the address dialled".into()
        }
        CertificateError::ExpiredContext { not_after, .. } => {
            format!("the server's certificate expired on {}", secs(not_after))
        }
        CertificateError::Expired => "the server's certificate has expired".into(),
        CertificateError::NotValidYetContext { not_before, .. } => format!(
            "the server's certificate is not valid before {}",
            secs(not_before)
        ),
        CertificateError::NotValidYet => "the server's certificate is not valid yet".into(),
        CertificateError::UnknownIssuer => {
            "the server's certificate is not signed by the CA given (another cluster's?)".into()
        }
        CertificateError::BadSignature => "the server's certificate has a bad signature".into(),
        other => format!("the server's certificate was refused: {other:?}"),
    }
}

/// Polls `/readyz` of the API server at `address:port` until it answers 200; at the deadline,
/// its last answer (a status and body, or why it did not answer).
pub async fn wait_readyz(
    probe: &dyn Probe,
    address: IpAddr,
    port: u16,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe.api_get(address, port, "/readyz").await {
            Ok((200, _)) => return Ok(()),
            Ok((code, body)) => format!("{code}: {}", body.trim()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every listed member's status, asked concurrently.
pub async fn cluster_status(
    probe: &dyn Probe,
    members: &[&Node],
    timeout: Duration,
) -> Vec<MemberStatus> {
    let asks = members
        .iter()
        .map(|m| probe.etcd_member(&m.name, m.address, timeout));
    let mut out = Vec::new();
    // Joined by hand: every future is polled until done, so all members are asked at once.
    let mut pending: Vec<_> = asks.map(Box::pin).collect();
    let mut results: Vec<Option<MemberStatus>> = vec![None; pending.len()];
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (i, f) in pending.iter_mut().enumerate() {
            if results[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(s) => results[i] = Some(s),
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.extend(
        results
            .into_iter()
            .map(|r| r.expect("every future finished")),
    );
    out
}

/// One leader that every member agrees on, and every member answering without errors.
pub fn healthy(members: &[MemberStatus]) -> bool {
    let leaders: std::collections::BTreeSet<u64> =
        members.iter().filter_map(|m| m.leader).collect();
    !members.is_empty()
        && members.iter().all(|m| m.answered() && m.errors.is_empty())
        && leaders.len() == 1
        && !leaders.contains(&0)
}

/// Polls until the members are healthy or `deadline` passes; returns the last statuses either
/// way.
pub async fn wait_healthy(
    probe: &dyn Probe,
    members: &[&Node],
    deadline: Duration,
) -> (bool, Vec<MemberStatus>) {
    let until = Instant::now() + deadline;
    loop {
        let statuses = cluster_status(probe, members, Duration::from_secs(2)).await;
        if healthy(&statuses) {
            return (true, statuses);
        }
        if Instant::now() >= until {
            return (false, statuses);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One line per member for reports.
pub fn describe(m: &MemberStatus) -> String {
    match &m.error {
        Some(e) => format!("{} ({}): no answer: {e}", m.name, m.address),
        None => format!(
            "{} ({}): member {:x}, leader {:x}, raft index {}, db {} bytes{}",
            m.name,
            m.address,
            m.member_id.unwrap_or(0),
            m.leader.unwrap_or(0),
            m.raft_index.unwrap_or(0),
            m.db_size.unwrap_or(0),
            if m.errors.is_empty() {
                String::new()
            } else {
                format!(", errors: {}", m.errors.join("; "))
            }
        ),
    }
}

#[cfg(test)]
mod readable_tests {
    use super::readable;

    #[test]
    fn a_refused_certificate_is_said_in_words() {
        use rustls::pki_types::ServerName;
        let tls = |c: rustls::CertificateError| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(c),
            )
        };
        let name = rustls::CertificateError::NotValidForNameContext {
            expected: ServerName::IpAddress(std::net::IpAddr::from([10, 0, 0, 11]).into()),
            presented: vec!["DNS name \"m1\"".into(), "IP address 10.0.0.12".into()],
        };
        let said = readable(&tls(name));
        assert_eq!(
            said,
            "the server's certificate is not valid for 10.0.0.11: its names are DNS name \"m1\", IP address 10.0.0.12"
        );
        assert!(
            readable(&tls(rustls::CertificateError::UnknownIssuer))
                .contains("not signed by the CA given")
        );
        // Anything not TLS is as it was.
        assert_eq!(
            readable(&std::io::Error::other("connection reset")),
            "connection reset"
        );
    }
}
