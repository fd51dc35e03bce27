"""Every constrained string's one definition, for the Python validators and the CRD alike.

A `StringRule` is a regular expression the whole value must match, length bounds, and
optionally a regular expression it must not match. The field types in `fields` and `cr`
validate with `accepts()` and put `json_schema()` into the models' schema, from which the
CRD is generated, so `kubectl apply` and vdc refuse exactly the same values.

The expressions are written in the subset on which Python's `re` and RE2 (Go's regexp,
which the API server evaluates `pattern` with) agree: explicit character classes instead
of `\\s`, `\\d` or `\\w` (Python's are Unicode-wide, RE2's ASCII), no lookaround or
backreferences (RE2 has none). tests/spec/test_string_rules.py checks the agreement with
RE2 itself on generated and adversarial values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# ASCII white space as both engines (and the kernel's isspace()) know it; \x0b is \v.
_SPACE = r" \t\n\x0b\f\r"


@dataclass(frozen=True)
class StringRule:
    regex: str | None = None
    """Matched against the whole value (RE2 syntax); None: any text."""
    min_length: int = 1
    max_length: int | None = None
    forbidden: str | None = None
    """Matched against the whole value; a match refuses it (JSON schema `not`)."""
    _compiled: tuple[re.Pattern[str] | None, re.Pattern[str] | None] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        compiled = (
            re.compile(self.regex) if self.regex is not None else None,
            re.compile(self.forbidden) if self.forbidden is not None else None,
        )
        object.__setattr__(self, "_compiled", compiled)

    def accepts(self, value: str) -> bool:
        if len(value) < self.min_length:
            return False
        if self.max_length is not None and len(value) > self.max_length:
            return False
        pattern, forbidden = self._compiled
        if pattern is not None and pattern.fullmatch(value) is None:
            return False
        return forbidden is None or forbidden.fullmatch(value) is None

    def json_schema(self, **extra: Any) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string"}
        if self.min_length:
            schema["minLength"] = self.min_length
        if self.max_length is not None:
            schema["maxLength"] = self.max_length
        if self.regex is not None:
            schema["pattern"] = f"^(?:{self.regex})$"
        if self.forbidden is not None:
            schema["not"] = {"pattern": f"^(?:{self.forbidden})$"}
        return schema | extra


_DOT_NAMES = r"\.\.?"  # "." and "..": not usable as a file or interface name

NAME = StringRule()
"""Any non-empty text: names that are only labels or keys."""

FILE_NAME = StringRule(r"[^/\x00]+", forbidden=_DOT_NAMES)

# Linux limits from dev_valid_name(): IFNAMSIZ is 16 including the terminating NUL.
IFNAME_MAX = 15
NETWORK_NAME = StringRule(rf"[^/:\x00{_SPACE}]+", max_length=IFNAME_MAX, forbidden=_DOT_NAMES)
"""A Network's name is its bridge's name: a valid Linux interface name."""

# A node's name ends up in unix socket paths (108 bytes including the NUL) next to the run
# dir; 63 leaves room for a reasonable run dir and matches a DNS label, which guests may use.
NODE_NAME_MAX = 63
NODE_NAME = StringRule(rf"[^/\x00{_SPACE}]+", max_length=NODE_NAME_MAX, forbidden=_DOT_NAMES)

NETNS_NAME_MAX = 64
NETNS_NAME = StringRule(rf"[^/\x00{_SPACE}]+", max_length=NETNS_NAME_MAX, forbidden=_DOT_NAMES)
"""A namespace's name is a file under /run/netns."""

# A group's name is part of its pod's name and host name (`vdc-<vdc>-<group>`), so it is a
# DNS label, kept short enough to leave the VDC's name room in the label's 63 characters.
GROUP_NAME_MAX = 20
GROUP_NAME = StringRule("[a-z0-9](?:[-a-z0-9]*[a-z0-9])?", max_length=GROUP_NAME_MAX)

_UNIT = "[KMGTkmgt]"
_NONZERO_INT = "0*[1-9][0-9]*"
SIZE = StringRule(
    rf"{_NONZERO_INT}{_UNIT}?|(?:{_NONZERO_INT}\.[0-9]+|[0-9]+\.[0-9]*[1-9][0-9]*){_UNIT}",
    max_length=32,
)
"""A size in QEMU's syntax, greater than zero: a number with an optional K/M/G/T suffix (a
fraction needs one)."""

SHA256 = StringRule("[0-9a-fA-F]{64}")

# The lowest bit of the first byte set means multicast: a NIC needs a unicast address.
MAC = StringRule("[0-9a-fA-F][02468aAcCeE](?::[0-9a-fA-F]{2}){5}", forbidden="00(?::00){5}")

HTTP_URL = StringRule(
    r"[hH][tT][tT][pP][sS]?://[^/?#\x00-\x20\x7f]+(?:[/?#][^\x00-\x20\x7f]*)?",
    max_length=4096,
)
"""An http:// or https:// URL with a host and no white space or control characters."""

DURATION = StringRule("(?:[0-9]+(?:h|ms|m|s))+", max_length=32)
"""Go's duration syntax without fractions or signs, as kubectl takes it: 90s, 2h30m."""

# Kubernetes' own limits and grammar (k8s.io/apimachinery validation).
DNS_SUBDOMAIN_MAX = 253
OBJECT_NAME = StringRule(
    r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*",
    max_length=DNS_SUBDOMAIN_MAX,
)
"""A ConfigMap's or Secret's name (a DNS subdomain)."""

DATA_KEY = StringRule("[-._a-zA-Z0-9]+", max_length=DNS_SUBDOMAIN_MAX, forbidden=r"\.|\.\..*")
"""A ConfigMap or Secret key: not '.', and no leading '..' (IsConfigMapKey)."""

QUANTITY = StringRule(r"[0-9]+(?:\.[0-9]+)?(?:m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?", max_length=64)
"""A Kubernetes resource quantity in its plain forms (`500m`, `2Gi`, `1.5`)."""

_COMPONENT = r"(?:[^/\x00.][^/\x00]*|\.[^/\x00.][^/\x00]*|\.\.[^/\x00]+)"  # not . or ..
RELATIVE_PATH = StringRule(rf"{_COMPONENT}(?:/{_COMPONENT})*", max_length=1024)
"""A path inside a working directory: components joined by single slashes, none '.' or '..'."""

HOST_DIRECTORY = StringRule(r"/[^\x00]+", max_length=1024)
"""An absolute path on a Kubernetes node, other than '/' itself."""

RUNNER_LABEL = StringRule("[A-Za-z0-9][A-Za-z0-9_.-]*", max_length=64)

# GitHub URLs: exactly what vdc_runtime.resource.github_url can register a runner at.
_H16 = "[0-9a-fA-F]{1,4}"
# An IPv6 address in its eight forms of '::' compression (no embedded IPv4, no zone).
IPV6 = "|".join(
    (
        f"(?:{_H16}:){{7}}{_H16}",
        f"(?:{_H16}:){{1,7}}:",
        *(f"(?:{_H16}:){{1,{7 - n}}}(?::{_H16}){{1,{n}}}" for n in range(1, 7)),
        f":(?:(?::{_H16}){{1,7}}|:)",
    )
)
GITHUB_HOST = rf"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[(?:{IPV6})\]"
GITHUB_PORT = (  # 0 to 65535, leading zeros allowed
    "0*(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
)
GITHUB_OWNER = "[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?"
GITHUB_REPO = "[A-Za-z0-9_.-]+"
GITHUB_SCHEME = "[hH][tT][tT][pP][sS]://"
_API_HOST = r"[aA][pP][iI]\.[gG][iI][tT][hH][uU][bB]\.[cC][oO][mM]"
# A repository named '.' or '..', also written as a clone URL ('..git').
_BAD_REPO = r"\.{1,2}|\.{1,3}git"
GITHUB_URL = StringRule(
    rf"{GITHUB_SCHEME}(?:{GITHUB_HOST})(?::{GITHUB_PORT})?/{GITHUB_OWNER}(?:/{GITHUB_REPO})?/?",
    max_length=512,
    forbidden=(
        rf"{GITHUB_SCHEME}{_API_HOST}(?::[0-9]+)?/.*"  # an API URL, not a web URL
        rf"|{GITHUB_SCHEME}[^/]+/{GITHUB_OWNER}/(?:{_BAD_REPO})/?"
    ),
)
"""A repository's or organisation's web URL on github.com or a GitHub Enterprise Server."""

RULES: dict[str, StringRule] = {
    name: rule for name, rule in globals().items() if isinstance(rule, StringRule)
}
"""Every rule by name, for the agreement test."""
