"""What the REST API shows of a running data center: pure JSON views of its networks,
namespaces, nodes and BMCs (Placemat's keys, then vdc's extensions)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vdc_runtime.fabric import netns as nsutil
from vdc_runtime.nodes.states import MachineState, Power

if TYPE_CHECKING:
    from vdc_runtime.datacenter import DataCenterRun
    from vdc_runtime.nodes.machine import Machine


def faults(run: DataCenterRun) -> list[dict[str, Any]]:
    """The active faults, oldest first."""
    return run.faults.list() if run.faults is not None else []


def bmc(run: DataCenterRun, node: str) -> dict[str, Any] | None:
    """A node's BMC: address, where it came from, state, endpoints."""
    return run.bmc.endpoint_json(node) if run.bmc is not None else None


def networks(run: DataCenterRun) -> list[dict[str, Any]]:
    """Placemat's network status, with the bridge and its MTU."""
    mtu = run.plan.mtu if run.plan else None
    return [
        {
            "name": n.name,
            "type": n.type,
            "use_nat": n.use_nat,
            "address": str(n.address) if n.address else None,
            "bridge": n.name,
            "mtu": mtu,
        }
        for n in run.dc.networks
    ]


def group(run: DataCenterRun) -> dict[str, Any] | None:
    """The group this run builds, its tunnels and peers; None when it builds everything."""
    if run.options.group is None:
        return None
    tunnels = run.tunnels
    return {
        "name": run.options.group.name,
        "groups": list(run.layout.order),
        "local": tunnels.local if tunnels else None,
        "port": tunnels.port if tunnels else run.options.group.port,
        "mtu": run.plan.mtu if run.plan else None,
        "peers": dict(run.peers),
        "home": [n for n, g in run.layout.home.items() if g == run.options.group.name],
        "tunnels": [
            {"network": t.bridge, "vni": t.vni, "link": t.name, "peers": list(t.peers)}
            for t in (tunnels.tunnels if tunnels else ())
        ],
    }


def namespaces(run: DataCenterRun) -> list[dict[str, Any]]:
    """Each network namespace: its interfaces, init scripts and apps."""
    out = []
    for ns in run.dc.netns:
        plan = (
            next((p for p in run.plan.namespaces if p.name == ns.name), None) if run.plan else None
        )
        interfaces = [
            {
                "name": f"eth{i}",
                "network": iface.network,
                "addresses": [str(a) for a in iface.addresses],
                "host_link": plan.veths[i].host if plan else None,
                "mac": plan.veths[i].mac if plan else None,
            }
            for i, iface in enumerate(ns.interfaces)
        ]
        running = run.apps.apps if run.apps else []
        apps = [a.as_json() for a in running if a.netns == ns.name]
        out.append(
            {
                "name": ns.name,
                "path": str(nsutil.netns_path(ns.name)),
                "interfaces": interfaces,
                "init_scripts": [str(s) for s in ns.init_scripts],
                "apps": apps,
            }
        )
    return out


def machine_state(machine: Machine) -> str:
    """A machine's state as a word of the VirtualDataCenter's node phases where they say
    more (ready, booting, off), so that `vdc graph` and `kubectl vdc graph` colour alike."""
    if machine.state != MachineState.RUNNING:
        return "off" if machine.state == MachineState.STOPPED else str(machine.state)
    if machine.power != Power.ON:
        return "off" if machine.power == Power.OFF else "failed"
    return "ready" if machine.ready else "booting"


def topology(run: DataCenterRun) -> dict[str, Any]:
    """The whole data center's graph (`vdc graph --endpoint`), with the states of the
    machines this run has: one group's run leaves the other groups' without."""
    # Imported when asked: the graph package brings every renderer, which no start-up needs.
    from vdc_runtime.graph import model
    from vdc_runtime.graph import topology as graph

    states = {name: machine_state(m) for name, m in run.machines.items()}
    return model.to_json(graph.build(run.spec, states=states))


def node(machine: Machine, power: str, bmc: dict[str, Any] | None = None) -> dict[str, Any]:
    """Placemat's NodeStatus (same keys) plus vdc's extensions."""
    node, layout = machine.node, machine.layout
    smbios = node.smbios
    return {
        "name": node.name,
        "taps": {nic.network: nic.tap for nic in layout.nics},
        "volumes": [v.name for v in node.volumes],
        "cpu": node.cpus,  # Placemat always said 0 here
        "memory": node.memory,
        "uefi": node.uefi,
        "tpm": node.tpm,
        "smbios": {
            "manufacturer": smbios.manufacturer if smbios else "",
            "product": smbios.product if smbios else "",
            "serial": layout.serial,
        },
        "power_status": power,
        "socket_path": str(layout.console_socket),
        # Extensions.
        "state": machine.state,
        "ready": machine.ready,
        "ready_at": machine.ready_at,
        "boots": machine.boots,
        # The firmware running now, and the one the next power on, restart or reset boots.
        "secure_boot": machine.secure_boot,
        "secure_boot_next": machine.secure_boot_next,
        "failure": machine.failure,
        "interfaces": [
            {"network": nic.network, "tap": nic.tap, "mac": nic.mac, "queues": nic.queues}
            for nic in layout.nics
        ],
        "accel": layout.host.accel,
        "console_log": str(layout.console_log),
        "qmp_socket": str(layout.qmp_socket),
        "bmc_address": bmc["address"] if bmc else machine.bmc_address,
        "bmc": bmc,
        "pid": machine.pid,
        "uptime_seconds": machine.uptime(),
        "restarts": machine.restarts,
        "power_transitions": [
            {"at": t.at, "power": t.power, "cause": t.cause} for t in machine.transitions
        ],
    }
