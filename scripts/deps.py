#!/usr/bin/env python3
"""Install and build everything vdc's demo and tests need, idempotently, outside the
repository (under $VDC_CACHE_DIR, default /var/cache/vdc).

    python3 scripts/deps.py            # `make deps`: what `make demo` and the host tests need
    python3 scripts/deps.py --e2e      # `make deps-e2e`: also the e2e cluster, skaffold, images
    python3 scripts/deps.py --verify   # also rehash every build against its manifest

One line per step with its time; a warm run takes about a second. Builds are all or
nothing (tests/prereqs/atomic.py): a build killed halfway is redone by the next run and
never taken for a finished one. The tests only look these up (tests/prereqs/require.py).

It starts under any Python 3.11 (standard library only) to make the virtualenv, then
carries on under the virtualenv's Python, which the build steps need.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("VDC_CACHE_DIR") or "/var/cache/vdc")
VENV = CACHE / "venv"
VENV_PY = VENV / "bin" / "python"
STAGE = "VDC_DEPS_STAGE"  # set when the virtualenv's Python carries on

# What `vdc run`, the demo and the host tests use.
BASE_DEBS = [
    *("iproute2", "nftables", "bird2", "dnsmasq-base", "util-linux", "procps"),
    *("iputils-ping", "socat", "curl", "qemu-system-x86", "qemu-utils", "ovmf", "swtpm"),
    *("swtpm-tools", "ipxe-qemu", "seabios", "busybox-static", "cpio", "kmod", "mtools"),
    *("dosfstools", "fdisk", "syslinux", "syslinux-common", "extlinux", "isolinux"),
    "grub-efi-amd64-bin",  # with isolinux: the test guest's hybrid BIOS/UEFI ISO
    *("ipmitool", "freeipmi-tools", "jq", "iperf3"),
    # `dot`, only to check that `vdc graph --format dot` parses (the default SVG needs none).
    "graphviz",
    # The web view's browser tests (tests/runtime/test_run_webview.py), with selenium.
    *("chromium", "chromium-driver"),
]
# The e2e cluster (tests/e2e/cluster), its pause image (gcc) and the container images.
E2E_DEBS = [
    *("containerd", "runc", "containernetworking-plugins", "conntrack", "iptables"),
    *("gcc", "libc6-dev", "buildah", "mmdebstrap"),
]


def say(line: str) -> None:
    print(line, flush=True)


def step(name: str, action: Callable[[], str]) -> None:
    """Run one step; its line says what it did ('ok': nothing to do) and how long it took."""
    started = time.monotonic()
    try:
        outcome = action()
    except BaseException:
        say(f"deps: {name:<34} FAILED {time.monotonic() - started:7.1f} s")
        raise
    say(f"deps: {name:<34} {outcome:<9} {time.monotonic() - started:6.1f} s")


def progress(line: str) -> None:
    """What a long build says while it works, under its step's line."""
    say(f"      {line}")


def sh(*argv: str, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"deps: {' '.join(argv[:3])} ... failed (exit {done.returncode})")


# -- stage 1: any Python ---------------------------------------------------------------------


def debian_packages(wanted: list[str]) -> str:
    query = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${Status}\n", *wanted],
        capture_output=True,
        text=True,
    )
    installed = {
        line.split()[0]
        for line in query.stdout.splitlines()
        if line.endswith("install ok installed")
    }
    missing = [p for p in wanted if p not in installed]
    if not missing:
        return "ok"
    progress(f"installing {' '.join(missing)}")
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    sh("apt-get", "update", "-qq", env=env)
    sh("apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing, env=env)
    return "installed"


def virtualenv() -> str:
    if VENV_PY.exists():
        return "ok"
    sh(sys.executable, "-m", "venv", str(VENV))
    return "created"


def pip(*args: str) -> None:
    sh(str(VENV_PY), "-m", "pip", "-q", "--disable-pip-version-check", *args)


def python_packages() -> str:
    outcome = "ok"
    # Reinstalled only when the dependency lists or the commands changed (not for a
    # linter's settings): an editable install makes the commands' scripts only then.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = json.dumps(
        [project["dependencies"], project["optional-dependencies"], project["scripts"]]
    )
    stamp = VENV / f".vdc-deps-{hashlib.sha256(wanted.encode()).hexdigest()[:16]}"
    if not stamp.exists():
        pip("install", "--upgrade", "pip")
        pip("install", "-e", f"{ROOT}[test]")
        for old in VENV.glob(".vdc-deps-*"):
            old.unlink()
        stamp.touch()
        outcome = "installed"
    # The venv is shared by every checkout on the machine (CI clones afresh): vdc itself
    # must be this checkout, or tests would quietly run another tree's code.
    where = subprocess.run(
        [
            str(VENV_PY),
            "-c",
            "import vdc_runtime, os; print(os.path.dirname(os.path.dirname(vdc_runtime.__file__)))",
        ],
        capture_output=True,
        text=True,
        cwd="/",
    ).stdout.strip()
    if where != str(ROOT / "runtime"):
        pip("install", "--no-deps", "-e", str(ROOT))
        outcome = "relinked" if outcome == "ok" else outcome
    return outcome


# -- stage 2: the virtualenv's Python --------------------------------------------------------


def bytecode() -> str:
    # An editable install compiles nothing, and an environment with PYTHONDONTWRITEBYTECODE
    # (these machines have it) would recompile vdc at every start of `vdc run`.
    import compileall

    ok = all(
        compileall.compile_dir(ROOT / top, quiet=2, workers=1) for top in ("runtime", "operator")
    )
    if not ok:
        raise SystemExit("deps: vdc does not compile")
    return "ok"


def web_assets() -> str:
    """The web view's browser libraries, from the npm registry (pinned, integrity-checked),
    into the package."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "ui_assets.py")], capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit("deps: scripts/ui_assets.py failed")
    return done.stdout.strip() or "ok"


def test_guest() -> str:
    from tests.guest import build as guest

    before = guest.newest_build(guest.default_cache_dir())
    paths = guest.build_guest()
    return "ok" if before == paths else "built"


def signed_loaders() -> str:
    # Unpacked, not installed: shim-signed's scripts would run grub-install on an EFI host.
    from tests.guest import signed

    return "fetched" if signed.fetch_signed_loaders() else "ok"


def redfish_schemas() -> str:
    from tests.prereqs import redfish_csdl

    return "fetched" if redfish_csdl.fetch() else "ok"


def cluster_binaries() -> str:
    from tests.e2e.cluster import build

    if build.cluster_built():
        return "ok"
    build.build(progress)
    return "built"


def skaffold() -> str:
    from tests.e2e.cluster import build

    if build.skaffold_built():
        return "ok"
    build.build_skaffold(progress)
    return "built"


def pause_image() -> str:
    from tests.e2e.cluster import cluster

    layout = cluster.layout()
    if cluster.pause_current(layout):
        return "ok"
    cluster.build_pause(layout)
    return "built"


def container_images() -> str:
    from tests.e2e.cluster import images

    if not images.stale():
        return "ok"
    images.build_images(progress)
    return "built"


def verify_builds() -> str:
    from tests.e2e.cluster import build
    from tests.prereqs import atomic

    for out in (build.bin_dir(), build.skaffold_dir()):
        if out.exists() and not atomic.verify(out, full=True):
            raise SystemExit(f"deps: {out} does not match its manifest: remove it and run again")
    return "ok"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--e2e", action="store_true", help="also what the e2e tests need")
    parser.add_argument("--verify", action="store_true", help="rehash builds (slow)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("deps: run as root (it installs Debian packages and builds images)")
    CACHE.mkdir(parents=True, exist_ok=True)
    started = float(os.environ.get(STAGE) or time.monotonic())

    if not os.environ.get(STAGE):
        debs = BASE_DEBS + (E2E_DEBS if args.e2e else [])
        step("debian packages" + (" (with e2e)" if args.e2e else ""), lambda: debian_packages(debs))
        step("virtualenv", virtualenv)
        step("python packages", python_packages)
        # The rest imports the test helpers, which need the virtualenv's packages.
        os.execve(VENV_PY, [str(VENV_PY), *sys.argv], os.environ | {STAGE: str(started)})

    sys.path.insert(0, str(ROOT))
    step("bytecode", bytecode)
    step("web view assets", web_assets)
    step("test guest", test_guest)
    step("signed boot loaders", signed_loaders)
    step("redfish schemas", redfish_schemas)
    if args.e2e:
        step("kubernetes, etcd, helm", cluster_binaries)
        step("skaffold", skaffold)
        step("pause image", pause_image)
        step("container images", container_images)
    if args.verify:
        step("verify builds", verify_builds)
    say(f"deps: {'done':<34} {'':<9} {time.monotonic() - started:6.1f} s")


if __name__ == "__main__":
    main()
