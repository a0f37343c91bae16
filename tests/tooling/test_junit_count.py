"""scripts/junit_count.py: results come from JUnit XML, one count per testcase."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PYTEST_LIKE = """<?xml version="1.0"?>
<testsuites><testsuite name="pytest" tests="5">
<testcase classname="a" name="ok1"/><testcase classname="a" name="ok2"/>
<testcase classname="a" name="bad"><failure message="x">boom</failure></testcase>
<testcase classname="a" name="err"><error message="y"/></testcase>
<testcase classname="a" name="skip"><skipped message="z"/></testcase>
</testsuite></testsuites>
"""

ANSIBLE_TEST_LIKE = """<?xml version="1.0"?>
<testsuites><testsuite name="ansible-test"><testcase classname="sanity" name="pep8"/>
</testsuite></testsuites>
"""


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "junit_count.py"), *args],
        capture_output=True, text=True, check=False,
    )


def test_counts_every_testcase_of_every_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.xml").write_text(PYTEST_LIKE, encoding="utf-8")
    (tmp_path / "sub" / "b.xml").write_text(ANSIBLE_TEST_LIKE, encoding="utf-8")
    (tmp_path / "notes.txt").write_text("3 passed in 1s", encoding="utf-8")
    result = run(str(tmp_path))
    assert result.stdout.split() == ["3", "2", "1"]


def test_a_broken_file_is_a_failure_not_a_pass(tmp_path: Path) -> None:
    (tmp_path / "cut.xml").write_text("<testsuites><testsuite>", encoding="utf-8")
    result = run(str(tmp_path))
    assert result.stdout.split() == ["0", "1", "0"]
    assert "cut.xml" in result.stderr


def test_no_files_count_nothing(tmp_path: Path) -> None:
    assert run(str(tmp_path)).stdout.split() == ["0", "0", "0"]


def test_failed_cases_are_named_with_their_message(tmp_path: Path) -> None:
    (tmp_path / "a.xml").write_text(PYTEST_LIKE, encoding="utf-8")
    (tmp_path / "cut.xml").write_text("<testsuites>", encoding="utf-8")
    lines = run("--failed", str(tmp_path)).stdout.splitlines()
    assert lines == ["a::bad: x", "a::err: y", f"{tmp_path / 'cut.xml'}: unreadable"]
