"""Serial over LAN (IPMI 2.0 section 15): a node's console over its BMC's RMCP+ session.

pyghmi's own SOL server (`console.ServerConsole`) runs on pyghmi's I/O thread and its
retry timers, which this BMC does not use (see `session.py`), so the SOL payload is
written here, on the runtime's loop: console output goes to the client in numbered packets,
one at a time, each retransmitted until acknowledged; keystrokes from the client are typed
on the console and acknowledged with the count taken.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from vdc_runtime.bmc.ipmi.session import RmcpPlusSession
from vdc_runtime.bmc.target import BmcTarget

log = logging.getLogger("vdc.bmc.ipmi")

PAYLOAD_SOL = 0x01
MAX_CHARACTERS = 128  # per packet, either way: well inside one UDP datagram once encrypted
MAX_PENDING = 64 * 1024  # output kept while the client is slow; the oldest goes first
RETRY_AFTER = 0.5
RETRIES = 7
NACK = 0x40  # operation/status bit 6: the packet was not accepted


class SolPayload:
    """The one serial-over-LAN payload instance of a BMC, active on one session."""

    def __init__(self, session: RmcpPlusSession, target: BmcTarget, on_end: Callable[[], None]):
        self.session = session
        self.name = target.facts.name
        self._write = target.console_write
        self._on_end = on_end
        self._pending = bytearray()
        self._in_flight: bytes | None = None
        self._sequence = 0  # of the last packet sent, 1..15 (0 means "no data")
        self._tries = 0
        self._timer: asyncio.TimerHandle | None = None
        self._last_received: tuple[int, bytes] | None = None
        session.sol_handler = self._received
        self._unsubscribe = target.console_subscribe(self._output)
        log.info("node %s: serial over LAN started for %s", self.name, self._user)

    @property
    def _user(self) -> str:
        return self.session.user.name if self.session.user else "?"

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._unsubscribe()
        self.session.sol_handler = None
        log.info("node %s: serial over LAN ended for %s", self.name, self._user)
        self._on_end()

    # -- to the client ------------------------------------------------------------------

    def _output(self, data: bytes) -> None:
        self._pending += data
        if len(self._pending) > MAX_PENDING:
            del self._pending[: len(self._pending) - MAX_PENDING]
        if self._in_flight is None:
            self._send_next()

    def _send_next(self) -> None:
        if not self._pending or self.session.closed:
            return
        self._in_flight = bytes(self._pending[:MAX_CHARACTERS])
        del self._pending[:MAX_CHARACTERS]
        self._sequence = self._sequence % 15 + 1
        self._tries = 0
        self._transmit()

    def _transmit(self) -> None:
        assert self._in_flight is not None
        self._send(bytes([self._sequence, 0, 0, 0]) + self._in_flight)
        self._tries += 1
        self._timer = asyncio.get_running_loop().call_later(RETRY_AFTER, self._retry)

    def _retry(self) -> None:
        if self._in_flight is None:
            return
        if self._tries > RETRIES:
            log.info("node %s: serial over LAN: client silent; %d bytes dropped",
                     self.name, len(self._in_flight))  # fmt: skip
            self._in_flight = None
            self._send_next()
            return
        self._transmit()

    def _send(self, packet: bytes) -> None:
        self.session.send_payload(bytearray(packet), payload_type=PAYLOAD_SOL, retry=False)

    # -- from the client ------------------------------------------------------------------

    def _received(self, payload: bytearray | dict[str, object]) -> None:
        if not isinstance(payload, bytearray | bytes) or len(payload) < 4:
            return
        sequence, acked, accepted, status = (
            payload[0] & 0x0F,
            payload[1] & 0x0F,
            payload[2],
            payload[3],
        )
        if acked and self._in_flight is not None and acked == self._sequence:
            if self._timer is not None:
                self._timer.cancel()
            if status & NACK:  # not taken now (e.g. the client paused): offered again later
                self._timer = asyncio.get_running_loop().call_later(RETRY_AFTER, self._retry)
            else:
                unread = self._in_flight[accepted:] if accepted else b""
                self._pending[:0] = unread
                self._in_flight = None
                self._send_next()
        if sequence:
            data = bytes(payload[4:])
            # A retransmission (our acknowledgement was lost) is acknowledged, not retyped.
            if self._last_received != (sequence, data):
                self._write(data)
                self._last_received = (sequence, data)
            self._send(bytes([0, sequence, len(data), 0]))


__all__ = ["MAX_CHARACTERS", "SolPayload"]
