# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The relay simulator itself: decoding, timing, transports and the control socket.

These tests write raw bytes by hand (not through the collection's encoder), so the
simulator is checked against the vendor's documented frames alone.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import serial

from ansible_collections.onekvm.fleet.tests.testbed import relay_sim
from ansible_collections.onekvm.fleet.tests.testbed.relay_sim import PtyRelay, RelayBoard, SocketRelay

ON_1, OFF_1 = bytes.fromhex("a00101a2"), bytes.fromhex("a00100a1")


def test_documented_frames_switch_channel_one():
    board = RelayBoard(channels=1)
    board.feed(ON_1, 10.0)
    assert board.states == {1: True}
    board.feed(OFF_1, 10.5)
    assert board.states == {1: False}
    assert [(f.time, f.channel, f.on) for f in board.frames] == [(10.0, 1, True), (10.5, 1, False)]
    assert board.pulses(1) == [(10.0, 10.5, 0.5)]


def test_frames_split_across_reads_are_stamped_when_complete():
    board = RelayBoard()
    board.feed(ON_1[:2], 1.0)
    assert board.frames == []
    board.feed(ON_1[2:], 1.2)
    assert board.frames[0].time == 1.2


@pytest.mark.parametrize("raw, reason", [
    ("a00101a3", "checksum"),
    ("a00102a3", "neither 00 nor 01"),
    ("a00301a4", "does not exist"),  # channel 3 on a 2-channel board
    ("0d0a", "no A0 start byte"),
])
def test_bad_bytes_are_rejected_and_change_nothing(raw, reason):
    board = RelayBoard(channels=2)
    board.feed(bytes.fromhex(raw))
    assert board.frames == [] and board.states == {1: False, 2: False}
    assert reason in board.rejected[0].reason


def test_decoder_resynchronises_after_garbage():
    board = RelayBoard(channels=2)
    board.feed(bytes.fromhex("ff a0 01 01 a0 02 01 a3".replace(" ", "")))
    assert [(f.channel, f.on) for f in board.frames] == [(2, True)]
    assert len(board.rejected) >= 2


def test_pty_passes_bytes_unchanged_with_timestamps():
    with PtyRelay(RelayBoard(channels=8)) as sim:
        with serial.Serial(sim.port, 9600, timeout=1) as port:
            port.write(b"\x0a\x0d\x00" + ON_1)  # newline bytes must not be translated
            port.flush()
            sent_at = time.monotonic()
            time.sleep(0.2)
            port.write(OFF_1)
            port.flush()
        frames = sim.board.wait_for_frames(2)
    assert sim.board.raw_bytes() == b"\x0a\x0d\x00" + ON_1 + OFF_1
    # stamped on arrival: close to the send (the reader thread may run late on a loaded host)
    assert -0.05 < frames[0].time - sent_at < 0.2
    assert 0.15 <= frames[1].time - frames[0].time <= 0.7


def test_pty_survives_the_client_closing_and_reopening():
    with PtyRelay() as sim:
        for data in (ON_1, OFF_1):
            with serial.Serial(sim.port, 9600) as port:
                port.write(data)
                port.flush()
        assert [f.raw for f in sim.board.wait_for_frames(2)] == [ON_1, OFF_1]


def test_socket_transport_reads_what_the_chardev_sends(tmp_path):
    path = str(tmp_path / "relay.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # stands in for QEMU's chardev server
    server.bind(path)
    server.listen(1)
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True).start()
    with SocketRelay(path, RelayBoard(channels=4)) as sim:
        deadline = time.monotonic() + 5
        while not accepted and time.monotonic() < deadline:
            time.sleep(0.01)
        accepted[0].sendall(bytes.fromhex("a00401a5"))
        assert sim.board.wait_for_frames(1)[0].channel == 4
        accepted[0].close()
    server.close()


def test_socket_transport_waits_for_the_socket_to_appear(tmp_path):
    path = str(tmp_path / "late.sock")
    with pytest.raises(OSError):
        SocketRelay(path, connect_timeout=0.3)


def test_script_mode_control_socket(tmp_path):
    control = str(tmp_path / "ctl.sock")
    proc = subprocess.Popen([sys.executable, relay_sim.__file__, "--pty", "--channels", "2", "--control", control],
                            stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())  # printed once the control socket listens
        deadline = time.monotonic() + 10
        with serial.Serial(info["port"], 9600) as port:
            port.write(bytes.fromhex("a00201a3"))
            port.flush()
        status = {}
        while time.monotonic() < deadline:
            status = relay_sim.control(control, {"cmd": "status"})
            if status["frames"]:
                break
            time.sleep(0.05)
        assert status["ok"] and status["states"] == {"1": "off", "2": "on"}
        assert status["bytes"] == "a00201a3" and status["frames"][0]["channel"] == 2
        assert relay_sim.control(control, {"cmd": "clear"}) == {"ok": True}
        assert relay_sim.control(control, {"cmd": "status"})["frames"] == []
        assert "unknown cmd" in relay_sim.control(control, {"cmd": "dance"})["error"]
        assert relay_sim.control(control, {"cmd": "quit"})["ok"]
        assert proc.wait(10) == 0
        assert not os.path.exists(control)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
