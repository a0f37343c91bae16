# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Reading ustreamer's ``GET /state`` over kvmd's unix socket (standard library only).

PRIVATE to the onekvm.fleet collection. Box-side core: standard library only.

kvmd runs ustreamer with ``--unix=/run/kvmd/ustreamer.sock``. ``/state`` answers
``{"ok": true, "result": {"source": {"online": ..., "captured_fps": ...}, "stream": {...}}}``.
kvmd stops ustreamer when nobody watches (PiKVM's ``streamer.forever: false``), so a
missing socket or a refused connection means "not running" (``StreamerNotRunning``), which
the watchdog must not count as a capture failure.

``GET /snapshot`` on the same socket answers 200 with the current frame as ``image/jpeg`` and
``X-UStreamer-Online`` / ``-Width`` / ``-Height`` headers (pikvm/ustreamer
``src/ustreamer/http/server.c``: 4.9 sends the last frame; 6.x waits for a fresh one, up to three
times ``--error-delay``, and sends a drawn "< NO LIVE VIDEO >" frame while the source is offline).
"""

from __future__ import annotations

import base64
import errno
import json
import socket
import time

from ._errors import DeviceError, InvalidArgument, NotFound, PermissionDenied, Timeout
from ._limits import check
from ._unixhttp import MAX_BODY, http_get, split_response, split_response_headers

DEFAULT_SOCKET = "/run/kvmd/ustreamer.sock"
DEFAULT_TIMEOUT = 2.0
SNAPSHOT_TIMEOUT = 5.0
SNAPSHOT_BYTES = 2 * 1024 * 1024  # a 1080p JPEG at kvmd's quality is some 100-300 kB


class StreamerNotRunning(NotFound):
    """Nothing listens on the socket: ustreamer is stopped (kvmd does that when idle)."""


def get_state(socket_path: str = DEFAULT_SOCKET, timeout: float = DEFAULT_TIMEOUT) -> dict:
    """Return the ``result`` object of ``GET /state``; every failure is an OnekvmError."""
    if not socket_path or not socket_path.startswith("/"):
        raise InvalidArgument("the ustreamer socket must be an absolute path, got %r" % (socket_path,))
    if not timeout or timeout <= 0:
        raise InvalidArgument("the ustreamer timeout must be a positive number of seconds, got %r" % (timeout,))
    try:
        raw = http_get(socket_path, "/state", timeout)
    except socket.timeout:
        raise Timeout("ustreamer did not answer GET /state on %s within %.1f s" % (socket_path, timeout),
                      socket=socket_path) from None
    except OSError as exc:
        raise _connection_error(socket_path, exc) from None
    status, body = split_response(socket_path, raw)
    return _parse_body(socket_path, status, body)


def _connection_error(socket_path: str, exc: OSError):
    if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
        return StreamerNotRunning("ustreamer is not running (nothing listens on %s)" % socket_path, socket=socket_path)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return PermissionDenied("cannot connect to %s: permission denied; run as root or in kvmd's group" % socket_path,
                                socket=socket_path)
    return DeviceError("cannot talk to ustreamer on %s: %s" % (socket_path, exc.strerror or exc), socket=socket_path)


def _parse_body(socket_path: str, status: int, body: bytes) -> dict:
    if status != 200:
        raise DeviceError("ustreamer on %s answered GET /state with HTTP %d" % (socket_path, status),
                          socket=socket_path, http_status=status)
    if len(body) > MAX_BODY:
        raise DeviceError("ustreamer on %s sent more than %d bytes for /state" % (socket_path, MAX_BODY), socket=socket_path)
    try:
        payload = json.loads(body.decode("utf-8"))
    except ValueError:
        raise DeviceError("ustreamer on %s sent /state that is not JSON: %r" % (socket_path, body[:80]),
                          socket=socket_path) from None
    except RecursionError:  # whoever owns the socket's directory can serve anything
        raise DeviceError("ustreamer on %s sent /state nested too deeply to be ustreamer's answer" % socket_path,
                          socket=socket_path) from None
    result = payload.get("result") if isinstance(payload, dict) else None
    if not isinstance(result, dict) or not isinstance(result.get("source"), dict):
        raise DeviceError("ustreamer on %s sent /state without result.source: %r" % (socket_path, body[:80]),
                          socket=socket_path)
    return result


def source_health(result: dict, min_fps: float = 1.0) -> tuple:
    """``(healthy, reason)`` from a /state result: online AND capturing at least ``min_fps``.

    ustreamer 4.9 run with ``--persistent`` keeps reporting a stale ``online: true`` when
    frames silently stop, so ``online`` alone is not trusted: the captured rate must agree.
    """
    source = result.get("source") or {}
    online = source.get("online")
    fps = source.get("captured_fps")
    if online is not True:
        return False, "ustreamer reports the source offline (no signal or no capture device)"
    if not isinstance(fps, (int, float)) or isinstance(fps, bool):
        return False, "ustreamer reports the source online but no captured_fps"
    if fps < min_fps:
        return False, "ustreamer reports the source online but captures %s fps (< %s)" % (fps, min_fps)
    return True, "source online, %s fps captured" % fps


def snapshot(socket_path: str = DEFAULT_SOCKET, timeout: float = SNAPSHOT_TIMEOUT,
             max_bytes: int = SNAPSHOT_BYTES) -> dict:
    """ustreamer's current frame, bounded in bytes and time; a stopped streamer is a state, not an error.

    Returns ``state`` (``live``, ``no_signal`` while ustreamer reports the source offline, or
    ``stopped`` when nothing listens: kvmd stops ustreamer while nobody watches), ``online``,
    ``width``, ``height``, ``bytes``, ``elapsed`` and ``jpeg`` (base64, empty when stopped).
    """
    if not socket_path or not socket_path.startswith("/"):
        raise InvalidArgument("the ustreamer socket must be an absolute path, got %r" % (socket_path,))
    check("snapshot_timeout", timeout, "timeout")
    check("snapshot_bytes", max_bytes, "max_bytes")
    start = time.monotonic()
    result = {"socket": socket_path, "state": "stopped", "online": None, "width": None, "height": None, "bytes": 0,
              "jpeg": ""}
    try:
        raw = http_get(socket_path, "/snapshot", timeout, max_body=max_bytes + 64 * 1024)
    except socket.timeout:
        raise Timeout("ustreamer did not send a snapshot on %s within %.1f s" % (socket_path, timeout),
                      socket=socket_path) from None
    except OSError as exc:
        error = _connection_error(socket_path, exc)
        if isinstance(error, StreamerNotRunning):
            result.update(elapsed=round(time.monotonic() - start, 3), msg=error.msg + "; kvmd starts it when someone "
                          "watches (PiKVM streamer.forever: false)")
            return result
        raise error from None
    status, headers, body = split_response_headers(socket_path, raw)
    online = {"true": True, "false": False}.get(headers.get("x-ustreamer-online", "").lower())
    result.update(picture("ustreamer on " + socket_path, "/snapshot", status, body, max_bytes, start))
    result.update(state="no_signal" if online is False else "live", online=online,
                  width=_dimension(headers.get("x-ustreamer-width")), height=_dimension(headers.get("x-ustreamer-height")))
    return result


def picture(where: str, path: str, status: int, body: bytes, max_bytes: int, start: float) -> dict:
    """A snapshot answer checked: HTTP 200, at most ``max_bytes``, a JPEG; the result's picture fields."""
    if status != 200:
        raise DeviceError("%s answered GET %s with HTTP %d" % (where, path, status), http_status=status)
    if len(body) > max_bytes:
        raise DeviceError("the snapshot from %s is larger than %d bytes (max_bytes)" % (where, max_bytes))
    if not body.startswith(b"\xff\xd8"):
        raise DeviceError("%s sent a snapshot that is not a JPEG: %r" % (where, body[:16]))
    return {"state": "live", "online": None, "width": None, "height": None, "bytes": len(body),
            "jpeg": base64.b64encode(body).decode("ascii"), "elapsed": round(time.monotonic() - start, 3)}


def _dimension(text):
    return int(text) if isinstance(text, str) and text.isdigit() and 0 < int(text) <= 16384 else None
