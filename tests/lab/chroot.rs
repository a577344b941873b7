//! A lab started from a chroot (as fresh-ci runs the tests): where does a process land that
//! joins a machine's mount namespace, as `runc exec` (and so `kubectl exec`) joins a
//! container's? In the chroot, not in the host's root file system. As root, no lab: a chroot
//! of the host's /usr, and the system calls systemd-nspawn's starter makes
//! (`lab::nspawn::machine::root_namespace_at_chroot`).

#[cfg(test)]
mod lab {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::process::CommandExt;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use crate::common::*;

    /// A root file system of the host's /usr (read-only) and a procfs, with a marker file at its
    /// top the host's root does not have; unmounted when dropped.
    struct Chroot {
        root: PathBuf,
        mounts: Vec<PathBuf>,
        dir: tempfile::TempDir,
    }

    const MARKER: &str = "inside-the-chroot";

    impl Chroot {
        /// `own_mount`: the chroot's top is a mount point of its own (fresh-ci's overlay) rather
        /// than a plain directory.
        fn new(own_mount: bool) -> Chroot {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("root");
            std::fs::create_dir(&root).unwrap();
            let mut c = Chroot {
                root: root.clone(),
                mounts: Vec::new(),
                dir,
            };
            if own_mount {
                c.mount(&["-t", "tmpfs", "tmpfs"], &root);
            }
            for d in ["usr", "proc", "tmp"] {
                std::fs::create_dir(root.join(d)).unwrap();
            }
            c.mount(&["--bind", "-o", "ro", "/usr"], &root.join("usr"));
            c.mount(&["-t", "proc", "proc"], &root.join("proc"));
            // Debian's merged /usr: the host's own are links too.
            for l in ["bin", "sbin", "lib", "lib64"] {
                if Path::new("/usr").join(l).exists() {
                    std::os::unix::fs::symlink(format!("usr/{l}"), root.join(l)).unwrap();
                }
            }
            std::fs::write(root.join(MARKER), "").unwrap();
            assert!(
                !Path::new("/").join(MARKER).exists(),
                "the host's root has /{MARKER}"
            );
            c
        }

        /// The host's mount points at or under the chroot's directory, as mountinfo lists them.
        fn host_mounts(&self) -> Vec<String> {
            let top = self.dir.path().to_str().unwrap();
            std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap()
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|m| *m == top || m.starts_with(&format!("{top}/")))
                .map(str::to_string)
                .collect()
        }

        fn mount(&mut self, args: &[&str], at: &Path) {
            ok(Command::new("mount").args(args).arg(at));
            self.mounts.push(at.to_path_buf());
        }

        /// Runs `script` with sh in the chroot, the fix applied or not, and returns its output.
        fn sh(&self, fix: bool, script: &str) -> String {
            let root = CString::new(self.root.as_os_str().as_bytes()).unwrap();
            let mut c = Command::new("/bin/sh");
            c.args(["-c", script]);
            // SAFETY: chroot, chdir and the fix's system calls, safe between fork and exec.
            unsafe {
                c.pre_exec(move || {
                    if libc::chroot(root.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    if fix {
                        hardway::lab::nspawn::machine::root_namespace_at_chroot()
                    } else {
                        Ok(())
                    }
                })
            };
            ok(&mut c)
        }
    }

    impl Drop for Chroot {
        fn drop(&mut self) {
            for m in self.mounts.iter().rev() {
                let _ = Command::new("umount").arg("-l").arg(m).status();
            }
        }
    }

    /// Joins its own mount namespace, as `runc exec` joins a container's, and says where it is.
    const JOIN: &str = "nsenter --mount=/proc/self/ns/mnt -- sh -c 'test -e /inside-the-chroot && echo chroot || echo host'";

    #[test]
    fn exec_lands_in_the_chroot() {
        require("nsenter", "util-linux");
        for own_mount in [true, false] {
            let c = Chroot::new(own_mount);
            let what = if own_mount {
                "a chroot on a mount of its own"
            } else {
                "a chroot in a plain directory"
            };
            // The hazard is real here: without the fix a joiner leaves the chroot.
            assert_eq!(c.sh(false, JOIN).trim(), "host", "{what}, without the fix");
            assert_eq!(c.sh(true, JOIN).trim(), "chroot", "{what}, with the fix");
            // The fix's process itself is still where it was, and sees what it saw.
            assert_eq!(
                c.sh(true, "test -e /inside-the-chroot && echo chroot")
                    .trim(),
                "chroot",
                "{what}"
            );
            // The host's mounts did not change: nothing of the fix leaked back. Only the mounts
            // under the chroot's directory count (where the fix's bind mount would leak): the
            // other lab tests, running meanwhile, mount and unmount elsewhere.
            let before = c.host_mounts();
            assert!(
                before.len() >= 2,
                "{what}: the chroot's own mounts (/usr, /proc) are not in mountinfo: {before:?}"
            );
            c.sh(true, "true");
            assert_eq!(
                before,
                c.host_mounts(),
                "{what}: the fix changed the host's mount table"
            );
        }
    }

    /// Wherever the tests run (on a host, or in fresh-ci's chroot), a joiner of the fixed
    /// process's namespace lands at that process's root.
    #[test]
    fn a_joiner_lands_at_the_starters_root() {
        require("nsenter", "util-linux");
        let mut c = Command::new("/bin/sh");
        c.args([
            "-c",
            "stat -c %d:%i /; nsenter --mount=/proc/self/ns/mnt -- stat -c %d:%i /",
        ]);
        // SAFETY: the fix makes system calls only.
        unsafe { c.pre_exec(hardway::lab::nspawn::machine::root_namespace_at_chroot) };
        let out = ok(&mut c);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert_eq!(
            lines[0], lines[1],
            "a joiner landed elsewhere than the starter's root"
        );
    }
}
