"""Console logging: vdc's own messages, and program output under a `netns/app` prefix."""

from __future__ import annotations

import hashlib
import logging
import sys

_COLOURS = (31, 32, 33, 34, 35, 36, 91, 92, 93, 94, 95, 96)


class _Formatter(logging.Formatter):
    def __init__(self, colour: bool) -> None:
        super().__init__()
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        stamp = self.formatTime(record, "%H:%M:%S")
        prefix = getattr(record, "prefix", None)
        if prefix:
            # One colour per program, stable across runs, so interleaved output stays readable.
            label = f"[{prefix}]"
            if self.colour:
                code = _COLOURS[hashlib.sha1(prefix.encode()).digest()[0] % len(_COLOURS)]
                label = f"\x1b[{code}m{label}\x1b[0m"
            return f"{stamp} {label} {record.getMessage()}"
        text = f"{stamp} {record.levelname.lower():7} {record.getMessage()}"
        if record.exc_info and record.levelno >= logging.ERROR:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(colour=sys.stderr.isatty()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("pyroute2", "asyncio", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # qemu.qmp logs every lost connection as an error; vdc reports what it means instead.
    logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)
