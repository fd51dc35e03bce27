import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # pytest-randomly shuffles modules across the whole suite. Keep each top-level package's
    # tests together (in the shuffled order, the packages in order of first appearance), so a
    # package-scoped fixture such as the e2e cluster is set up once, not once per visit.
    first_seen: dict[str, int] = {}
    for item in items:
        first_seen.setdefault(_package(item), len(first_seen))
    items.sort(key=lambda item: first_seen[_package(item)])  # stable: keeps the shuffle

    # Root-only tests must fail loudly, not skip, where they cannot run: a skipped test
    # would read as a pass.
    if os.geteuid() == 0:
        return
    for item in items:
        if item.get_closest_marker("root"):
            item.add_marker(pytest.mark.usefixtures("_require_root"))


def _package(item: pytest.Item) -> str:
    parts = item.nodeid.split("/")
    return parts[1] if len(parts) > 2 and parts[0] == "tests" else parts[0]


@pytest.fixture
def _require_root() -> None:
    pytest.fail("this test needs root (it creates kernel objects); run make test as root")
