//! [`LocalShell`]: a [`Transport`] that is this machine's own `sh`.

use super::super::{Output, RemoteError};
use super::Transport;

/// This machine's own `sh`, as root if hardway runs as root: runs the same scripts as an SSH
/// session would, for tests of the scripts against real tools and files.
pub struct LocalShell;

impl Transport for LocalShell {
    fn run(&self, script: &str) -> Result<Output, RemoteError> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let io = |e: std::io::Error| RemoteError::failed("running sh", e.to_string());
        let mut child = Command::new("sh")
            .arg("-s")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io)?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(script.as_bytes())
            .map_err(io)?;
        let out = child.wait_with_output().map_err(io)?;
        Ok(Output {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    fn socket_request(&self, socket: &str, request: &[u8]) -> Result<String, RemoteError> {
        use std::io::{Read, Write};
        let err =
            |e: std::io::Error| RemoteError::failed("socket request", format!("{socket}: {e}"));
        let mut sock = std::os::unix::net::UnixStream::connect(socket).map_err(err)?;
        sock.write_all(request).map_err(err)?;
        let mut out = String::new();
        sock.read_to_string(&mut out).map_err(err)?;
        Ok(out)
    }
}
