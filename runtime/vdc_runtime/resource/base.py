"""The one base of the models only Kubernetes reads: keys in camelCase, Kubernetes'
convention, from one spelling rule (`camel`).

The CR's node, namespace and volume models extend Placemat's, whose own keys are
kebab-case; a CR spells those in camelCase through the same rule (`spec.keys.rename`), so
a CR reads as camelCase throughout.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from vdc_runtime.spec import cel


def camel(name: str) -> str:
    """A CR's key for a Python field name: `use_nat` -> `useNat`."""
    first, *rest = name.split("_")
    return first + "".join(word[:1].upper() + word[1:] for word in rest)


class ApiModel(BaseModel):
    """Unknown keys are errors; Python code may build a model by field name."""

    model_config = ConfigDict(
        alias_generator=camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
        json_schema_extra=cel.add_to_schema,
    )


class ApiSpecModel(ApiModel):
    """A spec's part: immutable once valid, like Placemat's models."""

    model_config = ConfigDict(frozen=True)


__all__ = ["ApiModel", "ApiSpecModel", "camel"]
