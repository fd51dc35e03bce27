"""Valid specs: every Placemat v2 field parses, paths resolve per file, keys fold case."""

import json
from ipaddress import IPv4Interface, IPv6Interface
from pathlib import Path

import pytest

from tests.spec.conftest import spec_errors
from vdc_runtime.spec import (
    DataCenter,
    HostPathVolume,
    ImageVolume,
    LocaldsVolume,
    Network,
    NodeInterface,
    RawVolume,
    load_files,
    load_text,
)


def test_full_file_every_kind_and_field(full_dir: Path) -> None:
    dc = load_files([full_dir / "cluster.yml"])

    assert [n.name for n in dc.networks] == ["internet", "bmc", "core", "v6net"]
    internet, bmc, core, v6net = dc.networks
    assert (internet.type, internet.use_nat, internet.address) == (
        "external",
        True,
        IPv4Interface("10.90.0.1/24"),
    )
    assert (bmc.type, bmc.use_nat, bmc.address) == ("bmc", False, IPv4Interface("10.90.16.1/20"))
    assert (core.type, core.use_nat, core.address) == ("internal", False, None)
    assert v6net.address == IPv6Interface("fd00:90::1/64")

    ubuntu, local, zst = dc.images
    assert ubuntu.url == "https://cloud-images.example.com/ubuntu-24.04.img.xz"
    assert (ubuntu.file, ubuntu.compression) == (None, "xz")
    assert ubuntu.sha256 == "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    assert (local.url, local.file, local.compression) == (None, full_dir / "images/disk.img", "")
    assert (zst.compression, zst.sha256) == ("zstd", None)

    (ssd,) = dc.device_classes
    assert (ssd.name, ssd.path) == ("ssd", Path("/var/scratch/ssd"))

    boot, worker = dc.nodes
    assert boot.name == "boot-0"
    assert boot.interfaces == [
        NodeInterface(network="internet"),
        NodeInterface(network="core"),
        NodeInterface(network="bmc"),
    ]
    assert (boot.cpu, boot.smp, boot.cpus) == (2, None, 2)
    assert (boot.memory, boot.uefi, boot.tpm) == ("2G", True, True)
    assert boot.ignition == full_dir / "ignition.json"
    assert boot.network_device_queue == 4
    assert boot.smbios is not None
    assert (boot.smbios.manufacturer, boot.smbios.product, boot.smbios.serial) == (
        "Example Corp",
        "Virtual Server",
        "0123456789",
    )
    root, seed, data, share = boot.volumes
    assert isinstance(root, ImageVolume)
    assert (root.name, root.image, root.copy_on_write) == ("root", "ubuntu", True)
    assert (root.cache, root.device_class) == ("writeback", "ssd")
    assert isinstance(seed, LocaldsVolume)
    assert seed.user_data == full_dir / "seed/user-data.yml"
    assert seed.network_config == full_dir / "seed/network.yml"
    assert seed.cache == "unsafe"
    assert isinstance(data, RawVolume)
    assert (data.size, data.format, data.cache, data.device_class) == (
        "10G",
        "raw",
        "directsync",
        "ssd",
    )
    assert data.vg == "legacy-vg"
    assert isinstance(share, HostPathVolume)
    assert (share.path, share.writable, share.cache) == (Path("/mnt/share"), True, "writethrough")

    assert worker.cpu is None
    assert worker.smp is not None
    smp = worker.smp
    assert (smp.cpus, smp.cores, smp.threads, smp.dies, smp.sockets, smp.maxcpus) == (
        8,
        2,
        2,
        1,
        2,
        8,
    )
    assert worker.cpus == 8
    assert worker.numa is not None and worker.numa.nodes == 2
    assert worker.memory == "4096"
    assert (worker.uefi, worker.tpm, worker.smbios, worker.ignition) == (False, False, None, None)
    assert worker.network_device_queue is None
    wroot, scratch = worker.volumes
    assert isinstance(wroot, ImageVolume) and not wroot.copy_on_write and wroot.cache == "none"
    assert isinstance(scratch, RawVolume) and scratch.format == "qcow2"

    router, peer = dc.netns
    assert [i.network for i in router.interfaces] == ["internet", "core", "v6net"]
    assert router.interfaces[1].addresses == [
        IPv4Interface("10.90.1.1/31"),
        IPv6Interface("fd00:91::1/64"),
    ]
    assert router.init_scripts == [full_dir / "scripts/router.sh"]
    assert [(a.name, a.restart) for a in router.apps] == [
        ("bird", "always"),
        ("http", "no"),
        ("once", "no"),
    ]
    assert router.apps[1].command == ["python3", "-m", "http.server", "8000"]
    assert peer.init_scripts == [] and peer.apps == []

    assert dc.summary() == "4 networks, 2 network namespaces, 2 nodes, 3 images, 1 device class"
    assert dc.network("core") is core
    with pytest.raises(KeyError):
        dc.network("nope")


def test_paths_resolve_against_each_files_own_folder(multi_dir: Path) -> None:
    dc = load_files([multi_dir / "fabric/networks.yml", multi_dir / "machines/nodes.yml"])
    assert dc.netns[0].init_scripts == [multi_dir / "fabric/gw.sh"]
    (seed,) = dc.nodes[0].volumes
    assert isinstance(seed, LocaldsVolume)
    assert seed.user_data == multi_dir / "machines/seed/user-data.yml"
    assert all(p.is_absolute() for p in [seed.user_data, *dc.netns[0].init_scripts])


def test_several_files_combine_in_argument_order(multi_dir: Path, full_dir: Path) -> None:
    files = [
        multi_dir / "fabric/networks.yml",
        full_dir / "cluster.yml",
        multi_dir / "machines/nodes.yml",
    ]
    dc = load_files(files)
    assert [n.name for n in dc.networks] == ["net0", "internet", "bmc", "core", "v6net"]
    assert [n.name for n in dc.nodes] == ["boot-0", "worker-1", "m1"]
    assert [n.name for n in dc.netns] == ["gw", "router", "peer"]


def test_relative_spec_file_path(multi_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(multi_dir)
    dc = load_files([Path("fabric/networks.yml"), "machines/nodes.yml"])
    assert dc.netns[0].init_scripts == [multi_dir / "fabric/gw.sh"]


def test_keys_match_case_insensitively(multi_dir: Path) -> None:
    dc = load_files([multi_dir / "fabric/networks.yml", multi_dir / "machines/nodes.yml"])
    (node,) = dc.nodes
    assert (node.name, node.cpu, node.uefi, node.tpm, node.interfaces) == (
        "m1",
        1,
        True,
        True,
        [NodeInterface(network="net0")],
    )
    dc = load_text("KIND: Network\nName: n\nTYPE: external\nUse-NAT: true\nAddress: 10.0.0.1/8\n")
    assert dc.networks[0].use_nat


def test_load_text_resolves_against_base_dir_or_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "seed.yml").write_text("#cloud-config\n")
    text = "kind: Node\nname: n\ncpu: 1\nvolumes: [{kind: localds, name: s, user-data: seed.yml}]\n"
    dc = load_text(text, source="inline.yml", base_dir=tmp_path)
    assert dc.nodes[0].volumes[0] == LocaldsVolume(
        kind="localds", name="s", user_data=tmp_path / "seed.yml"
    )
    monkeypatch.chdir(tmp_path)
    assert load_text(text) == dc


def test_empty_documents_and_comments_are_skipped() -> None:
    text = "---\n# only a comment\n---\n---\nkind: Network\nname: n\ntype: internal\n---\n"
    dc = load_text(text)
    assert [n.name for n in dc.networks] == ["n"]
    assert load_text("") == DataCenter()


def test_document_numbers_count_empty_documents() -> None:
    (error,) = spec_errors("kind: Network\nname: a\ntype: internal\n---\n---\nkind: Nope\n")
    assert error.document == 3


def test_restart_policy_defaults_and_bare_no() -> None:
    text = """\
kind: NetworkNamespace
name: ns
interfaces: [{network: n}]
apps:
- {name: a, command: [x]}
- {name: b, command: [x], restart: no}
- {name: c, command: [x], restart: "no"}
- {name: d, command: [x], restart: on-failure}
---
kind: Network
name: n
type: internal
"""
    assert [a.restart for a in load_text(text).netns[0].apps] == ["no", "no", "no", "on-failure"]


def test_cpu_is_not_rewritten_into_smp() -> None:
    node = load_text("kind: Node\nname: n\ncpu: 3\n").nodes[0]
    assert (node.cpu, node.smp, node.cpus) == (3, None, 3)
    node = load_text("kind: Node\nname: n\nsmp: {cpus: 6}\n").nodes[0]
    assert (node.cpu, node.cpus) == (None, 6)


@pytest.mark.parametrize("size", ["512M", "2G", "1024", 1024, "1.5G", "10g", "1T", "64k"])
def test_size_syntax(size: object) -> None:
    node = load_text(json.dumps({"kind": "Node", "name": "n", "cpu": 1, "memory": size})).nodes[0]
    assert node.memory == str(size)


@pytest.mark.parametrize(
    "address", ["10.0.0.1/24", "10.0.0.0/31", "10.0.0.1/31", "10.0.0.0/32", "fd00::1/64"]
)
def test_host_addresses(address: str) -> None:
    dc = load_text(f"kind: Network\nname: n\ntype: external\naddress: {address}\n")
    assert str(dc.networks[0].address) == address


def test_explicit_null_on_optional_key_means_absent() -> None:
    dc = load_text("kind: Network\nname: n\ntype: internal\nuse-nat:\naddress: ~\n")
    assert dc.networks[0] == Network(name="n", type="internal")


def test_yaml_anchors_and_merge_keys() -> None:
    text = """\
kind: Node
name: n
cpu: 1
volumes:
- &disk {kind: raw, name: a, size: 1G}
- {<<: *disk, name: b}
"""
    assert [v.name for v in load_text(text).nodes[0].volumes] == ["a", "b"]


def test_models_take_python_names_and_give_schema() -> None:
    net = Network(name="n", type="external", use_nat=True, address="10.0.0.1/24")
    assert net.address == IPv4Interface("10.0.0.1/24")
    assert net.model_dump(mode="json") == {
        "name": "n",
        "type": "external",
        "use-nat": True,
        "address": "10.0.0.1/24",
    }
    schema = DataCenter.model_json_schema()
    assert "use-nat" in schema["$defs"]["Network"]["properties"]
    assert schema["$defs"]["Network"]["additionalProperties"] is False
    assert "user-data" in schema["$defs"]["LocaldsVolume"]["properties"]
    json.dumps(schema)


def test_models_are_immutable() -> None:
    node = load_text("kind: Node\nname: n\ncpu: 1\n").nodes[0]
    with pytest.raises(ValueError):
        node.cpu = 2  # type: ignore[misc]
