//! Fixtures for the library's unit tests: a lab-shaped cluster (three masters with stacked
//! etcd, an HAProxy node, a worker) with a real PKI in a temporary directory, rendered, and a
//! [`FakeCluster`] of its nodes. The PKI of an inventory is generated once per test process
//! and each fixture gets a copy of its own (`Fixture::with_another_pki` for a second cluster's).

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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

    /// The cluster of `text`, with a copy of the one PKI this process generated for it.
    pub fn with(text: &str) -> Fixture {
        let inv = parse(text);
        let dir = tempfile::tempdir().expect("a temp dir");
        let files = shared_pki(&inv, text);
        write_tree(&dir.path().join("pki"), &files);
        let pki = pki::load(&inv, &dir.path().join("pki")).expect("the copied PKI");
        let fake = Arc::new(FakeCluster::new(&inv));
        Fixture {
            inv,
            dir,
            pki,
            fake,
        }
    }

    /// The cluster of [`INVENTORY`] with a PKI generated for it alone: other CAs, keys, an
    /// encryption key, as another cluster's.
    pub fn with_another_pki() -> Fixture {
        let inv = parse(INVENTORY);
        let dir = tempfile::tempdir().expect("a temp dir");
        let (pki, _) = pki::generate(
            &inv,
            &dir.path().join("pki"),
            pki::GenerateOptions::default(),
        )
        .expect("a PKI");
        let fake = Arc::new(FakeCluster::new(&inv));
        Fixture {
            inv,
            dir,
            pki,
            fake,
        }
    }

    pub fn rendered(&self) -> Rendered {
        render::render(&self.inv, &self.pki).expect("renders")
    }

    pub fn pki_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("pki")
    }

    /// The cluster grown to the inventory `text`: it, its PKI brought up to date as deploy
    /// does (every CA and key kept, the new nodes' certificates issued), and fake nodes for the
    /// new ones.
    pub fn grow(&mut self, text: &str) -> (Inventory, Pki) {
        let inv = parse(text);
        let deploy_mode = pki::GenerateOptions {
            existing_trust_only: true,
            ..Default::default()
        };
        let (pki, _) = pki::generate(&inv, &self.pki_dir(), deploy_mode).expect("the grown PKI");
        Arc::get_mut(&mut self.fake)
            .expect("only the fixture holds it")
            .add_nodes(&inv);
        (inv, pki)
    }
}

fn parse(text: &str) -> Inventory {
    inventory::parse(Path::new("t.toml"), text).expect("a valid test inventory")
}

/// A directory's entries, relative, with their modes: a file's contents, or a directory.
type Tree = Vec<(PathBuf, u32, Option<Vec<u8>>)>;

/// The PKI of the inventory `text`, generated the first time a test asks for it.
fn shared_pki(inv: &Inventory, text: &str) -> Arc<Tree> {
    static PKIS: Mutex<BTreeMap<String, Arc<Tree>>> = Mutex::new(BTreeMap::new());
    // A test that panicked while generating left nothing behind for its inventory.
    let mut pkis = PKIS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    pkis.entry(text.to_string())
        .or_insert_with(|| {
            let dir = tempfile::tempdir().expect("a temp dir");
            pki::generate(
                inv,
                &dir.path().join("pki"),
                pki::GenerateOptions::default(),
            )
            .expect("a PKI");
            Arc::new(read_tree(&dir.path().join("pki")))
        })
        .clone()
}

fn read_tree(root: &Path) -> Tree {
    fn walk(root: &Path, dir: &Path, out: &mut Tree) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("the generated PKI")
            .map(|e| e.expect("an entry").path())
            .collect();
        entries.sort();
        for p in entries {
            let meta = std::fs::symlink_metadata(&p).expect("an entry's metadata");
            let rel = p.strip_prefix(root).expect("below the root").to_path_buf();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.is_dir() {
                out.push((rel, mode, None));
                walk(root, &p, out);
            } else {
                assert!(
                    meta.is_file(),
                    "{} is neither a file nor a directory",
                    p.display()
                );
                out.push((rel, mode, Some(std::fs::read(&p).expect("a PKI file"))));
            }
        }
    }
    let mut out = vec![(
        PathBuf::new(),
        std::fs::metadata(root)
            .expect("the PKI directory")
            .permissions()
            .mode()
            & 0o7777,
        None,
    )];
    walk(root, root, &mut out);
    out
}

/// Writes `tree` below `root` (which must not exist) with the modes it had.
fn write_tree(root: &Path, tree: &Tree) {
    for (rel, mode, contents) in tree {
        let p = root.join(rel);
        match contents {
            None => std::fs::DirBuilder::new()
                .mode(*mode)
                .create(&p)
                .expect("a PKI directory"),
            Some(bytes) => {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(*mode)
                    .open(&p)
                    .expect("a PKI file");
                f.write_all(bytes).expect("writing a PKI file");
            }
        }
        // Not narrowed by the umask.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).expect("a PKI mode");
    }
}

/// Runs a future on a runtime of its own (tests have no runtime of their own).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(f)
}
