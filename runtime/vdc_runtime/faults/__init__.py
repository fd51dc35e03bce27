"""Faults on demand: links cut, lossy, slow or delayed, partitions, machines that lose
their power, hang or get a slow disk, BMCs that stop answering, answer late or fail.

`model` checks what a client asks for, `plan` turns it into nftables, tc, ip and QMP
(pure), `manager` applies it whole and undoes it, by hand, in time, or at teardown.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from vdc_runtime.faults.manager import ActiveFault, FaultApplyError, FaultManager, describe
from vdc_runtime.faults.plan import Port, Topology
from vdc_runtime.spec.faults import FaultConflict, FaultError, parse_fault

if TYPE_CHECKING:
    from vdc_runtime.bmc.service import BmcManager
    from vdc_runtime.fabric.plan import FabricPlan
    from vdc_runtime.nodes.machine import Machine


def topology(
    plan: FabricPlan,
    machines: Mapping[str, Machine],
    bmc: BmcManager | None,
    netns_dir: Path,
) -> Topology:
    """What faults can name in the run as it is now (BMC addresses come and go)."""
    namespaces = {
        ns.name: tuple(
            Port(ns.name, i, v.bridge, v.host, netns=ns.name, inner=v.peer)
            for i, v in enumerate(ns.veths)
        )
        for ns in plan.namespaces
    }
    nodes: dict[str, tuple[Port, ...]] = {}
    if machines:
        # Here, not above: a run without machines never loads their modules.
        from vdc_runtime.nodes.qemu_args import nic_device_id

        nodes = {
            name: tuple(
                Port(name, nic.index, nic.network, nic.tap, device=nic_device_id(nic.index))
                for nic in m.layout.nics
            )
            for name, m in machines.items()
        }
    volumes = {name: tuple(d.name for d in m.layout.drives) for name, m in machines.items()}
    bmcs = {}
    if bmc is not None:
        bmcs = {n: e.address for n, e in bmc.endpoints.items() if e.state == "listening"}
    return Topology(
        table=plan.table,
        namespaces=namespaces,
        nodes=nodes,
        volumes=volumes,
        bmcs=bmcs,
        bmc_ports=(bmc.ipmi_port, bmc.redfish_port) if bmc is not None else (623, 443),
        netns_dir=netns_dir,
    )


__all__ = [
    "ActiveFault",
    "FaultApplyError",
    "FaultConflict",
    "FaultError",
    "FaultManager",
    "Port",
    "Topology",
    "describe",
    "parse_fault",
    "topology",
]  # fmt: skip
