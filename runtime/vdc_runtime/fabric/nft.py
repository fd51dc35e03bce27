"""vdc's own nftables table: forwarding for its bridges and NAT for `use-nat` networks.

Everything lives in one table per run, so removing the table removes every rule, and
other tables (a firewall, Docker's iptables-nft chains) are never edited.
"""

from __future__ import annotations

import asyncio
import json

from vdc_runtime.fabric.plan import FabricPlan


class NftError(RuntimeError):
    pass


def ruleset(plan: FabricPlan) -> str:
    """The `nft -f` script that creates the run's table (pure; golden-tested).

    Placemat accepts forwarded traffic of internal and NAT networks in the FORWARD chain:
    with bridge netfilter on, even frames switched between two namespaces on one bridge
    pass that hook, and a host whose default forward policy is drop would lose them.
    """
    forward: list[str] = []
    postrouting: list[str] = []
    for bridge in plan.bridges:
        # A stretched bridge switches between its ports and the tunnel, whatever its kind.
        if bridge.kind == "internal" or bridge.nat or bridge.stretched:
            forward.append(f'iifname "{bridge.name}" accept')
            forward.append(f'oifname "{bridge.name}" accept')
        if bridge.nat and bridge.address is not None:
            family = "ip" if bridge.address.version == 4 else "ip6"
            net = bridge.address.network
            postrouting.append(f"{family} saddr {net} {family} daddr != {net} masquerade")
    # Declaring then deleting the table first makes the script replace a stale table of a
    # killed run instead of merging into it; nft applies the whole script atomically.
    lines = [f"table inet {plan.table}", f"delete table inet {plan.table}"]
    lines.append(f"table inet {plan.table} {{")
    lines.append("  chain forward {")
    lines.append("    type filter hook forward priority filter; policy accept;")
    lines += [f"    {rule}" for rule in forward]
    lines.append("  }")
    lines.append("  chain postrouting {")
    lines.append("    type nat hook postrouting priority srcnat; policy accept;")
    lines += [f"    {rule}" for rule in postrouting]
    lines.append("  }")
    # Filled at run time by `publish_rules` as BMCs come up (their addresses may be
    # announced by guests).
    lines.append(f"  chain {PUBLISH_CHAIN} {{")
    lines.append("    type nat hook prerouting priority dstnat; policy accept;")
    lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


PUBLISH_CHAIN = "publish"


def publish_rules(table: str, forwards: list[tuple[str, int, str, int]]) -> str:
    """The `nft -f` script that forwards (protocol, host port) to (IPv4 address, port)."""
    return "".join(
        f"add rule inet {table} {PUBLISH_CHAIN} meta nfproto ipv4 {proto} dport {port}"
        f" dnat ip to {address}:{target}\n"
        for proto, port, address, target in forwards
    )


async def _nft(*args: str, stdin: str | None = None) -> str:
    try:
        proc = await asyncio.create_subprocess_exec(
            "nft",
            *args,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError:
        raise NftError("nft not found: install the nftables package") from None
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    if proc.returncode != 0:
        raise NftError(f"nft {' '.join(args)}: {err.decode().strip()}")
    return out.decode()


async def apply(text: str) -> None:
    await _nft("-f", "-", stdin=text)


async def list_tables(family: str = "inet") -> set[str]:
    """Names of the tables of `family` whose name marks them as vdc's (the run's own is
    inet; faults add a bridge one of the same name)."""
    out = await _nft("-j", "list", "tables", family)
    tables = set()
    for item in json.loads(out).get("nftables", []):
        table = item.get("table")
        if table and table.get("name", "").startswith("vdc_"):
            tables.add(table["name"])
    return tables


async def delete_table(name: str, family: str = "inet") -> bool:
    """Delete the table; False if it did not exist."""
    try:
        await _nft("delete", "table", family, name)
    except NftError as exc:
        if "No such file or directory" in str(exc):
            return False
        raise
    return True
