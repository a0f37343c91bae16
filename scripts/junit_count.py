"""Count test results from JUnit XML files (pytest, ansible-test, the nox sessions).

    scripts/junit_count.py DIR_OR_FILE...            ->   prints "PASSED FAILED SKIPPED"
    scripts/junit_count.py --failed DIR_OR_FILE...   ->   one line per failed test case

A testcase with a <failure> or <error> counts as failed, one with <skipped> as skipped, any
other as passed. An unreadable file counts as one failure (and is named on stderr).
"""

from __future__ import annotations

import sys
from pathlib import Path
from xml.etree import ElementTree


def count_file(path: Path, failures: list[str] | None = None) -> tuple[int, int, int]:
    passed = failed = skipped = 0
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError) as exc:
        print(f"junit_count: cannot read {path}: {exc}", file=sys.stderr)
        if failures is not None:
            failures.append(f"{path}: unreadable")
        return 0, 1, 0
    for case in root.iter("testcase"):
        tags = {child.tag for child in case}
        if tags & {"failure", "error"}:
            failed += 1
            if failures is not None:
                failures.append(describe(case))
        elif "skipped" in tags:
            skipped += 1
        else:
            passed += 1
    return passed, failed, skipped


def describe(case: ElementTree.Element) -> str:
    """``class::name: first line of the failure message`` (what a CI log's tail must show)."""
    problem = next(child for child in case if child.tag in ("failure", "error"))
    message = (problem.get("message") or problem.text or "").strip().splitlines()
    name = "::".join(part for part in (case.get("classname"), case.get("name")) if part)
    return f"{name}: {message[0][:300]}" if message else name


def count(paths: list[Path], failures: list[str] | None = None) -> tuple[int, int, int]:
    files = []
    for path in paths:
        files.extend(sorted(path.rglob("*.xml")) if path.is_dir() else [path])
    totals = [0, 0, 0]
    for path in files:
        for i, n in enumerate(count_file(path, failures)):
            totals[i] += n
    return totals[0], totals[1], totals[2]


def main(argv: list[str]) -> int:
    if argv[:1] == ["--failed"]:
        failures: list[str] = []
        count([Path(arg) for arg in argv[1:]], failures)
        print("\n".join(failures))
        return 0
    print(*count([Path(arg) for arg in argv]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
