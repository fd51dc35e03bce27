"""VirtualDataCenterSnapshots (issue 2-6): a running VDC is snapshotted into a claim,
deleted, and a new VDC starts from the snapshot (spec.restoreFrom): Ready, with its guest's
RAM as it was and its uptime carried on, without booting again.

The claim is a hostPath PersistentVolume of the test's own (the e2e cluster has no storage
provisioner), bound to the claim the VDCs name in spec.pod.snapshotClaim.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import Kube
from tests.e2e.test_operator import (
    EXAMPLE,
    NS,
    READY_TIMEOUT,
    plugin,
    pods_of,
    qemus,
    vdc,
    wait_ready,
)

pytestmark = [pytest.mark.root, pytest.mark.slow]

CLAIM = "vdc-e2e-snapshots"
VOLUME_DIR = Path("/var/lib/vdc-e2e/snapshots")
SOURCE, RESTORED, SNAPSHOT = "snapsrc", "snaprestored", "snap1"
NODE = "sn-worker-1"


@pytest.fixture
def claim(operator: Kube) -> Iterator[str]:
    """A claim bound to a hostPath volume, and nothing of either left afterwards."""
    shutil.rmtree(VOLUME_DIR, ignore_errors=True)
    volume = {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": CLAIM},
        "spec": {
            "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"],
            "storageClassName": CLAIM, "persistentVolumeReclaimPolicy": "Retain",
            "hostPath": {"path": str(VOLUME_DIR), "type": "DirectoryOrCreate"},
            "claimRef": {"namespace": NS, "name": CLAIM},
        },
    }  # fmt: skip
    pvc = {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": CLAIM, "namespace": NS},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": CLAIM,
                 "resources": {"requests": {"storage": "10Gi"}}},
    }  # fmt: skip
    operator.apply(json.dumps(volume) + "\n---\n" + json.dumps(pvc))
    try:
        yield CLAIM
    finally:
        for kind, name in (("vdcsnap", SNAPSHOT), ("vdc", RESTORED), ("vdc", SOURCE)):
            operator.call("delete", kind, name, "-n", NS, "--ignore-not-found", "--wait=true",
                          "--timeout=180s")  # fmt: skip
        operator.call("delete", "pvc", CLAIM, "-n", NS, "--wait=true", "--timeout=60s")
        operator.call("delete", "pv", CLAIM, "--wait=true", "--timeout=60s")
        shutil.rmtree(VOLUME_DIR, ignore_errors=True)


def lab(name: str, restore: str | None = None) -> str:
    """The quick start's Secret and VDC, with one worker, keeping snapshots in the claim."""
    docs = list(yaml.safe_load_all(EXAMPLE.read_text()))
    body = next(d for d in docs if d["kind"] == "VirtualDataCenter")
    body["metadata"]["name"] = name
    spec = body["spec"]
    spec["nodes"] = [dict(spec["nodes"][0], name=NODE)]
    spec["files"] = [f for f in spec["files"] if "00-12" not in f["path"]]
    spec["pod"] = {"snapshotClaim": CLAIM}
    if restore:
        spec["restoreFrom"] = {"snapshot": restore}
    secret = next(d for d in docs if d["kind"] == "Secret")
    return json.dumps(secret) + "\n---\n" + json.dumps(body)


def agent_exec(kube: Kube, vdc_name: str, *command: str) -> str:
    (pod,) = pods_of(kube, vdc_name)
    return kube.run("exec", "-n", NS, pod["metadata"]["name"], "-c", "agent", "--", *command)


def type_line(kube: Kube, vdc_name: str, line: str) -> None:
    """A line typed into the guest's shell on its serial console."""
    path = json.loads(agent_exec(kube, vdc_name, "vdc", "node", "show", NODE))["socket_path"]
    script = (
        "import socket, sys, time; s = socket.socket(socket.AF_UNIX);"
        " s.connect(sys.argv[1]); s.sendall(sys.argv[2].encode() + b'\\r'); time.sleep(1)"
    )
    agent_exec(kube, vdc_name, "python3", "-c", script, path, line)


def console_match(kube: Kube, vdc_name: str, pattern: str) -> re.Match[str]:
    deadline = time.monotonic() + 90
    text = ""
    while time.monotonic() < deadline:
        log = plugin(kube, "console-log", vdc_name, NODE, "-n", NS)
        text = log.stdout
        found = re.search(pattern, text)
        if found:
            return found
        time.sleep(2)
    raise AssertionError(f"{pattern!r} not on {vdc_name}'s console:\n{text[-2000:]}")


def snapshot_body(kube: Kube) -> dict[str, Any]:
    return kube.get("vdcsnap", SNAPSHOT, "-n", NS)  # type: ignore[no-any-return]


def events_of(kube: Kube, uid: str) -> list[str]:
    found = kube.get("events", "-n", NS, "--field-selector", f"involvedObject.uid={uid}")
    return [e["reason"] for e in found["items"]]


def test_a_vdc_starts_from_a_snapshot_of_another(claim: str, operator: Kube) -> None:
    kube = operator
    kube.apply(lab(SOURCE))
    wait_ready(kube, SOURCE)
    token = secrets.token_hex(6)
    type_line(
        kube, SOURCE, f"echo {token} > /tmp/token; echo SAVED-$(cut -d' ' -f1 /proc/uptime)-END"
    )
    saved_uptime = float(console_match(kube, SOURCE, r"SAVED-([0-9.]+)-END")[1])

    snapshot = {"apiVersion": "vdc.dev/v1alpha1", "kind": "VirtualDataCenterSnapshot",
                "metadata": {"name": SNAPSHOT, "namespace": NS},
                "spec": {"source": {"name": SOURCE}}}  # fmt: skip
    kube.apply(json.dumps(snapshot))
    kube.wait_for(lambda: (snapshot_body(kube).get("status") or {}).get("phase")
                  in ("Ready", "Failed"), "the snapshot to be saved", 300)  # fmt: skip
    body = snapshot_body(kube)
    status = body["status"]
    assert status["phase"] == "Ready", status
    assert status["claimName"] == CLAIM and status["expectedParts"] == ["all"]
    assert status["machines"] == 1 and status["sizeBytes"] > 0 and status["seconds"] > 0
    path = status["parts"]["all"]["path"]
    assert path == f"{SOURCE}/all/{body['metadata']['uid']}"
    assert (VOLUME_DIR / path / "manifest.json").is_file()
    assert {"PartSaved", "Saved"} <= set(events_of(kube, body["metadata"]["uid"]))
    listed = kube.run("get", "vdcsnap", "-n", NS)
    assert re.search(rf"{SNAPSHOT}\s+{SOURCE}\s+Ready\s+\S+\s+1\s", listed), listed
    # The source's machine runs on after the save.
    type_line(kube, SOURCE, "echo AFTER-SAVE-$(cat /tmp/token)-END")
    console_match(kube, SOURCE, rf"AFTER-SAVE-{token}-END")
    # Its part stays Ready (the agent's own earlier writes, coming back through its watch,
    # are not taken for a save that died).
    later = snapshot_body(kube)["status"]
    assert later["phase"] == "Ready" and later["parts"]["all"]["phase"] == "Ready", later

    kube.run("delete", "vdc", SOURCE, "-n", NS, "--wait=true", "--timeout=180s")
    kube.wait_for(lambda: not qemus("sn-worker-"), "the source's QEMU to end", 60)

    started = time.monotonic()
    kube.apply(lab(RESTORED, restore=SNAPSHOT))
    wait_ready(kube, RESTORED)
    ready_after = time.monotonic() - started
    type_line(kube, RESTORED, "echo TOKEN-$(cat /tmp/token)-$(cut -d' ' -f1 /proc/uptime)-END")
    found = console_match(kube, RESTORED, r"TOKEN-(\w*)-([0-9.]+)-END")
    assert found[1] == token, "the guest's RAM was not restored"
    assert float(found[2]) > saved_uptime, "the guest booted again"
    log = plugin(kube, "console-log", RESTORED, NODE, "-n", NS).stdout
    assert "VDC-GUEST-READY" not in log, "the restored guest booted"
    print(f"restored VDC Ready {ready_after:.0f} s after apply (ready timeout {READY_TIMEOUT})")


def test_a_restore_waits_for_its_snapshot(claim: str, operator: Kube) -> None:
    """A VDC naming a snapshot that does not exist (yet) waits, saying so, with no pod."""
    kube = operator
    kube.apply(lab(RESTORED, restore="not-there"))

    def says_waiting() -> bool:
        status = vdc(kube, RESTORED).get("status") or {}
        return status.get("phase") == "Pending" and "not-there does not exist" in (
            status.get("message") or ""
        )

    kube.wait_for(says_waiting, "the VDC to wait for its snapshot", 60)
    assert pods_of(kube, RESTORED) == []
