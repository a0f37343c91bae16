# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""`onekvm status` reports how the last Reset HID run went (its unit's outcome, from systemd).

systemctl is replaced by a script printing fixed `systemctl show` properties (the edge the unit
tests cannot reach: real systemd runs the unit in the VM test tests/vm/test_gpio_buttons.py).
"""

from __future__ import annotations

import json
import os
import stat
import sys

import pytest

from ansible_collections.onekvm.fleet.tests.support.boxpkg import run_cli

SUCCESS = {"LoadState": "loaded", "ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0",
           "ExecMainStartTimestamp": "Tue 2026-12-01 20:00:00 UTC", "ExecMainExitTimestamp": "Tue 2026-12-01 20:00:09 UTC"}


def fake_systemctl(tmp_path, props):
    path = tmp_path / "systemctl"
    path.write_text("#!%s\nimport sys\nprops = %r\nwanted = [a.split('=', 1)[1] for a in sys.argv[1:] if a.startswith('--property=')]\n"
                    "if sys.argv[1] != 'show' or sys.argv[-1] != 'onekvm-reset-hid.service':\n    sys.exit(1)\n"
                    "for p in wanted:\n    print('%%s=%%s' %% (p, props.get(p, '')))\n" % (sys.executable, props))
    path.chmod(stat.S_IRWXU)
    return {"ONEKVM_SYSTEMCTL": str(path)}


def watchdog_state(tmp_path):
    path = tmp_path / "wd.json"
    path.write_text(json.dumps({"status": "ok", "pid": os.getpid()}))
    return str(path)


@pytest.mark.parametrize("props, summary", [
    (SUCCESS, "Reset HID: last run at Tue 2026-12-01 20:00:00 UTC succeeded"),
    (dict(SUCCESS, Result="exit-code", ExecMainStatus="5"),
     "Reset HID: last run at Tue 2026-12-01 20:00:00 UTC failed (exit-code, exit status 5): journalctl -u onekvm-reset-hid.service"),
    (dict(SUCCESS, ActiveState="activating"), "Reset HID: running since Tue 2026-12-01 20:00:00 UTC"),
    (dict(SUCCESS, ExecMainStartTimestamp=""), "Reset HID: not run since boot"),
    # what systemd 252 (the simulated box's Debian 12) shows for the oneshot unit after a run
    (dict(SUCCESS, ExecMainStartTimestamp="", InactiveExitTimestamp="Tue 2026-12-01 20:00:01 UTC"),
     "Reset HID: last run at Tue 2026-12-01 20:00:01 UTC succeeded"),
])
def test_status_shows_the_last_reset_hid_outcome(tmp_path, props, summary):
    env = fake_systemctl(tmp_path, props)
    res = run_cli("status", "--state-file", watchdog_state(tmp_path), env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[1] == summary
    data = json.loads(run_cli("--json", "status", "--state-file", watchdog_state(tmp_path), env=env).stdout)
    assert data["reset_hid"]["result"] == props["Result"]


def test_without_the_unit_status_is_as_before(tmp_path):
    env = fake_systemctl(tmp_path, dict(SUCCESS, LoadState="not-found"))
    res = run_cli("--json", "status", "--state-file", watchdog_state(tmp_path), env=env)
    assert res.returncode == 0 and json.loads(res.stdout)["reset_hid"] is None
    assert "Reset HID" not in run_cli("status", "--state-file", watchdog_state(tmp_path), env=env).stdout


def test_without_a_watchdog_the_error_still_tells_the_reset_hid_outcome(tmp_path):
    res = run_cli("status", "--state-file", str(tmp_path / "absent.json"), env=fake_systemctl(tmp_path, SUCCESS))
    assert res.returncode == 3
    assert "no watchdog state" in res.stderr and "Reset HID: last run at Tue 2026-12-01 20:00:00 UTC succeeded" in res.stderr
