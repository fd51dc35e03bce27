from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.harness import HostNetns


@pytest.fixture
def host() -> Iterator[HostNetns]:
    with HostNetns() as h:
        yield h


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path
