"""The few commands faults run (tc, ip), and what this kernel can do."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence


class CommandError(RuntimeError):
    pass


async def run(argv: Sequence[str]) -> str:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError:
        raise CommandError(f"{argv[0]} not found: install iproute2") from None
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise CommandError(f"{' '.join(argv)}: {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")


_netem: str | bool | None = False
"""The probe's answer, once known (False: not probed yet)."""


async def netem_missing() -> str | None:
    """Why delay and jitter cannot be had here (None: they can).

    Probed, not assumed: a netem qdisc on the loopback of a network namespace made for the
    probe alone, which goes with the probe's process (a kernel with netem as a module loads
    it on the way)."""
    global _netem
    if _netem is not False:
        return _netem  # type: ignore[return-value]
    try:
        await run(["unshare", "--net", "tc", "qdisc", "add", "dev", "lo", "root", "netem",
                   "delay", "1ms"])  # fmt: skip
        _netem = None
    except CommandError as exc:
        release = os.uname().release
        _netem = (
            f"delay and jitter need the kernel module sch_netem, which this kernel ({release})"
            f" does not have ({exc}); loss, rate and down work without it"
        )
    return _netem


__all__ = ["CommandError", "netem_missing", "run"]
