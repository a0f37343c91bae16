# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""health.yml on a small container fleet: the JSON report and the HTML page in headless Chromium.

One box goes through a real failure and recovery of its watchdog (its stand-in video node
is removed, then restored), one has its watchdog stopped, one host cannot be reached.
"""

from __future__ import annotations

import html.parser
import json
import os
import time

import pytest

from ansible_collections.onekvm.fleet.tests.fleet import containers
from ansible_collections.onekvm.fleet.tests.fleet.conftest import ROOT, run
from ansible_collections.onekvm.fleet.tests.support.chromium import chromium_argv, screenshot

SCREENSHOT_DIR = os.path.join(ROOT, "tests", "output", "fleet")


def watchdog_state(box) -> dict:
    return containers.box_json(box, "/usr/local/bin/onekvm", "--json", "status")


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    pytest.fail("timed out after %s s waiting for %s" % (timeout, what))
    return None


class Rows(html.parser.HTMLParser):
    """The data-box / data-state attributes of the table rows, in page order."""

    def __init__(self):
        super().__init__()
        self.rows = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "data-box" in attrs:
            self.rows.append((attrs["data-box"], attrs["data-state"]))


@pytest.fixture(scope="module")
def report(fleet, tmp_path_factory):
    healed, stopped = fleet["names"]
    # a real failure and recovery on the first box: its watched node disappears, then returns
    containers.box_exec(healed, "rm", "-f", "/run/fake-video")
    # restored only once a step ran: restored within the grace period it would count as a glitch
    wait_for(lambda: watchdog_state(healed)["status"] in ("recovering", "needs_human"), 30,
             "the watchdog to act on the missing node")
    containers.box_exec(healed, "touch", "/run/fake-video")
    wait_for(lambda: watchdog_state(healed)["counters"]["recoveries"] >= 1, 30, "the watchdog to record the recovery")
    # the second box's watchdog is down
    containers.box_exec(stopped, "systemctl", "stop", "onekvm-watchdog.service")

    out = tmp_path_factory.mktemp("report")
    done = run(["ansible-playbook", "-i", fleet["inventory"], "onekvm.fleet.health", "-e", "fleet_health_dir=%s" % out],
               env=fleet["env"])
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    with open(out / "fleet-health.json", encoding="utf-8") as f:
        return {"dir": out, "json": json.load(f), "stdout": done.stdout}


def test_json_has_every_box_failing_first(fleet, report):
    healed, stopped = fleet["names"]
    data = report["json"]
    assert [(b["name"], b["state"]) for b in data["boxes"]] == [
        (fleet["gone"], "unreachable"), (stopped, "failing"), (healed, "warning")]
    assert data["summary"]["boxes"] == 3 and data["summary"]["unreachable"] == 1 and data["summary"]["failing"] == 1
    by_name = {b["name"]: b for b in data["boxes"]}
    assert "the watchdog service is inactive" in by_name[stopped]["problems"]
    # the box whose node came back: its recovery is in the report, the missing CH9329 is only a warning
    box = by_name[healed]
    assert box["kvmd"] == "active" and box["watchdog"]["status"] == "ok"
    assert box["watchdog"]["last_recovery"]["at"] and box["watchdog"]["counters"]["recoveries"] >= 1
    assert data["summary"]["last_recovery"]["box"] == healed
    # containers have neither USB in sysfs nor a serial port: warnings, not failures
    assert [w.split(":")[0] for w in box["warnings"]] == ["USB devices not listed", "CH9329 did not answer"]
    assert box["usb"] is None
    assert "1 failing, 1 unreachable" in report["stdout"]


def test_html_renders_in_chromium_with_the_table_and_a_screenshot(fleet, report, tmp_path):
    healed, stopped = fleet["names"]
    page = report["dir"] / "fleet-health.html"
    text = page.read_text()
    assert "<script" not in text and "http://" not in text and "https://" not in text  # self-contained
    done = run(chromium_argv(tmp_path / "profile-dom", "--dump-dom", page.as_uri()), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = Rows()
    rows.feed(done.stdout)
    assert rows.rows == [(fleet["gone"], "unreachable"), (stopped, "failing"), (healed, "warning")]
    assert 'id="summary-failing"><b>1</b>' in done.stdout

    os.makedirs(SCREENSHOT_DIR, exist_ok=True)
    shot = os.path.join(SCREENSHOT_DIR, "fleet-health.png")
    if os.path.exists(shot):
        os.unlink(shot)
    screenshot(page, shot, tmp_path / "profile-shot", (1400, 700))
    assert os.path.getsize(shot) > 10000  # a rendered table, not a blank page
