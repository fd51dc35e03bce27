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
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tests.e2e.cluster import build
from tests.prereqs import atomic

ROOT = Path(__file__).resolve().parents[3]
BASE_NAME = "docker.io/library/debian:bookworm-slim"
COPIED = ("pyproject.toml", "README.md", "runtime", "operator", "scripts/ui_assets.py",
          "tests/guest/build.py", "tests/guest/init.sh", "tests/guest/udhcpc.sh",
          "tests/e2e/runner/standin.py")  # fmt: skip
"""What the Containerfiles COPY from the repository (keep in step with them)."""
IMAGES = {
    "vdc.local/vdc-runtime:dev": ROOT / "images" / "runtime" / "Containerfile",
    "vdc.local/vdc-operator:dev": ROOT / "images" / "operator" / "Containerfile",
    # FROM the runtime image above: built after it.
    "vdc.local/vdc-runner-standin:dev": ROOT / "tests" / "e2e" / "runner" / "Containerfile",
}


def work_dir() -> Path:
    return build.cache_root() / "images"


def buildah(*args: str, capture: bool = True) -> str:
    storage = work_dir() / "storage"
    argv = ["buildah", "--root", str(storage / "root"), "--runroot", str(storage / "run"),
            "--storage-driver", "overlay", *args]  # fmt: skip
    done = subprocess.run(argv, capture_output=capture, text=True)
    if done.returncode != 0:
        output = (done.stdout or "") + (done.stderr or "") if capture else ""
        raise SystemExit(f"images.py: buildah {args[0]} failed:\n{output[-3000:]}")
    return done.stdout or ""


def ensure_base(progress=print) -> None:  # type: ignore[no-untyped-def]
    """The Debian base the Containerfiles name, made locally once."""
    if BASE_NAME in buildah("images", "--format", "{{.Name}}:{{.Tag}}"):
        return
    rootfs = work_dir() / "bookworm-minbase.tar"
    if not rootfs.exists():
        started = time.monotonic()
        partial = rootfs.with_suffix(".partial.tar")
        partial.unlink(missing_ok=True)
        subprocess.run(
            ["mmdebstrap", "--quiet", "--variant=minbase", "bookworm", str(partial)], check=True
        )
        partial.rename(rootfs)
        progress(f"images.py: Debian base rootfs in {time.monotonic() - started:.0f} s")
    container = buildah("from", "scratch").strip()
    try:
        buildah("add", container, str(rootfs), "/")
        buildah("config", "--cmd", "/bin/bash", container)
        buildah("commit", "--quiet", container, BASE_NAME)
    finally:
        buildah("rm", container)


def proxy_ca_args() -> list[str]:
    """Where pip on this machine is told to trust a TLS-inspecting proxy (PIP_CERT), the
    build's pip is told the same, through the Containerfiles' PIP_CERT argument."""
    host_ca = os.environ.get("PIP_CERT")
    if not host_ca or not Path(host_ca).is_file():
        return []
    inside = "/run/vdc-build-ca.crt"
    return ["--volume", f"{host_ca}:{inside}:ro", "--build-arg", f"PIP_CERT={inside}"]


def inputs_digest(containerfile: Path) -> str:
    """What an image is built from: its Containerfile and the repository files it copies."""
    digest = hashlib.sha256(containerfile.read_bytes())
    for top in COPIED:
        path = ROOT / top
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in files:
            if file.is_file() and "__pycache__" not in file.parts:
                digest.update(str(file.relative_to(ROOT)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def archive_path(name: str) -> Path:
    return work_dir() / (name.split("/")[-1].replace(":", "_") + ".oci.tar")


def _stamp(archive: Path) -> Path:
    return archive.with_suffix(".inputs")


def current(name: str, digest: str | None = None) -> bool:
    """The image's archive is complete and was built from today's inputs (`digest`, if
    the caller has it already)."""
    archive = archive_path(name)
    try:
        recorded = json.loads(_stamp(archive).read_text())
        return (
            recorded["inputs"] == (digest or inputs_digest(IMAGES[name]))
            and archive.stat().st_size == recorded["size"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def stale() -> list[str]:
    return [name for name in IMAGES if not current(name)]


def build_images(progress=print) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    """Build every image whose inputs changed; returns name -> oci-archive path.

    An archive counts only with a stamp naming its inputs and size, written after the
    archive is complete: a build killed anywhere is redone (buildah's layer cache keeps
    what it had finished)."""
    work_dir().mkdir(parents=True, exist_ok=True)
    with atomic.locked(work_dir()):
        for name, containerfile in IMAGES.items():
            # Taken before the build: a source edited while it runs makes the next run
            # build again instead of being recorded as built.
            digest = inputs_digest(containerfile)
            if current(name, digest):
                continue
            archive = archive_path(name)
            _stamp(archive).unlink(missing_ok=True)
            ensure_base(progress)
            started = time.monotonic()
            buildah("bud", "--quiet", "--layers", "--pull-never", "--isolation", "chroot",
                    *proxy_ca_args(), "-f", str(containerfile), "-t", name, str(ROOT))  # fmt: skip
            partial = archive.with_name(archive.name + ".partial")
            partial.unlink(missing_ok=True)
            # Uncompressed: the archive only travels to containerd on this machine.
            buildah("push", "--quiet", "--disable-compression", name,
                    f"oci-archive:{partial}:{name}")  # fmt: skip
            os.replace(partial, archive)
            record = {"inputs": digest, "size": archive.stat().st_size}
            tmp = _stamp(archive).with_suffix(".tmp")
            tmp.write_text(json.dumps(record))
            os.replace(tmp, _stamp(archive))
            progress(f"images.py: {name} in {time.monotonic() - started:.0f} s")
    return {name: archive_path(name) for name in IMAGES}


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
