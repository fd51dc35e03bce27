"""What an earlier run of the same spec left in the kernel, found and removed by name
(`vdc run --force`): objects that no ledger names, because the ledger is another run
dir's or gone. Only this spec's objects are touched, so other runs are safe.

`find` runs at every start, before the first kernel object is made, so it reads the links
with `netlink`'s dump (see that module for why); removing them is off that path."""

from __future__ import annotations

import asyncio
import contextlib

from vdc_runtime.fabric import netlink, nft
from vdc_runtime.fabric import netns as nsutil
from vdc_runtime.fabric.build import delete_named_links, teardown
from vdc_runtime.fabric.plan import TapPlan, plan_fabric, tunnel_name
from vdc_runtime.spec import DataCenter
from vdc_runtime.spec.identity import tap_name


def planned_links(dc: DataCenter, group: int, table: str) -> list[str]:
    """Every host link name this spec makes; tap names follow from node names alone, and a
    bridge's VXLAN port (when its network is stretched) from the bridge's name."""
    taps = tuple(
        TapPlan(name=tap_name(node.name, i), bridge=iface.network, queues=1, node=node.name)
        for node in dc.nodes
        for i, iface in enumerate(node.interfaces)
    )
    links = plan_fabric(dc, mtu=None, group=group, table=table, taps=taps).links
    return links + [tunnel_name(n.name) for n in dc.networks]


def _kernel_conflicts(dc: DataCenter, group: int, table: str) -> list[str]:
    wanted_netns = {ns.name for ns in dc.netns}
    found = [f"network namespace {n}" for n in sorted(nsutil.list_netns() & wanted_netns)]
    links = {link.name for link in netlink.dump_links()} & set(planned_links(dc, group, table))
    return found + [f"link {name}" for name in sorted(links)]


async def find(dc: DataCenter, group: int, table: str) -> list[str]:
    """The objects this spec would create that already exist, described."""
    found = await asyncio.to_thread(_kernel_conflicts, dc, group, table)
    with contextlib.suppress(nft.NftError):
        for family in ("inet", "bridge"):
            if table in await nft.list_tables(family):
                found.append(f"nftables table {family} {table}")
    return found


async def remove(dc: DataCenter, group: int, table: str) -> list[str]:
    """Remove them; returns the problems met (each already logged by nobody)."""
    problems = await teardown(
        [
            {"kind": "nft-table", "name": table},
            {"kind": "nft-table", "name": table, "family": "bridge"},  # faults'
            *({"kind": "netns", "name": ns.name} for ns in dc.netns),
        ]
    )
    problems += await asyncio.to_thread(delete_named_links, planned_links(dc, group, table))
    return problems


__all__ = ["find", "planned_links", "remove"]
