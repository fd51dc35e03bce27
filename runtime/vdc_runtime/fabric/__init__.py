"""The network half of a data center: bridges, namespaces, veths, NAT."""

from vdc_runtime.fabric.build import (
    FabricError,
    add_bridge_address,
    build,
    delete_named_links,
    teardown,
)
from vdc_runtime.fabric.mtu import detect_mtu
from vdc_runtime.fabric.plan import FabricPlan, Tunnels, plan_fabric, plan_tunnels, run_identity

__all__ = [
    "FabricError",
    "FabricPlan",
    "Tunnels",
    "add_bridge_address",
    "build",
    "delete_named_links",
    "detect_mtu",
    "plan_fabric",
    "plan_tunnels",
    "run_identity",
    "teardown",
]
