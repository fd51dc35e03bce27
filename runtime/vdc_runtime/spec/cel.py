"""CEL rules: what a model's Python validator checks across its fields, said again for the
API server, which cannot run Python. A model carries its rules (`cel_rules`) beside the
validator they mirror; the models' JSON schema then holds them as
`x-kubernetes-validations`, which the CRD generator passes on. They are written in the
CR's (camelCase) keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    rule: str
    message: str
    field_path: str | None = None

    def as_dict(self) -> dict[str, str]:
        out = {"rule": self.rule, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out


def exactly_one(*keys: str) -> Rule:
    present = ", ".join(f"has(self.{k})" for k in keys)
    return Rule(f"[{present}].filter(x, x).size() == 1", f"give exactly one of: {', '.join(keys)}")


def add_to_schema(schema: dict[str, Any], cls: type[Any]) -> None:
    """pydantic's json_schema_extra hook: a model's (and its bases') rules into its schema."""
    rules = getattr(cls, "cel_rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [r.as_dict() for r in rules]


__all__ = ["Rule", "add_to_schema", "exactly_one"]
