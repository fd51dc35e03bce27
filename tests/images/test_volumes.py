"""prepare_volume for every kind, reuse and recreation, and the pure path/format helpers."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pycdlib
import pytest

from tests.images.conftest import PAYLOAD, Server, make_qcow2, names, url_image
from vdc_runtime.spec import (
    HostPathVolume,
    Image,
    ImageVolume,
    LocaldsVolume,
    RawVolume,
)
from vdc_runtime.storage.images import ImageCache
from vdc_runtime.storage.volumes import (
    PreparedVolume,
    VolumeError,
    prepare_volume,
    seed_meta_data,
    volume_format,
    volume_path,
)

USER_DATA = b"#cloud-config\nhostname: boot-0\n"
NETWORK_CONFIG = b"version: 2\nethernets:\n  ens3:\n    dhcp4: true\n"


def qemu_info(path: Path) -> dict[str, object]:
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", str(path)], check=True, capture_output=True
    ).stdout
    result = json.loads(out)
    assert isinstance(result, dict)
    return result


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Image]:
    raw = tmp_path / "images" / "base.raw"
    raw.parent.mkdir()
    raw.write_bytes(PAYLOAD)
    qcow2 = make_qcow2(tmp_path / "images" / "base.qcow2")
    return {
        "raw": Image(name="raw", file=raw),
        "qcow2": Image(name="qcow2", file=qcow2),
    }


async def prepare(
    volume: object,
    data_dir: Path,
    images: dict[str, Image],
    cache: ImageCache,
    *,
    recreate: bool = False,
    device_classes: dict[str, Path] | None = None,
) -> PreparedVolume:
    return await prepare_volume(
        volume,  # type: ignore[arg-type]
        node_name="boot-0",
        data_dir=data_dir,
        device_classes=device_classes or {},
        images=images,
        cache=cache,
        recreate=recreate,
    )


# -- pure helpers --------------------------------------------------------------------------


def test_volume_path() -> None:
    data, ssd = Path("/var/lib/vdc"), Path("/mnt/ssd")
    disk = RawVolume(kind="raw", name="data", size="1G")
    fast = RawVolume(kind="raw", name="data", size="1G", device_class="ssd")
    share = HostPathVolume(kind="hostPath", name="share", path=Path("/srv/share"))
    assert volume_path(disk, "n1", data, {}) == data / "volumes/n1/data.img"
    assert volume_path(fast, "n1", data, {"ssd": ssd}) == ssd / "volumes/n1/data.img"
    assert volume_path(share, "n1", data, {}) == Path("/srv/share")
    with pytest.raises(ValueError, match="node n1: volume data: unknown device class 'ssd'"):
        volume_path(fast, "n1", data, {})


def test_volume_format() -> None:
    cow = ImageVolume(kind="image", name="root", image="ubuntu", copy_on_write=True)
    copy = ImageVolume(kind="image", name="root", image="ubuntu")
    seed = LocaldsVolume(kind="localds", name="seed", user_data=Path("/u"))
    assert volume_format(cow) == "qcow2"
    assert volume_format(copy) is None
    assert volume_format(copy, "vmdk") == "vmdk"
    assert volume_format(seed) == "raw"
    assert volume_format(RawVolume(kind="raw", name="d", size="1G")) == "qcow2"
    assert volume_format(RawVolume(kind="raw", name="d", size="1G", format="raw")) == "raw"
    share = HostPathVolume(kind="hostPath", name="s", path=Path("/srv"))
    assert volume_format(share) is None


def test_seed_meta_data_quotes_names() -> None:
    assert seed_meta_data("yes") == b'instance-id: "yes"\nlocal-hostname: "yes"\n'


# -- image volumes -------------------------------------------------------------------------


async def test_copy_on_write_image_from_url(
    server: Server, data_dir: Path, cache: ImageCache
) -> None:
    url = server.add("/disk.img", PAYLOAD)
    images = {"img": url_image(url)}
    volume = ImageVolume(kind="image", name="root", image="img", copy_on_write=True)
    prepared = await prepare(volume, data_dir, images, cache)
    assert prepared == PreparedVolume(
        name="root",
        kind="image",
        path=data_dir / "volumes/boot-0/root.img",
        format="qcow2",
        read_only=False,
        created=True,
    )
    details = qemu_info(prepared.path)
    assert details["backing-filename"] == str(cache.url_path(url))
    assert details["backing-filename-format"] == "raw"


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
async def test_copied_image_has_the_image_format(
    data_dir: Path, images: dict[str, Image], cache: ImageCache, fmt: str
) -> None:
    volume = ImageVolume(kind="image", name="root", image=fmt)
    prepared = await prepare(volume, data_dir, images, cache)
    assert prepared.format == fmt and prepared.created
    assert qemu_info(prepared.path)["format"] == fmt
    source = images[fmt].file
    assert source is not None and prepared.path.read_bytes() == source.read_bytes()
    assert "backing-filename" not in qemu_info(prepared.path)


async def test_reuse_and_recreate(
    data_dir: Path, images: dict[str, Image], cache: ImageCache
) -> None:
    volume = ImageVolume(kind="image", name="root", image="raw")
    first = await prepare(volume, data_dir, images, cache)
    # What the guest wrote must survive the next run.
    first.path.write_bytes(b"QFI\xfb guest data that looks like a qcow2 header")
    again = await prepare(volume, data_dir, images, cache)
    assert not again.created
    assert again.format == "raw"  # recorded at creation, not probed from guest data
    assert again.path.read_bytes().startswith(b"QFI\xfb guest data")

    fresh = await prepare(volume, data_dir, images, cache, recreate=True)
    assert fresh.created and fresh.format == "raw"
    assert fresh.path.read_bytes() == PAYLOAD


async def test_reuse_without_a_format_record(
    data_dir: Path, images: dict[str, Image], cache: ImageCache
) -> None:
    # A volume Placemat made: the format comes from the image, not from the volume.
    volume = ImageVolume(kind="image", name="root", image="qcow2")
    path = data_dir / "volumes/boot-0/root.img"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\0" * 4096)
    prepared = await prepare(volume, data_dir, images, cache)
    assert not prepared.created and prepared.format == "qcow2"


async def test_device_class_placement(
    tmp_path: Path, data_dir: Path, images: dict[str, Image], cache: ImageCache
) -> None:
    ssd = tmp_path / "ssd"
    volume = RawVolume(kind="raw", name="data", size="16M", device_class="ssd")
    prepared = await prepare(volume, data_dir, images, cache, device_classes={"ssd": ssd})
    assert prepared.path == ssd / "volumes/boot-0/data.img"
    assert prepared.path.is_file()
    assert names(data_dir) == []


async def test_unknown_image(data_dir: Path, images: dict[str, Image], cache: ImageCache) -> None:
    volume = ImageVolume(kind="image", name="root", image="nope")
    with pytest.raises(VolumeError, match="node boot-0: volume root: unknown image 'nope'"):
        await prepare(volume, data_dir, images, cache)


async def test_failed_download_leaves_no_volume(
    server: Server, data_dir: Path, cache: ImageCache
) -> None:
    images = {"img": url_image(f"{server.base}/missing.img")}
    volume = ImageVolume(kind="image", name="root", image="img")
    with pytest.raises(VolumeError, match=r"node boot-0: volume root: image img: GET .* 404"):
        await prepare(volume, data_dir, images, cache)
    assert names(data_dir / "volumes/boot-0") == []


# -- localds -------------------------------------------------------------------------------


def read_iso(path: Path) -> tuple[str, dict[str, bytes]]:
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        label = iso.pvd.volume_identifier.decode().strip()
        files: dict[str, bytes] = {}
        for child in iso.list_children(rr_path="/"):
            if child.is_dir():
                continue
            name = child.rock_ridge.name().decode()
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
            files[name] = out.getvalue()
        joliet = sorted(
            c.file_identifier().decode("utf-16-be")
            for c in iso.list_children(joliet_path="/")
            if not c.is_dir()
        )
        assert joliet == sorted(files)
    finally:
        iso.close()
    return label, files


@pytest.mark.parametrize("with_network_config", [True, False])
async def test_localds_seed(
    tmp_path: Path,
    data_dir: Path,
    images: dict[str, Image],
    cache: ImageCache,
    with_network_config: bool,
) -> None:
    user_data = tmp_path / "user-data.yml"
    user_data.write_bytes(USER_DATA)
    network_config = tmp_path / "network.yml"
    network_config.write_bytes(NETWORK_CONFIG)
    volume = LocaldsVolume(
        kind="localds",
        name="seed",
        user_data=user_data,
        network_config=network_config if with_network_config else None,
    )
    prepared = await prepare(volume, data_dir, images, cache)
    assert prepared.format == "raw" and prepared.read_only and prepared.created
    assert qemu_info(prepared.path)["format"] == "raw"
    label, files = read_iso(prepared.path)
    assert label == "cidata"
    expected = {
        "user-data": USER_DATA,
        "meta-data": b'instance-id: "boot-0"\nlocal-hostname: "boot-0"\n',
    }
    if with_network_config:
        expected["network-config"] = NETWORK_CONFIG
    assert files == expected

    # A changed user-data is not picked up by a reused seed (Placemat's semantics)...
    user_data.write_bytes(b"#cloud-config\n{}\n")
    reused = await prepare(volume, data_dir, images, cache)
    assert not reused.created and read_iso(reused.path)[1]["user-data"] == USER_DATA
    # ...but by a recreated one.
    fresh = await prepare(volume, data_dir, images, cache, recreate=True)
    assert fresh.created and read_iso(fresh.path)[1]["user-data"] == b"#cloud-config\n{}\n"


async def test_placemat_qcow2_seed_is_reused_as_qcow2(
    tmp_path: Path, data_dir: Path, images: dict[str, Image], cache: ImageCache
) -> None:
    path = data_dir / "volumes/boot-0/seed.img"
    make_qcow2(path, "1M")
    volume = LocaldsVolume(kind="localds", name="seed", user_data=tmp_path / "absent")
    prepared = await prepare(volume, data_dir, images, cache)
    assert not prepared.created and prepared.format == "qcow2"


async def test_localds_missing_user_data(
    tmp_path: Path, data_dir: Path, images: dict[str, Image], cache: ImageCache
) -> None:
    volume = LocaldsVolume(kind="localds", name="seed", user_data=tmp_path / "absent")
    with pytest.raises(VolumeError, match=r"volume seed: cannot read .*absent"):
        await prepare(volume, data_dir, images, cache)
    assert not (data_dir / "volumes/boot-0/seed.img").exists()


# -- raw and hostPath ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["qcow2", "raw"])
async def test_raw_volume(
    data_dir: Path, images: dict[str, Image], cache: ImageCache, fmt: str
) -> None:
    volume = RawVolume(kind="raw", name="data", size="1.5G", format=fmt)  # type: ignore[arg-type]
    prepared = await prepare(volume, data_dir, images, cache)
    assert prepared.format == fmt and prepared.created and not prepared.read_only
    details = qemu_info(prepared.path)
    assert details["format"] == fmt
    assert details["virtual-size"] == 3 << 29
    assert names(prepared.path.parent) == ["data.img", "data.img.format"]
    again = await prepare(volume, data_dir, images, cache)
    assert not again.created and again.format == fmt


@pytest.mark.parametrize("writable", [True, False])
async def test_host_path(
    tmp_path: Path, data_dir: Path, images: dict[str, Image], cache: ImageCache, writable: bool
) -> None:
    share = tmp_path / "shares" / "one"
    volume = HostPathVolume(kind="hostPath", name="share", path=share, writable=writable)
    prepared = await prepare(volume, data_dir, images, cache)
    assert prepared == PreparedVolume(
        name="share", kind="hostPath", path=share, format=None, read_only=not writable, created=True
    )
    assert share.is_dir()
    assert not (await prepare(volume, data_dir, images, cache)).created


async def test_host_path_that_is_a_file(
    tmp_path: Path, data_dir: Path, images: dict[str, Image], cache: ImageCache
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    volume = HostPathVolume(kind="hostPath", name="share", path=blocker / "sub")
    with pytest.raises(VolumeError, match=r"node boot-0: volume share: cannot create .*file/sub"):
        await prepare(volume, data_dir, images, cache)
