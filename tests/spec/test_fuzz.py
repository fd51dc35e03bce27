"""Whatever the input, loading either succeeds or raises SpecErrors with usable errors."""

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vdc_runtime.spec import DataCenter, SpecErrors, load_text

DATA = Path(__file__).parent / "data" / "full"
BASE: list[Any] = [doc for doc in yaml.safe_load_all((DATA / "cluster.yml").read_text()) if doc]

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(
        ["", "/", "..", "10.0.0.1/24", "10.0.0.0/24", "fd00::1", "1G", "image", "hostPath"]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def _locations(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key or index path inside a document."""
    found = []
    children = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else []
    )
    for key, child in children:
        found.append((*prefix, key))
        found.extend(_locations(child, (*prefix, key)))
    return found


LOCATIONS = [(i, loc) for i, doc in enumerate(BASE) for loc in _locations(doc)]


def _parent(docs: list[Any], index: int, loc: tuple[Any, ...]) -> Any:
    node = docs[index]
    for seg in loc[:-1]:
        node = node[seg]
    return node


def assert_loads_or_reports(text: str | bytes) -> None:
    try:
        result = load_text(text, source="fuzz.yml", base_dir=DATA)
    except SpecErrors as exc:
        assert exc.errors
        for error in exc.errors:
            assert error.file == "fuzz.yml"
            assert error.message.strip()
            assert str(error)
    else:
        assert isinstance(result, DataCenter)


def test_base_spec_is_valid() -> None:
    # If the base fails (e.g. the script lost its executable bit), mutations still test
    # robustness, but most of them would no longer reach the deeper checks.
    assert_loads_or_reports(yaml.safe_dump_all(BASE))


@st.composite
def mutated(draw: st.DrawFn) -> list[Any]:
    docs = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 4))):
        index, loc = draw(st.sampled_from(LOCATIONS))
        try:
            parent = _parent(docs, index, loc)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced the path
        key = loc[-1]
        if isinstance(parent, list):
            if not isinstance(key, int) or key >= len(parent):
                continue
        elif not isinstance(parent, dict) or key not in parent:
            continue
        op = draw(st.sampled_from(["drop", "replace", "rename", "junk", "case"]))
        if op == "drop":
            del parent[key]
        elif op == "replace":
            parent[key] = draw(values)
        elif isinstance(parent, dict):
            if op == "rename":
                parent[draw(st.text(min_size=1, max_size=12))] = parent.pop(key)
            elif op == "case":
                parent[draw(st.sampled_from([key.upper(), key.replace("-", "_"), key.title()]))] = (
                    parent.pop(key)
                )
            else:
                parent[draw(st.text(min_size=1, max_size=12))] = draw(values)
    return docs


@FAST
@given(mutated())
def test_mutated_spec(docs: list[Any]) -> None:
    assert_loads_or_reports(yaml.safe_dump_all(docs))


@FAST
@given(st.lists(values, max_size=4))
def test_random_documents(docs: list[Any]) -> None:
    assert_loads_or_reports(yaml.safe_dump_all(docs))


YAMLISH = st.text(
    alphabet=st.sampled_from(list("ab:-[]{},#&*!|>'\"%@`?~ \n\t0123456789./<")), max_size=80
)


@settings(max_examples=50, deadline=None)
@given(st.one_of(YAMLISH, st.text(max_size=60)))
def test_random_yaml_text(text: str) -> None:
    assert_loads_or_reports(text)


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=80))
def test_random_bytes(data: bytes) -> None:
    assert_loads_or_reports(data)
