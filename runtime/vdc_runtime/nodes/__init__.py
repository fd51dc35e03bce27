"""Machines: one QEMU process per node.

The pure parts are importable from here: `plan_node` (everything about a node the effects
need), `qemu_argv` (its command line) and the host probes. `nodes.machine` runs them:
`nodes.process` the QEMU process, `nodes.power` its power over QMP.
"""

from vdc_runtime.nodes.host import (
    AccelError,
    choose_accel,
    find_ovmf,
    probe_accel,
    vhost_available,
)
from vdc_runtime.nodes.layout import (
    DriveLayout,
    HostFacts,
    NicLayout,
    NodeLayout,
    NumaNodeLayout,
    ShareLayout,
    plan_node,
)
from vdc_runtime.nodes.qemu_args import qemu_argv

__all__ = [
    "AccelError",
    "DriveLayout",
    "HostFacts",
    "NicLayout",
    "NodeLayout",
    "NumaNodeLayout",
    "ShareLayout",
    "choose_accel",
    "find_ovmf",
    "plan_node",
    "probe_accel",
    "qemu_argv",
    "vhost_available",
]
