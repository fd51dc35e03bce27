"""What the e2e images are rebuilt for: every file the Containerfiles copy from the
repository counts in an image's inputs (else a change to it would reuse a stale image)."""

from __future__ import annotations

import re

from tests.e2e.cluster import images


def copied_sources(containerfile: str) -> list[str]:
    """The repository paths a Containerfile's COPY instructions take (not --from a stage)."""
    sources = []
    for line in containerfile.splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            sources += [w for w in words[1:-1] if not w.startswith("--")]
    return sources


def test_copied_sources() -> None:
    text = "COPY a b /src/\nCOPY --from=stage /x /y\nRUN cp COPY x\nCOPY --chown=1 c /d\n"
    assert copied_sources(text) == ["a", "b", "c"]


def test_every_copied_file_is_an_input() -> None:
    for containerfile in images.IMAGES.values():
        sources = copied_sources(containerfile.read_text())
        assert sources, containerfile
        for source in sources:
            assert any(re.fullmatch(rf"{re.escape(top)}(/.*)?", source) for top in images.COPIED), (
                f"{containerfile} copies {source}, which images.COPIED lacks"
            )
