"""create_overlay and copy_image with the real qemu-img and cp."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.images.conftest import PAYLOAD, make_qcow2, names
from vdc_runtime.storage.images import ImageError, copy_image, create_overlay, image_format


def info(path: Path) -> dict[str, object]:
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", str(path)], check=True, capture_output=True
    ).stdout
    result = json.loads(out)
    assert isinstance(result, dict)
    return result


def qcow2_base(path: Path) -> Path:
    return make_qcow2(path, "1G")


def raw_base(path: Path, size: int = 1 << 30) -> Path:
    with open(path, "wb") as f:
        f.write(PAYLOAD)
        f.truncate(size)
    return path


@pytest.mark.parametrize(("make", "fmt"), [(qcow2_base, "qcow2"), (raw_base, "raw")])
async def test_overlay(tmp_path: Path, make: object, fmt: str) -> None:
    base = make(tmp_path / f"base.{fmt}")  # type: ignore[operator]
    overlay = tmp_path / "vm" / "disk.img"
    started = time.perf_counter()
    await create_overlay(base, overlay)
    print(f"overlay on a 1 GiB {fmt} base: {(time.perf_counter() - started) * 1000:.1f} ms")
    details = info(overlay)
    assert details["format"] == "qcow2"
    assert details["backing-filename"] == str(base)
    assert details.get("backing-filename-format") == fmt
    assert details["virtual-size"] == 1 << 30
    assert overlay.stat().st_size < 1 << 20  # a header, not a copy
    assert names(overlay.parent) == ["disk.img"]


async def test_overlay_records_an_absolute_base(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = qcow2_base(tmp_path / "base.qcow2")
    monkeypatch.chdir(tmp_path)
    await create_overlay(Path("base.qcow2"), tmp_path / "disk.img")
    assert info(tmp_path / "disk.img")["backing-filename"] == str(base)


async def test_overlay_of_missing_base_reports_qemu_img(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"qemu-img info .*missing.qcow2.* failed .*: .+"):
        await create_overlay(tmp_path / "missing.qcow2", tmp_path / "disk.img")
    assert names(tmp_path) == []


async def test_image_format(tmp_path: Path) -> None:
    assert await image_format(qcow2_base(tmp_path / "a")) == "qcow2"
    assert await image_format(raw_base(tmp_path / "b", 1 << 20)) == "raw"


async def test_copy_image_is_complete_and_sparse(tmp_path: Path) -> None:
    src = raw_base(tmp_path / "base.raw", 64 << 20)
    dst = tmp_path / "vm" / "disk.img"
    await copy_image(src, dst)
    assert dst.read_bytes() == src.read_bytes()
    assert dst.stat().st_blocks * 512 < 8 << 20
    assert names(dst.parent) == ["disk.img"]


async def test_copy_image_without_cp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    src = raw_base(tmp_path / "base.raw", 64 << 20)
    dst = tmp_path / "disk.img"
    await copy_image(src, dst)
    assert dst.read_bytes() == src.read_bytes()
    assert dst.stat().st_blocks * 512 < 8 << 20


async def test_copy_image_of_missing_source(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file"):
        await copy_image(tmp_path / "nope", tmp_path / "disk.img")
    assert names(tmp_path) == []
