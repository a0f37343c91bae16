# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ch9329_reset against the simulated chip on a pseudo-terminal: success, check mode, every fault."""

from __future__ import annotations

import ctypes
import fcntl
import multiprocessing
import os
import tempfile
import time

import pytest

from ansible_collections.onekvm.fleet.plugins.modules import ch9329_reset
from ansible_collections.onekvm.fleet.tests.unit.plugins.modules.ch9329_support import (  # noqa: F401  # pylint: disable=unused-import
    box_env, set_chip_baudrate, sim)
from ansible_collections.onekvm.fleet.tests.unit.plugins.modules.module_runner import run_module


def run(args, **kwargs):
    return run_module(ch9329_reset.main, args, **kwargs)


def test_reset_reports_reply_status_and_readiness(sim):
    result = run({"port": sim.port})
    assert not result.get("failed"), result
    assert result["changed"] is True
    assert result["reply"] == "57 ab 00 8f 01 00 92" and result["status"] == "success"
    assert result["attempts"] == 1 and result["ready_after"] >= 0.3 and result["elapsed"] >= result["ready_after"]
    assert result["info"]["version"] == "V1.0" and result["baudrate"] == 9600
    assert sim.counters["resets"] == 1


def test_no_wait(sim):
    result = run({"port": sim.port, "wait_ready": False})
    assert result["changed"] and result["ready_after"] is None
    # not waited for: the RESET was the last frame the chip got (no readiness polls after it);
    # judged on the wire, not on a wall-clock window a loaded machine can miss
    assert sim.counters["resets"] == 1 and sim.log[-1][1] == "57 ab 00 0f 00 11"


def test_check_mode_probes_only(sim):
    result = run({"port": sim.port}, check_mode=True)
    assert result["changed"] is True and result["attempts"] == 0 and result["info"]["usb_enumerated"]
    assert sim.counters["resets"] == 0 and sim.counters["frames"] == 1


def test_auto_baud(sim):
    set_chip_baudrate(sim, 38400)
    result = run({"port": sim.port, "baudrate": "auto"})
    assert not result.get("failed"), result
    assert result["baudrate"] == 38400 and result["attempts"] == 1


@pytest.mark.parametrize("fault,error,words", [
    ({"silent": True}, "Timeout", "no answer from the CH9329"),
    ({"garbage": True}, "DeviceError", "not a frame"),
    ({"truncate": True}, "DeviceError", "truncated reply"),
    ({"bad_checksum": True}, "DeviceError", "corrupt reply"),
    ({"error_status": 0xE6}, "ChipError", "refused RESET: E6 execution failed"),
    ({"wrong_command": True}, "DeviceError", "answered command 0x90 to RESET"),
    ({"never_ready": True}, "Timeout", "did not answer within 0.6 s after RESET"),
    ({"delay": 0.5}, "Timeout", "no answer"),
])
def test_faults_fail_clearly(sim, fault, error, words):
    sim.set_faults(**fault)
    result = run({"port": sim.port, "timeout": 0.3, "retries": 0, "ready_timeout": 0.6})
    assert result["failed"] and result["error"] == error, result
    assert words in result["msg"]
    assert "Traceback" not in str(result)


def test_slow_reply_within_timeout_is_fine(sim):
    sim.set_faults(delay=0.2)
    result = run({"port": sim.port, "timeout": 1.0})
    assert not result.get("failed"), result


def test_wrong_baud(sim):
    result = run({"port": sim.port, "baudrate": "115200", "timeout": 0.3, "retries": 0})
    assert result["failed"] and "baud" in result["msg"]
    assert sim.counters["frames"] == 0


@pytest.mark.parametrize("args,words", [
    ({"baudrate": "4800"}, "value of baudrate must be one of"),
    ({"address": 300}, "address must be 0-254 or auto"),
    ({"address": 255}, "broadcast address: the chip acts on it but never answers"),
    ({"lock_timeout": "x"}, "lock_timeout"),
    ({"retries": -1}, "retries must be a whole number from 0 to 10"),
    ({"timeout": 0}, "timeout must be a number from 0.05 to 60"),
    ({"ready_timeout": 0}, "ready_timeout must be a number from 0.1 to 120"),
])
def test_bad_input_changes_nothing(sim, args, words):
    result = run(dict({"port": sim.port}, **args))
    assert result["failed"] and words in result["msg"]
    assert sim.counters["frames"] == 0


def test_missing_port(box_env, tmp_path):
    result = run({"port": str(tmp_path / "ttyUSB9")})
    assert result["failed"] and result["error"] == "NotFound" and "does not exist" in result["msg"]


def test_not_a_tty(box_env, tmp_path):
    result = run({"port": "/dev/null"})
    assert result["failed"] and "not a tty" in result["msg"]
    plain = tmp_path / "file"
    plain.write_text("")
    result = run({"port": str(plain)})
    assert result["failed"] and "not a character device" in result["msg"]


def test_port_busy(sim):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    holder = ctx.Process(target=_hold_flock, args=(sim.port, queue))  # another program's exclusive use
    holder.start()
    try:
        assert queue.get(timeout=10) == "held"
        result = run({"port": sim.port})
    finally:
        holder.terminate()
        holder.join(10)
    assert result["failed"] and result["error"] == "Busy" and "exclusive use" in result["msg"]
    assert sim.counters["frames"] == 0


def _hold_flock(port, queue):
    fd = os.open(port, os.O_RDWR | os.O_NOCTTY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    queue.put("held")
    time.sleep(30)


def _drop_dac_capabilities():
    """Keep uid 0 but lose CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (capset(2)).

    The kernel then judges file modes for this process as for any owner-less user, while its
    own interpreter and test venv (owned by root) stay readable: no lazy import can fail the way
    it does after setuid(65534) in a venv only root may read.
    """
    libc = ctypes.CDLL(None, use_errno=True)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    header = Header(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (Data * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    dac = (1 << 1) | (1 << 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
    data[0].effective &= ~dac
    data[0].permitted &= ~dac
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to own the port as another user and drop capabilities")
def test_permission_denied(sim, monkeypatch):
    os.chown(sim.port, 65534, 65534)
    os.chmod(sim.port, 0o600)  # the chip's node belongs to someone else: EACCES for us
    lock_dir = tempfile.mkdtemp(prefix="onekvm-lock-")
    monkeypatch.setenv("ONEKVM_LOCK_PATH", os.path.join(lock_dir, "hardware.lock"))
    monkeypatch.setenv("ONEKVM_SYSTEMCTL", "/bin/false")  # no unit is active
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()

    def without_dac_override():
        try:
            _drop_dac_capabilities()
            queue.put(run({"port": sim.port}))
        except BaseException as exc:  # report instead of dying silently
            queue.put({"exception": repr(exc)})

    proc = ctx.Process(target=without_dac_override)
    proc.start()
    result = queue.get(timeout=30)
    proc.join(10)
    assert result.get("failed"), result
    assert result["error"] == "PermissionDenied" and "become: true" in result["msg"]


def test_check_mode_never_touches_kvmd(sim, box_env):
    systemd = box_env["systemd"]
    systemd.add_unit_holding("kvmd.service", sim.port)
    result = run({"port": sim.port}, check_mode=True)
    assert not result.get("failed") and result["changed"] is True, result
    assert result["probed"] is False and result["info"] is None and result["kvmd_holding"] == ["kvmd.service"]
    assert "not probed" in result["warnings"][0]
    assert systemd.calls == [] and sim.counters["frames"] == 0


def test_reset_pauses_kvmd_only_while_it_holds_the_port(sim, box_env):
    systemd = box_env["systemd"]
    systemd.set_unit("kvmd.service", active=True, pid=1)
    result = run({"port": sim.port})
    assert result["changed"] and result["kvmd_paused"] == [] and systemd.calls == [], result
    systemd.add_unit_holding("kvmd.service", sim.port)
    result = run({"port": sim.port})
    assert result["kvmd_paused"] == ["kvmd.service"] and result["kvmd_holding"] == ["kvmd.service"]
    assert "paused for it and started again" in result["msg"]
    assert systemd.calls == [("stop", "kvmd.service"), ("start", "kvmd.service")]


def test_reset_pauses_one_kvm_0_2_holding_the_port(sim, box_env):
    """One-KVM 0.2 has no kvmd: its own service holds the CH9329's port (src/hid/ch9329.rs opens it with serialport 4,
    exclusively); the exchange pauses one-kvm.service instead and starts it again."""
    systemd = box_env["systemd"]
    systemd.add_unit_holding("one-kvm.service", sim.port)
    result = run({"port": sim.port})
    assert result["changed"] and result["kvmd_holding"] == ["one-kvm.service"], result
    assert result["kvmd_paused"] == ["one-kvm.service"]
    assert systemd.calls == [("stop", "one-kvm.service"), ("start", "one-kvm.service")]


def test_address_auto_scan_is_bounded(sim):
    sim.chip.stored[2] = 0x30
    sim.chip.active = bytes(sim.chip.stored)
    result = run({"port": sim.port, "address": "auto"})
    assert not result.get("failed") and result["address"] == 0x30, result
    assert result["reply"] == "57 ab 30 8f 01 00 c2"
    sim.set_faults(silent=True)  # no chip at any address: the whole scan, once
    seen = dict(sim.counters)
    result = run({"port": sim.port, "address": "auto", "baudrate": "115200"})
    assert result["failed"] and result["error"] == "Timeout" and "at any address 0-254" in result["msg"], result
    # one pass over 0-254, not one per retry: judged on what reached the chip (a 6-byte GET_INFO
    # per address; at 115200 against the chip's 9600 every byte is a framing error), not on a clock
    got = sim.counters["wrong_baud_bytes"] - seen["wrong_baud_bytes"]
    assert 255 * 6 <= got < 2 * 255 * 6, got
