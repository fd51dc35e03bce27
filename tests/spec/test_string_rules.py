"""Every constrained string type: the Python validator and the CRD's schema for it accept
exactly the same values.

The schema side is evaluated as the API server does: the field's schema as the CRD
generator emits it (`vdc_operator.crd`), its `pattern` and `not.pattern` run by RE2 (the
engine Go's regexp, and so the API server, implements), lengths in code points. The Python
side is the pydantic type itself. Values come from hypothesis: arbitrary text, text over
the characters each rule cares about, values generated from the rule's own expression, and
those values mutated (a character doubled, inserted, appended: `1.5G` -> `1.5GG`), plus a
list of known traps.
"""

from __future__ import annotations

from typing import Any

import pytest
import re2
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from vdc_operator.crd import _Converter
from vdc_runtime.resource import spec as cr
from vdc_runtime.spec import fields, strings

TYPES: dict[str, tuple[Any, strings.StringRule]] = {
    "Name": (fields.Name, strings.NAME),
    "FileName": (fields.FileName, strings.FILE_NAME),
    "NetworkName": (fields.NetworkName, strings.NETWORK_NAME),
    "NodeName": (fields.NodeName, strings.NODE_NAME),
    "NetNSName": (fields.NetNSName, strings.NETNS_NAME),
    "Size": (fields.Size, strings.SIZE),
    "SHA256": (fields.SHA256, strings.SHA256),
    "MAC": (fields.MAC, strings.MAC),
    "URL": (fields.URL, strings.HTTP_URL),
    "Duration": (cr.Duration, strings.DURATION),
    "ObjectName": (cr.ObjectName, strings.OBJECT_NAME),
    "DataKey": (cr.DataKey, strings.DATA_KEY),
    "Quantity": (cr.Quantity, strings.QUANTITY),
    "RelativePath": (cr.RelativePath, strings.RELATIVE_PATH),
    "HostDirectory": (cr.HostDirectory, strings.HOST_DIRECTORY),
    "RunnerLabel": (cr.RunnerLabel, strings.RUNNER_LABEL),
    "GitHubURL": (cr.GitHubURL, strings.GITHUB_URL),
}

TRAPS = [
    "", " ", ".", "..", "...", "/", "a/b", "a b", "a\tb", "a\x0bb", "a\u00a0b", "a\u2028b",
    "a\x00b", "x\n", "\nx", "a:b",
    "1", "0", "00", "0K", "0.0G", "0.5G", "1.5", "1.5G", "1.5GG", "1.G", ".5G", "1e3", "-1",
    "1K\n", "10g", "512MiB", "٣G",
    "0" * 64, "f" * 63, "F" * 65,
    "52:54:00:12:34:56", "53:54:00:12:34:56", "00:00:00:00:00:00", "02:00:00:00:00:00",
    "52-54-00-12-34-56", "52:54:00:12:34:5g",
    "http://h", "https://h/x y", "ftp://h/x", "http://", "http:///x", "HTTP://H/",
    "90s", "2h30m", "1.5h", "s", "0s", "1ms1h", "-1s",
    "a.b-c", "A", "-a", "a-", "a..b",
    "500m", "2Gi", "1.5", "+1", "1e3", ".5",
    "a/b/c", "/etc", "a//b", "./a", "a/.", "a/..", "..a", "a/...",
    "/", "//", "/x",
    "vdc-lab", "_x", "x_", "x" * 65,
    "https://github.com/acme", "https://github.com/acme/infra", "https://github.com/acme/infra.git",
    "https://github.com/acme/.git", "https://github.com/acme/..git", "https://github.com/acme/...git",
    "https://github.com/acme/....git", "https://github.com/acme/git", "https://github.com:/acme",
    "https://github.com:65535/acme", "https://github.com:65536/acme", "https://github.com:00080/a",
    "https://api.github.com/acme", "https://API.GitHub.com:8443/acme", "https://user@github.com/a",
    "https://github.com/acme/infra/", "https://github.com/acme/infra/x", "https://github.com/-a",
    "https://[::1]:8443/acme/x.y_z", "https://[::::]/acme", "https://[1::2::3]/a", "HTTPS://GHE/a_",
    " https://github.com/acme", "https://github.com/acme?x=1", "https://ghe.example/a_",
]  # fmt: skip


def crd_schema(tp: Any) -> dict[str, Any]:
    """The field's schema as the CRD carries it."""
    raw = TypeAdapter(tp).json_schema()
    return _Converter({}, camelize=True).convert(raw)


def schema_accepts(schema: dict[str, Any], value: str) -> bool:
    assert schema["type"] == "string"
    if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", 1 << 30):
        return False
    if "pattern" in schema and re2.search(schema["pattern"], value) is None:
        return False
    return "not" not in schema or re2.search(schema["not"]["pattern"], value) is None


def python_accepts(tp: Any, value: str) -> bool:
    try:
        TypeAdapter(tp).validate_python(value)
    except ValidationError:
        return False
    return True


def agree(name: str, value: str) -> None:
    tp, _ = TYPES[name]
    schema = crd_schema(tp)
    python, api = python_accepts(tp, value), schema_accepts(schema, value)
    assert python == api, f"{name} {value!r}: Python {'accepts' if python else 'refuses'} it,"
    f" the CRD {'accepts' if api else 'refuses'} it"


@pytest.mark.parametrize("name", TYPES)
def test_the_crd_schema_is_the_rule(name: str) -> None:
    tp, rule = TYPES[name]
    schema = crd_schema(tp)
    assert {k: v for k, v in schema.items() if k != "description"} == {
        k: v for k, v in rule.json_schema().items() if k != "description"
    }
    for expression in (rule.regex, rule.forbidden):
        if expression is not None:
            re2.compile(expression)  # RE2 (the API server's engine) takes it as written


@pytest.mark.parametrize("name", TYPES)
@pytest.mark.parametrize("value", TRAPS)
def test_traps(name: str, value: str) -> None:
    agree(name, value)


def test_the_size_that_started_it() -> None:
    assert not python_accepts(fields.Size, "1.5GG")
    assert not schema_accepts(crd_schema(fields.Size), "1.5GG")


def _mutated(rule: strings.StringRule) -> st.SearchStrategy[str]:
    base = st.from_regex(rule.regex or ".+", fullmatch=True)
    noise = st.sampled_from([*"0.9Gg:/-_ \n\t\x00aZ.@?#[]", "\u00a0", "٣"])

    def mutate(value: str, char: str, where: int, how: int) -> str:
        i = where % (len(value) + 1)
        if how == 0:
            return value[:i] + char + value[i:]
        if how == 1 and value:
            j = min(i, len(value) - 1)
            return value[: j + 1] + value[j] + value[j + 1 :]  # a character doubled
        if how == 2:
            return value[:i] + value[i + 1 :]
        return value + char

    return st.builds(mutate, base, noise, st.integers(0, 200), st.integers(0, 3))


def _values(rule: strings.StringRule) -> st.SearchStrategy[str]:
    generated = [st.from_regex(rule.regex, fullmatch=True)] if rule.regex else []
    forbidden = [st.from_regex(rule.forbidden, fullmatch=True)] if rule.forbidden else []
    return st.one_of(
        st.text(max_size=80),
        st.text(alphabet="0123456789.:/-_abcfgkmsxAGKMT \n", max_size=40),
        *generated,
        *forbidden,
        _mutated(rule),
    )


@pytest.mark.parametrize("name", TYPES)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
@example(data=None)
def test_python_and_the_crd_agree(name: str, data: st.DataObject | None) -> None:
    _, rule = TYPES[name]
    if data is None:  # the explicit example: the trap that started it
        agree(name, "1.5GG")
        return
    agree(name, data.draw(_values(rule)))


@pytest.mark.parametrize(
    ("size", "bare", "expected"),
    [("512", 1, 512), ("512", 1 << 20, 512 << 20), ("1.5G", 1, 3 << 29), ("2k", 1, 2048),
     ("0.5T", 1, 1 << 39), ("007M", 1, 7 << 20)],
)  # fmt: skip
def test_one_size_parser(size: str, bare: int, expected: int) -> None:
    assert fields.size_bytes(size, bare_unit=bare) == expected


def test_size_parser_refuses_what_the_rule_refuses() -> None:
    for bad in ("1.5GG", "0", "1.5", "x"):
        with pytest.raises(ValueError):
            fields.size_bytes(bad)
