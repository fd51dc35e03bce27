"""MTU detection (Placemat's rule) in real namespaces, against pyroute2 as an oracle."""

from __future__ import annotations

import pytest

from tests.runtime.harness import HostNetns, call_in_netns
from vdc_runtime.fabric.mtu import IFF_LOOPBACK, IFF_UP, PROBE_V4, PROBE_V6, choose_mtu, detect_mtu

pytestmark = pytest.mark.root


def pyroute2_mtu() -> int | None:
    """The same rule through pyroute2's full API, as vdc computed it before."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        links = ipr.get_links()
        mtus = {link["index"]: link.get_attr("IFLA_MTU") for link in links}
        route_mtus: list[int] = []
        for probe in (PROBE_V4, PROBE_V6):
            try:
                routes = ipr.route("get", dst=probe)
            except Exception:
                continue
            route_mtus = [mtus[r.get_attr("RTA_OIF")] for r in routes if r.get_attr("RTA_OIF")]
            if route_mtus:
                break
        physical = [
            link.get_attr("IFLA_MTU")
            for link in links
            if link.get_attr("IFLA_LINKINFO") is None
            and link["flags"] & IFF_UP
            and not link["flags"] & IFF_LOOPBACK
        ]
    return choose_mtu(route_mtus, physical)


def test_no_uplink_no_mtu(host: HostNetns) -> None:
    assert call_in_netns(host.name, detect_mtu) is None
    assert call_in_netns(host.name, pyroute2_mtu) is None


@pytest.mark.parametrize("mtu", [1400, 9000])
def test_the_uplink_route_decides(host: HostNetns, mtu: int) -> None:
    # Two links, the default route through the one with the odd MTU: that one wins.
    peer = HostNetns()
    with peer:
        for name, size, prefix in (("up0", mtu, "192.0.2"), ("side0", 1500, "198.51.100")):
            host.sh(["ip", "link", "add", name, "mtu", str(size), "type", "veth", "peer",
                     "name", name + "p", "netns", peer.name])  # fmt: skip
            host.sh(["ip", "addr", "add", f"{prefix}.2/24", "dev", name])
            host.sh(["ip", "link", "set", name, "up"])
            peer.sh(["ip", "link", "set", name + "p", "up"])
        host.sh(["ip", "route", "add", "default", "via", "192.0.2.1"])
        assert call_in_netns(host.name, detect_mtu) == mtu
        assert call_in_netns(host.name, pyroute2_mtu) == mtu
