"""Faults on a real guest and its BMC through `vdc run`: a hang the BMC does not see, a
NIC losing its carrier in the guest, a slow disk, a BMC that stops answering or fails,
and a power loss that ipmitool's power on ends."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.guest.build import GuestPaths
from tests.runtime.guests import answer, console, node_yaml, start, type_line, wait_power
from tests.runtime.harness import HostNetns, VdcRun
from tests.runtime.test_run_bmc import ADMIN, ipmitool

pytestmark = [pytest.mark.root, pytest.mark.slow]

BMC = "10.74.16.21"


def spec(guest: GuestPaths) -> str:
    node = node_yaml(
        "fm-1",
        guest,
        extra="interfaces:\n- {network: fmlan}\n"
        "volumes:\n- {kind: raw, name: data, size: 16M}\n"
        f"bmc: {{address: {BMC}}}\n",
    )
    return f"""\
kind: Network
name: fmlan
type: internal
---
kind: Network
name: fmbmc
type: bmc
address: 10.74.16.1/20
---
kind: BMC
users:
- {{name: {ADMIN[0]}, password: {ADMIN[1]}}}
---
{node}"""


def add(run: VdcRun, body: dict, expect: int = 201) -> dict:
    status, answer = run.api("/faults", "POST", body=body)
    assert status == expect, (status, answer)
    return answer


def clear(run: VdcRun, fault: dict) -> None:
    status, answer = run.api(f"/faults/{fault['id']}", "DELETE")
    assert status == 200, (status, answer)


def redfish(
    host: HostNetns, ca: Path, timeout: float = 3, attempts: int = 0
) -> subprocess.CompletedProcess[str]:
    """A Redfish client (sushy) asking for the system, in the test's host namespace.
    `attempts` > 0 caps sushy's tries of a request that times out (0: its default, 3 tries
    two seconds apart)."""
    code = (
        "import sushy, sys\n"
        f"auth = sushy.auth.BasicAuth('{ADMIN[0]}', '{ADMIN[1]}')\n"
        f"url = 'https://{BMC}/redfish/v1'\n"
        f"conn = sushy.connector.Connector(url, verify='{ca}', default_request_timeout={timeout},"
        f" server_side_retries={attempts})\n"
        f"c = sushy.Sushy(url, auth=auth, verify='{ca}', connector=conn)\n"
        "print(c.get_system('/redfish/v1/Systems/fm-1').power_state.value)\n"
    )
    argv = ["nsenter", f"--net=/run/netns/{host.name}", "--", sys.executable, "-c", code]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": ":".join(sys.path)})  # fmt: skip


def test_machine_and_bmc_faults(
    host: HostNetns, tmp_path: Path, guest: GuestPaths, running: list[VdcRun]
) -> None:
    run = start(host, tmp_path, running, spec(guest))
    ca = tmp_path / "data" / "bmc" / "ca.crt"
    con = console(run, "fm-1")
    con.wait_for("VDC-GUEST-DONE")

    # Hang: the guest's shell answers nothing, the BMC and the API still say On.
    hang = add(run, {"kind": "machine", "target": "fm-1", "effect": "hang"})
    mark = len(con.text)
    type_line(run, "fm-1", "echo HUNG-$((40+2))")
    assert "Chassis Power is on" in ipmitool(host, BMC, "power", "status")
    assert run.api("/nodes/fm-1")[1]["power_status"] == "On"
    assert "HUNG-42" not in con.text[mark:]
    clear(run, hang)
    answer(con, "HUNG-42", mark)  # typed while hung, run once it runs again

    # A NIC down: the guest sees its carrier go, and come back.
    mark = len(con.text)
    type_line(
        run, "fm-1", "ip link set eth0 up; sleep 1; echo CARRIER-$(cat /sys/class/net/eth0/carrier)"
    )
    answer(con, "CARRIER-1", mark)
    down = add(run, {"kind": "link", "target": "fm-1:eth0", "down": True})
    mark = len(con.text)
    type_line(run, "fm-1", "echo CARRIER-$(cat /sys/class/net/eth0/carrier)")
    answer(con, "CARRIER-0", mark)
    clear(run, down)
    mark = len(con.text)
    type_line(run, "fm-1", "echo CARRIER-$(cat /sys/class/net/eth0/carrier)")
    answer(con, "CARRIER-1", mark)

    # A slow disk: the volume is throttled to 10 requests a second, reads take their time.
    add(run, {"kind": "machine", "target": "fm-1", "effect": "slow-disk", "volume": "nope"}, 400)
    slow = add(run, {"kind": "machine", "target": "fm-1", "effect": "slow-disk",
                     "volume": "data", "iops": 5})  # fmt: skip
    clear(run, slow)

    # The BMC stops answering: ipmitool and a Redfish client time out; after clear they
    # answer again.
    assert redfish(host, ca).stdout.strip() == "On"
    silent = add(run, {"kind": "bmc", "target": "fm-1", "effect": "unresponsive"})
    # One try each: the default retries only make the same silence last longer (10 s of
    # ipmitool, 13 s of sushy).
    out = host.sh(["ipmitool", "-I", "lanplus", "-H", BMC, "-U", ADMIN[0], "-P", ADMIN[1],
                   "-C", "17", "-N", "1", "-R", "1", "power", "status"], check=False)  # fmt: skip
    assert "Chassis Power" not in out
    failed = redfish(host, ca, attempts=1)
    assert failed.returncode != 0 and "Timeout" in failed.stderr + failed.stdout, failed
    clear(run, silent)
    assert "Chassis Power is on" in ipmitool(host, BMC, "power", "status")
    assert redfish(host, ca).stdout.strip() == "On"

    # Errors: IPMI's Node Busy, Redfish's 503.
    errors = add(run, {"kind": "bmc", "target": "fm-1", "effect": "errors"})
    out = host.sh(["ipmitool", "-I", "lanplus", "-H", BMC, "-U", ADMIN[0], "-P", ADMIN[1],
                   "-C", "17", "-N", "2", "-R", "1", "power", "status"], check=False)  # fmt: skip
    assert "Chassis Power is" not in out
    refused = redfish(host, ca)
    assert refused.returncode != 0 and "503" in refused.stderr, refused
    clear(run, errors)

    # Power loss: QEMU gone, Off in the API; ipmitool's power on boots it afresh, and the
    # fault is over.
    boots = con.count("VDC-GUEST-READY")
    loss = add(run, {"kind": "machine", "target": "fm-1", "effect": "power-loss"})
    node = wait_power(run, "fm-1", "Off")
    assert node["pid"] is None
    assert "Chassis Power is off" in ipmitool(host, BMC, "power", "status")
    add(run, {"kind": "machine", "target": "fm-1", "effect": "hang"}, 409)
    assert [f["id"] for f in run.api("/faults")[1]] == [loss["id"]]
    ipmitool(host, BMC, "power", "on")
    con.wait_for("VDC-GUEST-READY", boots + 1)
    assert run.api("/nodes/fm-1")[1]["power_status"] == "On"
    deadline = time.monotonic() + 10
    while run.api("/faults")[1]:
        assert time.monotonic() < deadline, run.api("/faults")[1]
        time.sleep(0.2)

    # Left active: the run's SIGTERM undoes them (`running` checks for leftovers).
    add(run, {"kind": "bmc", "target": "fm-1", "effect": "unresponsive"})
    add(run, {"kind": "link", "target": "fm-1:eth0", "loss": "50%"})
