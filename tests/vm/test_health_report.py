# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The health report's screen wall with the box's real screen, looked at in headless Chromium.

The simulated box runs the real ustreamer (Debian's 4.9) on vivid's capture node; vivid draws
its default test pattern, 75% colour bars (the kernel's Documentation/admin-guide/media/vivid.rst:
"75% Colorbar" is the first of its test patterns, bars white, yellow, cyan, green, magenta, red,
blue, black). health.yml takes ustreamer's /snapshot, the controller scales it with Pillow, and
the page carries it inline: the bars must be in the report's thumbnail and in Chromium's picture
of the page. One playbook run and one screenshot (some 40 s on the VM suite).
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess

import pytest

from ansible_collections.onekvm.fleet.tests.support.chromium import screenshot

Image = pytest.importorskip("PIL.Image")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCREENSHOT = os.path.join(ROOT, "tests", "output", "vm", "fleet-health.png")
# vivid's colour bars left to right, as which of R, G, B are lit (75% bars: lit is some 190 of 255;
# YUYV, JPEG and scaling move the exact values, not which channels are lit)
BARS = ("grey", "yellow", "cyan", "green", "magenta", "red", "blue", "black")
LIT = {(1, 1, 1): "grey", (1, 1, 0): "yellow", (0, 1, 1): "cyan", (0, 1, 0): "green", (1, 0, 1): "magenta",
       (1, 0, 0): "red", (0, 0, 1): "blue", (0, 0, 0): "black"}


def colour(pixel) -> str:
    """The bar colour a pixel is, or "" when a channel is neither clearly lit (> 140) nor dark (< 70)."""
    if any(70 <= c <= 140 for c in pixel[:3]):
        return ""
    return LIT[tuple(int(c > 140) for c in pixel[:3])]


@pytest.fixture(scope="module")
def report(box, tmp_path_factory):
    out = tmp_path_factory.mktemp("health")
    # the CH9329 is not asked (no simulator listens in this test): the screen is what is looked at
    done = subprocess.run(["ansible-playbook", "-i", box.inventory, "onekvm.fleet.health", "-e",
                           "fleet_health_dir=%s" % out, "-e", "fleet_health_ch9329=false"],
                          capture_output=True, text=True, env=box.ansible_env(), timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    with open(out / "fleet-health.json", encoding="utf-8") as f:
        return {"dir": out, "json": json.load(f), "stdout": done.stdout}


def test_the_report_carries_a_thumbnail_of_vivids_colour_bars(report):
    box = report["json"]["boxes"][0]
    screen = box["screen"]
    assert screen["state"] == "live", screen
    assert (screen["width"], screen["height"]) == (640, 480)  # as ustreamer reports the frame (X-UStreamer-*)
    assert (screen["thumbnail_width"], screen["thumbnail_height"]) == (240, 180)
    assert not [w for w in box["warnings"] if w.startswith("screen")]
    thumb = Image.open(io.BytesIO(base64.b64decode(screen["thumbnail"].split(",", 1)[1]))).convert("RGB")
    # each bar at three quarters of the height (vivid writes its text at the top)
    row = [thumb.getpixel((int((i + 0.5) * 240 / 8), 135)) for i in range(8)]
    assert tuple(colour(pixel) for pixel in row) == BARS, row
    assert "no_log" not in json.dumps(screen)  # the registered picture reached the controller despite no_log


def test_chromium_shows_the_screen_on_the_wall(report, tmp_path):
    page = report["dir"] / "fleet-health.html"
    text = page.read_text()
    assert "<script" not in text and "http://" not in text and "https://" not in text  # still self-contained
    assert text.count('<img src="data:image/jpeg;base64,') == 1
    os.makedirs(os.path.dirname(SCREENSHOT), exist_ok=True)
    screenshot(page, SCREENSHOT, tmp_path / "profile", (1400, 800))
    with Image.open(SCREENSHOT) as shot:
        # the wall's tile is in the left column: every bar's colour is there, in at least a bar's worth of pixels
        wall = shot.convert("RGB").crop((0, 0, 300, 800))
        counts = {name: 0 for name in BARS}
        raw = wall.tobytes()
        for i in range(0, len(raw), 3):
            counts[colour(raw[i:i + 3]) or "grey"] += 1
    # a bar of the thumbnail is 30 x 180 pixels; the page's own colours are white, greys and its badges
    assert min(counts[name] for name in ("yellow", "cyan", "magenta", "blue")) > 3000, counts
