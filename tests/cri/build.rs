//! Compiles the vendored CRI api.proto (client side only) with protoc, as etcd-client's build
//! does for etcd's.
//!
//! protoc before 22 (Debian bookworm's is 3.21) does not know the field option `debug_redact`,
//! which api.proto puts on the registry credentials of AuthConfig: it only keeps them out of
//! generated Go code's debug output and changes nothing on the wire. The build compiles a copy
//! without it, so that the vendored file stays upstream's.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=proto/api.proto");
    let proto = std::fs::read_to_string("proto/api.proto")?;
    let copy = proto.replace(" [debug_redact = true]", "");
    assert!(!copy.contains("debug_redact"), "api.proto uses debug_redact in a form this build does not remove");
    let dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("proto");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("api.proto"), copy)?;
    tonic_prost_build::configure().build_server(false).compile_protos(&[dir.join("api.proto")], &[dir])
}
