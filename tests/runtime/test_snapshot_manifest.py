"""A snapshot's manifest: read back as written, anything else refused saying where, and
the specs it can be restored into told from those it cannot."""

from __future__ import annotations

import json
import posixpath
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vdc_runtime import runstate
from vdc_runtime.snapshot import FileEntry, MachineImage, Manifest, layout_differences
from vdc_runtime.snapshot.manifest import VERSION, check_name, check_relative
from vdc_runtime.spec import DataCenter
from vdc_runtime.spec.loader import load_text

SHA = "ab" * 32

SPEC = """\
kind: Image
name: ubuntu
url: https://example.com/ubuntu.img
---
kind: Image
name: tools
url: https://example.com/tools.img
---
kind: Network
name: net
type: internal
---
kind: Network
name: other
type: internal
---
kind: Network
name: bmc
type: bmc
address: 10.72.16.1/24
---
kind: NetworkNamespace
name: router
interfaces:
- network: net
  addresses: [10.0.0.1/24]
---
kind: Node
name: worker-1
cpu: 2
memory: 1G
interfaces: [net, other]
volumes:
- {kind: image, name: root, image: ubuntu, copy-on-write: true}
- {kind: image, name: tools, image: tools}
- {kind: raw, name: data, size: 10G}
---
kind: Node
name: worker-2
cpu: 1
memory: 1G
interfaces: [net]
"""


def dc(text: str = SPEC) -> DataCenter:
    return load_text(text, "dc.yml")


def manifest(
    spec: dict[str, Any] | None = None,
    group: str | None = None,
    machines: dict[str, MachineImage] | None = None,
) -> Manifest:
    return Manifest(
        version=VERSION,
        name="before-upgrade",
        created_at=1_700_000_000.5,
        spec=runstate.canonical(dc()) if spec is None else spec,
        group=group,
        qemu_version="8.2.2",
        machines=machines
        if machines is not None
        else {
            "worker-1": MachineImage(
                name="worker-1",
                runstate="running",
                files={
                    "state": FileEntry("worker-1/state.zst", SHA, 1234),
                    "volume:root": FileEntry("worker-1/root.qcow2", SHA, 10 << 30),
                    "tpm": FileEntry("worker-1/tpm/tpm2-00.permall", SHA, 0),
                },
                power="On",
                boot_override={"target": "Pxe", "enabled": "Once"},
                bmc_address="10.72.16.11",
                ready_at=1_699_999_000.25,
                boots=2,
                restarts=1,
                secure_boot=True,
                secure_boot_next=False,
            ),
            "worker-2": MachineImage("worker-2", "paused", {}, "Off"),
        },
        not_captured=("node worker-1 volume data: hostPath share",),
        pause_skew_ms=3.5,
        duration_s=12.0,
    )


# -- reading and writing -------------------------------------------------------------------


def test_the_manifest_reads_back_as_written() -> None:
    written = manifest()
    assert Manifest.from_json(written.to_json()) == written
    assert Manifest.from_json(written.to_json().encode()) == written


def test_a_manifest_from_before_secure_boot_reads_as_the_spec_says() -> None:
    written = json.loads(manifest().to_json())
    for machine in written["machines"].values():
        del machine["secure_boot"], machine["secure_boot_next"]
    read = Manifest.from_json(json.dumps(written))
    assert read.machines["worker-1"].secure_boot is None
    assert read.machines["worker-1"].secure_boot_next is None


def test_all_files_and_size() -> None:
    m = manifest()
    assert [f.path for f in m.all_files()] == [
        "worker-1/state.zst",
        "worker-1/root.qcow2",
        "worker-1/tpm/tpm2-00.permall",
    ]
    assert m.size == 1234 + (10 << 30)


_names = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,62}", fullmatch=True)
_floats = st.floats(allow_nan=False, allow_infinity=False)
_paths = st.lists(st.from_regex(r"[a-zA-Z0-9_.:-]{1,12}", fullmatch=True), min_size=1,
                  max_size=4).map("/".join).filter(
                      lambda p: ".." not in p.split("/") and "." not in p.split("/")
                      and p != "manifest.json")  # fmt: skip
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | _floats | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def _manifests(draw: st.DrawFn) -> Manifest:
    paths = iter(draw(st.lists(_paths, unique=True, min_size=6, max_size=6)))
    machines = {}
    for name in draw(st.lists(_names, unique=True, max_size=2)):
        roles = draw(st.lists(st.text(min_size=1, max_size=10), unique=True, max_size=3))
        files = {role: FileEntry(next(paths), draw(st.from_regex(r"[0-9a-f]{64}",
                                                                 fullmatch=True)),
                                 draw(st.integers(0, 1 << 50)))
                 for role in roles}  # fmt: skip
        machines[name] = MachineImage(
            name=name,
            runstate=draw(st.sampled_from(["running", "paused", "shutdown"])),
            files=files,
            power=draw(st.text()),
            boot_override=draw(st.none() | st.dictionaries(st.text(), _json, max_size=3)),
            bmc_address=draw(st.none() | st.text()),
            ready_at=draw(st.none() | _floats),
            boots=draw(st.integers(0, 1 << 40)),
            restarts=draw(st.integers(0, 1 << 40)),
        )
    return Manifest(
        version=VERSION,
        name=draw(_names),
        created_at=draw(_floats),
        spec=draw(st.dictionaries(st.text(), _json, max_size=3)),
        group=draw(st.none() | st.text()),
        qemu_version=draw(st.text()),
        machines=machines,
        not_captured=tuple(draw(st.lists(st.text(), max_size=3))),
        pause_skew_ms=draw(st.none() | _floats),
        duration_s=draw(st.none() | _floats),
    )


@given(_manifests())
def test_any_manifest_reads_back_as_written(written: Manifest) -> None:
    assert Manifest.from_json(written.to_json()) == written


def _edit(path: str, value: Any) -> str:
    """The manifest's JSON with the field at `path` (dots) set to `value`, or removed
    for `...`."""
    data = json.loads(manifest().to_json())
    *parents, last = path.split(".")
    target = data
    for key in parents:
        target = target[key]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return json.dumps(data)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not a snapshot manifest: Expecting"),
        ("[]", "manifest: expected an object, got []"),
        (_edit("version", 1), "manifest version 1 is not supported (this vdc reads version 2)"),
        (_edit("version", ...), "manifest.version: missing"),
        (_edit("qemu_version", ...), "manifest.qemu_version: missing"),
        (_edit("created_at", "yesterday"),
         'manifest.created_at: expected a number, got "yesterday"'),
        (_edit("name", "Before Upgrade"), "manifest: snapshot name 'Before Upgrade': use 1 to 63"),
        (_edit("not_captured", [3]), "manifest.not_captured[0]: expected a string, got 3"),
        (_edit("machines.worker-1.boots", True),
         "manifest.machines[worker-1].boots: expected an integer, got true"),
        (_edit("machines.worker-1.runstate", "suspended"),
         "manifest.machines[worker-1].runstate: 'suspended' is not one of"),
        (_edit("machines.worker-1.name", "worker-9"),
         "manifest: machine 'worker-1' is named 'worker-9'"),
        (_edit("machines.worker-1.files.state.path", "../../etc/passwd"),
         "manifest.machines[worker-1].files[state]: file path '../../etc/passwd': has an empty,"
         " '.' or '..' component"),
        (_edit("machines.worker-1.files.state.path", "/etc/passwd"),
         "manifest.machines[worker-1].files[state]: file path '/etc/passwd': absolute"),
        (_edit("machines.worker-1.files.state.path", "manifest.json"),
         "files[state]: file path 'manifest.json': the manifest's own name"),
        (_edit("machines.worker-1.files.state.path", "worker-1/root.qcow2"),
         "manifest: worker-1/root.qcow2: file of both worker-1 state and worker-1 volume:root"),
        (_edit("machines.worker-1.files.state.sha256", "ABC"),
         "files[state]: worker-1/state.zst: sha256 'ABC' is not 64 lowercase hex digits"),
        (_edit("machines.worker-1.files.state.size", -1),
         "files[state]: worker-1/state.zst: size -1 is not a byte count"),
        (_edit("machines.worker-1.files.state.size", ...),
         "manifest.machines[worker-1].files[state].size: missing"),
    ],
)  # fmt: skip
def test_a_damaged_manifest_is_refused_saying_where(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        Manifest.from_json(text)
    assert message in str(info.value)


@pytest.mark.parametrize("name", ["a", "before-upgrade", "v1.2_rc3", "0", "a" * 63])
def test_good_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "A", "-a", ".a", "_a", "a/b", "a b", "ä", "a" * 64, ".."])
def test_bad_names_name_the_rule(name: str) -> None:
    with pytest.raises(ValueError, match=r"1 to 63 lowercase letters, digits, '-', '.' and '_'"):
        check_name(name)


_tricky_paths = st.lists(st.sampled_from(["a", "b.c", "..", ".", "", "/", "\\", "...", "a.."]),
                        max_size=5).map("/".join)  # fmt: skip


@given(_tricky_paths | st.text(max_size=30))
def test_an_accepted_file_path_stays_inside_the_snapshot(path: str) -> None:
    try:
        check_relative(path)
    except ValueError:
        return
    joined = posixpath.normpath(posixpath.join("/snapshot", path))
    assert joined.startswith("/snapshot/")
    assert joined == f"/snapshot/{path}"


# -- which specs can take it back ----------------------------------------------------------


def changed(old: str, new: str, text: str = SPEC) -> DataCenter:
    assert old in text
    return dc(text.replace(old, new, 1))


def test_the_same_spec_fits() -> None:
    assert layout_differences(manifest(), dc()) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("cpu: 2\nmemory: 1G", "cpu: 2\nmemory: 2G", ['nodes[worker-1].memory: "1G" -> "2G"']),
        ("cpu: 2", "cpu: 4", ["nodes[worker-1].cpu: 2 -> 4"]),
        ("interfaces: [net, other]", "interfaces: [net, net]",
         ['nodes[worker-1].interfaces[1].network: "other" -> "net"']),
        ("interfaces: [net, other]",
         "interfaces: [net, {network: other, mac: '52:54:00:00:00:01'}]",
         ['nodes[worker-1].interfaces[1].mac: null -> "52:54:00:00:00:01"']),
        ("interfaces: [net, other]", "interfaces: [net]",
         ['nodes[worker-1].interfaces: [{"network": "net", "mac": null, "queues": null}, {"netwo...'
          ' -> [{"network": "net", "mac": null, "queues": null}]']),
        ("cpu: 2\n", "cpu: 2\nuefi: true\n", ["nodes[worker-1].uefi: false -> true"]),
        ("cpu: 2\n", "cpu: 2\ntpm: true\n", ["nodes[worker-1].tpm: false -> true"]),
        ("cpu: 2\n", "cpu: 2\nmachine: q35\n", ['nodes[worker-1].machine: "pc" -> "q35"']),
        ("cpu: 2\n", "cpu: 2\nboot-order: [network]\n",
         ['nodes[worker-1].boot-order: [] -> ["network"]']),
        ("size: 10G", "size: 20G", ['nodes[worker-1].volumes[data].size: "10G" -> "20G"']),
        ("{kind: raw, name: data, size: 10G}",
         "{kind: raw, name: data, size: 10G, cache: writeback}",
         ['nodes[worker-1].volumes[data].cache: "none" -> "writeback"']),
        ("- {kind: image, name: tools, image: tools}\n- {kind: raw, name: data, size: 10G}",
         "- {kind: raw, name: data, size: 10G}\n- {kind: image, name: tools, image: tools}",
         ["nodes[worker-1].volumes: reordered"]),
        ("name: worker-2", "name: worker-3",
         ["nodes[worker-2]: removed", "nodes[worker-3]: added"]),
        # A copy-on-write volume is an overlay of its image.
        ("url: https://example.com/ubuntu.img", "url: https://example.com/ubuntu-24.img",
         ['images[ubuntu].url: "https://example.com/ubuntu.img"'
          ' -> "https://example.com/ubuntu-24.img"']),
    ],
)  # fmt: skip
def test_what_changes_a_machine_is_named(old: str, new: str, expected: list[str]) -> None:
    assert layout_differences(manifest(), changed(old, new)) == expected


@pytest.mark.parametrize(
    ("old", "new"),
    [
        # What the runtime alone uses.
        ("cpu: 2\n", "cpu: 2\nrestart: on-failure\n"),
        ("cpu: 2\n", "cpu: 2\nreadiness: {console: 'login:'}\n"),
        ("cpu: 2\n", "cpu: 2\nbmc: {address: 10.72.16.11}\n"),
        # Where a volume's file lives, and a field Placemat v1 had.
        ("{kind: raw, name: data, size: 10G}", "{kind: raw, name: data, size: 10G, vg: vg0}"),
        # What is built afresh: networks, namespaces.
        ("name: net\ntype: internal", "name: net\ntype: external\naddress: 10.0.0.254/24"),
        ("addresses: [10.0.0.1/24]", "addresses: [10.0.0.2/24]"),
        ("kind: NetworkNamespace\nname: router", "kind: NetworkNamespace\nname: edge"),
        # An image copied into its volume: the volume is in the snapshot.
        ("url: https://example.com/tools.img", "url: https://example.com/tools-2.img"),
    ],
)
def test_what_does_not_change_a_machine_is_not_a_difference(old: str, new: str) -> None:
    assert layout_differences(manifest(), changed(old, new)) == []


def test_nodes_in_another_order_fit() -> None:
    first, second = SPEC.split("---\nkind: Node\n", 1)[0], SPEC.split("---\nkind: Node\n")[1:]
    reordered = first + "".join(f"---\nkind: Node\n{node}" for node in reversed(second))
    assert [n.name for n in dc(reordered).nodes] == ["worker-2", "worker-1"]
    assert layout_differences(manifest(), dc(reordered)) == []


def test_a_device_class_moves_only_the_volume_file() -> None:
    text = SPEC + "---\nkind: DeviceClass\nname: ssd\npath: /var/lib/ssd\n"
    before = manifest(spec=runstate.canonical(dc(text)))
    after = changed("size: 10G}", "size: 10G, device-class: ssd}", text)
    assert layout_differences(before, after) == []


GROUPS = (
    SPEC.replace("name: router\n", "name: router\ngroup: rack-a\n")
    .replace("name: worker-1\n", "name: worker-1\ngroup: rack-a\n")
    .replace("name: worker-2\n", "name: worker-2\ngroup: rack-b\n")
    + "---\nkind: Group\nname: rack-a\n---\nkind: Group\nname: rack-b\n"
    + "---\nkind: NetworkNamespace\nname: edge\ngroup: rack-b\ninterfaces: [{network: net}]\n"
)


def test_a_group_s_snapshot_compares_that_group_s_nodes() -> None:
    before = manifest(spec=runstate.canonical(dc(GROUPS)), group="rack-a")
    # Another group's node is not in the snapshot.
    assert layout_differences(before, changed("cpu: 1\n", "cpu: 8\n", GROUPS)) == []
    assert layout_differences(before, changed("cpu: 2\n", "cpu: 8\n", GROUPS)) == [
        "nodes[worker-1].cpu: 2 -> 8"
    ]
    # A node moved into another group is one the snapshot's group no longer runs.
    moved = changed("worker-1\ngroup: rack-a", "worker-1\ngroup: rack-b", GROUPS)
    assert layout_differences(before, moved) == ["nodes[worker-1]: removed"]
    # ... and one moved in is one it has no state for.
    assert layout_differences(before, changed("group: rack-b", "group: rack-a", GROUPS)) == [
        "nodes[worker-2]: added"
    ]
