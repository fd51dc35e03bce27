"""What goes wrong with a machine, for its process, its power and the front ends."""

from __future__ import annotations


class NodeError(RuntimeError):
    pass


class PowerError(NodeError):
    """A power request that does not fit the machine's state (e.g. reset while off)."""


__all__ = ["NodeError", "PowerError"]
