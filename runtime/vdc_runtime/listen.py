"""Parsing --listen-addr, kept free of heavy imports: `vdc run` checks it before start-up."""

from __future__ import annotations

import ipaddress


def parse_listen_addr(value: str) -> tuple[str, int]:
    """'127.0.0.1:10808', '[::1]:10808' or ':10808' (all addresses) → (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--listen-addr {value!r}: expected HOST:PORT, e.g. 127.0.0.1:10808")
    host = host.removeprefix("[").removesuffix("]")
    if host:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if host != "localhost":
                raise ValueError(
                    f"--listen-addr {value!r}: {host!r} is not an IP address"
                ) from None
    return host or "0.0.0.0", int(port)
