# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""GET /state against a real HTTP server on a unix socket, serving recorded ustreamer answers."""

from __future__ import annotations

import http.server
import json
import os
import socket
import socketserver
import threading
import time

import pytest

from ansible_collections.onekvm.fleet.plugins.module_utils import _ustreamer
from ansible_collections.onekvm.fleet.plugins.module_utils._errors import DeviceError, InvalidArgument, Timeout

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def recorded(name: str) -> bytes:
    with open(os.path.join(FIXTURES, name), "rb") as f:
        return f.read()


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        answer = self.server.answer
        self.server.paths.append(self.path)
        if answer.get("delay"):
            time.sleep(answer["delay"])
        if answer.get("raw") is not None:
            self.wfile.write(answer["raw"])
            return
        body = answer["body"]
        self.send_response(answer.get("status", 200))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # unix sockets have no client address to log
        pass


@pytest.fixture
def server(tmp_path):
    path = str(tmp_path / "ustreamer.sock")
    srv = _Server(path, _Handler)
    srv.answer = {"body": recorded("ustreamer-state-online.json")}
    srv.paths = []
    srv.path = path
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_online_state_is_read_and_healthy(server):
    result = _ustreamer.get_state(server.path, timeout=2)
    assert server.paths == ["/state"]
    assert result["source"]["online"] is True
    healthy, reason = _ustreamer.source_health(result)
    assert healthy, reason


def test_offline_state_is_unhealthy(server):
    server.answer = {"body": recorded("ustreamer-state-offline.json")}
    healthy, reason = _ustreamer.source_health(_ustreamer.get_state(server.path))
    assert not healthy
    assert "offline" in reason


def test_stale_online_without_frames_is_unhealthy(server):
    # ustreamer --persistent keeps online: true after frames stop; the frame rate tells the truth
    state = json.loads(recorded("ustreamer-state-online.json"))
    state["result"]["source"]["captured_fps"] = 0
    server.answer = {"body": json.dumps(state).encode()}
    healthy, reason = _ustreamer.source_health(_ustreamer.get_state(server.path))
    assert not healthy
    assert "0 fps" in reason


def test_min_fps_threshold():
    result = {"source": {"online": True, "captured_fps": 4}}
    assert _ustreamer.source_health(result, min_fps=4)[0]
    assert not _ustreamer.source_health(result, min_fps=5)[0]


def test_missing_socket_means_not_running(tmp_path):
    with pytest.raises(_ustreamer.StreamerNotRunning) as info:
        _ustreamer.get_state(str(tmp_path / "absent.sock"))
    assert "not running" in info.value.msg


def test_refused_connection_means_not_running(tmp_path):
    path = str(tmp_path / "stale.sock")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)  # bound but never listening: what a dead ustreamer leaves behind without --unix-rm
    try:
        with pytest.raises(_ustreamer.StreamerNotRunning):
            _ustreamer.get_state(path)
    finally:
        sock.close()


def test_slow_answer_times_out(server):
    server.answer = {"body": recorded("ustreamer-state-online.json"), "delay": 5.0}
    start = time.monotonic()
    with pytest.raises(Timeout) as info:
        _ustreamer.get_state(server.path, timeout=0.2)
    assert time.monotonic() - start < 4  # gave up long before the answer came
    assert "did not answer" in info.value.msg


@pytest.mark.parametrize("answer, needle", [
    ({"body": b"<html>nope</html>"}, "not JSON"),
    ({"body": b'{"ok": false}'}, "without result.source"),
    ({"body": b"{}", "status": 404}, "HTTP 404"),
    ({"raw": b"garbage\r\n\r\n"}, "malformed HTTP"),
    ({"raw": b"HTTP/1.0 200 OK\r\nContent-Length: 500\r\n\r\n{\"ok\": true"}, "closed the connection after 11 of 500"),
    ({"raw": b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello"}, "chunked"),
])
def test_bad_answers_are_device_errors(server, answer, needle):
    server.answer = answer
    with pytest.raises(DeviceError) as info:
        _ustreamer.get_state(server.path, timeout=2)
    assert needle in info.value.msg


@pytest.mark.parametrize("path, timeout", [("relative.sock", 1), ("", 1), ("/run/x.sock", 0), ("/run/x.sock", -1)])
def test_bad_arguments(path, timeout):
    with pytest.raises(InvalidArgument):
        _ustreamer.get_state(path, timeout=timeout)
