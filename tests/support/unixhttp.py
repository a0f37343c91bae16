# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A tiny HTTP server on a unix socket for tests: one request per connection, then close."""

from __future__ import annotations

import socket
import threading


class UnixHttpServer:
    """Calls ``answer(request_head) -> bytes`` for each connection; ``close()`` stops it."""

    def __init__(self, path, answer) -> None:
        self.answer = answer
        self.requests = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(4)
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self) -> None:
        self.sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, dummy = self.sock.accept()
            except OSError:
                return
            with conn:
                head = conn.recv(65536).decode("latin-1")
                self.requests.append(head)
                conn.sendall(self.answer(head))
