"""Persistent tap devices for QEMU NICs.

The kernel refuses to create tun/tap devices over rtnetlink, so they are made with the
TUNSETIFF/TUNSETPERSIST ioctls on /dev/net/tun (what `ip tuntap add` does); attaching them
to bridges, MTU, group and link state then go through the same netlink batch as veths.
"""

from __future__ import annotations

import fcntl
import os
import struct

TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_MULTI_QUEUE = 0x0100
TUN_DEVICE = "/dev/net/tun"


def tap_flags(queues: int) -> int:
    # QEMU opens the tap again with IFF_TAP|IFF_NO_PI and, for several queues, with
    # IFF_MULTI_QUEUE: a persistent tap must be created with the same queue mode or
    # QEMU's TUNSETIFF fails with EINVAL.
    return IFF_TAP | IFF_NO_PI | (IFF_MULTI_QUEUE if queues > 1 else 0)


def create_tap(name: str, queues: int) -> None:
    fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    try:
        ifreq = struct.pack("16sH22x", name.encode(), tap_flags(queues))
        fcntl.ioctl(fd, TUNSETIFF, ifreq)
        fcntl.ioctl(fd, TUNSETPERSIST, 1)
    finally:
        os.close(fd)
