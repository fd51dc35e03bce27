"""Virtual media as a BMC sees it: the CD drive's state and why an insertion failed.

The front ends (Redfish) reach the machine's CD drive only through `BmcTarget`, which
reports `MediaState` and raises `MediaError`; each front end turns `MediaError.kind` into
its own answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from vdc_runtime.nodes.cdrom import MediaErrorKind


@dataclass(frozen=True)
class MediaState:
    """The CD drive: empty (`image` None) or holding the image fetched from `image`."""

    image: str | None = None
    name: str | None = None
    user: str | None = None

    @property
    def inserted(self) -> bool:
        return self.image is not None


class MediaError(RuntimeError):
    """An insertion the machine refused; `kind` says why, `url` names the image."""

    def __init__(self, kind: MediaErrorKind, message: str, url: str) -> None:
        super().__init__(message)
        self.kind: MediaErrorKind = kind
        self.url = url


__all__ = ["MediaError", "MediaErrorKind", "MediaState"]
