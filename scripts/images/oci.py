"""OCI image layouts written and read without a container engine: layers as gzipped tars of
a root file system (or of what one stage changed in it, with whiteouts for what it removed), the
image config, the manifest, index.json, and a tarball `docker load` takes.

Spec: https://github.com/opencontainers/image-spec (image-layout.md, layer.md, config.md).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import stat
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
# What a runtime provides, never a layer: mount points stay, their contents do not.
RUNTIME_DIRS = ("dev", "proc", "sys")


@dataclass(frozen=True)
class Layer:
    """A layer blob: its digest (of the gzip), diff_id (of the tar) and sizes."""

    digest: str
    diff_id: str
    size: int  # compressed, as stored
    unpacked: int  # bytes of file content in the tar
    path: Path


def _walk(root: Path) -> Iterator[Path]:
    """Every path under root, relative, parents first, sorted (stable layer digests)."""
    stack = [Path()]
    while stack:
        rel = stack.pop()
        full = root / rel
        children = sorted(os.listdir(full), reverse=True)
        for name in children:
            child = rel / name
            yield child
        for name in children:
            child = rel / name
            if (root / child).is_dir() and not (root / child).is_symlink():
                if not (rel == Path() and name in RUNTIME_DIRS):
                    stack.append(child)


Snapshot = dict[Path, tuple[int, int, int, int, int, str]]


def _state(path: Path) -> tuple[int, int, int, int, int, str]:
    st = os.lstat(path)
    link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
    if stat.S_ISDIR(st.st_mode):  # new entries are listed themselves, not through their folder
        return (st.st_mode, st.st_uid, st.st_gid, 0, 0, "")
    return (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, link)


def snapshot(root: Path) -> Snapshot:
    """What each path under root is (type, mode, owner, size, mtime, link): enough to tell
    what a later stage changed (tools that rewrite a file give it a new mtime)."""
    return {rel: _state(root / rel) for rel in _walk(root)}


def changes(before: Snapshot | None, root: Path) -> tuple[list[Path], list[Path]]:
    """What a layer over the tree `before` describes must hold to give root now: (added or
    changed paths, removed paths)."""
    now = snapshot(root)
    if before is None:
        return list(now), []
    changed = [rel for rel, state in now.items() if before.get(rel) != state]
    removed: list[Path] = []
    gone = set(before) - set(now)
    for rel in sorted(gone, key=lambda p: p.parts):
        if not any(parent in gone for parent in rel.parents):
            removed.append(rel)  # a removed folder's whiteout covers what it held
    return changed, removed


class _Hashing:
    """A write-only stream that hashes and counts what goes through it."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return int(self.sink.write(data))


def write_layer(
    root: Path, paths: Iterable[Path], removed: Iterable[Path], blobs: Path, epoch: int
) -> Layer:
    """A gzipped tar of `paths` under root (and a whiteout for each removed path) in blobs/,
    streamed: a layer of fonts and language models need not fit in memory."""
    blobs.mkdir(parents=True, exist_ok=True)
    partial = blobs / ".partial"
    unpacked = 0
    with partial.open("wb") as out:
        compressed: Any = _Hashing(out)
        with gzip.GzipFile(filename="", fileobj=compressed, mode="wb", compresslevel=6, mtime=0) as gz:  # fmt: skip
            raw = _Hashing(gz)
            with tarfile.open(fileobj=raw, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                entries = [(rel, False) for rel in paths] + [(rel, True) for rel in removed]
                for rel, whiteout in sorted(entries, key=lambda e: e[0].parts):
                    if whiteout:
                        info = tarfile.TarInfo(str(rel.parent / f"{WHITEOUT}{rel.name}"))
                        info.mtime = epoch
                        tar.addfile(info)
                        continue
                    info = tar.gettarinfo(str(root / rel), arcname=str(rel))
                    info.uname = info.gname = ""
                    # Layer digests follow the content, not when the build ran.
                    info.mtime = min(int(info.mtime), epoch)
                    if info.isreg():
                        unpacked += info.size
                        with open(root / rel, "rb") as f:
                            tar.addfile(info, f)
                    else:
                        tar.addfile(info)
    digest = compressed.sha.hexdigest()
    path = blobs / digest
    partial.rename(path)
    diff_id = "sha256:" + raw.sha.hexdigest()
    return Layer(f"sha256:{digest}", diff_id, compressed.size, unpacked, path)


def _blob(blobs: Path, document: dict[str, Any]) -> tuple[str, int]:
    data = json.dumps(document, indent=2, sort_keys=True).encode()
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return f"sha256:{digest}", len(data)


def write_layout(
    out: Path,
    layers: list[Layer],
    config: dict[str, Any],
    name: str,
    tag: str,
    annotations: dict[str, str],
) -> dict[str, Any]:
    """An OCI image layout in `out` (oci-layout, index.json, blobs/sha256) and `out`.tar with
    the same files plus the manifest.json `docker load` reads. Returns the manifest."""
    if out.exists():
        shutil.rmtree(out)
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for layer in layers:
        target = blobs / layer.digest.removeprefix("sha256:")
        try:
            os.link(layer.path, target)
        except OSError:
            shutil.copyfile(layer.path, target)
    image_config = {
        **config,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
    }
    config_digest, config_size = _blob(blobs, image_config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [
            {"mediaType": MEDIA_LAYER, "digest": layer.digest, "size": layer.size}
            for layer in layers
        ],
        "annotations": annotations,
    }
    manifest_digest, manifest_size = _blob(blobs, manifest)
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [
            {
                "mediaType": MEDIA_MANIFEST,
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": {"architecture": config["architecture"], "os": config["os"]},
                "annotations": {
                    "org.opencontainers.image.ref.name": tag,
                    # What containerd and `docker load` (25+) name the image after.
                    "io.containerd.image.name": f"docker.io/{name}:{tag}",
                },
            }
        ],
    }
    (out / "index.json").write_text(json.dumps(index, indent=2, sort_keys=True))
    (out / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    # `docker load` before 25 reads manifest.json; its paths point into the same blobs.
    docker = [
        {
            "Config": f"blobs/sha256/{config_digest.removeprefix('sha256:')}",
            "RepoTags": [f"{name}:{tag}"],
            "Layers": [f"blobs/sha256/{layer.digest.removeprefix('sha256:')}" for layer in layers],
        }
    ]
    (out / "manifest.json").write_text(json.dumps(docker, indent=2))
    tarball = out.with_suffix(".tar")
    with tarfile.open(tarball, "w") as tar:
        for path in sorted(out.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(out)))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if info.isreg():
                with path.open("rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return manifest


def read_image(layout: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The (manifest, config) of the one image of an OCI layout, digests checked."""

    def blob(digest: str) -> bytes:
        data = (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise ValueError(f"{layout}: blob {digest} does not match its digest")
        return data

    [entry] = json.loads((layout / "index.json").read_text())["manifests"]
    manifest = json.loads(blob(entry["digest"]))
    config = json.loads(blob(manifest["config"]["digest"]))
    for layer in manifest["layers"]:
        blob(layer["digest"])
    return manifest, config


def unpack(layout: Path, rootfs: Path) -> dict[str, Any]:
    """Apply the image's layers in order into rootfs, as a runtime's snapshotter would
    (whiteouts applied, each diff_id checked); returns the image config."""
    manifest, config = read_image(layout)
    rootfs.mkdir(parents=True, exist_ok=True)
    for layer, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True):
        blob = layout / "blobs" / "sha256" / layer["digest"].removeprefix("sha256:")
        with gzip.open(blob, "rb") as gz:
            reader = _HashingReader(gz)
            with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
                for member in tar:
                    path = Path(member.name)
                    if path.name == OPAQUE:
                        for child in (rootfs / path.parent).iterdir():
                            _remove(child)
                    elif path.name.startswith(WHITEOUT):
                        _remove(rootfs / path.parent / path.name.removeprefix(WHITEOUT))
                    else:
                        target = rootfs / path
                        if target.is_symlink() or (target.exists() and not target.is_dir()):
                            target.unlink()
                        tar.extract(member, rootfs, numeric_owner=True, filter="fully_trusted")
            while reader.read(1 << 20):
                pass  # the tar's end padding counts in its diff_id
        if "sha256:" + reader.sha.hexdigest() != diff_id:
            raise ValueError(f"{layout}: layer {layer['digest']} does not match {diff_id}")
    return config


class _HashingReader:
    def __init__(self, source: Any) -> None:
        self.source = source
        self.sha = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data: bytes = self.source.read(size)
        self.sha.update(data)
        return data


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.is_symlink() or path.exists():
        path.unlink()
