"""The snapshot store: a snapshot appears whole or not at all, a killed save leaves only
what `clean_partials` removes, damage is named file by file, and one file carries a
snapshot between hosts, refused whole when it was damaged, changed or made to escape."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.runtime.snapshots import STATE, make_snapshot
from vdc_runtime.snapshot import FileEntry, MachineImage, Manifest
from vdc_runtime.snapshot.manifest import VERSION
from vdc_runtime.snapshot.store import NoSuchSnapshot, Partial, SnapshotStore


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(tmp_path / "data" / "snapshots")


def leftovers(store: SnapshotStore) -> list[str]:
    return sorted(p.name for p in store.root.iterdir()) if store.root.exists() else []


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_machine(name: str, *entries: FileEntry) -> Manifest:
    return Manifest(
        version=VERSION,
        name=name,
        created_at=1.0,
        spec={},
        group=None,
        qemu_version="8.2.2",
        machines={"w1": MachineImage("w1", "paused", {f"f{i}": e for i, e in enumerate(entries)},
                                     "On")},
    )  # fmt: skip


# -- writing -------------------------------------------------------------------------------


def test_a_snapshot_appears_only_when_committed(store: SnapshotStore) -> None:
    with store.begin("first") as partial:
        partial.path("w1/nvram.fd").write_bytes(b"vars")
        entry = partial.adopt_file("w1/nvram.fd")
        assert not (store.root / "first").exists()
        assert store.list() == []
        with pytest.raises(NoSuchSnapshot, match="no snapshot first in"):
            store.show("first")
        (hidden,) = leftovers(store)
        assert hidden.startswith(f".first.partial-{os.getpid()}-")
        manifest = one_machine("first", entry)
        partial.commit(manifest)
    assert leftovers(store) == ["first"]
    assert sorted(p.name for p in (store.root / "first").iterdir()) == ["manifest.json", "w1"]
    assert store.show("first") == manifest
    assert store.list() == [manifest]
    assert store.verify("first") == []


def test_a_save_that_fails_leaves_nothing(store: SnapshotStore) -> None:
    with pytest.raises(RuntimeError, match="QEMU went away"), store.begin("broken") as partial:
        with partial.write_stream("w1/state.zst") as out:
            out.write(b"half a migration")
        raise RuntimeError("QEMU went away")
    assert leftovers(store) == []


def test_an_uncommitted_partial_is_removed_at_the_end_of_its_block(store: SnapshotStore) -> None:
    with store.begin("forgotten") as partial:
        partial.path("x").write_bytes(b"x")
    assert leftovers(store) == []


def test_an_existing_snapshot_is_not_begun_again(store: SnapshotStore) -> None:
    make_snapshot(store, "taken")
    with pytest.raises(FileExistsError, match=r"snapshot taken exists in .*: delete it first"):
        store.begin("taken")


@pytest.mark.parametrize("name", ["", "Upper", "../escape", "a/b", ".hidden", "x" * 64])
def test_a_bad_name_is_refused_naming_the_rule(store: SnapshotStore, name: str) -> None:
    with pytest.raises(ValueError, match="use 1 to 63 lowercase letters"):
        store.begin(name)
    assert leftovers(store) == []


def test_a_name_taken_meanwhile_is_not_replaced(store: SnapshotStore) -> None:
    with store.begin("race") as partial:
        partial.path("f").write_bytes(b"mine")
        manifest = one_machine("race", partial.adopt_file("f"))
        # Another save finished first (a plain rename would replace an empty directory).
        (store.root / "race").mkdir()
        (store.root / "race" / "theirs").write_bytes(b"theirs")
        with pytest.raises(FileExistsError, match=r"snapshot race was made in .* meanwhile"):
            partial.commit(manifest)
        assert not (partial.dir / "manifest.json").exists()
    assert (store.root / "race" / "theirs").read_bytes() == b"theirs"
    assert leftovers(store) == ["race"]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "snapshot bad: f: not in the manifest"),
        ({"f": 3}, "snapshot bad: f: 4 bytes, the manifest says 3"),
        ({"f": 4, "g": 1}, "snapshot bad: g: missing"),
    ],
)
def test_commit_refuses_a_manifest_that_does_not_list_what_was_written(
    store: SnapshotStore, files: dict[str, int], message: str
) -> None:
    with store.begin("bad") as partial:
        partial.path("f").write_bytes(b"data")
        entries = [FileEntry(rel, "0" * 64, size) for rel, size in files.items()]
        with pytest.raises(ValueError, match=message):
            partial.commit(one_machine("bad", *entries))
        with pytest.raises(ValueError, match="the manifest names snapshot other, not bad"):
            partial.commit(one_machine("other"))
    assert leftovers(store) == []


@pytest.mark.parametrize(
    ("rel", "message"),
    [
        ("/etc/passwd", "absolute"),
        ("../outside", "'..' component"),
        ("w1/../../outside", "'..' component"),
        ("w1//state", "empty"),
        ("manifest.json", "written by commit"),
    ],
)
def test_files_stay_inside_the_partial(store: SnapshotStore, rel: str, message: str) -> None:
    with store.begin("inside") as partial:
        with pytest.raises(ValueError, match=message):
            partial.path(rel)
        with pytest.raises(ValueError, match=message):
            partial.write_stream(rel).__enter__()
    assert not (store.root.parent / "outside").exists()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    chunks=st.lists(st.binary(max_size=70_000), max_size=6), level=st.sampled_from([None, 1, 19])
)
def test_a_stream_reads_back_as_written(
    tmp_path: Path, chunks: list[bytes], level: int | None
) -> None:
    store = SnapshotStore(tmp_path / f"s{os.urandom(4).hex()}")
    with store.begin("stream") as partial:
        with partial.write_stream("w1/state.zst", level=level) as out:
            for chunk in chunks:
                assert out.write(memoryview(chunk)) == len(chunk)
        on_disk = partial.path("w1/state.zst")
        # The entry is of the compressed file, as verify and import check it.
        assert out.entry == FileEntry("w1/state.zst", sha256(on_disk), on_disk.stat().st_size)
        assert zstandard.ZstdDecompressor().decompressobj().decompress(
            on_disk.read_bytes()
        ) == b"".join(chunks)
        partial.commit(one_machine("stream", out.entry))
    with store.open_stream("stream", "w1/state.zst") as reader:
        assert reader.read() == b"".join(chunks)


def test_a_stream_is_compressed_at_the_store_s_level(tmp_path: Path) -> None:
    data = bytes(range(256)) * 4096 + os.urandom(1 << 16)
    sizes = {}
    for level in (1, 19):
        store = SnapshotStore(tmp_path / str(level), level=level)
        with store.begin("s") as partial:
            with partial.write_stream("state") as out:
                out.write(data)
            sizes[level] = out.entry.size
    assert sizes[19] < sizes[1] < len(data)


def test_a_stream_that_fails_is_removed_and_its_entry_never_given(store: SnapshotStore) -> None:
    with store.begin("s") as partial:
        with pytest.raises(OSError, match="migration failed"), partial.write_stream("st") as out:
            out.write(b"partial state")
            raise OSError("migration failed")
        assert not partial.path("st").exists()
        with pytest.raises(ValueError, match="st: still being written"):
            out.entry  # noqa: B018
        with pytest.raises(FileExistsError), partial.write_stream("again") as out:
            out.write(b"x")
            partial.write_stream("again").__enter__()


def test_a_copied_disk_stays_sparse_and_is_hashed(store: SnapshotStore, tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    with open(disk, "wb") as file:
        file.write(b"MBR")
        file.seek(64 << 20)
        file.write(b"end")
    for reflink in (True, False):
        with store.begin(f"copy-{reflink}".lower()) as partial:
            entry = partial.add_file("w1/root.raw", disk, reflink_copy=reflink)
            copy = partial.path("w1/root.raw")
            assert entry == FileEntry("w1/root.raw", sha256(disk), disk.stat().st_size)
            assert copy.stat().st_blocks * 512 < 1 << 20
            with pytest.raises(FileExistsError, match=r"w1/root.raw: already in the snapshot"):
                partial.add_file("w1/root.raw", disk)


def test_a_copy_that_fails_says_why(store: SnapshotStore, tmp_path: Path) -> None:
    with store.begin("s") as partial:
        with pytest.raises(OSError, match=r"cannot copy .*/nope into the snapshot: cp: .*nope"):
            partial.add_file("root", tmp_path / "nope")
        assert not partial.path("root").exists()
        with pytest.raises(ValueError, match="nvram: not a regular file"):
            partial.adopt_file("nvram")


# -- a killed save -------------------------------------------------------------------------


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_clean_partials_removes_only_what_dead_processes_left(store: SnapshotStore) -> None:
    make_snapshot(store, "kept")
    mine = store.begin("running")  # this process: still being written
    (mine.dir / "state").write_bytes(b"...")
    killed = store.root / f".killed.partial-{dead_pid()}-0a1b2c3d"
    (killed / "w1").mkdir(parents=True)
    (killed / "w1" / "state.zst").write_bytes(b"half")
    other = store.root / ".not-a-partial"
    other.mkdir()
    assert store.clean_partials() == [killed.name]
    assert leftovers(store) == sorted([".not-a-partial", mine.dir.name, "kept"])
    assert store.clean_partials() == []
    mine.abort()
    assert store.verify("kept") == []


def test_a_delete_killed_halfway_leaves_only_a_partial(store: SnapshotStore) -> None:
    make_snapshot(store, "gone")
    store.delete("gone")
    assert leftovers(store) == []
    with pytest.raises(NoSuchSnapshot, match="no snapshot gone in"):
        store.delete("gone")


def test_the_store_needs_no_directory_to_be_empty(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "nothing")
    assert store.list() == []
    assert store.clean_partials() == []
    with pytest.raises(NoSuchSnapshot):
        store.verify("x")


# -- reading -------------------------------------------------------------------------------


def test_list_is_oldest_first_and_leaves_out_damage(
    store: SnapshotStore, caplog: pytest.LogCaptureFixture
) -> None:
    make_snapshot(store, "newer", created_at=2000.0)
    make_snapshot(store, "older", created_at=1000.0)
    make_snapshot(store, "damaged", created_at=1500.0)
    (store.root / "damaged" / "manifest.json").write_text("{")
    (store.root / "Renamed").mkdir()
    with caplog.at_level(logging.WARNING):
        assert [m.name for m in store.list()] == ["older", "newer"]
    assert "damaged/manifest.json: not a snapshot manifest" in caplog.text
    assert "Renamed" in caplog.text


def test_a_snapshot_renamed_by_hand_is_named_for_what_it_is(store: SnapshotStore) -> None:
    make_snapshot(store, "original")
    os.rename(store.root / "original", store.root / "copy")
    with pytest.raises(ValueError, match="names snapshot original, not copy"):
        store.show("copy")


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda d: (d / "w1/state.zst").write_bytes(b"x" + (d / "w1/state.zst").read_bytes()[1:]),
         r"w1/state.zst: sha256 [0-9a-f]{64}, the manifest says [0-9a-f]{64}"),
        (lambda d: os.truncate(d / "w1/root.raw", 100),
         r"w1/root.raw: 100 bytes, the manifest says 8388611"),
        (lambda d: (d / "w2/nvram.fd").unlink(), r"w2/nvram.fd: missing"),
        (lambda d: (d / "w2/leftover.tmp").write_bytes(b""),
         r"w2/leftover.tmp: not in the manifest"),
        (lambda d: (d / "w2/nvram.fd").unlink() or (d / "w2/nvram.fd").symlink_to("/etc/passwd"),
         r"w2/nvram.fd: not a regular file"),
        (lambda d: (d / "manifest.json").write_text('{"version": 9}'),
         r"manifest.json: manifest version 9 is not supported"),
    ],
)  # fmt: skip
def test_verify_names_each_damaged_file(
    store: SnapshotStore, damage: Callable[[Path], object], problem: str
) -> None:
    make_snapshot(store, "snap")
    assert store.verify("snap") == []
    damage(store.root / "snap")
    (found,) = store.verify("snap")
    assert re.fullmatch(r"(.*/)?" + problem + r".*", found), found


def test_open_stream_names_a_missing_snapshot(store: SnapshotStore) -> None:
    with pytest.raises(NoSuchSnapshot), store.open_stream("nope", "w1/state.zst"):
        pass
    make_snapshot(store, "snap")
    with pytest.raises(ValueError, match=r"'..' component"), store.open_stream("snap", "../x"):
        pass


# -- one file ------------------------------------------------------------------------------


Members = list[tuple[tarfile.TarInfo, bytes]]


def archive_members(path: Path) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    with (
        open(path, "rb") as raw,
        zstandard.ZstdDecompressor().stream_reader(raw) as stream,
        tarfile.open(fileobj=stream, mode="r|") as tar,
    ):
        found = []
        for member in tar:
            reader = tar.extractfile(member)
            found.append((member, reader.read() if reader else None))
        return found


def write_archive(path: Path, members: Members) -> Path:
    """An archive as `export` writes it, or as someone else might."""
    with (
        open(path, "wb") as raw,
        zstandard.ZstdCompressor().stream_writer(raw) as out,
        tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar,
    ):
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def regular(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def test_export_then_import_is_the_same_snapshot(store: SnapshotStore, tmp_path: Path) -> None:
    manifest = make_snapshot(store, "golden")
    dest = tmp_path / "golden.vdcsnap"
    store.export("golden", dest)
    assert not dest.with_name("golden.vdcsnap.partial").exists()
    members = archive_members(dest)
    assert [m.name for m, _ in members] == [
        "manifest.json", "w1/state.zst", "w1/root.raw", "w2/nvram.fd"
    ]  # fmt: skip
    assert Manifest.from_json(members[0][1] or b"") == manifest

    elsewhere = SnapshotStore(tmp_path / "elsewhere")
    assert elsewhere.import_(dest) == manifest
    assert elsewhere.verify("golden") == []
    for entry in manifest.all_files():
        assert sha256(elsewhere.path("golden", entry.path)) == entry.sha256
    # A disk comes back sparse, though the tar stream carried its zeros.
    assert elsewhere.path("golden", "w1/root.raw").stat().st_blocks * 512 < 1 << 20
    with elsewhere.open_stream("golden", "w1/state.zst") as reader:
        assert reader.read() == STATE

    renamed = store.import_(dest, name="golden-2")
    assert renamed == dataclasses.replace(manifest, name="golden-2")
    assert store.show("golden-2") == renamed
    assert store.verify("golden-2") == []
    assert leftovers(store) == ["golden", "golden-2"]


def test_import_refuses_an_existing_name_and_export_an_existing_file(
    store: SnapshotStore, tmp_path: Path
) -> None:
    make_snapshot(store, "golden")
    dest = tmp_path / "golden.vdcsnap"
    store.export("golden", dest)
    with pytest.raises(FileExistsError, match="snapshot golden exists"):
        store.import_(dest)
    with pytest.raises(FileExistsError, match=r"golden.vdcsnap exists"):
        store.export("golden", dest)
    with pytest.raises(ValueError, match="use 1 to 63"):
        store.import_(dest, name="Golden")
    assert leftovers(store) == ["golden"]


def test_a_damaged_snapshot_is_not_exported(store: SnapshotStore, tmp_path: Path) -> None:
    make_snapshot(store, "snap")
    nvram = store.root / "snap" / "w2" / "nvram.fd"
    nvram.write_bytes(bytes(len(nvram.read_bytes())))
    dest = tmp_path / "snap.vdcsnap"
    with pytest.raises(ValueError, match=r"w2/nvram.fd: changed since it was saved"):
        store.export("snap", dest)
    assert list(tmp_path.glob("snap.vdcsnap*")) == []


@pytest.fixture
def exported(store: SnapshotStore, tmp_path: Path) -> Iterator[Members]:
    """The members of a good archive, to be changed by a test."""
    make_snapshot(store, "golden")
    store.export("golden", tmp_path / "golden.vdcsnap")
    store.delete("golden")
    yield [(m, data or b"") for m, data in archive_members(tmp_path / "golden.vdcsnap")]
    # Whatever was refused left nothing, and wrote nothing outside the store.
    assert leftovers(store) == []
    assert not (tmp_path / "evil").exists()
    assert not Path("/tmp/vdc-snapshot-test-evil").exists()


def _tampered(members: Members) -> Members:
    info, data = members[3]
    return [*members[:3], (info, b"\xff" + data[1:])]


def _with(members: Members, *extra: tuple[tarfile.TarInfo, bytes]) -> Members:
    return [*members, *extra]


def _link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, b""


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_tampered, "member 'w2/nvram.fd': its sha256 differs from the manifest's"),
        (lambda m: m[:3], "missing from the archive: w2/nvram.fd"),
        (lambda m: [m[0], m[2], m[1], m[3]], None),  # another order is fine
        (lambda m: m[1:], "not a snapshot archive: it starts with 'w1/state.zst'"),
        (lambda m: [], "not a snapshot archive: it starts with nothing"),
        (lambda m: _with(m, m[1]), "member 'w1/state.zst': twice in the archive"),
        (lambda m: _with(m, (regular("../evil"), b"x")),
         "member '../evil': file path '../evil': has an empty, '.' or '..' component"),
        (lambda m: _with(m, (regular("w1/../../evil"), b"x")), "member 'w1/../../evil': file path"),
        (lambda m: _with(m, (regular("/tmp/vdc-snapshot-test-evil"), b"x")),
         "member '/tmp/vdc-snapshot-test-evil': file path '/tmp/vdc-snapshot-test-evil': absolute"),
        (lambda m: _with(m, (regular("w1/extra"), b"x")), "member 'w1/extra': not in the manifest"),
        (lambda m: _with(m, _link("w1/passwd", "/etc/passwd", tarfile.SYMTYPE)),
         "member 'w1/passwd': not a regular file (links and devices are refused)"),
        (lambda m: _with(m, _link("w1/hard", "w1/state.zst", tarfile.LNKTYPE)),
         "member 'w1/hard': not a regular file"),
        (lambda m: _with(m, _link("w1/dev", "", tarfile.CHRTYPE)),
         "member 'w1/dev': not a regular"),
    ],
)  # fmt: skip
def test_a_bad_archive_is_refused_and_leaves_nothing(
    store: SnapshotStore,
    tmp_path: Path,
    exported: Members,
    change: Callable[[Members], Members],
    message: str | None,
) -> None:
    bad = write_archive(tmp_path / "bad.vdcsnap", change(exported))
    if message is None:
        store.import_(bad)
        store.delete("golden")
        return
    with pytest.raises(ValueError) as info:
        store.import_(bad)
    assert str(info.value).startswith(f"{bad}: {message}")


def test_a_manifest_swapped_for_one_that_matches_other_files_is_refused(
    store: SnapshotStore, tmp_path: Path, exported: Members
) -> None:
    manifest = Manifest.from_json(exported[0][1])
    changed = dataclasses.replace(manifest, qemu_version="9.0")
    info = tarfile.TarInfo("manifest.json")
    # Still consistent: only the files are checked, so this one imports...
    write_archive(tmp_path / "ok.vdcsnap", [(info, changed.to_json().encode()), *exported[1:]])
    assert store.import_(tmp_path / "ok.vdcsnap").qemu_version == "9.0"
    store.delete("golden")
    # ...but not one whose checksums were made up.
    w1 = changed.machines["w1"]
    fake = dataclasses.replace(w1, files={**w1.files, "state": dataclasses.replace(
        w1.files["state"], sha256="0" * 64)})  # fmt: skip
    forged = dataclasses.replace(changed, machines={**changed.machines, "w1": fake})
    bad = write_archive(
        tmp_path / "bad.vdcsnap", [(info, forged.to_json().encode()), *exported[1:]]
    )
    with pytest.raises(ValueError, match=r"member 'w1/state.zst': its sha256 differs"):
        store.import_(bad)


def test_a_truncated_or_foreign_file_is_refused(store: SnapshotStore, tmp_path: Path) -> None:
    make_snapshot(store, "golden")
    good = tmp_path / "golden.vdcsnap"
    store.export("golden", good)
    store.delete("golden")
    truncated = tmp_path / "truncated.vdcsnap"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    foreign = tmp_path / "foreign.vdcsnap"
    foreign.write_bytes(b"PK\x03\x04 not zstd")
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as tar:
        tar.addfile(tarfile.TarInfo("manifest.json"), io.BytesIO(b""))
    for path in (truncated, foreign, plain):
        with pytest.raises(ValueError, match=f"^{path}: "):
            store.import_(path)
        assert leftovers(store) == []
    with pytest.raises(FileNotFoundError):
        store.import_(tmp_path / "nope")


def test_a_partial_is_a_context_manager_that_aborts(store: SnapshotStore) -> None:
    partial = store.begin("cm")
    assert isinstance(partial, Partial)
    with pytest.raises(KeyError), partial:
        raise KeyError("x")
    assert not partial.dir.exists()
    with pytest.raises(RuntimeError, match="already committed or aborted"):
        partial.commit(one_machine("cm"))
