# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The One-KVM 0.2 simulator against One-KVM's own rules. Each test names the file of
mofeng-git/One-KVM (``main``, 0.2.5) the behaviour comes from."""

from __future__ import annotations

import json
import os
import pty
import threading
import urllib.error
import urllib.request

import pytest

from ansible_collections.onekvm.fleet.tests.testbed import onekvm2_sim as sim


class Client:
    def __init__(self, base: str) -> None:
        self.base = base
        self.cookie = None

    def call(self, method: str, path: str, body=None, ctype="application/json", headers=None):
        data = None if body is None else (body if isinstance(body, bytes)
                                          else json.dumps(body).encode())
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None and ctype:
            req.add_header("Content-Type", ctype)
        if self.cookie:
            req.add_header("Cookie", self.cookie)
        for name, value in (headers or {}).items():
            req.add_header(name, value)
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                status, raw, hdrs = resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as exc:
            status, raw, hdrs = exc.code, exc.read(), exc.headers
        ctype_back = hdrs.get("Content-Type", "")
        payload = json.loads(raw) if ctype_back.startswith("application/json") else raw.decode()
        return status, payload, hdrs

    def login(self, user="admin", password="s3cret"):
        status, body, hdrs = self.call("POST", "/api/auth/login",
                                       {"username": user, "password": password})
        if status == 200:
            self.cookie = hdrs["Set-Cookie"].split(";")[0]
        return status, body, hdrs


@pytest.fixture
def box(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    seed = sim.Box(str(data))
    seed.add_user("admin", "s3cret")
    server, state = sim.make_server(str(data), 0)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    client = Client(f"http://127.0.0.1:{server.server_address[1]}")
    client.state = state
    client.data = data
    yield client
    server.shutdown()
    server.server_close()


@pytest.fixture
def logged_in(box):
    assert box.login()[0] == 200
    return box


# --------------------------------------------------------------- src/auth/, handlers/auth.rs

def test_health_is_public(box):
    """src/web/handlers/system.rs health_check; public in src/auth/middleware.rs."""
    assert box.call("GET", "/api/health")[:2] == (200, {"status": "ok", "version": "0.2.5"})


def test_config_needs_a_session(box):
    """src/auth/middleware.rs: no cookie, no bearer -> 401 ErrorResponse 'Not authenticated'."""
    status, body, _hdrs = box.call("GET", "/api/config/hid")
    assert (status, body) == (401, {"success": False, "message": "Not authenticated"})


def test_login_sets_the_session_cookie(box):
    """src/web/handlers/auth.rs create_authenticated_session: cookie one_kvm_session, HttpOnly,
    SameSite=Lax, Path=/, Max-Age = auth.session_timeout_secs; body next=authenticated."""
    status, body, hdrs = box.login()
    assert (status, body) == (200, {"next": "authenticated"})
    cookie = hdrs["Set-Cookie"]
    assert cookie.startswith("one_kvm_session=")
    for part in ("HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=86400"):
        assert part in cookie
    assert box.call("GET", "/api/auth/check")[:2] == (200, {"authenticated": True, "user": None})


def test_bearer_header_works_like_the_cookie(box):
    """src/auth/middleware.rs extract_session_id: 'Authorization: Bearer <session id>'."""
    box.login()
    sid = box.cookie.split("=", 1)[1]
    box.cookie = None
    status, _body, _hdrs = box.call("GET", "/api/config/video", headers={"Authorization": "Bearer " + sid})
    assert status == 200


def test_wrong_password(box):
    """src/web/handlers/auth.rs login -> AppError::AuthError -> 401 (src/web/error.rs), message
    prefixed 'Authentication failed: ' (src/error.rs)."""
    status, body, _hdrs = box.login(password="nope")
    assert (status, body) == (401, {"success": False, "message":
                                    "Authentication failed: Invalid username or password"})


def test_login_before_setup(tmp_path):
    """src/web/handlers/auth.rs: a box not initialized refuses login with 400."""
    server, _state = sim.make_server(str(tmp_path), 0)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        client = Client(f"http://127.0.0.1:{server.server_address[1]}")
        status, body, _hdrs = client.login()
        assert (status, body["message"]) == (400, "Bad request: System not initialized")
        assert client.call("GET", "/api/setup")[1]["needs_setup"] is True
    finally:
        server.shutdown()
        server.server_close()


def test_second_login_revokes_the_first(box):
    """src/auth/session.rs create_for_login with single_user_allow_multiple_sessions=false
    (src/config/schema/web.rs default); the old session gets 'Logged in elsewhere'."""
    box.login()
    first = box.cookie
    box.login()
    box.cookie = first
    status, body, _hdrs = box.call("GET", "/api/config/hid")
    assert (status, body["message"]) == (401, "Logged in elsewhere")


def test_unknown_session(box):
    box.cookie = "one_kvm_session=not-a-session"
    assert box.call("GET", "/api/config/hid")[1]["message"] == "Session expired"


def test_logout(logged_in):
    assert logged_in.call("POST", "/api/auth/logout", {})[0] == 200
    assert logged_in.call("GET", "/api/config/hid")[0] == 401


# ------------------------------------------------------------ src/config/schema/, types.rs

def test_defaults(logged_in):
    """Defaults of src/config/schema/hid.rs, web.rs (VideoConfig), atx.rs."""
    hid = logged_in.call("GET", "/api/config/hid")[1]
    assert (hid["backend"], hid["ch9329_port"], hid["ch9329_baudrate"]) == \
        ("none", "/dev/ttyUSB0", 9600)
    video = logged_in.call("GET", "/api/config/video")[1]
    assert video == {"device": None, "format": None, "width": 1920, "height": 1080, "fps": 30,
                     "quality": 80}
    atx = logged_in.call("GET", "/api/config/atx")[1]
    assert (atx["driver"], atx["enabled"], atx["baud_rate"], atx["power"]["pin"]) == \
        ("none", False, 9600, 1)


def test_patch_changes_only_the_fields_given_and_persists(logged_in, tmp_path):
    """types.rs VideoConfigUpdate::apply_to; src/config/store.rs: SQLite table config, key
    app_config."""
    (tmp_path / "video0").write_text("")
    status, body, _hdrs = logged_in.call("PATCH", "/api/config/video",
                                         {"device": str(tmp_path / "video0"), "fps": 25})
    assert status == 200
    assert (body["fps"], body["width"], body["device"]) == (25, 1920, str(tmp_path / "video0"))
    import sqlite3
    with sqlite3.connect(str(logged_in.data / "one-kvm.db")) as db:
        stored = json.loads(db.execute("SELECT value FROM config WHERE key='app_config'")
                            .fetchone()[0])
    assert stored["video"]["fps"] == 25
    assert sim.Box(str(logged_in.data)).config["video"]["fps"] == 25


@pytest.mark.parametrize("section, body, message", [
    ("video", {"width": 100}, "Invalid width: must be 320-7680"),
    ("video", {"height": 5000}, "Invalid height: must be 240-4320"),
    ("video", {"fps": 0}, "Invalid fps: must be 1-120"),
    ("video", {"quality": 101}, "Invalid quality: must be 1-100"),
    ("hid", {"ch9329_baudrate": 14400},
     "Invalid baudrate: must be 9600, 19200, 38400, 57600, or 115200"),
    ("hid", {"ch9329_descriptor": {"product": "x" * 24}},
     "Product string too long (max 23 bytes for CH9329)"),
    ("atx", {"enabled": True}, "ATX driver must not be none when ATX is enabled"),
    ("atx", {"baud_rate": 0}, "ATX baud_rate must be greater than 0"),
    ("atx", {"enabled": True, "driver": "serial", "device": "/nonexistent/relay"},
     "ATX LCUS serial relay device '/nonexistent/relay' does not exist"),
    ("audio", {"quality": "best"}, "Invalid quality: must be 'voice', 'balanced', or 'high'"),
    ("stream", {"stun_server": "stun.example.com"},
     "STUN server must start with 'stun:' (e.g., stun:stun.l.google.com:19302)"),
    ("web", {"http_port": 0}, "HTTP port cannot be 0"),
    ("web", {"bind_address": "localhost"}, "Invalid bind address"),
])
def test_validation_rules(logged_in, section, body, message):
    """The validate() of each update in src/web/handlers/config/types.rs (400, 'Bad request: ')."""
    before = logged_in.call("GET", f"/api/config/{section}")[1]
    status, answer, _hdrs = logged_in.call("PATCH", f"/api/config/{section}", body)
    assert (status, answer) == (400, {"success": False, "message": "Bad request: " + message})
    assert logged_in.call("GET", f"/api/config/{section}")[1] == before  # nothing stored


def test_relay_channel_range(logged_in, tmp_path):
    """types.rs validate_output_channel: 1..=LCUS_RELAY_MAX_CHANNEL (8, src/atx/types.rs)."""
    relay = tmp_path / "relay"
    relay.write_text("")
    status, body, _hdrs = logged_in.call("PATCH", "/api/config/atx", {
        "enabled": True, "driver": "serial", "device": str(relay),
        "power": {"enabled": True, "pin": 9}})
    assert (status, body["message"]) == (400, "Bad request: power channel must be between 1 and 8")
    status, body, _hdrs = logged_in.call("PATCH", "/api/config/atx", {
        "enabled": True, "driver": "serial", "device": str(relay),
        "power": {"enabled": True, "pin": 1}, "reset": {"enabled": True, "pin": 2},
        "led": {"enabled": True}})
    assert status == 200
    # src/config/schema/atx.rs normalize: LED/HDD sensing only with the gpio driver
    assert (body["power"]["pin"], body["reset"]["pin"], body["led"]["enabled"]) == (1, 2, False)


def test_atx_serial_must_not_be_the_ch9329_port(logged_in, tmp_path):
    """src/web/handlers/config/atx.rs validate_serial_device_conflict."""
    port = tmp_path / "tty"
    port.write_text("")
    assert logged_in.call("PATCH", "/api/config/hid",
                          {"backend": "ch9329", "ch9329_port": str(port)})[0] == 200
    status, body, _hdrs = logged_in.call("PATCH", "/api/config/atx",
                                         {"enabled": True, "driver": "serial", "device": str(port)})
    assert (status, body["message"]) == (
        400, f"Bad request: ATX serial device '{port}' conflicts with HID CH9329 serial device")


def test_ch9329_backend_on_a_missing_port_is_rolled_back(logged_in):
    """src/hid/mod.rs reload: init failure -> 'Failed to reload HID backend' (Internal, 500);
    src/web/handlers/config/usb_update.rs rolls the config back."""
    status, body, _hdrs = logged_in.call("PATCH", "/api/config/hid",
                                         {"backend": "ch9329", "ch9329_port": "/nonexistent/tty"})
    assert (status, body["message"]) == (500, "Internal error: Failed to reload HID backend")
    assert logged_in.call("GET", "/api/config/hid")[1]["backend"] == "none"


def test_descriptor_kept_unless_backend_is_ch9329(logged_in):
    """usb_update.rs stage_hid_config_update: the CH9329 descriptor is written to the chip,
    so it is only stored when the backend is ch9329."""
    body = logged_in.call("PATCH", "/api/config/hid", {"ch9329_descriptor": {"product": "X"}})[1]
    assert body["ch9329_descriptor"]["product"] == "CH9329"


def test_type_errors_are_axum_rejections(logged_in):
    """axum Json extractor (extract/rejection.rs): 422 plain text for a wrong type or an
    unknown enum variant (serde, rename_all lowercase in src/config/schema/hid.rs), 415 without
    the JSON content type, 400 for broken JSON."""
    status, body, _hdrs = logged_in.call("PATCH", "/api/config/video", {"width": "wide"})
    assert status == 422 and body.startswith("Failed to deserialize the JSON body")
    status, body, _hdrs = logged_in.call("PATCH", "/api/config/hid", {"backend": "usb"})
    assert status == 422 and "unknown variant `usb`" in body
    assert logged_in.call("PATCH", "/api/config/video", {"fps": 5}, ctype="text/plain")[0] == 415
    assert logged_in.call("PATCH", "/api/config/video", b"{", )[0] == 400


def test_unknown_fields_are_ignored(logged_in):
    """serde without deny_unknown_fields (types.rs): an unknown key changes nothing, no error."""
    before = logged_in.call("GET", "/api/config/audio")[1]
    status, body, _hdrs = logged_in.call("PATCH", "/api/config/audio", {"volume": 5})
    assert (status, body) == (200, before)


def test_stream_section_view(logged_in):
    """types.rs StreamConfigResponse and StreamConfigUpdate::apply_to: '' clears a server."""
    body = logged_in.call("PATCH", "/api/config/stream",
                          {"stun_server": "stun:a:3478", "bitrate_preset": {"type": "Quality"}})[1]
    assert (body["stun_server"], body["bitrate_preset"], body["using_public_ice_servers"]) == \
        ("stun:a:3478", {"type": "Quality"}, False)
    assert "auto_pause_enabled" not in body
    body = logged_in.call("PATCH", "/api/config/stream", {"stun_server": ""})[1]
    assert body["stun_server"] is None


def test_web_view_hides_certificate_paths(logged_in):
    """types.rs WebConfigResponse::from_stored; WebConfigUpdate::apply_to sets bind_address
    from the first of bind_addresses."""
    body = logged_in.call("PATCH", "/api/config/web", {"bind_addresses": ["127.0.0.1", "::1"]})[1]
    assert body["bind_address"] == "127.0.0.1" and body["has_custom_cert"] is False
    assert "ssl_cert_path" not in body


def test_invariants_without_otg(logged_in):
    """src/config/schema/mod.rs enforce_invariants: MSD off unless the HID backend is otg."""
    assert logged_in.call("GET", "/api/config")[1]["msd"]["enabled"] is True  # default
    logged_in.call("PATCH", "/api/config/video", {"fps": 30})
    assert logged_in.call("GET", "/api/config")[1]["msd"]["enabled"] is False


# ------------------------------------------------------------------------------ src/video/

def test_stream_status(logged_in, tmp_path):
    """src/web/handlers/stream.rs stream_state -> src/video/streamer.rs StreamerStats; state
    names from StreamerState::as_str."""
    status = logged_in.call("GET", "/api/stream/status")[1]
    assert set(status) == {"state", "device", "format", "resolution", "clients", "target_fps",
                           "fps"}
    assert status["state"] == "uninitialized"
    node = tmp_path / "video0"
    node.write_text("")
    logged_in.call("PATCH", "/api/config/video", {"device": str(node)})
    status = logged_in.call("GET", "/api/stream/status")[1]
    assert (status["state"], status["resolution"], status["fps"]) == \
        ("streaming", [1920, 1080], 30.0)
    # a stalled UVC dongle (capture/status.rs class) until something outside One-KVM heals it
    (logged_in.data / sim.STREAM_STATE_FILE).write_text("uvc_capture_stall\n")
    assert logged_in.call("GET", "/api/stream/status")[1]["state"] == "uvc_capture_stall"
    (logged_in.data / sim.STREAM_STATE_FILE).unlink()
    node.unlink()
    # capture/status.rs: a node gone is device_lost; streamer.rs start_device_recovery_internal
    # then reports recovering while it re-finds the device, streaming again once it is back
    lost = logged_in.call("GET", "/api/stream/status")[1]
    assert (lost["state"], lost["device"]) == ("device_lost", "video0")
    logged_in.state.lost_since -= 1.0
    assert logged_in.call("GET", "/api/stream/status")[1]["state"] == "recovering"
    node.write_text("")
    assert logged_in.call("GET", "/api/stream/status")[1]["state"] == "streaming"


def test_stream_status_asks_the_kernel(logged_in):
    """src/video/device/linux.rs probes a node with VIDIOC_QUERYCAP: a character device that is
    no V4L2 capture device (here /dev/null, ENOTTY) is an error, not a stream."""
    with logged_in.state.lock:
        logged_in.state.config["video"]["device"] = "/dev/null"
    status = logged_in.call("GET", "/api/stream/status")[1]
    assert (status["state"], status["fps"]) == ("error", 0.0)
    with logged_in.state.lock:
        logged_in.state.config["video"]["device"] = "/dev/onekvm-sim-no-such-node"
    assert logged_in.call("GET", "/api/stream/status")[1]["state"] == "device_lost"


def test_access_log(logged_in, capsys):
    """--access-log: one line per request on stderr (method, path, status), for the box's journal."""
    logged_in.state.access_log = True
    logged_in.call("GET", "/api/config/hid?x=1")
    assert "GET /api/config/hid 200" in capsys.readouterr().err


def test_video_device_required(logged_in):
    """src/web/handlers/config/apply.rs apply_video_config runs after the config is stored:
    without a device it answers 400 'video_device is required' (the change stays stored)."""
    status, body, _hdrs = logged_in.call("PATCH", "/api/config/video", {"fps": 24})
    assert (status, body["message"]) == (400, "Bad request: video_device is required")
    assert logged_in.call("GET", "/api/config/video")[1]["fps"] == 24


# ------------------------------------------------------------------------------- src/hid/

def test_ch9329_port_held_exclusively(logged_in):
    """src/hid/ch9329.rs open_port with serialport 4 (TTYPort::open sets TIOCEXCL): while the
    backend is ch9329 the port is held; an unprivileged second open gets EBUSY."""
    master, slave = pty.openpty()
    name = os.ttyname(slave)
    try:
        assert logged_in.call("PATCH", "/api/config/hid",
                              {"backend": "ch9329", "ch9329_port": name})[0] == 200
        status = logged_in.call("GET", "/api/hid/status")[1]
        assert (status["backend"], status["online"], status["device"]) == ("ch9329", True, name)
        if os.geteuid() != 0:  # root passes TIOCEXCL
            with pytest.raises(OSError):
                os.open(name, os.O_RDWR | os.O_NOCTTY)
        logged_in.call("PATCH", "/api/config/hid", {"backend": "none"})
        assert logged_in.state.hid_fd is None  # released
    finally:
        os.close(master)
        os.close(slave)


def test_snapshot_is_the_current_frame_or_503(logged_in, tmp_path):
    """src/web/handlers/stream.rs snapshot: the MJPEG handler's frame if frame.rs's
    is_valid_jpeg_bytes takes it (>= 125 bytes, FF D8 ... FF D9), else 503 "No frame available"."""
    status, body, dummy = logged_in.call("GET", "/api/snapshot")
    assert (status, body) == (503, "No frame available")
    frame = tmp_path / "data" / sim.FRAME_FILE
    frame.write_bytes(b"\xff\xd8" + b"\x00" * 100 + b"\xff\xd9")  # too short for One-KVM
    assert logged_in.call("GET", "/api/snapshot")[0] == 503
    jpeg = b"\xff\xd8\xff\xe0" + b"\x00" * 200 + b"\xff\xd9"
    frame.write_bytes(jpeg)
    req = urllib.request.Request(logged_in.base + "/api/snapshot", headers={"Cookie": logged_in.cookie})
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert (resp.status, resp.headers["Content-Type"], resp.read()) == (200, "image/jpeg", jpeg)
    logged_in.cookie = None  # behind the auth middleware, as every route but the public ones
    assert logged_in.call("GET", "/api/snapshot")[:2] == (401, {"success": False, "message": "Not authenticated"})
