"""Creating and removing a planned fabric: the only place that changes kernel networking."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import socket
from collections.abc import Iterable
from typing import Any

from vdc_runtime.fabric import netns as nsutil
from vdc_runtime.fabric import nft, tunnels
from vdc_runtime.fabric.netlink import (
    Batch,
    NetlinkError,
    RtnlSocket,
    address_request,
    bridge_request,
    delete_group_request,
    delete_link_request,
    link_up_request,
    raise_first,
    set_link_request,
    veth_request,
)
from vdc_runtime.fabric.plan import NETNS_SYSCTLS, FabricPlan
from vdc_runtime.fabric.present import link_groups
from vdc_runtime.fabric.taps import create_tap
from vdc_runtime.ledger import Ledger

log = logging.getLogger("vdc.fabric")
LOOPBACK_IFINDEX = 1


class FabricError(RuntimeError):
    pass


def _raise(errors: list[NetlinkError], doing: str) -> None:
    if errors:
        details = "; ".join(str(e) for e in errors[:5])
        more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
        raise FabricError(f"{doing}: {details}{more}")


def _configure_new_netns() -> None:
    for key, value in NETNS_SYSCTLS:
        nsutil.set_sysctl(key, value)
    with RtnlSocket() as rtnl:
        batch = Batch()
        batch.set_link(link_up_request(LOOPBACK_IFINDEX), "lo up")
        _raise(rtnl.run(batch), "bringing lo up")


def _create_namespaces(plan: FabricPlan, ledger: Ledger) -> dict[str, int]:
    fds: dict[str, int] = {}
    for ns in plan.namespaces:
        try:
            fds[ns.name], _ = nsutil.create(
                ns.name,
                _configure_new_netns,
                claimed=lambda name=ns.name: ledger.record("netns", name=name),
            )
        except OSError as exc:
            for fd in fds.values():
                os.close(fd)
            raise FabricError(f"network namespace {ns.name}: {exc.strerror or exc}") from exc
    return fds


def _create_bridges(plan: FabricPlan, ledger: Ledger) -> None:
    if not plan.bridges:
        return
    ledger.record("links", group=plan.group, names=[b.name for b in plan.bridges])
    with RtnlSocket() as rtnl:
        batch = Batch()
        for bridge in plan.bridges:
            batch.new_link(
                bridge_request(bridge.name, mtu=plan.mtu, group=plan.group), f"bridge {bridge.name}"
            )
        _raise(rtnl.run(batch), "creating bridges")
        batch = Batch()
        for bridge in plan.bridges:
            if bridge.address is not None:
                batch.new_address(
                    address_request(socket.if_nametoindex(bridge.name), bridge.address),
                    f"address {bridge.address} on bridge {bridge.name}",
                )
        _raise(rtnl.run(batch), "adding bridge addresses")


def add_bridge_address(
    bridge: str, address: ipaddress.IPv4Interface | ipaddress.IPv6Interface
) -> None:
    """Add one more address to a bridge of this run (a BMC's); it goes with the bridge.

    Adding an address the bridge already has is not an error, so a node whose QEMU is
    restarted can announce its BMC address again.
    """
    with RtnlSocket() as rtnl:
        batch = Batch()
        what = f"address {address} on bridge {bridge}"
        batch.new_address(address_request(socket.if_nametoindex(bridge), address), what)
        raise_first(rtnl.run(batch, ignore=(errno.EEXIST,)))


def _create_veths(plan: FabricPlan, fds: dict[str, int], ledger: Ledger) -> None:
    veths = [(ns, v) for ns in plan.namespaces for v in ns.veths]
    if not veths:
        return
    ledger.record("links", group=plan.group, names=[v.host for _, v in veths])
    bridge_index = {b.name: socket.if_nametoindex(b.name) for b in plan.bridges}
    with RtnlSocket() as rtnl:
        batch = Batch()
        for ns, veth in veths:
            batch.new_link(
                veth_request(
                    veth.host,
                    veth.peer,
                    peer_netns_fd=fds[ns.name],
                    master_index=bridge_index[veth.bridge],
                    mtu=plan.mtu,
                    group=plan.group,
                    peer_mac=veth.mac,
                ),
                f"veth {veth.host} ({ns.name}/{veth.peer} on {veth.bridge})",
            )
        _raise(rtnl.run(batch), "creating veth pairs")


def _create_taps(plan: FabricPlan, ledger: Ledger) -> None:
    if not plan.taps:
        return
    ledger.record("links", group=plan.group, names=[t.name for t in plan.taps])
    for tap in plan.taps:
        try:
            create_tap(tap.name, tap.queues)
        except OSError as exc:
            raise FabricError(f"tap {tap.name} of node {tap.node}: {exc.strerror or exc}") from exc
    bridge_index = {b.name: socket.if_nametoindex(b.name) for b in plan.bridges}
    with RtnlSocket() as rtnl:
        batch = Batch()
        for tap in plan.taps:
            batch.set_link(
                set_link_request(
                    socket.if_nametoindex(tap.name),
                    master_index=bridge_index[tap.bridge],
                    mtu=plan.mtu,
                    group=plan.group,
                ),
                f"tap {tap.name} of node {tap.node} on {tap.bridge}",
            )
        _raise(rtnl.run(batch), "attaching taps")


def _configure_namespaces(plan: FabricPlan, fds: dict[str, int]) -> None:
    for ns in plan.namespaces:
        if not ns.veths:
            continue
        with nsutil.entered(fds[ns.name]), RtnlSocket() as rtnl:
            batch = Batch()
            for veth in ns.veths:
                index = socket.if_nametoindex(veth.peer)
                batch.set_link(link_up_request(index), f"{ns.name}/{veth.peer} up")
                for address in veth.addresses:
                    batch.new_address(
                        address_request(index, address),
                        f"address {address} on {ns.name}/{veth.peer}",
                    )
            _raise(rtnl.run(batch), f"addressing network namespace {ns.name}")


def _set_host_sysctls(plan: FabricPlan, ledger: Ledger) -> None:
    for key, value in plan.host_sysctls:
        old = nsutil.read_sysctl(key)
        if old is not None and old != value:
            ledger.record("sysctl", key=key, old=old)
            nsutil.write_sysctl(key, value)


async def build(plan: FabricPlan, ledger: Ledger) -> None:
    """Create every object of the plan; each is in the ledger before it exists."""
    namespaces = asyncio.create_task(asyncio.to_thread(_create_namespaces, plan, ledger))
    try:
        await asyncio.to_thread(_create_bridges, plan, ledger)
    finally:
        fds = await namespaces
    try:
        try:
            await asyncio.to_thread(tunnels.create, plan, ledger)
        except tunnels.TunnelError as exc:
            raise FabricError(str(exc)) from exc
        await asyncio.to_thread(_create_veths, plan, fds, ledger)
        await asyncio.to_thread(_create_taps, plan, ledger)
        await asyncio.to_thread(_configure_namespaces, plan, fds)
    finally:
        for fd in fds.values():
            os.close(fd)
    ledger.record("nft-table", name=plan.table)
    try:
        await nft.apply(nft.ruleset(plan))
    except nft.NftError as exc:
        raise FabricError(str(exc)) from exc
    await asyncio.to_thread(_set_host_sysctls, plan, ledger)


def _delete_links(groups: dict[int, set[str]]) -> list[str]:
    """Delete recorded host links, a whole group at once when the group is only ours.

    Only a link carrying the run's group is ours: a recorded name whose creation failed
    because the name was taken belongs to someone else and stays.
    """
    problems: list[str] = []
    present = link_groups()
    batch = Batch()
    for group, names in groups.items():
        members = {name for name, g in present.items() if g == group}
        if members and members <= names:
            batch.delete_link(delete_group_request(group), f"link group {group}")
            continue
        for name in sorted(members - names):
            problems.append(
                f"link {name} is in vdc's link group {group} but not in the ledger; kept"
            )
        for name in sorted(members & names):
            batch.delete_link(delete_link_request(name), f"link {name}")
    if batch:
        with RtnlSocket() as rtnl:
            problems += [str(e) for e in rtnl.run(batch, ignore=(errno.ENODEV,))]
    return problems


def delete_named_links(names: list[str]) -> list[str]:
    """Delete host links by name whatever their group (`--force` on same-named objects)."""
    present = link_groups()
    batch = Batch()
    for name in names:
        if name in present:
            batch.delete_link(delete_link_request(name), f"link {name}")
    if not batch:
        return []
    with RtnlSocket() as rtnl:
        return [str(e) for e in rtnl.run(batch, ignore=(errno.ENODEV,))]


def _restore_sysctls(entries: Iterable[dict[str, Any]], other_runs: bool) -> list[str]:
    problems = []
    for entry in entries:
        if entry["kind"] != "sysctl":
            continue
        if other_runs:
            problems.append(f"{entry['key']} left at its new value: another vdc run is using it")
            continue
        try:
            nsutil.write_sysctl(entry["key"], entry["old"])
        except OSError as exc:
            problems.append(f"restoring {entry['key']}: {exc}")
    return problems


async def teardown(entries: list[dict[str, Any]]) -> list[str]:
    """Undo the fabric entries of a ledger; returns the problems met (never raises)."""
    problems: list[str] = []
    for entry in entries:
        if entry["kind"] == "nft-table":
            try:
                await nft.delete_table(entry["name"], entry.get("family", "inet"))
            except nft.NftError as exc:
                problems.append(str(exc))
    groups: dict[int, set[str]] = {}
    for entry in entries:
        if entry["kind"] == "links":
            groups.setdefault(entry["group"], set()).update(entry["names"])
    if groups:
        problems += await asyncio.to_thread(_delete_links, groups)
    names = [e["name"] for e in entries if e["kind"] == "netns"]
    if names:
        problems += await asyncio.to_thread(_remove_namespaces, names)
    if any(e["kind"] == "sysctl" for e in entries):
        try:
            other_runs = bool(await nft.list_tables())
        except nft.NftError:
            other_runs = False
        problems += await asyncio.to_thread(_restore_sysctls, entries, other_runs)
    return problems


def _remove_namespaces(names: list[str]) -> list[str]:
    problems = []
    for name in names:
        try:
            nsutil.remove(name)
        except OSError as exc:
            problems.append(f"network namespace {name}: {exc}")
    return problems
