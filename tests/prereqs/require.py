"""The tests' way to reach a built prerequisite: found, or the test fails saying which
`make` target makes it. Nothing here builds (a skip would read as a pass, a build would be
a test's side effect)."""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

from tests.e2e.cluster import build, images
from tests.guest import build as guest_build
from tests.prereqs import redfish_csdl as csdl_fetch

DEPS = "run `make deps` (scripts/deps.py) first"
DEPS_E2E = "run `make deps-e2e` (scripts/deps.py --e2e) first"


def guest() -> guest_build.GuestPaths:
    if not shutil.which("qemu-system-x86_64"):
        pytest.fail(f"qemu-system-x86_64 is missing: {DEPS}")
    found = guest_build.newest_build(guest_build.default_cache_dir())
    if found is None:
        pytest.fail(f"no test guest in {guest_build.default_cache_dir()}: {DEPS}")
    return found


def iso_tools() -> None:
    """What tests.guest.iso builds a bootable CD image with."""
    from tests.guest import iso

    wanted = {
        iso.ISOLINUX: "isolinux",
        iso.LDLINUX: "syslinux-common",
        iso.GRUB_EFI: "grub-efi-amd64-bin",
    }
    for path, package in wanted.items():
        if not path.exists():
            pytest.fail(f"{path} is missing (Debian: {package}): {DEPS}")
    if not shutil.which("mformat"):
        pytest.fail(f"mformat is missing (Debian: mtools): {DEPS}")


def signed_loaders() -> dict[str, Path]:
    """Debian's signed shim and GRUB (tests.guest.signed), unpacked by `make deps`."""
    from tests.guest import signed

    found = signed.find_signed_loaders()
    if found is None:
        pytest.fail(f"Debian's signed shim and GRUB are not unpacked: {DEPS}")
    return found


def dot() -> Path:
    """graphviz's `dot`, to check that `vdc graph --format dot` parses."""
    found = shutil.which("dot")
    if found is None:
        pytest.fail(f"graphviz's dot is missing: {DEPS}")
    return Path(found)


def helm() -> Path:
    if not build.cluster_built():
        pytest.fail(f"no complete build of helm and the cluster in {build.bin_dir()}: {DEPS_E2E}")
    return build.bin_dir() / "helm"


def skaffold() -> Path:
    if not build.skaffold_built():
        pytest.fail(f"no complete build of skaffold in {build.skaffold_dir()}: {DEPS_E2E}")
    return build.skaffold_path()


def image_archives() -> dict[str, Path]:
    if stale := images.stale():
        pytest.fail(f"images not built from the current sources: {', '.join(stale)}: {DEPS_E2E}")
    return {name: images.archive_path(name) for name in images.IMAGES}


SHARED_CSDL = Path(__file__).resolve().parents[3] / "shared" / "data" / "redfish-csdl"
CSDL_ENV = "VDC_REDFISH_CSDL"


def redfish_csdl() -> Path | None:
    """The DMTF Redfish schema bundle (CSDL) for the Service Validator: the project's
    shared copy beside the checkout, else the directory $VDC_REDFISH_CSDL names, else the
    copy `make deps` fetched (`tests.prereqs.redfish_csdl`), else None (the validator then
    downloads the schemas itself)."""
    if SHARED_CSDL.is_dir():
        return SHARED_CSDL
    named = os.environ.get(CSDL_ENV)
    if named:
        if not Path(named).is_dir():
            pytest.fail(f"${CSDL_ENV} names {named}, which is not a directory")
        return Path(named)
    return csdl_fetch.fetched()


def web_assets() -> None:
    """The browser libraries the web view's page loads, bundled from npm into the package."""
    from vdc_runtime.ui import routes

    if not (routes.VENDOR / "xterm.js").exists():
        pytest.fail(f"the web view's xterm.js is not bundled in {routes.VENDOR}: {DEPS}")


def ui_assets_script() -> ModuleType:
    """scripts/ui_assets.py (a script, not a package's module), for its pins."""
    path = Path(__file__).resolve().parents[2] / "scripts" / "ui_assets.py"
    spec = importlib.util.spec_from_file_location("ui_assets", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ui_assets"] = module
    spec.loader.exec_module(module)
    return module


def pinned_xterm() -> bytes:
    """xterm.js as the pinned tarball `make deps` cached holds it: what a bundle serves."""
    assets = ui_assets_script()
    (pin,) = [p for p in assets.PINS if "xterm.js" in p.files.values()]
    if not pin.tarball.exists():
        pytest.fail(f"no {pin.tarball}: {DEPS}")
    member = next(m for m, out in pin.files.items() if out == "xterm.js")
    with tarfile.open(fileobj=io.BytesIO(assets.fetch(pin))) as tar:
        source = tar.extractfile(member)
        assert source is not None
        return source.read()


def browser() -> tuple[str, str]:
    """Debian's chromium and its chromedriver (selenium drives them)."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        pytest.fail(
            f"chromium or chromedriver is missing (Debian: chromium, chromium-driver): {DEPS}"
        )
    return chromium, chromedriver
