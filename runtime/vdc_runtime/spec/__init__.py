"""The data model of a virtual data center and its validation, before anything is created.

`load_files` / `load_text` read Placemat v2 YAML (unchanged, including its case-insensitive
keys) and return a `DataCenter`, or raise `SpecErrors` listing every problem with its file,
document and key path.
"""

from vdc_runtime.spec.errors import SpecError, SpecErrors
from vdc_runtime.spec.loader import load_files, load_text
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
