"""IPMI encodings, without a BMC: suite negotiation, boot flags, replies' layouts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vdc_runtime.bmc.ipmi import codec
from vdc_runtime.bmc.target import BootOverride


def open_request(auth: int | None, integrity: int | None, conf: int | None) -> bytes:
    body = bytes([1, 4, 0, 0]) + b"\x11\x22\x33\x44"
    for kind, algorithm in enumerate((auth, integrity, conf)):
        body += bytes([kind, 0, 0, 0 if algorithm is None else 8, algorithm or 0, 0, 0, 0])
    return body


@pytest.mark.parametrize(
    ("proposal", "status", "suite"),
    [
        ((0x01, 0x01, 0x01), 0, 3),
        ((0x03, 0x04, 0x01), 0, 17),
        ((None, None, None), 0, 17),  # the BMC chooses: its strongest
        ((0x01, None, None), 0, 3),
        ((None, 0x01, None), 0, 3),
        ((0x00, 0x00, 0x00), codec.RMCP_INVALID_AUTH_ALGORITHM, None),  # suite 0
        ((0x01, 0x00, 0x00), codec.RMCP_INVALID_INTEGRITY_ALGORITHM, None),  # suite 1
        ((0x01, 0x01, 0x00), codec.RMCP_INVALID_CONFIDENTIALITY_ALGORITHM, None),  # suite 2
        ((0x03, 0x01, 0x01), codec.RMCP_NO_CIPHER_SUITE_MATCH, None),  # SHA-256 with SHA-1-96
        ((0x02, 0x02, 0x01), codec.RMCP_INVALID_AUTH_ALGORITHM, None),  # MD5
    ],
)
def test_negotiation(proposal, status: int, suite: int | None) -> None:  # type: ignore[no-untyped-def]
    got_status, got_suite = codec.negotiate(open_request(*proposal))
    assert got_status == status
    assert (got_suite.id if got_suite else None) == suite


def test_suite_parameters() -> None:
    assert (codec.SUITE_3.hash().name, codec.SUITE_3.icv_length) == ("sha1", 12)
    assert (codec.SUITE_17.hash().name, codec.SUITE_17.icv_length) == ("sha256", 16)
    assert codec.algorithm_payloads(codec.SUITE_17) == bytes.fromhex(
        "000000080300000001000008040000000200000801000000"
    )


def test_cipher_suite_records_are_paged() -> None:
    by_suite = bytes([0x00, 0x00, 0x80])
    assert codec.cipher_suites_page(by_suite, 1) == (0, bytes.fromhex("01c003014181c011034481"))
    assert codec.cipher_suites_page(bytes([0x00, 0x00, 0x81]), 1) == (0, b"\x01")  # the end
    assert codec.cipher_suites_page(bytes([0x0E, 0x00, 0x00]), 1) == (
        0,
        bytes.fromhex("010103414481"),
    )
    assert codec.cipher_suites_page(bytes([0x0E, 0x01, 0x80]), 1)[0] == codec.INVALID_DATA_FIELD
    assert codec.cipher_suites_page(b"\x0e", 1)[0] == codec.REQUEST_DATA_LENGTH_INVALID


def test_device_id_packs_manufacturer_in_three_bytes_and_product_in_two() -> None:
    reply = codec.device_id()
    assert len(reply) == 15
    assert reply[4] == 0x02  # IPMI 2.0
    assert reply[5] == 0x8F  # chassis, FRU inventory, SEL, SDR repository and sensor devices
    assert reply[6:9] == b"\0\0\0" and reply[9:11] == b"\x01\x00"


def test_chassis_status() -> None:
    assert codec.chassis_status("On") == bytes([0x41, 0, 0])
    assert codec.chassis_status("Off") == bytes([0x40, 0, 0])
    assert codec.chassis_status("Unknown") == bytes([0x48, 0, 0])  # off, main power fault


def test_channel_info() -> None:
    code, data = codec.channel_info(b"\x0e", 2)
    assert code == 0 and data[:4] == bytes([1, 0x04, 0x01, 0x82])
    assert codec.channel_info(b"\x02", 0)[0] == codec.INVALID_DATA_FIELD


@pytest.mark.parametrize(
    ("data", "override"),
    [
        ("a004000000", BootOverride("pxe", "once", "uefi")),
        ("c008000000", BootOverride("hdd", "continuous", "legacy")),
        ("800c000000", BootOverride("hdd", "once", "legacy")),  # disk, safe mode
        ("8014000000", BootOverride("cd", "once", "legacy")),
        ("8018000000", BootOverride("bios-setup", "once", "legacy")),
        ("0004000000", BootOverride("none", "disabled", "legacy")),  # not valid: no override
        ("8000000000", BootOverride("none", "disabled", "legacy")),  # valid, no override
        ("803c000000", None),  # floppy
        ("8010000000", None),  # diagnostic partition
    ],
)
def test_boot_flags_decoding(data: str, override: BootOverride | None) -> None:
    assert codec.decode_boot_flags(bytes.fromhex(data)) == override


@given(
    target=st.sampled_from(["none", "pxe", "hdd", "cd", "bios-setup"]),
    enabled=st.sampled_from(["disabled", "once", "continuous"]),
    mode=st.sampled_from(["legacy", "uefi"]),
)
def test_boot_flags_round_trip(target: str, enabled: str, mode: str) -> None:
    override = BootOverride(target, enabled, mode)  # type: ignore[arg-type]
    decoded = codec.decode_boot_flags(codec.encode_boot_flags(override))
    if target == "none" or enabled == "disabled":
        assert decoded == BootOverride("none", "disabled", mode)  # type: ignore[arg-type]
    else:
        assert decoded == override


def test_user_list() -> None:
    users = [("admin", 4), ("viewer", 2)]
    assert codec.user_access(1, users) == (0, bytes([3, 0x42, 0x01, 0x0F]))
    assert codec.user_access(3, users) == (0, bytes([3, 0x42, 0x01, 0x32]))
    assert codec.user_access(4, users)[0] == codec.PARAMETER_OUT_OF_RANGE
    assert codec.user_name(2, users) == (0, b"admin".ljust(16, b"\0"))


def test_serial_over_lan_replies() -> None:
    assert codec.activate_payload_reply(132, 623) == bytes.fromhex("00000000840084006f02ffff")
    assert codec.sol_parameter(1, 623) == (0, bytes([0x11, 0x01]))  # enabled
    assert codec.sol_parameter(8, 16230) == (0, bytes([0x11]) + (16230).to_bytes(2, "little"))
    assert codec.sol_parameter(9, 623)[0] == codec.PARAMETER_NOT_SUPPORTED
