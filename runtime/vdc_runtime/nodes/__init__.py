"""Machines: one QEMU process per node.

The pure parts are importable from here: `plan_node` (everything about a node the effects
need), `qemu_argv` (its command line) and the host probes. `nodes.machine` runs them:
`nodes.process` the QEMU process, `nodes.power` its power over QMP.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
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

_FROM = {
    "host": ("AccelError", "choose_accel", "find_ovmf", "probe_accel", "vhost_available"),
    "layout": (
        "DriveLayout",
        "HostFacts",
        "NicLayout",
        "NodeLayout",
        "NumaNodeLayout",
        "ShareLayout",
        "plan_node",
    ),
    "qemu_args": ("qemu_argv",),
}


def __getattr__(name: str) -> object:
    # Loaded when asked for: the API's views read only `nodes.states`, and a run without
    # machines never plans one.
    import importlib

    for module, names in _FROM.items():
        if name in names:
            return getattr(importlib.import_module(f"vdc_runtime.nodes.{module}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
