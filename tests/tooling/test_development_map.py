"""docs/development.md's layout table names only paths that exist (a moved concern moves the table too)."""

from __future__ import annotations

import glob
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "development.md"


def expand(pattern: str) -> list:
    """``a/{b,c}.py`` -> ``[a/b.py, a/c.py]`` (nested alternatives too)."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if not match:
        return [pattern]
    return [path for choice in match.group(1).split(",")
            for path in expand(pattern[:match.start()] + choice + pattern[match.end():])]


def table_places() -> list:
    """(concern, path pattern) for each backticked path in the "place" column of the layout table."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Layout: where each concern lives", 1)[1].split("\n## ", 1)[0]
    places = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 2 or cells[0] in ("concern", "---"):
            continue
        for token in re.findall(r"`([^`]+)`", cells[1]):
            if "/" in token or re.fullmatch(r"[\w.-]+\.[a-z]+", token):
                places.append((cells[0], token))
    return places


def test_the_table_is_found_and_names_the_concerns_a_newcomer_asks_for():
    places = table_places()
    assert len(places) > 40, places
    named = " ".join(concern for concern, dummy in places)
    for concern in ("CH9329 protocol", "ladder", "sudoers rules", "kvmd stand-in", "CH9329 simulator"):
        assert concern in named, concern


@pytest.mark.parametrize("concern, pattern", table_places())
def test_each_place_exists(concern, pattern):
    for path in expand(pattern):
        assert glob.glob(str(ROOT / path)), "%s: %s does not exist (docs/development.md)" % (concern, path)
