#!/usr/bin/env python3
"""Packs files into an OCI image archive: a tar of an OCI image layout, as `ctr images import` reads.

    scripts/oci-image.py --ref registry.k8s.io/pause:3.10.1 --out pause.tar \\
        --entrypoint /pause --user 65535:65535 --epoch 1761566464 --add bin/pause:/pause:0755

The archive holds `oci-layout`, `index.json` (one manifest, annotated with
`io.containerd.image.name` = the full reference and `org.opencontainers.image.ref.name` = the
tag), and under `blobs/sha256/` the manifest, the image config and one gzip'd tar layer. The
result is deterministic: every entry of both tars is sorted, owned by its given uid/gid (0 unless
told), stamped with `--epoch`, and gzip's header has no name and no time; the same inputs give the
same bytes and so the same digests.

Layer contents (each option may be repeated; parent directories are added as 0755 root):
  --add SRC:DEST:MODE[:UID:GID]   a file from the build machine
  --text DEST:MODE:TEXT           a file with this text (escapes: \\n)
  --dir DEST:MODE[:UID:GID]       a directory
  --cap DEST:CAPS                 file capabilities, as `setcap CAPS+ep DEST` sets them (a
                                  security.capability xattr in the layer; containerd applies it)
Config (as a Dockerfile's): --entrypoint/--cmd (one word per option), --user, --workdir,
--expose PORT[/PROTO], --env K=V, --label K=V. --annotation K=V goes on the manifest.
Python 3 standard library only.
"""
import argparse
import datetime
import gzip
import hashlib
import io
import json
import os
import struct
import sys
import tarfile

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"

# linux/capability.h: the bit of each capability we may need; VFS_CAP_REVISION_2 and the
# effective flag make the 20-byte value `setcap cap_x+ep` writes.
CAPS = {"cap_chown": 0, "cap_dac_override": 1, "cap_net_bind_service": 10, "cap_net_admin": 12, "cap_net_raw": 13, "cap_sys_admin": 21}
VFS_CAP_REVISION_2 = 0x02000000
VFS_CAP_FLAGS_EFFECTIVE = 0x000001


def die(msg):
    print(f"oci-image.py: {msg}", file=sys.stderr)
    sys.exit(2)


def cap_xattr(spec):
    """`cap_net_bind_service` (comma-separated for several) as security.capability's bytes."""
    bits = 0
    for name in spec.split(","):
        name = name.strip().lower()
        if name not in CAPS:
            die(f"unknown capability {name!r} (known: {', '.join(sorted(CAPS))})")
        bits |= 1 << CAPS[name]
    lo, hi = bits & 0xFFFFFFFF, bits >> 32
    # struct vfs_cap_data: magic_etc, then {permitted, inheritable} for the low and high words.
    return struct.pack("<5I", VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE, lo, 0, hi, 0)


def norm(dest):
    if not dest.startswith("/"):
        die(f"{dest!r}: a path in the image starts with /")
    parts = [p for p in dest.split("/") if p not in ("", ".")]
    if ".." in parts or not parts:
        die(f"{dest!r}: not a path in the image")
    return "/".join(parts)


def owner(fields, what):
    if not fields:
        return 0, 0
    if len(fields) != 2:
        die(f"{what}: owner is UID:GID")
    return int(fields[0]), int(fields[1])


class Layer:
    def __init__(self):
        self.entries = {}  # path in image (no leading /) -> dict
        self.xattrs = {}

    def put(self, path, kind, mode, uid=0, gid=0, data=None):
        if path in self.entries and not (kind == "dir" and self.entries[path]["kind"] == "dir"):
            die(f"/{path} is given twice")
        self.entries[path] = {"kind": kind, "mode": mode, "uid": uid, "gid": gid, "data": data}
        parent = os.path.dirname(path)
        while parent and parent not in self.entries:
            self.entries[parent] = {"kind": "dir", "mode": 0o755, "uid": 0, "gid": 0, "data": None}
            parent = os.path.dirname(parent)

    def tar(self, epoch):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for path in sorted(self.entries):
                e = self.entries[path]
                ti = tarfile.TarInfo(path)
                ti.mtime, ti.mode, ti.uid, ti.gid, ti.uname, ti.gname = epoch, e["mode"], e["uid"], e["gid"], "", ""
                if path in self.xattrs:
                    # Go's archive/tar (containerd's unpacker) reads SCHILY.xattr.* records as xattrs.
                    ti.pax_headers = {"SCHILY.xattr." + k: v.decode("utf-8", "surrogateescape") for k, v in sorted(self.xattrs[path].items())}
                if e["kind"] == "dir":
                    ti.type = tarfile.DIRTYPE
                    tf.addfile(ti)
                else:
                    ti.size = len(e["data"])
                    tf.addfile(ti, io.BytesIO(e["data"]))
        return buf.getvalue()


def kv(items, what):
    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            die(f"{what} {item!r}: K=V expected")
        out[k] = v
    return out


def blob(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog="See the head of this file for the details.")
    ap.add_argument("--ref", required=True, help="full image reference, e.g. registry.k8s.io/pause:3.10.1")
    ap.add_argument("--out", required=True, help="the archive to write (replaced atomically)")
    ap.add_argument("--epoch", type=int, default=int(os.environ.get("SOURCE_DATE_EPOCH", "0")), help="mtime of every entry and the image's created time (default $SOURCE_DATE_EPOCH or 0)")
    ap.add_argument("--add", action="append", default=[])
    ap.add_argument("--text", action="append", default=[])
    ap.add_argument("--dir", action="append", default=[])
    ap.add_argument("--cap", action="append", default=[])
    ap.add_argument("--entrypoint", action="append", default=None)
    ap.add_argument("--cmd", action="append", default=None)
    ap.add_argument("--user", default="")
    ap.add_argument("--workdir", default="")
    ap.add_argument("--expose", action="append", default=[])
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("--label", action="append", default=[])
    ap.add_argument("--annotation", action="append", default=[])
    ap.add_argument("--level", type=int, default=6, help="gzip level of the layer (default 6)")
    a = ap.parse_args()

    name, _, tag = a.ref.rpartition(":")
    if not name or "/" in tag or not tag or "@" in a.ref:
        die(f"{a.ref!r}: a reference with a tag (registry/name:tag) expected")
    if tag == "latest":
        die("no :latest (kubelet pulls it Always, and there is no registry)")

    layer = Layer()
    for spec in a.dir:
        f = spec.split(":")
        if len(f) not in (2, 4):
            die(f"--dir {spec!r}: DEST:MODE[:UID:GID]")
        uid, gid = owner(f[2:], f"--dir {spec}")
        layer.put(norm(f[0]), "dir", int(f[1], 8), uid, gid)
    for spec in a.add:
        f = spec.split(":")
        if len(f) not in (3, 5):
            die(f"--add {spec!r}: SRC:DEST:MODE[:UID:GID]")
        uid, gid = owner(f[3:], f"--add {spec}")
        with open(f[0], "rb") as fh:
            layer.put(norm(f[1]), "file", int(f[2], 8), uid, gid, fh.read())
    for spec in a.text:
        dest, mode, text = (spec.split(":", 2) + ["", ""])[:3]
        layer.put(norm(dest), "file", int(mode, 8), 0, 0, text.replace("\\n", "\n").encode())
    for spec in a.cap:
        dest, _, caps = spec.partition(":")
        path = norm(dest)
        if layer.entries.get(path, {}).get("kind") != "file":
            die(f"--cap {spec!r}: /{path} is not a file of the image")
        layer.xattrs.setdefault(path, {})["security.capability"] = cap_xattr(caps)

    layer_tar = layer.tar(a.epoch)
    gz = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=gz, mtime=0, compresslevel=a.level) as g:
        g.write(layer_tar)
    layer_gz = gz.getvalue()

    created = datetime.datetime.fromtimestamp(a.epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    cfg = {}
    if a.user:
        cfg["User"] = a.user
    if a.expose:
        cfg["ExposedPorts"] = {(p if "/" in p else p + "/tcp"): {} for p in a.expose}
    if a.env:
        cfg["Env"] = a.env
    if a.entrypoint:
        cfg["Entrypoint"] = a.entrypoint
    if a.cmd:
        cfg["Cmd"] = a.cmd
    if a.workdir:
        cfg["WorkingDir"] = a.workdir
    if a.label:
        cfg["Labels"] = kv(a.label, "--label")
    config = {
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [blob(layer_tar)]},
        "history": [{"created": created, "created_by": "hardway scripts/oci-image.py", "comment": " ".join(sorted("/" + p for p, e in layer.entries.items() if e["kind"] == "file"))}],
    }
    config_bytes = json.dumps(config, separators=(",", ":")).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": blob(config_bytes), "size": len(config_bytes)},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": blob(layer_gz), "size": len(layer_gz)}],
    }
    if a.annotation:
        manifest["annotations"] = kv(a.annotation, "--annotation")
    manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode()
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": blob(manifest_bytes),
            "size": len(manifest_bytes),
            "annotations": {"io.containerd.image.name": a.ref, "org.opencontainers.image.ref.name": tag},
            "platform": {"architecture": "amd64", "os": "linux"},
        }],
    }
    files = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}, separators=(",", ":")).encode(),
        "index.json": json.dumps(index, separators=(",", ":")).encode(),
    }
    for data in (config_bytes, manifest_bytes, layer_gz):
        files["blobs/sha256/" + blob(data)[len("sha256:"):]] = data

    out = Layer()
    for path, data in files.items():
        out.put(path, "file", 0o644, data=data)
    tmp = a.out + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(out.tar(a.epoch))
    os.replace(tmp, a.out)
    print(f"{a.ref} {blob(manifest_bytes)} layer {len(layer_gz)} bytes -> {a.out}")


if __name__ == "__main__":
    main()
