"""DMTF's Redfish schemas (CSDL, from DSP8010) for the Redfish Service Validator, fetched by
`make deps` into the cache.

The validator downloads them from DMTF, which a CI machine (or this sandbox) may not reach.
The crates.io crate `nv-redfish-schema` bundles the same DSP8010 files; crates.io is a
package registry these machines do reach, and the download is pinned by version and
sha256. Only its `redfish-csdl/csdl/*.xml` files are kept.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

CRATE, VERSION = "nv-redfish-schema", "0.10.1"
SHA256 = "1bdee22eb005df9021012e5014584c282b50b6d80c3aa49aca5480760920b05d"
URL = f"https://static.crates.io/crates/{CRATE}/{CRATE}-{VERSION}.crate"
INSIDE = f"{CRATE}-{VERSION}/redfish-csdl/csdl/"


def cached_dir() -> Path:
    return Path(os.environ.get("VDC_CACHE_DIR", "/var/cache/vdc")) / f"redfish-csdl-{VERSION}"


def fetched() -> Path | None:
    """The schemas' directory if `make deps` fetched them, else None."""
    found = cached_dir()
    return found if any(found.glob("ServiceRoot_v*.xml")) else None


def fetch() -> bool:
    """Fetch and unpack the schemas unless they are there; True if this call did."""
    if fetched() is not None:
        return False
    with urllib.request.urlopen(URL, timeout=120) as answer:
        crate = answer.read()
    digest = hashlib.sha256(crate).hexdigest()
    if digest != SHA256:
        raise SystemExit(f"deps: {URL} has sha256 {digest}, expected {SHA256}")
    target = cached_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    # Unpacked beside the target and renamed into place: a half-done fetch is never taken.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(crate), mode="r:gz") as archive:
            for member in archive.getmembers():
                name = member.name
                if member.isfile() and name.startswith(INSIDE) and name.endswith(".xml"):
                    source = archive.extractfile(member)
                    assert source is not None
                    (staging / Path(name).name).write_bytes(source.read())
        if not any(staging.glob("ServiceRoot_v*.xml")):
            raise SystemExit(f"deps: no Redfish schemas under {INSIDE} in {URL}")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True
