"""A node's volumes: Placemat's semantics, minus its bugs.

A volume file lives in `<base>/volumes/<node>/<volume>.img`, `<base>` being the device
class path or the data dir. An existing file is reused, so guests keep their disks across
runs (Placemat's behaviour), unless `recreate` is asked for. Differences from Placemat:

- every file is built under a temporary name and renamed into place, so a run killed
  halfway never leaves a half volume that the next run would take for a finished one;
- the NoCloud seed (`localds`) is an ISO 9660 image built in Python (volume label `cidata`,
  Rock Ridge and Joliet names `user-data`, `meta-data`, `network-config`), always raw and
  declared raw (Placemat declared `qcow2` for raw seeds), and attached read-only;
- every drive's format is known instead of probed by QEMU. The format vdc created is
  recorded in `<volume>.img.format` next to the volume: a non-copy-on-write image volume
  has its image's format, which cannot be read back safely from the volume itself (a
  guest may write a qcow2 header into a raw disk). Volumes without that file (made by
  Placemat, or by a run killed at the wrong moment) get their format from the spec, from
  the image in the cache, or (seeds) from the qcow2 magic number.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pycdlib

from vdc_runtime.spec import (
    HostPathVolume,
    Image,
    ImageVolume,
    LocaldsVolume,
    RawVolume,
    Volume,
)
from vdc_runtime.storage.images import (
    ImageCache,
    ImageError,
    atomic_target,
    copy_image,
    create_overlay,
    image_format,
    qemu_img,
)

log = logging.getLogger(__name__)

FORMAT_SUFFIX = ".format"
"""`<volume>.img.format` holds the format vdc created the volume with."""
SEED_LABEL = "cidata"
"""The volume label cloud-init's NoCloud data source looks for."""
_QCOW2_MAGIC = b"QFI\xfb"


class VolumeError(RuntimeError):
    """A volume could not be created; the message names the node and the volume."""


@dataclass(frozen=True)
class PreparedVolume:
    """A volume ready for QEMU: `format` is what QEMU must be told (None for hostPath)."""

    name: str
    kind: str
    path: Path
    format: str | None
    read_only: bool
    created: bool


def volume_path(
    volume: Volume, node_name: str, data_dir: Path, device_classes: Mapping[str, Path]
) -> Path:
    """Where `volume` of `node_name` lives; a hostPath volume is its host directory."""
    if isinstance(volume, HostPathVolume):
        return volume.path
    if volume.device_class is None:
        base = data_dir
    else:
        try:
            base = device_classes[volume.device_class]
        except KeyError:
            raise ValueError(
                f"node {node_name}: volume {volume.name}: unknown device class"
                f" {volume.device_class!r}"
            ) from None
    return Path(base) / "volumes" / node_name / f"{volume.name}.img"


def volume_format(volume: Volume, image_format: str | None = None) -> str | None:
    """The format a newly created `volume` has, i.e. what QEMU must be told.

    A copy (not copy-on-write) of an image has the image's own format, which only the image
    file tells: pass it as `image_format` (None is returned without it). hostPath volumes
    are not drives and have no format.
    """
    if isinstance(volume, ImageVolume):
        return "qcow2" if volume.copy_on_write else image_format
    if isinstance(volume, LocaldsVolume):
        return "raw"
    if isinstance(volume, RawVolume):
        return volume.format
    return None


def seed_meta_data(node_name: str) -> bytes:
    """The NoCloud meta-data cloud-localds wrote when given none, with the node's name.

    Values are JSON strings (valid YAML) so a name like `yes` or `1` stays a string.
    """
    name = json.dumps(node_name)
    return f"instance-id: {name}\nlocal-hostname: {name}\n".encode()


def write_seed_iso(
    path: Path, *, user_data: bytes, meta_data: bytes, network_config: bytes | None = None
) -> None:
    """Write a NoCloud seed ISO (label `cidata`) to `path`, as cloud-localds' genisoimage did.

    ISO 9660 names cannot hold `-`; Rock Ridge (Linux) and Joliet (Windows) carry the
    names the guest looks for; the upper-case ISO 9660 names are only the fallback.
    """
    files = [("USER_DATA.;1", "user-data", user_data), ("META_DATA.;1", "meta-data", meta_data)]
    if network_config is not None:
        files.append(("NETWORK_CONFIG.;1", "network-config", network_config))
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=SEED_LABEL, joliet=3, rock_ridge="1.09")
    try:
        for iso_path, name, data in files:
            iso.add_fp(
                io.BytesIO(data),
                len(data),
                f"/{iso_path}",
                rr_name=name,
                joliet_path=f"/{name}",
            )
        iso.write(str(path))
    finally:
        iso.close()


async def prepare_volume(
    volume: Volume,
    *,
    node_name: str,
    data_dir: Path,
    device_classes: Mapping[str, Path],
    images: Mapping[str, Image],
    cache: ImageCache,
    recreate: bool = False,
) -> PreparedVolume:
    """Create `volume` of `node_name` unless its file exists (then reuse it) or `recreate`."""
    path = volume_path(volume, node_name, data_dir, device_classes)
    what = f"node {node_name}: volume {volume.name}"
    if isinstance(volume, HostPathVolume):
        try:
            created = await asyncio.to_thread(_make_dir, path)
        except OSError as exc:
            raise VolumeError(f"{what}: cannot create {path}: {exc.strerror}") from exc
        if created:
            log.info("%s: created host directory %s", what, path)
        return PreparedVolume(
            name=volume.name,
            kind=volume.kind,
            path=path,
            format=None,
            read_only=not volume.writable,
            created=created,
        )
    read_only = isinstance(volume, LocaldsVolume)
    try:
        if not recreate and await asyncio.to_thread(path.is_file):
            fmt = await _existing_format(volume, path, images, cache)
            log.debug("%s: reusing %s (%s)", what, path, fmt)
            created = False
        else:
            fmt = await _create(volume, path, node_name, images, cache)
            log.info("%s: created %s volume %s (%s)", what, volume.kind, path, fmt)
            created = True
    except (ImageError, OSError, ValueError) as exc:
        raise VolumeError(f"{what}: {exc}") from exc
    return PreparedVolume(
        name=volume.name,
        kind=volume.kind,
        path=path,
        format=fmt,
        read_only=read_only,
        created=created,
    )


def _make_dir(path: Path) -> bool:
    if path.is_dir():
        return False
    path.mkdir(parents=True, exist_ok=True)
    return True


def _format_file(path: Path) -> Path:
    return path.with_name(path.name + FORMAT_SUFFIX)


def _read_format(path: Path) -> str | None:
    try:
        text = _format_file(path).read_text().strip()
    except OSError:
        return None
    return text or None


def _write_format(path: Path, fmt: str) -> None:
    record = _format_file(path)
    tmp = record.with_name(f".{record.name}.tmp")
    tmp.write_text(fmt + "\n")
    tmp.replace(record)


def _remove_format(path: Path) -> None:
    _format_file(path).unlink(missing_ok=True)


def _starts_with(path: Path, magic: bytes) -> bool:
    with open(path, "rb") as f:
        return f.read(len(magic)) == magic


def _image_of(volume: ImageVolume, images: Mapping[str, Image]) -> Image:
    try:
        return images[volume.image]
    except KeyError:
        raise ValueError(f"unknown image {volume.image!r}") from None


async def _existing_format(
    volume: Volume, path: Path, images: Mapping[str, Image], cache: ImageCache
) -> str:
    recorded = await asyncio.to_thread(_read_format, path)
    if recorded is not None:
        return recorded
    # No record: made by Placemat (or a run killed between rename and record). Learn the
    # format without probing the volume itself, which the guest could have written.
    if isinstance(volume, ImageVolume):
        if volume.copy_on_write:
            fmt = "qcow2"
        else:
            fmt = await image_format(await cache.fetch(_image_of(volume, images)))
    elif isinstance(volume, LocaldsVolume):
        # Placemat's cloud-localds wrote qcow2 seeds when given network-config; a seed is
        # attached read-only, so its first bytes are still the ones it was built with.
        qcow2 = await asyncio.to_thread(_starts_with, path, _QCOW2_MAGIC)
        fmt = "qcow2" if qcow2 else "raw"
    else:
        assert isinstance(volume, RawVolume)
        fmt = volume.format
    await asyncio.to_thread(_write_format, path, fmt)
    return fmt


async def _create(
    volume: Volume, path: Path, node_name: str, images: Mapping[str, Image], cache: ImageCache
) -> str:
    # The old record goes first: a run killed before the new one is written then falls back
    # to the spec instead of trusting a record of the replaced file.
    await asyncio.to_thread(_remove_format, path)
    if isinstance(volume, ImageVolume):
        base = await cache.fetch(_image_of(volume, images))
        if volume.copy_on_write:
            await create_overlay(base, path)
            fmt = "qcow2"
        else:
            fmt = volume_format(volume, await image_format(base)) or "raw"
            await copy_image(base, path)
    elif isinstance(volume, LocaldsVolume):
        user_data, network_config = await asyncio.to_thread(_read_seed_inputs, volume)
        async with atomic_target(path) as tmp:
            await asyncio.to_thread(
                write_seed_iso,
                tmp,
                user_data=user_data,
                meta_data=seed_meta_data(node_name),
                network_config=network_config,
            )
        fmt = "raw"
    else:
        assert isinstance(volume, RawVolume)
        async with atomic_target(path) as tmp:
            await qemu_img("create", "-q", "-f", volume.format, str(tmp), volume.size)
        fmt = volume.format
    await asyncio.to_thread(_write_format, path, fmt)
    return fmt


def _read_seed_inputs(volume: LocaldsVolume) -> tuple[bytes, bytes | None]:
    try:
        user_data = Path(volume.user_data).read_bytes()
        network_config = Path(volume.network_config).read_bytes() if volume.network_config else None
    except OSError as exc:
        raise ValueError(f"cannot read {exc.filename}: {exc.strerror}") from exc
    return user_data, network_config


__all__ = [
    "FORMAT_SUFFIX",
    "SEED_LABEL",
    "PreparedVolume",
    "VolumeError",
    "prepare_volume",
    "seed_meta_data",
    "volume_format",
    "volume_path",
    "write_seed_iso",
]
