"""The spec cache: a valid result reused for the same bytes, never an error, never a damaged
or foreign entry, and the input files a spec names checked again on every reuse."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vdc_runtime import cli
from vdc_runtime.spec import SpecError, SpecErrors, cache, load_files

LAB = (
    "kind: Network\nname: net0\ntype: internal\n---\n"
    "kind: NetworkNamespace\nname: ns0\ninterfaces:\n- network: net0\n  addresses: [10.0.0.1/24]\n"
)
IGNORED = "colour: blue\n"
"""A key Placemat ignores: a warning when read leniently, an error when strict."""


def entries(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.glob("*.spec")) if cache_dir.exists() else []


def lab(tmp_path: Path, text: str = LAB, name: str = "lab.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_second_load_of_the_same_bytes_is_the_first_result(tmp_path: Path) -> None:
    spec, store = lab(tmp_path), tmp_path / "cache"
    first = cache.load([spec], store).dc
    (entry,) = entries(store)
    assert entry.stat().st_mode & 0o777 == 0o600
    again = cache.load([spec], store)
    assert again.dc == first == load_files([spec])
    assert again.canonical == first.canonical()
    assert entries(store) == [entry]


def test_a_hit_neither_parses_nor_checks(tmp_path: Path) -> None:
    spec, store = lab(tmp_path), tmp_path / "cache"
    cache.load([spec], store)
    code = (
        "import sys\nfrom pathlib import Path\nfrom vdc_runtime.spec import cache\n"
        f"dc = cache.load([Path({str(spec)!r})], Path({str(store)!r})).dc\n"
        "print(dc.summary())\n"
        "print(sorted(m for m in ('yaml', 'vdc_runtime.spec.loader', 'vdc_runtime.spec.checks')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    summary, loaded = out.stdout.splitlines()
    assert summary.startswith("1 network, 1 network namespace")
    assert loaded == "[]"


def test_other_bytes_miss(tmp_path: Path) -> None:
    spec, store = lab(tmp_path), tmp_path / "cache"
    cache.load([spec], store)
    spec.write_text(LAB.replace("10.0.0.1/24", "10.0.0.2/24"))
    dc = cache.load([spec], store).dc
    assert str(dc.netns[0].interfaces[0].addresses[0]) == "10.0.0.2/24"
    assert len(entries(store)) == 2


def test_another_vdc_version_misses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec, store = lab(tmp_path), tmp_path / "cache"
    cache.load([spec], store)
    # The installed version cannot change under a test: the one the cache reads can.
    monkeypatch.setattr(cache, "__version__", "0.0.0+other")
    cache.load([spec], store)
    assert len(entries(store)) == 2


def test_strictness_is_part_of_the_key(tmp_path: Path) -> None:
    spec, store = lab(tmp_path, LAB + IGNORED), tmp_path / "cache"
    warnings: list[SpecError] = []
    cache.load([spec], store, strict=False, warnings=warnings)
    assert [w.path for w in warnings] == ["colour"]
    with pytest.raises(SpecErrors):
        cache.load([spec], store, strict=True)


def test_a_hit_gives_the_same_warnings(tmp_path: Path) -> None:
    spec, store = lab(tmp_path, LAB + IGNORED), tmp_path / "cache"
    first: list[SpecError] = []
    second: list[SpecError] = []
    cache.load([spec], store, strict=False, warnings=first)
    cache.load([spec], store, strict=False, warnings=second)
    assert first == second and len(first) == 1


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"",
        lambda data: data[: len(data) // 2],
        lambda data: data[:-1] + bytes([data[-1] ^ 1]),
        lambda data: b"not a cache entry at all",
        lambda data: data.replace(b"vdc spec cache 1", b"vdc spec cache 0"),
    ],
    ids=["empty", "truncated", "bit-flipped", "garbage", "other-format"],
)
def test_a_damaged_entry_is_ignored_and_rewritten(tmp_path: Path, damage: object) -> None:
    spec, store = lab(tmp_path), tmp_path / "cache"
    expected = cache.load([spec], store).dc
    (entry,) = entries(store)
    whole = entry.read_bytes()
    entry.write_bytes(damage(whole))  # type: ignore[operator]
    assert cache.read(entry) is None
    assert cache.load([spec], store).dc == expected
    assert entry.read_bytes() == whole
    assert not list(store.glob(".partial-*"))


def test_an_entry_others_may_write_is_not_trusted(tmp_path: Path) -> None:
    one, other, store = (
        lab(tmp_path),
        lab(tmp_path, LAB.replace("ns0", "ns1"), "b.yml"),
        tmp_path / "c",
    )
    cache.load([one], store)
    (entry,) = entries(store)
    # Another spec's whole, valid entry put where this one's goes, writable by anyone.
    planted = store / f"{cache.key([(other, other.read_bytes())], strict=True)}.spec"
    planted.write_bytes(entry.read_bytes())
    planted.chmod(0o666)
    assert cache.load([other], store).dc.netns[0].name == "ns1"
    assert planted.stat().st_mode & 0o777 == 0o600


def test_only_the_newest_entries_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "KEEP", 3)
    store = tmp_path / "cache"
    written: list[Path] = []
    for i in range(5):
        spec = lab(tmp_path, LAB.replace("10.0.0.1", f"10.0.0.{i + 1}"), f"lab{i}.yml")
        cache.load([spec], store)
        (new,) = set(entries(store)) - set(written)
        written.append(new)
        os.utime(new, ns=(i * 10**9, i * 10**9))  # one second apart, whatever the clock
    assert entries(store) == sorted(written[-3:])


def test_an_invalid_spec_is_never_cached(tmp_path: Path) -> None:
    spec, store = lab(tmp_path, LAB.replace("internal", "inside")), tmp_path / "cache"
    for _ in range(2):
        with pytest.raises(SpecErrors):
            cache.load([spec], store)
    assert entries(store) == []


def test_errors_are_the_loaders(tmp_path: Path) -> None:
    spec, store = lab(tmp_path, LAB.replace("internal", "inside") + IGNORED), tmp_path / "cache"
    with pytest.raises(SpecErrors) as uncached:
        load_files([spec])
    with pytest.raises(SpecErrors) as cached:
        cache.load([spec], store)
    assert str(cached.value) == str(uncached.value)
    assert cached.value.errors == uncached.value.errors


def test_an_unreadable_file_is_the_loaders_error(tmp_path: Path) -> None:
    missing, store = tmp_path / "nope.yml", tmp_path / "cache"
    with pytest.raises(SpecErrors) as cached:
        cache.load([missing], store)
    with pytest.raises(SpecErrors) as uncached:
        load_files([missing])
    assert str(cached.value) == str(uncached.value)


def test_input_files_are_checked_again_on_a_hit(tmp_path: Path) -> None:
    script = tmp_path / "init.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    text = LAB + "init-scripts: [init.sh]\n"
    spec, store = lab(tmp_path, text), tmp_path / "cache"
    cache.load([spec], store)
    script.chmod(0o644)
    with pytest.raises(SpecErrors) as cached:
        cache.load([spec], store)
    with pytest.raises(SpecErrors) as uncached:
        load_files([spec])
    assert str(cached.value) == str(uncached.value)
    assert "init script is not executable" in str(cached.value)
    script.unlink()
    with pytest.raises(SpecErrors, match="file not found"):
        cache.load([spec], store)


def test_the_command_prints_the_same_with_and_without_the_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = lab(tmp_path, LAB.replace("internal", "inside"))
    warned: list[str] = []
    store = tmp_path / "cache"
    assert cli._load([bad], False, warned.append) is None
    for _ in range(2):
        assert cli._load_cached([bad], False, warned.append, store) is None
    outputs = capsys.readouterr().err.split("nothing was created\n")
    assert outputs[0] == outputs[1] == outputs[2] and outputs[0]
    good = lab(tmp_path, LAB + IGNORED, "good.yml")
    assert cli._load([good], False, warned.append) is not None
    for _ in range(2):
        assert cli._load_cached([good], False, warned.append, store) is not None
    assert len(set(warned)) == 1 and len(warned) == 3
