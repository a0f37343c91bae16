# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ustreamer_snapshot against a socket answering as ustreamer's /snapshot does (pikvm/ustreamer
src/ustreamer/http/server.c: 200, image/jpeg, X-UStreamer-Online/-Width/-Height), bounded in bytes and time."""

from __future__ import annotations

import base64
import time

from ansible_collections.onekvm.fleet.plugins.modules import ustreamer_snapshot
from ansible_collections.onekvm.fleet.tests.support.unixhttp import UnixHttpServer
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
