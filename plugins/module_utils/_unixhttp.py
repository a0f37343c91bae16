# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One bounded HTTP/1.0 GET over a unix socket (ustreamer's, kvmd's): standard library only.

PRIVATE to the onekvm.fleet collection. Box-side core: standard library only.
"""

from __future__ import annotations

import socket
import time

from ._errors import DeviceError

MAX_BODY = 1024 * 1024  # the answers read here are a few hundred bytes; refuse to read a runaway one


def http_get(socket_path: str, path: str, timeout: float, headers: dict | None = None, max_body: int = MAX_BODY) -> bytes:
    """One HTTP/1.0 GET over the unix socket; the server closes the connection after answering."""
    return http_request(socket_path, "GET", path, timeout, headers, max_body)


def http_request(socket_path: str, method: str, path: str, timeout: float, headers: dict | None = None,
                 max_body: int = MAX_BODY) -> bytes:
    """One bodiless HTTP/1.0 request (GET, or a POST whose arguments are in the query string).

    A plain request rather than http.client: the watchdog runs for months on small boxes,
    and http.client loads the email package and ssl (about 6 MB more resident memory).
    """
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        extra = "".join("%s: %s\r\n" % item for item in sorted((headers or {}).items()))
        length = "Content-Length: 0\r\n" if method != "GET" else ""
        sock.sendall(("%s %s HTTP/1.0\r\nHost: localhost\r\nAccept: application/json\r\n%s%s\r\n"
                      % (method, path, length, extra)).encode("utf-8"))
        chunks = []
        size = 0
        while size <= max_body:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("timed out")
            sock.settimeout(left)
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    return b"".join(chunks)


def split_response(socket_path: str, raw: bytes, who: str = "ustreamer") -> tuple:
    """``(status, body)`` of an HTTP answer, checked against its Content-Length."""
    status, dummy, body = split_response_headers(socket_path, raw, who)
    return status, body


def split_response_headers(socket_path: str, raw: bytes, who: str = "ustreamer") -> tuple:
    """``(status, headers, body)`` of an HTTP answer (header names in lower case), checked against its Content-Length."""
    head, separator, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status_line = lines[0].split(" ", 2)
    if not separator or len(status_line) < 2 or not status_line[0].startswith("HTTP/") or not status_line[1].isdigit():
        raise DeviceError("%s on %s sent a malformed HTTP answer: %r" % (who, socket_path, raw[:60]), socket=socket_path)
    headers = {}
    for line in lines[1:]:
        name, dummy, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise DeviceError("%s on %s sent a chunked answer to an HTTP/1.0 request" % (who, socket_path), socket=socket_path)
    length = headers.get("content-length", "")
    if length.isdigit():
        if len(body) < int(length):
            raise DeviceError("%s on %s closed the connection after %d of %s bytes" % (who, socket_path, len(body), length),
                              socket=socket_path)
        body = body[:int(length)]
    return int(status_line[1]), headers, body
