"""The BMC parts of a spec: a node's static BMC address and the shared BMC document."""

import logging
from ipaddress import ip_address
from pathlib import Path

import pytest

from tests.spec.conftest import spec_errors
from vdc_runtime.bmc.service import load_users
from vdc_runtime.spec import load_text

NETS = """kind: Network
name: bmc
type: bmc
address: 10.72.16.1/20
---
kind: Network
name: bmc6
type: bmc
address: fd00:72::1/64
---
kind: Network
name: ext
type: external
address: 10.0.0.1/24
---
"""


def node(bmc: str, name: str = "n1") -> str:
    return f"kind: Node\nname: {name}\ncpu: 1\nbmc:\n{bmc}---\n"


def test_static_bmc_addresses_in_either_family() -> None:
    dc = load_text(NETS + node("  address: 10.72.16.11\n") + node("  address: fd00:72::12\n", "n2"))
    assert [n.bmc.address for n in dc.nodes if n.bmc] == [
        ip_address("10.72.16.11"),
        ip_address("fd00:72::12"),
    ]


def test_nodes_without_a_bmc_block_announce_their_address() -> None:
    (n,) = load_text(NETS + "kind: Node\nname: n1\ncpu: 1\n").nodes
    assert n.bmc is None


def test_a_static_address_outside_every_bmc_network_names_them() -> None:
    errors = spec_errors(NETS + node("  address: 10.0.0.7\n"))
    assert [(e.path, e.message) for e in errors] == [
        (
            "bmc.address",
            "10.0.0.7 is not inside any bmc network (bmc (10.72.16.0/20), bmc6 (fd00:72::/64))",
        )
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("10.72.16.11/20", "'10.72.16.11/20' has a prefix length; write the address alone"),
        ("10.72.16.300", "'10.72.16.300' is not an IP address"),
        ("0.0.0.0", "'0.0.0.0' cannot be a host's address"),
        ("5", "expected an address like 10.0.0.1, got integer 5"),
    ],
)
def test_bad_static_addresses(value: str, message: str) -> None:
    (error,) = spec_errors(NETS + node(f"  address: {value}\n"))
    assert error.path == "bmc.address"
    assert error.message.startswith(message)


def test_a_bmc_address_used_twice_is_an_error() -> None:
    text = NETS + node("  address: 10.72.16.11\n") + node("  address: 10.72.16.11\n", "n2")
    (error,) = spec_errors(text)
    assert (error.name, error.path) == ("n2", "bmc.address")
    assert "already used" in error.message


def test_the_bmc_document(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-a-file\n")
    dc = load_text(
        NETS
        + """kind: BMC
users:
  - name: admin
    password: secret
  - name: viewer
    password-file: pw
    role: ReadOnly
""",
        base_dir=tmp_path,
    )
    assert dc.bmc is not None
    users = load_users(dc)
    assert [(u.name, u.role) for u in users] == [("admin", "Administrator"), ("viewer", "ReadOnly")]
    assert users.check("viewer", "from-a-file") is not None
    assert users.check("viewer", "from-a-file\n") is None
    assert "from-a-file" not in repr(list(users))


def test_without_users_placemat_account_stays(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="vdc.bmc"):
        users = load_users(load_text(NETS))
    assert [(u.name, u.password) for u in users] == [("cybozu", "cybozu")]
    assert "Placemat's default account" in caplog.text


def test_bmc_document_errors(tmp_path: Path) -> None:
    errors = spec_errors(
        """kind: BMC
users:
  - name: admin
    password: secret
  - name: admin
    password-file: missing.txt
  - name: a-name-far-too-long
    password: x
  - name: "a:b"
  - name: long
    password: "123456789012345678901"
    role: Root
tls:
  cert: c.pem
  key: k.pem
---
kind: BMC
""",
        tmp_path,
    )
    messages = [(e.document, e.path, e.message) for e in errors]
    assert (1, "users[4].role", messages[0][2]) == messages[0]
    assert "invalid value 'Root'" in messages[0][2]
    assert (2, "", "only one BMC document is allowed; the first is spec.yml: document 1 (BMC)") in [
        (d, p, m) for d, p, m in messages
    ]


def test_bmc_document_rules_on_a_valid_document(tmp_path: Path) -> None:
    errors = spec_errors(
        """kind: BMC
users:
  - name: admin
    password: secret
  - name: admin
    password-file: missing.txt
  - name: a-name-far-too-long
    password: x
  - name: "a:b"
  - name: long
    password: "123456789012345678901"
tls:
  cert: c.pem
  key: k.pem
""",
        tmp_path,
    )
    assert [(e.path, e.message) for e in errors] == [
        ("users[1].password-file", f"file not found: {tmp_path / 'missing.txt'}"),
        ("tls.cert", f"file not found: {tmp_path / 'c.pem'}"),
        ("tls.key", f"file not found: {tmp_path / 'k.pem'}"),
        ("users[1].name", "duplicate user 'admin' (users[0])"),
        ("users[2].name", "IPMI allows at most 16 characters"),
        ("users[3].name", "a BMC user name is printable ASCII without ':'"),
        ("users[3]", "give exactly one of 'password' or 'password-file'"),
        ("users[4].password", "IPMI 2.0 allows at most 20 bytes"),
    ]
