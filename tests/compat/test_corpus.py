"""Placemat-style files (tests/compat/corpus) through `vdc validate`, as a user runs it.

Line numbers are of Placemat v2.4.11 (github.com/cybozu-go/placemat, module `v2/`), which
runs each of these files: its decoder is sigs.k8s.io/yaml's lenient Unmarshal
(pkg/types/cluster.go:337), which drops unknown keys and turns numbers and booleans into
text where a field is a string (sigs.k8s.io/yaml yaml.go, convertToJSONableObject); a
bridge's address goes to the kernel as written (pkg/dcnet/network.go:44 and :74)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CORPUS = Path(__file__).with_name("corpus")
VDC = [sys.executable, "-m", "vdc_runtime.cli"]

# file -> the fields warned about (lenient), each refused by --strict
EXPECTED = {
    # The port needs no warning: 8000 reads as "8000" (pkg/types/cluster.go:119, Command []string).
    "web-app-port.yml": [],
    # `folder` is no field of NodeVolumeSpec (pkg/types/cluster.go:229-243).
    "v1-folder-key.yml": ["volumes[0].folder"],
    # `size` is a field of the one NodeVolumeSpec, read for raw volumes only.
    "image-volume-size.yml": ["volumes[0].size"],
    "bridge-network-address.yml": ["address"],
    # SMBIOSConfigSpec's fields are strings (pkg/types/cluster.go:222-226): 12345678 as is,
    # 0x1F as "31", yes as "true".
    "numeric-serial.yml": ["smbios.serial", "smbios.manufacturer"],
}
STRICT_ONLY = {"web-app-port.yml": ["apps[0].command[3]"], "numeric-serial.yml": ["smbios.serial"]}


def field(line: str) -> str:
    """`[warning: ]FILE: document N (KIND "NAME"): FIELD: message` -> FIELD."""
    return line.removeprefix("warning: ").split(": ")[2]


def validate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VDC, "validate", *args], capture_output=True, text=True, timeout=60)


def test_the_corpus_is_all_here() -> None:
    assert sorted(p.name for p in CORPUS.glob("*.yml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_placemat_files_are_valid_with_warnings(name: str) -> None:
    path = CORPUS / name
    result = validate(str(path))
    assert result.returncode == 0, result.stderr
    assert f"{path}: valid (" in result.stdout
    warned = [field(line) for line in result.stderr.splitlines()]
    assert warned == EXPECTED[name], result.stderr


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_strict_refuses_what_placemat_lets_through(name: str) -> None:
    result = validate("--strict", str(CORPUS / name))
    refused = EXPECTED[name] + STRICT_ONLY.get(name, [])
    if not refused:
        assert result.returncode == 0
        return
    assert result.returncode == 1, result.stdout
    fields = [field(line) for line in result.stderr.splitlines()[:-1]]
    assert sorted(set(fields)) == sorted(set(refused)), result.stderr
