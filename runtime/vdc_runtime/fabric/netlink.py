"""Hand-encoded rtnetlink for the start-up path: the fabric's requests and the MTU probe.

Everything else reads the kernel through pyroute2 (`fabric.present`). These are written by
hand because `bench/fabric_build.py` shows that it matters, in the two places it measures:
- the build's requests (create bridge, create veth into a namespace, set link up, add
  address, delete link group): pyroute2's request API sends one message and waits for its
  acknowledgement before the next, and its generic encoder is slow for nested
  attributes, so the same links and addresses take it several times as long. Here they
  are sent back to back on one socket and the acknowledgements read afterwards, matched to
  their requests by sequence number, so a failure still names the object that caused it;
- the reads before the first kernel object exists: the MTU probe (a link dump and a
  route lookup) and the check that no link the run makes exists already
  (`fabric.leftovers.find`). Importing pyroute2 alone costs a large part of `vdc run`'s
  whole start-up (`bench/boot.py` prints the import times), while decoding the few
  attributes read here costs well under a millisecond.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

# Kernel ABI constants (<linux/netlink.h>, <linux/rtnetlink.h>). Written out rather than
# imported from pyroute2, for the same reason as the module.
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_DUMP = 0x300
NLM_F_DUMP_INTR = 0x10
NLMSG_ERROR = 0x2
NLMSG_DONE = 0x3
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_NEWROUTE = 24
RTM_GETROUTE = 26

IFF_UP = 0x1
IFA_F_NODAD = 0x02

# Attribute numbers from <linux/if_link.h>, <linux/if_addr.h>, <linux/veth.h>.
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_MASTER = 10
IFLA_LINKINFO = 18
IFLA_NET_NS_FD = 28
IFLA_GROUP = 27
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_FLAGS = 8
RTA_DST = 1
RTA_OIF = 4
NLA_F_NESTED = 0x8000

_NLMSGHDR = struct.Struct("=LHHLL")
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")


class NetlinkError(OSError):
    """A request the kernel refused; `what` names the object it was about."""

    def __init__(self, code: int, what: str) -> None:
        super().__init__(code, f"{what}: {os.strerror(code)}")
        self.what = what


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _nested(kind: int, *attrs: bytes) -> bytes:
    return _attr(kind | NLA_F_NESTED, b"".join(attrs))


def _u32(kind: int, value: int) -> bytes:
    return _attr(kind, struct.pack("=I", value))


def _str(kind: int, value: str) -> bytes:
    return _attr(kind, value.encode() + b"\0")


def _ifinfo(index: int = 0, up: bool = False) -> bytes:
    flags = IFF_UP if up else 0
    return _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, IFF_UP if up else 0)


def bridge_request(name: str, *, mtu: int | None, group: int) -> bytes:
    attrs = [_str(IFLA_IFNAME, name), _u32(IFLA_GROUP, group)]
    if mtu:
        attrs.append(_u32(IFLA_MTU, mtu))
    attrs.append(_nested(IFLA_LINKINFO, _str(IFLA_INFO_KIND, "bridge")))
    return _ifinfo(up=True) + b"".join(attrs)


def veth_request(
    host_name: str,
    peer_name: str,
    *,
    peer_netns_fd: int,
    master_index: int,
    mtu: int | None,
    group: int,
    peer_mac: str | None = None,
) -> bytes:
    """A veth pair whose peer is created directly inside a namespace; the host end is up.

    The peer cannot be brought up in the same request (the kernel refuses to open a veth
    whose other end is not linked yet), so the namespace side does that afterwards.
    """
    peer_attrs = [_str(IFLA_IFNAME, peer_name), _u32(IFLA_NET_NS_FD, peer_netns_fd)]
    if peer_mac is not None:
        peer_attrs.append(_attr(IFLA_ADDRESS, bytes.fromhex(peer_mac.replace(":", ""))))
    host_attrs = [
        _str(IFLA_IFNAME, host_name),
        _u32(IFLA_GROUP, group),
        _u32(IFLA_MASTER, master_index),
    ]
    if mtu:
        peer_attrs.append(_u32(IFLA_MTU, mtu))
        host_attrs.append(_u32(IFLA_MTU, mtu))
    peer = _ifinfo() + b"".join(peer_attrs)
    linkinfo = _nested(
        IFLA_LINKINFO,
        _str(IFLA_INFO_KIND, "veth"),
        _nested(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer)),
    )
    return _ifinfo(up=True) + b"".join(host_attrs) + linkinfo


def link_up_request(index: int) -> bytes:
    return _ifinfo(index=index, up=True)


def set_link_request(index: int, *, master_index: int, mtu: int | None, group: int) -> bytes:
    """Enslave an existing link to a bridge, set its MTU and group, and bring it up."""
    attrs = [_u32(IFLA_MASTER, master_index), _u32(IFLA_GROUP, group)]
    if mtu:
        attrs.append(_u32(IFLA_MTU, mtu))
    return _ifinfo(index=index, up=True) + b"".join(attrs)


def address_request(
    index: int, address: ipaddress.IPv4Interface | ipaddress.IPv6Interface
) -> bytes:
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    # Without NODAD an IPv6 address stays tentative for a second or two, so the first
    # packets of a test would be dropped.
    flags = IFA_F_NODAD if address.version == 6 else 0
    packed = address.ip.packed
    body = _IFADDRMSG.pack(family, address.network.prefixlen, flags, 0, index)
    return body + _attr(IFA_LOCAL, packed) + _attr(IFA_ADDRESS, packed) + _u32(IFA_FLAGS, flags)


def delete_group_request(group: int) -> bytes:
    # Deleting a whole link group unregisters every member in one batch: one RCU grace
    # period instead of one per link.
    return _ifinfo() + _u32(IFLA_GROUP, group)


def delete_link_request(name: str) -> bytes:
    return _ifinfo() + _str(IFLA_IFNAME, name)


@dataclass
class Batch:
    """Requests to send together; each carries a description for error messages."""

    requests: list[tuple[int, int, bytes, str]] = field(default_factory=list)

    def add(self, msg_type: int, flags: int, body: bytes, what: str) -> None:
        self.requests.append((msg_type, flags, body, what))

    def new_link(self, body: bytes, what: str) -> None:
        self.add(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, what)

    def set_link(self, body: bytes, what: str) -> None:
        self.add(RTM_NEWLINK, 0, body, what)

    def new_address(self, body: bytes, what: str) -> None:
        self.add(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body, what)

    def delete_link(self, body: bytes, what: str) -> None:
        self.add(RTM_DELLINK, 0, body, what)

    def __len__(self) -> int:
        return len(self.requests)


class RtnlSocket:
    """One rtnetlink socket; it belongs to the network namespace it was opened in."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RtnlSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, batch: Batch, *, ignore: Iterable[int] = ()) -> list[NetlinkError]:
        """Send every request, then collect every acknowledgement.

        Returns the refused requests (errno not in `ignore`) rather than raising at the
        first one, so the caller can report and clean up all of them.
        """
        ignored = set(ignore)
        pending: dict[int, str] = {}
        window = 256  # bounded so acknowledgements never overflow the receive buffer
        errors: list[NetlinkError] = []
        for msg_type, flags, body, what in batch.requests:
            self.seq += 1
            header = _NLMSGHDR.pack(
                _NLMSGHDR.size + len(body), msg_type, flags | NLM_F_REQUEST | NLM_F_ACK, self.seq, 0
            )
            self.sock.send(header + body)
            pending[self.seq] = what
            if len(pending) >= window:
                self._collect(pending, errors, ignored, until=len(pending) - window // 2)
        self._collect(pending, errors, ignored, until=0)
        return errors

    def dump(self, msg_type: int, body: bytes) -> Iterator[tuple[int, int, int, int, bytes]]:
        """Send a dump request; yield (offset, length, type, flags, buffer) per message."""
        self.seq += 1
        header = _NLMSGHDR.pack(
            _NLMSGHDR.size + len(body), msg_type, NLM_F_REQUEST | NLM_F_DUMP, self.seq, 0
        )
        self.sock.send(header + body)
        while True:
            data = self.sock.recv(1 << 20)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, kind, flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", data, offset + 16)[0]
                    raise NetlinkError(code, "netlink dump")
                yield offset, length, kind, flags, data
                offset += (length + 3) & ~3

    def _collect(
        self, pending: dict[int, str], errors: list[NetlinkError], ignored: set[int], until: int
    ) -> None:
        while len(pending) > until:
            data = self.sock.recv(1 << 20)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, msg_type, _flags, seq, _pid = _NLMSGHDR.unpack_from(data, offset)
                if msg_type in (NLMSG_ERROR, NLMSG_DONE) and seq in pending:
                    what = pending.pop(seq)
                    code = -struct.unpack_from("=i", data, offset + 16)[0]
                    if code and code not in ignored:
                        errors.append(NetlinkError(code, what))
                offset += (length + 3) & ~3


@dataclass(frozen=True)
class Link:
    name: str
    index: int
    group: int
    mtu: int
    flags: int
    has_kind: bool
    """Whether the link has a kind (IFLA_LINKINFO): bridges, veths, taps do; NICs do not."""


def dump_links() -> list[Link]:
    """Every link of the calling thread's namespace, with the few attributes the start-up
    path reads."""
    while True:
        links: list[Link] = []
        interrupted = False
        with RtnlSocket() as rtnl:
            for offset, length, msg_type, flags, data in rtnl.dump(RTM_GETLINK, _ifinfo()):
                interrupted |= bool(flags & NLM_F_DUMP_INTR)
                if msg_type == RTM_NEWLINK:
                    links.append(_parse_link(data, offset, length))
        if not interrupted:  # the kernel flags a dump that raced with a change
            return links


def _attributes(data: bytes, pos: int, end: int) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    while pos + 4 <= end:
        alen, kind = struct.unpack_from("=HH", data, pos)
        if alen < 4:
            break
        found[kind & 0x3FFF] = data[pos + 4 : pos + alen]
        pos += (alen + 3) & ~3
    return found


def _parse_link(data: bytes, offset: int, length: int) -> Link:
    _, _, index, flags, _ = _IFINFOMSG.unpack_from(data, offset + _NLMSGHDR.size)
    attrs = _attributes(data, offset + _NLMSGHDR.size + _IFINFOMSG.size, offset + length)

    def u32(kind: int) -> int:
        return struct.unpack("=I", attrs[kind][:4])[0] if kind in attrs else 0

    return Link(
        name=attrs.get(IFLA_IFNAME, b"").split(b"\0", 1)[0].decode(),
        index=index,
        group=u32(IFLA_GROUP),
        mtu=u32(IFLA_MTU),
        flags=flags,
        has_kind=IFLA_LINKINFO in attrs,
    )


def route_output_index(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int | None:
    """The index of the link a packet to `address` would leave by (a route lookup, like
    `ip route get`: nothing is sent); None when there is no route."""
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    body = _RTMSG.pack(family, address.max_prefixlen, 0, 0, 0, 0, 0, 0, 0)
    body += _attr(RTA_DST, address.packed)
    with RtnlSocket() as rtnl:
        header = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_GETROUTE, NLM_F_REQUEST, 1, 0)
        rtnl.sock.send(header + body)
        data = rtnl.sock.recv(1 << 16)
    length, msg_type, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, 0)
    if msg_type != RTM_NEWROUTE:
        return None  # NLMSG_ERROR: unreachable
    attrs = _attributes(data, _NLMSGHDR.size + _RTMSG.size, length)
    if RTA_OIF not in attrs:
        return None
    return struct.unpack("=I", attrs[RTA_OIF][:4])[0]


def raise_first(errors: list[NetlinkError]) -> None:
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise NetlinkError(first.errno or errno.EIO, f"{first.what}{more}")
