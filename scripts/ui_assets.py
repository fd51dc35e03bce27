#!/usr/bin/env python3
"""Bundle the web view's browser libraries into the package (runtime/vdc_runtime/ui/static/
vendor/), from the npm registry, at build time: the page loads nothing from a CDN, so it
works offline.

    python3 scripts/ui_assets.py [--cert CA_FILE]
    # a step of scripts/deps.py (`make deps`) and of images/runtime/Containerfile

Each package is pinned to a version and to the registry's integrity hash of its tarball; a
tarball that does not match is refused. The tarball is the registry's own file, fetched by
a plain HTTPS GET (no npm needed; `NPM_CONFIG_REGISTRY` names a mirror, as for npm; `--cert`
trusts a TLS-inspecting proxy, as pip's does). Tarballs are kept under $VDC_CACHE_DIR/npm,
so a rebuild is offline. Standard library only.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import ssl
import sys
import tarfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("VDC_CACHE_DIR") or "/var/cache/vdc") / "npm"
REGISTRY = "https://registry.npmjs.org"
VENDOR = ROOT / "runtime" / "vdc_runtime" / "ui" / "static" / "vendor"


class Pin:
    def __init__(self, name: str, version: str, integrity: str, files: dict[str, str]) -> None:
        self.name, self.version, self.integrity, self.files = name, version, integrity, files

    @property
    def tarball(self) -> Path:
        return CACHE / f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"

    def url(self, registry: str) -> str:
        """Where the registry keeps the tarball (its `dist.tarball`): a scoped package's
        file is named without the scope."""
        unscoped = self.name.rsplit("/", 1)[-1]
        return f"{registry.rstrip('/')}/{self.name}/-/{unscoped}-{self.version}.tgz"


PINS = [
    Pin(
        "@xterm/xterm",
        "5.5.0",
        "sha512-hqJHYaQb5OptNunnyAnkHyM8aCjZ1MEIDTQu1iIbbTD/xops91NB5yq1ZK/dC2JDbVWtF23zUtl9JE2NqwT87A==",
        # What the page loads, and the licence that must travel with it.
        {
            "package/lib/xterm.js": "xterm.js",
            "package/css/xterm.css": "xterm.css",
            "package/LICENSE": "xterm.LICENSE",
        },
    ),
]


def integrity(data: bytes) -> str:
    """npm's Subresource Integrity string of a tarball."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def download(pin: Pin, cert: str | None) -> None:
    url = pin.url(os.environ.get("NPM_CONFIG_REGISTRY") or REGISTRY)
    try:
        context = ssl.create_default_context(cafile=cert)
    except OSError as exc:
        raise SystemExit(f"ui_assets: --cert {cert}: {exc}") from exc
    try:
        with urllib.request.urlopen(url, timeout=60, context=context) as response:
            data = response.read()
    except OSError as exc:
        raise SystemExit(f"ui_assets: {pin.name}@{pin.version}: GET {url} failed: {exc}") from exc
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = pin.tarball.with_name(pin.tarball.name + ".partial")
    partial.write_bytes(data)
    partial.replace(pin.tarball)


def fetch(pin: Pin, cert: str | None = None) -> bytes:
    """The pinned tarball, downloaded once, checked every time."""
    if not pin.tarball.exists():
        download(pin, cert)
    data = pin.tarball.read_bytes()
    if integrity(data) != pin.integrity:
        pin.tarball.unlink()
        raise SystemExit(
            f"ui_assets: {pin.name}@{pin.version}: the tarball's integrity is {integrity(data)},"
            f" not the pinned {pin.integrity}; removed it"
        )
    return data


def stamp(pin: Pin) -> Path:
    return VENDOR / f".{pin.tarball.stem}.{pin.integrity[7:23].replace('/', '_')}"


def bundle(pin: Pin, cert: str | None = None) -> str:
    if stamp(pin).exists() and all((VENDOR / out).exists() for out in pin.files.values()):
        return "ok"
    fetch(pin, cert)
    VENDOR.mkdir(parents=True, exist_ok=True)
    with tarfile.open(pin.tarball) as tar:
        for member, out in pin.files.items():
            source = tar.extractfile(member)
            if source is None:
                raise SystemExit(f"ui_assets: {pin.name}@{pin.version} has no {member}")
            (VENDOR / out).write_bytes(source.read())
    for old in VENDOR.glob(f".{pin.tarball.stem.rsplit('-', 1)[0]}-*"):
        old.unlink()
    stamp(pin).touch()
    return "bundled"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cert", help="CA bundle to trust for the download (pip's --cert)")
    args = parser.parse_args()
    outcomes = [bundle(pin, args.cert) for pin in PINS]
    return print("bundled" if "bundled" in outcomes else "ok") or 0


if __name__ == "__main__":
    sys.exit(main())
