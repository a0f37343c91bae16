"""scripts/setup.sh stops at once, with one line saying what to do, when it cannot go on."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OLD_PYTHON = "/usr/bin/python3.11"  # Debian 12's own


@pytest.mark.skipif(not Path(OLD_PYTHON).exists(), reason="needs a Python older than 3.12")
def test_a_too_old_python_is_refused_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup.sh"), "nox"],
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path), "ONEKVM_PYTHON": OLD_PYTHON,
             "ONEKVM_CACHE": str(tmp_path / "cache")},
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"setup: ONEKVM_PYTHON={OLD_PYTHON} is not a Python >= 3.12"
    ]


def test_an_unknown_mode_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup.sh"), "everything"],
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path)},
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "usage: scripts/setup.sh [nox]"
