"""Host probes: the decisions are pure, and the probes give the right answer on this host."""

from pathlib import Path

import pytest

from vdc_runtime.nodes.host import (
    OVMF_CANDIDATES,
    OVMF_SECURE_CANDIDATES,
    AccelError,
    choose_accel,
    cpu_flags,
    find_ovmf,
    find_ovmf_secure,
    probe_accel,
    vhost_available,
)

GOOD = {"kvm_device": True, "cpu_flags": {"fpu", "vmx"}, "pvm_loaded": False}


def test_auto_picks_kvm_on_a_hardware_kvm_host() -> None:
    assert choose_accel("auto", **GOOD) == ("kvm", "hardware virtualisation (KVM)")
    assert choose_accel("auto", **{**GOOD, "cpu_flags": {"svm"}})[0] == "kvm"


@pytest.mark.parametrize(
    ("facts", "words"),
    [
        ({"kvm_device": False}, ["/dev/kvm is missing"]),
        ({"pvm_loaded": True}, ["kvm_pvm", "PVM-enlightened"]),
        ({"cpu_flags": {"fpu"}}, ["no vmx/svm"]),
        (
            {"kvm_device": False, "pvm_loaded": True, "cpu_flags": set()},
            ["/dev/kvm is missing", "kvm_pvm", "no vmx/svm"],
        ),
    ],
)
def test_auto_falls_back_to_tcg_and_says_why(facts: dict[str, object], words: list[str]) -> None:
    accel, reason = choose_accel("auto", **{**GOOD, **facts})  # type: ignore[arg-type]
    assert accel == "tcg"
    assert reason.startswith("software emulation (TCG): ")
    for word in words:
        assert word in reason


def test_explicit_tcg_always_works() -> None:
    assert choose_accel("tcg", **GOOD) == ("tcg", "TCG requested")
    assert choose_accel("tcg", kvm_device=False, cpu_flags=set(), pvm_loaded=True)[0] == "tcg"


def test_explicit_kvm() -> None:
    assert choose_accel("kvm", **GOOD)[0] == "kvm"
    with pytest.raises(AccelError, match=r"KVM was requested but is unusable here: .*kvm_pvm"):
        choose_accel("kvm", **{**GOOD, "pvm_loaded": True})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="/dev/kvm is missing"):
        choose_accel("kvm", **{**GOOD, "kvm_device": False})  # type: ignore[arg-type]


def test_unknown_request() -> None:
    with pytest.raises(AccelError, match="unknown accelerator 'hvf'"):
        choose_accel("hvf", **GOOD)  # type: ignore[arg-type]


def test_cpu_flags_parsing() -> None:
    text = "processor\t: 0\nflags\t\t: fpu vme svm lm\nbugs\t: x\n\nprocessor\t: 1\nflags : fpu\n"
    assert cpu_flags(text) == {"fpu", "vme", "svm", "lm"}
    assert cpu_flags("") == set()


def test_probe_accel_on_this_host() -> None:
    # This machine's /dev/kvm is kvm_pvm without vmx/svm: stock guests hang under it.
    accel, reason = probe_accel("auto")
    assert accel == "tcg"
    assert "kvm_pvm" in reason or "vmx/svm" in reason
    assert probe_accel("tcg") == ("tcg", "TCG requested")
    with pytest.raises(AccelError):
        probe_accel("kvm")


def test_find_ovmf_prefers_the_debian_12_pair() -> None:
    present = {Path(p) for pair in OVMF_CANDIDATES for p in pair}
    assert find_ovmf(present.__contains__) == (
        Path("/usr/share/OVMF/OVMF_CODE_4M.fd"),
        Path("/usr/share/OVMF/OVMF_VARS_4M.fd"),
    )


def test_find_ovmf_needs_both_files_of_a_pair() -> None:
    present = {
        Path("/usr/share/OVMF/OVMF_CODE_4M.fd"),  # its VARS is missing
        Path("/usr/share/edk2/ovmf/OVMF_CODE.fd"),
        Path("/usr/share/edk2/ovmf/OVMF_VARS.fd"),
    }
    assert find_ovmf(present.__contains__) == (
        Path("/usr/share/edk2/ovmf/OVMF_CODE.fd"),
        Path("/usr/share/edk2/ovmf/OVMF_VARS.fd"),
    )
    assert find_ovmf(lambda _: False) is None


def test_find_ovmf_never_offers_secure_boot_builds() -> None:
    assert not any(
        "secboot" in str(p) or ".ms." in str(p) for pair in OVMF_CANDIDATES for p in pair
    )


def test_find_ovmf_on_this_host() -> None:
    assert find_ovmf() == (
        Path("/usr/share/OVMF/OVMF_CODE_4M.fd"),
        Path("/usr/share/OVMF/OVMF_VARS_4M.fd"),
    )


def test_find_ovmf_secure_pairs_the_smm_build_with_enrolled_keys() -> None:
    # Each pair is a Secure Boot code build and a template with keys (not the empty store,
    # in which OVMF would boot in Setup Mode, checking nothing).
    for code, variables in OVMF_SECURE_CANDIDATES:
        assert "secboot" in code.name or "smm" in code.name, code
        assert variables.name != "OVMF_VARS_4M.fd" and variables.name != "OVMF_VARS.fd"
    present = {Path(p) for pair in OVMF_SECURE_CANDIDATES for p in pair}
    assert find_ovmf_secure(present.__contains__) == (
        Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"),
        Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd"),
    )
    assert find_ovmf_secure(lambda _: False) is None


def test_find_ovmf_secure_on_this_host() -> None:
    assert find_ovmf_secure() == (
        Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"),
        Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd"),
    )


def test_vhost_available_on_this_host() -> None:
    # This kernel has no vhost-net (no /dev/vhost-net).
    assert vhost_available() is Path("/dev/vhost-net").exists()
