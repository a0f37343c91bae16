# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The relay core and the ``onekvm relay`` command against the simulated board on a pty."""

from __future__ import annotations

import fcntl
import json
import math
import multiprocessing
import os
import signal
import subprocess
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.onekvm.fleet.plugins.module_utils import _relay
from ansible_collections.onekvm.fleet.plugins.module_utils._errors import (
    Busy,
    DeviceError,
    InvalidArgument,
    NotFound,
)
from ansible_collections.onekvm.fleet.plugins.module_utils._lock import hardware_lock
from ansible_collections.onekvm.fleet.tests.support.boxpkg import cli_argv, package_root, run_cli
from ansible_collections.onekvm.fleet.tests.testbed.relay_sim import PtyRelay, RelayBoard

ON_1 = bytes.fromhex("a00101a2")  # the vendor's documented vectors
OFF_1 = bytes.fromhex("a00100a1")


@pytest.fixture
def lock_path(tmp_path, monkeypatch):
    path = str(tmp_path / "run" / "hardware.lock")
    monkeypatch.setenv("ONEKVM_LOCK_PATH", path)
    return path


@pytest.fixture
def relay(lock_path):
    with PtyRelay(RelayBoard(channels=8)) as sim:
        yield sim


@pytest.fixture
def state_file(tmp_path):
    return str(tmp_path / "state" / "relay-state.json")


def settle(sim, expected_bytes: int, timeout: float = 5.0) -> bytes:
    """Wait until the simulator has read ``expected_bytes`` (or the timeout)."""
    deadline = time.monotonic() + timeout
    while len(sim.board.raw_bytes()) < expected_bytes and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)  # and nothing more arrives
    return sim.board.raw_bytes()


# ---- frames ----------------------------------------------------------------------------

def test_frames_match_the_documented_vectors():
    assert _relay.frame(1, True) == ON_1
    assert _relay.frame(1, False) == OFF_1
    assert _relay.frame(8, True) == bytes.fromhex("a00801a9")


@given(channel=st.integers(1, 8), on=st.booleans())
def test_every_frame_decodes_on_the_independent_simulator(channel, on):
    board = RelayBoard(channels=8)
    board.feed(_relay.frame(channel, on))
    assert [(f.channel, f.on) for f in board.frames] == [(channel, on)]
    assert board.rejected == []


# ---- validation ------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, words", [
    (dict(state="toggle", channel=1), ["state", "on, off, pulse"]),
    (dict(state="on", channel=0), ["channel", "between 1 and 1"]),
    (dict(state="on", channel=2), ["channel", "set channels"]),
    (dict(state="on", channel=5, channels=4), ["between 1 and 4"]),
    (dict(state="on", channel=True), ["channel"]),
    (dict(state="on", channel=1, channels=3), ["channels", "1, 2, 4, 8"]),
    (dict(state="pulse", channel=1, duration=0), ["duration", "from 0.05 to 10"]),
    (dict(state="pulse", channel=1, duration=-1), ["duration"]),
    (dict(state="pulse", channel=1, duration=10.01), ["duration"]),
    (dict(state="pulse", channel=1, duration=math.nan), ["duration"]),
    (dict(state="pulse", channel=1, duration="1"), ["duration", "number"]),
    (dict(state="on", channel=1, duration=0.5), ["duration", "pulse only"]),
    (dict(state="on", channel=1, baudrate=1234), ["baudrate", "9600"]),
])
def test_bad_options_are_refused_with_a_clear_message(kwargs, words):
    with pytest.raises(InvalidArgument) as info:
        _relay.validate(**kwargs)
    for word in words:
        assert word in info.value.msg


def test_validate_fills_the_default_pulse_and_accepts_the_bounds():
    assert _relay.validate("pulse", 1).duration == 0.5
    assert _relay.validate("pulse", 4, channels=4, duration=10).duration == 10.0
    assert _relay.validate("pulse", 1, duration=0.05).duration == 0.05
    assert _relay.validate("off", 8, channels=8).duration is None


# ---- the port --------------------------------------------------------------------------

def test_probe_port_errors(tmp_path, relay):
    with pytest.raises(NotFound, match="does not exist"):
        _relay.probe_port(str(tmp_path / "ttyUSB9"))
    with pytest.raises(InvalidArgument, match="not a tty"):
        _relay.probe_port("/dev/null")
    plain = tmp_path / "plain"
    plain.write_text("")
    with pytest.raises(InvalidArgument, match="not a character device"):
        _relay.probe_port(str(plain))
    with pytest.raises(InvalidArgument, match="absolute"):
        _relay.probe_port("ttyUSB0")
    assert _relay.probe_port(relay.port) == os.path.realpath(relay.port)


def test_probe_port_reports_an_exclusive_holder(relay):
    fd = os.open(relay.port, os.O_RDWR | os.O_NOCTTY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what pyserial's exclusive=True does
        with pytest.raises(Busy) as info:
            _relay.probe_port(relay.port)
        assert "pid %d" % os.getpid() in info.value.msg
    finally:
        os.close(fd)


def _fake_usb_tty(sys_root, busnum="1", devnum="7"):
    usb = sys_root / "devices" / "pci0000:00" / "usb1" / "1-1" / "1-1.4"
    tty_dir = usb / "1-1.4:1.0" / "ttyUSB1" / "tty" / "ttyUSB1"
    tty_dir.mkdir(parents=True)
    (usb / "busnum").write_text(busnum + "\n")
    (usb / "devnum").write_text(devnum + "\n")
    (sys_root / "class" / "tty").mkdir(parents=True)
    (sys_root / "class" / "tty" / "ttyUSB1").symlink_to(tty_dir)
    os.symlink(usb / "1-1.4:1.0" / "ttyUSB1", tty_dir / "device")
    return usb


def test_adapter_identity_names_the_usb_device_behind_the_tty(tmp_path):
    sys_root = tmp_path / "sys"
    _fake_usb_tty(sys_root)
    proc = tmp_path / "proc" / "sys" / "kernel" / "random"
    proc.mkdir(parents=True)
    (proc / "boot_id").write_text("b00t\n")
    identity = _relay.adapter_identity("/dev/ttyUSB1", str(sys_root), str(tmp_path / "proc"))
    assert identity == {"device": "/dev/ttyUSB1", "boot_id": "b00t", "usb_path": "1-1.4", "busnum": "1", "devnum": "7"}
    (sys_root / "devices" / "pci0000:00" / "usb1" / "1-1" / "1-1.4" / "devnum").write_text("9\n")  # replugged
    assert _relay.adapter_identity("/dev/ttyUSB1", str(sys_root), str(tmp_path / "proc"))["devnum"] == "9"


# ---- the state record ------------------------------------------------------------------

def test_record_round_trip_and_identity_mismatch(state_file):
    record = _relay.StateRecord(state_file)
    ident = {"device": "/dev/ttyUSB1", "devnum": "7"}
    assert record.recorded("/dev/onekvm-relay", 1, ident) is None
    record.write("/dev/onekvm-relay", 1, ident, "on")
    record.write("/dev/onekvm-relay", 2, ident, "off")
    assert record.recorded("/dev/onekvm-relay", 1, ident) == "on"
    assert record.recorded("/dev/onekvm-relay", 2, ident) == "off"
    assert record.recorded("/dev/onekvm-relay", 3, ident) is None
    other = dict(ident, devnum="8")  # the adapter was replugged: the record is void
    assert record.recorded("/dev/onekvm-relay", 1, other) is None
    record.write("/dev/onekvm-relay", 2, other, "on")  # and a write starts afresh
    assert json.load(open(state_file))["/dev/onekvm-relay"]["channels"] == {"2": "on"}
    record.write("/dev/onekvm-relay", 2, other, None)
    assert record.recorded("/dev/onekvm-relay", 2, other) is None


def test_corrupt_record_is_a_warning_and_unknown(state_file):
    os.makedirs(os.path.dirname(state_file))
    with open(state_file, "w") as f:
        f.write("{not json")
    record = _relay.StateRecord(state_file)
    assert record.recorded("/dev/x", 1, {}) is None
    assert "unreadable" in record.warnings[0]


# ---- run(): the action against the simulated board --------------------------------------

def test_on_then_on_again_sends_once_and_says_unchanged(relay, state_file):
    first = _relay.run(port=relay.port, channel=1, state="on", state_file=state_file)
    assert first["changed"] and first["frames"] == ["a0 01 01 a2"] and first["bytes_sent"] == 4
    assert first["previous_state"] == "unknown"
    assert settle(relay, 4) == ON_1
    again = _relay.run(port=relay.port, channel=1, state="on", state_file=state_file)
    assert not again["changed"] and again["frames"] == [] and again["bytes_sent"] == 0
    assert again["previous_state"] == "on"
    assert settle(relay, 5, timeout=0.3) == ON_1  # nothing more went out
    forced = _relay.run(port=relay.port, channel=1, state="on", state_file=state_file, force=True)
    assert forced["changed"] and settle(relay, 8) == ON_1 + ON_1
    off = _relay.run(port=relay.port, channel=1, state="off", state_file=state_file)
    assert off["changed"] and off["previous_state"] == "on"
    assert settle(relay, 12) == ON_1 + ON_1 + OFF_1
    assert relay.board.states[1] is False


def test_without_a_record_on_is_always_sent(relay):
    for dummy in range(2):
        assert _relay.run(port=relay.port, channel=3, channels=4, state="on", state_file=None)["changed"]
    assert settle(relay, 8) == bytes.fromhex("a00301a4") * 2


def test_pulse_width_is_within_tolerance_and_ends_off(relay, state_file):
    _relay.run(port=relay.port, channel=2, channels=2, state="on", state_file=state_file)
    result = _relay.run(port=relay.port, channel=2, channels=2, state="pulse", duration=0.3, state_file=state_file)
    assert result["changed"] and result["previous_state"] == "on"
    assert result["frames"] == ["a0 02 01 a3", "a0 02 00 a2"] and result["bytes_sent"] == 8
    frames = relay.board.wait_for_frames(3)
    assert [f.raw.hex() for f in frames] == ["a00201a3", "a00201a3", "a00200a2"]
    (on_at, off_at, width), = relay.board.pulses(2)[-1:]
    # the core's own clock: at least the duration between the two writes; the board's reader
    # thread may get the frames late on a loaded host, so its width is bounded loosely
    assert result["pulse_width"] >= 0.3, result
    assert 0.25 <= width <= result["pulse_width"] + 0.5, (width, result["pulse_width"])
    assert relay.board.states[2] is False
    assert _relay.StateRecord(state_file).recorded(relay.port, 2, _relay.adapter_identity(relay.port)) == "off"


def test_check_mode_sends_nothing_and_keeps_the_record(relay, state_file):
    for state in ("on", "off", "pulse"):
        result = _relay.run(port=relay.port, channel=1, state=state, state_file=state_file, check_mode=True)
        assert result["changed"] and result["bytes_sent"] == 0 and result["check_mode"]
    assert result["frames"] == ["a0 01 01 a2", "a0 01 00 a1"]
    assert settle(relay, 1, timeout=0.3) == b""
    assert not os.path.exists(state_file)


@pytest.mark.parametrize("kwargs", [
    dict(channel=0), dict(channel=2), dict(state="pulse", duration=0), dict(state="pulse", duration=11),
    dict(state="toggle"), dict(state="on", duration=1.0), dict(baudrate=300),
])
def test_bad_input_sends_nothing_and_writes_no_record(relay, state_file, kwargs):
    args = dict(port=relay.port, channel=1, state="on", state_file=state_file)
    args.update(kwargs)
    with pytest.raises(InvalidArgument):
        _relay.run(**args)
    assert settle(relay, 1, timeout=0.2) == b""
    assert not os.path.exists(state_file)


def test_unwritable_record_fails_before_sending(relay, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InvalidArgument, match="state file"):
        _relay.run(port=relay.port, state="on", state_file=str(blocker / "relay.json"))
    assert settle(relay, 1, timeout=0.2) == b""


def _hold_lock(path, ready, release):
    with hardware_lock(path=path, timeout=1):
        ready.set()
        release.wait(10)


def test_a_held_hardware_lock_is_busy_and_nothing_is_sent(relay, lock_path, state_file):
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(lock_path, ready, release))
    proc.start()
    try:
        assert ready.wait(10)
        with pytest.raises(Busy, match="pid %d" % proc.pid):
            _relay.run(port=relay.port, state="pulse", state_file=state_file, lock_timeout=0.2)
    finally:
        release.set()
        proc.join(10)
    assert settle(relay, 1, timeout=0.2) == b""


def _press_in_progress(lock_path, port, ready, hold):
    """Stand-in for another press: the hardware lock and the port, both held for ``hold`` s."""
    with hardware_lock(path=lock_path, timeout=1):
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        ready.set()
        time.sleep(hold)
        os.close(fd)


def test_a_port_busy_with_our_own_press_waits_for_the_lock(relay, lock_path, state_file):
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_press_in_progress, args=(lock_path, relay.port, ready, 0.5))
    proc.start()
    try:
        assert ready.wait(10)
        with pytest.raises(Busy, match="exclusive use"):  # check mode does not wait
            _relay.run(port=relay.port, state="pulse", state_file=state_file, check_mode=True)
        res = _relay.run(port=relay.port, state="pulse", duration=0.1, state_file=state_file, lock_timeout=10)
    finally:
        proc.join(10)
    assert res["changed"] and res["device"] == os.path.realpath(relay.port)
    assert [f.raw for f in relay.board.wait_for_frames(2)] == [ON_1, OFF_1]


def test_a_port_held_by_a_stranger_is_busy_under_the_lock_and_nothing_is_sent(relay, state_file):
    fd = os.open(relay.port, os.O_RDWR | os.O_NOCTTY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(Busy, match="exclusive use"):
            _relay.run(port=relay.port, state="on", state_file=state_file)
    finally:
        os.close(fd)
    assert not os.path.exists(state_file)
    assert settle(relay, 1, timeout=0.2) == b""


def test_two_pulses_at_once_never_interleave(relay, state_file):
    results, errors = [], []

    def press(channel):
        try:
            results.append(_relay.run(port=relay.port, channel=channel, channels=2, state="pulse", duration=0.2,
                                      state_file=state_file))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)
    threads = [threading.Thread(target=press, args=(ch,)) for ch in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors and len(results) == 2
    frames = relay.board.wait_for_frames(4)
    # each on is followed by its own off before the other channel's on
    seen = [(f.channel, f.on) for f in frames]
    assert seen in ([(1, True), (1, False), (2, True), (2, False)], [(2, True), (2, False), (1, True), (1, False)])


def test_an_interrupted_pulse_still_sends_off(relay, state_file):
    def interrupt(*args):
        raise KeyboardInterrupt()
    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    try:
        with pytest.raises(KeyboardInterrupt):
            _relay.run(port=relay.port, state="pulse", duration=5, state_file=state_file)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    frames = relay.board.wait_for_frames(2)
    assert [f.raw for f in frames] == [ON_1, OFF_1]
    assert frames[1].time - frames[0].time < 1.0
    # the record says unknown, not on
    assert _relay.StateRecord(state_file).recorded(relay.port, 1, _relay.adapter_identity(relay.port)) is None


class _BrokenSerial:
    """A serial port whose off write fails: a pty cannot be made to fail a write, a
    real adapter yanked mid-pulse can (mock at the hardware edge)."""

    def __init__(self, fail_on_write: int) -> None:
        self.writes, self.fail_on_write = [], fail_on_write

    def write(self, data):
        if len(self.writes) + 1 == self.fail_on_write:
            raise OSError(5, "Input/output error")
        self.writes.append(data)
        return len(data)

    def flush(self):
        pass

    def close(self):
        pass


def test_a_failed_off_write_says_the_relay_may_be_left_on(relay, state_file, monkeypatch):
    broken = _BrokenSerial(fail_on_write=2)
    monkeypatch.setattr(_relay, "open_port", lambda *a, **k: broken)
    with pytest.raises(DeviceError) as info:
        _relay.run(port=relay.port, state="pulse", duration=0.05, state_file=state_file)
    assert "may be left ON" in info.value.msg and "onekvm relay off --channel 1" in info.value.msg
    assert info.value.details["frames_sent"] == ["a0 01 01 a2"]
    assert broken.writes == [ON_1]


# ---- the box command -------------------------------------------------------------------

def test_cli_pulse_json(relay, state_file, lock_path):
    res = run_cli("--json", "relay", "pulse", "--port", relay.port, "--duration", "0.2", "--state-file", state_file,
                  env={"ONEKVM_LOCK_PATH": lock_path})
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["frames"] == ["a0 01 01 a2", "a0 01 00 a1"] and out["changed"]
    assert [f.raw for f in relay.board.wait_for_frames(2)] == [ON_1, OFF_1]
    # the writer's own clock: off went out no sooner than asked
    assert 0.2 <= out["pulse_width"] <= 0.35
    # the board's clock stamps a frame when the simulator reads it: on a loaded host the on frame can be
    # read late (0.17 s seen), so only the upper bound and "not the 0.5 s default" are the board's to judge
    assert 0.1 <= relay.board.pulses(1)[0][2] <= 0.35


def test_cli_text_and_unchanged(relay, state_file, lock_path):
    env = {"ONEKVM_LOCK_PATH": lock_path}
    first = run_cli("relay", "off", "--port", relay.port, "--state-file", state_file, env=env)
    assert first.returncode == 0 and "switched off" in first.stdout
    second = run_cli("relay", "off", "--port", relay.port, "--state-file", state_file, env=env)
    assert second.returncode == 0 and "already off" in second.stdout and "sent nothing" in second.stdout
    check = run_cli("relay", "on", "--check", "--port", relay.port, "--state-file", state_file, env=env)
    assert check.returncode == 0 and "would send a0 01 01 a2" in check.stdout
    assert settle(relay, 4) == OFF_1


@pytest.mark.parametrize("args, code, words", [
    (["pulse", "--channel", "0"], 2, "channel must be between 1 and 1"),
    (["pulse", "--channel", "3", "--channels", "2"], 2, "between 1 and 2"),
    (["pulse", "--duration", "0"], 2, "duration must be a number from"),
    (["pulse", "--duration", "30"], 2, "duration must be a number from"),
    (["on", "--duration", "1"], 2, "pulse only"),
    (["toggle"], 2, "invalid choice"),
    (["pulse", "--port", "/nonexistent/ttyUSB7"], 3, "does not exist"),
    (["pulse", "--port", "/dev/null"], 2, "not a tty"),
])
def test_cli_errors_have_exit_codes_and_send_nothing(relay, state_file, lock_path, args, code, words):
    if "--port" not in args:
        args = args + ["--port", relay.port]
    res = run_cli("relay", *args, "--state-file", state_file, env={"ONEKVM_LOCK_PATH": lock_path})
    assert res.returncode == code, (res.stdout, res.stderr)
    assert words in res.stderr and "Traceback" not in res.stderr
    assert settle(relay, 1, timeout=0.2) == b""


def test_cli_sigterm_mid_pulse_still_sends_off(relay, state_file, lock_path):
    env = dict(os.environ, PYTHONPATH=package_root(), ONEKVM_LOCK_PATH=lock_path)
    proc = subprocess.Popen(cli_argv("relay", "pulse", "--duration", "8", "--port", relay.port,
                                     "--state-file", state_file), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert relay.board.wait_for_frames(1, timeout=20)[0].raw == ON_1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    frames = relay.board.wait_for_frames(2)
    assert [f.raw for f in frames] == [ON_1, OFF_1]
    assert frames[1].time - frames[0].time < 5
