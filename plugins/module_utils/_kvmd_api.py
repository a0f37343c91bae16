# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""kvmd's HTTP API on its unix socket: ``GET /hid``, ``GET /gpio``, ``POST /gpio/pulse|switch`` (standard library only).

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
from ._limits import check
from ._unixhttp import http_request, split_response

MAX_CREDENTIALS = 4096
DEFAULT_SOCKET = "/run/kvmd/kvmd.sock"
CHANNEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.-]{0,254}\Z")  # kvmd validators/ugpio.py valid_ugpio_channel
ACTIONS = ("pulse", "switch")
HEADER_SAFE_RE = re.compile(r"^[\x20-\x7e]{1,256}$")  # no CR/LF: nothing can be smuggled into the request


class KvmdNotRunning(NotFound):
    """Nothing listens on kvmd's socket."""


def read_credentials(path: str, label: str = "kvmd credentials",
                     hint: str = "set onekvm_watchdog_hid_kvmd_user/_password") -> tuple:
    """``(user, password)`` from the root-only JSON file the role writes (``{"user", "passwd"}``)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise NotFound("%s %s do not exist; %s" % (label, path, hint), path=path) from None
    except OSError as exc:
        raise PermissionDenied("cannot read %s %s: %s" % (label, path, exc.strerror or exc), path=path) from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077 or info.st_uid != os.geteuid():
            raise PermissionDenied("%s %s must be a regular file owned by %d with mode 0600"
                                   % (label, path, os.geteuid()), path=path)
        raw = f.read(MAX_CREDENTIALS + 1)
    try:
        data = json.loads(raw.decode("utf-8")) if len(raw) <= MAX_CREDENTIALS else None
    except (ValueError, RecursionError):
        data = None
    user = data.get("user") if isinstance(data, dict) else None
    passwd = data.get("passwd") if isinstance(data, dict) else None
    if not all(isinstance(v, str) and HEADER_SAFE_RE.match(v) for v in (user, passwd)):
        raise InvalidArgument("%s %s must be a JSON object {\"user\": ..., \"passwd\": ...} of printable "
                              "text; re-render it with the onekvm.fleet.onekvm role" % (label, path), path=path)
    return user, passwd


WATCHDOG_HINT = "check onekvm_watchdog_hid_kvmd_user/_password (a user without 2FA)"
MAX_ANSWER = 1024 * 1024  # GET /gpio of a big button set is some ten kB


class KvmdRefused(InvalidArgument):
    """kvmd answered a request with an error of its own (an unknown channel, a pulse it cannot do...)."""


def call(socket_path: str, method: str, path: str, credentials: tuple | None, timeout: float,
         hint: str = WATCHDOG_HINT) -> dict:
    """The ``result`` of one request to kvmd's API on its unix socket; every failure is an OnekvmError.

    ``credentials`` ``(user, password)`` go in the X-KVMD-* headers; ``None`` sends none, which kvmd
    accepts only from a unix peer it trusts (``kvmd.auth.usc``; kvmd >= 4.107 trusts root).
    Errors follow ``kvmd/htserver.py``: 401 without credentials, 403 wrong ones, 400 an
    ``OperationError`` or ``ValidatorError`` and 409 a busy channel, with ``{"error", "error_msg"}``.
    """
    what = "%s %s" % (method, path.split("?", 1)[0])
    headers = {}
    if credentials is not None:
        user, passwd = credentials
        if not all(isinstance(v, str) and HEADER_SAFE_RE.match(v) for v in (user, passwd)):
            raise InvalidArgument("kvmd user and password must be printable text without line breaks (1 to 256 "
                                  "characters)")
        headers = {"X-KVMD-User": user, "X-KVMD-Passwd": passwd}
    try:
        raw = http_request(socket_path, method, path, timeout, headers=headers, max_body=MAX_ANSWER)
    except socket.timeout:
        raise Timeout("kvmd did not answer %s on %s within %.1f s" % (what, socket_path, timeout)) from None
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
            raise KvmdNotRunning("kvmd is not running (nothing listens on %s)" % socket_path) from None
        raise DeviceError("cannot talk to kvmd on %s: %s" % (socket_path, exc.strerror or exc)) from None
    status, body = split_response(socket_path, raw, who="kvmd")
    if len(body) > MAX_ANSWER:
        raise DeviceError("kvmd on %s sent more than %d bytes for %s" % (socket_path, MAX_ANSWER, what))
    try:
        payload = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        payload = None
    result = payload.get("result") if isinstance(payload, dict) else None
    if status == 401:
        raise PermissionDenied("kvmd on %s wants credentials for %s (HTTP 401): %s" % (socket_path, what, hint))
    if status == 403:
        kind = "the watchdog's credentials" if hint == WATCHDOG_HINT else "the credentials"
        raise PermissionDenied("kvmd on %s refused %s (HTTP %d): %s" % (socket_path, kind, status, hint))
    if status in (400, 409) and isinstance(result, dict) and isinstance(result.get("error"), str):
        error = result["error"][:80]
        text = result.get("error_msg") if isinstance(result.get("error_msg"), str) else ""
        raise KvmdRefused("kvmd on %s refused %s: %s%s" % (socket_path, what, error, ": " + text[:200] if text else ""),
                          kvmd_error=error, status=status)
    if status != 200:
        raise DeviceError("kvmd on %s answered %s with HTTP %d" % (socket_path, what, status))
    if not isinstance(result, dict):
        raise DeviceError("kvmd on %s sent an answer to %s that is not JSON kvmd would send" % (socket_path, what))
    return result


def hid_state(socket_path: str, credentials: tuple, timeout: float) -> dict:
    """The ``result`` of kvmd's ``GET /hid``; every failure is an OnekvmError."""
    result = call(socket_path, "GET", "/hid", credentials, timeout)
    if not isinstance(result.get("online"), bool):
        raise DeviceError("kvmd on %s sent GET /hid without result.online" % socket_path)
    return result


# ---- user GPIO (kvmd/apps/kvmd/api/ugpio.py, ugpio.py) ---------------------------------------
def _pulse_of(scheme: dict) -> dict:
    pulse = scheme.get("pulse")
    keys = ("delay", "min_delay", "max_delay")
    if not isinstance(pulse, dict) or not all(type(pulse.get(k)) in (int, float) for k in keys):
        raise ValueError("pulse")
    return {k: float(pulse[k]) for k in keys}


def gpio_state(socket_path: str, credentials: tuple | None, timeout: float, hint: str) -> dict:
    """kvmd's running GPIO: ``GET /gpio`` = ``{"model": {"scheme", "view"}, "state": {...}}``, checked.

    The model holds the pulse kvmd really sends (``delay`` already clamped between ``min_delay`` and
    ``max_delay``) and leaves out outputs that neither switch nor pulse (``ugpio.py``).
    """
    check("kvmd_timeout", timeout, "timeout")
    result = call(socket_path, "GET", "/gpio", credentials, timeout, hint)
    model, state = result.get("model"), result.get("state")
    try:
        scheme = model["scheme"]
        outputs, inputs = scheme["outputs"], scheme["inputs"]
        if not isinstance(outputs, dict) or not isinstance(inputs, dict) or not isinstance(state, dict):
            raise ValueError("scheme")
        for name, out in outputs.items():
            if not isinstance(out, dict) or not isinstance(out.get("switch"), bool):
                raise ValueError(name)
            _pulse_of(out)
    except (KeyError, TypeError, ValueError):
        raise DeviceError("kvmd on %s sent a GET /gpio answer without the model kvmd sends "
                          "(model.scheme.outputs with switch and pulse)" % socket_path) from None
    return result


def _output_state(result: dict, channel: str):
    outputs = result["state"].get("outputs") if isinstance(result["state"].get("outputs"), dict) else {}
    entry = outputs.get(channel)
    return entry.get("state") if isinstance(entry, dict) and isinstance(entry.get("state"), bool) else None


def channel_action(socket_path: str, credentials: tuple | None, channel: str, action: str, state: bool | None = None,
                   delay: float = 0.0, wait: bool = True, timeout: float = 10.0, check_mode: bool = False,
                   hint: str = "give the module user and password of a kvmd user (without 2FA)") -> dict:
    """Pulse or switch one output channel of the running kvmd; check mode asks kvmd but acts on nothing.

    A pulse is an action (always changed). A switch changes only when kvmd reads the channel in the
    other state; a C(cmd) driver always reads false (``kvmd/plugins/ugpio/cmd.py``), so switching it
    on always runs its command and switching it off never does anything.
    """
    if action not in ACTIONS:
        raise InvalidArgument("action must be one of %s, got %r" % (", ".join(ACTIONS), action))
    if not isinstance(channel, str) or not CHANNEL_RE.match(channel):
        raise InvalidArgument("channel %r is not a kvmd GPIO channel name (letters, digits, _ . -; starting with a "
                              "letter or _)" % (channel,))
    if action == "switch" and not isinstance(state, bool):
        raise InvalidArgument("action=switch needs state (true or false)")
    if action == "pulse" and state is not None:
        raise InvalidArgument("state is only for action=switch; a pulse always ends off")
    if action == "switch" and delay:
        raise InvalidArgument("delay is only for action=pulse")
    check("gpio_delay", delay, "delay")
    before = gpio_state(socket_path, credentials, timeout, hint)
    scheme = before["model"]["scheme"]
    outputs = scheme["outputs"]
    if channel not in outputs:
        if channel in scheme["inputs"]:
            raise InvalidArgument("kvmd's GPIO channel %r on %s is an input (a lamp): it cannot be pulsed or "
                                  "switched" % (channel, socket_path), channel=channel)
        names = sorted(outputs)
        raise NotFound("kvmd on %s has no GPIO output channel %r (GET /api/gpio); it has %s. Check the channel "
                       "name, or provision the box so kvmd carries it"
                       % (socket_path, channel, ", ".join(names[:40]) + (" ..." if len(names) > 40 else "") or "none"),
                       channel=channel, channels=names)
    out = outputs[channel]
    pulse = _pulse_of(out)
    previous = _output_state(before, channel)
    result = {"channel": channel, "action": action, "previous_state": previous, "switch": out["switch"],
              "pulse": pulse}
    if action == "pulse":
        if not pulse["delay"]:
            raise InvalidArgument("kvmd's GPIO channel %r does not pulse (its pulse delay is 0): use action=switch"
                                  % channel, channel=channel)
        result["delay"] = min(max(delay or pulse["delay"], pulse["min_delay"]), pulse["max_delay"])
        result["changed"] = True
        query = "/gpio/pulse?channel=%s&delay=%r&wait=%d" % (channel, float(delay), int(wait))
    else:
        if not out["switch"]:
            raise InvalidArgument("kvmd's GPIO channel %r does not switch (switch: false): use action=pulse"
                                  % channel, channel=channel)
        result["changed"] = previous is not state
        query = "/gpio/switch?channel=%s&state=%d&wait=%d" % (channel, int(state), int(wait))
    if check_mode or not result["changed"]:
        result["state"] = previous if not check_mode or action == "pulse" else state
        return result
    # a waited action answers after the pulse (or the switch) is done: give kvmd that long on top
    call(socket_path, "POST", query, credentials, timeout + (result.get("delay", 0.0) if wait else 0.0), hint)
    result["state"] = _output_state(gpio_state(socket_path, credentials, timeout, hint), channel) if wait else None
    return result


def module_api_spec() -> dict:
    """The argument spec entries the kvmd API modules share (doc fragment onekvm.fleet.kvmd_api)."""
    return dict(
        socket=dict(type="path", default=DEFAULT_SOCKET),
        user=dict(type="str", default=""),
        password=dict(type="str", default="", no_log=True),
        timeout=dict(type="float", default=10.0),
    )
