"""Errors a spec can have, each pointing at the file, document and key the user wrote."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class SpecError:
    """One problem in a spec; `str()` gives the line shown to the user."""

    file: str
    document: int | None
    kind: str | None
    name: str | None
    path: str
    message: str

    def __str__(self) -> str:
        parts = [self.file]
        if self.document is not None:
            where = f"document {self.document}"
            if self.kind:
                label = self.kind if self.name is None else f'{self.kind} "{self.name}"'
                where += f" ({label})"
            parts.append(where)
        if self.path:
            parts.append(self.path)
        parts.append(self.message)
        return ": ".join(parts)


class SpecErrors(Exception):
    """Every problem found in a spec, raised together so one run shows them all."""

    def __init__(self, errors: Iterable[SpecError]) -> None:
        self.errors: list[SpecError] = list(errors)
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


def format_path(segments: Iterable[str | int]) -> str:
    """`("volumes", 1, "user-data")` -> `volumes[1].user-data`."""
    out = ""
    for seg in segments:
        if isinstance(seg, int):
            out += f"[{seg}]"
        else:
            out += f".{seg}" if out else str(seg)
    return out


def suggest(word: str, choices: Iterable[str]) -> str | None:
    """The closest choice to a misspelt word, if any is close enough to be a likely typo."""
    choices = list(choices)

    def canon(s: str) -> str:
        # Case and separator slips are the commonest typos (use_nat, UseNat, Use-NAT).
        return s.lower().replace("_", "-")

    by_canon = {canon(c): c for c in choices}
    if canon(word) in by_canon:
        return by_canon[canon(word)]
    close = difflib.get_close_matches(canon(word), list(by_canon), n=1, cutoff=0.6)
    return by_canon[close[0]] if close else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`"; did you mean 'x'?"` or an empty string."""
    best = suggest(word, choices)
    return f"; did you mean '{best}'?" if best is not None else ""


def describe(value: object) -> str:
    """A value as YAML users think of it: `string 'abc'`, `integer 3`, `a list`, `null`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"string {shown!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, bytes):
        return "binary data"
    return f"a {type(value).__name__}"
