"""Named network namespaces, made and entered from worker threads.

A network namespace is a property of a thread, not of the process, so a worker thread can
unshare into a new namespace, bind-mount it where `ip netns` looks, configure it and come
back, all in about a millisecond. pyroute2 forks a child process for each of these steps,
which costs more than the kernel work itself.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 1 << 20
MNT_DETACH = 2

NETNS_DIR = Path(os.environ.get("VDC_NETNS_DIR", "/run/netns"))

_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def setns(fd: int) -> None:
    _check(_libc.setns(fd, CLONE_NEWNET), "setns")


def netns_path(name: str) -> Path:
    return NETNS_DIR / name


def list_netns() -> set[str]:
    try:
        return {p.name for p in NETNS_DIR.iterdir()}
    except FileNotFoundError:
        return set()


def _ensure_shared_dir() -> None:
    # Same dance as iproute2: the directory must be a shared mount point so that a
    # namespace mounted later is seen by every mount namespace (containers, ip netns exec).
    NETNS_DIR.mkdir(parents=True, exist_ok=True)
    target = str(NETNS_DIR).encode()
    if _libc.mount(b"", target, b"none", MS_SHARED | MS_REC, None) == 0:
        return
    _check(_libc.mount(target, target, b"none", MS_BIND | MS_REC, None), f"bind {NETNS_DIR}")
    _check(_libc.mount(b"", target, b"none", MS_SHARED | MS_REC, None), f"share {NETNS_DIR}")


@contextmanager
def entered(fd: int) -> Iterator[None]:
    """Run the body with this thread inside the namespace `fd`; always come back."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        setns(fd)
        try:
            yield
        finally:
            # A thread that cannot return would silently run later work in the wrong
            # namespace; there is no safe way to go on.
            try:
                setns(home)
            except OSError as exc:  # pragma: no cover - kernel refused a setns back
                os.write(2, f"vdc: cannot return to the host namespace: {exc}\n".encode())
                os._exit(70)
    finally:
        os.close(home)


def create(
    name: str, configure: Callable[[], T], claimed: Callable[[], object] = lambda: None
) -> tuple[int, T]:
    """Create the named namespace, run `configure` inside it, return (open fd, its result).

    `claimed` runs once the name is ours and before anything is mounted, so a caller can
    record the namespace; a name already taken by someone else never reaches it. Must run
    in a worker thread. On failure nothing is left behind.
    """
    _ensure_shared_dir()
    path = netns_path(name)
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    except FileExistsError:
        raise OSError(errno.EEXIST, f"network namespace {name!r} already exists") from None
    claimed()
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    mounted = False
    try:
        _check(_libc.unshare(CLONE_NEWNET), "unshare")
        try:
            _check(
                _libc.mount(
                    b"/proc/thread-self/ns/net", str(path).encode(), b"none", MS_BIND, None
                ),
                f"mount {path}",
            )
            mounted = True
            fd = os.open(path, os.O_RDONLY)
            result = configure()
        finally:
            setns(home)
        return fd, result
    except BaseException:
        if mounted:
            _libc.umount2(str(path).encode(), MNT_DETACH)
        path.unlink(missing_ok=True)
        raise
    finally:
        os.close(home)


def attach(name: str, fd: int) -> bool:
    """Mount the namespace open as `fd` under `name` (one a holder kept open while its
    mount went with another container's mount namespace); False if one is mounted there."""
    _ensure_shared_dir()
    path = netns_path(name)
    if path.exists() and os.path.ismount(path):
        return False
    path.touch(mode=0)
    source = f"/proc/self/fd/{fd}".encode()
    try:
        _check(_libc.mount(source, str(path).encode(), b"none", MS_BIND, None), f"mount {path}")
    except OSError:
        path.unlink(missing_ok=True)
        raise
    return True


def remove(name: str) -> bool:
    """Unmount and delete a named namespace; False if it did not exist."""
    path = netns_path(name)
    if not path.exists():
        return False
    _libc.umount2(str(path).encode(), MNT_DETACH)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def open_fd(name: str) -> int:
    return os.open(netns_path(name), os.O_RDONLY)


def write_sysctl(key: str, value: str) -> str | None:
    """Set a sysctl of the calling thread's namespace; return the previous value."""
    path = Path("/proc/sys") / key.replace(".", "/")
    try:
        old = path.read_text().strip()
    except FileNotFoundError:
        return None
    if old != value:
        path.write_text(value)
    return old


def set_sysctl(key: str, value: str) -> None:
    """Set a sysctl of the calling thread's namespace without reading it first."""
    with open(Path("/proc/sys") / key.replace(".", "/"), "w") as f:
        f.write(value)


def read_sysctl(key: str) -> str | None:
    try:
        return (Path("/proc/sys") / key.replace(".", "/")).read_text().strip()
    except FileNotFoundError:
        return None
