# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A box's screen for the health report: the snapshot a box sent, scaled down on the controller.

The box sends ustreamer's full frame (``onekvm.fleet.ustreamer_snapshot``); the controller
scales it with Pillow into a small JPEG that the report carries inline as a ``data:`` URI, so
``fleet-health.html`` stays one self-contained file and the box side stays standard library only.
"""

from __future__ import annotations

import base64
import binascii
import io

try:
    from PIL import Image
except ImportError:  # the report is still written; each screen says what is missing
    Image = None

DOCUMENTATION = r"""
name: fleet_screen
short_description: Scale a box's screen snapshot into the health report's thumbnail
version_added: 1.0.0
author: onekvm.fleet maintainers
description:
  - Takes what C(onekvm.fleet.ustreamer_snapshot) returned for a box (or nothing, when no snapshot was taken) and
    returns the screen entry of C(onekvm.fleet.health)'s report, with the picture scaled down to a small JPEG as a
    C(data:image/jpeg;base64,...) URI (inline in C(fleet-health.html) and C(fleet-health.json)).
  - The snapshot is box output and treated as untrusted - only a JPEG of at most 16384 by 16384 and 50 million pixels
    is decoded; anything else gives an entry with RV(_value.error) and no picture, never a failure of the report.
  - Needs the Python package Pillow on the controller (the collection's C(requirements.txt)). Without it the entry
    says so in RV(_value.error) and carries no picture.
requirements:
  - Pillow (on the controller)
options:
  _input:
    description: The registered result of C(onekvm.fleet.ustreamer_snapshot), or V(null) / a skipped result.
    type: raw
    required: true
  width:
    description: Width of the thumbnail in pixels (clamped to V(16) to V(1920)); the height follows the picture's aspect ratio.
    type: int
    default: 240
  quality:
    description: JPEG quality of the thumbnail (clamped to V(10) to V(95)).
    type: int
    default: 70
"""

EXAMPLES = r"""
- name: Take the screen
  onekvm.fleet.ustreamer_snapshot:
  register: snapshot
  failed_when: false

- name: Keep only the thumbnail
  ansible.builtin.set_fact:
    screen: "{{ snapshot | onekvm.fleet.fleet_screen(width=320) }}"
"""

RETURN = r"""
_value:
  description: The screen entry, or V(null) when no snapshot was asked for (skipped, or no input).
  type: dict
  contains:
    state:
      description: >-
        V(live), V(no_signal) (the streamer sends its placeholder frame), V(stopped) (the streamer is not running,
        as while nobody watches - not a failure) or V(error) (no picture could be taken or read). Without Pillow
        the state stays what the box said, with no thumbnail and RV(_value.error) saying why.
      type: str
    width:
      description: Width of the box's frame as the streamer reported it (else the JPEG's own), or V(null).
      type: int
    height:
      description: Height of the box's frame, or V(null).
      type: int
    bytes:
      description: Size of the box's JPEG.
      type: int
    elapsed:
      description: Seconds the snapshot took on the box.
      type: float
    thumbnail:
      description: The scaled picture as a C(data:image/jpeg;base64,...) URI, or V(null).
      type: str
    thumbnail_width:
      description: Width of the thumbnail, or V(null).
      type: int
    thumbnail_height:
      description: Height of the thumbnail, or V(null).
      type: int
    message:
      description: What the box said when there is no picture (a stopped streamer), or V(null).
      type: str
    error:
      description: Why there is no picture (the box's error, a broken picture, Pillow missing), or V(null).
      type: str
"""

THUMBNAIL_WIDTH = 240
MAX_SIDE = 16384  # as ustreamer_snapshot's own bound on the reported size
MAX_PIXELS = 50_000_000
MAX_JPEG_B64 = 48 * 1024 * 1024  # base64 of the module's largest max_bytes (32 MiB)
PILLOW_MISSING = ("not scaled: the Python package Pillow is missing on the controller "
                  "(pip install pillow; it is in the collection's requirements.txt)")
STATES = ("live", "no_signal", "stopped")


def fleet_screen(snapshot, width=THUMBNAIL_WIDTH, quality=70):
    """The report's screen entry for one box (see DOCUMENTATION)."""
    if not isinstance(snapshot, dict) or snapshot.get("skipped") or not snapshot:
        return None
    width = _bounded(width, 16, 1920, THUMBNAIL_WIDTH)
    quality = _bounded(quality, 10, 95, 70)
    state = snapshot.get("state")
    entry = {"state": state if state in STATES else "error", "width": _int(snapshot.get("width")),
             "height": _int(snapshot.get("height")), "bytes": _int(snapshot.get("bytes")) or 0,
             "elapsed": snapshot.get("elapsed") if _is_number(snapshot.get("elapsed")) else None,
             "thumbnail": None, "thumbnail_width": None, "thumbnail_height": None, "message": None, "error": None}
    if snapshot.get("failed") or state not in STATES:
        entry.update(state="error", error=_text(snapshot.get("msg")) or "the box sent no snapshot")
        return entry
    if state == "stopped":
        entry["message"] = _text(snapshot.get("msg")) or "the streamer is not running"
        return entry
    try:
        entry.update(_thumbnail(snapshot.get("jpeg"), width, quality))
        frame = entry.pop("frame")
        if entry["width"] is None or entry["height"] is None:  # One-KVM 0.2 sends no size: the JPEG's own
            entry["width"], entry["height"] = frame
    except NoPicture as exc:  # a controller without Pillow: the box's screen is fine, only not shown
        entry.update(state=entry["state"] if str(exc) == PILLOW_MISSING else "error", error=str(exc))
    return entry


class NoPicture(Exception):
    """Why a snapshot gives no thumbnail."""


def _thumbnail(jpeg_b64, width, quality):
    if Image is None:
        raise NoPicture(PILLOW_MISSING)
    if not isinstance(jpeg_b64, str) or not jpeg_b64 or len(jpeg_b64) > MAX_JPEG_B64:
        raise NoPicture("the box sent no picture")
    try:
        raw = base64.b64decode(jpeg_b64, validate=True)
    except (binascii.Error, ValueError):
        raise NoPicture("the box's picture is not valid base64") from None
    try:
        with Image.open(io.BytesIO(raw), formats=["JPEG"]) as img:
            w, h = img.size
            if not (0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE) or w * h > MAX_PIXELS:
                raise NoPicture("the box's picture is %dx%d, larger than a screen; not decoded" % (w, h))
            size = (width, max(1, round(h * width / w)))
            img.draft("RGB", size)  # JPEG: decode at 1/2, 1/4 or 1/8 scale when that is enough (fast)
            small = img.convert("RGB")
            small.thumbnail(size)
            out = io.BytesIO()
            small.save(out, "JPEG", quality=quality, optimize=True)
    except NoPicture:
        raise
    except Exception as exc:  # pylint: disable=broad-except  # whatever Pillow makes of a hostile file
        raise NoPicture("the box's picture is not a readable JPEG (%s)" % _text(exc)) from None
    return {"thumbnail": "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii"),
            "thumbnail_width": small.size[0], "thumbnail_height": small.size[1], "frame": (w, h)}


def _bounded(value, low, high, default):
    try:
        value = int(value)
    except (TypeError, ValueError):
        return default
    return min(max(value, low), high)


def _int(value):
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value else None


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _text(value):
    return " ".join(str(value).split())[:300] if value else None


class FilterModule:
    """The health report's screens."""

    def filters(self):
        return {"fleet_screen": fleet_screen}
