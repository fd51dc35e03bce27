"""The data model of a data center: one pydantic model per Placemat v2 kind.

Python attributes are snake_case; the YAML keys are Placemat's kebab-case, produced by one
alias generator so another key style (camelCase for the CRD) can be swapped in one place.
Models check single values (types, enums, names, addresses, sizes); rules that span fields
or documents live in `checks`, so each problem can be reported at the exact key.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
)
from pydantic_core import PydanticCustomError

from vdc_runtime.spec import cel
from vdc_runtime.spec.errors import describe
from vdc_runtime.spec.fields import (
    MAC,
    SHA256,
    URL,
    AbsolutePath,
    BridgeInterface,
    FileName,
    FilePath,
    GroupName,
    HostAddress,
    HostInterface,
    IPInterface,
    Name,
    NetNSName,
    NetworkName,
    NodeName,
    NodeRestart,
    Regex,
    Restart,
    Size,
    Text,
)


def kebab_case(name: str) -> str:
    """Placemat's key for a Python field name: `use_nat` -> `use-nat`."""
    return name.replace("_", "-")


class SpecModel(BaseModel):
    """Base of every spec model: unknown keys are errors, objects are immutable once valid."""

    model_config = ConfigDict(
        alias_generator=kebab_case,
        # Python code may build models by attribute name; the loader passes by_name=False so
        # `use_nat` in YAML stays an unknown key (with a suggestion) instead of being accepted.
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
        frozen=True,
        json_schema_extra=cel.add_to_schema,
        # Validators are built on first use: a run whose spec is cached never validates.
        defer_build=True,
    )


NetworkType = Literal["internal", "external", "bmc"]
CacheMode = Literal["writeback", "none", "writethrough", "directsync", "unsafe"]
Compression = Literal["", "gzip", "bzip2", "xz", "zstd"]
PositiveInt = Annotated[StrictInt, Field(ge=1)]
Count = Annotated[StrictInt, Field(ge=0)]
BootDevice = Literal["network", "disk", "cdrom"]
Machine = Literal["pc", "q35"]
MAX_QUEUES = 256
"""The kernel's limit on queues of one multi-queue tap (MAX_TAP_QUEUES)."""


class Network(SpecModel):
    """An L2 segment: a Linux bridge, optionally with a host address and NAT."""

    cel_rules: ClassVar = (
        cel.Rule(
            "self.type != 'internal' || !has(self.address)",
            "an internal network has no host address; remove it or use type external",
            ".address",
        ),
        cel.Rule(
            "self.type == 'internal' || has(self.address)",
            "required for external and bmc networks",
            ".address",
        ),
        cel.Rule(
            "!has(self.useNat) || !self.useNat || self.type == 'external'",
            "NAT is only possible on external networks",
            ".useNat",
        ),
    )

    name: NetworkName
    type: NetworkType
    use_nat: StrictBool = False
    address: BridgeInterface | None = None


class NetNSInterface(SpecModel):
    """The i-th entry becomes eth<i> inside the namespace, attached to `network`."""

    network: Name
    addresses: Annotated[list[HostInterface], Field(max_length=32)] = []


class App(SpecModel):
    """A long-running process inside a network namespace."""

    name: Name
    command: Annotated[list[Name], Field(min_length=1, max_length=256)]
    restart: Restart = "no"


_GROUP_HELP = (
    "The group (pod, or `vdc run --group` host) this runs in; without it, the default group."
)


class NetworkNamespace(SpecModel):
    """A named network namespace acting as a router or host, wired to networks by veth pairs."""

    name: NetNSName
    interfaces: Annotated[list[NetNSInterface], Field(min_length=1, max_length=64)]
    init_scripts: Annotated[list[FilePath], Field(max_length=32)] = []
    apps: Annotated[list[App], Field(max_length=32)] = []
    group: GroupName | None = Field(default=None, description=_GROUP_HELP)


class Image(SpecModel):
    """A disk image for `image` volumes, downloaded from `url` or read from `file`."""

    cel_rules: ClassVar = (cel.exactly_one("url", "file"),)

    name: Name
    url: URL | None = None
    file: FilePath | None = None
    compression: Compression = ""
    sha256: SHA256 | None = None


class DeviceClass(SpecModel):
    """A host directory where volumes that name this class are stored."""

    name: Name
    path: AbsolutePath


class _VolumeBase(SpecModel):
    name: FileName
    cache: CacheMode = "none"
    device_class: Name | None = None
    vg: str | None = Field(
        default=None, description="Ignored; accepted for compatibility with Placemat v1 files."
    )


class ImageVolume(_VolumeBase):
    """A disk made from an Image, copied or as a copy-on-write overlay."""

    kind: Literal["image"]
    image: Name
    copy_on_write: StrictBool = False


class LocaldsVolume(_VolumeBase):
    """A cloud-init NoCloud seed disk built with cloud-localds."""

    kind: Literal["localds"]
    user_data: FilePath
    network_config: FilePath | None = None


class RawVolume(_VolumeBase):
    """An empty disk created with qemu-img."""

    kind: Literal["raw"]
    size: Size
    format: Literal["qcow2", "raw"] = "qcow2"


class HostPathVolume(_VolumeBase):
    """A host directory shared with the guest over virtio-9p."""

    cel_rules: ClassVar = (
        cel.Rule(
            "size(self.name) <= 31",
            "a hostPath volume's name is its 9p mount tag, at most 31 bytes",
            ".name",
        ),
    )

    kind: Literal["hostPath"]
    path: AbsolutePath
    writable: StrictBool = False


Volume = Annotated[
    ImageVolume | LocaldsVolume | RawVolume | HostPathVolume, Field(discriminator="kind")
]


class SMP(SpecModel):
    """QEMU -smp; zero means "not given" for every field but `cpus`."""

    cel_rules: ClassVar = (
        cel.Rule(
            "!has(self.maxcpus) || self.maxcpus == 0 || self.maxcpus >= self.cpus",
            "must be at least cpus",
            ".maxcpus",
        ),
        cel.Rule(
            "!(has(self.sockets) && has(self.cores) && has(self.threads) && self.sockets > 0"
            " && self.cores > 0 && self.threads > 0) || self.sockets"
            " * (has(self.dies) && self.dies > 0 ? self.dies : 1) * self.cores * self.threads"
            " == (has(self.maxcpus) && self.maxcpus > 0 ? self.maxcpus : self.cpus)",
            "sockets × dies × cores × threads must equal maxcpus (or cpus without maxcpus)",
        ),
    )

    cpus: PositiveInt
    cores: Count = 0
    threads: Count = 0
    dies: Count = 0
    sockets: Count = 0
    maxcpus: Count = 0


class NUMA(SpecModel):
    """Split the vCPUs evenly over this many NUMA nodes (0 = no NUMA)."""

    nodes: Count = 0


class SMBIOS(SpecModel):
    """SMBIOS type 1 (system information) strings shown to the guest."""

    manufacturer: str | None = None
    product: str | None = None
    serial: str | None = None


class NodeInterface(SpecModel):
    """A NIC of a node, attached to `network`; written as just the network's name in Placemat."""

    network: Name
    mac: MAC | None = Field(default=None, description="Default: stable, derived from the name.")
    queues: Annotated[StrictInt, Field(ge=1, le=MAX_QUEUES)] | None = Field(
        default=None, description="Overrides the node's network-device-queue for this NIC."
    )


def _interface_entry(value: object) -> object:
    if isinstance(value, str):
        return {"network": value}
    if isinstance(value, dict | NodeInterface):
        return value
    raise PydanticCustomError(
        "interface_type",
        "expected a network name or a mapping with 'network' (and optionally 'mac',"
        " 'queues'), got {got}",
        {"got": describe(value)},
    )


class _NameOrInterfaceSchema:
    """The JSON schema of an entry, made when a schema is asked for (the CRD's generator):
    NodeInterface's own schema needs its validator built, which importing the models
    leaves for its first use."""

    def __get_pydantic_json_schema__(self, _core: object, _handler: object) -> dict[str, Any]:
        return {"anyOf": [{"type": "string", "minLength": 1}, NodeInterface.model_json_schema()]}


NodeInterfaceEntry = Annotated[
    NodeInterface, BeforeValidator(_interface_entry), _NameOrInterfaceSchema()
]
"""A network name (Placemat's form) or a NodeInterface mapping; always a NodeInterface."""


class NodeBMC(SpecModel):
    """The node's BMC (IPMI on UDP 623, Redfish on HTTPS 443)."""

    address: HostAddress | None = Field(
        default=None,
        description="Static BMC address inside a bmc network; without it the guest announces"
        " one on its `placemat` port, as in Placemat.",
    )


class NodeReadiness(SpecModel):
    """When a node counts as ready; without it, as soon as its machine runs."""

    console: Regex = Field(
        description="A regular expression: the node is ready once its serial console shows"
        " a match, again after every boot."
    )


class NodeCdrom(SpecModel):
    """The node's CD drive (always there, empty by default) with an image in it at start."""

    image: Name = Field(description="An Image holding an ISO 9660 (CD/DVD) image.")


class Node(SpecModel):
    """A QEMU virtual machine."""

    name: NodeName
    interfaces: list[NodeInterfaceEntry] = []
    volumes: list[Volume] = []
    ignition: FilePath | None = None
    kernel: FilePath | None = Field(default=None, description="Boot this kernel directly.")
    initrd: FilePath | None = Field(default=None, description="Only with kernel.")
    cmdline: Text | None = Field(default=None, description="Kernel command line; only with kernel.")
    boot_order: list[BootDevice] = Field(
        default=[],
        description="Firmware boot order; empty means the firmware's default (disk, then"
        " network, as in Placemat).",
    )
    restart: NodeRestart = "no"
    machine: Machine = "pc"
    cpu: PositiveInt | None = Field(default=None, description="Legacy; exclusive with smp.")
    smp: SMP | None = None
    memory: Size | None = None
    numa: NUMA | None = None
    uefi: StrictBool = False
    uefi_secure_boot: StrictBool = Field(
        default=False,
        description="Boot in UEFI Secure Boot mode: OVMF's Secure Boot build with Microsoft's"
        " and the distributions' keys enrolled (needs uefi: true and machine: q35).",
    )
    tpm: StrictBool = False
    smbios: SMBIOS | None = None
    network_device_queue: Count | None = None
    bmc: NodeBMC | None = None
    readiness: NodeReadiness | None = None
    group: GroupName | None = Field(default=None, description=_GROUP_HELP)
    cdrom: NodeCdrom | None = Field(
        default=None,
        description="An image in the CD drive at start; a BMC's virtual media changes it.",
    )

    @property
    def cpus(self) -> int:
        """The number of vCPUs the guest gets, whichever of `cpu` / `smp` set it."""
        if self.cpu is not None:
            return self.cpu
        if self.smp is not None:
            return self.smp.cpus
        return 1  # QEMU's default when -smp is absent


BMCRole = Literal["Administrator", "Operator", "ReadOnly"]


class BMCUser(SpecModel):
    """An account on every BMC of the data center (IPMI and Redfish)."""

    name: Name
    password: Text | None = None
    password_file: FilePath | None = Field(
        default=None, description="A file holding the password (trailing newline ignored)."
    )
    role: BMCRole = "Administrator"


class BMCTLS(SpecModel):
    """A certificate and key for every BMC's HTTPS, instead of ones from vdc's own CA."""

    cert: FilePath
    key: FilePath


Port = Annotated[StrictInt, Field(ge=1, le=65535)]


class BMCPublish(SpecModel):
    """Also reach every BMC on the host's own addresses (in Kubernetes, the pod's): the
    i-th node of the spec (from 0) on UDP ipmi-port + i and TCP redfish-port + i, forwarded
    to its BMC's IPv4 address."""

    ipmi_port: Port = 6230
    redfish_port: Port = 8443


class BMC(SpecModel):
    """Settings shared by the BMCs of all nodes; at most one per data center.

    Without users, Placemat's account (cybozu / cybozu) is kept so its scripts work.
    """

    users: list[BMCUser] = []
    tls: BMCTLS | None = None
    publish: BMCPublish | None = None


DEFAULT_GROUP = "default"
"""The group of every node and namespace that names none."""


class Group(SpecModel):
    """A part of the data center that runs on its own: a pod on Kubernetes, a host with
    `vdc run --group`. Networks used in several groups are stretched between them."""

    name: GroupName


KINDS: dict[str, type[SpecModel]] = {
    "Network": Network,
    "NetworkNamespace": NetworkNamespace,
    "Node": Node,
    "Image": Image,
    "DeviceClass": DeviceClass,
    "BMC": BMC,
    "Group": Group,
}
"""Placemat `kind` -> model, in the order DataCenter lists them."""


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


class DataCenter(SpecModel):
    """A whole data center: everything every spec file declared, in file order."""

    networks: list[Network] = []
    netns: list[NetworkNamespace] = []
    nodes: list[Node] = []
    images: list[Image] = []
    device_classes: list[DeviceClass] = []
    bmc: BMC | None = None
    groups: list[Group] = []

    def network(self, name: str) -> Network:
        return _by_name(self.networks, name)

    def namespace(self, name: str) -> NetworkNamespace:
        return _by_name(self.netns, name)

    def node(self, name: str) -> Node:
        return _by_name(self.nodes, name)

    def image(self, name: str) -> Image:
        return _by_name(self.images, name)

    def device_class(self, name: str) -> DeviceClass:
        return _by_name(self.device_classes, name)

    def canonical(self) -> dict[str, Any]:
        """The spec as compared between runs: every field, defaults included, as JSON."""
        return self.model_dump(mode="json")

    def summary(self) -> str:
        """`3 networks, 2 network namespaces, 1 node, 1 image, 0 device classes` (and the
        groups, when there are)."""
        return ", ".join(
            [
                _plural(len(self.networks), "network", "networks"),
                _plural(len(self.netns), "network namespace", "network namespaces"),
                _plural(len(self.nodes), "node", "nodes"),
                _plural(len(self.images), "image", "images"),
                _plural(len(self.device_classes), "device class", "device classes"),
                # Only where used: Placemat's own files read as they always did.
                *([_plural(len(self.groups), "group", "groups")] if self.groups else []),
            ]
        )


_Named = TypeVar("_Named", Network, NetworkNamespace, Node, Image, DeviceClass)


def _by_name(items: list[_Named], name: str) -> _Named:
    for item in items:
        if item.name == name:
            return item
    raise KeyError(name)


__all__ = [
    "BMC",
    "BMCTLS",
    "DEFAULT_GROUP",
    "KINDS",
    "MAX_QUEUES",
    "NUMA",
    "SMBIOS",
    "SMP",
    "App",
    "BMCPublish",
    "BMCRole",
    "BMCUser",
    "BootDevice",
    "CacheMode",
    "Compression",
    "DataCenter",
    "DeviceClass",
    "Group",
    "HostPathVolume",
    "IPInterface",
    "Image",
    "ImageVolume",
    "LocaldsVolume",
    "Machine",
    "NetNSInterface",
    "Network",
    "NetworkNamespace",
    "NetworkType",
    "Node",
    "NodeBMC",
    "NodeCdrom",
    "NodeInterface",
    "NodeReadiness",
    "RawVolume",
    "SpecModel",
    "Volume",
    "kebab_case",
]
