"""A run's network namespaces, kept open by the holder so that they outlive the agent's
container: with it go its mounts of them, and a namespace without a process inside (a
router that only forwards) would go with them."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable

from vdc_runtime.fabric import netns as nsutil
from vdc_runtime.holder.client import HolderClient, HolderError, close_quietly

log = logging.getLogger("vdc.holder")


class HeldNamespaces:
    def __init__(self, client: HolderClient) -> None:
        self.client = client
        self._holder_id: str | None = None
        """The holder that holds them (a restarted one holds none)."""

    async def hold(self, names: Iterable[str]) -> None:
        """Hand the holder these namespaces (mounted here under their names)."""
        for name in names:
            fd = await asyncio.to_thread(nsutil.open_fd, name)
            try:
                await self.client.hold(name, fd)
            finally:
                os.close(fd)
        self._holder_id = self.client.holder_id

    async def restore(self) -> list[str]:
        """Mount again the namespaces the holder kept (a new agent container has none of
        its predecessor's mounts); their names."""
        held = await self.client.held()
        try:
            for name, fd in held.items():
                await asyncio.to_thread(nsutil.attach, name, fd)
        finally:
            close_quietly(held)
        self._holder_id = self.client.holder_id
        return sorted(held)

    async def check(self, names: Iterable[str]) -> None:
        """A holder restarted (its container died) holds nothing, and its children, the
        machines and apps, died with it: they restart by their policies through the new
        holder; the namespaces, still mounted here, are handed to it again."""
        try:
            await self.client.state()
        except HolderError as exc:
            log.warning("%s", exc)
            return
        if self.client.holder_id != self._holder_id:
            log.warning("the holder was restarted: handing it the namespaces again")
            try:
                await self.hold(names)
            except (HolderError, OSError) as exc:
                log.warning("cannot hand the namespaces to the holder: %s", exc)

    async def release(self) -> list[str]:
        """Let the holder close them (they go once unmounted here); problems, if any."""
        try:
            await self.client.release()
        except HolderError as exc:
            return [str(exc)]
        return []


__all__ = ["HeldNamespaces"]
