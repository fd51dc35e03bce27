"""`vdc holder`: starts processes for the agent and holds network namespaces open.

Everything here must keep working while the agent is gone, so it is small, synchronous and
imports nothing of the runtime but the wire format and `pids`: a thread per connection
(the agent makes a few, briefly), and one thread that reaps children and keeps their exit
status until the agent (this one or the next) asks for it.

It does not stop anything itself. The agent stops the processes (they are in the pod's
shared PID namespace) and releases the namespaces as it tears the data center down; the
holder leaves once asked to terminate and nothing it holds is left, or at the end of the
pod's grace period, when the kubelet kills its container and what runs in it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vdc_runtime.holder import protocol
from vdc_runtime.holder.protocol import Message, ProtocolError
from vdc_runtime.pids import process_start_time

log = logging.getLogger("vdc.holder")

KEPT_EXITS = 4096
"""Exit statuses kept for the agent to ask about (the oldest go first)."""
MAX_WAIT = 30.0
"""The longest an `exit` request waits for its process to be reaped."""
CHILD_NETNS_FD = 3
"""Where a child finds the namespace it is to enter (nsenter --net=/proc/self/fd/3)."""


@dataclass(frozen=True)
class Child:
    pid: int
    start: int | None
    label: str


def child_argv(argv: Sequence[str], netns: bool, cwd: str | None) -> list[str]:
    """The command as started: through nsenter when it enters a namespace (handed over as
    descriptor CHILD_NETNS_FD) or a working directory (posix_spawn has no chdir)."""
    if not netns and cwd is None:
        return list(argv)
    prefix = ["nsenter"]
    if netns:
        prefix.append(f"--net=/proc/self/fd/{CHILD_NETNS_FD}")
    if cwd is not None:
        prefix.append(f"--wd={cwd}")
    return [*prefix, "--", *argv]


class Holder:
    def __init__(self) -> None:
        self.id = uuid.uuid4().hex
        """A new one at every start: an agent that sees it change knows the holder was
        restarted, and what it held is gone."""
        self.children: dict[int, Child] = {}
        self.exits: OrderedDict[int, int] = OrderedDict()
        self.held: dict[str, int] = {}
        self.terminating = False
        self._lock = threading.Condition()

    # -- requests --------------------------------------------------------------------------

    def handle(self, message: Message, fds: list[int]) -> tuple[Message, list[int]]:
        """The reply to one request; the request's descriptors are the holder's to close."""
        op = message.get("op")
        try:
            match op:
                case "spawn":
                    return self.spawn(message, fds), []
                case "exit":
                    return self.exit_status(message), []
                case "hold":
                    return self.hold(message, fds), []
                case "held":
                    return self.list_held()
                case "release":
                    return self.release(message.get("names")), []
                case "state":
                    return self.state(), []
                case _:
                    return {"error": f"unknown request {op!r}"}, []
        except (KeyError, TypeError, ValueError) as exc:
            return {"error": f"bad {op} request: {exc!r}"}, []
        finally:
            protocol.close_all(fds)

    def spawn(self, message: Message, fds: list[int]) -> Message:
        argv = [str(a) for a in message["argv"]]
        netns = bool(message.get("netns"))
        cwd = message.get("cwd")
        if not argv or len(fds) != (2 if netns else 1):
            return {"error": "spawn needs a command, its output and (with netns) a namespace"}
        output = fds[0]
        actions: list[tuple[int, ...] | tuple[int, int, str, int, int]] = [
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, output, 1),
            (os.POSIX_SPAWN_DUP2, output, 2),
        ]
        if netns:
            actions.append((os.POSIX_SPAWN_DUP2, fds[1], CHILD_NETNS_FD))
        env = message.get("env")
        full = child_argv(argv, netns, cwd)
        label = str(message.get("label") or argv[0])
        with self._lock:
            try:
                pid = os.posix_spawnp(
                    full[0], full, dict(env) if env is not None else dict(os.environ),
                    file_actions=actions,
                    # Its own session, as the agent's children have: stopping its group
                    # stops what it started. Python ignores SIGPIPE; the child must not.
                    setsid=True, setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
                )  # fmt: skip
            except OSError as exc:
                return {"error": f"cannot start {argv[0]}: {exc}", "errno": exc.errno}
            child = Child(pid, process_start_time(pid), label)
            self.children[pid] = child
            self.exits.pop(pid, None)  # an earlier process's, whose pid this one reuses
            self._lock.notify_all()
        log.info("started %s (pid %d)", label, pid)
        return {"pid": pid, "start": child.start, "holder": self.id}

    def exit_status(self, message: Message) -> Message:
        """A process's exit status (as asyncio reports it: -N for signal N), once reaped;
        `known` is false for one that is not the holder's, or that ended too long ago."""
        pid = int(message["pid"])
        deadline = time.monotonic() + min(float(message.get("timeout", 0)), MAX_WAIT)
        with self._lock:
            while pid not in self.exits and pid in self.children:
                left = deadline - time.monotonic()
                if left <= 0:
                    return {"known": False, "running": True}
                self._lock.wait(left)
            if pid in self.exits:
                return {"known": True, "code": self.exits[pid]}
        return {"known": False, "running": False}

    def hold(self, message: Message, fds: list[int]) -> Message:
        name = str(message["name"])
        if len(fds) != 1:
            return {"error": "hold needs one namespace"}
        with self._lock:
            old = self.held.pop(name, None)
            self.held[name] = os.dup(fds[0])  # the request's own is closed after
            if old is not None:
                os.close(old)
        return {"ok": True, "holder": self.id}

    def list_held(self) -> tuple[Message, list[int]]:
        with self._lock:
            names = sorted(self.held)
            # Copies: the originals stay held while these travel.
            fds = [os.dup(self.held[name]) for name in names]
        return {"names": names, "holder": self.id}, fds

    def release(self, names: Sequence[str] | None) -> Message:
        """Close these namespaces' descriptors (all with None)."""
        with self._lock:
            for name in list(self.held) if names is None else map(str, names):
                fd = self.held.pop(name, None)
                if fd is not None:
                    os.close(fd)
            self._lock.notify_all()
        return {"ok": True, "holder": self.id}

    def state(self) -> Message:
        with self._lock:
            return {
                "holder": self.id,
                "children": [
                    {"pid": c.pid, "start": c.start, "label": c.label}
                    for c in self.children.values()
                ],
                "held": sorted(self.held),
                "terminating": self.terminating,
            }

    # -- children --------------------------------------------------------------------------

    def reap_forever(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                with self._lock:
                    self._lock.wait(1.0)
                continue
            code = os.waitstatus_to_exitcode(status)
            with self._lock:
                child = self.children.pop(pid, None)
                self.exits[pid] = code
                while len(self.exits) > KEPT_EXITS:
                    self.exits.popitem(last=False)
                self._lock.notify_all()
            if child is not None:
                log.info("%s (pid %d) exited with %d", child.label, pid, code)

    @property
    def done(self) -> bool:
        """Asked to terminate, and nothing of the data center is left to hold."""
        with self._lock:
            return self.terminating and not self.children and not self.held


def _serve_connection(holder: Holder, conn: socket.socket) -> None:
    with conn:
        try:
            message, fds = protocol.receive(conn)
        except (ProtocolError, OSError) as exc:
            log.debug("connection: %s", exc)
            return
        reply, reply_fds = holder.handle(message, fds)
        try:
            protocol.send(conn, reply, reply_fds)
        except OSError as exc:
            log.warning("cannot answer %s: %s", message.get("op"), exc)
        finally:
            protocol.close_all(reply_fds)


def listen(path: Path) -> socket.socket:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A socket left by an earlier holder of this pod (its container restarted): nothing
    # listens on it any more.
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen(64)
    return sock


def run_holder(path: Path) -> int:
    holder = Holder()

    def terminate(signum: int, _frame: object) -> None:
        # Not now: the agent, told at the same moment, still needs its machines to tear
        # the data center down (see the module's docstring).
        log.info("%s: leaving once the data center is torn down", signal.Signals(signum).name)
        holder.terminating = True

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    threading.Thread(target=holder.reap_forever, name="reaper", daemon=True).start()
    sock = listen(path)
    sock.settimeout(0.5)
    log.info("holding for the agent on %s (holder %s)", path, holder.id)
    with sock:
        while not holder.done:
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except InterruptedError:
                continue
            conn.settimeout(None)
            threading.Thread(
                target=_serve_connection, args=(holder, conn), name="request", daemon=True
            ).start()
    with contextlib.suppress(OSError):
        path.unlink()
    log.info("nothing left to hold: leaving")
    return 0


__all__ = ["Child", "Holder", "child_argv", "listen", "run_holder"]
