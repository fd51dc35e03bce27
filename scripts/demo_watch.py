"""`make demo`'s narrator: each node as it powers on, boots, takes DHCP, gets its BMC."""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.request
from pathlib import Path

ENDPOINT = "http://127.0.0.1:10808"
MARKERS = (
    (re.compile(r"VDC-GUEST-READY"), "booted (its init is running)"),
    (re.compile(r"VDC-GUEST-DHCP (\S+) (\S+)"), "took DHCP: {1} on {0}"),
    (re.compile(r"VDC-GUEST-BMC (\S+)"), "announced its BMC address {0}"),
)


def get(path: str) -> object:
    with urllib.request.urlopen(ENDPOINT + path, timeout=5) as response:
        return json.loads(response.read())


def main(timeout: float) -> int:
    deadline = time.monotonic() + timeout
    seen: set[tuple[str, str]] = set()
    while time.monotonic() < deadline:
        try:
            nodes = get("/nodes")
        except OSError:
            time.sleep(0.5)
            continue
        assert isinstance(nodes, list)
        for node in nodes:
            name = node["name"]
            if (name, "power") not in seen:
                seen.add((name, "power"))
                print(f"  {name}: powered on ({node['accel']}), network-booting from boot-server")
            try:
                text = Path(node["console_log"]).read_text(errors="replace")
            except FileNotFoundError:
                continue
            for pattern, message in MARKERS:
                match = pattern.search(text)
                if match and (name, pattern.pattern) not in seen:
                    seen.add((name, pattern.pattern))
                    print(f"  {name}: {message.format(*match.groups())}")
            bmc = node.get("bmc") or {}
            if bmc.get("state") in ("listening", "failed") and (name, "bmc") not in seen:
                seen.add((name, "bmc"))
                if bmc["state"] == "failed":
                    print(f"  {name}: BMC not started: {bmc['error']}")
                else:
                    print(f"  {name}: BMC up: IPMI {bmc['ipmi']}, Redfish {bmc['redfish']}")
        if nodes and all((n["name"], "bmc") in seen for n in nodes):
            return 0
        time.sleep(0.5)
    print("  (some nodes are still booting; see `vdc node console-log NODE`)")
    return 1


if __name__ == "__main__":
    sys.exit(main(float(sys.argv[1]) if len(sys.argv) > 1 else 180))
