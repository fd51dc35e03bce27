"""`vdc snapshot`: the commands that work on a data dir's snapshots offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.runtime.snapshots import make_snapshot
from vdc_runtime.snapshot.store import SnapshotStore

VDC = [sys.executable, "-m", "vdc_runtime.cli"]


def vdc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VDC, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    store = SnapshotStore(tmp_path / "data" / "snapshots")
    make_snapshot(store, "newer", created_at=1_700_000_100.0)
    make_snapshot(store, "older", created_at=1_700_000_000.0)
    return tmp_path / "data"


def test_list_is_a_table_oldest_first(data_dir: Path) -> None:
    result = vdc("snapshot", "list", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["NAME", "CREATED", "MACHINES", "SIZE"]
    assert [row.split()[0] for row in rows] == ["older", "newer"]
    *_, machines, size = rows[0].split()
    assert (machines, size) == ("2", "8.0M")
    assert rows[0][header.index("MACHINES") :].startswith("2 ")

    listed = json.loads(vdc("snapshot", "list", "--json", "--data-dir", str(data_dir)).stdout)
    assert [(s["name"], s["machines"], s["created_at"]) for s in listed] == [
        ("older", ["w1", "w2"], 1_700_000_000.0),
        ("newer", ["w1", "w2"], 1_700_000_100.0),
    ]


def test_list_of_an_empty_data_dir_is_just_the_header(tmp_path: Path) -> None:
    result = vdc("snapshot", "list", "--data-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["NAME", "CREATED", "MACHINES", "SIZE"]


def test_show_prints_the_manifest(data_dir: Path) -> None:
    result = vdc("snapshot", "show", "older", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["name"] == "older"
    assert shown["machines"]["w1"]["files"]["state"]["path"] == "w1/state.zst"
    assert shown["not_captured"] == ["node w1 volume share: hostPath share"]
    pretty = vdc("snapshot", "show", "older", "--pretty", "--data-dir", str(data_dir))
    assert json.loads(pretty.stdout) == shown and "\n  " in pretty.stdout


def test_export_import_verify_delete(data_dir: Path, tmp_path: Path) -> None:
    archive = tmp_path / "older.vdcsnap"
    done = vdc("snapshot", "export", "older", str(archive), "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr
    elsewhere = tmp_path / "elsewhere"
    done = vdc("snapshot", "import", str(archive), "--data-dir", str(elsewhere))
    assert (done.returncode, done.stdout) == (0, "older\n"), done.stderr
    done = vdc("snapshot", "import", str(archive), "--name", "copy", "--data-dir", str(elsewhere))
    assert (done.returncode, done.stdout) == (0, "copy\n"), done.stderr
    done = vdc("snapshot", "verify", "copy", "--data-dir", str(elsewhere))
    assert done.returncode == 0, done.stderr

    (elsewhere / "snapshots" / "copy" / "w2" / "nvram.fd").write_bytes(b"changed")
    done = vdc("snapshot", "verify", "copy", "--data-dir", str(elsewhere))
    assert done.returncode == 1
    assert done.stderr == "w2/nvram.fd: 7 bytes, the manifest says 4096\n"

    for name in ("older", "copy"):
        done = vdc("snapshot", "delete", name, "--data-dir", str(elsewhere))
        assert done.returncode == 0, done.stderr
    assert list((elsewhere / "snapshots").iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "nope"], "vdc snapshot show: no snapshot nope in "),
        (["delete", "nope"], "vdc snapshot delete: no snapshot nope in "),
        (["show", "Nope"], "vdc snapshot show: snapshot name 'Nope': use 1 to 63 lowercase"),
        (["export", "older", "/dev/null"], "vdc snapshot export: /dev/null exists"),
        (["import", "/nonexistent.vdcsnap"], "vdc snapshot import: [Errno 2] No such file"),
    ],
)
def test_errors_are_one_line(data_dir: Path, args: list[str], message: str) -> None:
    result = vdc("snapshot", *args, "--data-dir", str(data_dir))
    assert result.returncode == 1
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_a_bad_archive_is_refused_by_import(data_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.vdcsnap"
    bad.write_bytes(b"not an archive")
    result = vdc("snapshot", "import", str(bad), "--data-dir", str(data_dir))
    assert result.returncode == 1
    assert result.stderr.startswith(f"vdc snapshot import: {bad}: ")
    assert sorted(p.name for p in (data_dir / "snapshots").iterdir()) == ["newer", "older"]
