"""The VirtualDataCenter spec: the same models and rules as Placemat YAML, in a CR's keys."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.spec.conftest import DATA
from vdc_runtime.resource import spec as cr
from vdc_runtime.resource.convert import convert, dump, to_manifest
from vdc_runtime.resource.manifests import check
from vdc_runtime.spec import DataCenter, SpecErrors, load_files

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def quickstart() -> dict[str, Any]:
    docs = yaml.safe_load_all((EXAMPLES / "vdc-quickstart.yaml").read_text())
    return next(d for d in docs if d["kind"] == cr.KIND)


def errors(spec: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecErrors) as info:
        cr.load(spec)
    return [str(e) for e in info.value.errors]


def test_quickstart_example_is_valid() -> None:
    dc = cr.load(quickstart()["spec"])
    assert [n.name for n in dc.nodes] == ["worker-1", "worker-2"]
    worker = dc.nodes[0]
    assert worker.boot_order == ["network"]
    assert worker.readiness is not None and worker.readiness.console == "VDC-GUEST-READY"
    assert worker.interfaces[0].mac == "52:54:00:48:00:11"
    assert dc.bmc is not None and dc.bmc.users[0].password_file is not None


def without_tls(dc: DataCenter) -> DataCenter:
    """TLS files cannot become inline content (they belong in a Secret)."""
    return dc.model_copy(update={"bmc": dc.bmc.model_copy(update={"tls": None})} if dc.bmc else {})


def test_convert_warns_of_paths_and_writes_text_as_blocks(full_dir: Path) -> None:
    dc = load_files([full_dir / "cluster.yml"])
    no_tls = dc.model_copy(
        update={"bmc": dc.bmc.model_copy(update={"tls": None})} if dc.bmc else {}
    )
    conversion = convert(no_tls, "full", "labs")
    fields = [w.split(":", 1)[0] for w in conversion.warnings]
    hostpath = next(
        f"spec.nodes[{i}].volumes[{j}].path"
        for i, node in enumerate(dc.nodes)
        for j, volume in enumerate(node.volumes)
        if volume.kind == "hostPath"
    )
    image = next(i for i, image in enumerate(dc.images) if image.file is not None)
    assert fields == [f"spec.images[{image}].file", hostpath, "spec.deviceClasses[0].path"]
    assert "url:" in conversion.warnings[0] and "imageCache" in conversion.warnings[0]
    text = dump(conversion.manifest)
    assert yaml.safe_load(text) == conversion.manifest  # the same manifest, only easier to read
    script = no_tls.netns[0].init_scripts[0].read_text()
    assert "\n" in script.strip()
    # A literal block: the script's lines as they are, indented, after `inline: |`.
    first, second = script.splitlines()[:2]
    assert "inline: |\n" in text and f"  {first}\n" in text and f"  {second}\n" in text


def test_placemat_files_round_trip_through_a_cr(full_dir: Path) -> None:
    """Every Placemat kind and key: YAML -> VirtualDataCenter -> the same data center,
    with each file's content where the file was."""
    yaml_dc = load_files([full_dir / "cluster.yml"])
    no_tls = without_tls(yaml_dc)
    manifest = to_manifest(no_tls, "full")
    assert manifest["apiVersion"] == "vdc.dev/v1alpha1" and manifest["kind"] == cr.KIND
    contents: dict[Path, bytes] = {}

    def resolve(source: cr.FileSource, where: str, executable: bool) -> Path:
        path = Path("/cr") / where
        contents[path] = (source.inline or "").encode()
        return path

    cr_dc = cr.load(manifest["spec"], resolve)
    assert cr_dc.summary() == no_tls.summary()
    assert cr_dc.networks == no_tls.networks
    assert cr_dc.images == no_tls.images
    for a, b in zip(cr_dc.nodes, no_tls.nodes, strict=True):
        plain = {"ignition", "kernel", "initrd", "volumes"}
        assert a.model_dump(exclude=plain) == b.model_dump(exclude=plain)
        for key in ("ignition", "kernel", "initrd"):
            mine, theirs = getattr(a, key), getattr(b, key)
            assert (mine is None) == (theirs is None)
            if mine is not None:
                assert contents[mine] == theirs.read_bytes()
    for a, b in zip(cr_dc.netns, no_tls.netns, strict=True):
        assert [contents[p] for p in a.init_scripts] == [p.read_bytes() for p in b.init_scripts]


def test_camel_case_keys_and_every_error_at_its_cr_path() -> None:
    spec = {
        "networks": [{"name": "pxe", "type": "internal", "address": "10.0.0.1/24", "usenat": 1}],
        "nodes": [
            {
                "name": "n1",
                "cpu": 1,
                "smp": {"cpus": 2, "maxcpus": 1},
                "interfaces": [{"network": "pxf"}],
                "kernel": {"image": "k", "inline": "x"},
                "volumes": [{"kind": "localds", "name": "seed", "userData": {}, "size": "1G"}],
            }
        ],
    }
    assert errors(spec) == [
        "spec.networks[0].usenat: unknown key 'usenat'; did you mean 'useNat'?",
        "spec.nodes[0].volumes[0].userData: give exactly one of: inline, configMapKeyRef,"
        " secretKeyRef, image",
        "spec.nodes[0].volumes[0].size: unknown key 'size' for a volume of kind localds;"
        " it belongs to kind raw",
        "spec.nodes[0].kernel: give exactly one of: inline, configMapKeyRef, secretKeyRef, image",
    ]
    spec["networks"][0].pop("usenat")
    del spec["nodes"][0]["kernel"]
    spec["nodes"][0]["volumes"] = []
    spec["nodes"][0]["initrd"] = {"inline": "x"}
    assert errors(spec) == [
        "spec.networks[0].address: an internal network has no host address; remove it or use"
        " type external",
        "spec.nodes[0].smp: 'cpu' and 'smp' are exclusive; give only one",
        "spec.nodes[0].smp.maxcpus: must be at least cpus (2)",
        "spec.nodes[0].initrd: 'initrd' is only used with 'kernel' (direct boot)",
        "spec.nodes[0].interfaces[0].network: no Network named 'pxf' is defined; did you mean"
        " 'pxe'?",
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s["nodes"][0].update(kernel={"image": "nope"}),
         "spec.nodes[0].kernel.image: no Image named 'nope' is defined"),
        (lambda s: s["files"].append(dict(s["files"][0])),
         "spec.files[6].path: duplicate path 'boot/vmlinuz' (files[0])"),
        (lambda s: s["files"][0].update(path="/etc/passwd"),
         "spec.files[0].path: '/etc/passwd' must be a relative path inside the working"
         " directory (no leading '/', no '..')"),
        (lambda s: s["files"][0].update(path="a/../../b"),
         "spec.files[0].path: 'a/../../b' must be a relative path"),
        (lambda s: s["bmc"]["users"][0].update(password="x"),
         "spec.bmc.users[0]: give exactly one of 'password' or 'passwordSecretRef'"),
        (lambda s: s["bmc"]["users"][0]["passwordSecretRef"].update(name="Bad_Name"),
         "spec.bmc.users[0].passwordSecretRef.name: 'Bad_Name' is not a Kubernetes object name"),
        (lambda s: s["nodes"][1]["interfaces"][0].update(mac="52:54:00:48:00:11"),
         "spec.nodes[1].interfaces[0].mac: MAC 52:54:00:48:00:11 is already used at"
         ' spec.nodes[0] (Node "worker-1"), interfaces[0].mac'),
        (lambda s: s["nodes"][1].update(name="worker-1"),
         "spec.nodes[1].name: duplicate Node name 'worker-1'; first defined in spec.nodes[0]"),
        (lambda s: s["nodes"][0].update(bmc={"address": "10.99.0.1"}),
         "spec.nodes[0].bmc.address: 10.99.0.1 is not inside any bmc network"),
        (lambda s: s["nodes"][0]["readiness"].update(console="(unclosed"),
         "spec.nodes[0].readiness.console: '(unclosed' is not a regular expression"),
        (lambda s: s["nodes"][0]["readiness"].update(console="x*"),
         "spec.nodes[0].readiness.console: 'x*' matches an empty text"),
        (lambda s: s.update(pod={"imageCache": {}}),
         "spec.pod.imageCache: give exactly one of: emptyDir, persistentVolumeClaim, hostPath"),
        (lambda s: s.update(pod={"tolerations": [{"effect": "Sometimes"}]}),
         "spec.pod.tolerations[0].effect: invalid value 'Sometimes'"),
        (lambda s: s.update(accel="fast"),
         "spec.accel: invalid value 'fast' (expected one of: 'auto', 'kvm', 'tcg')"),
        (lambda s: s["networkNamespaces"][0]["apps"][0].update(restart="sometimes"),
         "spec.networkNamespaces[0].apps[0].restart: invalid value 'sometimes'"),
    ],
)  # fmt: skip
def test_invalid_specs(change: Any, message: str) -> None:
    spec = copy.deepcopy(quickstart()["spec"])
    change(spec)
    found = errors(spec)
    assert any(e.startswith(message) for e in found), found


def test_sources_are_what_the_pod_mounts() -> None:
    spec = cr.parse(quickstart()["spec"])
    refs = [(s.secret_key_ref.name, s.secret_key_ref.key) for s in cr.sources(spec)
            if s.secret_key_ref]  # fmt: skip
    assert refs == [("quickstart-bmc", "admin")]
    assert sum(1 for s in cr.sources(spec) if s.image) == 2
    tls = cr.parse({"bmc": {"tls": {"secretName": "bmc-tls"}}})
    keys = [s.secret_key_ref.key for s in cr.sources(tls) if s.secret_key_ref]
    assert keys == ["tls.crt", "tls.key"]


def test_an_empty_spec_is_an_empty_data_center() -> None:
    empty = "0 networks, 0 network namespaces, 0 nodes, 0 images, 0 device classes"
    assert cr.load({}).summary() == empty
    assert cr.load(None).nodes == []


def test_camel() -> None:
    assert cr.camel("use_nat") == "useNat"
    assert cr.camel("config_map_key_ref") == "configMapKeyRef"
    assert cr.camel("name") == "name"


def test_placemat_data_has_no_cr_only_keys() -> None:
    # A Placemat file keeps its kebab-case keys: a CR's spelling there is an unknown key.
    from tests.spec.conftest import spec_errors

    found = spec_errors("kind: Network\nname: n\ntype: internal\nuseNat: true\n")
    assert [e.message for e in found] == ["unknown key 'useNat'; did you mean 'use-nat'?"]
    assert (DATA / "full" / "cluster.yml").is_file()


def test_convert_puts_larger_files_in_a_configmap(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    small = tmp_path / "small.sh"
    small.write_text("#!/bin/sh\ntrue\n")
    # Two files of one name and different content get a key each.
    for folder, route in (("a", "10.0.0.0/8"), ("b", "172.16.0.0/12")):
        (tmp_path / folder / "init.sh").write_text(f"#!/bin/sh\nip route add {route} dev eth0\n")
    for script in (small, tmp_path / "a" / "init.sh", tmp_path / "b" / "init.sh"):
        script.chmod(0o755)
    spec = tmp_path / "lab.yml"
    spec.write_text(
        "kind: Network\nname: n0\ntype: internal\n---\n"
        "kind: NetworkNamespace\nname: r\ninterfaces: [{network: n0, addresses: [10.1.0.1/24]}]\n"
        "init-scripts: [small.sh, a/init.sh, b/init.sh]\n"
    )
    conversion = convert(load_files([spec]), "lab", "labs", configmap="lab-files", inline_max=20)
    scripts = conversion.manifest["spec"]["networkNamespaces"][0]["initScripts"]
    assert scripts[0] == {"inline": "#!/bin/sh\ntrue\n"}
    assert [s["configMapKeyRef"] for s in scripts[1:]] == [
        {"name": "lab-files", "key": "init.sh"},
        {"name": "lab-files", "key": "init.sh-2"},
    ]
    configmap = conversion.configmap
    assert configmap is not None and configmap["metadata"] == {"name": "lab-files",
                                                                "namespace": "labs"}  # fmt: skip
    assert configmap["data"]["init.sh-2"].endswith("172.16.0.0/12 dev eth0\n")
    docs = list(yaml.safe_load_all(dump(*conversion.documents)))
    assert [d["kind"] for d in docs] == ["ConfigMap", cr.KIND]
    report = check("lab.yaml", docs)
    assert not report.errors and report.skipped == ['ConfigMap "lab-files"']
