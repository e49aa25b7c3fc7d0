"""Deterministic container image archives, written without a Docker daemon or a registry.

An image here is a list of layers, each a list of :class:`Entry` (a file copied from the
host, bytes, a directory or a symlink at a path inside the image), plus the few config
fields a pod needs (entrypoint, user, environment). :func:`write_image_archive` writes one
tar that both loaders in use accept:

* ``oci-layout`` + ``index.json`` + ``blobs/sha256/<hex>`` (an OCI image layout): what
  ``ctr images import`` reads when ``oci-layout`` is present; the index names the image in
  the ``io.containerd.image.name`` annotation (the full reference) and
  ``org.opencontainers.image.ref.name`` (its tag), as ``docker save`` does since Docker 25;
* ``manifest.json`` with ``Config``/``RepoTags``/``Layers`` pointing at the same blobs: the
  docker-archive form ``docker load`` (and older importers) read.

Same inputs, same bytes: entries sorted by path, parent directories made explicit, every
mtime 0 (the config's ``created`` is the epoch too), owners numeric with empty names, PAX
format, layers uncompressed (their digest is their diff_id; gzip would cost a core-minute
for the 300 MB of Go and Envoy binaries and save nothing on a local import).

Usage::

    layer = [Entry.file("/usr/local/bin/app", Path("build/app"), mode=0o755)]
    image = Image("harness.local/app", [layer], ImageConfig(entrypoint=("/usr/local/bin/app",)))
    ref = write_image_archive(image, Path("app.tar"))   # harness.local/app:<digest12>
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Literal, cast

__all__ = [
    "MEDIA_CONFIG",
    "MEDIA_INDEX",
    "MEDIA_LAYER",
    "MEDIA_MANIFEST",
    "Entry",
    "Image",
    "ImageConfig",
    "WrittenImage",
    "write_image_archive",
]

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
EPOCH = "1970-01-01T00:00:00Z"
CHUNK = 1 << 20

EntryKind = Literal["file", "dir", "symlink"]


@dataclass(frozen=True)
class Entry:
    """One path inside an image layer (absolute, ``/``-separated)."""

    path: str
    kind: EntryKind
    mode: int = 0o644
    source: Path | None = None  # a host file to copy (kind "file")
    data: bytes | None = None  # or these bytes (kind "file")
    target: str = ""  # kind "symlink"
    uid: int = 0
    gid: int = 0

    @classmethod
    def file(cls, path: str, source: Path, mode: int | None = None) -> Entry:
        """The host file ``source`` at ``path``; its mode is kept unless given."""
        if mode is None:
            mode = 0o755 if os.access(source, os.X_OK) else 0o644
        return cls(path, "file", mode, source=source)

    @classmethod
    def text(cls, path: str, data: bytes | str, mode: int = 0o644) -> Entry:
        raw = data.encode() if isinstance(data, str) else data
        return cls(path, "file", mode, data=raw)

    @classmethod
    def directory(cls, path: str, mode: int = 0o755, owner: int = 0) -> Entry:
        return cls(path, "dir", mode, uid=owner, gid=owner)

    @classmethod
    def symlink(cls, path: str, target: str) -> Entry:
        return cls(path, "symlink", 0o777, target=target)

    @property
    def name(self) -> str:
        """The member name in a layer tar: relative, no trailing slash."""
        return str(PurePosixPath(self.path)).lstrip("/")

    def fingerprint(self) -> list[object]:
        """What identifies this entry's content without reading it: a copied file by its
        size and mtime (the build cache's key), bytes by their hash."""
        base: list[object] = [self.name, self.kind, self.mode, self.target, self.uid, self.gid]
        if self.source is not None:
            st = self.source.stat()
            base += [str(self.source), st.st_size, st.st_mtime_ns]
        if self.data is not None:
            base.append(hashlib.sha256(self.data).hexdigest())
        return base


@dataclass(frozen=True)
class ImageConfig:
    """The runtime part of an OCI image config."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    user: str = ""
    workdir: str = "/"
    labels: tuple[tuple[str, str], ...] = ()

    def as_json(self) -> dict[str, object]:
        body: dict[str, object] = {"Env": list(self.env), "WorkingDir": self.workdir}
        if self.entrypoint:
            body["Entrypoint"] = list(self.entrypoint)
        if self.cmd:
            body["Cmd"] = list(self.cmd)
        if self.user:
            body["User"] = self.user
        if self.labels:
            body["Labels"] = dict(self.labels)
        return body


@dataclass(frozen=True)
class Image:
    """An image to write: its repository (``harness.local/app``), layers and config."""

    repository: str
    layers: Sequence[Sequence[Entry]]
    config: ImageConfig = field(default_factory=ImageConfig)


@dataclass(frozen=True)
class WrittenImage:
    """What :func:`write_image_archive` wrote: the reference and its digests."""

    ref: str
    config_digest: str
    manifest_digest: str
    layer_digests: tuple[str, ...]
    size: int


def with_parents(entries: Iterable[Entry]) -> list[Entry]:
    """``entries`` sorted by path, with a directory entry (0755, root) for every parent not
    listed; a path listed twice keeps its last entry."""
    by_name: dict[str, Entry] = {}
    for entry in entries:
        by_name[entry.name] = entry
    for name in list(by_name):
        parent = PurePosixPath(name).parent
        while str(parent) not in (".", "") and str(parent) not in by_name:
            by_name[str(parent)] = Entry.directory("/" + str(parent))
            parent = parent.parent
    return [by_name[name] for name in sorted(by_name)]


def _member(entry: Entry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.name)
    info.mode = entry.mode
    info.mtime = 0
    info.uid, info.gid = entry.uid, entry.gid
    info.uname = info.gname = ""
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
    elif entry.kind == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = entry.target
    return info


class _HashingWriter:
    """A write-only stream that hashes and counts what passes into ``sink`` (tarfile needs
    only ``write`` and ``tell``)."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink = sink
        self.sha = hashlib.sha256()
        self.size = 0

    def tell(self) -> int:
        return self.size

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        self.sink.write(data)
        return len(data)


def write_layer(entries: Iterable[Entry], sink: IO[bytes]) -> tuple[str, int]:
    """Write one layer tar of ``entries`` into ``sink``; its ``sha256:`` digest and size."""
    out = _HashingWriter(sink)
    with tarfile.open(fileobj=cast(IO[bytes], out), mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in with_parents(entries):
            info = _member(entry)
            if entry.kind != "file":
                tar.addfile(info)
            elif entry.source is not None:
                info.size = entry.source.stat().st_size
                with entry.source.open("rb") as fh:
                    tar.addfile(info, fh)
            else:
                payload = entry.data or b""
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return "sha256:" + out.sha.hexdigest(), out.size


def _json_bytes(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _blob_name(digest: str) -> str:
    return "blobs/sha256/" + digest.removeprefix("sha256:")


def _config_blob(image: Image, diff_ids: list[str]) -> bytes:
    return _json_bytes(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": EPOCH,
            "config": image.config.as_json(),
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": EPOCH, "created_by": "harness.cluster.images"}] * len(diff_ids),
        }
    )


def _descriptor(media: str, digest: str, size: int) -> dict[str, object]:
    return {"mediaType": media, "digest": digest, "size": size}


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def _index(ref: str, tag: str, manifest_digest: str, manifest_size: int) -> bytes:
    entry = {
        **_descriptor(MEDIA_MANIFEST, manifest_digest, manifest_size),
        "platform": {"architecture": "amd64", "os": "linux"},
        # The full name for containerd (it takes this one first), the tag for OCI tools.
        "annotations": {"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": tag},
    }
    return _json_bytes({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [entry]})


@dataclass(frozen=True)
class _Layer:
    digest: str
    size: int
    path: Path


def _write_outer(
    path: Path, ref: str, tag: str, config: bytes, layers: Sequence[_Layer]
) -> tuple[str, str]:
    """The archive itself; the config and manifest digests."""
    config_digest = _digest(config)
    manifest = _json_bytes(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": _descriptor(MEDIA_CONFIG, config_digest, len(config)),
            "layers": [_descriptor(MEDIA_LAYER, layer.digest, layer.size) for layer in layers],
        }
    )
    manifest_digest = _digest(manifest)
    docker = [
        {
            "Config": _blob_name(config_digest),
            "RepoTags": [ref],
            "Layers": [_blob_name(layer.digest) for layer in layers],
        }
    ]
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with (
            os.fdopen(fd, "wb") as raw,
            tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            _add_bytes(tar, "oci-layout", _json_bytes({"imageLayoutVersion": "1.0.0"}))
            _add_bytes(tar, "index.json", _index(ref, tag, manifest_digest, len(manifest)))
            _add_bytes(tar, "manifest.json", _json_bytes(docker))
            _add_bytes(tar, _blob_name(config_digest), config)
            _add_bytes(tar, _blob_name(manifest_digest), manifest)
            for digest in dict.fromkeys(layer.digest for layer in layers):
                layer = next(each for each in layers if each.digest == digest)
                info = tarfile.TarInfo(_blob_name(digest))
                info.size, info.mtime, info.mode = layer.size, 0, 0o644
                with layer.path.open("rb") as fh:
                    tar.addfile(info, fh)
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return config_digest, manifest_digest


def write_image_archive(image: Image, path: Path) -> WrittenImage:
    """Write ``image`` as one OCI-layout + docker-archive tar at ``path`` (atomically: a
    temporary file in the same directory, renamed). The tag is the first 12 hex digits of
    the config digest, so the reference changes exactly when the image does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".layers-") as scratch:
        layers = []
        for number, entries in enumerate(image.layers):
            layer_path = Path(scratch) / f"layer{number}.tar"
            with layer_path.open("wb") as sink:
                digest, size = write_layer(entries, sink)
            layers.append(_Layer(digest, size, layer_path))
        config = _config_blob(image, [layer.digest for layer in layers])
        tag = _digest(config).removeprefix("sha256:")[:12]
        ref = f"{image.repository}:{tag}"
        config_digest, manifest_digest = _write_outer(path, ref, tag, config, layers)
    return WrittenImage(
        ref=ref,
        config_digest=config_digest,
        manifest_digest=manifest_digest,
        layer_digests=tuple(layer.digest for layer in layers),
        size=path.stat().st_size,
    )
