"""Bad input to `vdc run`: always a clear error, never a traceback, never a created object."""

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.runtime.harness import HostNetns, VdcRun, assert_no_leftovers, snapshot

pytestmark = [pytest.mark.root, pytest.mark.slow]

VALID = [
    {
        "kind": "Network",
        "name": "bxnet",
        "type": "external",
        "use-nat": True,
        "address": "10.6.0.1/24",
    },
    {"kind": "Network", "name": "bxint", "type": "internal"},
    {
        "kind": "NetworkNamespace",
        "name": "bxns",
        "interfaces": [
            {"network": "bxnet", "addresses": ["10.6.0.2/24"]},
            {"network": "bxint", "addresses": ["10.7.0.1/24"]},
        ],
        "apps": [{"name": "a", "command": ["sleep", "30"]}],
    },
]

junk = st.one_of(
    st.none(), st.integers(-5, 70000), st.text(max_size=20), st.booleans(),
    st.lists(st.text(max_size=5), max_size=3), st.just("10.6.0.0/33"), st.just("missing-net"),
)  # fmt: skip


def _paths(node, prefix=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield (*prefix, i)
            yield from _paths(v, (*prefix, i))


@st.composite
def broken_specs(draw):
    docs = copy.deepcopy(VALID)
    paths = list(_paths(docs))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "delete", "junk-key"]))
        try:  # an earlier mutation may have removed this path
            parent = docs
            for step in path[:-1]:
                parent = parent[step]
            if action == "replace":
                parent[path[-1]] = draw(junk)
            elif action == "delete":
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[draw(st.sampled_from(["use_nat", "adress", "Kind2", "apps2"]))] = 1
        except (KeyError, IndexError, TypeError):
            continue
    return docs


def _is_valid(docs) -> bool:
    """Whether `vdc run` takes it: read as Placemat reads files, its default (a junk key
    alone is a warning then)."""
    from vdc_runtime.spec import SpecError, SpecErrors, load_text

    warnings: list[SpecError] = []
    try:
        text = yaml.safe_dump_all(docs)
        load_text(text, source="x.yml", base_dir=Path("."), strict=False, warnings=warnings)
    except SpecErrors:
        return False
    return True


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
)
@given(docs=broken_specs())
def test_broken_spec_creates_nothing(
    host: HostNetns, tmp_path_factory: pytest.TempPathFactory, docs
) -> None:
    assume(not _is_valid(docs))  # a mutation that stays valid is not this test's subject
    tmp = tmp_path_factory.mktemp("bad")
    spec = tmp / "bad.yml"
    spec.write_text(yaml.safe_dump_all(docs))
    before = snapshot(host)
    run = VdcRun(host, [spec], tmp / "run")
    assert run.run_to_exit(30) == 1
    out = run.output
    assert "Traceback" not in out, out
    assert "bad.yml: document" in out and "nothing was created" in out, out
    assert_no_leftovers(before, host)
    assert not (tmp / "run").exists()
