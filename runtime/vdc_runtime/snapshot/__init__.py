"""Snapshots of a whole data center (issue 2-6), the storage half: what a snapshot holds
(`manifest`, pure) and where snapshots are kept (`store`: written whole or not at all,
verified, exported to and imported from one file).

Taking a snapshot (pausing the machines, migrating their state into the store) and
restoring one are the machines' business; they build on this.
"""

from vdc_runtime.snapshot.manifest import (
    MANIFEST_NAME,
    VERSION,
    FileEntry,
    MachineImage,
    Manifest,
    check_name,
    check_relative,
    layout_differences,
)

__all__ = [
    "MANIFEST_NAME",
    "VERSION",
    "FileEntry",
    "MachineImage",
    "Manifest",
    "check_name",
    "check_relative",
    "layout_differences",
]
