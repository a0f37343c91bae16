# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Headless Chromium for the tests that look at the health page: the DOM it rendered, a screenshot."""

from __future__ import annotations

import shutil
import struct
import subprocess

import pytest


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.fail("no Chromium: install the Debian package chromium (scripts/setup.sh does)")
    return ""


def chromium_argv(profile_dir, *args) -> list:
    # the network is closed: everything that would phone home is switched off
    return [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--user-data-dir=%s" % profile_dir, *args]


def screenshot(page, png, profile_dir, size=(1400, 700)) -> None:
    """Chromium's picture of ``page`` (a pathlib.Path) at ``size``, written to ``png``."""
    done = subprocess.run(chromium_argv(profile_dir, "--screenshot=%s" % png, "--window-size=%d,%d" % size,
                                        "--hide-scrollbars", page.as_uri()),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert png_size(png) == tuple(size)


def png_size(path) -> tuple:
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", head[16:24])
