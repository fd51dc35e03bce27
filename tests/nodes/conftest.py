from pathlib import Path
from typing import Any

from vdc_runtime.nodes.layout import DriveLayout, HostFacts, NodeLayout, plan_node
from vdc_runtime.spec import Node

RUN = Path("/run/vdc")
DATA = Path("/var/lib/vdc")
LOGS = DATA / "logs"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
OVMF_SECURE_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
OVMF_SECURE_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")

TCG = HostFacts(
    accel="tcg",
    vhost=False,
    mtu=None,
    ovmf_code=OVMF_CODE,
    ovmf_vars_template=OVMF_VARS,
    ovmf_secure_code=OVMF_SECURE_CODE,
    ovmf_secure_vars_template=OVMF_SECURE_VARS,
)
KVM = HostFacts(
    accel="kvm", vhost=True, mtu=1460, ovmf_code=OVMF_CODE, ovmf_vars_template=OVMF_VARS
)


def make_node(**spec: Any) -> Node:
    """A Node from YAML-style keys (`boot-order`), as the loader would build it."""
    spec.setdefault("cpu", 1)
    return Node.model_validate(spec, by_alias=True, by_name=False)


def layout_of(
    node: Node,
    *,
    drives: tuple[DriveLayout, ...] = (),
    host: HostFacts = TCG,
    run_dir: Path = RUN,
    data_dir: Path = DATA,
) -> NodeLayout:
    return plan_node(
        node,
        run_dir=run_dir,
        data_dir=data_dir,
        log_dir=data_dir / "logs",
        drives=drives,
        host=host,
    )


def volume_drive(node: str, name: str, kind: str, fmt: str | None, **kw: Any) -> DriveLayout:
    """A drive where the volume module puts it: <data>/volumes/<node>/<name>.img."""
    return DriveLayout(
        name=name,
        kind=kind,
        path=DATA / "volumes" / node / f"{name}.img",
        format=fmt,
        cache=kw.get("cache", "none"),
        read_only=kw.get("read_only", False),
    )
