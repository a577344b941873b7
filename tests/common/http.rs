//! A small HTTP/1.1 server of a directory, for tests that need a mirror (release archives, an
//! apt repository): GET only, with byte ranges, every request logged.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A request the mirror served: its path and its Range header.
type Log = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// An HTTP/1.1 server of a directory on 127.0.0.1, GET only, with byte ranges; every request
/// logged. `cut` makes it send only the first half of a path's body (then close), once.
pub struct Mirror {
    pub url: String,
    log: Log,
    pub cut: Arc<Mutex<Option<String>>>,
}

impl Mirror {
    /// On 127.0.0.1.
    pub fn serve(root: PathBuf) -> Mirror {
        Mirror::serve_on("127.0.0.1", root)
    }

    /// On `address` (a lab's bridge, for its machines), a port of the system's choosing.
    pub fn serve_on(address: &str, root: PathBuf) -> Mirror {
        let listener = TcpListener::bind((address, 0)).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let log: Log = Arc::default();
        let cut: Arc<Mutex<Option<String>>> = Arc::default();
        let (log2, cut2) = (log.clone(), cut.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = handle(stream, &root, &log2, &cut2);
            }
        });
        Mirror { url, log, cut }
    }

    pub fn requests(&self) -> Vec<(String, Option<String>)> {
        self.log.lock().unwrap().clone()
    }
}

fn handle(
    mut s: TcpStream,
    root: &Path,
    log: &Log,
    cut: &Mutex<Option<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = percent_decoded(line.split_whitespace().nth(1).unwrap_or("/"));
    let mut range = None;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("range")
        {
            range = Some(v.trim().to_string());
        }
    }
    log.lock().unwrap().push((path.clone(), range.clone()));
    let Ok(body) = std::fs::read(root.join(path.trim_start_matches('/'))) else {
        return s.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    };
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    let (head, part) = match start {
        Some(n) if n >= body.len() => {
            return s.write_all(b"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
        Some(n) => (
            format!(
                "206 Partial Content\r\nContent-Range: bytes {n}-{}/{}",
                body.len() - 1,
                body.len()
            ),
            &body[n..],
        ),
        None => ("200 OK".to_string(), &body[..]),
    };
    write!(
        s,
        "HTTP/1.1 {head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        part.len()
    )?;
    let once = cut.lock().unwrap().take_if(|p| *p == path);
    match once {
        Some(_) => s.write_all(&part[..part.len() / 2]),
        None => s.write_all(part),
    }
}

/// A request path as a file name: `%XX` decoded (apt asks for `conntrack_1%253a1.4.8-2_amd64.deb`
/// for the file `conntrack_1%3a1.4.8-2_amd64.deb`).
fn percent_decoded(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).and_then(|c| hex(*c)),
            b.get(i + 2).and_then(|c| hex(*c)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
