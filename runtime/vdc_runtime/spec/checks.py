"""Rules that span several fields or documents, and the files a spec points at.

These run after each document has been validated on its own. They only read models and
stat files; nothing is created. Each problem points at the document holding the bad
value, with a location in canonical keys that the loader turns into the user's spelling.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_interface
from typing import Any

from vdc_runtime.spec.errors import did_you_mean, format_path
from vdc_runtime.spec.identity import generated_mac
from vdc_runtime.spec.inputs import Loc, file_inputs, file_problem
from vdc_runtime.spec.models import (
    BMC,
    DEFAULT_GROUP,
    MAX_QUEUES,
    Group,
    HostPathVolume,
    Image,
    ImageVolume,
    IPInterface,
    Network,
    NetworkNamespace,
    Node,
    SpecModel,
)

MAX_INTERFACES = 28
"""NICs sit at fixed PCI slots 3, 4, ... of the root bus, whose last free slot is 30."""
MOUNT_TAG_MAX = 31
"""QEMU's limit on a virtio-9p mount tag."""


@dataclass
class Document:
    """One YAML document of a spec file, as far as it could be understood."""

    file: str
    index: int
    """1-based position in its file."""
    kind: str | None = None
    name: str | None = None
    raw: Any = None
    """The document as written (keys in the user's spelling)."""
    model: SpecModel | None = None
    """The validated model, or None when the document itself has errors."""
    order: tuple[int, int] = (0, 0)
    """(file position, document index), for reporting in reading order."""
    label: str | None = None
    """Where the object is when it is not a document of a file (`spec.nodes[2]` of a CR)."""

    def describe(self) -> str:
        if self.label is not None:
            return f'{self.label} ({self.kind} "{self.name}")' if self.name else self.label
        label = f"{self.file}: document {self.index}"
        if self.kind is None:
            return label
        return (
            f"{label} ({self.kind})"
            if self.name is None
            else f'{label} ({self.kind} "{self.name}")'
        )


@dataclass(frozen=True)
class Problem:
    document: Document
    loc: Loc
    message: str


@dataclass
class _Declared:
    """Names declared per kind, from every document that has a readable name."""

    by_kind: dict[str, dict[str, Document]] = field(default_factory=dict)

    def names(self, kind: str) -> dict[str, Document]:
        return self.by_kind.setdefault(kind, {})


def check(
    documents: Iterable[Document], *, references: bool = True, files: bool = True
) -> list[Problem]:
    """All cross-field and cross-document problems.

    `references=False` skips "no X named Y" checks: when some document could not be read
    at all, the names it declared are unknown and those errors would be noise.
    `files=False` skips the checks of input files, for a spec whose files exist only
    elsewhere (a CR's, before its pod has them).
    """
    documents = list(documents)
    problems: list[Problem] = []
    declared = _Declared()
    for doc in documents:
        if doc.kind is None or doc.name is None:
            continue
        names = declared.names(doc.kind)
        first = names.get(doc.name)
        if first is None:
            names[doc.name] = doc
        else:
            problems.append(
                Problem(
                    doc,
                    ("name",),
                    f"duplicate {doc.kind} name '{doc.name}'; first defined in {_where(first)}",
                )
            )
    for doc in documents:
        problems.extend(_document_rules(doc))
        if files:
            problems.extend(_files(doc))
        if references:
            problems.extend(_references(doc, declared))
    if references:
        problems.extend(_empty_groups(documents))
    problems.extend(_bmc_settings(documents))
    problems.extend(_bmc_publish(documents))
    problems.extend(_bmc_addresses(documents, declared))
    problems.extend(_addresses(documents, declared))
    problems.extend(_serials(documents))
    problems.extend(_macs(documents))
    return problems


def _where(doc: Document, loc: Loc = ()) -> str:
    where = doc.describe()
    return f"{where}, {format_path(loc)}" if loc else where


def _duplicates(values: Iterable[Any]) -> Iterator[tuple[int, int, Any]]:
    """(index, index of first occurrence, value) for each repeated value."""
    seen: dict[Any, int] = {}
    for i, value in enumerate(values):
        if value in seen:
            yield i, seen[value], value
        else:
            seen[value] = i


def _document_rules(doc: Document) -> Iterator[Problem]:
    model = doc.model
    if isinstance(model, Network):
        yield from _network_rules(doc, model)
    elif isinstance(model, Node):
        yield from _node_rules(doc, model)
    elif isinstance(model, Image):
        if model.url is None and model.file is None:
            yield Problem(doc, (), "an Image needs one of 'url' or 'file'")
        elif model.url is not None and model.file is not None:
            yield Problem(doc, ("file",), "'url' and 'file' are exclusive; give only one")
    elif isinstance(model, NetworkNamespace):
        for i, first, network in _duplicates(i.network for i in model.interfaces):
            yield Problem(
                doc,
                ("interfaces", i, "network"),
                f"the namespace already has an interface on network '{network}'"
                f" (interfaces[{first}])",
            )
        for i, first, name in _duplicates(a.name for a in model.apps):
            yield Problem(doc, ("apps", i, "name"), f"duplicate app name '{name}' (apps[{first}])")


def _network_rules(doc: Document, net: Network) -> Iterator[Problem]:
    if net.type == "internal" and net.address is not None:
        yield Problem(
            doc,
            ("address",),
            "an internal network has no host address; remove it or use type external",
        )
    if net.type != "internal" and net.address is None:
        yield Problem(doc, ("address",), f"required for {net.type} networks")
    if net.use_nat and net.type != "external":
        yield Problem(
            doc, ("use-nat",), f"NAT is only possible on external networks, not {net.type}"
        )


def _node_rules(doc: Document, node: Node) -> Iterator[Problem]:
    if node.cpu is not None and node.smp is not None:
        yield Problem(doc, ("smp",), "'cpu' and 'smp' are exclusive; give only one")
    elif node.cpu is None and node.smp is None:
        yield Problem(doc, (), "one of 'cpu' or 'smp' is required")
    smp = node.smp
    if smp is not None:
        if smp.maxcpus and smp.maxcpus < smp.cpus:
            yield Problem(
                doc,
                ("smp", "maxcpus"),
                f"must be at least cpus ({smp.cpus})",
            )
        if smp.sockets and smp.cores and smp.threads:
            product = smp.sockets * max(smp.dies, 1) * smp.cores * smp.threads
            want = smp.maxcpus or smp.cpus
            if product != want:
                yield Problem(
                    doc,
                    ("smp",),
                    f"sockets × dies × cores × threads = {product}, but QEMU needs it to equal"
                    f" {'maxcpus' if smp.maxcpus else 'cpus'} ({want})",
                )
    if node.numa is not None and node.numa.nodes:
        nodes, cpus = node.numa.nodes, node.cpus
        if nodes > cpus:
            yield Problem(
                doc,
                ("numa", "nodes"),
                f"{nodes} NUMA nodes need at least {nodes} vCPUs, not {cpus}",
            )
        elif cpus % nodes:
            yield Problem(
                doc,
                ("numa", "nodes"),
                f"the {cpus} vCPUs cannot be split evenly over {nodes} NUMA nodes",
            )
    if len(node.interfaces) > MAX_INTERFACES:
        yield Problem(
            doc,
            ("interfaces",),
            f"{len(node.interfaces)} interfaces; a node has at most {MAX_INTERFACES}"
            " (one PCI slot each)",
        )
    queues = node.network_device_queue
    if queues is not None and queues > MAX_QUEUES:
        yield Problem(
            doc,
            ("network-device-queue",),
            f"{queues} queues; a tap has at most {MAX_QUEUES}",
        )
    for i, first, device in _duplicates(node.boot_order):
        yield Problem(
            doc, ("boot-order", i), f"'{device}' is already in the boot order (boot-order[{first}])"
        )
    if node.tpm and "," in node.name:
        # swtpm takes the state dir and socket (named after the node) in comma-separated
        # options with no way to escape a comma.
        yield Problem(doc, ("name",), "a node with tpm: true cannot have ',' in its name")
    if node.uefi_secure_boot and not node.uefi:
        yield Problem(doc, ("uefi-secure-boot",), "Secure Boot needs UEFI firmware (uefi: true)")
    elif node.uefi_secure_boot and node.machine != "q35":
        # OVMF's Secure Boot build keeps its variables safe from the guest OS with SMM,
        # which QEMU emulates on q35 only.
        yield Problem(doc, ("uefi-secure-boot",), "Secure Boot needs machine: q35 (SMM)")
    if node.kernel is None:
        for key, value in (("initrd", node.initrd), ("cmdline", node.cmdline)):
            if value is not None:
                yield Problem(doc, (key,), f"'{key}' is only used with 'kernel' (direct boot)")
    for i, volume in enumerate(node.volumes):
        tag = len(volume.name.encode())
        if isinstance(volume, HostPathVolume) and tag > MOUNT_TAG_MAX:
            yield Problem(
                doc,
                ("volumes", i, "name"),
                f"a hostPath volume's name is its 9p mount tag, at most {MOUNT_TAG_MAX}"
                f" bytes; '{volume.name}' has {tag}",
            )
    for i, first, name in _duplicates(v.name for v in node.volumes):
        yield Problem(
            doc, ("volumes", i, "name"), f"duplicate volume name '{name}' (volumes[{first}])"
        )


def _files(doc: Document) -> Iterator[Problem]:
    for loc, path, executable in file_inputs(doc.model):
        message = file_problem(path, executable=executable)
        if message is not None:
            yield Problem(doc, loc, message)


def _reference(
    doc: Document, loc: Loc, kind: str, name: str, declared: _Declared
) -> Problem | None:
    names = declared.names(kind)
    if name in names:
        return None
    return Problem(doc, loc, f"no {kind} named '{name}' is defined{did_you_mean(name, names)}")


def _references(doc: Document, declared: _Declared) -> Iterator[Problem]:
    found: list[Problem | None] = []
    model = doc.model
    if isinstance(model, Node):
        for i, iface in enumerate(model.interfaces):
            loc = ("interfaces", i, "network")
            found.append(_reference(doc, loc, "Network", iface.network, declared))
        for i, volume in enumerate(model.volumes):
            if isinstance(volume, ImageVolume):
                loc = ("volumes", i, "image")
                found.append(_reference(doc, loc, "Image", volume.image, declared))
            if volume.device_class is not None:
                loc = ("volumes", i, "device-class")
                found.append(_reference(doc, loc, "DeviceClass", volume.device_class, declared))
        if model.cdrom is not None:
            found.append(_reference(doc, ("cdrom", "image"), "Image", model.cdrom.image, declared))
    elif isinstance(model, NetworkNamespace):
        for i, iface in enumerate(model.interfaces):
            loc = ("interfaces", i, "network")
            found.append(_reference(doc, loc, "Network", iface.network, declared))
    if isinstance(model, Node | NetworkNamespace) and model.group not in (None, DEFAULT_GROUP):
        found.append(_reference(doc, ("group",), "Group", model.group, declared))
    yield from (p for p in found if p is not None)


def _empty_groups(documents: list[Document]) -> Iterator[Problem]:
    """A declared group must hold something: an empty one would be a pod with nothing in it,
    and most likely names a group its members spell differently."""
    used = {
        doc.model.group or DEFAULT_GROUP
        for doc in documents
        if isinstance(doc.model, Node | NetworkNamespace)
    }
    for doc in documents:
        if isinstance(doc.model, Group) and doc.model.name not in used:
            yield Problem(
                doc,
                ("name",),
                f"no node or network namespace is in group '{doc.model.name}'"
                " (they name it in their 'group' key)",
            )


def _addresses(documents: list[Document], declared: _Declared) -> Iterator[Problem]:
    """Addresses must fit their network and be used once across the data center."""
    used: list[tuple[Document, Loc, IPInterface]] = []
    for doc in documents:
        if isinstance(doc.model, Network) and doc.model.address is not None:
            used.append((doc, ("address",), doc.model.address))
        elif isinstance(doc.model, Node) and doc.model.bmc and doc.model.bmc.address is not None:
            address = ip_interface(doc.model.bmc.address)
            used.append((doc, ("bmc", "address"), address))
        elif isinstance(doc.model, NetworkNamespace):
            for i, iface in enumerate(doc.model.interfaces):
                network_doc = declared.names("Network").get(iface.network)
                network = network_doc.model if network_doc is not None else None
                for j, address in enumerate(iface.addresses):
                    loc = ("interfaces", i, "addresses", j)
                    used.append((doc, loc, address))
                    if isinstance(network, Network) and network.address is not None:
                        message = _fits(address, network)
                        if message is not None:
                            yield Problem(doc, loc, message)
    first_use: dict[IPv4Address | IPv6Address, tuple[Document, Loc]] = {}
    for doc, loc, address in used:
        # Link-local IPv6 addresses are per link, so the same one on two links is fine.
        if address.ip.is_link_local and address.version == 6:
            continue
        first = first_use.get(address.ip)
        if first is None:
            first_use[address.ip] = (doc, loc)
        else:
            yield Problem(doc, loc, f"address {address.ip} is already used at {_where(*first)}")


IPMI_NAME_MAX = 16
IPMI_PASSWORD_MAX = 20
"""IPMI 2.0 limits on user names and passwords (bytes), which RAKP carries verbatim."""


def _bmc_settings(documents: list[Document]) -> Iterator[Problem]:
    first: Document | None = None
    for doc in documents:
        if doc.kind != "BMC":
            continue
        if first is not None:
            yield Problem(
                doc, (), f"only one BMC document is allowed; the first is {first.describe()}"
            )
            continue
        first = doc
        if not isinstance(doc.model, BMC):
            continue
        names: dict[str, int] = {}
        for i, user in enumerate(doc.model.users):
            loc: Loc = ("users", i)
            if user.name in names:
                yield Problem(
                    doc, (*loc, "name"), f"duplicate user '{user.name}' (users[{names[user.name]}])"
                )
            names.setdefault(user.name, i)
            if not user.name.isascii() or not user.name.isprintable() or ":" in user.name:
                yield Problem(doc, (*loc, "name"), "a BMC user name is printable ASCII without ':'")
            elif len(user.name) > IPMI_NAME_MAX:
                yield Problem(
                    doc, (*loc, "name"), f"IPMI allows at most {IPMI_NAME_MAX} characters"
                )
            if (user.password is None) == (user.password_file is None):
                yield Problem(doc, loc, "give exactly one of 'password' or 'password-file'")
            elif user.password is not None:
                if not user.password:
                    yield Problem(doc, (*loc, "password"), "the password is empty")
                elif len(user.password.encode()) > IPMI_PASSWORD_MAX:
                    yield Problem(
                        doc,
                        (*loc, "password"),
                        f"IPMI 2.0 allows at most {IPMI_PASSWORD_MAX} bytes",
                    )


def _bmc_publish(documents: list[Document]) -> Iterator[Problem]:
    """Published BMC ports: one per node from each base, inside 1-65535, apart."""
    settings = next((d for d in documents if isinstance(d.model, BMC)), None)
    if settings is None or settings.model.publish is None:  # type: ignore[union-attr]
        return
    publish = settings.model.publish  # type: ignore[union-attr]
    count = sum(1 for d in documents if isinstance(d.model, Node))
    ipmi = range(publish.ipmi_port, publish.ipmi_port + count)
    redfish = range(publish.redfish_port, publish.redfish_port + count)
    for key, ports in (("ipmi-port", ipmi), ("redfish-port", redfish)):
        if ports and ports[-1] > 65535:
            yield Problem(
                settings, ("publish", key),
                f"{count} nodes need ports {ports[0]}-{ports[-1]}, beyond 65535",
            )  # fmt: skip
    if ipmi and redfish and ipmi.start < redfish.stop and redfish.start < ipmi.stop:
        # IPMI is UDP and Redfish TCP, but one range per protocol keeps firewalls simple.
        yield Problem(
            settings, ("publish",),
            f"the IPMI ports {ipmi[0]}-{ipmi[-1]} overlap the Redfish ports"
            f" {redfish[0]}-{redfish[-1]}",
        )  # fmt: skip


def _bmc_addresses(documents: list[Document], declared: _Declared) -> Iterator[Problem]:
    """A static BMC address must sit inside a bmc network, whose bridge will carry it."""
    bmc_networks = [
        d.model
        for d in declared.names("Network").values()
        if isinstance(d.model, Network) and d.model.type == "bmc" and d.model.address is not None
    ]
    for doc in documents:
        node = doc.model
        if not isinstance(node, Node) or node.bmc is None or node.bmc.address is None:
            continue
        address = node.bmc.address
        if not any(address in n.address.network for n in bmc_networks if n.address):
            where = ", ".join(f"{n.name} ({n.address.network})" for n in bmc_networks if n.address)
            yield Problem(
                doc,
                ("bmc", "address"),
                f"{address} is not inside any bmc network"
                + (f" ({where})" if where else " (no Network of type bmc has an address)"),
            )


def _fits(address: IPInterface, network: Network) -> str | None:
    assert network.address is not None
    net = network.address.network
    # One L2 segment carries both families; the network's address is only the host's, so
    # an address of the other family has nothing to be checked against.
    if address.version != net.version:
        return None
    if address.ip not in net:
        return f"{address.ip} is outside network '{network.name}' ({net})"
    return None


def _serials(documents: list[Document]) -> Iterator[Problem]:
    # Guests (and tools that inventory machines by serial) must be able to tell nodes apart.
    first: dict[str, Document] = {}
    for doc in documents:
        node = doc.model
        if not isinstance(node, Node) or node.smbios is None or node.smbios.serial is None:
            continue
        serial = node.smbios.serial
        if serial in first:
            yield Problem(
                doc,
                ("smbios", "serial"),
                f"serial '{serial}' is already used by {first[serial].describe()}",
            )
        else:
            first[serial] = doc


def _macs(documents: list[Document]) -> Iterator[Problem]:
    # Two NICs with one MAC break any L2 segment they share, and DHCP reservations anywhere.
    first: dict[str, tuple[Document, Loc, bool]] = {}
    explicit: list[tuple[Document, Loc, str]] = []
    for doc in documents:
        node = doc.model
        if not isinstance(node, Node):
            continue
        for i, iface in enumerate(node.interfaces):
            loc: Loc = ("interfaces", i, "mac")
            if iface.mac is not None:
                explicit.append((doc, loc, iface.mac))
                continue
            mac = generated_mac(node.name, i)
            if mac in first:
                # Only ever a hash collision; an explicit MAC on either NIC resolves it.
                yield Problem(
                    doc,
                    ("interfaces", i),
                    f"the MAC generated for this interface ({mac}) is also the one generated"
                    f" at {_where(first[mac][0], first[mac][1][:-1])}; give one of them a 'mac'",
                )
            else:
                first[mac] = (doc, loc, False)
    for doc, loc, mac in explicit:
        if mac not in first:
            first[mac] = (doc, loc, True)
            continue
        other, other_loc, other_explicit = first[mac]
        what = "used" if other_explicit else "generated for the interface"
        where = _where(other, other_loc if other_explicit else other_loc[:-1])
        yield Problem(doc, loc, f"MAC {mac} is already {what} at {where}")


__all__ = ["MAX_INTERFACES", "MOUNT_TAG_MAX", "Document", "Problem", "check"]
