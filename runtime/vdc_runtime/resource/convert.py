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


class _Inliner:
    def __init__(self) -> None:
        self.problems: list[SpecError] = []

    def inline(self, path: Path, where: str) -> dict[str, str]:
        try:
            data = path.read_bytes()
            text = data.decode()
        except OSError as exc:
            self._problem(where, f"cannot read {path}: {exc.strerror}")
            return {"inline": ""}
        except UnicodeDecodeError:
            self._problem(
                where,
                f"{path} is binary: serve it over HTTP and name it as an Image"
                " (spec.images[].url) with `image: <name>` here",
            )
            return {"inline": ""}
        if len(text) > cr.INLINE_MAX:
            self._problem(
                where,
                f"{path} is {len(data)} bytes, more than an inline file may hold"
                f" ({cr.INLINE_MAX}); put it in a ConfigMap or serve it as an Image",
            )
        return {"inline": text}

    def _problem(self, where: str, message: str) -> None:
        self.problems.append(SpecError(where, None, None, None, "", message))


@dataclass(frozen=True)
class Conversion:
    manifest: dict[str, Any]
    warnings: list[str]
    """`field: message` for each path that means the pod's file, not this host's."""


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


def convert(dc: DataCenter, name: str, namespace: str | None = None) -> Conversion:
    """A VirtualDataCenter named `name` for a loaded Placemat spec, with warnings for
    paths; SpecErrors for what a CR cannot hold."""
    return Conversion(to_manifest(dc, name, namespace), _path_warnings(dc))


class _Dumper(yaml.SafeDumper):
    """Multi-line text as literal blocks, everything else as PyYAML writes it."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def dump(manifest: dict[str, Any]) -> str:
    """The manifest as YAML a person would keep: keys in the models' order, multi-line text
    as literal blocks (PyYAML quotes the rare text a block cannot hold, such as trailing
    spaces on a line)."""
    return yaml.dump(manifest, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)


def to_manifest(dc: DataCenter, name: str, namespace: str | None = None) -> dict[str, Any]:
    """A VirtualDataCenter named `name` for a loaded Placemat spec; SpecErrors for what a
    CR cannot hold."""
    files = _Inliner()
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
                password = files.inline(user.password_file, f"spec.bmc.users[{i}].password")
                entry["password"] = password["inline"].rstrip("\r\n")
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
    if files.problems:
        raise SpecErrors(files.problems)
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": cr.API_VERSION, "kind": cr.KIND, "metadata": metadata, "spec": spec}
