"""MTU detection as Placemat does it: the uplink's MTU, else the smallest physical one.

Clouds such as GCP use 1460; bridges left at 1500 would drop full-size packets leaving
the host, so every bridge, veth and guest NIC adopts the uplink's MTU.
"""

from __future__ import annotations

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
    from pyroute2 import IPRoute  # its import is slow; only this probe needs the full API

    with IPRoute() as ipr:
        mtus = {link["index"]: link.get_attr("IFLA_MTU") for link in ipr.get_links()}
        route_mtus: list[int] = []
        for probe in (PROBE_V4, PROBE_V6):
            try:
                routes = ipr.route("get", dst=probe)
            except Exception:
                continue
            route_mtus = [
                mtus[r.get_attr("RTA_OIF")] for r in routes if r.get_attr("RTA_OIF") in mtus
            ]
            if route_mtus:
                break
        # A link with no kind (no IFLA_LINKINFO) is a real device; sysfs cannot tell, as it
        # shows the namespace it was mounted in, not ours.
        physical = [
            link.get_attr("IFLA_MTU")
            for link in ipr.get_links()
            if link.get_attr("IFLA_LINKINFO") is None
            and link["flags"] & IFF_UP
            and not link["flags"] & IFF_LOOPBACK
        ]
    return choose_mtu(route_mtus, physical)
