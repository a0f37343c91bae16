# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared pieces of the CH9329 unit tests: the simulated chip on a pty, an isolated
environment (lock, kvmd config root), and a stand-in service manager.

The chip, the serial port (a real pty), the lock, the /proc scan and the kvmd config
reading are all real. The only stand-in is systemctl: unit tests cannot stop and start
systemd units, so a small script records the calls and plays kvmd's unit (its MainPID
is a real process that holds the port open, like kvmd's HID process).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from ansible_collections.onekvm.fleet.tests.testbed.ch9329_sim import Chip, Simulator

FAKE_SYSTEMCTL = r'''#!{python}
# stand-in for systemctl (unit tests only): state in {state}
import json, os, signal, sys
path = {state!r}
with open(path) as f:
    state = json.load(f)
args = [a for a in sys.argv[1:] if not a.startswith("--")]
verb, unit = args[0], args[-1]
state["calls"].append([verb, unit])
info = state["units"].get(unit)
rc = 0
if verb == "is-active":
    rc = 0 if info and info["active"] else 3
elif verb == "show":
    sys.stdout.write("%d\n" % (info["pid"] if info and info["active"] else 0))
elif verb == "stop" and info:
    if state.get("fail_stop"):
        sys.stderr.write("Failed to stop %s: stand-in told to fail\n" % unit)
        rc = 1
    else:
        info["active"] = False
        try:
            os.kill(info["pid"], signal.SIGTERM)
        except OSError:
            pass
elif verb == "start" and info:
    if state.get("fail_start"):
        sys.stderr.write("Failed to start %s: stand-in told to fail\n" % unit)
        rc = 1
    else:
        info["active"] = True
with open(path, "w") as f:
    json.dump(state, f)
sys.exit(rc)
'''


class FakeSystemd:
    """The systemctl stand-in's state: units, and the calls made to it."""

    def __init__(self, directory) -> None:
        self.state_path = str(directory / "systemd.json")
        self.path = str(directory / "systemctl")
        with open(self.path, "w") as f:
            f.write(FAKE_SYSTEMCTL.format(python=sys.executable, state=self.state_path))
        os.chmod(self.path, stat.S_IRWXU)
        self._write({"units": {}, "calls": []})
        self.holders: list = []

    def _read(self) -> dict:
        with open(self.state_path) as f:
            return json.load(f)

    def _write(self, state: dict) -> None:
        with open(self.state_path, "w") as f:
            json.dump(state, f)

    def add_unit_holding(self, unit: str, port: str) -> int:
        """An active unit whose main process holds ``port`` open (like kvmd); returns its pid."""
        proc = subprocess.Popen([sys.executable, "-c", "import os, sys, time\nfd = os.open(sys.argv[1], os.O_RDWR | os.O_NOCTTY)\n"
                                 "sys.stdout.write('open\\n'); sys.stdout.flush()\ntime.sleep(60)", port],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline() == "open\n"
        self.holders.append(proc)
        self.set_unit(unit, active=True, pid=proc.pid)
        return proc.pid

    def set_unit(self, unit: str, active: bool, pid: int = 0) -> None:
        state = self._read()
        state["units"][unit] = {"active": active, "pid": pid}
        self._write(state)

    def set(self, **flags) -> None:
        state = self._read()
        state.update(flags)
        self._write(state)

    @property
    def calls(self) -> list:
        return [tuple(c) for c in self._read()["calls"] if c[0] in ("stop", "start")]

    def is_active(self, unit: str) -> bool:
        return self._read()["units"][unit]["active"]

    def cleanup(self) -> None:
        for proc in self.holders:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(5)


@pytest.fixture
def box_env(tmp_path, monkeypatch):
    """An isolated box: private lock file, an empty kvmd config tree, the systemctl stand-in."""
    kvmd_root = tmp_path / "root"
    (kvmd_root / "etc" / "kvmd" / "override.d").mkdir(parents=True)
    systemd = FakeSystemd(tmp_path)
    monkeypatch.setenv("ONEKVM_LOCK_PATH", str(tmp_path / "run" / "hardware.lock"))
    monkeypatch.setenv("ONEKVM_KVMD_ROOT", str(kvmd_root))
    monkeypatch.setenv("ONEKVM_SYSTEMCTL", systemd.path)
    try:
        yield {"kvmd_root": kvmd_root, "systemd": systemd, "tmp": tmp_path}
    finally:
        systemd.cleanup()


@pytest.fixture
def sim(box_env):
    """The simulated chip on a pseudo-terminal; ``sim.port`` is its tty path."""
    with Simulator.on_pty(chip=Chip(reset_time=0.3)) as simulator:
        yield simulator


def set_chip_baudrate(sim, baudrate: int) -> None:
    """Make the simulated chip run at ``baudrate`` now and after any RESET."""
    sim.chip.stored[3:7] = baudrate.to_bytes(4, "big")
    sim.chip.active = bytes(sim.chip.stored)


def write_kvmd_config(root, text: str, name: str = "override.yaml") -> None:
    path = root / "etc" / "kvmd" / name
    path.write_text(text)


def wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()
