# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The simulators' JSON-lines control socket (a unix stream socket, one JSON object a line each
way): the listening socket and the client's request. What a request means is each simulator's."""

from __future__ import annotations

import json
import os
import socket


def listen(path: str) -> socket.socket:
    """A unix socket listening at ``path`` (a stale one there is replaced), so that a client may
    connect as soon as this returns."""
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)
    return server


def request(path: str, message: dict, timeout: float = 10.0) -> dict:
    """Send ``message`` to the control socket at ``path`` and return the one-line reply, parsed."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps(message).encode() + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    return json.loads(reply.decode())
