"""Each class of mistake is reported with its file, document, key path and a useful message."""

import os
from pathlib import Path

import pytest

from tests.spec.conftest import only_error, spec_errors
from vdc_runtime.spec import SpecError, SpecErrors, load_files, load_text

NET = "kind: Network\nname: net0\ntype: external\naddress: 10.0.0.1/24\n"


def node(body: str, name: str = "n1") -> str:
    return f"kind: Node\nname: {name}\ncpu: 1\n{body}"


def netns(body: str, name: str = "ns") -> str:
    return f"kind: NetworkNamespace\nname: {name}\n{body}"


def where(error: SpecError) -> tuple[int | None, str | None, str | None, str]:
    return error.document, error.kind, error.name, error.path


# --- the error line ------------------------------------------------------------------------


def test_error_line_names_file_document_kind_name_and_path(tmp_path: Path) -> None:
    spec = tmp_path / "cluster.yml"
    spec.write_text(
        NET
        + "---\nkind: Image\nname: img\nurl: https://example.com/x.img\n---\n"
        + node(
            "volumes:\n- {kind: image, name: root, image: img}\n"
            "- {kind: localds, name: seed, user-data: seed.yml}\n",
            "worker-1",
        )
    )
    with pytest.raises(SpecErrors) as info:
        load_files([spec])
    (error,) = info.value.errors
    assert error == SpecError(
        file=str(spec),
        document=3,
        kind="Node",
        name="worker-1",
        path="volumes[1].user-data",
        message=f"file not found: {tmp_path / 'seed.yml'}",
    )
    assert (
        str(error) == f'{spec}: document 3 (Node "worker-1"): volumes[1].user-data: '
        f"file not found: {tmp_path}/seed.yml"
    )
    assert str(info.value) == str(error)


def test_error_line_without_name_kind_or_path() -> None:
    assert str(SpecError("a.yml", 2, "Node", None, "", "m")) == "a.yml: document 2 (Node): m"
    assert str(SpecError("a.yml", 2, None, None, "", "m")) == "a.yml: document 2: m"
    assert str(SpecError("a.yml", None, None, None, "", "m")) == "a.yml: m"


def test_all_messages_one_per_line() -> None:
    exc = SpecErrors(
        [SpecError("a", 1, None, None, "", "x"), SpecError("b", None, None, None, "", "y")]
    )
    assert str(exc) == "a: document 1: x\nb: y"
    assert isinstance(exc, Exception)


# --- keys ----------------------------------------------------------------------------------


def test_unknown_key_with_suggestion() -> None:
    error = only_error(
        "kind: Network\nname: n\ntype: external\naddress: 10.0.0.1/24\nuse_nat: true\n"
    )
    assert where(error) == (1, "Network", "n", "use_nat")
    assert error.message == "unknown key 'use_nat'; did you mean 'use-nat'?"


def test_unknown_nested_key_keeps_users_spelling() -> None:
    error = only_error(node("Volumes:\n- {kind: raw, name: d, size: 1G, Formatt: raw}\n"))
    assert where(error) == (1, "Node", "n1", "Volumes[0].Formatt")
    assert error.message == "unknown key 'Formatt'; did you mean 'format'?"


def test_unknown_key_without_suggestion() -> None:
    error = only_error(node("colour: blue\n"))
    assert (error.path, error.message) == ("colour", "unknown key 'colour'")


def test_key_given_twice_in_different_case() -> None:
    error = only_error(node("uefi: true\nUEFI: false\n"))
    assert error.path == "UEFI"
    assert "case-insensitive" in error.message and "'uefi'" in error.message


def test_key_of_another_volume_kind() -> None:
    error = only_error(
        "kind: Image\nname: i\nurl: http://x/y\n---\n"
        + node("volumes: [{kind: image, name: r, image: i, size: 10G}]\n")
    )
    assert where(error) == (2, "Node", "n1", "volumes[0].size")
    assert error.message == "unknown key 'size' for a volume of kind image; it belongs to kind raw"


def test_duplicate_yaml_key() -> None:
    error = only_error("kind: Network\nname: a\ntype: internal\nname: b\n")
    assert where(error) == (1, "Network", "b", "")
    assert error.message == "line 4, column 1: duplicate key 'name'"


# --- types, required keys, enums -----------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "path", "message"),
    [
        ("cpu: '2'\n", "cpu", "expected an integer, got string '2'"),
        ("cpu: 1.5\n", "cpu", "expected an integer, got number 1.5"),
        ("cpu: 0\n", "cpu", "must be at least 1, got integer 0"),
        ("uefi: [true]\n", "uefi", "expected true or false, got a list"),
        ("tpm: 'yes'\n", "tpm", "expected true or false, got string 'yes'"),
        ("interfaces: net0\n", "interfaces", "expected a list, got string 'net0'"),
        ("smbios: serial\n", "smbios", "expected a mapping, got string 'serial'"),
        ("smbios: {serial: 1234}\n", "smbios.serial", "expected a string, got integer 1234"),
        (
            "volumes: [{kind: raw, name: 7, size: 1G}]\n",
            "volumes[0].name",
            "expected a string, got integer 7",
        ),
        (
            "network-device-queue: -1\n",
            "network-device-queue",
            "must be at least 0, got integer -1",
        ),
    ],
)
def test_wrong_types(body: str, path: str, message: str) -> None:
    text = f"kind: Node\nname: n1\n{body}" + ("" if "cpu" in body else "cpu: 1\n")
    error = only_error(text)
    assert (error.document, error.path, error.message) == (1, path, message)


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("kind: Network\nname: n\n", "type"),
        ("kind: Network\ntype: internal\n", "name"),
        ("kind: Image\nurl: http://x/y\n", "name"),
        ("kind: DeviceClass\nname: d\n", "path"),
        (node("volumes: [{kind: raw, name: d}]\n"), "volumes[0].size"),
        (node("volumes: [{kind: raw, size: 1G}]\n"), "volumes[0].name"),
        (node("volumes: [{kind: localds, name: s}]\n"), "volumes[0].user-data"),
        (node("volumes: [{kind: image, name: r}]\n"), "volumes[0].image"),
        (node("volumes: [{kind: hostPath, name: h}]\n"), "volumes[0].path"),
        (node("volumes: [{name: h}]\n"), "volumes[0].kind"),
        (node("smp: {cores: 2}\n").replace("cpu: 1\n", ""), "smp.cpus"),
        (netns("interfaces: [{addresses: [10.0.0.2/24]}]\n"), "interfaces[0].network"),
        (netns("apps: [{name: a}]\n"), "interfaces"),
    ],
)
def test_missing_required_key(text: str, path: str) -> None:
    errors = spec_errors(text)
    assert [(e.path, e.message.split(" (")[0]) for e in errors if e.path == path] == [
        (path, "missing required key")
    ]


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        (
            "kind: Network\nname: n\ntype: Internal\n",
            "type",
            "invalid value 'Internal'; did you mean 'internal'? "
            "(expected one of: 'internal', 'external', 'bmc')",
        ),
        (
            node("volumes: [{kind: raw, name: d, size: 1G, cache: writeback2}]\n"),
            "volumes[0].cache",
            "invalid value 'writeback2'; did you mean 'writeback'? (expected one of: "
            "'writeback', 'none', 'writethrough', 'directsync', 'unsafe')",
        ),
        (
            "kind: Image\nname: i\nurl: http://x/y\ncompression: lzma\n",
            "compression",
            "invalid value 'lzma' (expected one of: '', 'gzip', 'bzip2', 'xz', 'zstd')",
        ),
        (
            node("volumes: [{kind: raw, name: d, size: 1G, format: vmdk}]\n"),
            "volumes[0].format",
            "invalid value 'vmdk' (expected one of: 'qcow2', 'raw')",
        ),
        (
            netns("interfaces: [{network: n}]\napps: [{name: a, command: [x], restart: yes}]\n"),
            "apps[0].restart",
            "invalid value boolean true (expected one of: 'no', 'on-failure', 'always')",
        ),
        (
            node("volumes: [{kind: hostpath, name: h, path: /x}]\n"),
            "volumes[0].kind",
            "unknown kind 'hostpath'; did you mean 'hostPath'? "
            "(expected one of: 'image', 'localds', 'raw', 'hostPath')",
        ),
    ],
)
def test_enum_values_list_the_allowed_ones(text: str, path: str, message: str) -> None:
    if "NetworkNamespace" in text:
        text += "---\nkind: Network\nname: n\ntype: internal\n"
    error = only_error(text)
    assert (error.document, error.path, error.message) == (1, path, message)


# --- per-kind rules ------------------------------------------------------------------------


def test_cpu_and_smp_are_exclusive() -> None:
    error = only_error(node("smp: {cpus: 2}\n"))
    assert (error.path, error.message) == ("smp", "'cpu' and 'smp' are exclusive; give only one")


def test_cpu_or_smp_is_required() -> None:
    error = only_error("kind: Node\nname: n1\n")
    assert (error.path, error.message) == ("", "one of 'cpu' or 'smp' is required")


def test_smp_topology_and_numa() -> None:
    text = "kind: Node\nname: n\nsmp: {cpus: 4, maxcpus: 2}\n---\n"
    text += (
        "kind: Node\nname: m\nsmp: {cpus: 4, sockets: 1, cores: 2, threads: 1}\nnuma: {nodes: 3}\n"
    )
    errors = spec_errors(text)
    assert [(e.document, e.path) for e in errors] == [
        (1, "smp.maxcpus"),
        (2, "smp"),
        (2, "numa.nodes"),
    ]
    assert "= 2, but QEMU needs it to equal cpus (4)" in errors[1].message
    assert errors[2].message == "the 4 vCPUs cannot be split evenly over 3 NUMA nodes"


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        (
            "kind: Network\nname: n\ntype: internal\naddress: 10.0.0.1/24\n",
            "address",
            "an internal network has no host address; remove it or use type external",
        ),
        ("kind: Network\nname: n\ntype: external\n", "address", "required for external networks"),
        ("kind: Network\nname: n\ntype: bmc\n", "address", "required for bmc networks"),
        (
            "kind: Network\nname: n\ntype: bmc\naddress: 10.0.0.1/24\nuse-nat: true\n",
            "use-nat",
            "NAT is only possible on external networks, not bmc",
        ),
        (
            "kind: Network\nname: n\ntype: internal\nUSE-NAT: true\n",
            "USE-NAT",
            "NAT is only possible on external networks, not internal",
        ),
    ],
)
def test_network_rules(text: str, path: str, message: str) -> None:
    error = only_error(text)
    assert (error.path, error.message) == (path, message)


def test_netns_needs_an_interface() -> None:
    error = only_error(netns("interfaces: []\n"))
    assert (error.path, error.message) == ("interfaces", "must have at least 1 entry")


def test_app_needs_a_command() -> None:
    error = only_error(
        NET + "---\n" + netns("interfaces: [{network: net0}]\napps: [{name: a, command: []}]\n")
    )
    assert where(error) == (2, "NetworkNamespace", "ns", "apps[0].command")
    assert error.message == "must have at least 1 entry"


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("kind: DeviceClass\nname: d\npath: relative/dir\n", "path"),
        (node("volumes: [{kind: hostPath, name: h, path: share}]\n"), "volumes[0].path"),
    ],
)
def test_host_paths_must_be_absolute(text: str, path: str) -> None:
    error = only_error(text)
    assert error.path == path
    assert error.message.endswith("is not an absolute path")


def test_image_needs_exactly_one_of_url_and_file(tmp_path: Path) -> None:
    (tmp_path / "x.img").write_text("")
    text = "kind: Image\nname: a\n---\nkind: Image\nname: b\nurl: http://h/x.img\nfile: x.img\n"
    errors = spec_errors(text, tmp_path)
    assert [(e.document, e.path, e.message) for e in errors] == [
        (1, "", "an Image needs one of 'url' or 'file'"),
        (2, "file", "'url' and 'file' are exclusive; give only one"),
    ]


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        (
            "kind: Image\nname: i\nurl: ftp://h/x\n",
            "url",
            "'ftp://h/x' is not an http:// or https:// URL",
        ),
        (
            "kind: Image\nname: i\nurl: http://h/x\nsha256: abc\n",
            "sha256",
            "'abc' is not a SHA-256 digest (64 hexadecimal digits)",
        ),
    ],
)
def test_image_url_and_checksum(text: str, path: str, message: str) -> None:
    error = only_error(text)
    assert (error.path, error.message) == (path, message)


@pytest.mark.parametrize("size", ["2X", "G", "-1G", "1.5", "1 G", "0", "2GB", "true"])
def test_bad_sizes(size: str) -> None:
    text = f"kind: Node\nname: n\ncpu: 1\nmemory: {size}\n---\n" + node(
        f"volumes: [{{kind: raw, name: d, size: {size}}}]\n", "m"
    )
    errors = spec_errors(text)
    assert [(e.document, e.path) for e in errors] == [(1, "memory"), (2, "volumes[0].size")]
    assert all("size" in e.message for e in errors)


# --- YAML and document shape ---------------------------------------------------------------


def test_yaml_syntax_error_has_line_and_column() -> None:
    errors = spec_errors(NET + "---\nkind: Network\nname: [unclosed\ntype: internal\n")
    (error,) = errors
    assert (error.document, error.path) == (2, "")
    assert error.message.startswith("invalid YAML at line 8, column 5: expected")


def test_yaml_error_after_valid_documents_keeps_their_errors() -> None:
    text = "kind: Network\nname: n\ntype: nope\n---\n"
    text += "kind: Node\nname: a\ncpu: 1\ninterfaces: [missing]\n---\n: : :\n"
    errors = spec_errors(text)
    # The node's reference is not reported: the unreadable document might define it.
    assert [(e.document, e.path) for e in errors] == [(1, "type"), (3, "")]


def test_document_must_be_a_mapping() -> None:
    error = only_error(NET + "---\n- kind: Network\n")
    assert where(error) == (2, None, None, "")
    assert error.message == "a document must be a mapping of keys, got a list"


def test_missing_kind() -> None:
    error = only_error("name: n\ntype: internal\n")
    assert error.message.startswith(
        "missing required key 'kind' (one of: Network, NetworkNamespace"
    )


def test_unknown_kind_suggests() -> None:
    error = only_error("kind: NetworkNameSpace\nname: n\n")
    assert where(error) == (1, None, None, "kind")
    assert error.message.startswith(
        "unknown kind 'NetworkNameSpace'; did you mean 'NetworkNamespace'?"
    )


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yml"
    with pytest.raises(SpecErrors) as info:
        load_files([missing])
    (error,) = info.value.errors
    assert (error.file, error.document, error.message) == (
        str(missing),
        None,
        "cannot read: No such file or directory",
    )


# --- names and duplicates ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "kind"),
    [
        ("kind: Network\nname: x\ntype: internal\n", "Network"),
        ("kind: NetworkNamespace\nname: x\ninterfaces: [{network: i}]\n", "NetworkNamespace"),
        ("kind: Node\nname: x\ncpu: 1\n", "Node"),
        ("kind: Image\nname: x\nurl: http://h/i\n", "Image"),
        ("kind: DeviceClass\nname: x\npath: /d\n", "DeviceClass"),
    ],
)
def test_duplicate_names_per_kind(doc: str, kind: str, tmp_path: Path) -> None:
    base = "kind: Network\nname: i\ntype: internal\n"
    (tmp_path / "a.yml").write_text(base + "---\n" + doc)
    (tmp_path / "b.yml").write_text(
        doc.replace("interfaces: [{network: i}]", "interfaces: [{network: x}]")
    )
    with pytest.raises(SpecErrors) as info:
        load_files([tmp_path / "a.yml", tmp_path / "b.yml"])
    errors = [e for e in info.value.errors if e.path == "name"]
    assert [(e.file, e.document, e.kind, e.name) for e in errors] == [
        (str(tmp_path / "b.yml"), 1, kind, "x")
    ]
    first = f'{tmp_path / "a.yml"}: document 2 ({kind} "x")'
    assert errors[0].message == f"duplicate {kind} name 'x'; first defined in {first}"


def test_same_name_in_different_kinds_is_fine() -> None:
    load_text(
        "kind: Network\nname: x\ntype: internal\n---\n"
        "kind: Node\nname: x\ncpu: 1\ninterfaces: [x]\n"
    )


def test_duplicate_volume_names() -> None:
    error = only_error(
        node("volumes:\n- {kind: raw, name: d, size: 1G}\n- {kind: raw, name: d, size: 2G}\n")
    )
    assert (error.path, error.message) == (
        "volumes[1].name",
        "duplicate volume name 'd' (volumes[0])",
    )


def test_node_on_the_same_network_twice_is_allowed() -> None:
    # Placemat refused this only by accident (the network name was the QEMU netdev id).
    dc = load_text(NET + "---\n" + node("interfaces: [net0, {network: net0}]\n"))
    assert [i.network for i in dc.nodes[0].interfaces] == ["net0", "net0"]


def test_netns_with_two_interfaces_on_one_network() -> None:
    error = only_error(NET + "---\n" + netns("interfaces: [{network: net0}, {network: net0}]\n"))
    assert where(error) == (2, "NetworkNamespace", "ns", "interfaces[1].network")
    assert "already has an interface on network 'net0'" in error.message


@pytest.mark.parametrize("name", ["a-very-long-name", "a/b", "a b", "a:b", ".", "..", "''"])
def test_network_name_is_an_interface_name(name: str) -> None:
    error = only_error(f"kind: Network\nname: {name}\ntype: internal\n")
    assert error.path == "name"
    assert "15" in error.message or "interface name" in error.message or "empty" in error.message


@pytest.mark.parametrize("name", ["a/b", "''", "x" * 65, "a b", ".."])
def test_netns_name_is_a_file_name(name: str) -> None:
    error = only_error(NET + "---\n" + netns("interfaces: [{network: net0}]\n", name))
    assert (error.document, error.path) == (2, "name")


# --- references ----------------------------------------------------------------------------


def test_undefined_references_name_the_referring_document() -> None:
    text = (
        "kind: Network\nname: net0\ntype: internal\n---\n"
        "kind: Image\nname: ubuntu\nurl: http://h/u.img\n---\n"
        + node(
            "interfaces: [net0, net1]\nvolumes:\n- {kind: image, name: r, image: ubunto}\n"
            "- {kind: raw, name: d, size: 1G, device-class: ssd}\n"
        )
        + "---\n"
        + netns("interfaces: [{network: nett0}]\n")
    )
    errors = spec_errors(text)
    assert [(e.document, e.path, e.message) for e in errors] == [
        (3, "interfaces[1]", "no Network named 'net1' is defined; did you mean 'net0'?"),
        (3, "volumes[0].image", "no Image named 'ubunto' is defined; did you mean 'ubuntu'?"),
        (3, "volumes[1].device-class", "no DeviceClass named 'ssd' is defined"),
        (4, "interfaces[0].network", "no Network named 'nett0' is defined; did you mean 'net0'?"),
    ]


def test_references_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text(node("interfaces: [net0]\n"))
    (tmp_path / "b.yml").write_text(NET)
    dc = load_files([tmp_path / "a.yml", tmp_path / "b.yml"])
    assert [i.network for i in dc.nodes[0].interfaces] == ["net0"]


# --- files ---------------------------------------------------------------------------------


def test_missing_files(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    text = (
        "kind: Image\nname: i\nfile: disk.img\n---\n"
        + node(
            "ignition: ign.json\nvolumes:\n"
            "- {kind: localds, name: s, user-data: dir, network-config: nc.yml}\n"
        )
        + "---\nkind: Network\nname: n\ntype: internal\n---\n"
        + netns("interfaces: [{network: n}]\ninit-scripts: [/abs/init.sh]\n")
    )
    errors = spec_errors(text, tmp_path)
    assert [(e.document, e.path, e.message) for e in errors] == [
        (1, "file", f"file not found: {tmp_path}/disk.img"),
        (2, "ignition", f"file not found: {tmp_path}/ign.json"),
        (2, "volumes[0].user-data", f"is a directory, not a file: {tmp_path}/dir"),
        (2, "volumes[0].network-config", f"file not found: {tmp_path}/nc.yml"),
        (4, "init-scripts[0]", "file not found: /abs/init.sh"),
    ]


def test_init_script_must_be_executable(tmp_path: Path) -> None:
    script = tmp_path / "sub" / "init.sh"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    text = "kind: Network\nname: n\ntype: internal\n---\n" + netns(
        "interfaces: [{network: n}]\ninit-scripts: [sub/../sub/init.sh]\n"
    )
    error = only_error(text, tmp_path)
    assert where(error) == (2, "NetworkNamespace", "ns", "init-scripts[0]")
    assert error.message == f"init script is not executable: {script} (run chmod +x on it)"
    if os.geteuid() != 0:
        return
    script.chmod(0o755)
    load_text(text, base_dir=tmp_path)


# --- addresses -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("10.0.0.1", "'10.0.0.1' has no prefix length; write it as e.g. 10.0.0.1/24"),
        (
            "10.0.0.300/24",
            "'10.0.0.300/24' is not an IP address with a prefix length (e.g. 10.0.0.1/24)",
        ),
        (
            "10.0.0.1/33",
            "'10.0.0.1/33' is not an IP address with a prefix length (e.g. 10.0.0.1/24)",
        ),
        ("10.0.0.0/24", "'10.0.0.0/24' is the network address of 10.0.0.0/24, not a host address"),
        (
            "10.0.0.255/24",
            "'10.0.0.255/24' is the broadcast address of 10.0.0.0/24, not a host address",
        ),
        ("fd00::/64", "'fd00::/64' is the network address of fd00::/64, not a host address"),
        ("[10.0.0.1/24]", "expected an address with a prefix length like 10.0.0.1/24, got a list"),
    ],
)
def test_cidr_syntax(address: str, message: str) -> None:
    text = f"kind: Network\nname: n\ntype: external\naddress: {address}\n---\n"
    text += netns(f"interfaces: [{{network: n, addresses: [{address}]}}]\n")
    errors = spec_errors(text)
    assert [(e.document, e.path, e.message) for e in errors] == [
        (1, "address", message),
        (2, "interfaces[0].addresses[0]", message),
    ]


def test_netns_address_outside_its_network_other_family_allowed() -> None:
    text = (
        NET
        + "---\n"
        + netns(
            "interfaces:\n- network: net0\n  addresses: [10.0.1.5/24, fd00::5/64, 10.0.0.5/16]\n"
        )
    )
    errors = spec_errors(text)
    assert [(e.path, e.message) for e in errors] == [
        ("interfaces[0].addresses[0]", "10.0.1.5 is outside network 'net0' (10.0.0.0/24)"),
    ]


def test_address_used_twice() -> None:
    text = NET + "---\n" + netns("interfaces: [{network: net0, addresses: [10.0.0.1/24]}]\n", "a")
    text += "---\nkind: Network\nname: in\ntype: internal\n---\n"
    text += netns("interfaces: [{network: in, addresses: [192.168.0.1/24]}]\n", "b")
    text += "---\n" + netns(
        "interfaces: [{network: in, addresses: [192.168.0.1/24, 'fe80::1/64']}]\n", "c"
    )
    text += "---\n" + netns("interfaces: [{network: in, addresses: ['fe80::1/64']}]\n", "d")
    errors = spec_errors(text)
    assert [(e.document, e.name, e.path, e.message) for e in errors] == [
        (
            2,
            "a",
            "interfaces[0].addresses[0]",
            'address 10.0.0.1 is already used at spec.yml: document 1 (Network "net0"), address',
        ),
        (
            5,
            "c",
            "interfaces[0].addresses[0]",
            'address 192.168.0.1 is already used at spec.yml: document 4 (NetworkNamespace "b"),'
            " interfaces[0].addresses[0]",
        ),
    ]


def test_duplicate_smbios_serial() -> None:
    text = node("smbios: {serial: s1}\n", "a") + "---\n" + node("smbios: {serial: s1}\n", "b")
    error = only_error(text)
    assert where(error) == (2, "Node", "b", "smbios.serial")


# --- many at once --------------------------------------------------------------------------


def test_all_errors_are_reported_together(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text(
        "kind: Network\nname: net0\ntype: external\naddress: 10.0.0.1/24\nuse_nat: true\n---\n"
        "kind: Network\nname: bmc\ntype: bmc\n---\n"
        + node("interfaces: [net0, net9]\nmemory: lots\n", "w1")
    )
    (tmp_path / "b.yml").write_text(
        node("smp: {cpus: 2}\nvolumes: [{kind: localds, name: s, user-data: seed.yml}]\n", "w2")
        + "---\n"
        + netns("interfaces: [{network: net0, addresses: [10.0.0.1]}]\n")
        + "---\nkind: Image\nname: i\n"
    )
    with pytest.raises(SpecErrors) as info:
        load_files([tmp_path / "a.yml", tmp_path / "b.yml"])
    got = [(Path(e.file).name, e.document, e.path) for e in info.value.errors]
    assert got == [
        ("a.yml", 1, "use_nat"),
        ("a.yml", 2, "address"),
        ("a.yml", 3, "memory"),
        ("b.yml", 1, "smp"),
        ("b.yml", 1, "volumes[0].user-data"),
        ("b.yml", 2, "interfaces[0].addresses[0]"),
        ("b.yml", 3, ""),
    ]
    assert len(str(info.value).splitlines()) == len(got)


def test_unknown_key_does_not_hide_the_documents_other_problems() -> None:
    text = node(
        "colour: blue\ninterfaces: [nope]\nvolumes: [{kind: image, name: r, image: i, cow: true}]\n"
    )
    errors = spec_errors(text)
    assert [(e.path, e.message) for e in errors] == [
        ("volumes[0].cow", "unknown key 'cow'"),
        ("colour", "unknown key 'colour'"),
        ("interfaces[0]", "no Network named 'nope' is defined"),
        ("volumes[0].image", "no Image named 'i' is defined"),
    ]
