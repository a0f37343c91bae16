# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ustreamer_snapshot against a socket answering as ustreamer's /snapshot does (pikvm/ustreamer
src/ustreamer/http/server.c: 200, image/jpeg, X-UStreamer-Online/-Width/-Height), bounded in bytes and time."""

from __future__ import annotations

import base64
import json
import time

from ansible_collections.onekvm.fleet.plugins.modules import ustreamer_snapshot
from ansible_collections.onekvm.fleet.tests.support.unixhttp import UnixHttpServer
from ansible_collections.onekvm.fleet.tests.testbed import onekvm2_sim as sim
from ansible_collections.onekvm.fleet.tests.unit.plugins.module_utils import test_watchdog_onekvm2
from ansible_collections.onekvm.fleet.tests.unit.plugins.modules.module_runner import run_module

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 2000 + b"\xff\xd9"


def answer(body=JPEG, online="true", status=200, delay=0.0):
    def respond(head):
        time.sleep(delay)
        return (b"HTTP/1.0 %d OK\r\nContent-Type: image/jpeg\r\nX-UStreamer-Online: %s\r\nX-UStreamer-Width: 640\r\n"
                b"X-UStreamer-Height: 480\r\nContent-Length: %d\r\n\r\n" % (status, online.encode(), len(body))) + body
    return respond


def snap(tmp_path, respond=None, **args):
    sock = tmp_path / "ustreamer.sock"
    server = UnixHttpServer(sock, respond) if respond else None
    try:
        return run_module(ustreamer_snapshot.main, dict(args, socket=str(sock)), check_mode=True), server
    finally:
        if server:
            server.close()


def test_a_live_screen(tmp_path):
    result, server = snap(tmp_path, answer())
    assert not result.get("failed") and result["changed"] is False
    assert result["state"] == "live" and (result["width"], result["height"], result["bytes"]) == (640, 480, len(JPEG))
    assert base64.b64decode(result["jpeg"]) == JPEG and server.requests[0].startswith("GET /snapshot ")


def test_no_signal_is_a_state(tmp_path):
    assert snap(tmp_path, answer(online="false"))[0]["state"] == "no_signal"


def test_a_stopped_streamer_is_shown_as_such_not_as_broken(tmp_path):
    result, dummy = snap(tmp_path)
    assert not result.get("failed") and result["state"] == "stopped" and result["jpeg"] == ""
    assert "not running" in result["msg"]


def test_bounds_and_hostile_answers(tmp_path):
    big = snap(tmp_path, answer(body=b"\xff\xd8" + b"\x00" * 5000), max_bytes=2048)[0]
    assert big["failed"] and "larger than 2048 bytes" in big["msg"]
    (tmp_path / "ustreamer.sock").unlink()
    slow = snap(tmp_path, answer(delay=1.0), timeout=0.2)[0]
    assert slow["failed"] and "within 0.2 s" in slow["msg"]
    (tmp_path / "ustreamer.sock").unlink()
    html = snap(tmp_path, answer(body=b"<html>"))[0]
    assert html["failed"] and "not a JPEG" in html["msg"]
    (tmp_path / "ustreamer.sock").unlink()
    nan = snap(tmp_path, answer(), timeout=float("nan"))[0]
    assert nan["failed"] and "timeout must be a number" in nan["msg"]


# ---- One-KVM 0.2: GET /api/snapshot behind its login, against the One-KVM 0.2 simulator

one_kvm = test_watchdog_onekvm2.one_kvm  # the watchdog tests' fixture: the simulator and the watchdog's login file


def onekvm2_snap(one_kvm, **args):
    settings = one_kvm.settings  # the watchdog tests' One-KVM 0.2 simulator with the watchdog's login file
    base = {"api": "onekvm2", "url": settings["url"], "credentials_file": settings["credentials"], "timeout": 2.0}
    return run_module(ustreamer_snapshot.main, dict(base, **args), check_mode=True)


def test_one_kvm_02_gives_its_current_frame_and_logs_out(one_kvm):
    frame = b"\xff\xd8\xff\xe0" + b"\x00" * 500 + b"\xff\xd9"
    (one_kvm.data / sim.FRAME_FILE).write_bytes(frame)
    result = onekvm2_snap(one_kvm)
    assert not result.get("failed") and result["changed"] is False, result
    assert result["state"] == "live" and base64.b64decode(result["jpeg"]) == frame
    assert (result["width"], result["height"]) == (None, None)  # One-KVM sends no size
    assert ("GET", "/api/snapshot") in one_kvm.requests and one_kvm.sessions == {}


def test_one_kvm_02_without_a_frame_is_stopped_not_broken(one_kvm):
    result = onekvm2_snap(one_kvm)
    assert not result.get("failed") and result["state"] == "stopped" and result["jpeg"] == ""
    assert "No frame available" in result["msg"]


def test_one_kvm_02_bounds_and_refusals(one_kvm, tmp_path):
    (one_kvm.data / sim.FRAME_FILE).write_bytes(b"\xff\xd8" + b"\x00" * 5000 + b"\xff\xd9")
    big = onekvm2_snap(one_kvm, max_bytes=2048)
    assert big["failed"] and "larger than 2048 bytes" in big["msg"]
    with open(one_kvm.settings["credentials"], "w", encoding="utf-8") as f:
        json.dump({"user": "watchdog", "passwd": "wrong"}, f)
    refused = onekvm2_snap(one_kvm)
    assert refused["failed"] and "(401)" in refused["msg"] and "wrong" not in refused["msg"]
    missing = onekvm2_snap(one_kvm, credentials_file=str(tmp_path / "nothing.json"))
    assert missing["failed"] and "onekvm_onekvm2_username" in missing["msg"]
    down = onekvm2_snap(one_kvm, url="http://127.0.0.1:9")
    assert down["failed"] and "Cannot reach One-KVM" in down["msg"]
    bad_url = onekvm2_snap(one_kvm, url="file:///etc/shadow")
    assert bad_url["failed"] and "not One-KVM's web address" in bad_url["msg"]
