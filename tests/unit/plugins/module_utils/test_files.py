# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the root-run box command writes and reads cannot be steered at other files."""

from __future__ import annotations

import os

import pytest

from ansible_collections.onekvm.fleet.plugins.module_utils import _files, _relay
from ansible_collections.onekvm.fleet.plugins.module_utils._errors import InvalidArgument, OnekvmError, PermissionDenied
from ansible_collections.onekvm.fleet.plugins.module_utils._lock import hardware_lock
from ansible_collections.onekvm.fleet.tests.support.boxpkg import run_cli


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "victim"
    path.write_text("precious\n")
    return path


def test_lock_path_that_is_a_symlink_is_refused_and_its_target_untouched(tmp_path, victim):
    lock = tmp_path / "run" / "hardware.lock"
    lock.parent.mkdir()
    lock.symlink_to(victim)
    with pytest.raises(InvalidArgument, match="symbolic link"):
        with hardware_lock(timeout=0, path=str(lock)):
            pass
    assert victim.read_text() == "precious\n"


def test_lock_path_that_is_a_hard_link_is_refused(tmp_path, victim):
    lock = tmp_path / "hardware.lock"
    os.link(victim, lock)
    with pytest.raises(PermissionDenied, match="hard links"):
        with hardware_lock(timeout=0, path=str(lock)):
            pass
    assert victim.read_text() == "precious\n"


def test_a_file_where_the_lock_directory_should_be_is_a_clear_error(tmp_path):
    blocker = tmp_path / "run"
    blocker.write_text("")
    with pytest.raises(InvalidArgument, match="refusing to use .*run.*not a directory"):
        with hardware_lock(timeout=0, path=str(blocker / "onekvm" / "hardware.lock")):
            pass


def test_a_fifo_as_lock_or_state_file_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(InvalidArgument, match="not a regular file"):
        with hardware_lock(timeout=0, path=str(fifo)):
            pass
    with pytest.raises(InvalidArgument, match="not a regular file"):
        _files.read_bounded(str(fifo), 100)


@pytest.mark.parametrize("path", ["/dev/zero", "/dev/urandom"])
def test_reads_are_bounded_and_of_regular_files_only(path):
    with pytest.raises(InvalidArgument, match="not a regular file"):
        _files.read_bounded(path, 1024)


def test_a_big_file_is_not_read_whole(tmp_path):
    big = tmp_path / "big"
    big.write_bytes(b"x" * 5000)
    with pytest.raises(InvalidArgument, match="larger than 4096 bytes"):
        _files.read_bounded(str(big), 4096)


def test_relay_state_file_symlink_is_refused_and_the_target_untouched(tmp_path, victim):
    state = tmp_path / "relay.json"
    state.symlink_to(victim)
    record = _relay.StateRecord(str(state))
    with pytest.raises(OnekvmError, match="relay state file.*symbolic link"):
        record.write("/dev/x", 1, {}, "on")
    assert victim.read_text() == "precious\n"


def test_relay_state_file_holding_a_json_list_is_a_warning(tmp_path):
    state = tmp_path / "relay.json"
    state.write_text("[1, 2]\n")
    record = _relay.StateRecord(str(state))
    assert record.recorded("/dev/x", 1, {}) is None
    assert "not a JSON object of ports" in record.warnings[0]


def test_replace_writes_a_new_file_atomically_with_its_mode(tmp_path):
    path = tmp_path / "d" / "state.json"
    _files.replace_own_file(str(path), "{}\n", mode=0o640)
    _files.replace_own_file(str(path), "{\"a\": 1}\n", mode=0o640)
    assert path.read_text() == "{\"a\": 1}\n" and (path.stat().st_mode & 0o777) == 0o640
    assert sorted(os.listdir(path.parent)) == ["state.json"]  # no temporary file left


@pytest.mark.parametrize("args", [
    ["usb-list", "--sysfs-root", "/tmp"],
    ["usb-reset", "534d:2109", "--dev-root", "/tmp"],
    ["relay", "on", "--port", "/dev/null", "--state-file", "/etc/ld.so.preload"],
])
def test_test_options_are_not_honoured_through_sudo(args):
    res = run_cli(*args, env={"SUDO_UID": "1000", "SUDO_USER": "kvmd"})
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "is not honoured through sudo" in res.stderr and "Traceback" not in res.stderr
