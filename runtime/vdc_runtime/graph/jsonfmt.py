"""The graph as JSON, for tools (and for `vdc graph --endpoint`, which reads it back)."""

from __future__ import annotations

import json

from vdc_runtime.graph.model import Graph, to_json


def render(graph: Graph) -> str:
    return json.dumps(to_json(graph), indent=2, ensure_ascii=False) + "\n"


__all__ = ["render"]
