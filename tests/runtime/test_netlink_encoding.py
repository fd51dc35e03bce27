"""Our hand-encoded rtnetlink requests must decode, with pyroute2's own parser, to what we meant."""

import ipaddress
import socket

from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from vdc_runtime.fabric import netlink


def _decode(cls, body: bytes):
    header = b"\0" * 16  # nlmsghdr, whose length field pyroute2 takes from the buffer
    data = bytearray(header + body)
    data[0:4] = len(data).to_bytes(4, "little")
    msg = cls(bytes(data))
    msg.decode()
    return msg


def test_bridge_request_decodes():
    msg = _decode(ifinfmsg, netlink.bridge_request("br-a", mtu=1460, group=77))
    assert msg.get_attr("IFLA_IFNAME") == "br-a"
    assert msg.get_attr("IFLA_MTU") == 1460
    assert msg.get_attr("IFLA_GROUP") == 77
    assert msg.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND") == "bridge"
    assert msg["flags"] & netlink.IFF_UP and msg["change"] & netlink.IFF_UP


def test_bridge_request_without_mtu_leaves_kernel_default():
    msg = _decode(ifinfmsg, netlink.bridge_request("br-a", mtu=None, group=1))
    assert msg.get_attr("IFLA_MTU") is None


def test_veth_request_decodes_with_peer_in_namespace():
    body = netlink.veth_request(
        "vdcabc", "eth3", peer_netns_fd=9, master_index=42, mtu=1500, group=5,
        peer_mac="02:11:22:33:44:55",
    )  # fmt: skip
    msg = _decode(ifinfmsg, body)
    assert msg.get_attr("IFLA_IFNAME") == "vdcabc"
    assert msg.get_attr("IFLA_MASTER") == 42
    assert msg.get_attr("IFLA_GROUP") == 5
    info = msg.get_attr("IFLA_LINKINFO")
    assert info.get_attr("IFLA_INFO_KIND") == "veth"
    peer = info.get_attr("IFLA_INFO_DATA").get_attr("VETH_INFO_PEER")
    assert peer.get_attr("IFLA_IFNAME") == "eth3"
    assert peer.get_attr("IFLA_NET_NS_FD") == 9
    assert peer.get_attr("IFLA_MTU") == 1500
    assert peer.get_attr("IFLA_ADDRESS") == "02:11:22:33:44:55"
    assert peer["flags"] == 0  # the peer is brought up from inside its namespace


def test_ipv4_address_request_decodes():
    msg = _decode(ifaddrmsg, netlink.address_request(7, ipaddress.ip_interface("10.1.2.3/24")))
    assert msg["family"] == socket.AF_INET
    assert msg["prefixlen"] == 24
    assert msg["index"] == 7
    assert msg.get_attr("IFA_LOCAL") == "10.1.2.3"
    assert msg.get_attr("IFA_ADDRESS") == "10.1.2.3"


def test_ipv6_address_skips_duplicate_address_detection():
    msg = _decode(ifaddrmsg, netlink.address_request(3, ipaddress.ip_interface("fd00::5/64")))
    assert msg["family"] == socket.AF_INET6
    assert msg.get_attr("IFA_LOCAL") == "fd00::5"
    assert msg["flags"] & netlink.IFA_F_NODAD


def test_group_delete_request_decodes():
    msg = _decode(ifinfmsg, netlink.delete_group_request(1234))
    assert msg.get_attr("IFLA_GROUP") == 1234
    assert msg["index"] == 0 and msg.get_attr("IFLA_IFNAME") is None


def test_set_link_request_decodes():
    msg = _decode(ifinfmsg, netlink.set_link_request(12, master_index=3, mtu=1400, group=9))
    assert msg["index"] == 12
    assert msg.get_attr("IFLA_MASTER") == 3
    assert msg.get_attr("IFLA_MTU") == 1400
    assert msg.get_attr("IFLA_GROUP") == 9
    assert msg["flags"] & netlink.IFF_UP
