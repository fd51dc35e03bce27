"""Placemat YAML to a VirtualDataCenter manifest (`vdc convert`).

The files a Placemat spec names (cloud-init data, Ignition configs, init scripts, BMC
password files) are inlined; what cannot be inlined (a binary kernel, a TLS key that
belongs in a Secret) is an error that says what to write instead. The result loads back
into the same data center (tests/spec/test_cr.py checks that round trip).

Paths that stay paths (an Image's `file`, a hostPath volume, a DeviceClass) mean a path
inside the VDC's pod once in a CR, not on the host the files came from: each gets a
warning that says what to use instead. `dump` writes the manifest as a person would,
multi-line text (scripts, cloud-init data) as literal blocks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vdc_runtime.resource import spec as cr
from vdc_runtime.spec.errors import SpecError, SpecErrors
from vdc_runtime.spec.models import DataCenter, SpecModel


def _camel_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {cr.camel(k): _camel_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_camel_keys(v) for v in value]
    return value


def _dump(model: SpecModel, *skip: str) -> dict[str, Any]:
    data = model.model_dump(mode="json", by_alias=False, exclude_defaults=True, exclude=set(skip))
    return _camel_keys(data)  # type: ignore[no-any-return]


CONFIGMAP_MAX = 1024 * 1024
"""A ConfigMap's data limit (etcd's object size, with room for the rest of it)."""


class _Inliner:
    """Each file the spec names becomes a file source: inline, or with a ConfigMap given,
    a key of it for every file larger than `inline_max`."""

    def __init__(self, configmap: str | None = None, inline_max: int = cr.INLINE_MAX) -> None:
        self.problems: list[SpecError] = []
        self.configmap = configmap
        self.inline_max = inline_max
        self.data: dict[str, str] = {}

    def _key(self, path: Path, text: str) -> str:
        stem = re.sub(r"[^-._a-zA-Z0-9]", "-", path.name).lstrip(".") or "file"
        key, n = stem, 1
        while key in self.data and self.data[key] != text:
            n += 1
            key = f"{stem}-{n}"
        return key

    def text(self, path: Path, where: str) -> str:
        """The file's text; "" (with the problem noted) when it cannot be inlined."""
        try:
            return path.read_bytes().decode()
        except OSError as exc:
            self._problem(where, f"cannot read {path}: {exc.strerror}")
        except UnicodeDecodeError:
            self._problem(
                where,
                f"{path} is binary: serve it over HTTP and name it as an Image"
                " (spec.images[].url) with `image: <name>` here",
            )
        return ""

    def inline(self, path: Path, where: str) -> dict[str, Any]:
        text = self.text(path, where)
        data = text.encode()
        if self.configmap is not None and len(data) > self.inline_max:
            key = self._key(path, text)
            self.data[key] = text
            return {"configMapKeyRef": {"name": self.configmap, "key": key}}
        if len(text) > cr.INLINE_MAX:
            self._problem(
                where,
                f"{path} is {len(data)} bytes, more than an inline file may hold"
                f" ({cr.INLINE_MAX}); put it in a ConfigMap (--configmap) or serve it as an Image",
            )
        return {"inline": text}

    def configmap_manifest(self, namespace: str | None) -> dict[str, Any] | None:
        if self.configmap is None or not self.data:
            return None
        size = sum(len(k) + len(v.encode()) for k, v in self.data.items())
        if size > CONFIGMAP_MAX:
            self._problem(
                "ConfigMap",
                f"the files for ConfigMap {self.configmap} add up to {size} bytes, more than a"
                f" ConfigMap holds ({CONFIGMAP_MAX}); serve the largest as Images",
            )
        metadata: dict[str, Any] = {"name": self.configmap}
        if namespace:
            metadata["namespace"] = namespace
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": self.data}

    def _problem(self, where: str, message: str) -> None:
        self.problems.append(SpecError(where, None, None, None, "", message))


@dataclass(frozen=True)
class Conversion:
    manifest: dict[str, Any]
    warnings: list[str]
    """`field: message` for each path that means the pod's file, not this host's."""
    configmap: dict[str, Any] | None = None
    """The ConfigMap that holds the larger files (with `configmap` given), to apply first."""

    @property
    def documents(self) -> list[dict[str, Any]]:
        return [d for d in (self.configmap, self.manifest) if d is not None]


def _path_warnings(dc: DataCenter) -> list[str]:
    warnings = []
    for i, image in enumerate(dc.images):
        if image.file is not None:
            warnings.append(
                f"spec.images[{i}].file: {image.file} is read inside the VDC's pod, which"
                " does not have this host's files: serve the image over HTTP and give `url:`"
                " instead, or keep it in the pod's image cache (spec.pod.imageCache)"
            )
    for i, node in enumerate(dc.nodes):
        for j, volume in enumerate(node.volumes):
            if volume.kind == "hostPath":
                warnings.append(
                    f"spec.nodes[{i}].volumes[{j}].path: the guest shares {volume.path} of the"
                    " VDC's pod, not of this host: ship the files it needs in a ConfigMap"
                    " or inline (spec.files)"
                )
    for i, device_class in enumerate(dc.device_classes):
        warnings.append(
            f"spec.deviceClasses[{i}].path: {device_class.path} is a directory of the VDC's"
            " pod: its volumes live in the pod's filesystem, gone with the pod; give the"
            " pod room there or keep images in spec.pod.imageCache"
        )
    return warnings


def convert(
    dc: DataCenter,
    name: str,
    namespace: str | None = None,
    *,
    configmap: str | None = None,
    inline_max: int = 4096,
) -> Conversion:
    """A VirtualDataCenter named `name` for a loaded Placemat spec, with warnings for
    paths; SpecErrors for what a CR cannot hold. With `configmap`, files larger than
    `inline_max` bytes go into a ConfigMap of that name instead of inline."""
    files = _Inliner(configmap, inline_max)
    manifest = to_manifest(dc, name, namespace, files)
    extra = files.configmap_manifest(namespace)
    if files.problems:
        raise SpecErrors(files.problems)
    return Conversion(manifest, _path_warnings(dc), extra)


class _Dumper(yaml.SafeDumper):
    """Multi-line text as literal blocks, everything else as PyYAML writes it."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def dump(*documents: dict[str, Any]) -> str:
    """Manifests as YAML a person would keep: keys in the models' order, multi-line text as
    literal blocks (PyYAML quotes the rare text a block cannot hold, such as trailing
    spaces on a line)."""
    return yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)


def to_manifest(
    dc: DataCenter, name: str, namespace: str | None = None, files: _Inliner | None = None
) -> dict[str, Any]:
    """A VirtualDataCenter named `name` for a loaded Placemat spec, every file inline (or
    as `files` places it); SpecErrors for what a CR cannot hold."""
    files = files if files is not None else _Inliner()
    spec: dict[str, Any] = {}
    if dc.networks:
        spec["networks"] = [_dump(n) for n in dc.networks]
    if dc.netns:
        namespaces = []
        for i, ns in enumerate(dc.netns):
            entry = _dump(ns, "init_scripts")
            if ns.init_scripts:
                entry["initScripts"] = [
                    files.inline(p, f"spec.networkNamespaces[{i}].initScripts[{j}]")
                    for j, p in enumerate(ns.init_scripts)
                ]
            namespaces.append(entry)
        spec["networkNamespaces"] = namespaces
    if dc.nodes:
        nodes = []
        for i, node in enumerate(dc.nodes):
            where = f"spec.nodes[{i}]"
            entry = _dump(node, "ignition", "kernel", "initrd", "volumes")
            for key in ("ignition", "kernel", "initrd"):
                path = getattr(node, key)
                if path is not None:
                    entry[key] = files.inline(path, f"{where}.{key}")
            volumes = []
            for j, volume in enumerate(node.volumes):
                if volume.kind == "localds":
                    v = _dump(volume, "user_data", "network_config")
                    v["userData"] = files.inline(volume.user_data, f"{where}.volumes[{j}].userData")
                    if volume.network_config is not None:
                        v["networkConfig"] = files.inline(
                            volume.network_config, f"{where}.volumes[{j}].networkConfig"
                        )
                else:
                    v = _dump(volume)
                volumes.append(v)
            if volumes:
                entry["volumes"] = volumes
            nodes.append(entry)
        spec["nodes"] = nodes
    if dc.images:
        spec["images"] = [_dump(image) for image in dc.images]
    if dc.device_classes:
        spec["deviceClasses"] = [_dump(c) for c in dc.device_classes]
    if dc.bmc is not None:
        users = []
        for i, user in enumerate(dc.bmc.users):
            entry = {"name": user.name, "role": user.role}
            if user.password_file is not None:
                # A password stays in the CR whatever its size (it is the CR's own field).
                password = files.text(user.password_file, f"spec.bmc.users[{i}].password")
                entry["password"] = password.rstrip("\r\n")
            else:
                entry["password"] = user.password or ""
            users.append(entry)
        bmc: dict[str, Any] = {"users": users} if users else {}
        if dc.bmc.tls is not None:
            files._problem(
                "spec.bmc.tls",
                "put the certificate and key in a kubernetes.io/tls Secret and set"
                " spec.bmc.tls.secretName to its name",
            )
        spec["bmc"] = bmc
    if dc.groups:
        spec["groups"] = [_dump(group) for group in dc.groups]
    if files.problems:
        raise SpecErrors(files.problems)
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": cr.API_VERSION, "kind": cr.KIND, "metadata": metadata, "spec": spec}
