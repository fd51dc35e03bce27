"""placemat2's and pmctl2's arguments, formats and exit codes, without a running lab."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from vdc_runtime import compat

BIN = Path(sys.executable).parent


def run(command: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / command), *args], capture_output=True, text=True, timeout=30)


def test_json_is_encoded_as_go_encodes_it() -> None:
    assert compat.go_json({"a": "<b>&", "n": [1, None], "u": "é\u2028"}) == (
        '{"a":"\\u003cb\\u003e\\u0026","n":[1,null],"u":"é\\u2028"}\n'
    )
    assert compat.go_json(None) == "null\n"


def test_node_status_is_placemats_struct_in_its_order() -> None:
    vdc_view = {
        "name": "n1", "taps": {"z": "t2", "a": "t1"}, "volumes": ["root"], "cpu": 2,
        "memory": "2G", "uefi": False, "tpm": True,
        "smbios": {"serial": "S", "product": None, "manufacturer": "M"},
        "power_status": "On", "socket_path": "/run/n1.sock", "state": "running", "boots": 3,
    }  # fmt: skip
    status = compat.node_status(vdc_view)
    assert list(status) == ["name", "taps", "volumes", "cpu", "memory", "uefi", "tpm",
                            "smbios", "power_status", "socket_path"]  # fmt: skip
    assert list(status["taps"]) == ["a", "z"]  # Go sorts a map's keys
    assert status["smbios"] == {"manufacturer": "M", "product": "", "serial": "S"}


def test_placemat2_defaults_are_placemats() -> None:
    def argv(*args: str, **environ: str) -> list[str]:
        namespace: argparse.Namespace = compat._placemat2_parser().parse_args(list(args))
        return compat.placemat2_argv(namespace, environ)

    assert argv("c.yml") == ["run", "--run-dir", "/tmp", "--data-dir", "/var/scratch/placemat",
                             "--cache-dir", "/var/scratch/placemat",
                             "--listen-addr", "127.0.0.1:10808", "c.yml"]  # fmt: skip
    under_sudo = argv("--force", "--data-dir=/d", "a.yml", "b.yml", SUDO_USER="ci")
    assert under_sudo[under_sudo.index("--cache-dir") + 1] == "/home/ci/placemat_data"
    assert under_sudo[-3:] == ["--force", "a.yml", "b.yml"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["node", "show"], "Error: node name not specified"),
        (["node", "show", "a", "b"], "Error: too many arguments"),
        (["node", "action"], "Error: action name not specified"),
        (["node", "action", "start"], "Error: node name not specified"),
        (["forward", "add", "1"], "Error: wrong number of arguments"),
        (["forward", "add", "x", "a:b:1"], 'Error: strconv.Atoi: parsing "x": invalid syntax'),
        (["forward", "add", "1", "a:b"], "Error: remote spec must be POD:REMOTE_HOST:REMOTE_PORT"),
        (["--endpoint", "http://127.0.0.1:9", "node", "list"], "cannot reach vdc"),
        (["node", "list", "--endpoint", "http://127.0.0.1:9"], "cannot reach vdc"),
        (["completion", "tcsh"], 'Error: invalid argument "tcsh" for "pmctl2 completion"'),
        (["nodes"], "Error: "),
    ],
)
def test_pmctl2_failures_exit_1_with_placemats_message(args: list[str], message: str) -> None:
    result = run("pmctl2", *args)
    assert result.returncode == 1, result
    assert message in result.stderr


def test_completion_scripts_parse() -> None:
    bash = run("pmctl2", "completion", "bash")
    assert bash.returncode == 0 and "complete -F _pmctl2 pmctl2" in bash.stdout
    assert subprocess.run(["bash", "-n"], input=bash.stdout, text=True).returncode == 0
    for shell in ("zsh", "fish", "powershell"):
        assert run("pmctl2", "completion", shell).stdout.strip(), shell


def test_placemat2_without_files_and_its_version() -> None:
    result = run("placemat2", "--data-dir", "/nonexistent")
    assert (result.returncode, result.stderr.strip()) == (1, "Error: no YAML files specified")
    version = run("placemat2", "--version")
    assert version.returncode == 0 and version.stdout.startswith("placemat2 version 2.4.11")
