"""The operator's status writes against the real API server: a write computed from an
older read of the VDC is refused and computed again, so no writer's condition undoes
another's (CI once saw RunnersRegistered stay False after the runners had registered: the
pod handler had written the conditions it read before the registration's write).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from kubernetes import config

from tests.e2e.conftest import Kube
from vdc_operator import builders
from vdc_operator.kube import Api

pytestmark = [pytest.mark.root, pytest.mark.slow]

NS = "default"


def _vdc(name: str) -> str:
    return json.dumps({
        "apiVersion": "vdc.dev/v1alpha1", "kind": "VirtualDataCenter",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"networks": [{"name": "n", "type": "internal"}]},
    })  # fmt: skip


async def _write(name: str, compute: Any) -> bool:
    api = Api()
    try:
        return await api.update_vdc_status(NS, name, compute)
    finally:
        await api.close()


def test_a_write_from_an_older_read_is_computed_again(crd: Kube) -> None:
    config.load_kube_config(str(crd.layout.kubeconfig))
    name = f"status-{uuid.uuid4().hex[:6]}"
    crd.apply(_vdc(name))
    reads: list[str] = []

    def compute(vdc: dict[str, Any]) -> dict[str, Any]:
        reads.append(vdc["metadata"]["resourceVersion"])
        if len(reads) == 1:
            # Another writer's conditions land between this read and this write.
            other = {"status": {"conditions": [
                {"type": "Other", "status": "True", "reason": "ByAnother",
                 "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}  # fmt: skip
            crd.run("patch", "vdc", name, "-n", NS, "--subresource=status", "--type=merge",
                    "-p", json.dumps(other))  # fmt: skip
        return {"conditions": builders.with_condition(vdc, "Mine", "True", "ByMe")}

    try:
        assert asyncio.run(_write(name, compute))
        assert len(reads) >= 2 and reads[0] != reads[1]
        # (Where the operator runs, its own conditions may be there too.)
        conditions = crd.get("vdc", name, "-n", NS)["status"]["conditions"]
        reasons = {c["type"]: c["reason"] for c in conditions}
        assert (reasons["Other"], reasons["Mine"]) == ("ByAnother", "ByMe")
        # Nothing new to say: nothing is written.
        assert not asyncio.run(_write(name, compute))
    finally:
        crd.run("delete", "vdc", name, "-n", NS, "--wait=true", "--timeout=120s")
