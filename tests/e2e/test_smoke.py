"""The cluster is real: a privileged pod of the runtime image boots a guest under TCG."""

from __future__ import annotations

import subprocess
import textwrap

import pytest

from tests.e2e.conftest import Kube
from tests.guest.build import GuestPaths
from tests.prereqs import require

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def guest() -> GuestPaths:
    return require.guest()


def test_runtime_pod_boots_a_guest(kube: Kube, guest: GuestPaths) -> None:
    node = kube.get("node", "vdc-e2e")
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.34.4"
    spec = textwrap.indent(
        "kind: Network\nname: smokenet\ntype: internal\n---\n"
        "kind: NetworkNamespace\nname: smoke-router\ninterfaces:\n"
        "- {network: smokenet, addresses: [10.77.0.1/24]}\n---\n"
        "kind: Node\nname: smoke-1\nsmp: {cpus: 1}\nmemory: 256M\n"
        f"kernel: /guest/{guest.vmlinux.name}\ninitrd: /guest/{guest.initrd.name}\n"
        'cmdline: "console=ttyS0 quiet"\ninterfaces: [smokenet]\n',
        "    ",
    )
    kube.apply(f"""\
apiVersion: v1
kind: ConfigMap
metadata: {{name: smoke-dc, namespace: default}}
data:
  dc.yml: |
{spec}
---
apiVersion: v1
kind: Pod
metadata: {{name: smoke, namespace: default}}
spec:
  restartPolicy: Never
  containers:
  - name: vdc
    image: vdc.local/vdc-runtime:dev
    imagePullPolicy: Never
    args: [run, /spec/dc.yml, --run-dir, /run/vdc, --data-dir, /var/lib/vdc, --accel, auto]
    securityContext: {{privileged: true}}
    volumeMounts:
    - {{name: spec, mountPath: /spec}}
    - {{name: guest, mountPath: /guest, readOnly: true}}
    - {{name: kvm, mountPath: /dev/kvm}}
    - {{name: tun, mountPath: /dev/net/tun}}
  volumes:
  - {{name: spec, configMap: {{name: smoke-dc}}}}
  - {{name: guest, hostPath: {{path: {guest.vmlinux.parent}, type: Directory}}}}
  - {{name: kvm, hostPath: {{path: /dev/kvm, type: CharDevice}}}}
  - {{name: tun, hostPath: {{path: /dev/net/tun, type: CharDevice}}}}
""")
    try:

        def booted() -> bool:
            pod = kube.get("pod", "smoke")
            if pod["status"].get("phase") in ("Failed", "Succeeded"):
                raise AssertionError(f"the pod ended: {kube.run('logs', 'smoke', check=False)}")
            log = kube.run("exec", "smoke", "--", "vdc", "node", "console-log", "smoke-1",
                           check=False)  # fmt: skip
            return "VDC-GUEST-READY" in log

        kube.wait_for(booted, "the guest's ready marker")
        logs = kube.run("logs", "smoke")
        assert "acceleration: tcg" in logs, logs
        assert "fabric ready in" in logs and "1 bridges, 1 namespaces, 1 veths" in logs, logs
    finally:
        kube.run("delete", "pod", "smoke", "--wait=true", "--timeout=60s", check=False)
        kube.run("delete", "configmap", "smoke-dc", check=False)
    # Stopping the pod stopped vdc, which stopped its QEMU: nothing of it is left running.
    left = subprocess.run(["pgrep", "-f", "qemu-system.*guest=smoke-1"], capture_output=True)
    assert left.returncode == 1, left.stdout
