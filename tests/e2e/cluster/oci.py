"""A minimal OCI image writer: layers from files, a config, an `oci-archive` tar.

Used for the images that have no Containerfile of their own (the sandbox `pause` image):
building them needs no engine and no base image, only the standard library. Layers are
reproducible (mtimes 0, sorted entries), so an unchanged image gets the same digest.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class File:
    path: str  # inside the image, without a leading slash
    data: bytes
    mode: int = 0o644


def layer(files: Iterable[File]) -> bytes:
    """An uncompressed layer tar holding `files` (and their parent directories)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        seen: set[str] = set()
        for file in sorted(files, key=lambda f: f.path):
            parts = file.path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                directory = "/".join(parts[:i])
                if directory not in seen:
                    seen.add(directory)
                    info = tarfile.TarInfo(directory)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
            info = tarfile.TarInfo(file.path)
            info.size, info.mode = len(file.data), file.mode
            tar.addfile(info, io.BytesIO(file.data))
    return buffer.getvalue()


def _blob(tar: tarfile.TarFile, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
    return f"sha256:{digest}", len(data)


def write_archive(
    out: Path,
    name: str,
    layers: list[bytes],
    *,
    entrypoint: list[str],
    env: dict[str, str] | None = None,
) -> None:
    """Write an OCI image layout as a tar that `ctr images import` takes under `name`
    (which must be fully qualified: containerd's CRI looks images up by that name)."""
    with tarfile.open(out, "w") as tar:
        descriptors, diff_ids = [], []
        for raw in layers:
            diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
            digest, size = _blob(tar, gzip.compress(raw, mtime=0))
            descriptors.append(
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": digest,
                    "size": size,
                }
            )
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Entrypoint": entrypoint,
                "Env": [f"{k}={v}" for k, v in (env or {"PATH": "/usr/bin:/bin"}).items()],
            },
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
        config_digest, config_size = _blob(tar, json.dumps(config, sort_keys=True).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config_size,
            },
            "layers": descriptors,
        }
        manifest_digest, manifest_size = _blob(tar, json.dumps(manifest, sort_keys=True).encode())
        index = {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest,
                    "size": manifest_size,
                    "annotations": {
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rpartition(":")[2],
                    },
                }
            ],
        }
        for path, data in (
            ("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()),
            ("index.json", json.dumps(index).encode()),
        ):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


__all__ = ["File", "layer", "write_archive"]
