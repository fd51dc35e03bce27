"""`kubectl vdc dashboard`: the URL of the agent's web view through a port-forward."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tests.operator.test_plugin_graph import quickstart_vdc
from vdc_operator import plugin


@pytest.mark.parametrize(
    ("line", "port"),
    [
        ("Forwarding from 127.0.0.1:41234 -> 10808\n", 41234),
        ("Forwarding from [::1]:41234 -> 10808\n", None),  # the page's cookie is for 127.0.0.1
        ("Handling connection for 41234\n", None),
        ("Forwarding from 127.0.0.1:x -> 10808", None),
        ("", None),
    ],
)
def test_forwarded_port(line: str, port: int | None) -> None:
    assert plugin.forwarded_port(line) == port


def test_dashboard_url() -> None:
    assert plugin.dashboard_url(8080, "Ab-_9") == "http://127.0.0.1:8080/ui/?token=Ab-_9"
    for bad in ("", "a b", "x&y=1", "cat: /run/vdc/ui-token: No such file"):
        with pytest.raises(plugin.PluginError, match="not a token"):
            plugin.dashboard_url(8080, bad)


def test_dashboard_reads_the_token_and_forwards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # kubectl's part (no cluster here): what it answers to the three commands the plugin runs.
    (tmp_path / "vdc.json").write_text(json.dumps(quickstart_vdc()))
    kubectl = tmp_path / "kubectl"
    kubectl.write_text(f"""#!/bin/sh
echo "$*" >> {tmp_path}/asked
case "$*" in
  *" get "*) cat {tmp_path}/vdc.json ;;
  *" exec "*) echo tok-123 ;;
  *port-forward*) echo "Forwarding from 127.0.0.1:41234 -> 10808"
                  echo "Forwarding from [::1]:41234 -> 10808" ;;
esac
""")  # fmt: skip
    kubectl.chmod(kubectl.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("KUBECTL", str(kubectl))
    assert plugin.main(["dashboard", "-n", "lab", "quickstart"]) == 0
    assert "http://127.0.0.1:41234/ui/?token=tok-123" in capsys.readouterr().out
    asked = (tmp_path / "asked").read_text().splitlines()
    assert asked[-2:] == [
        "--namespace=lab exec -i vdc-quickstart -c agent -- cat /run/vdc/ui-token",
        "--namespace=lab port-forward pod/vdc-quickstart :10808",
    ]
