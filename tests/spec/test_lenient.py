"""Placemat files read as Placemat reads them: what it ignores is a warning, `strict` refuses
it. Line numbers are of github.com/cybozu-go/placemat v2.4.11, module `v2/`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vdc_runtime.resource import spec as cr
from vdc_runtime.spec import SpecError, SpecErrors, load_text
from vdc_runtime.spec.goyaml import plain_scalar_as_string
from vdc_runtime.spec.models import (
    KINDS,
    SMBIOS,
    App,
    HostPathVolume,
    ImageVolume,
    LocaldsVolume,
    NetNSInterface,
    RawVolume,
)
from vdc_runtime.spec.scalars import PLACEMAT_STRINGS


def lenient(text: str, tmp_path: Path) -> tuple[object, list[str]]:
    warnings: list[SpecError] = []
    dc = load_text(text, "lab.yml", tmp_path, strict=False, warnings=warnings)
    return dc, [str(w) for w in warnings]


def strict_errors(text: str, tmp_path: Path) -> list[str]:
    with pytest.raises(SpecErrors) as info:
        load_text(text, "lab.yml", tmp_path)
    return [str(e) for e in info.value.errors]


NODE = "kind: Node\nname: n1\nsmp: {cpus: 1}\nmemory: 1G\n"


def test_unknown_keys_are_ignored_with_a_did_you_mean(tmp_path: Path) -> None:
    """pkg/types/cluster.go:337 decodes each document with sigs.k8s.io/yaml's Unmarshal, which
    is not strict: keys no struct field names are dropped without a word."""
    text = "kind: Network\nname: n0\ntype: internal\nuse_nat: false\nlabels: {rack: 1}\n"
    dc, warnings = lenient(text, tmp_path)
    assert warnings == [
        "lab.yml: document 1 (Network \"n0\"): use_nat: ignored: unknown key 'use_nat';"
        " did you mean 'use-nat'?",
        "lab.yml: document 1 (Network \"n0\"): labels: ignored: unknown key 'labels'",
    ]
    assert [n.name for n in dc.networks] == ["n0"]  # type: ignore[attr-defined]
    assert len(strict_errors(text, tmp_path)) == 2


def test_keys_of_another_volume_kind_and_of_placemat_v1_are_ignored(tmp_path: Path) -> None:
    """pkg/types/cluster.go:229-243: one NodeVolumeSpec struct for every kind, so `size` on an
    image volume decodes and is never read; a v1 key such as `folder` is not in it at all."""
    (tmp_path / "share").mkdir()
    text = (
        NODE + "volumes:\n"
        "- {kind: image, name: root, image: img, size: 10G}\n"
        f"- {{kind: hostPath, name: ign, path: {tmp_path / 'share'}, folder: ignitions}}\n"
        "---\nkind: Image\nname: img\nurl: https://example.com/root.img\n"
    )
    dc, warnings = lenient(text, tmp_path)
    assert warnings == [
        "lab.yml: document 1 (Node \"n1\"): volumes[0].size: ignored: unknown key 'size'"
        " for a volume of kind image; it belongs to kind raw",
        "lab.yml: document 1 (Node \"n1\"): volumes[1].folder: ignored: unknown key 'folder'",
    ]
    assert [v.name for v in dc.nodes[0].volumes] == ["root", "ign"]  # type: ignore[attr-defined]
    assert len(strict_errors(text, tmp_path)) == 2


def test_a_bridge_may_have_its_networks_own_address(tmp_path: Path) -> None:
    """pkg/dcnet/network.go:44 parses the address with netlink.ParseAddr and :74 adds it to
    the bridge as it is; the kernel accepts 10.0.0.0/22 there."""
    text = "kind: Network\nname: ext\ntype: external\naddress: 10.0.0.0/22\n"
    dc, warnings = lenient(text, tmp_path)
    assert str(dc.networks[0].address) == "10.0.0.0/22"  # type: ignore[attr-defined]
    assert warnings == [
        "lab.yml: document 1 (Network \"ext\"): address: '10.0.0.0/22' is the network address"
        " of 10.0.0.0/22; the bridge gets it as written, as with Placemat"
    ]
    assert strict_errors(text, tmp_path) == [
        "lab.yml: document 1 (Network \"ext\"): address: '10.0.0.0/22' is the network address"
        " of 10.0.0.0/22, not a host address"
    ]


def test_what_placemat_fails_on_stays_an_error(tmp_path: Path) -> None:
    """Leniency covers only what Placemat ignores. An address without a prefix length fails
    netlink.ParseAddr (pkg/dcnet/network.go:44-47) and a namespace on no network fails to
    find its bridge (pkg/dcnet/netns.go:71), so both stay errors, warnings shown beside."""
    text = (
        "kind: Network\nname: ext\ntype: external\naddress: 10.0.0.1\ncolour: red\n---\n"
        "kind: NetworkNamespace\nname: r\ninterfaces:\n- network: nowhere\n"
    )
    warnings: list[SpecError] = []
    with pytest.raises(SpecErrors) as info:
        load_text(text, "lab.yml", tmp_path, strict=False, warnings=warnings)
    assert [e.path for e in info.value.errors] == ["address", "interfaces[0].network"]
    assert [w.path for w in warnings] == ["colour"]


def test_lenient_reading_needs_somewhere_for_its_warnings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="warnings"):
        load_text("kind: Network\nname: n\ntype: internal\n", strict=False)


def test_the_cr_stays_strict() -> None:
    with pytest.raises(SpecErrors) as info:
        cr.parse({"networks": [{"name": "n0", "type": "internal", "colour": "red"}]})
    assert "unknown key 'colour'" in str(info.value)


# -- scalars in string fields -------------------------------------------------------------------

GOLDEN = Path(__file__).with_name("goyaml") / "golden.json"


def test_plain_scalars_become_the_text_placemats_decoder_makes() -> None:
    """A contract test against the real decoder: tests/spec/goyaml/main.go decodes each line of
    inputs.txt as `s: <line>` into a string field with sigs.k8s.io/yaml v1.6.0 and go-yaml
    v2.4.3, Placemat v2.4.11's versions (go.mod), and golden.json holds what it got. To
    regenerate: `cd tests/spec/goyaml && go run . < inputs.txt > golden.json`."""
    golden = json.loads(GOLDEN.read_text())
    assert len(golden) > 100
    wrong = {
        text: (expected, plain_scalar_as_string(text))
        for text, expected in golden.items()
        if plain_scalar_as_string(text) != expected
    }
    assert not wrong, wrong


def test_numbers_and_booleans_in_string_fields_are_text(tmp_path: Path) -> None:
    """pkg/types/cluster.go:337 decodes with sigs.k8s.io/yaml, whose Unmarshal turns a YAML
    number or boolean into text where the Go field is a string (yaml.go, convertToJSONableObject):
    an app's `command`, an SMBIOS serial."""
    text = (
        "kind: Network\nname: net0\ntype: internal\n---\n"
        "kind: NetworkNamespace\nname: r\ninterfaces: [{network: net0, addresses: [10.0.0.1/24]}]\n"
        "apps:\n- name: web\n  command: [python3, -m, http.server, 8000, 0x1F, '0x1F', yes]\n"
        "---\n" + NODE + "smbios: {serial: 12345678}\n"
    )
    dc, warnings = lenient(text, tmp_path)
    app = dc.netns[0].apps[0]  # type: ignore[attr-defined]
    assert app.command == ["python3", "-m", "http.server", "8000", "31", "0x1F", "true"]
    assert dc.nodes[0].smbios.serial == "12345678"  # type: ignore[attr-defined]
    where = 'lab.yml: document 2 (NetworkNamespace "r"): apps[0].command'
    advice = "as Placemat reads it; quote it to keep it as written"
    assert warnings == [
        f"{where}[4]: '0x1F' is read as '31', {advice}",
        f"{where}[6]: 'yes' is read as 'true', {advice}",
    ]
    errors = strict_errors(text, tmp_path)
    assert any("command[3]" in e and "8000" in e for e in errors), errors


def test_only_placemats_own_string_fields_are_read_so(tmp_path: Path) -> None:
    """vdc's additions are read as YAML reads them: `restart: no` is an app's policy (an
    app has no restart key in Placemat's NetNSAppSpec, pkg/types/cluster.go)."""
    text = (
        "kind: Network\nname: net0\ntype: internal\n---\n"
        "kind: NetworkNamespace\nname: r\ninterfaces: [{network: net0, addresses: [10.0.0.1/24]}]\n"
        "apps:\n- {name: web, command: [sleep, infinity], restart: no}\n"
    )
    dc, warnings = lenient(text, tmp_path)
    assert dc.netns[0].apps[0].restart == "no" and warnings == []  # type: ignore[attr-defined]


def test_the_table_of_placemats_strings_names_real_keys() -> None:
    volumes = (ImageVolume, LocaldsVolume, RawVolume, HostPathVolume)
    models = {m.__name__: m for m in (*KINDS.values(), App, NetNSInterface, SMBIOS, *volumes)}

    def keys_of(*classes: type) -> set[str]:
        return {info.alias or f for c in classes for f, info in c.model_fields.items()}  # type: ignore[attr-defined]

    for name, keys in PLACEMAT_STRINGS.items():
        # Placemat has one volume struct: its keys are spread over vdc's volume kinds.
        known = keys_of(*volumes) if models[name] in volumes else keys_of(models[name])
        assert keys - {"kind"} <= known, (name, keys - known)
