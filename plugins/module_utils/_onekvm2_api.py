# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A client of One-KVM 0.2's REST API (login, config sections, stream status, snapshot).

PRIVATE to the onekvm.fleet collection. Box-side core: standard library only, no Ansible.

Auth (mofeng-git/One-KVM ``src/web/handlers/auth.rs``, ``src/auth/middleware.rs``): ``POST
/api/auth/login {username, password}`` answers with the session in the ``one_kvm_session``
cookie, which every other call sends back. Errors are ``{"success": false, "message": ...}``
(``src/web/error.rs``); axum's own rejections are plain text.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request

from ._errors import DeviceError, InvalidArgument, NotFound, OnekvmError, PermissionDenied, Timeout
from ._limits import check

SESSION_COOKIE = "one_kvm_session"
MAX_BODY = 1 << 20  # answers are small JSON documents; never read more


class Refused(OnekvmError):
    """One-KVM answered a request with an error status."""

    exit_code = 8


class Client:
    """One logged-in session. Use as a context manager: it logs out at the end."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parts = urllib.parse.urlsplit(url or "")
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") \
                or parts.query or parts.fragment or parts.username:
            raise InvalidArgument(f"url={url!r} is not One-KVM's web address: give http(s)://HOST[:PORT] and "
                                  f"nothing else (One-KVM serves its API under /api there).", field="url")
        self.base = f"{parts.scheme}://{parts.netloc}"
        self.timeout = timeout
        self.session = None
        self._opener = urllib.request.build_opener(_NoRedirect)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self.session:
            try:
                self.request("POST", "/api/auth/logout", {})
            except OnekvmError:
                pass
        self.session = None

    def exchange(self, method: str, path: str, body=None, limit: int = MAX_BODY):
        """``(status, raw body, headers)`` of one request; at most ``limit`` bytes are read."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.session:
            req.add_header("Cookie", f"{SESSION_COOKIE}={self.session}")
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                status, raw, headers = resp.status, resp.read(limit + 1), resp.headers
        except urllib.error.HTTPError as exc:
            status, raw, headers = exc.code, exc.read(limit + 1), exc.headers
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if "timed out" in str(reason):
                raise Timeout(f"One-KVM at {self.base} did not answer {method} {path} within {self.timeout} s. "
                              f"Check that {('one-kvm.service')} is running.", url=self.base) from None
            raise NotFound(f"Cannot reach One-KVM at {self.base} ({reason}). Check that one-kvm.service is running "
                           f"and the url (its web.http_port).", url=self.base) from None
        if len(raw) > limit:
            raise DeviceError(f"One-KVM's answer to {method} {path} is larger than {limit} bytes; refusing it.")
        return status, raw, headers

    def request(self, method: str, path: str, body=None):
        status, raw, headers = self.exchange(method, path, body)
        payload = _decode(raw, headers)
        if status >= 400:
            self.refuse(method, path, status, payload)
        return payload, headers

    @staticmethod
    def refuse(method: str, path: str, status: int, payload):
        message = payload.get("message") if isinstance(payload, dict) else payload
        message = str(message)[:500]
        cls = PermissionDenied if status == 401 else Refused
        hint = (" Check the username and password (vault)." if status == 401 else "")
        raise cls(f"One-KVM refused {method} {path} ({status}): {message}.{hint}", status=status,
                  message=message, path=path)

    def login(self, username: str, password: str) -> None:
        payload, headers = self.request("POST", "/api/auth/login", {"username": username, "password": password})
        if isinstance(payload, dict) and payload.get("next") == "totp":
            raise PermissionDenied("This One-KVM account has two-factor login (TOTP); use an account without it "
                                   "for automation.")
        for value in headers.get_all("Set-Cookie") or []:
            name, _sep, rest = value.partition("=")
            if name.strip() == SESSION_COOKIE:
                self.session = rest.split(";", 1)[0].strip()
        if not self.session:
            raise DeviceError("One-KVM accepted the login but set no one_kvm_session cookie; is this One-KVM 0.2?")

    def get(self, path: str):
        payload, _headers = self.request("GET", path)
        if not isinstance(payload, dict):
            raise DeviceError(f"One-KVM's answer to GET {path} is not a JSON object; is this One-KVM 0.2?")
        return payload

    def patch(self, path: str, body: dict):
        payload, _headers = self.request("PATCH", path, body)
        return payload


def snapshot(url: str, credentials: str, timeout: float, max_bytes: int) -> dict:
    """One-KVM's current frame (``GET /api/snapshot``), in the shape of ``_ustreamer.snapshot``.

    ``src/web/handlers/stream.rs`` ``snapshot``: 200 ``image/jpeg`` with the MJPEG handler's
    current frame, or 503 ``No frame available`` (no MJPEG frame: the stream is stopped or not
    MJPEG), which is the state ``stopped``, not an error. No size headers: width and height are
    left to the reader of the JPEG. Login, picture and logout each get ``timeout``.
    """
    from ._kvmd_api import read_credentials
    from ._ustreamer import picture
    check("snapshot_timeout", timeout, "timeout")
    check("snapshot_bytes", max_bytes, "max_bytes")
    user, passwd = read_credentials(credentials, "One-KVM credentials",
                                    "set onekvm_onekvm2_username/_password and run the onekvm.fleet.onekvm role")
    start = time.monotonic()
    with Client(url, timeout) as api:
        api.login(user, passwd)
        status, raw, headers = api.exchange("GET", "/api/snapshot", limit=max_bytes)
    if status == 503:
        return {"url": api.base, "state": "stopped", "online": None, "width": None, "height": None, "bytes": 0,
                "jpeg": "", "elapsed": round(time.monotonic() - start, 3),
                "msg": "One-KVM has no frame to give (%s): its MJPEG stream is not running"
                       % (raw[:80].decode("utf-8", "replace").strip() or "503")}
    if status >= 400:
        Client.refuse("GET", "/api/snapshot", status, _decode(raw, headers))
    return dict(picture(api.base, "/api/snapshot", status, raw, max_bytes, start), url=api.base)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # never send credentials elsewhere
        return None


def _decode(raw: bytes, headers):
    text = raw.decode("utf-8", "replace")
    if headers.get("Content-Type", "").startswith("application/json"):
        try:
            return json.loads(text)
        except ValueError:
            raise DeviceError("One-KVM sent a broken JSON answer; is this One-KVM 0.2?") from None
    return text.strip()
