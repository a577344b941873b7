//! Fixtures for the library's unit tests: a lab-shaped cluster (three masters with stacked
//! etcd, an HAProxy node, a worker) with a real PKI in a temporary directory, rendered, and a
//! [`FakeCluster`] of its nodes.

use std::sync::Arc;

use crate::inventory::{self, Inventory};
use crate::pki::{self, Pki};
use crate::remote::fake::FakeCluster;
use crate::render::{self, Rendered};

pub const INVENTORY: &str = r#"
[cluster]
name = "t"
kubernetes_version = "1.37.1"
service_cidr = "10.32.0.0/24"
pod_cidr = "10.200.0.0/16"

[load_balancer]
node = "lb"
address = "10.0.0.14"

[binaries]
remote_dir = "/usr/bin"

[[nodes]]
name = "m1"
address = "10.0.0.11"
roles = ["master"]

[[nodes]]
name = "m2"
address = "10.0.0.12"
roles = ["master"]

[[nodes]]
name = "m3"
address = "10.0.0.13"
roles = ["master"]

[[nodes]]
name = "lb"
address = "10.0.0.14"
roles = ["lb"]

[[nodes]]
name = "w1"
address = "10.0.0.15"
roles = ["worker"]
"#;

pub struct Fixture {
    pub inv: Inventory,
    pub dir: tempfile::TempDir,
    pub pki: Pki,
    pub fake: Arc<FakeCluster>,
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture::with(INVENTORY)
    }

    pub fn with(text: &str) -> Fixture {
        let inv = inventory::parse(std::path::Path::new("t.toml"), text).expect("a valid test inventory");
        let dir = tempfile::tempdir().expect("a temp dir");
        let (pki, _) = pki::generate(&inv, &dir.path().join("pki"), pki::GenerateOptions::default()).expect("a PKI");
        let fake = Arc::new(FakeCluster::new(&inv));
        Fixture { inv, dir, pki, fake }
    }

    pub fn rendered(&self) -> Rendered {
        render::render(&self.inv, &self.pki).expect("renders")
    }

    pub fn pki_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("pki")
    }
}

/// Runs a future on a runtime of its own (tests have no runtime of their own).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime").block_on(f)
}
