"""`vdc validate` and the refusals of `vdc run` that need no root."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.runtime.conftest import write

VDC = [sys.executable, "-m", "vdc_runtime.cli"]


def vdc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VDC, *args], capture_output=True, text=True, timeout=60)


def test_validate_valid_file_prints_summary(tmp_path: Path) -> None:
    spec = write(tmp_path / "ok.yml", "kind: Network\nname: n0\ntype: internal\n")
    result = vdc("validate", str(spec))
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.strip()
        == f"{spec}: valid (1 network, 0 network namespaces, 0 nodes, 0 images, 0 device classes)"
    )


def test_validate_reports_every_error_and_exits_1(tmp_path: Path) -> None:
    spec = write(
        tmp_path / "bad.yml",
        "kind: Network\nname: n0\ntype: internal\nuse_nat: true\n---\n"
        "kind: NetworkNamespace\nname: r\ninterfaces:\n- network: missing\n",
    )
    # As Placemat reads it, the unknown key is ignored with a warning; --strict refuses it.
    result = vdc("validate", str(spec))
    assert result.returncode == 1
    assert (
        'warning: bad.yml: document 1 (Network "n0"): use_nat: '
        "ignored: unknown key 'use_nat'; did you mean 'use-nat'?".replace("bad.yml", str(spec))
        in result.stderr
    )
    assert 'bad.yml: document 2 (NetworkNamespace "r"): interfaces[0].network:' in result.stderr
    assert "missing" in result.stderr
    assert "1 error; nothing was created" in result.stderr
    strict = vdc("validate", "--strict", str(spec))
    assert strict.returncode == 1
    assert (
        'bad.yml: document 1 (Network "n0"): use_nat: '
        "unknown key 'use_nat'; did you mean 'use-nat'?" in strict.stderr
    )
    assert "warning:" not in strict.stderr
    assert "2 errors; nothing was created" in strict.stderr
    assert "Traceback" not in result.stderr + strict.stderr


def test_validate_checks_manifests_beside_placemat_files(tmp_path: Path) -> None:
    placemat = write(tmp_path / "ok.yml", "kind: Network\nname: n0\ntype: internal\n")
    quickstart = Path(__file__).resolve().parents[2] / "examples" / "vdc-quickstart.yaml"
    result = vdc("validate", str(quickstart), str(placemat))
    assert result.returncode == 0, result.stderr
    assert f'{quickstart}: VirtualDataCenter "quickstart" (' in result.stdout
    assert f'{quickstart}: skipped (not a VirtualDataCenter): Secret "quickstart-bmc"' in (
        result.stdout
    )
    assert f"{placemat}: valid (1 network," in result.stdout

    text = quickstart.read_text().replace("  name: quickstart\n", "  name: Quick_Start\n")
    bad = write(tmp_path / "bad.yaml", text)
    result = vdc("validate", str(bad))
    assert result.returncode == 1
    assert f'{bad}: document 2 (VirtualDataCenter "Quick_Start"): metadata.name:' in result.stderr
    assert result.stderr.strip().endswith("1 error")


def test_convert_warns_on_stderr_and_prints_a_manifest(tmp_path: Path) -> None:
    write(tmp_path / "disk.img", "")
    write(tmp_path / "init.sh", "#!/bin/sh\nip link set eth0 up\n", 0o755)
    spec = write(
        tmp_path / "lab.yml",
        "kind: Image\nname: disk\nfile: disk.img\n---\n"
        "kind: DeviceClass\nname: ssd\npath: /var/lib/ssd\n---\n"
        "kind: Network\nname: n0\ntype: internal\n---\n"
        "kind: NetworkNamespace\nname: r\ninit-scripts: [init.sh]\n"
        "interfaces:\n- network: n0\n  addresses: [10.0.0.1/24]\n",
    )
    result = vdc("convert", str(spec), "--name", "lab")
    assert result.returncode == 0, result.stderr
    warnings = result.stderr.splitlines()
    assert [w.split(":", 2)[1].strip() for w in warnings] == [
        "spec.images[0].file",
        "spec.deviceClasses[0].path",
    ]
    assert "inline: |\n        #!/bin/sh\n        ip link set eth0 up\n" in result.stdout


@pytest.mark.root
def test_run_refuses_kvm_where_it_cannot_run_guests(tmp_path: Path) -> None:
    # This machine's KVM is paravirtual-only (kvm_pvm): stock guests hang on it.
    spec = write(tmp_path / "n.yml", "kind: Node\nname: w1\ncpu: 1\nmemory: 128M\n")
    result = vdc("run", str(spec), "--accel", "kvm", "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 1
    assert "KVM" in result.stderr and "everything created was removed" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_rejects_bad_listen_addr(tmp_path: Path) -> None:
    spec = write(tmp_path / "ok.yml", "kind: Network\nname: n0\ntype: internal\n")
    result = vdc("run", str(spec), "--listen-addr", "localhost")
    assert result.returncode == 2
    assert "expected HOST:PORT" in result.stderr


def test_run_logs_what_it_ignores_and_strict_refuses_it(tmp_path: Path) -> None:
    # A bad listen address stops the run right after reading the file: nothing is built.
    spec = write(tmp_path / "v1.yml", "kind: Network\nname: n0\ntype: internal\nlabels: {}\n")
    result = vdc("run", str(spec), "--listen-addr", "localhost")
    assert result.returncode == 2
    assert "warn" in result.stderr and "labels: ignored: unknown key 'labels'" in result.stderr
    strict = vdc("run", "--strict", str(spec), "--listen-addr", "localhost")
    assert strict.returncode == 1
    assert "labels: unknown key 'labels'" in strict.stderr


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = vdc("validate", str(tmp_path / "nope.yml"))
    assert result.returncode == 1
    assert "nope.yml" in result.stderr and "Traceback" not in result.stderr


GROUPS = (
    "kind: Network\nname: n0\ntype: internal\n---\nkind: Group\nname: r1\n---\n"
    "kind: NetworkNamespace\nname: a\ninterfaces: [{network: n0}]\n---\n"
    "kind: NetworkNamespace\nname: b\ngroup: r1\ninterfaces: [{network: n0}]\n"
)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--peer", "r1=192.0.2.1"], "--peer need --group"),
        (["--group", "r2"], "--group r2: no such group (the spec's groups: default, r1)"),
        (["--group", "r1", "--peer", "default"], "--peer default: write GROUP=ADDRESS"),
        (["--group", "r1"], "group default shares network(s) n0 with group r1: give --peer"),
        (["--group", "r1", "--peer", "default=192.0.2.1", "--tunnel-address", "here"],
         "--tunnel-address here: not an IP address"),
    ],
)  # fmt: skip
def test_run_refuses_a_group_it_cannot_build(tmp_path: Path, args: list[str], message: str) -> None:
    spec = write(tmp_path / "dc.yml", GROUPS)
    result = vdc("run", str(spec), "--run-dir", str(tmp_path / "run"), *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "run").exists()


def test_validate_reads_a_pipe_once() -> None:
    text = "kind: Network\nname: n0\ntype: internal\n"
    done = subprocess.run([*VDC, "validate", "/dev/stdin"], input=text, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "valid (1 network," in done.stdout
