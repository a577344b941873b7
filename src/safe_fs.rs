//! Writing files without following links that someone else may have planted.
//!
//! Two kinds of places need it:
//!
//! - **A machine's root file system, written from the host** (`hardway lab up` writes the lab
//!   key, the hostname, `/etc/hosts`, units into each node's root). Root inside the machine can
//!   replace any directory of its root with a symbolic link to a host path; a host process that
//!   resolves `ROOT/root/.ssh/authorized_keys` normally would then write to the host. Here every
//!   component below the root is opened with `O_NOFOLLOW | O_DIRECTORY`, one at a time, from
//!   the directory opened before it ([`Dir::walk`]), so a link anywhere below the root is an
//!   error naming it, and nothing is written.
//! - **Files that hold key material on the operator's machine** (saved machines, snapshots, run
//!   logs): created `0600` with `O_CREAT | O_EXCL | O_NOFOLLOW` in directories hardway makes
//!   `0700` below a directory the user chose, each reached the same way ([`private_dir`]).
//!
//! A file is replaced by writing a temporary name in the already-opened directory and renaming
//! it within that directory ([`Dir::write`]): the rename replaces a link, it never follows one.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Why a file could not be written or read safely.
#[derive(Debug, thiserror::Error)]
pub enum SafeFsError {
    /// A component of the path is a symbolic link: refused, never followed.
    #[error("{} is a symbolic link: hardway does not follow links below {} (one may have been planted there); nothing was written through it", path.display(), below.display())]
    Link { path: PathBuf, below: PathBuf },
    /// A component that must be a directory is something else.
    #[error("{} is not a directory", path.display())]
    NotDir { path: PathBuf },
    /// The path leaves the directory it must stay below (`..`, or absolute where a relative
    /// path is needed).
    #[error("{}: must be a relative path below {} without `..`", path.display(), below.display())]
    Outside { path: PathBuf, below: PathBuf },
    /// A directory that must be private belongs to another user.
    #[error("{} belongs to uid {owner}, not to this user (uid {me}): it cannot hold this user's private files", path.display())]
    Owner { path: PathBuf, owner: u32, me: u32 },
    /// A file larger than what is read of it.
    #[error("{} is {size} bytes, more than the {limit} bytes hardway reads of it", path.display())]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    /// (The OS error is in the message, not a `source()`: printed through anyhow it would
    /// appear twice.)
    #[error("cannot {op} {}: {error}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
}

pub type Result<T, E = SafeFsError> = std::result::Result<T, E>;

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SafeFsError + 'a {
    move |error| SafeFsError::Io {
        op,
        path: path.to_path_buf(),
        error,
    }
}

fn cstr(name: &std::ffi::OsStr, path: &Path) -> Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| SafeFsError::Io {
        op: "use",
        path: path.to_path_buf(),
        error: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })
}

fn last_error() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// The effective uid.
pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// An open directory: everything below it is reached through its descriptor.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
    /// The directory the walk started from, for messages.
    below: PathBuf,
}

/// What [`Dir::walk`] does with a directory that is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// An error.
    Fail,
    /// Created with this mode (exactly: the umask does not apply).
    Create(u32),
}

impl Dir {
    /// Opens `path` as it is (links in it followed: it is the place the user or the lab chose,
    /// not one a machine controls).
    pub fn open(path: &Path) -> Result<Dir> {
        let c = cstr(path.as_os_str(), path)?;
        // SAFETY: a valid NUL-terminated path; the descriptor returned is owned below.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let e = last_error();
            return Err(if e.raw_os_error() == Some(libc::ENOTDIR) {
                SafeFsError::NotDir {
                    path: path.to_path_buf(),
                }
            } else {
                io("open", path)(e)
            });
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(Dir {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            path: path.to_path_buf(),
            below: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `name` in this directory, for messages.
    fn child(&self, name: &std::ffi::OsStr) -> PathBuf {
        self.path.join(name)
    }

    /// One directory below this one, never through a link; created when missing and asked to.
    fn sub(&self, name: &std::ffi::OsStr, missing: Missing) -> Result<Dir> {
        let path = self.child(name);
        let c = cstr(name, &path)?;
        let open = || {
            // SAFETY: a valid descriptor and NUL-terminated name.
            unsafe {
                libc::openat(
                    self.fd.as_raw_fd(),
                    c.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                )
            }
        };
        let mut fd = open();
        if fd < 0
            && last_error().raw_os_error() == Some(libc::ENOENT)
            && let Missing::Create(mode) = missing
        {
            // SAFETY: as above.
            if unsafe { libc::mkdirat(self.fd.as_raw_fd(), c.as_ptr(), 0o700) } < 0 {
                let e = last_error();
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(io("create", &path)(e));
                }
            }
            fd = open();
            // SAFETY: fd is a directory we just opened, closed once on failure.
            if fd >= 0 && unsafe { libc::fchmod(fd, mode) } < 0 {
                let e = last_error();
                unsafe { libc::close(fd) };
                return Err(io("set the mode of", &path)(e));
            }
        }
        if fd < 0 {
            let e = last_error();
            return Err(self.classify(name, e));
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(Dir {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            path,
            below: self.below.clone(),
        })
    }

    /// An error of opening `name` with O_NOFOLLOW: a link is named as such.
    fn classify(&self, name: &std::ffi::OsStr, e: std::io::Error) -> SafeFsError {
        let path = self.child(name);
        if matches!(
            e.raw_os_error(),
            Some(libc::ELOOP) | Some(libc::ENOTDIR) | Some(libc::EMLINK)
        ) {
            if self.is_link(name) {
                return SafeFsError::Link {
                    path,
                    below: self.below.clone(),
                };
            }
            if e.raw_os_error() == Some(libc::ENOTDIR) {
                return SafeFsError::NotDir { path };
            }
        }
        io("open", &path)(e)
    }

    fn is_link(&self, name: &std::ffi::OsStr) -> bool {
        self.lstat(name)
            .is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK)
    }

    fn lstat(&self, name: &std::ffi::OsStr) -> Option<libc::stat> {
        let c = CString::new(name.as_bytes()).ok()?;
        // SAFETY: zeroed stat is a valid out-parameter; valid fd and name.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::fstatat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        (r == 0).then_some(st)
    }

    /// The directory `rel` below this one, each component opened without following a link;
    /// missing ones handled as `missing` says.
    pub fn walk(&self, rel: &Path, missing: Missing) -> Result<Dir> {
        let mut names = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(n) => names.push(n),
                Component::CurDir => {}
                _ => {
                    return Err(SafeFsError::Outside {
                        path: rel.to_path_buf(),
                        below: self.path.clone(),
                    });
                }
            }
        }
        let mut dir = Dir {
            fd: self.fd.try_clone().map_err(io("open", &self.path))?,
            path: self.path.clone(),
            below: self.below.clone(),
        };
        for n in names {
            dir = dir.sub(n, missing)?;
        }
        Ok(dir)
    }

    /// The directory holding `rel` and the file name, with `missing` for the directories.
    pub fn parent_of<'a>(
        &self,
        rel: &'a Path,
        missing: Missing,
    ) -> Result<(Dir, &'a std::ffi::OsStr)> {
        let name = rel.file_name().ok_or_else(|| SafeFsError::Outside {
            path: rel.to_path_buf(),
            below: self.path.clone(),
        })?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        Ok((self.walk(parent, missing)?, name))
    }

    /// Sets this directory's mode.
    pub fn chmod(&self, mode: u32) -> Result<()> {
        // SAFETY: a valid descriptor.
        if unsafe { libc::fchmod(self.fd.as_raw_fd(), mode) } < 0 {
            return Err(io("set the mode of", &self.path)(last_error()));
        }
        Ok(())
    }

    /// Owner and mode of this directory.
    pub fn stat(&self) -> Result<(u32, u32)> {
        // SAFETY: zeroed stat is a valid out-parameter.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(self.fd.as_raw_fd(), &mut st) } < 0 {
            return Err(io("look at", &self.path)(last_error()));
        }
        Ok((st.st_uid, st.st_mode & 0o7777))
    }

    /// Creates `name` here, new (`O_EXCL`: never an existing file or a link), with exactly
    /// `mode`.
    pub fn create_new(&self, name: &str, mode: u32) -> Result<File> {
        let path = self.child(name.as_ref());
        if name.contains('/') || name == ".." || name == "." || name.is_empty() {
            return Err(SafeFsError::Outside {
                path,
                below: self.path.clone(),
            });
        }
        let c = cstr(name.as_ref(), &path)?;
        // SAFETY: valid descriptor and name; the descriptor returned is owned below.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        };
        if fd < 0 {
            let e = last_error();
            if e.raw_os_error() == Some(libc::EEXIST) && self.is_link(name.as_ref()) {
                return Err(SafeFsError::Link {
                    path,
                    below: self.below.clone(),
                });
            }
            return Err(io("create", &path)(e));
        }
        // SAFETY: a fresh descriptor we own.
        let f = unsafe { File::from_raw_fd(fd) };
        // open()'s mode went through the umask: set the exact one before the first byte.
        f.set_permissions(
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(mode),
        )
        .map_err(io("set the mode of", &path))?;
        Ok(f)
    }

    /// Replaces `name` here with `contents`, mode `mode`: a temporary file in this directory,
    /// renamed over `name` (a link there is replaced, never followed).
    pub fn write(&self, name: &std::ffi::OsStr, contents: &[u8], mode: u32) -> Result<()> {
        let path = self.child(name);
        let tmp = format!(".{}.hardway-tmp", name.to_string_lossy());
        self.remove(&tmp)?;
        let mut f = self.create_new(&tmp, mode)?;
        let tmp_path = self.child(tmp.as_ref());
        let written = f
            .write_all(contents)
            .and_then(|()| f.sync_all())
            .map_err(io("write", &tmp_path));
        drop(f);
        if let Err(e) = written {
            let _ = self.remove(&tmp);
            return Err(e);
        }
        let (from, to) = (cstr(tmp.as_ref(), &tmp_path)?, cstr(name, &path)?);
        // SAFETY: valid descriptors and names.
        if unsafe {
            libc::renameat(
                self.fd.as_raw_fd(),
                from.as_ptr(),
                self.fd.as_raw_fd(),
                to.as_ptr(),
            )
        } < 0
        {
            let e = last_error();
            let _ = self.remove(&tmp);
            return Err(io("rename into", &path)(e));
        }
        Ok(())
    }

    /// Renames `from` to `to`, both in this directory (a link at `to` is replaced).
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (fp, tp) = (self.child(from.as_ref()), self.child(to.as_ref()));
        let (f, t) = (cstr(from.as_ref(), &fp)?, cstr(to.as_ref(), &tp)?);
        // SAFETY: valid descriptors and names.
        if unsafe {
            libc::renameat(
                self.fd.as_raw_fd(),
                f.as_ptr(),
                self.fd.as_raw_fd(),
                t.as_ptr(),
            )
        } < 0
        {
            return Err(io("rename into", &tp)(last_error()));
        }
        Ok(())
    }

    /// Removes the file (or link) `name` here; a missing one is fine.
    pub fn remove(&self, name: &str) -> Result<()> {
        let path = self.child(name.as_ref());
        let c = cstr(name.as_ref(), &path)?;
        // SAFETY: valid descriptor and name.
        if unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) } < 0 {
            let e = last_error();
            if e.raw_os_error() != Some(libc::ENOENT) {
                return Err(io("remove", &path)(e));
            }
        }
        Ok(())
    }

    /// Reads the regular file `name` here (not through a link), at most `limit` bytes; none
    /// when it does not exist.
    pub fn read(&self, name: &std::ffi::OsStr, limit: u64) -> Result<Option<Vec<u8>>> {
        let path = self.child(name);
        let c = cstr(name, &path)?;
        // SAFETY: valid descriptor and name.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK,
            )
        };
        if fd < 0 {
            let e = last_error();
            if e.raw_os_error() == Some(libc::ENOENT) {
                return Ok(None);
            }
            return Err(self.classify(name, e));
        }
        // SAFETY: a fresh descriptor we own.
        let mut f = unsafe { File::from_raw_fd(fd) };
        let meta = f.metadata().map_err(io("look at", &path))?;
        if !meta.is_file() {
            return Err(SafeFsError::Io {
                op: "read",
                path,
                error: std::io::Error::other("not a regular file"),
            });
        }
        if meta.len() > limit {
            return Err(SafeFsError::TooLarge {
                path,
                size: meta.len(),
                limit,
            });
        }
        let mut out = Vec::new();
        (&mut f)
            .take(limit)
            .read_to_end(&mut out)
            .map_err(io("read", &path))?;
        Ok(Some(out))
    }

    /// Whether `name` here is a regular file (not a link to one).
    pub fn is_file(&self, name: &std::ffi::OsStr) -> bool {
        self.lstat(name)
            .is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
    }
}

/// Writes `rel` below `root` with `contents` and `mode`, never through a link below `root`;
/// missing directories on the way are created with `dir_mode`.
pub fn write_beneath(
    root: &Path,
    rel: &Path,
    contents: &[u8],
    mode: u32,
    dir_mode: u32,
) -> Result<()> {
    let (dir, name) = Dir::open(root)?.parent_of(rel, Missing::Create(dir_mode))?;
    dir.write(name, contents, mode)
}

/// Makes `rel` below `root` a symbolic link to `target` (replacing what is there), never
/// through a link below `root`; missing directories on the way are created with `dir_mode`.
/// The link itself is for the machine to follow (a systemd unit's `.wants/` entry).
pub fn symlink_beneath(root: &Path, rel: &Path, target: &str, dir_mode: u32) -> Result<()> {
    let (dir, name) = Dir::open(root)?.parent_of(rel, Missing::Create(dir_mode))?;
    let name = name.to_string_lossy().into_owned();
    let path = dir.child(name.as_ref());
    dir.remove(&name)?;
    let (t, n) = (cstr(target.as_ref(), &path)?, cstr(name.as_ref(), &path)?);
    // SAFETY: valid descriptor and names.
    if unsafe { libc::symlinkat(t.as_ptr(), dir.fd.as_raw_fd(), n.as_ptr()) } < 0 {
        return Err(io("link", &path)(last_error()));
    }
    Ok(())
}

/// Reads `rel` below `root` (at most `limit` bytes), never through a link; none when missing.
pub fn read_beneath(root: &Path, rel: &Path, limit: u64) -> Result<Option<Vec<u8>>> {
    let (dir, name) = match Dir::open(root)?.parent_of(rel, Missing::Fail) {
        Ok(x) => x,
        Err(SafeFsError::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    dir.read(name, limit)
}

/// Removes the file `rel` below `root`, never through a link; missing is fine.
pub fn remove_beneath(root: &Path, rel: &Path) -> Result<()> {
    let (dir, name) = match Dir::open(root)?.parent_of(rel, Missing::Fail) {
        Ok(x) => x,
        Err(SafeFsError::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    dir.remove(&name.to_string_lossy())
}

/// A directory for this user's private files: `base` (created 0700 if missing, links in it
/// followed: the user chose it), then `rel` below it, each component created 0700 when missing
/// and never reached through a link. Every directory of `rel`, and `base` when it was created
/// here, is this user's and 0700 (an existing one of another mode is set to 0700).
pub fn private_dir(base: &Path, rel: &Path) -> Result<Dir> {
    let base = if base.as_os_str().is_empty() {
        Path::new(".")
    } else {
        base
    };
    let created = match std::fs::symlink_metadata(base) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode_private()
                .create(base)
                .map_err(io("create", base))?;
            true
        }
        Err(e) => return Err(io("look at", base)(e)),
        Ok(_) => false,
    };
    let top = Dir::open(base)?;
    if created {
        top.chmod(0o700)?;
    }
    let mut dir = top;
    let mut walked = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => walked.push(n),
            Component::CurDir => {}
            _ => {
                return Err(SafeFsError::Outside {
                    path: rel.to_path_buf(),
                    below: base.to_path_buf(),
                });
            }
        }
    }
    for n in walked {
        dir = dir.sub(n, Missing::Create(0o700))?;
        make_private(&dir)?;
    }
    if rel.as_os_str().is_empty() {
        make_private(&dir)?;
    }
    Ok(dir)
}

/// This user's directory, mode 0700.
fn make_private(dir: &Dir) -> Result<()> {
    let (owner, mode) = dir.stat()?;
    let me = euid();
    if owner != me {
        return Err(SafeFsError::Owner {
            path: dir.path.clone(),
            owner,
            me,
        });
    }
    if mode != 0o700 {
        dir.chmod(0o700)?;
    }
    Ok(())
}

trait PrivateBuilder {
    fn mode_private(&mut self) -> &mut Self;
}

impl PrivateBuilder for std::fs::DirBuilder {
    fn mode_private(&mut self) -> &mut Self {
        std::os::unix::fs::DirBuilderExt::mode(self, 0o700)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_link_anywhere_below_the_root_is_refused_and_named() {
        let t = tempfile::tempdir().unwrap();
        let (root, victim) = (t.path().join("root"), t.path().join("victim"));
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir(&victim).unwrap();
        std::fs::write(victim.join("hostname"), "precious\n").unwrap();
        // The last component, a middle one, the first one.
        std::os::unix::fs::symlink(victim.join("hostname"), root.join("etc/hostname")).unwrap();
        std::os::unix::fs::symlink(&victim, root.join("etc/ssh")).unwrap();
        std::os::unix::fs::symlink(&victim, root.join("var")).unwrap();
        // A link at the file itself is replaced, not followed.
        write_beneath(&root, Path::new("etc/hostname"), b"node\n", 0o644, 0o755).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("etc/hostname")).unwrap(),
            "node\n"
        );
        for rel in ["etc/ssh/sshd_config", "var/lib/x/y", "etc/ssh/sub/file"] {
            let e = write_beneath(&root, Path::new(rel), b"x", 0o644, 0o755).unwrap_err();
            assert!(matches!(e, SafeFsError::Link { .. }), "{rel}: {e}");
            assert!(e.to_string().contains("is a symbolic link"), "{e}");
        }
        let e = read_beneath(&root, Path::new("etc/ssh/hostname"), 100)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&root.join("etc/ssh").display().to_string()),
            "{e}"
        );
        assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 1);
        assert_eq!(
            std::fs::read_to_string(victim.join("hostname")).unwrap(),
            "precious\n"
        );
        assert!(write_beneath(&root, Path::new("../x"), b"x", 0o644, 0o755).is_err());
    }

    #[test]
    fn private_dirs_are_0700_and_files_0600_whatever_the_umask() {
        let t = tempfile::tempdir().unwrap();
        let d = private_dir(&t.path().join("base"), Path::new("a/b")).unwrap();
        let mut f = d.create_new("x.log", 0o600).unwrap();
        f.write_all(b"x").unwrap();
        for p in ["base", "base/a", "base/a/b"] {
            assert_eq!(mode(&t.path().join(p)), 0o700, "{p}");
        }
        assert_eq!(mode(&t.path().join("base/a/b/x.log")), 0o600);
        // A file that exists, or a link, is never opened by create_new.
        assert!(d.create_new("x.log", 0o600).is_err());
        std::os::unix::fs::symlink(t.path().join("elsewhere"), t.path().join("base/a/b/l"))
            .unwrap();
        assert!(matches!(
            d.create_new("l", 0o600).unwrap_err(),
            SafeFsError::Link { .. }
        ));
        assert!(!t.path().join("elsewhere").exists());
        // A planted link among the directories is refused.
        std::os::unix::fs::symlink(t.path(), t.path().join("base/c")).unwrap();
        assert!(matches!(
            private_dir(&t.path().join("base"), Path::new("c/d")).unwrap_err(),
            SafeFsError::Link { .. }
        ));
    }
}
