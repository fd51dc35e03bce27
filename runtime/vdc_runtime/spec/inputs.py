"""The files a spec points at, and why one cannot be used: checked by every load, and
again on a cached spec's reuse, since they may have changed since it was validated."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from vdc_runtime.spec.models import BMC, Image, LocaldsVolume, NetworkNamespace, Node, SpecModel

Loc = tuple[str | int, ...]


def file_inputs(model: SpecModel | None) -> list[tuple[Loc, Path, bool]]:
    """Each input file of one document's model: where it is named, its path, and whether
    it must be executable."""
    wanted: list[tuple[Loc, Path, bool]] = []
    if isinstance(model, Image) and model.file is not None:
        wanted.append((("file",), model.file, False))
    elif isinstance(model, Node):
        for key, path in (
            ("ignition", model.ignition),
            ("kernel", model.kernel),
            ("initrd", model.initrd),
        ):
            if path is not None:
                wanted.append(((key,), path, False))
        for i, volume in enumerate(model.volumes):
            if isinstance(volume, LocaldsVolume):
                wanted.append((("volumes", i, "user-data"), volume.user_data, False))
                if volume.network_config is not None:
                    loc = ("volumes", i, "network-config")
                    wanted.append((loc, volume.network_config, False))
    elif isinstance(model, NetworkNamespace):
        for i, script in enumerate(model.init_scripts):
            wanted.append((("init-scripts", i), script, True))
    elif isinstance(model, BMC):
        for i, user in enumerate(model.users):
            if user.password_file is not None:
                wanted.append((("users", i, "password-file"), user.password_file, False))
        if model.tls is not None:
            wanted.append((("tls", "cert"), model.tls.cert, False))
            wanted.append((("tls", "key"), model.tls.key, False))
    return wanted


def file_problem(path: Path, *, executable: bool = False) -> str | None:
    """Why `path` cannot be used as an input file, or None if it can."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return f"file not found: {path}"
    except (OSError, ValueError) as exc:
        return f"cannot access {path}: {getattr(exc, 'strerror', None) or exc}"
    if stat.S_ISDIR(st.st_mode):
        return f"is a directory, not a file: {path}"
    if executable and not os.access(path, os.X_OK):
        return f"init script is not executable: {path} (run chmod +x on it)"
    if not os.access(path, os.R_OK):
        return f"file is not readable: {path}"
    return None
