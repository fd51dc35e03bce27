import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Root-only tests must fail loudly, not skip, where they cannot run: a skipped test
    # would read as a pass.
    if os.geteuid() == 0:
        return
    for item in items:
        if item.get_closest_marker("root"):
            item.add_marker(pytest.mark.usefixtures("_require_root"))


@pytest.fixture
def _require_root() -> None:
    pytest.fail("this test needs root (it creates kernel objects); run make test as root")
