//! What an image archive holds, read on the operator's machine: the references it names, so
//! that deploy imports into a node's containerd only the archives whose images it lacks.
//!
//! An archive is a tar of an OCI image layout (`index.json`, whose manifests carry
//! `io.containerd.image.name` or `org.opencontainers.image.ref.name` annotations, as
//! `scripts/build-images` writes them) or of `docker save`'s layout (`manifest.json` with
//! `RepoTags`). Only the tar headers and those two small files are read.

/// The image references `archive` names; empty when it names none (it is then always imported).
pub fn refs(archive: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for (name, data) in tar_entries(archive) {
        let name = name.trim_start_matches("./");
        // Only the two small files are parsed, not every layer blob.
        if name != "index.json" && name != "manifest.json" {
            continue;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
            continue;
        };
        match name {
            "index.json" => {
                for m in v["manifests"].as_array().into_iter().flatten() {
                    let a = &m["annotations"];
                    if let Some(r) = a["io.containerd.image.name"].as_str() {
                        out.push(r.to_string());
                    } else if let Some(tag) = a["org.opencontainers.image.ref.name"]
                        .as_str()
                        .filter(|t| t.contains(':') || t.contains('/'))
                    {
                        out.push(tag.to_string());
                    }
                }
            }
            "manifest.json" => {
                for m in v.as_array().into_iter().flatten() {
                    out.extend(
                        m["RepoTags"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|t| t.as_str())
                            .map(str::to_string),
                    );
                }
            }
            _ => {}
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The regular files of an uncompressed tar (ustar or GNU headers), as (name, contents); stops
/// at the end marker or at the first header that does not parse.
fn tar_entries(tar: &[u8]) -> Vec<(String, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 512 <= tar.len() {
        let h = &tar[at..at + 512];
        if h.iter().all(|b| *b == 0) {
            break;
        }
        let field = |a: usize, b: usize| {
            String::from_utf8_lossy(&h[a..b])
                .trim_end_matches('\0')
                .to_string()
        };
        let Ok(size) = usize::from_str_radix(field(124, 136).trim().trim_end_matches('\0'), 8)
        else {
            break;
        };
        let mut name = field(0, 100);
        if &h[257..262] == b"ustar" {
            let prefix = field(345, 500);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        let data_at = at + 512;
        let Some(data) = tar.get(data_at..data_at + size) else {
            break;
        };
        if matches!(h[156], b'0' | 0) {
            out.push((name, data));
        }
        at = data_at + size.div_ceil(512) * 512;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar(files: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data) in files {
            let mut h = [0u8; 512];
            h[..name.len()].copy_from_slice(name.as_bytes());
            h[100..107].copy_from_slice(b"0000644");
            h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
            h[156] = b'0';
            h[257..262].copy_from_slice(b"ustar");
            out.extend_from_slice(&h);
            out.extend_from_slice(data.as_bytes());
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    #[test]
    fn references_of_an_oci_layout_and_of_docker_save() {
        let oci = tar(&[
            ("oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#),
            (
                "index.json",
                r#"{"manifests":[{"annotations":{"io.containerd.image.name":"registry.k8s.io/pause:3.10.1","org.opencontainers.image.ref.name":"3.10.1"}}]}"#,
            ),
        ]);
        assert_eq!(refs(&oci), ["registry.k8s.io/pause:3.10.1"]);
        let docker = tar(&[(
            "manifest.json",
            r#"[{"Config":"c.json","RepoTags":["hardway.test/busybox:1","b:2"],"Layers":[]}]"#,
        )]);
        assert_eq!(refs(&docker), ["b:2", "hardway.test/busybox:1"]);
        assert!(refs(b"not a tar").is_empty());
        assert!(refs(&tar(&[("index.json", "{}")])).is_empty());
    }
}
