"""Read Placemat v2 YAML files into a DataCenter, reporting every problem at once.

Read leniently (`strict=False`), a file is taken as Placemat takes it: Placemat's Go
decoder ignores keys it does not know, including those of another volume kind (it has one
volume struct), and hands a bridge's address to the kernel, which accepts the network
address itself. Those become warnings, with the same did-you-mean hints; everything
Placemat would fail on stays an error. Strict reading (`vdc validate --strict`, and the
CR, whose CRD schema is strict anyway) refuses them.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from vdc_runtime.spec.checks import Document, check
from vdc_runtime.spec.errors import SpecError, SpecErrors, describe, did_you_mean, format_path
from vdc_runtime.spec.fields import LENIENT_NOTES
from vdc_runtime.spec.keys import (
    KeyStyle,
    Location,
    find_key,
    locate,
    normalize,
    remove,
    styled_keys,
)
from vdc_runtime.spec.models import (
    BMC,
    KINDS,
    DataCenter,
    DeviceClass,
    Group,
    Image,
    Network,
    NetworkNamespace,
    Node,
    SpecModel,
)
from vdc_runtime.spec.scalars import Note, as_placemat_reads

_KIND_KEY = "kind"


class _YAMLLoader(yaml.SafeLoader):
    """A safe loader that keeps keys as written and notes duplicate keys.

    Keys stay the text the user typed (YAML 1.1 would turn a key `on` into True and `1`
    into an int); Placemat's Go decoder also saw every key as a string. Duplicate keys
    silently keep the last value in PyYAML; we report them instead.
    """

    def __init__(self, stream: str | bytes) -> None:
        super().__init__(stream)
        self.problems: list[str] = []

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, yaml.MappingNode):
            raise yaml.constructor.ConstructorError(
                None, None, f"expected a mapping, found {node.id}", node.start_mark
            )
        # Keys pulled in by a `<<` merge may be overridden; only repeats written in this
        # mapping itself are mistakes.
        written: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                if key_node.value in written:
                    self.problems.append(f"{_at(key_node)}: duplicate key '{key_node.value}'")
                written.add(key_node.value)
        self.flatten_mapping(node)
        mapping: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.append(
                    f"{_at(key_node)}: a key must be a string, not a {key_node.id}"
                )
                continue
            mapping[key_node.value] = self.construct_object(value_node, deep=deep)
        return mapping


_MERGE_TAG = "tag:yaml.org,2002:merge"

# YAML 1.1 reads `52:54:00:12:34:56` as a base-60 integer; Placemat's Go decoder (and YAML
# 1.2) read it as a string, which is what someone writing a MAC address means.
_NO_SEXAGESIMAL = {
    "tag:yaml.org,2002:int": re.compile(
        r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"
    ),
    "tag:yaml.org,2002:float": re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
}
_YAMLLoader.yaml_implicit_resolvers = {
    first: [(tag, _NO_SEXAGESIMAL.get(tag, regexp)) for tag, regexp in resolvers]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _at(node: yaml.Node) -> str:
    return f"line {node.start_mark.line + 1}, column {node.start_mark.column + 1}"


@dataclass
class _Collector:
    """Errors in reading order, whatever phase found them."""

    entries: list[tuple[tuple[int, int], int, SpecError]]

    def add(self, order: tuple[int, int], error: SpecError) -> None:
        self.entries.append((order, len(self.entries), error))

    def sorted(self) -> list[SpecError]:
        return [error for _, _, error in sorted(self.entries, key=lambda e: (e[0], e[1]))]


@dataclass(frozen=True)
class _Source:
    label: str
    text: str | bytes
    base_dir: Path
    unreadable: str | None = None
    """Why the file could not be read, if it could not."""


def load_files(
    paths: Iterable[Path | str], *, strict: bool = True, warnings: list[SpecError] | None = None
) -> DataCenter:
    """Load and validate spec files; relative paths in each are relative to its folder.

    Raises SpecErrors listing every problem; nothing else escapes for bad input. Without
    `strict`, what Placemat ignores is appended to `warnings` instead (see the module).
    """
    sources: list[_Source] = []
    for path in map(Path, paths):
        base_dir = path.absolute().parent
        try:
            sources.append(_Source(str(path), path.read_bytes(), base_dir))
        except OSError as exc:
            reason = f"cannot read: {exc.strerror or exc}"
            sources.append(_Source(str(path), b"", base_dir, unreadable=reason))
    return _load(sources, strict, warnings)


def load_bytes(
    files: Iterable[tuple[Path, bytes]],
    *,
    strict: bool = True,
    warnings: list[SpecError] | None = None,
) -> DataCenter:
    """`load_files` of contents already read: the spec cache validates the bytes it hashed."""
    sources = [_Source(str(path), data, path.absolute().parent) for path, data in files]
    return _load(sources, strict, warnings)


def load_text(
    yaml_text: str | bytes,
    source: str = "<string>",
    base_dir: Path | None = None,
    *,
    strict: bool = True,
    warnings: list[SpecError] | None = None,
) -> DataCenter:
    """Load and validate spec text; relative paths are relative to `base_dir` (default cwd)."""
    base = (base_dir if base_dir is not None else Path.cwd()).absolute()
    return _load([_Source(source, yaml_text, base)], strict, warnings)


def _load(
    sources: list[_Source], strict: bool = True, warnings: list[SpecError] | None = None
) -> DataCenter:
    if not strict and warnings is None:
        raise ValueError("lenient reading needs a list for its warnings")
    collector = _Collector([])
    noted = _Collector([])
    documents: list[Document] = []
    complete = True
    for position, source in enumerate(sources):
        if source.unreadable is not None:
            error = SpecError(source.label, None, None, None, "", source.unreadable)
            collector.add((position, 0), error)
            complete = False
            continue
        for doc, errors, notes in _read(source, position, strict):
            for error in errors:
                collector.add(doc.order, error)
            for note in notes:
                noted.add(doc.order, note)
            if doc.kind is None:
                # The document's name and kind are unknown, so "no X named Y" errors
                # elsewhere may be wrong; they are skipped until this one is fixed.
                complete = False
            documents.append(doc)
    for problem in check(documents, references=complete):
        doc = problem.document
        where = locate(problem.loc, KINDS[doc.kind], doc.raw, tagged=False) if doc.kind else None
        path = format_path(where.path) if where else format_path(problem.loc)
        collector.add(doc.order, _error(doc, path, problem.message))
    if warnings is not None:
        warnings.extend(noted.sorted())
    if collector.entries:
        raise SpecErrors(collector.sorted())
    return assemble(doc.model for doc in documents)


def assemble(models: Iterable[SpecModel | None]) -> DataCenter:
    """The data center made of valid documents' models, each kind in the given order."""
    models = list(models)
    return DataCenter(
        networks=[m for m in models if isinstance(m, Network)],
        netns=[m for m in models if isinstance(m, NetworkNamespace)],
        nodes=[m for m in models if isinstance(m, Node)],
        images=[m for m in models if isinstance(m, Image)],
        device_classes=[m for m in models if isinstance(m, DeviceClass)],
        bmc=next((m for m in models if isinstance(m, BMC)), None),
        groups=[m for m in models if isinstance(m, Group)],
    )


def _error(doc: Document, path: str, message: str) -> SpecError:
    return SpecError(doc.file, doc.index, doc.kind, doc.name, path, message)


def _read(
    source: _Source, position: int, strict: bool
) -> Iterator[tuple[Document, list[SpecError], list[SpecError]]]:
    """Each document of one file with the errors, then the warnings, found in it alone."""
    loader: _YAMLLoader | None = None
    index = current = 0
    try:
        # Constructing the loader already reads the text (to detect its encoding).
        loader = _YAMLLoader(source.text)
        while True:
            current = index + 1
            if not loader.check_node():
                break
            # The node keeps each scalar as written, for reading it as Placemat does.
            node = loader.get_node()
            data = loader.construct_document(node)
            index = current
            problems, loader.problems = loader.problems, []
            if data is None and not problems:
                continue  # an empty document, e.g. after a trailing `---`
            doc, errors, notes = _document(data, source, position, index, strict, node)
            errors[:0] = [_error(doc, "", problem) for problem in problems]
            yield doc, errors, notes
    except yaml.YAMLError as exc:
        doc = Document(source.label, max(current, 1), order=(position, current))
        yield doc, [_error(doc, "", _yaml_message(exc))], []
    except RecursionError:
        doc = Document(source.label, max(current, 1), order=(position, current))
        yield doc, [_error(doc, "", "the document is nested too deeply")], []
    finally:
        if loader is not None:
            loader.dispose()


def _yaml_message(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        what = exc.problem or "invalid YAML"
        return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {what}"
    return f"invalid YAML: {exc}"


def _document(
    data: Any,
    source: _Source,
    position: int,
    index: int,
    strict: bool = True,
    node: yaml.Node | None = None,
) -> tuple[Document, list[SpecError], list[SpecError]]:
    doc = Document(source.label, index, order=(position, index))
    if not isinstance(data, dict):
        message = f"a document must be a mapping of keys, got {describe(data)}"
        return doc, [_error(doc, "", message)], []
    kinds = ", ".join(KINDS)
    kind_key = find_key(data, _KIND_KEY)
    raw_name = data.get(find_key(data, "name"))
    if kind_key is None:
        message = f"missing required key 'kind' (one of: {kinds})"
        return doc, [_error(doc, "", message)], []
    kind = data[kind_key]
    if not isinstance(kind, str) or kind not in KINDS:
        hint = did_you_mean(kind, KINDS) if isinstance(kind, str) else ""
        message = f"unknown kind {_shown(kind)}{hint} (expected one of: {kinds})"
        return doc, [_error(doc, kind_key, message)], []
    model_cls = KINDS[kind]
    doc.kind = kind
    doc.name = raw_name if isinstance(raw_name, str) else None
    doc.raw = {k: v for k, v in data.items() if k != kind_key}
    scalar_notes: list[Note] = []
    data = doc.raw if strict else as_placemat_reads(doc.raw, node, model_cls, scalar_notes)
    data = normalize(data, model_cls)
    # Validators that Placemat is more lenient than note here what they let through.
    lenient_notes: list[Note] = []
    context: dict[str, Any] = {"base_dir": source.base_dir}
    if not strict:
        context[LENIENT_NOTES] = lenient_notes
    scalars = [_error(doc, format_path(loc), message) for loc, message in scalar_notes]
    try:
        doc.model = model_cls.model_validate(data, context=context, by_alias=True, by_name=False)
    except ValidationError as exc:
        errors = exc.errors()
        doc.model = _without_unknown_keys(model_cls, data, errors, context)
        ignored = [] if strict else [e for e in errors if e["type"] == "extra_forbidden"]
        notes = [_pydantic_error(doc, model_cls, err, "ignored: ") for err in ignored]
        errors = [e for e in errors if e not in ignored]
        notes += _lenient_notes(doc, model_cls, lenient_notes)
        return doc, [_pydantic_error(doc, model_cls, err) for err in errors], scalars + notes
    return doc, [], scalars + _lenient_notes(doc, model_cls, lenient_notes)


def _lenient_notes(doc: Document, model_cls: type[SpecModel], notes: list[Note]) -> list[SpecError]:
    # A document validated twice (again without its unknown keys) noted things twice.
    unique = dict.fromkeys(notes)
    return [
        _error(doc, format_path(locate(loc, model_cls, doc.raw, tagged=False).path), message)
        for loc, message in unique
    ]


def _without_unknown_keys(
    model_cls: type[SpecModel], data: dict[Any, Any], errors: list[ErrorDetails], context: Any
) -> SpecModel | None:
    """The model as if the unknown keys were not there, when those are its only errors.

    A stray key (often a typo) then does not hide the document's other problems, such as
    a reference to an undefined network. Any other error leaves the model unknown: a
    model built by dropping a bad value could produce misleading follow-up errors.
    """
    if any(err["type"] != "extra_forbidden" for err in errors):
        return None
    data = copy.deepcopy(data)
    try:
        for err in errors:
            remove(data, err["loc"], model_cls)
        return model_cls.model_validate(data, context=context, by_alias=True, by_name=False)
    except (ValidationError, KeyError, IndexError, TypeError):
        return None


def _pydantic_error(
    doc: Document, model_cls: type[SpecModel], err: ErrorDetails, prefix: str = ""
) -> SpecError:
    path, message = pydantic_problem(err, model_cls, doc.raw)
    return _error(doc, format_path(path), prefix + message)


def pydantic_problem(
    err: ErrorDetails, model_cls: type[SpecModel], raw: Any, style: KeyStyle | None = None
) -> tuple[list[str | int], str]:
    """Where one pydantic error is, in the keys of `raw` (the data as the user wrote it,
    in key `style`), and what it means in the user's terms."""
    loc = err["loc"]
    where = locate(loc, model_cls, raw, style=style)
    path = list(where.path)
    kind = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "missing":
        message = "missing required key"
    elif kind == "extra_forbidden":
        message = _unknown_key(loc, model_cls, raw, style)
    elif kind in {"union_tag_invalid", "union_tag_not_found"}:
        path.append(_KIND_KEY)
        tags = str(ctx.get("expected_tags", ""))
        tag = ctx.get("tag")
        if kind == "union_tag_not_found" or not isinstance(value, dict):
            message = f"missing required key (one of: {tags})"
        else:
            hint = did_you_mean(str(tag), [t.strip("'") for t in tags.split(", ")])
            message = f"unknown kind '{tag}'{hint} (expected one of: {tags})"
    elif kind == "literal_error":
        message = _bad_choice(value, where)
    elif kind == "string_type":
        message = f"expected a string, got {describe(value)}"
    elif kind in {"int_type", "int_parsing", "int_from_float"}:
        message = f"expected an integer, got {describe(value)}"
    elif kind in {"bool_type", "bool_parsing"}:
        message = f"expected true or false, got {describe(value)}"
    elif kind == "list_type":
        message = f"expected a list, got {describe(value)}"
    elif kind in {"model_type", "model_attributes_type", "dict_type"}:
        message = f"expected a mapping, got {describe(value)}"
    elif kind == "too_short":
        n = ctx.get("min_length", 1)
        message = f"must have at least {n} {'entry' if n == 1 else 'entries'}"
    elif kind == "too_long" and isinstance(value, list | str):
        n = ctx.get("max_length")
        what = "entries" if isinstance(value, list) else "characters"
        message = f"has {len(value)} {what}; at most {n} are allowed"
    elif kind in {"greater_than_equal", "greater_than"}:
        bound = ctx.get("ge", ctx.get("gt"))
        message = f"must be at least {bound}, got {describe(value)}"
    else:
        message = err["msg"].removeprefix("Value error, ")
    return path, message


def _unknown_key(
    loc: tuple[int | str, ...], model_cls: type[SpecModel], raw: Any, style: KeyStyle | None
) -> str:
    key = str(loc[-1])
    parent: Location = locate(loc[:-1], model_cls, raw, style=style)
    known: list[str] = list(styled_keys(parent.type, style)) if _is_model(parent.type) else []
    if parent.type is model_cls and style is None:
        known.append(_KIND_KEY)
    folded = {k.lower(): k for k in known}
    # Only Placemat's keys fold case: there a case variant of a known key that is still
    # unknown must be a second spelling of one given too.
    if style is None and key.lower() in folded:
        return (
            f"duplicate key '{key}': keys are case-insensitive and"
            f" '{folded[key.lower()]}' is also given"
        )
    if parent.siblings:
        owners = [tag for tag, m in parent.siblings.items() if key in styled_keys(m, style)]
        if owners:
            this = next((t for t, m in parent.siblings.items() if m is parent.type), "?")
            return (
                f"unknown key '{key}' for a volume of kind {this};"
                f" it belongs to kind {' or '.join(owners)}"
            )
    return f"unknown key '{key}'{did_you_mean(key, known)}"


def _bad_choice(value: Any, where: Location) -> str:
    tp = where.type
    allowed: tuple[Any, ...] = get_args(tp) if get_origin(tp) is Literal else ()
    shown = ", ".join(repr(a) for a in allowed)
    hint = did_you_mean(value, [str(a) for a in allowed if a]) if isinstance(value, str) else ""
    return f"invalid value {_shown(value)}{hint} (expected one of: {shown})"


def _shown(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else describe(value)


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, SpecModel)
