#!/usr/bin/env python3
"""Bundle the web view's browser libraries into the package (runtime/vdc_runtime/ui/static/
vendor/), from npm, at build time: the page loads nothing from a CDN, so it works offline.

    python3 scripts/ui_assets.py      # also a step of scripts/deps.py (`make deps`)

Each package is pinned to a version and to the registry's integrity hash of its tarball; a
tarball that does not match is refused. Tarballs are kept under $VDC_CACHE_DIR/npm, so a
rebuild is offline. Standard library only (and `npm`, for the download).
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("VDC_CACHE_DIR") or "/var/cache/vdc") / "npm"
VENDOR = ROOT / "runtime" / "vdc_runtime" / "ui" / "static" / "vendor"


class Pin:
    def __init__(self, name: str, version: str, integrity: str, files: dict[str, str]) -> None:
        self.name, self.version, self.integrity, self.files = name, version, integrity, files

    @property
    def tarball(self) -> Path:
        return CACHE / f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"


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


def fetch(pin: Pin) -> bytes:
    """The pinned tarball, downloaded once, checked every time."""
    if not pin.tarball.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["npm", "pack", f"{pin.name}@{pin.version}", "--silent",
             "--pack-destination", str(CACHE), "--cache", str(CACHE / "cache")],
            capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"ui_assets: npm pack {pin.name}@{pin.version} failed:\n{done.stderr}")
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


def bundle(pin: Pin) -> str:
    if stamp(pin).exists() and all((VENDOR / out).exists() for out in pin.files.values()):
        return "ok"
    fetch(pin)
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
    outcomes = [bundle(pin) for pin in PINS]
    return print("bundled" if "bundled" in outcomes else "ok") or 0


if __name__ == "__main__":
    sys.exit(main())
