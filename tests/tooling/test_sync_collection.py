"""scripts/sync-collection.sh copies a checkout's files by name: a file name is data, never
shell code, and names that look like options or hold quotes and newlines arrive intact."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

HOSTILE_NAMES = [
    "plain.txt",
    "$(touch INJECTED)",
    "`touch INJECTED`",
    '"; touch INJECTED; "',
    "'; touch INJECTED; '",
    "--to-command=touch INJECTED",
    "-P",
    "new\nline",
    "sp ace",
    "back\\slash",
]


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "sync-collection.sh", repo / "scripts")
    for name in HOSTILE_NAMES:
        (repo / name).write_text(name, encoding="utf-8")
    (repo / ".gitignore").write_text("ignored.txt\n", encoding="utf-8")
    (repo / "ignored.txt").write_text("x", encoding="utf-8")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "scripts", ".gitignore"], check=True)
    return repo


def test_file_names_are_copied_not_run(checkout: Path, tmp_path: Path) -> None:
    dest = tmp_path / "copy" / "ansible_collections" / "onekvm" / "fleet"
    result = subprocess.run(
        ["bash", str(checkout / "scripts" / "sync-collection.sh"), str(dest)],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(dest)
    assert not list(tmp_path.rglob("INJECTED")), "a file name was run as shell code"
    for name in HOSTILE_NAMES:
        assert (dest / name).read_text(encoding="utf-8") == name
    assert not (dest / "ignored.txt").exists()


def test_a_deleted_tracked_file_is_left_out(checkout: Path, tmp_path: Path) -> None:
    subprocess.run(["git", "-C", str(checkout), "add", "plain.txt"], check=True)
    (checkout / "plain.txt").unlink()
    dest = tmp_path / "copy2"
    subprocess.run(
        ["bash", str(checkout / "scripts" / "sync-collection.sh"), str(dest)],
        check=True, capture_output=True,
    )
    assert not (dest / "plain.txt").exists()
    assert (dest / "sp ace").exists()
