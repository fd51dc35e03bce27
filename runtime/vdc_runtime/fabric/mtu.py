"""MTU detection as Placemat does it: the uplink's MTU, else the smallest physical one.

Clouds such as GCP use 1460; bridges left at 1500 would drop full-size packets leaving
the host, so every bridge, veth and guest NIC adopts the uplink's MTU.
"""

from __future__ import annotations

import ipaddress

from vdc_runtime.fabric.netlink import dump_links, route_output_index

# RFC 8155's anycast address: a route lookup toward it finds the uplink without sending.
PROBE_V4 = "192.0.0.10"
PROBE_V6 = "2001:1::2"
IFF_UP = 0x1
IFF_LOOPBACK = 0x8


def choose_mtu(route_mtus: list[int], physical_up_mtus: list[int]) -> int | None:
    if route_mtus:
        return min(route_mtus)
    if physical_up_mtus:
        return min(physical_up_mtus)
    return None


def detect_mtu() -> int | None:
    """The MTU of the calling thread's namespace's uplink, as Placemat chose it."""
    links = dump_links()
    mtus = {link.index: link.mtu for link in links}
    route_mtus: list[int] = []
    for probe in (PROBE_V4, PROBE_V6):
        index = route_output_index(ipaddress.ip_address(probe))
        if index in mtus:
            route_mtus = [mtus[index]]
            break
    # A link with no kind is a real device; sysfs cannot tell, as it shows the namespace it
    # was mounted in, not ours.
    physical = [
        link.mtu
        for link in links
        if not link.has_kind and link.flags & IFF_UP and not link.flags & IFF_LOOPBACK
    ]
    return choose_mtu(route_mtus, physical)
