"""`vdc graph --endpoint`: the picture of a running quick start, from its API, with each
machine's state."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.runtime.harness import HostNetns, VdcRun
from vdc_runtime.graph import model, topology
from vdc_runtime.spec import load_files

pytestmark = pytest.mark.root

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart.yml"
VDC = [sys.executable, "-m", "vdc_runtime.cli"]
ENDPOINT = "http://127.0.0.1:10808"
SVG = "{http://www.w3.org/2000/svg}"


def test_graph_of_a_running_quickstart(
    host: HostNetns, tmp_path: Path, running: list[VdcRun]
) -> None:
    run = VdcRun(host, [QUICKSTART], tmp_path / "run").start()
    running.append(run)
    run.wait_ready(120)
    drawn = host.sh([*VDC, "graph", "--endpoint", ENDPOINT, "--format", "json"])
    graph = model.from_json(json.loads(drawn))
    # The whole topology, as the spec file draws it, with the machines' states.
    spec = topology.build(load_files([QUICKSTART]), ENDPOINT,
                          {"worker-1": "ready", "worker-2": "ready"})  # fmt: skip
    assert graph == spec

    host.sh([*VDC, "node", "action", "stop", "worker-2"])
    svg = ET.fromstring(host.sh([*VDC, "graph", "--endpoint", ENDPOINT, "--title", "lab"]))
    fills = {
        g.find(f"{SVG}text").text: g.find(f"{SVG}rect").get("fill")
        for g in svg.iter(f"{SVG}g") if g.get("class") == "machine"
    }  # fmt: skip
    ready, off = model.STATE_COLOURS["ready"], model.STATE_COLOURS["off"]
    assert fills == {"worker-1 [ready]": ready, "worker-2 [off]": off}
    assert run.stop() == 0, run.output
