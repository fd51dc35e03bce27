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
import tarfile
import urllib.request
from pathlib import Path

from tests.prereqs import atomic

CRATE, VERSION = "nv-redfish-schema", "0.10.1"
SHA256 = "1bdee22eb005df9021012e5014584c282b50b6d80c3aa49aca5480760920b05d"
URL = f"https://static.crates.io/crates/{CRATE}/{CRATE}-{VERSION}.crate"
INSIDE = f"{CRATE}-{VERSION}/redfish-csdl/csdl/"
REQUIRED = ("ServiceRoot_v1.xml",)


def cached_dir() -> Path:
    return Path(os.environ.get("VDC_CACHE_DIR", "/var/cache/vdc")) / f"redfish-csdl-{VERSION}"


def fetched() -> Path | None:
    """The schemas' directory if `make deps` fetched them whole, else None."""
    found = cached_dir()
    return found if atomic.verify(found, required=REQUIRED) else None


def fetch() -> bool:
    """Fetch and unpack the schemas unless they are there; True if this call did. All or
    nothing, as every build output of `make deps` (`atomic`)."""
    out = cached_dir()
    with atomic.locked(out):
        if atomic.verify(out, required=REQUIRED):
            return False
        with urllib.request.urlopen(URL, timeout=120) as answer:
            crate = answer.read()
        digest = hashlib.sha256(crate).hexdigest()
        if digest != SHA256:
            raise SystemExit(f"deps: {URL} has sha256 {digest}, expected {SHA256}")
        staging = atomic.partial(out)
        with tarfile.open(fileobj=io.BytesIO(crate), mode="r:gz") as archive:
            for member in archive.getmembers():
                name = member.name
                if member.isfile() and name.startswith(INSIDE) and name.endswith(".xml"):
                    source = archive.extractfile(member)
                    assert source is not None
                    (staging / Path(name).name).write_bytes(source.read())
        if not all((staging / name).is_file() for name in REQUIRED):
            raise SystemExit(f"deps: no Redfish schemas under {INSIDE} in {URL}")
        atomic.publish(staging, out, info={"crate": f"{CRATE} {VERSION}", "sha256": SHA256})
    return True
