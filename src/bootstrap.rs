//! Stage 6: bring up etcd and know that it is up.
//!
//! Every member is asked for its Maintenance Status over mTLS with its own client — a client
//! given several endpoints answers for whichever it picked, which would hide a dead member.
//! The cluster is healthy when every member answers and all name the same, non-zero leader.
//! `verify` reuses [`member_status`] for its etcd checks.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use serde::Serialize;

use crate::inventory::{Inventory, host_for_url};
use crate::pki::{CaId, Pki};

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
    pub fn answered(&self) -> bool {
        self.error.is_none()
    }
}

/// The client identity used for health checks (`etcd/healthcheck-client`).
#[derive(Clone)]
pub struct EtcdAuth {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl EtcdAuth {
    pub fn from_pki(pki: &Pki) -> EtcdAuth {
        let c = pki.cert("etcd/healthcheck-client");
        EtcdAuth { ca_pem: pki.ca(CaId::Etcd).cert_pem.clone(), cert_pem: c.cert_pem.clone(), key_pem: c.key_pem.clone() }
    }

    pub fn from_pem(ca_pem: String, cert_pem: String, key_pem: String) -> EtcdAuth {
        EtcdAuth { ca_pem, cert_pem, key_pem }
    }

    fn connect_options(&self, timeout: Duration) -> ConnectOptions {
        let tls = TlsOptions::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem));
        ConnectOptions::new().with_tls(tls).with_connect_timeout(timeout).with_timeout(timeout)
    }
}

/// Asks one member for its status, within `timeout`.
pub async fn member_status(name: &str, address: IpAddr, auth: &EtcdAuth, timeout: Duration) -> MemberStatus {
    let mut s = MemberStatus {
        name: name.to_string(),
        address,
        member_id: None,
        leader: None,
        raft_index: None,
        db_size: None,
        version: None,
        errors: vec![],
        error: None,
    };
    let url = format!("https://{}:2379", host_for_url(address));
    let opts = auth.connect_options(timeout);
    let result = tokio::time::timeout(timeout * 2, async {
        let mut client = Client::connect([url.as_str()], Some(opts)).await?;
        client.status().await
    })
    .await;
    match result {
        Err(_) => s.error = Some(format!("{url}: no answer within {} s", (timeout * 2).as_secs())),
        Ok(Err(e)) => s.error = Some(format!("{url}: {e}")),
        Ok(Ok(st)) => {
            s.member_id = st.header().map(|h| h.member_id());
            s.leader = Some(st.leader());
            s.raft_index = Some(st.raft_index());
            s.db_size = Some(st.db_size());
            s.version = Some(st.version().to_string());
            s.errors = st.errors().to_vec();
        }
    }
    s
}

/// All members' status, asked concurrently.
pub async fn cluster_status(inv: &Inventory, auth: &EtcdAuth, timeout: Duration) -> Vec<MemberStatus> {
    let futures = inv.etcd_members().into_iter().map(|m| {
        let auth = auth.clone();
        let (name, address) = (m.name.clone(), m.address);
        async move { member_status(&name, address, &auth, timeout).await }
    });
    futures_join_all(futures).await
}

async fn futures_join_all<F>(fs: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("status task panicked"));
    }
    out
}

/// The member list (name, first peer URL) and active alarms, asked of the member at `address`.
pub async fn members_and_alarms(address: IpAddr, auth: &EtcdAuth, timeout: Duration) -> Result<(Vec<(String, String)>, Vec<String>), etcd_client::Error> {
    let url = format!("https://{}:2379", host_for_url(address));
    let mut client = Client::connect([url.as_str()], Some(auth.connect_options(timeout))).await?;
    let members = client
        .member_list()
        .await?
        .members()
        .iter()
        .map(|m| (m.name().to_string(), m.peer_urls().first().cloned().unwrap_or_default()))
        .collect();
    let alarms = client
        .alarm(etcd_client::AlarmAction::Get, etcd_client::AlarmType::None, None)
        .await?
        .alarms()
        .iter()
        .map(|a| format!("{:?} on member {:x}", a.alarm(), a.member_id()))
        .collect();
    Ok((members, alarms))
}

/// One leader that every member agrees on, and every member answering.
pub fn healthy(members: &[MemberStatus]) -> bool {
    let leaders: std::collections::BTreeSet<u64> = members.iter().filter_map(|m| m.leader).collect();
    !members.is_empty() && members.iter().all(|m| m.answered() && m.errors.is_empty()) && leaders.len() == 1 && !leaders.contains(&0)
}

/// Polls until the cluster is healthy or `deadline` passes; returns the last statuses either way.
pub async fn wait_healthy(inv: &Inventory, auth: &EtcdAuth, deadline: Duration) -> (bool, Vec<MemberStatus>) {
    let until = Instant::now() + deadline;
    loop {
        let members = cluster_status(inv, auth, Duration::from_secs(2)).await;
        if healthy(&members) {
            return (true, members);
        }
        if Instant::now() >= until {
            return (false, members);
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
            if m.errors.is_empty() { String::new() } else { format!(", errors: {}", m.errors.join("; ")) }
        ),
    }
}
