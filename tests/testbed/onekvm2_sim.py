# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One-KVM 0.2 simulator for the onekvm.fleet test bed (the Rust rewrite, no kvmd).

One-KVM 0.2 cannot be built here, so this program answers the part of its HTTP API the
collection uses, each rule taken from One-KVM's source (mofeng-git/One-KVM ``main``, 0.2.5).
Written from reading that source, not translated from it; the file each rule comes from is
named beside it and in ``test_onekvm2_sim.py``.

Routes (``src/web/routes.rs``; all under ``/api``):

* public: ``GET /health``, ``POST /auth/login``, ``GET /setup``;
* logged in (``src/auth/middleware.rs``: cookie ``one_kvm_session`` or ``Authorization: Bearer
  <session id>``, else 401 ``Not authenticated`` / ``Session expired`` / ``Logged in elsewhere``):
  ``POST /auth/logout``, ``GET /auth/check``, ``GET /config``, ``GET``/``PATCH /config/<section>``
  for video, stream, hid, atx, audio, web, auth; ``GET /stream/status``, ``GET /hid/status``,
  ``GET /atx/status``, ``GET /snapshot``.

Snapshot (``src/web/handlers/stream.rs`` ``snapshot``, ``src/video/frame.rs`` ``is_valid_jpeg_bytes``):
the MJPEG handler's current frame as ``image/jpeg`` when it is a JPEG (at least 125 bytes, starting
FF D8, ending FF D9, D9 00 or 00 00), else 503 with the plain body ``No frame available``; no size
headers. The sim's current frame is the file ``sim-frame.jpg`` in the data directory (absent: no frame).

Error bodies (``src/web/error.rs``, ``src/error.rs``): ``{"success": false, "message": "<kind>:
<text>"}`` with 400 Bad request, 401 Authentication failed, 404, 409, 503 Service unavailable,
500 for the rest. A body axum cannot decode is answered by axum itself, in plain text: 415
without ``Content-Type: application/json``, 400 for a syntax error, 422 when a field has the wrong
type (axum ``extract/rejection.rs``). Unknown fields are ignored, as serde does without
``deny_unknown_fields``.

Config (``src/config/schema/*.rs`` defaults, ``src/web/handlers/config/types.rs`` updates and
their validation, ``src/config/store.rs``): one JSON document in SQLite (``one-kvm.db``, table
``config``, key ``app_config``) in the data directory; every update is validated, applied field by
field, then ``enforce_invariants`` runs (``src/config/schema/mod.rs``).

Stream status (``src/web/handlers/stream.rs`` -> ``src/video/streamer.rs`` ``StreamerStats``):
asked of the kernel on every request. The configured node must open and answer VIDIOC_QUERYCAP
as a video capture device (``src/video/device/linux.rs`` probes it so): then ``streaming``; a
node gone (ENOENT/ENODEV/ENXIO/ESHUTDOWN, ``src/video/capture/status.rs``) is ``device_lost``,
then ``recovering`` while One-KVM would re-find it (``start_device_recovery_internal``: first
retry after 200 ms, then every second), ``streaming`` again once it is back; any other failure
is ``error``; ``uninitialized`` with no device configured. A regular file stands for a node in
the simulator's own tests. Failure injection for tests: a file ``sim-stream-state`` in the data
directory holds a state (e.g. ``uvc_capture_stall``) reported while the device is there - it
stays until the file is removed, as One-KVM never resets the USB device itself (it only
soft-restarts).

HID (``src/hid/ch9329.rs``, serialport 4 ``TTYPort::open``): with backend ``ch9329`` the port is
held open exclusively (TIOCEXCL) by the service; it is opened again every 2 s while it fails.

On the simulated box it runs as One-KVM's unit ``one-kvm.service`` (``tests/testbed/one-kvm.service``,
installed by ``vm.py`` ``install_onekvm2``); ``--access-log`` writes one line per request to its
journal, ``--init-only`` seeds the user and exits.

Not modelled: TOTP, setup wizard (``POST /setup/init``; the data directory is seeded with
``--init-user``), password hashing with argon2 (PBKDF2 here), HTTPS, WebRTC, MSD, OTG gadgets,
rate limits, the CH9329 traffic itself (the port is held, nothing is sent).
"""

from __future__ import annotations

import argparse
import copy
import errno
import fcntl
import hashlib
import http.server
import ipaddress
import json
import os
import secrets
import sqlite3
import stat
import struct
import sys
import termios
import threading
import time
import uuid

VERSION = "0.2.5"  # Cargo.toml of the source read
SESSION_COOKIE = "one_kvm_session"  # src/auth/middleware.rs
STREAM_STATE_FILE = "sim-stream-state"
FRAME_FILE = "sim-frame.jpg"
STATES = (  # src/video/streamer.rs StreamerState::as_str
    "uninitialized", "ready", "streaming", "no_signal", "no_cable", "no_sync", "out_of_range",
    "uvc_usb_error", "uvc_capture_stall", "error", "device_lost", "recovering", "device_busy",
)
LCUS_RELAY_MAX_CHANNEL = 8  # src/atx/types.rs
# src/video/capture/status.rs classify_capture_io_error / is_device_lost_message: ENOENT
# ("No such file or directory"), ENXIO, ENODEV, ESHUTDOWN mean the node or endpoint is gone
DEVICE_LOST_ERRNOS = (errno.ENOENT, errno.ENXIO, errno.ENODEV, errno.ESHUTDOWN)
RECOVERY_FIRST_WAIT = 0.2  # streamer.rs start_device_recovery_internal: first retry after 200 ms
# linux/videodev2.h: struct v4l2_capability (104 bytes), _IOR('V', 0, ...), capability bits
V4L2_CAPABILITY_SIZE = 104
VIDIOC_QUERYCAP = (2 << 30) | (V4L2_CAPABILITY_SIZE << 16) | (ord("V") << 8) | 0
V4L2_CAP_VIDEO_CAPTURE, V4L2_CAP_VIDEO_CAPTURE_MPLANE = 0x1, 0x1000
V4L2_CAP_DEVICE_CAPS = 0x80000000


# ---------------------------------------------------------------------------- defaults

def default_config() -> dict:
    """AppConfig::default() for the sections served (src/config/schema/*.rs)."""
    binding = {"enabled": False, "device": "", "pin": 1, "active_level": "high"}  # atx/types.rs
    in_binding = {"enabled": False, "device": "", "pin": 0, "active_level": "high"}
    return {
        "initialized": False,
        "auth": {"session_timeout_secs": 86400, "single_user_allow_multiple_sessions": False},
        "video": {"device": None, "format": None, "width": 1920, "height": 1080, "fps": 30,
                  "quality": 80},  # schema/web.rs VideoConfig
        "hid": {  # schema/hid.rs HidConfig
            "backend": "none", "otg_udc": None,
            "otg_descriptor": {"vendor_id": 0x1D6B, "product_id": 0x0104, "manufacturer": "One-KVM",
                               "product": "One-KVM USB Device", "serial_number": None},
            "otg_profile": "full",
            "otg_functions": {"keyboard": True, "mouse_relative": True, "mouse_absolute": True,
                              "consumer": True},
            "otg_keyboard_leds": False, "ch9329_port": "/dev/ttyUSB0", "ch9329_baudrate": 9600,
            "ch9329_hybrid_mouse": False,
            "ch9329_descriptor": {"vendor_id": 0x1A86, "product_id": 0xE129,
                                  "manufacturer": "WCH.CN", "product": "CH9329",
                                  "serial_number": None},
            "mouse_absolute": True,
        },
        "otg_network": {"enabled": False},
        "msd": {"enabled": True, "msd_dir": ""},  # schema/web.rs MsdConfig
        "uac": {"enabled": False},
        "atx": {  # schema/atx.rs AtxConfig
            "enabled": False, "driver": "none", "device": "", "baud_rate": 9600,
            "power": dict(binding), "reset": dict(binding), "led": dict(in_binding),
            "hdd": dict(in_binding), "wol_interface": "",
        },
        "audio": {"enabled": False, "device": "", "quality": "balanced"},  # schema/web.rs
        "stream": {  # schema/stream.rs StreamConfig
            "mode": "mjpeg", "encoder": "auto", "bitrate_preset": {"type": "Balanced"},
            "stun_server": None, "turn_server": None, "turn_username": None,
            "turn_password": None, "auto_pause_enabled": False, "auto_pause_delay_secs": 10,
            "client_timeout_secs": 30,
        },
        "web": {"http_port": 8080, "https_port": 8443, "bind_addresses": [],
                "bind_address": "0.0.0.0", "https_enabled": False, "ssl_cert_path": None,
                "ssl_key_path": None},  # schema/web.rs WebConfig
    }


# ---------------------------------------------------------------------------- decoding

class HttpError(Exception):
    def __init__(self, status: int, message: str, plain: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.plain = plain  # axum's own rejections are plain text, not ErrorResponse


def bad_request(text: str) -> HttpError:
    return HttpError(400, "Bad request: " + text)  # src/error.rs AppError::BadRequest


U16, U32 = ("int", 0xFFFF), ("int", 0xFFFFFFFF)
BOOL, STR = ("bool",), ("str",)


def enum(*names):
    return ("enum",) + names


def obj(**fields):
    return ("obj", fields)


STR_LIST = ("list", STR)
BITRATE = ("bitrate",)
OUT_BINDING = obj(enabled=BOOL, device=STR, pin=U32, active_level=enum("high", "low"))
DESCRIPTOR = obj(vendor_id=U16, product_id=U16, manufacturer=STR, product=STR, serial_number=STR)

# The *ConfigUpdate structs of src/web/handlers/config/types.rs (every field optional)
UPDATES = {
    "video": obj(device=STR, format=STR, width=U32, height=U32, fps=U32, quality=U32),
    "stream": obj(mode=enum("webrtc", "mjpeg"),
                  encoder=enum("auto", "software", "vaapi", "nvenc", "qsv", "amf", "rkmpp",
                               "v4l2m2m"),
                  bitrate_preset=BITRATE, stun_server=STR, turn_server=STR, turn_username=STR,
                  turn_password=STR),
    "hid": obj(backend=enum("otg", "ch9329", "none"), ch9329_port=STR, ch9329_baudrate=U32,
               ch9329_hybrid_mouse=BOOL, ch9329_descriptor=DESCRIPTOR, otg_udc=STR,
               otg_descriptor=DESCRIPTOR,
               otg_profile=enum("full", "full_no_consumer", "legacy_keyboard",
                                "legacy_mouse_relative", "custom", "full_no_msd",
                                "full_no_consumer_no_msd"),
               otg_functions=obj(keyboard=BOOL, mouse_relative=BOOL, mouse_absolute=BOOL,
                                 consumer=BOOL),
               otg_keyboard_leds=BOOL, mouse_absolute=BOOL),
    "atx": obj(enabled=BOOL, driver=enum("gpio", "usbrelay", "serial", "none"), device=STR,
               baud_rate=U32, power=OUT_BINDING, reset=OUT_BINDING, led=OUT_BINDING,
               hdd=OUT_BINDING, wol_interface=STR),
    "audio": obj(enabled=BOOL, device=STR, quality=STR),
    "web": obj(http_port=U16, https_port=U16, bind_addresses=STR_LIST, bind_address=STR,
               https_enabled=BOOL, ssl_cert_pem=STR, ssl_key_pem=STR, clear_custom_cert=BOOL),
    "auth": obj(single_user_allow_multiple_sessions=BOOL),
}
PROFILE_ALIASES = {"full_no_msd": "full", "full_no_consumer_no_msd": "full_no_consumer"}


def _unprocessable(path: str, what: str) -> HttpError:
    # axum JsonDataError: 422, plain text, serde's "<path>: <error>"
    return HttpError(422, "Failed to deserialize the JSON body into the target type: "
                     f"{path}: {what}", plain=True)


def decode(spec, value, path: str):
    """serde's view of one value of an update (None = field absent or null)."""
    if value is None:
        return None
    kind = spec[0]
    if kind == "bool":
        if not isinstance(value, bool):
            raise _unprocessable(path, f"invalid type: {json.dumps(value)}, expected a boolean")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise _unprocessable(path, f"invalid type: {json.dumps(value)}, expected u"
                                 f"{16 if spec[1] == 0xFFFF else 32}")
        if not 0 <= value <= spec[1]:
            raise _unprocessable(path, f"invalid value: integer `{value}`, expected u"
                                 f"{16 if spec[1] == 0xFFFF else 32}")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise _unprocessable(path, f"invalid type: {json.dumps(value)}, expected a string")
        return value
    if kind == "enum":
        if not isinstance(value, str) or value not in spec[1:]:
            raise _unprocessable(path, f"unknown variant `{value}`, expected one of "
                                 + ", ".join(f"`{n}`" for n in spec[1:]))
        return value
    if kind == "list":
        if not isinstance(value, list):
            raise _unprocessable(path, "invalid type, expected a sequence")
        return [decode(spec[1], item, path) for item in value]
    if kind == "bitrate":  # schema/common.rs: #[serde(tag = "type", content = "value")]
        names = ("Speed", "Balanced", "Quality", "Custom")
        if not isinstance(value, dict) or value.get("type") not in names:
            raise _unprocessable(path, "unknown variant, expected one of `Speed`, `Balanced`, "
                                 "`Quality`, `Custom`")
        if value["type"] == "Custom":
            return {"type": "Custom", "value": decode(U32, value.get("value"), path + ".value")
                    if value.get("value") is not None else _missing(path, "value")}
        return {"type": value["type"]}
    # obj
    if not isinstance(value, dict):
        raise _unprocessable(path, "invalid type, expected a map")
    out = {}
    for name, sub in spec[1].items():
        got = decode(sub, value.get(name), f"{path}.{name}" if path else name)
        if got is not None:
            out[name] = got
    return out  # unknown keys dropped: serde default


def _missing(path, name):
    raise _unprocessable(path, f"missing field `{name}`")


# ---------------------------------------------------------------------------- validation

def _device_exists(device: str, name: str, root: str) -> None:
    # types.rs AtxConfigUpdate::validate_device_path
    trimmed = device.strip()
    if not trimmed:
        raise bad_request(f"{name} device cannot be empty")
    if not os.path.exists(root + trimmed):
        raise bad_request(f"{name} device '{trimmed}' does not exist")


def validate_update(section: str, req: dict, current: dict, root: str = "") -> None:
    """The validate() of each *ConfigUpdate (types.rs), before anything is stored."""
    if section == "video":
        for field, low, high in (("width", 320, 7680), ("height", 240, 4320), ("fps", 1, 120),
                                 ("quality", 1, 100)):
            if field in req and not low <= req[field] <= high:
                raise bad_request(f"Invalid {field}: must be {low}-{high}")
    elif section == "stream":
        stun, turn = req.get("stun_server"), req.get("turn_server")
        if stun and not stun.startswith("stun:"):
            raise bad_request("STUN server must start with 'stun:' (e.g., "
                              "stun:stun.l.google.com:19302)")
        if turn and not turn.startswith(("turn:", "turns:")):
            raise bad_request("TURN server must start with 'turn:' or 'turns:' (e.g., "
                              "turn:turn.example.com:3478)")
    elif section == "hid":
        rates = (9600, 19200, 38400, 57600, 115200)
        if "ch9329_baudrate" in req and req["ch9329_baudrate"] not in rates:
            raise bad_request("Invalid baudrate: must be 9600, 19200, 38400, 57600, or 115200")
        for label, field in (("Manufacturer", "manufacturer"), ("Product", "product"),
                             ("Serial number", "serial_number")):
            if len(req.get("otg_descriptor", {}).get(field, "").encode()) > 126:
                raise bad_request(f"{label} string too long (max 126 chars)")
        for label, field in (("Manufacturer", "manufacturer"), ("Product", "product"),
                             ("Serial number", "serial_number")):
            if len(req.get("ch9329_descriptor", {}).get(field, "").encode()) > 23:
                raise bad_request(f"{label} string too long (max 23 bytes for CH9329)")
    elif section == "atx":
        _validate_atx(req, current, root)
    elif section == "audio":
        if "quality" in req and req["quality"] not in ("voice", "balanced", "high"):
            raise bad_request("Invalid quality: must be 'voice', 'balanced', or 'high'")
    elif section == "web":
        for field, label in (("http_port", "HTTP"), ("https_port", "HTTPS")):
            if req.get(field) == 0:
                raise bad_request(f"{label} port cannot be 0")
        single = [req["bind_address"]] if "bind_address" in req else []
        for addr in req.get("bind_addresses", []) + single:
            try:
                ipaddress.ip_address(addr)
            except ValueError:
                raise bad_request("Invalid bind address") from None
        if ("ssl_cert_pem" in req) != ("ssl_key_pem" in req):
            one, other = (("ssl_key_pem", "ssl_cert_pem") if "ssl_cert_pem" in req
                          else ("ssl_cert_pem", "ssl_key_pem"))
            raise bad_request(f"{one} is required when {other} is provided")


def _validate_atx(req: dict, current: dict, root: str) -> None:
    # types.rs AtxConfigUpdate::validate, then validate_with_current on the merged config
    if req.get("baud_rate") == 0:
        raise bad_request("ATX baud_rate must be greater than 0")
    for name in ("power", "reset", "led", "hdd"):
        device = req.get(name, {}).get("device", "")
        if device.strip():
            _device_exists(device, name, root)
    merged = copy.deepcopy(current["atx"])
    apply_update("atx", merged, req)
    if merged["driver"] == "none":
        if merged["enabled"]:
            raise bad_request("ATX driver must not be none when ATX is enabled")
        return
    normalize_atx(merged)
    if not merged["enabled"]:
        return
    if merged["driver"] == "gpio":
        for name in ("power", "reset", "led", "hdd"):
            if merged[name]["enabled"]:
                _device_exists(merged[name]["device"], name, root)
        return
    label = "ATX LCUS HID relay" if merged["driver"] == "usbrelay" else "ATX LCUS serial relay"
    _device_exists(merged["device"], label, root)
    if merged["driver"] == "serial" and merged["baud_rate"] == 0:
        raise bad_request("ATX baud_rate must be greater than 0")
    for name in ("power", "reset"):
        if merged[name]["enabled"] and not 1 <= merged[name]["pin"] <= LCUS_RELAY_MAX_CHANNEL:
            raise bad_request(f"{name} channel must be between 1 and {LCUS_RELAY_MAX_CHANNEL}")


def normalize_atx(atx: dict) -> None:
    # schema/atx.rs AtxConfig::normalize
    if atx["driver"] == "none":
        atx["enabled"] = False
    if atx["driver"] != "gpio":
        atx["led"]["enabled"] = False
        atx["hdd"]["enabled"] = False


def apply_update(section: str, config: dict, req: dict) -> None:
    """apply_to() of each update: only given fields change; nested structs field by field."""
    if section == "stream":
        for field in ("stun_server", "turn_server", "turn_username", "turn_password"):
            if field in req:  # an empty string clears the value
                req = dict(req, **{field: req[field] or None})
    if section == "hid" and "otg_profile" in req:
        req = dict(req, otg_profile=PROFILE_ALIASES.get(req["otg_profile"], req["otg_profile"]))
    if section == "hid" and "ch9329_descriptor" in req \
            and req["ch9329_descriptor"].get("serial_number") == "":
        req = dict(req, ch9329_descriptor=dict(req["ch9329_descriptor"], serial_number=None))
    if section == "web":
        req = {k: v for k, v in req.items()
               if k not in ("ssl_cert_pem", "ssl_key_pem", "clear_custom_cert")}
        if "bind_addresses" in req:
            if req["bind_addresses"]:
                config["bind_address"] = req["bind_addresses"][0]
        elif "bind_address" in req and not config["bind_addresses"]:
            config["bind_addresses"] = [req["bind_address"]]
    for name, value in req.items():
        if isinstance(value, dict) and isinstance(config.get(name), dict) \
                and name != "bitrate_preset":
            config[name].update(value)
        else:
            config[name] = value


def enforce_invariants(config: dict) -> None:
    # schema/mod.rs AppConfig::enforce_invariants
    if config["hid"]["backend"] != "otg":
        config["msd"]["enabled"] = False
        config["otg_network"]["enabled"] = False
        config["uac"]["enabled"] = False
    normalize_atx(config["atx"])


# ---------------------------------------------------------------------------- responses

def section_view(section: str, config: dict) -> dict:
    """What GET/PATCH /api/config/<section> return (handlers/config/*.rs)."""
    value = copy.deepcopy(config[section])
    if section == "stream":  # types.rs StreamConfigResponse
        for hidden in ("auto_pause_enabled", "auto_pause_delay_secs", "client_timeout_secs"):
            value.pop(hidden)
        value["has_public_ice_servers"] = False
        value["using_public_ice_servers"] = not (value["stun_server"] or "").strip() \
            and not (value["turn_server"] or "").strip()
    if section == "web":  # types.rs WebConfigResponse: no certificate paths
        value["has_custom_cert"] = bool(value.pop("ssl_cert_path")) and \
            bool(value.pop("ssl_key_path"))
    return value


# ---------------------------------------------------------------------------- state

class Box:
    """One-KVM's state: the SQLite store, users, sessions, the held CH9329 port."""

    def __init__(self, data_dir: str, root: str = "") -> None:
        self.data_dir = data_dir
        self.root = root  # prefix for device paths (tests); "" on a box
        self.lock = threading.RLock()
        self.db_path = os.path.join(data_dir, "one-kvm.db")
        self.sessions: dict[str, tuple[str, float]] = {}
        self.revoked: set[str] = set()
        self.hid_fd = None
        self.hid_error = None
        self.hid_port = None
        self.requests: list[tuple[str, str]] = []  # (method, path) served, for tests
        self.access_log = False
        self.card = None  # the capture device's name (VIDIOC_QUERYCAP card) last seen
        self.lost_since = None  # when the capture node was first found gone
        with self._db() as db:  # src/db/pool.rs
            db.execute("CREATE TABLE IF NOT EXISTS config (key TEXT PRIMARY KEY, value TEXT NOT "
                       "NULL, updated_at TEXT NOT NULL DEFAULT (datetime('now')))")
            db.execute("CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, username TEXT NOT "
                       "NULL UNIQUE, password_hash TEXT NOT NULL)")
        self.config = self._load()

    def _db(self):
        return sqlite3.connect(self.db_path)

    def _load(self) -> dict:
        config = default_config()
        with self._db() as db:
            row = db.execute("SELECT value FROM config WHERE key = 'app_config'").fetchone()
        if row:
            stored = json.loads(row[0])
            for key, value in stored.items():  # serde(default): missing fields keep defaults
                if isinstance(value, dict) and isinstance(config.get(key), dict):
                    config[key].update(value)
                else:
                    config[key] = value
        return config

    def save(self) -> None:
        with self._db() as db:  # store.rs save_config_to_db
            db.execute("INSERT OR REPLACE INTO config (key, value, updated_at) VALUES "
                       "('app_config', ?, datetime('now'))", (json.dumps(self.config),))

    def add_user(self, username: str, password: str) -> None:
        salt = secrets.token_hex(8)
        digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), 10000).hex()
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO users (id, username, password_hash) VALUES "
                       "(?, ?, ?)", (str(uuid.uuid4()), username, f"{salt}${digest}"))
        self.config["initialized"] = True
        self.save()

    def verify(self, username: str, password: str):
        with self._db() as db:
            row = db.execute("SELECT id, password_hash FROM users WHERE username = ?",
                             (username,)).fetchone()
        if not row:
            return None
        salt, digest = row[1].split("$", 1)
        got = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), 10000).hex()
        return row[0] if secrets.compare_digest(got, digest) else None

    # src/auth/session.rs create_for_login: one session per user unless allowed
    def login(self, user_id: str) -> str:
        if not self.config["auth"]["single_user_allow_multiple_sessions"]:
            for sid, (uid, _expiry) in list(self.sessions.items()):
                if uid == user_id:
                    del self.sessions[sid]
                    self.revoked.add(sid)
        sid = str(uuid.uuid4())
        self.sessions[sid] = (user_id, time.time() + self.config["auth"]["session_timeout_secs"])
        return sid

    def session(self, sid: str):
        entry = self.sessions.get(sid)
        if entry and entry[1] > time.time():
            return entry
        return None

    # ------------------------------------------------------------- capture and HID
    def stream_status(self) -> dict:
        video = self.config["video"]
        device = video["device"]
        fmt = video["format"] or "MJPEG"
        stats = {"state": "uninitialized", "device": None, "format": fmt,
                 "resolution": [video["width"], video["height"]], "clients": 0,
                 "target_fps": video["fps"], "fps": 0.0}
        if not device:
            return stats
        found, card = self._query_capture(device)
        if card:
            self.card = card
        stats["device"] = self.card  # streamer.rs keeps current_device while it recovers
        if found == "lost":
            # streamer.rs: the capture error sets DeviceLost, then the recovery task says
            # Recovering while it re-finds the device every second (start_device_recovery_internal)
            if self.lost_since is None:
                self.lost_since = time.monotonic()
            lost_for = time.monotonic() - self.lost_since
            stats["state"] = "device_lost" if lost_for < RECOVERY_FIRST_WAIT else "recovering"
            return stats
        self.lost_since = None
        if found == "error":
            stats["state"] = "error"
            return stats
        injected = self._injected_state()
        if injected:
            stats["state"] = injected
            return stats
        stats["state"] = "streaming"
        stats["fps"] = float(video["fps"])
        return stats

    def current_frame(self):
        """The MJPEG handler's frame if it is a JPEG as frame.rs checks it, else None."""
        try:
            with open(os.path.join(self.data_dir, FRAME_FILE), "rb") as f:
                data = f.read(8 << 20)
        except OSError:
            return None
        if len(data) < 125 or data[:2] != b"\xff\xd8" or data[-2:] not in (b"\xff\xd9", b"\xd9\x00", b"\x00\x00"):
            return None
        return data

    def _query_capture(self, device: str) -> tuple:
        """("ok" | "lost" | "error", card name or None) of the capture node, asked of the kernel.

        A character device must answer VIDIOC_QUERYCAP as a video capture device (what
        src/video/device/linux.rs probes); ENOENT/ENODEV/ENXIO/ESHUTDOWN are One-KVM's
        device-lost class (src/video/capture/status.rs), any other failure an error. A regular
        file stands for a node in the simulator's own tests (no V4L2 device on a build host).
        """
        path = self.root + device
        try:
            fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        except OSError as exc:
            return ("lost" if exc.errno in DEVICE_LOST_ERRNOS else "error"), None
        try:
            if not stat.S_ISCHR(os.fstat(fd).st_mode):
                return "ok", os.path.basename(os.path.realpath(path))
            buf = bytearray(V4L2_CAPABILITY_SIZE)
            try:
                fcntl.ioctl(fd, VIDIOC_QUERYCAP, buf)
            except OSError as exc:
                return ("lost" if exc.errno in DEVICE_LOST_ERRNOS else "error"), None
        finally:
            os.close(fd)
        caps, device_caps = struct.unpack_from("=II", buf, 84)
        if caps & V4L2_CAP_DEVICE_CAPS:
            caps = device_caps
        if not caps & (V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_VIDEO_CAPTURE_MPLANE):
            return "error", None
        return "ok", bytes(buf[16:48]).split(b"\0", 1)[0].decode(errors="replace")

    def _injected_state(self):
        try:
            with open(os.path.join(self.data_dir, STREAM_STATE_FILE)) as f:
                state = f.read().strip()
        except OSError:
            return None
        return state if state in STATES else None

    def hold_hid(self) -> None:
        """Open the CH9329 port exclusively, as serialport 4 does (src/hid/ch9329.rs)."""
        hid = self.config["hid"]
        wanted = hid["ch9329_port"] if hid["backend"] == "ch9329" else None
        if self.hid_fd is not None and (wanted != self.hid_port or not self._fd_alive()):
            os.close(self.hid_fd)
            self.hid_fd = None
        self.hid_port = wanted
        if wanted is None or self.hid_fd is not None:
            self.hid_error = None
            return
        try:
            fd = os.open(self.root + wanted, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as exc:
            self.hid_error = f"Serial port {wanted} not found" if exc.errno == 2 else str(exc)
            return
        try:
            fcntl.ioctl(fd, termios.TIOCEXCL)
        except OSError:
            pass  # not a tty (tests may point at a plain file)
        self.hid_fd = fd
        self.hid_error = None

    def _fd_alive(self) -> bool:
        try:
            os.fstat(self.hid_fd)
            return os.path.exists(self.root + self.hid_port)
        except OSError:
            return False

    def hid_status(self) -> dict:
        hid = self.config["hid"]
        ch9329 = hid["backend"] == "ch9329"
        return {"available": hid["backend"] != "none", "backend": hid["backend"],
                "initialized": self.hid_fd is not None or not ch9329,
                "online": self.hid_fd is not None if ch9329 else hid["backend"] != "none",
                "device": hid["ch9329_port"] if ch9329 else None,
                "error": self.hid_error, "error_code": "port_not_found" if self.hid_error
                else None}


# ---------------------------------------------------------------------------- HTTP

PUBLIC = ("/", "/auth/login", "/auth/login/totp", "/health", "/setup", "/setup/init")


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "one-kvm-sim"
    box: Box = None  # set by make_server

    def log_message(self, fmt, *args):  # quiet; the journal gets errors only
        pass

    def log_request(self, code="-", size="-"):
        if self.box.access_log:  # one line per request (the test bed's journal shows what was sent)
            print(f"{self.command} {self.path.split('?', 1)[0]} {code}", file=sys.stderr, flush=True)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def _send(self, status: int, body, headers=()):
        if isinstance(body, bytes):
            data, ctype = body, "image/jpeg"
        elif isinstance(body, str):
            data, ctype = body.encode(), "text/plain; charset=utf-8"
        else:
            data, ctype = json.dumps(body).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _session_id(self):
        for part in self.headers.get("Cookie", "").split(";"):
            name, _sep, value = part.strip().partition("=")
            if name == SESSION_COOKIE:
                return value
        auth = self.headers.get("Authorization", "")
        return auth[len("Bearer "):] if auth.startswith("Bearer ") else None

    def _json(self):
        # axum Json extractor rejections (extract/rejection.rs)
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            raise HttpError(415, "Expected request with `Content-Type: application/json`",
                            plain=True)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise HttpError(400, f"Failed to parse the request body as JSON: {exc}",
                            plain=True) from None

    def _dispatch(self, method: str):
        path = self.path.split("?", 1)[0]
        box = self.box
        try:
            if not path.startswith("/api/"):
                raise HttpError(404, "Not found: " + path)
            path = path[len("/api"):]
            with box.lock:
                box.requests.append((method, "/api" + path))
                if path not in PUBLIC:  # src/auth/middleware.rs auth_middleware
                    sid = self._session_id()
                    if sid is None:
                        raise HttpError(401, "Not authenticated")
                    if box.session(sid) is None:
                        raise HttpError(401, "Logged in elsewhere" if sid in box.revoked
                                        else "Session expired")
                status, body, headers = self._route(method, path)
        except HttpError as exc:
            if exc.plain:
                self._send(exc.status, exc.message)
            else:
                self._send(exc.status, {"success": False, "message": exc.message})
            return
        self._send(status, body, headers)

    def _route(self, method: str, path: str):
        box = self.box
        if (method, path) == ("GET", "/health"):  # handlers/system.rs
            return 200, {"status": "ok", "version": VERSION}, ()
        if (method, path) == ("GET", "/setup"):  # handlers/setup.rs
            done = box.config["initialized"]
            return 200, {"initialized": done, "needs_setup": not done, "platform": {}}, ()
        if (method, path) == ("POST", "/auth/login"):  # handlers/auth.rs login
            req = self._json()
            for field in ("username", "password"):
                if not isinstance(req, dict) or not isinstance(req.get(field), str):
                    raise _unprocessable("", f"missing field `{field}`")
            if not box.config["initialized"]:
                raise bad_request("System not initialized")
            user = box.verify(req["username"], req["password"])
            if user is None:
                raise HttpError(401, "Authentication failed: Invalid username or password")
            sid = box.login(user)
            cookie = (f"{SESSION_COOKIE}={sid}; HttpOnly; SameSite=Lax; Path=/; Max-Age="
                      f"{box.config['auth']['session_timeout_secs']}")
            return 200, {"next": "authenticated"}, (("Set-Cookie", cookie),)
        if (method, path) == ("POST", "/auth/logout"):
            sid = self._session_id()
            box.sessions.pop(sid, None)
            return 200, {"success": True, "message": "Logged out"}, (
                ("Set-Cookie", f"{SESSION_COOKIE}=; Path=/; Max-Age=0"),)
        if (method, path) == ("GET", "/auth/check"):
            return 200, {"authenticated": True, "user": None}, ()
        if (method, path) == ("GET", "/config"):  # handlers/config/mod.rs sanitized
            full = copy.deepcopy(box.config)
            full["stream"]["turn_password"] = None
            return 200, full, ()
        if (method, path) == ("GET", "/stream/status"):
            return 200, box.stream_status(), ()
        if (method, path) == ("GET", "/snapshot"):
            frame = box.current_frame()
            if frame is None:
                return 503, "No frame available", ()
            return 200, frame, (("Cache-Control", "no-cache"),)
        if (method, path) == ("GET", "/hid/status"):
            box.hold_hid()
            return 200, box.hid_status(), ()
        if (method, path) == ("GET", "/atx/status"):
            atx = box.config["atx"]
            return 200, {"available": atx["enabled"], "driver": atx["driver"],
                         "power_configured": atx["enabled"] and atx["power"]["enabled"],
                         "reset_configured": atx["enabled"] and atx["reset"]["enabled"],
                         "power_status": "unknown", "led_supported": False,
                         "hdd_status": "unknown", "hdd_supported": False}, ()
        if path.startswith("/config/") and path[len("/config/"):] in UPDATES:
            section = path[len("/config/"):]
            if method == "GET":
                return 200, section_view(section, box.config), ()
            if method == "PATCH":
                return 200, self._patch(section), ()
        raise HttpError(404, "Not found: " + path)

    def _patch(self, section: str) -> dict:
        box = self.box
        req = decode(UPDATES[section], self._json(), "")
        validate_update(section, req, box.config, box.root)
        staged = copy.deepcopy(box.config)
        if section == "hid":  # usb_update.rs: descriptor kept unless the chip is CH9329
            apply_update(section, staged["hid"], req)
            if staged["hid"]["backend"] != "ch9329":
                staged["hid"]["ch9329_descriptor"] = box.config["hid"]["ch9329_descriptor"]
            enforce_invariants(staged)
            if staged["hid"]["backend"] == "otg" and not any(
                    staged["hid"]["otg_functions"].values()):
                raise bad_request("OTG HID functions cannot be empty")  # schema/hid.rs
            if staged["hid"]["backend"] == "ch9329" and not os.path.exists(
                    box.root + staged["hid"]["ch9329_port"]):
                # hid/mod.rs reload: init failure -> rollback (usb_update.rs)
                raise HttpError(500, "Internal error: Failed to reload HID backend")
        elif section == "atx":
            apply_update(section, staged["atx"], req)
            hid = staged["hid"]
            port = hid["ch9329_port"].strip()
            if hid["backend"] == "ch9329" and port and staged["atx"]["driver"] == "serial" \
                    and staged["atx"]["device"].strip() == port:  # config/atx.rs
                raise bad_request(f"ATX serial device '{port}' conflicts with HID CH9329 "
                                  "serial device")
        else:
            apply_update(section, staged[section], req)
        enforce_invariants(staged)
        box.config = staged
        box.save()
        if section == "hid":
            box.hold_hid()
        if section == "video":  # apply.rs apply_video_config, after the config is stored
            if not staged["video"]["device"]:
                raise bad_request("video_device is required")
        return section_view(section, box.config)


def make_server(data_dir: str, port: int, bind: str = "127.0.0.1", root: str = ""):
    box = Box(data_dir, root)
    handler = type("BoundHandler", (Handler,), {"box": box})
    server = http.server.ThreadingHTTPServer((bind, port), handler)
    server.daemon_threads = True
    return server, box


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="One-KVM 0.2 simulator (test bed)")
    parser.add_argument("-d", "--data-dir", default=os.environ.get("ONE_KVM_DATA_DIR",
                                                                   "/etc/one-kvm"))
    parser.add_argument("--port", type=int, help="default: web.http_port of the config")
    parser.add_argument("--bind", default=None)
    parser.add_argument("--init-user", help="create this user (and mark the box initialized)")
    parser.add_argument("--init-password-file", help="file holding the user's password")
    parser.add_argument("--init-only", action="store_true", help="create the user, then exit")
    parser.add_argument("--access-log", action="store_true",
                        help="log each request (method, path, status) to stderr")
    args = parser.parse_args(argv)
    os.makedirs(args.data_dir, exist_ok=True)
    probe = Box(args.data_dir)
    if args.init_user:
        with open(args.init_password_file) as f:
            probe.add_user(args.init_user, f.read().strip())
    if args.init_only:
        return 0
    port = args.port or probe.config["web"]["http_port"]
    bind = args.bind or probe.config["web"]["bind_address"]
    server, box = make_server(args.data_dir, port, bind)
    box.access_log = args.access_log

    def keep_hid():  # src/hid/ch9329.rs: reopen every 2 s after an error
        while True:
            with box.lock:
                box.hold_hid()
            time.sleep(2)

    threading.Thread(target=keep_hid, daemon=True).start()
    print(f"one-kvm simulator {VERSION} on {bind}:{port}", file=sys.stderr, flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
