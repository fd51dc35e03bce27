"""use-nat: an internal host reaches an outside address, seen from the outside as the host."""

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.runtime.conftest import write
from tests.runtime.harness import HostNetns, VdcRun, assert_no_leftovers, sh, snapshot

pytestmark = [pytest.mark.root, pytest.mark.slow]

# A stand-in for "the internet": a namespace the test makes, linked to the test's host
# namespace by a veth. Its server answers with the source address it saw.
ECHO_PEER = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("198.51.100.2", 7000)); s.listen()
print("listening", flush=True)
while True:
    c, addr = s.accept(); c.sendall(addr[0].encode()); c.close()
"""


# Bridge netfilter hands bridged frames to the IP hooks when on (the default, and what
# Docker and Kubernetes hosts run with); NAT must work either way.
@pytest.mark.parametrize("bridge_nf", ["1", "0"])
def test_internal_host_is_masqueraded(host: HostNetns, tmp_path: Path, bridge_nf: str) -> None:
    outside = "vdco" + uuid.uuid4().hex[:6]
    sh(["ip", "netns", "add", outside])
    server = None
    try:
        host.sh(["sysctl", "-w", f"net.bridge.bridge-nf-call-iptables={bridge_nf}"])
        host.sh(
            [
                "ip",
                "link",
                "add",
                "uplink",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                outside,
            ]
        )
        host.sh(["ip", "addr", "add", "198.51.100.1/24", "dev", "uplink"])
        host.sh(["ip", "link", "set", "uplink", "up"])
        sh(["ip", "addr", "add", "198.51.100.2/24", "dev", "eth0"], ns=outside)
        sh(["ip", "link", "set", "eth0", "up"], ns=outside)
        sh(["ip", "link", "set", "lo", "up"], ns=outside)
        server = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{outside}", "--", sys.executable, "-u", "-c", ECHO_PEER],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert server.stdout is not None and server.stdout.readline().strip() == "listening"

        write(tmp_path / "gw.sh", "#!/bin/sh\nip route add default via 10.0.0.1\n", 0o755)
        spec = write(tmp_path / "nat.yml", """\
kind: Network
name: natext
type: external
use-nat: true
address: 10.0.0.1/24
---
kind: NetworkNamespace
name: natinner
interfaces:
- network: natext
  addresses: [10.0.0.10/24]
init-scripts: [gw.sh]
""")  # fmt: skip
        before = snapshot(host)
        forward_before = host.sh(["sysctl", "-n", "net.ipv4.ip_forward"]).strip()
        run = VdcRun(host, [spec], tmp_path / "run").start()
        run.wait_ready()
        try:
            client = (
                "import socket; c = socket.create_connection(('198.51.100.2', 7000), 3); "
                "print(c.recv(64).decode())"
            )
            seen = sh([sys.executable, "-c", client], ns="natinner").strip()
            assert seen == "198.51.100.1", (
                "the outside should see the host's address, not 10.0.0.10"
            )
            assert "masquerade" in host.sh(["nft", "list", "ruleset"])
        finally:
            assert run.stop() == 0, run.output
        assert_no_leftovers(before, host)
        # Forwarding, switched on for NAT, is back as it was.
        assert host.sh(["sysctl", "-n", "net.ipv4.ip_forward"]).strip() == forward_before
    finally:
        if server is not None:
            server.kill()
            server.wait()
        sh(["ip", "netns", "del", outside], check=False)
