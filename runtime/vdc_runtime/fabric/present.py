"""What the kernel holds now, read through pyroute2.

These reads happen off the start-up path (teardown, `vdc run --force`'s removal of what an
earlier run left), so they use the maintained library. The reads on the start-up path (the
MTU probe, the check for links that exist already) use `netlink`'s hand-decoded dump: see
that module's docstring for why.
"""

from __future__ import annotations


def link_groups() -> dict[str, int]:
    """Every link of the calling thread's namespace: name → link group."""
    # Imported here: `fabric.build` imports this module, and pyroute2's import would
    # otherwise be on every start-up's path.
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return {link.get("ifname"): link.get("group") or 0 for link in ipr.get_links()}


__all__ = ["link_groups"]
