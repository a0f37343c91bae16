# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""provision.yml on a small container fleet: no-change re-runs, and the gate stopping a bad rollout.

Runs after test_health_report.py (same session fleet); the last test leaves the canary broken.
"""

from __future__ import annotations

import json
import re

from ansible_collections.onekvm.fleet.tests.fleet import containers
from ansible_collections.onekvm.fleet.tests.fleet.conftest import run


def recap(stdout) -> dict:
    """PLAY RECAP counters per host."""
    counts = {}
    for host, fields in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", stdout, re.M):
        counts[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", fields)}
    return counts


def provision(fleet, *extra):
    limit = ["-l", "!" + fleet["gone"]]
    return run(["ansible-playbook", "-i", fleet["inventory"], *limit, "onekvm.fleet.provision", *extra], env=fleet["env"])


def restart_watchdogs(fleet):
    for name in fleet["names"]:  # the health test stopped one
        containers.box_exec(name, "systemctl", "start", "onekvm-watchdog.service")


def test_rerun_changes_nothing_and_skips_the_role(fleet):
    restart_watchdogs(fleet)
    done = provision(fleet)
    assert done.returncode == 0, done.stdout[-4000:]
    counts = recap(done.stdout)
    assert set(counts) == set(fleet["names"])
    assert all(c["changed"] == 0 and c["failed"] == 0 for c in counts.values()), counts
    # the fast path skipped the role: only its probe and the gate ran (the full role runs ~50 tasks)
    assert all(c["ok"] < 25 for c in counts.values()), counts


def test_full_role_rerun_changes_nothing_either(fleet):
    done = provision(fleet, "-e", "fleet_fast_path=false")
    assert done.returncode == 0, done.stdout[-4000:]
    counts = recap(done.stdout)
    assert all(c["changed"] == 0 and c["failed"] == 0 for c in counts.values()), counts
    assert all(c["ok"] > 35 for c in counts.values()), counts  # the role did run


def test_with_kvmd_credentials_the_gate_asks_the_running_kvmd(fleet):
    """The stand-in serves GET /gpio from the model it prints for kvmd -m, with kvmd's auth (admin/admin as
    PiKVM ships it): the right password passes the live check, a wrong one stops the rollout by name."""
    done = provision(fleet, "-e", "fleet_gate_kvmd_user=admin", "-e", "fleet_gate_kvmd_password=admin")
    assert done.returncode == 0, done.stdout[-4000:]
    assert "Gate: the running kvmd has the buttons with their pulse lengths" in done.stdout
    wrong = provision(fleet, "-e", "fleet_gate_kvmd_user=admin", "-e", "fleet_gate_kvmd_password=Wr0ng-pass")
    assert wrong.returncode != 0
    assert "refused the credentials (HTTP 403)" in wrong.stdout, wrong.stdout[-4000:]
    assert "Wr0ng-pass" not in wrong.stdout  # no_log


def test_the_gate_does_not_trust_a_state_file_whose_writer_is_gone(fleet):
    canary = fleet["names"][0]
    unit = "onekvm-watchdog.service"
    pid = containers.box_exec(canary, "systemctl", "show", "-p", "MainPID", "--value", unit).stdout.strip()
    state_file = "/run/onekvm/watchdog.json"
    # the unit is active but its process is frozen, and the state file says "ok" on behalf of a
    # process that is gone: what a gate could read between a restart and the new process's first check
    assert pid not in ("", "0"), "the canary's watchdog is not running"
    gone = containers.box_exec(canary, "sh", "-c", "echo $$").stdout.strip()  # a shell that has exited
    state = containers.box_json(canary, "cat", state_file)
    containers.box_exec(canary, "kill", "-STOP", pid)
    try:
        containers.box_exec(canary, "python3", "-c", "import sys; open(sys.argv[1], 'w').write(sys.argv[2])",
                            state_file, json.dumps(dict(state, status="ok", pid=int(gone))))
        assert containers.box_json(canary, "/usr/local/bin/onekvm", "--json", "status")["running"] is False
        done = provision(fleet, "-e", "fleet_gate_retries=1")
        assert done.returncode != 0
        assert "The capture watchdog on %s does not pass the gate" % canary in done.stdout
        assert "watchdog: not running (pid %s is gone)" % gone in done.stdout
    finally:
        containers.box_exec(canary, "kill", "-CONT", pid)
    restart_watchdogs(fleet)


def test_a_bad_setting_stops_at_the_canary(fleet):
    canary, rest = fleet["names"]
    before = containers.box_exec(rest, "cat", "/etc/onekvm/watchdog.json").stdout
    # every box would watch a node that does not exist: the canary's watchdog fails the gate
    done = provision(fleet, "-e", "onekvm_watchdog_video_node=/dev/kvmd-video-typo", "-e", "fleet_gate_retries=3")
    assert done.returncode != 0
    assert "The capture watchdog on %s does not pass the gate" % canary in done.stdout
    counts = recap(done.stdout)
    assert counts[canary]["failed"] == 1
    assert rest not in counts or counts[rest]["ok"] == 0, "the rollout went on past the canary"
    # the rest of the fleet still runs the old configuration
    assert containers.box_exec(rest, "cat", "/etc/onekvm/watchdog.json").stdout == before
    assert json.loads(before)["video_node"] == "/run/fake-video"
    assert "/dev/kvmd-video-typo" in containers.box_exec(canary, "cat", "/etc/onekvm/watchdog.json").stdout
