"""The operator and runtime images, built from their Containerfiles with no registry.

    python3 tests/e2e/cluster/images.py [--import]

The Containerfiles start `FROM docker.io/library/debian:bookworm-slim`, which cannot be
pulled here: a Debian rootfs is made with mmdebstrap (cached) and committed under that
name into a private buildah storage, then `buildah bud --layers --pull-never` builds the
images; an unchanged layer is reused, so a code change rebuilds only the last layers.
`--import` also loads them into the e2e cluster's containerd (namespace `k8s.io`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tests.e2e.cluster import build

ROOT = Path(__file__).resolve().parents[3]
BASE_NAME = "docker.io/library/debian:bookworm-slim"
IMAGES = {
    "vdc.local/vdc-runtime:dev": ROOT / "images" / "runtime" / "Containerfile",
    "vdc.local/vdc-operator:dev": ROOT / "images" / "operator" / "Containerfile",
}


def work_dir() -> Path:
    return build.cache_root() / "images"


def buildah(*args: str, capture: bool = True) -> str:
    storage = work_dir() / "storage"
    argv = ["buildah", "--root", str(storage / "root"), "--runroot", str(storage / "run"),
            "--storage-driver", "vfs", *args]  # fmt: skip
    done = subprocess.run(argv, capture_output=capture, text=True)
    if done.returncode != 0:
        output = (done.stdout or "") + (done.stderr or "") if capture else ""
        raise SystemExit(f"images.py: buildah {args[0]} failed:\n{output[-3000:]}")
    return done.stdout or ""


def ensure_base() -> None:
    """The Debian base the Containerfiles name, made locally once."""
    if BASE_NAME in buildah("images", "--format", "{{.Name}}:{{.Tag}}"):
        return
    rootfs = work_dir() / "bookworm-minbase.tar"
    if not rootfs.exists():
        started = time.monotonic()
        partial = rootfs.with_suffix(".partial.tar")
        subprocess.run(
            ["mmdebstrap", "--quiet", "--variant=minbase", "bookworm", str(partial)], check=True
        )
        partial.rename(rootfs)
        print(f"images.py: Debian base rootfs in {time.monotonic() - started:.0f} s", flush=True)
    container = buildah("from", "scratch").strip()
    try:
        buildah("add", container, str(rootfs), "/")
        buildah("config", "--cmd", "/bin/bash", container)
        buildah("commit", "--quiet", container, BASE_NAME)
    finally:
        buildah("rm", container)


def build_images() -> dict[str, Path]:
    """Build every image; returns name -> oci-archive path."""
    work_dir().mkdir(parents=True, exist_ok=True)
    ensure_base()
    archives = {}
    for name, containerfile in IMAGES.items():
        started = time.monotonic()
        buildah("bud", "--quiet", "--layers", "--pull-never", "--isolation", "chroot",
                "-f", str(containerfile), "-t", name, str(ROOT))  # fmt: skip
        archive = work_dir() / (name.split("/")[-1].replace(":", "_") + ".oci.tar")
        archive.unlink(missing_ok=True)
        buildah("push", "--quiet", name, f"oci-archive:{archive}:{name}")
        print(f"images.py: {name} in {time.monotonic() - started:.0f} s", flush=True)
        archives[name] = archive
    return archives


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--import", dest="load", action="store_true",
                        help="also import into the e2e cluster's containerd")  # fmt: skip
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("images.py: run as root")
    archives = build_images()
    if args.load:
        from tests.e2e.cluster.cluster import import_image, layout

        for archive in archives.values():
            import_image(layout(), archive)


if __name__ == "__main__":
    main()
