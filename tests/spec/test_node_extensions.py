"""vdc's Node extensions: direct kernel boot, boot order, NIC objects, restart, machine."""

from pathlib import Path

import pytest

from tests.spec.conftest import only_error, spec_errors
from vdc_runtime.spec import DataCenter, Node, NodeInterface, load_text
from vdc_runtime.spec.identity import default_serial, generated_mac, tap_name

NET = "kind: Network\nname: net0\ntype: internal\n---\n"


def node(body: str, name: str = "n1") -> str:
    return f"kind: Node\nname: {name}\ncpu: 1\n{body}"


def load_node(body: str, base_dir: Path | None = None) -> Node:
    (result,) = load_text(NET + node(body), base_dir=base_dir or Path("/")).nodes
    return result


# --- direct kernel boot --------------------------------------------------------------------


def test_direct_kernel_boot_paths_resolve_against_the_file(tmp_path: Path) -> None:
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot" / "vmlinuz").write_bytes(b"k")
    (tmp_path / "boot" / "initrd.gz").write_bytes(b"i")
    n = load_node(
        "kernel: boot/vmlinuz\ninitrd: boot/initrd.gz\ncmdline: console=ttyS0 root=/dev/vda\n",
        tmp_path,
    )
    assert (n.kernel, n.initrd, n.cmdline) == (
        tmp_path / "boot/vmlinuz",
        tmp_path / "boot/initrd.gz",
        "console=ttyS0 root=/dev/vda",
    )


def test_kernel_files_must_exist(tmp_path: Path) -> None:
    errors = spec_errors(NET + node("kernel: vmlinuz\ninitrd: initrd.gz\n"), tmp_path)
    assert [(e.path, e.message) for e in errors] == [
        ("kernel", f"file not found: {tmp_path / 'vmlinuz'}"),
        ("initrd", f"file not found: {tmp_path / 'initrd.gz'}"),
    ]


@pytest.mark.parametrize("key", ["initrd", "cmdline"])
def test_initrd_and_cmdline_need_a_kernel(tmp_path: Path, key: str) -> None:
    (tmp_path / "f").write_bytes(b"")
    error = only_error(NET + node(f"{key}: f\n"), tmp_path)
    assert (error.path, error.message) == (key, f"'{key}' is only used with 'kernel' (direct boot)")


def test_cmdline_must_be_a_string(tmp_path: Path) -> None:
    (tmp_path / "k").write_bytes(b"")
    error = only_error(NET + node("kernel: k\ncmdline: 3\n"), tmp_path)
    assert (error.path, error.message) == ("cmdline", "expected a string, got integer 3")


# --- boot order, restart, machine ----------------------------------------------------------


def test_boot_order_restart_machine_defaults() -> None:
    n = load_node("")
    assert (n.boot_order, n.restart, n.machine) == ([], "no", "pc")
    assert (n.kernel, n.initrd, n.cmdline) == (None, None, None)


def test_boot_order_restart_machine_values() -> None:
    n = load_node("boot-order: [network, disk, cdrom]\nrestart: on-failure\nmachine: q35\n")
    assert n.boot_order == ["network", "disk", "cdrom"]
    assert (n.restart, n.machine) == ("on-failure", "q35")
    assert load_node("restart: no\n").restart == "no"  # YAML 1.1's false


@pytest.mark.parametrize(
    ("body", "path", "message"),
    [
        (
            "boot-order: [net]\n",
            "boot-order[0]",
            "invalid value 'net'; did you mean 'network'? (expected one of: 'network',"
            " 'disk', 'cdrom')",
        ),
        (
            "boot-order: [disk, network, disk]\n",
            "boot-order[2]",
            "'disk' is already in the boot order (boot-order[0])",
        ),
        ("boot-order: disk\n", "boot-order", "expected a list, got string 'disk'"),
        (
            "restart: always\n",
            "restart",
            "invalid value 'always' (expected one of: 'no', 'on-failure')",
        ),
        (
            "machine: Q35\n",
            "machine",
            "invalid value 'Q35'; did you mean 'q35'? (expected one of: 'pc', 'q35')",
        ),
    ],
)
def test_boot_order_restart_machine_errors(body: str, path: str, message: str) -> None:
    error = only_error(NET + node(body))
    assert (error.path, error.message) == (path, message)


# --- interfaces ----------------------------------------------------------------------------


def test_interfaces_as_names_and_objects() -> None:
    n = load_node(
        "network-device-queue: 2\n"
        "interfaces:\n- net0\n- {network: net0, mac: '52:54:00:AB:cd:01', queues: 4}\n"
        "- Network: net0\n  MAC: 52:54:00:12:34:56\n"
    )
    assert n.interfaces == [
        NodeInterface(network="net0"),
        NodeInterface(network="net0", mac="52:54:00:ab:cd:01", queues=4),
        NodeInterface(network="net0", mac="52:54:00:12:34:56"),
    ]


def test_unquoted_mac_is_a_string_not_a_base_60_number() -> None:
    n = load_node("interfaces: [{network: net0, mac: 52:54:00:12:34:56}]\n")
    assert n.interfaces[0].mac == "52:54:00:12:34:56"


def test_python_callers_may_pass_names() -> None:
    n = Node(name="n", cpu=1, interfaces=["a", NodeInterface(network="b", queues=2)])
    assert [(i.network, i.queues) for i in n.interfaces] == [("a", None), ("b", 2)]


@pytest.mark.parametrize(
    ("entry", "path", "message"),
    [
        (
            "{network: net0, mac: '52:54:00:12:34'}",
            "interfaces[0].mac",
            "'52:54:00:12:34' is not a MAC address; write six hexadecimal pairs separated"
            " by ':', e.g. 52:54:00:12:34:56",
        ),
        (
            "{network: net0, mac: '01:00:5e:00:00:01'}",
            "interfaces[0].mac",
            "'01:00:5e:00:00:01' is a multicast address; a NIC needs a unicast one (the lowest"
            " bit of the first byte clear, e.g. 52:54:00:...)",
        ),
        (
            "{network: net0, mac: '00:00:00:00:00:00'}",
            "interfaces[0].mac",
            "'00:00:00:00:00:00' is the all-zero address",
        ),
        ("{network: net0, queues: 0}", "interfaces[0].queues", "must be at least 1, got integer 0"),
        (
            "{network: net0, queues: 257}",
            "interfaces[0].queues",
            "Input should be less than or equal to 256",
        ),
        (
            "{network: net0, mtu: 9000}",
            "interfaces[0].mtu",
            "unknown key 'mtu'",
        ),
        (
            "{network: net0, macc: '52:54:00:12:34:56'}",
            "interfaces[0].macc",
            "unknown key 'macc'; did you mean 'mac'?",
        ),
        ("{mac: '52:54:00:12:34:56'}", "interfaces[0].network", "missing required key"),
        (
            "3",
            "interfaces[0]",
            "expected a network name or a mapping with 'network' (and optionally 'mac',"
            " 'queues'), got integer 3",
        ),
        ("''", "interfaces[0]", "must not be empty"),
    ],
)
def test_interface_errors(entry: str, path: str, message: str) -> None:
    error = only_error(NET + node(f"interfaces: [{entry}]\n"))
    assert (error.path, error.message) == (path, message)


def test_undefined_network_points_at_the_name_in_either_form() -> None:
    errors = spec_errors(NET + node("interfaces: [net1, {network: net2}]\n"))
    assert [(e.path, e.message) for e in errors] == [
        ("interfaces[0]", "no Network named 'net1' is defined; did you mean 'net0'?"),
        ("interfaces[1].network", "no Network named 'net2' is defined; did you mean 'net0'?"),
    ]


def test_duplicate_explicit_mac_across_nodes() -> None:
    mac = "{network: net0, mac: '52:54:00:00:00:01'}"
    text = NET + node(f"interfaces: [{mac}]\n", "a") + "---\n" + node(f"interfaces: [{mac}]\n", "b")
    error = only_error(text)
    assert (error.document, error.name, error.path) == (3, "b", "interfaces[0].mac")
    assert error.message == (
        'MAC 52:54:00:00:00:01 is already used at spec.yml: document 2 (Node "a"),'
        " interfaces[0].mac"
    )


def test_explicit_mac_equal_to_a_generated_one() -> None:
    taken = generated_mac("a", 0)
    text = NET + node("interfaces: [net0]\n", "a") + "---\n"
    text += node(f"interfaces: [{{network: net0, mac: '{taken}'}}]\n", "b")
    error = only_error(text)
    assert (error.name, error.path) == ("b", "interfaces[0].mac")
    assert error.message == (
        f"MAC {taken} is already generated for the interface at spec.yml: document 2"
        ' (Node "a"), interfaces[0]'
    )


def test_too_many_interfaces_and_queues() -> None:
    errors = spec_errors(NET + node("interfaces: [" + ", ".join(["net0"] * 29) + "]\n"))
    assert [(e.path, e.message) for e in errors] == [
        ("interfaces", "29 interfaces; a node has at most 28 (one PCI slot each)")
    ]
    error = only_error(NET + node("network-device-queue: 300\n"))
    assert (error.path, error.message) == (
        "network-device-queue",
        "300 queues; a tap has at most 256",
    )


# --- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("a/b", "'a/b' is not usable as a file name (no '/', not '.' or '..')"),
        ("'a b'", "'a b' must not contain whitespace"),
        ('"a\\tb"', "'a\tb' must not contain whitespace"),
        (
            "x" * 64,
            f"'{'x' * 64}' is 64 characters long; at most 63 are allowed (the name is part of"
            " socket paths)",
        ),
    ],
)
def test_node_name_is_usable_in_socket_paths(name: str, message: str) -> None:
    error = only_error(node("", name=name))
    assert error.message == message


def test_tpm_node_name_without_commas() -> None:
    error = only_error(node("tpm: true\n", name="a,b"))
    assert error.path == "name"
    assert error.message == "a node with tpm: true cannot have ',' in its name"
    load_text(node("", name="a,b"))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("uefi-secure-boot: true\nmachine: q35\n", "Secure Boot needs UEFI firmware (uefi: true)"),
        ("uefi-secure-boot: true\nuefi: true\n", "Secure Boot needs machine: q35 (SMM)"),
    ],
)
def test_secure_boot_needs_uefi_on_q35(body: str, message: str) -> None:
    error = only_error(node(body))
    assert (error.path, error.message) == ("uefi-secure-boot", message)


def test_secure_boot_node() -> None:
    secure = load_node("uefi-secure-boot: true\nuefi: true\nmachine: q35\n")
    assert (secure.uefi, secure.uefi_secure_boot, secure.machine) == (True, True, "q35")
    assert load_node("uefi: true\n").uefi_secure_boot is False


def test_node_name_of_63_characters() -> None:
    assert load_text(node("", name="x" * 63)).nodes[0].name == "x" * 63


def test_hostpath_name_is_a_9p_mount_tag() -> None:
    long = "s" * 32
    error = only_error(node(f"volumes: [{{kind: hostPath, name: {long}, path: /srv}}]\n"))
    assert (error.path, error.message) == (
        "volumes[0].name",
        f"a hostPath volume's name is its 9p mount tag, at most 31 bytes; '{long}' has 32",
    )
    # Other volume kinds are files, not tags.
    load_text(node(f"volumes: [{{kind: raw, name: {long}, size: 1G}}]\n"))


# --- identity and schema -------------------------------------------------------------------


def test_identity_is_stable_and_well_formed() -> None:
    assert default_serial("boot-0") == "fb8f2417d0b4db30050719c31ce02a2e8141bbd8"
    assert generated_mac("n", 0) == generated_mac("n", 0) != generated_mac("n", 1)
    assert generated_mac("n", 0).startswith("52:54:00:") and len(generated_mac("n", 0)) == 17
    assert tap_name("n", 0).startswith("vdt") and len(tap_name("n", 0)) == 14
    assert tap_name("n", 0) != tap_name("m", 0)


def test_schema_has_the_extensions() -> None:
    props = DataCenter.model_json_schema()["$defs"]["Node"]["properties"]
    for key in ("kernel", "initrd", "cmdline", "boot-order", "restart", "machine"):
        assert key in props
    kinds = props["interfaces"]["items"]["anyOf"]
    assert kinds[0]["type"] == "string"
    assert set(kinds[1]["properties"]) == {"network", "mac", "queues"}


# --- CD drive ------------------------------------------------------------------------------


def test_cdrom_names_an_image() -> None:
    image = "kind: Image\nname: installer\nurl: https://example.org/installer.iso\n---\n"
    (n,) = load_text(image + node("cdrom: {image: installer}\n")).nodes
    assert n.cdrom is not None and n.cdrom.image == "installer"
    assert load_node("").cdrom is None
    error = only_error(image + node("cdrom: {image: instaler}\n"))
    assert (error.path, error.message) == (
        "cdrom.image",
        "no Image named 'instaler' is defined; did you mean 'installer'?",
    )
    error = only_error(image + node("cdrom: {image: installer, size: 1G}\n"))
    assert (error.path, error.message) == ("cdrom.size", "unknown key 'size'")
