"""The data model of a virtual data center and its validation, before anything is created.

`load_files` / `load_text` read Placemat v2 YAML (unchanged, including its case-insensitive
keys) and return a `DataCenter`, or raise `SpecErrors` listing every problem with its file,
document and key path.
"""

from typing import TYPE_CHECKING

from vdc_runtime.spec.errors import SpecError, SpecErrors
from vdc_runtime.spec.models import (
    BMC,
    DEFAULT_GROUP,
    NUMA,
    SMBIOS,
    SMP,
    App,
    BMCUser,
    DataCenter,
    DeviceClass,
    Group,
    HostPathVolume,
    Image,
    ImageVolume,
    LocaldsVolume,
    NetNSInterface,
    Network,
    NetworkNamespace,
    Node,
    NodeBMC,
    NodeCdrom,
    NodeInterface,
    RawVolume,
    Volume,
)

if TYPE_CHECKING:
    from vdc_runtime.spec.loader import load_files, load_text


def __getattr__(name: str) -> object:
    # The loader (YAML, every rule) is imported by what reads a file, not with the models:
    # a run whose spec is cached neither parses nor checks it.
    if name in ("load_files", "load_text"):
        from vdc_runtime.spec import loader

        return getattr(loader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BMC",
    "DEFAULT_GROUP",
    "NUMA",
    "SMBIOS",
    "SMP",
    "App",
    "BMCUser",
    "DataCenter",
    "DeviceClass",
    "Group",
    "HostPathVolume",
    "Image",
    "ImageVolume",
    "LocaldsVolume",
    "NetNSInterface",
    "Network",
    "NetworkNamespace",
    "Node",
    "NodeBMC",
    "NodeCdrom",
    "NodeInterface",
    "RawVolume",
    "SpecError",
    "SpecErrors",
    "Volume",
    "load_files",
    "load_text",
]
