//! What a machine's root user can do to the host through `hardway lab up`: nothing. The lab
//! test here boots a named lab of one machine (its own name, state directory and subnet,
//! 10.224.0.0/24), plants a link from inside the running machine, and runs `lab up` again.

#[cfg(test)]
mod lab {
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    use crate::common::lab::{Turn, turn};
    use crate::common::*;

    const STATE_DIR: &str = "/run/hardway/test-escape";
    const POOL: &str = "10.224.0.0/24";
    const NAME: &str = "escape";

    /// One master is all it takes: the attack is on the host side of `lab up`.
    const BASE: &str = r#"
[cluster]
name = "escbase"
kubernetes_version = "1.37.1"
service_cidr = "10.32.0.0/24"
pod_cidr = "10.200.0.0/16"

[binaries]
remote_dir = "/usr/bin"

[lab]
suite = "trixie"

[[nodes]]
name = "m1"
address = "10.213.0.11"
roles = ["master"]
"#;

    /// The named lab, taken down when dropped (also when the test fails half way).
    struct Escape {
        dir: tempfile::TempDir,
        _turn: Turn,
    }

    impl Escape {
        fn lab(&self, args: &[&str]) -> std::process::Command {
            let mut c = hardway();
            c.arg("lab").args(args).args(["--name", NAME, "--state-dir", STATE_DIR]);
            c
        }
        fn base(&self) -> PathBuf {
            self.dir.path().join("base.toml")
        }
        fn up(&self) -> std::process::Output {
            let mut c = self.lab(&["up"]);
            c.arg("-i").arg(self.base()).arg("--dir").arg(self.dir.path().join(NAME)).args(["--subnet-pool", POOL]);
            run(&mut c)
        }
    }

    impl Drop for Escape {
        fn drop(&mut self) {
            let o = run(&mut self.lab(&["down"]));
            if !o.status.success() {
                eprintln!("teardown: {}", String::from_utf8_lossy(&o.stderr));
            }
            let _ = std::fs::remove_dir_all(STATE_DIR);
        }
    }

    /// From inside a running machine, root replaces its `/root/.ssh` with a link to a host
    /// directory; `lab up` again must refuse it naming the link, and leave the host directory
    /// (its mode, its authorized_keys) as it was.
    #[test]
    fn a_link_planted_inside_a_running_machine_does_not_reach_the_host() {
        let inv = hardway::inventory::parse(Path::new("base.toml"), BASE).unwrap();
        hardway::lab::preflight(inv.lab.suite).unwrap_or_else(|e| panic!("{e}"));
        let t = Escape { dir: tempfile::tempdir().unwrap(), _turn: turn() };
        std::fs::write(t.base(), BASE).unwrap();
        let _ = run(&mut t.lab(&["down"])); // what a crashed earlier run left
        let o = t.up();
        assert!(o.status.success(), "lab up: {}", String::from_utf8_lossy(&o.stderr));

        // A host directory standing for the host's /root/.ssh.
        let host_ssh = t.dir.path().join("host-root-ssh");
        std::fs::create_dir(&host_ssh).unwrap();
        std::fs::set_permissions(&host_ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(host_ssh.join("authorized_keys"), "ssh-ed25519 AAAA the-hosts-admin\n").unwrap();

        let lab_inv = hardway::inventory::load(&t.dir.path().join(NAME).join("inventory.toml")).unwrap();
        let node = &lab_inv.nodes[0];
        let mut ssh = std::process::Command::new("ssh");
        ssh.args(["-F", "/dev/null", "-i"])
            .arg(lab_inv.ssh.identity_file.as_ref().unwrap())
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", lab_inv.ssh.known_hosts.display()))
            .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"])
            .arg(format!("root@{}", node.address))
            .arg(format!("rm -rf /root/.ssh && ln -s {} /root/.ssh && readlink /root/.ssh", host_ssh.display()));
        let planted = ok(&mut ssh);
        assert_eq!(planted.trim(), host_ssh.display().to_string());

        let o = t.up();
        let err = String::from_utf8_lossy(&o.stderr);
        // The host directory first: that is the attack.
        assert_eq!(std::fs::metadata(&host_ssh).unwrap().permissions().mode() & 0o7777, 0o755, "lab up chmod-ed the host directory: {err}");
        assert_eq!(
            std::fs::read_to_string(host_ssh.join("authorized_keys")).unwrap(),
            "ssh-ed25519 AAAA the-hosts-admin\n",
            "lab up replaced the host's authorized_keys: {err}"
        );
        assert_eq!(std::fs::read_dir(&host_ssh).unwrap().count(), 1, "nothing was added to the host directory");
        assert!(!o.status.success(), "lab up went through the planted link: {err}");
        let link = Path::new(STATE_DIR).join(NAME).join(&node.name).join("rootfs/root/.ssh");
        assert!(err.contains(&link.display().to_string()) && err.contains("symbolic link"), "{err}");
    }
}
