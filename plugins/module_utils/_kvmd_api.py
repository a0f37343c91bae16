# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""kvmd's own view of the HID: ``GET /hid`` on kvmd's unix socket (standard library only).

PRIVATE to the onekvm.fleet collection. Box-side core: standard library only.

On a real box kvmd holds the CH9329's serial port and polls the chip, so nobody else may
talk to it; kvmd's HID state is then the health signal. Sources (pikvm/kvmd):
``kvmd/apps/kvmd/api/hid.py`` exposes ``GET /hid`` (nginx maps ``/api/hid`` to it) returning
``make_json_response(await hid.get_state())``, i.e. ``{"ok": true, "result": {"online": ...}}``;
for the ch9329 plugin ``online`` is false while the chip does not answer (domain.md).
``kvmd/apps/kvmd/api/auth.py`` ``_check_xhdr`` accepts the ``X-KVMD-User`` /
``X-KVMD-Passwd`` headers on every request, the unix socket included (kvmd's own client,
``kvmd/clients/kvmd.py``, sends them over it). With 2FA on, kvmd expects the TOTP code
appended to the password; a dedicated user without 2FA is what the watchdog needs.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import stat

from ._errors import DeviceError, InvalidArgument, NotFound, PermissionDenied, Timeout
from ._unixhttp import http_get, split_response

MAX_CREDENTIALS = 4096
HEADER_SAFE_RE = re.compile(r"^[\x20-\x7e]{1,256}$")  # no CR/LF: nothing can be smuggled into the request


class KvmdNotRunning(NotFound):
    """Nothing listens on kvmd's socket."""


def read_credentials(path: str) -> tuple:
    """``(user, password)`` from the root-only JSON file the role writes (``{"user", "passwd"}``)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise NotFound("kvmd credentials %s do not exist; set onekvm_watchdog_hid_kvmd_user/_password" % path,
                       path=path) from None
    except OSError as exc:
        raise PermissionDenied("cannot read kvmd credentials %s: %s" % (path, exc.strerror or exc), path=path) from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077 or info.st_uid != os.geteuid():
            raise PermissionDenied("kvmd credentials %s must be a regular file owned by %d with mode 0600"
                                   % (path, os.geteuid()), path=path)
        raw = f.read(MAX_CREDENTIALS + 1)
    try:
        data = json.loads(raw.decode("utf-8")) if len(raw) <= MAX_CREDENTIALS else None
    except (ValueError, RecursionError):
        data = None
    user = data.get("user") if isinstance(data, dict) else None
    passwd = data.get("passwd") if isinstance(data, dict) else None
    if not all(isinstance(v, str) and HEADER_SAFE_RE.match(v) for v in (user, passwd)):
        raise InvalidArgument("kvmd credentials %s must be a JSON object {\"user\": ..., \"passwd\": ...} of printable "
                              "text; re-render it with the onekvm.fleet.onekvm role" % path, path=path)
    return user, passwd


def hid_state(socket_path: str, credentials: tuple, timeout: float) -> dict:
    """The ``result`` of kvmd's ``GET /hid``; every failure is an OnekvmError."""
    user, passwd = credentials
    try:
        raw = http_get(socket_path, "/hid", timeout, headers={"X-KVMD-User": user, "X-KVMD-Passwd": passwd},
                       max_body=64 * 1024)
    except socket.timeout:
        raise Timeout("kvmd did not answer GET /hid on %s within %.1f s" % (socket_path, timeout)) from None
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
            raise KvmdNotRunning("kvmd is not running (nothing listens on %s)" % socket_path) from None
        raise DeviceError("cannot talk to kvmd on %s: %s" % (socket_path, exc.strerror or exc)) from None
    status, body = split_response(socket_path, raw, who="kvmd")
    if status in (401, 403):
        raise PermissionDenied("kvmd on %s refused the watchdog's credentials (HTTP %d): check "
                               "onekvm_watchdog_hid_kvmd_user/_password (a user without 2FA)" % (socket_path, status))
    if status != 200:
        raise DeviceError("kvmd on %s answered GET /hid with HTTP %d" % (socket_path, status))
    try:
        payload = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        raise DeviceError("kvmd on %s sent GET /hid that is not JSON kvmd would send" % socket_path) from None
    result = payload.get("result") if isinstance(payload, dict) else None
    if not isinstance(result, dict) or not isinstance(result.get("online"), bool):
        raise DeviceError("kvmd on %s sent GET /hid without result.online" % socket_path)
    return result
