# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The health report's screens: a box's snapshot scaled on the controller (Pillow), hostile pictures refused."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys

import pytest

from ansible_collections.onekvm.fleet.plugins.filter import fleet_screen as screen_filter
from ansible_collections.onekvm.fleet.plugins.filter.fleet_health import fleet_health
from ansible_collections.onekvm.fleet.plugins.filter.fleet_screen import PILLOW_MISSING, fleet_screen
from ansible_collections.onekvm.fleet.tests.unit.plugins.filter.test_fleet_health import collected

Image = pytest.importorskip("PIL.Image")

BARS = [(255, 255, 255), (255, 255, 0), (0, 255, 255), (0, 255, 0), (255, 0, 255), (255, 0, 0), (0, 0, 255), (0, 0, 0)]


def colour_bars(width=640, height=480, fmt="JPEG") -> bytes:
    """Eight vertical bars, like vivid's default test pattern (75% colour bars)."""
    img = Image.new("RGB", (width, height))
    for i, colour in enumerate(BARS):
        img.paste(colour, (i * width // 8, 0, (i + 1) * width // 8, height))
    out = io.BytesIO()
    img.save(out, fmt)
    return out.getvalue()


def snapshot(jpeg=None, **extra):
    """What onekvm.fleet.ustreamer_snapshot returns (its RETURN)."""
    raw = colour_bars() if jpeg is None else jpeg
    result = {"changed": False, "state": "live", "online": True, "width": 640, "height": 480, "bytes": len(raw),
              "jpeg": base64.b64encode(raw).decode("ascii"), "elapsed": 0.2}
    result.update(extra)
    return result


def decode(uri):
    assert uri.startswith("data:image/jpeg;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def test_a_live_screen_becomes_a_small_jpeg_with_the_same_picture():
    entry = fleet_screen(snapshot())
    assert entry["state"] == "live" and entry["error"] is None
    assert (entry["width"], entry["height"], entry["thumbnail_width"], entry["thumbnail_height"]) == (640, 480, 240, 180)
    thumb = decode(entry["thumbnail"]).convert("RGB")
    assert thumb.size == (240, 180)
    # the bars are still where they were: the middle of each eighth has its colour
    for i, colour in enumerate(BARS):
        got = thumb.getpixel((i * 30 + 15, 90))
        assert all(abs(a - b) < 40 for a, b in zip(got, colour)), (i, got, colour)
    assert len(entry["thumbnail"]) < 20000  # inline in the page: small


def test_width_is_bounded_and_follows_the_aspect_ratio():
    assert fleet_screen(snapshot(), width=100)["thumbnail_height"] == 75
    assert fleet_screen(snapshot(), width=10 ** 9)["thumbnail_width"] == 640  # never scaled up past the frame
    assert fleet_screen(snapshot(), width="junk")["thumbnail_width"] == 240


def test_a_stopped_streamer_is_a_state_with_its_message_not_an_error():
    entry = fleet_screen({"changed": False, "state": "stopped", "online": None, "width": None, "height": None,
                          "bytes": 0, "jpeg": "", "elapsed": 0.0, "msg": "ustreamer is not running"})
    assert entry["state"] == "stopped" and entry["thumbnail"] is None and entry["error"] is None
    assert entry["message"] == "ustreamer is not running"


def test_no_signal_keeps_the_streamers_placeholder_picture():
    entry = fleet_screen(snapshot(state="no_signal", online=False))
    assert entry["state"] == "no_signal" and entry["thumbnail"]


def test_nothing_asked_gives_no_entry():
    assert fleet_screen(None) is None
    assert fleet_screen({"changed": False, "skipped": True, "skip_reason": "Conditional result was False"}) is None


@pytest.mark.parametrize("bad, why", [
    ({"failed": True, "msg": "ustreamer did not send a snapshot on /run/kvmd/ustreamer.sock within 5.0 s"},
     "within 5.0 s"),
    ({"state": "live", "jpeg": "not base64!!"}, "not valid base64"),
    ({"state": "live", "jpeg": base64.b64encode(b"\xff\xd8 not really").decode()}, "not a readable JPEG"),
    ({"state": "live", "jpeg": ""}, "no picture"),
    ({"state": "<b>owned</b>", "jpeg": ""}, "no snapshot"),
])
def test_a_broken_or_hostile_snapshot_is_an_error_entry_never_a_traceback(bad, why):
    entry = fleet_screen(bad)
    assert entry["state"] == "error" and entry["thumbnail"] is None and why in entry["error"]


def test_a_png_or_a_huge_picture_is_not_decoded():
    png = fleet_screen(snapshot(colour_bars(fmt="PNG")))
    assert png["state"] == "error" and "not a readable JPEG" in png["error"]
    # a JPEG header claiming 9000x9000 (81 Mpixel, under Pillow's own bomb limit) is refused before decoding
    huge = bytearray(colour_bars(64, 48))
    sof = huge.index(b"\xff\xc0")
    huge[sof + 5:sof + 9] = (9000).to_bytes(2, "big") * 2
    entry = fleet_screen(snapshot(bytes(huge)))
    assert entry["state"] == "error" and "larger than a screen" in entry["error"]


def test_without_pillow_the_screen_says_what_to_install(monkeypatch):
    monkeypatch.setattr(screen_filter, "Image", None)
    entry = fleet_screen(snapshot())
    assert entry["state"] == "live" and entry["thumbnail"] is None and entry["error"] == PILLOW_MISSING
    assert "pip install pillow" in entry["error"]
    # the box itself is fine: the report carries the message, the box gets no warning for it
    box = fleet_health(["kvm1"], [collected("kvm1", screen=entry)])["boxes"][0]
    assert box["state"] == "ok" and box["screen"]["error"] == PILLOW_MISSING


def test_the_filter_imports_without_pillow():
    # a controller without Pillow: the plugin still loads (the report still gets written)
    code = ("import sys; sys.modules['PIL'] = None;"
            "from ansible_collections.onekvm.fleet.plugins.filter import fleet_screen as f;"
            "print(f.fleet_screen({'state': 'live', 'jpeg': 'AAAA'})['error'])")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))  # this run's collection tree
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, env=env)
    assert done.returncode == 0, done.stderr
    assert "Pillow is missing" in done.stdout


def test_the_report_carries_the_screen_and_warns_only_when_it_could_not_be_taken():
    live = fleet_screen(snapshot())
    stopped = fleet_screen({"state": "stopped", "jpeg": "", "msg": "not running"})
    failed = fleet_screen({"failed": True, "msg": "cannot connect: permission denied"})
    result = fleet_health(["a", "b", "c", "d"], [collected("a", screen=live), collected("b", screen=stopped),
                                                 collected("c", screen=failed), collected("d")])
    by_name = {b["name"]: b for b in result["boxes"]}
    assert by_name["a"]["screen"]["thumbnail"] == live["thumbnail"] and by_name["a"]["state"] == "ok"
    assert by_name["b"]["screen"]["state"] == "stopped" and by_name["b"]["state"] == "ok"
    assert by_name["c"]["state"] == "warning"
    assert by_name["c"]["warnings"] == ["screen not taken: cannot connect: permission denied"]
    assert by_name["d"]["screen"] is None


def test_the_report_drops_a_thumbnail_that_is_not_an_inline_jpeg():
    for thumbnail in ("javascript:alert(1)", "data:image/jpeg;base64,AA\"><script>", "data:text/html;base64,AAAA",
                      "data:image/jpeg;base64," + "A" * (600 * 1024), 42):
        box = fleet_health(["a"], [collected("a", screen={"state": "live", "thumbnail": thumbnail})])["boxes"][0]
        assert box["screen"]["thumbnail"] is None, thumbnail


def test_a_frame_without_a_reported_size_takes_the_jpegs_own():
    # One-KVM 0.2's /api/snapshot sends no size headers (src/web/handlers/stream.rs)
    entry = fleet_screen(snapshot(width=None, height=None))
    assert (entry["width"], entry["height"]) == (640, 480) and "frame" not in entry
