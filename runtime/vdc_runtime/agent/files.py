"""The files of a CR spec, made real inside the pod.

Inline content and the ConfigMap and Secret keys the operator mounted are written into the
agent's working directory (where apps and init scripts run, as Placemat ran them next to
their YAML file); Image sources are downloaded into the image cache like disk images.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

from vdc_runtime.resource import spec as cr
from vdc_runtime.spec import DataCenter
from vdc_runtime.spec.errors import SpecError, SpecErrors

SOURCES = ".sources"
"""The working directory's folder for files that have no path of their own."""


class SourceResolver:
    """Resolves each FileSource of one spec to a file, as `cr.load` asks."""

    def __init__(self, workdir: Path, sources_dir: Path, images: dict[str, Path]) -> None:
        self.workdir = workdir
        self.sources_dir = sources_dir
        self.images = images
        self.problems: list[SpecError] = []

    def __call__(self, source: cr.FileSource, where: str, executable: bool) -> Path:
        if source.image is not None and not executable:
            return self.images[source.image]  # used where it is, in the image cache
        name = hashlib.sha256(where.encode()).hexdigest()[:16]
        return self.write(source, self.workdir / SOURCES / name, where, executable)

    def write(self, source: cr.FileSource, path: Path, where: str, executable: bool) -> Path:
        """Put the source's content at `path` (an image: a link into the image cache)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if source.image is not None and not executable:
            path.unlink(missing_ok=True)
            path.symlink_to(self.images[source.image])
            return path
        if source.image is not None:
            content = self.images[source.image].read_bytes()
        elif source.inline is not None:
            content = source.inline.encode()
        else:
            ref = source.config_map_key_ref or source.secret_key_ref
            assert ref is not None
            kind = "configmap" if source.config_map_key_ref is not None else "secret"
            mounted = self.sources_dir / kind / ref.name / ref.key
            try:
                content = mounted.read_bytes()
            except OSError as exc:
                self.problems.append(
                    SpecError(where, None, None, None, "",
                              f"{source.describe} is not mounted in the pod ({exc.strerror})")
                )  # fmt: skip
                return mounted
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(content)
        tmp.chmod(0o755 if executable else 0o600 if source.secret_key_ref else 0o644)
        os.replace(tmp, path)
        return path


def with_generated_admin(dc: DataCenter, password_file: Path | None) -> DataCenter:
    """`dc`, its BMCs' account the operator's generated one when the spec names none: in
    a cluster, Placemat's well-known cybozu/cybozu would let any pod power-cycle the lab.
    (Run standalone, a spec without users keeps Placemat's account.)"""
    from vdc_runtime.spec.models import BMC, BMCUser

    if password_file is None or not dc.nodes or (dc.bmc is not None and dc.bmc.users):
        return dc
    users = [BMCUser(name=cr.GENERATED_BMC_USER, password_file=password_file)]
    bmc = BMC(users=users) if dc.bmc is None else dc.bmc.model_copy(update={"users": users})
    return dc.model_copy(update={"bmc": bmc})


async def load(raw_spec: Any, workdir: Path, sources_dir: Path, cache_dir: Path) -> DataCenter:
    """The data center of a CR spec, with every file in place; SpecErrors if it is bad."""
    spec = cr.parse(raw_spec)
    images = await _fetch_images(spec, cache_dir)
    resolver = SourceResolver(workdir, sources_dir, images)

    def build() -> DataCenter:
        workdir.mkdir(parents=True, exist_ok=True)
        # It checks the file sources' images before resolving any.
        dc = cr.load(raw_spec, resolver, files=True, spec=spec)
        for i, extra in enumerate(spec.files):
            resolver.write(extra, workdir / extra.path, f"spec.files[{i}]", extra.executable)
        return dc

    try:
        dc = await asyncio.to_thread(build)
    except SpecErrors as exc:
        raise SpecErrors([*resolver.problems, *exc.errors]) from None
    if resolver.problems:
        raise SpecErrors(resolver.problems)
    return dc


async def _fetch_images(spec: cr.VirtualDataCenterSpec, cache_dir: Path) -> dict[str, Path]:
    """Images that file sources name (disk images are fetched by the run, as standalone)."""
    wanted = {s.image for s in cr.sources(spec) if s.image is not None}
    images = {image.name: image for image in spec.images if image.name in wanted}
    # A plain local file is used where it is, as ImageCache.fetch would: the image
    # machinery (aiohttp, rich) is imported only for downloads, checksums, decompression.
    found: dict[str, Path] = {
        name: image.file
        for name, image in images.items()
        if image.file is not None and not image.compression and image.sha256 is None
    }
    names = sorted(set(images) - set(found))
    if not names:
        return found
    from vdc_runtime.storage.images import ImageCache, ImageError

    cache = ImageCache(cache_dir)
    results = await asyncio.gather(
        *(cache.fetch(images[name]) for name in names), return_exceptions=True
    )
    problems = []
    for name, result in zip(names, results, strict=True):
        if isinstance(result, ImageError | OSError):
            problems.append(SpecError(f"image {name}", None, None, None, "", str(result)))
        elif isinstance(result, BaseException):
            raise result
        else:
            found[name] = result
    if problems:
        raise SpecErrors(problems)
    return found
