import os
import shutil
import stat
from pathlib import Path

import pytest

from vdc_runtime.spec import SpecError, SpecErrors, load_text

DATA = Path(__file__).parent / "data"


def _make_executable(path: Path) -> None:
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def full_dir(tmp_path: Path) -> Path:
    """A private copy of data/full, with the executable bit a checkout may have lost."""
    target = tmp_path / "full"
    shutil.copytree(DATA / "full", target)
    _make_executable(target / "scripts" / "router.sh")
    return target


@pytest.fixture
def multi_dir(tmp_path: Path) -> Path:
    target = tmp_path / "multi"
    shutil.copytree(DATA / "multi", target)
    _make_executable(target / "fabric" / "gw.sh")
    return target


def spec_errors(
    text: str, base_dir: Path | None = None, source: str = "spec.yml"
) -> list[SpecError]:
    """The errors load_text reports for `text`; fails the test if it loads."""
    with pytest.raises(SpecErrors) as info:
        load_text(text, source=source, base_dir=base_dir or Path(os.sep))
    return info.value.errors


def only_error(text: str, base_dir: Path | None = None) -> SpecError:
    errors = spec_errors(text, base_dir)
    assert len(errors) == 1, "\n".join(map(str, errors))
    return errors[0]
