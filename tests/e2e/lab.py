"""A one-worker VDC made from the quick start, and its guest's serial console driven
through the agent: for the e2e tests that need a guest to answer."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import yaml

from tests.e2e.conftest import Kube
from tests.e2e.test_operator import EXAMPLE, NS, plugin, pods_of


def one_worker(name: str, node: str, **spec: Any) -> str:
    """The quick start's Secret and VDC `name`, with one worker named `node` and `spec`
    added to its spec."""
    docs = list(yaml.safe_load_all(EXAMPLE.read_text()))
    body = next(d for d in docs if d["kind"] == "VirtualDataCenter")
    body["metadata"]["name"] = name
    base = body["spec"]
    base["nodes"] = [dict(base["nodes"][0], name=node)]
    base["files"] = [f for f in base["files"] if "00-12" not in f["path"]]
    base.update(spec)
    secret = next(d for d in docs if d["kind"] == "Secret")
    return json.dumps(secret) + "\n---\n" + json.dumps(body)


def agent_exec(kube: Kube, vdc_name: str, *command: str) -> str:
    (pod,) = pods_of(kube, vdc_name)
    return kube.run("exec", "-n", NS, pod["metadata"]["name"], "-c", "agent", "--", *command)


def type_line(kube: Kube, vdc_name: str, node: str, line: str) -> None:
    """A line typed into the guest's shell on its serial console."""
    path = json.loads(agent_exec(kube, vdc_name, "vdc", "node", "show", node))["socket_path"]
    script = (
        "import socket, sys, time; s = socket.socket(socket.AF_UNIX);"
        " s.connect(sys.argv[1]); s.sendall(sys.argv[2].encode() + b'\\r'); time.sleep(1)"
    )
    agent_exec(kube, vdc_name, "python3", "-c", script, path, line)


def console_match(kube: Kube, vdc_name: str, node: str, pattern: str,
                  after: int = 0) -> re.Match[str]:  # fmt: skip
    """The first match of `pattern` in the guest's console log past offset `after`."""
    deadline = time.monotonic() + 90
    text = ""
    while time.monotonic() < deadline:
        text = plugin(kube, "console-log", vdc_name, node, "-n", NS).stdout
        found = re.search(pattern, text[after:])
        if found:
            return found
        time.sleep(2)
    raise AssertionError(f"{pattern!r} not on {vdc_name}'s console:\n{text[-2000:]}")


def console_length(kube: Kube, vdc_name: str, node: str) -> int:
    return len(plugin(kube, "console-log", vdc_name, node, "-n", NS).stdout)
