"""vdc's Kubernetes API, the VirtualDataCenter resource: its spec (`spec`: the Placemat
models as lists in camelCase, file sources, pod settings, runners), its status (`status`),
the CRD's group, names and printer columns (here), the one camelCase base of the models only
Kubernetes reads (`base`), the Placemat-to-CR converter
(`convert`). The CRD (vdc_operator.crd) is generated from this package alone."""

from vdc_runtime.resource.spec import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
)

PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Ready", "type": "string", "jsonPath": ".status.ready",
     "description": "ready nodes / all nodes"},
    {"name": "Accel", "type": "string", "jsonPath": ".status.accel",
     "description": "KVM, or TCG (software emulation)"},
    {"name": "Groups", "type": "string", "jsonPath": ".status.readyGroups",
     "description": "groups running / all groups, in a VDC of several"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
]  # fmt: skip
"""What `kubectl get vdc` shows."""

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "PRINTER_COLUMNS",
    "SHORT_NAMES",
    "SINGULAR",
    "VERSION",
]
