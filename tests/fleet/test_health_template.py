# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The health page template renders every kind of box (no containers needed).

The report comes from the real fleet_health filter fed with collected data of each kind;
the page is rendered by ansible.builtin.template exactly as health.yml does it.
"""

from __future__ import annotations

import json
import os

from ansible_collections.onekvm.fleet.plugins.filter.fleet_health import fleet_health
from ansible_collections.onekvm.fleet.plugins.filter.fleet_screen import fleet_screen
from ansible_collections.onekvm.fleet.tests.fleet.conftest import ROOT, run
from ansible_collections.onekvm.fleet.tests.unit.plugins.filter.test_fleet_health import T0, collected, watchdog_state
from ansible_collections.onekvm.fleet.tests.unit.plugins.filter.test_fleet_screen import snapshot

TEMPLATE = os.path.join(ROOT, "playbooks", "templates", "fleet-health.html.j2")


def every_kind_of_box() -> dict:
    healed = watchdog_state(last_failure={"since": T0, "ended": T0 + 9, "outcome": "recovered", "reasons": ["x"]},
                            last_action={"step": "ioctl", "result": "ok", "at": T0 + 5},
                            message="capture: ok (recovered: ioctl: ok)\nReset HID: <not run> since boot")
    healed["counters"].update(recoveries=1, last_recovery_seconds=9, actions={"ioctl": {"ok": 1, "failed": 0, "skipped": 0}})
    healed["recent_events"] = [  # the watchdog's event ring (_watchdog_ladder.py), as the state file holds it
        {"event": "failure_detected", "at": T0, "reasons": ["ustreamer: offline <b>"]},
        {"event": "action_failed", "at": T0 + 2, "step": "restart_streamer", "result": "failed", "detail": "no streamer"},
        {"event": "action_done", "at": T0 + 5, "step": "ioctl", "result": "ok"},
        {"event": "recovered", "at": T0 + 9, "failing_for": 9.0},
    ]
    missing = json.dumps({"failed": True, "msg": "no watchdog state", "exit_code": 3})
    boxes = [
        collected("healed", healed, screen=fleet_screen(snapshot())),
        collected("no-state", watchdog_unit="inactive", watchdog_rc=3, watchdog_stdout=missing),
        collected("no-watchdog", watchdog_enabled=False, usb=None, ch9329_skipped=True,
                  screen=fleet_screen({"state": "stopped", "jpeg": "", "msg": "ustreamer is not running"})),
        collected("one-kvm-0.2", flavour="onekvm2", service="one-kvm.service", watchdog_enabled=False,
                  ch9329_skipped=True),
        collected("needs-human<script>", watchdog_state("needs_human"),
                  screen=fleet_screen({"failed": True, "msg": "permission denied <img src=x>"})),
        {"name": "gone", "reachable": False, "error": "ssh: connect to host 192.0.2.9 port 22: Connection timed out"},
    ]
    return fleet_health([b["name"] for b in boxes] + ["never-collected"], boxes, generated_at="2026-11-23T22:00:00Z")


def render(report_data, tmp_path, coll_path) -> str:
    """The page, rendered by ansible.builtin.template as health.yml does it."""
    report = tmp_path / "report.json"
    report.write_text(json.dumps(report_data))
    page = tmp_path / "fleet-health.html"
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=coll_path, ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="False")
    done = run(["ansible", "localhost", "-c", "local", "-m", "ansible.builtin.template",
                "-a", "src=%s dest=%s mode=0644" % (TEMPLATE, page),
                "-e", "@%s" % report_vars(report_data, tmp_path),
                "-e", "ansible_python_interpreter=auto_silent"], env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return page.read_text()


def report_vars(report_data, tmp_path) -> str:
    path = tmp_path / "vars.json"
    path.write_text(json.dumps({"fleet_health_report": report_data}))
    return str(path)


def test_template_renders_every_kind_of_box(tmp_path, coll_path):
    html = render(every_kind_of_box(), tmp_path, coll_path)
    order = [html.index('data-box="%s"' % name) for name in ("gone", "never-collected", "needs-human&lt;script&gt;",
                                                             "no-state", "healed", "no-watchdog")]
    assert order == sorted(order), "failing and unreachable boxes first"
    assert "<script>" not in html  # names are escaped
    row = html[html.index('data-box="one-kvm-0.2" data-state'):]
    assert "onekvm2<br>" in row[:3000] and "one-kvm.service:" in row[:3000]  # the flavour and the unit judged
    assert "service inactive, no state" in html
    assert "healed in 9 s" in html and "ioctl: 1 ok / 0 failed" in html
    # each line of the status message on its own line of the cell, escaped
    assert "(recovered: ioctl: ok)<br>Reset HID: &lt;not run&gt; since boot</span>" in html
    assert 'id="summary-unreachable"><b>2</b>' in html
    history = html[html.index('data-box="healed" data-state'):]
    history = history[history.index('class="history"'):history.index("</td>", history.index('class="history"'))]
    assert history.count("<circle") == 4 and "healed in 9.0 s" in history
    assert history.count('<rect class="episode"') == 1 and "<title>healed in 9.0 s</title>" in history  # time to heal
    assert "restart_streamer failed" in history and "ustreamer: offline &lt;b&gt;" in history


def test_the_screen_wall_shows_each_box_beside_the_table(tmp_path, coll_path):
    html = render(every_kind_of_box(), tmp_path, coll_path)
    wall = html[html.index('id="screens"'):html.index('id="boxes"')]
    names = ("gone", "never-collected", "needs-human&lt;script&gt;", "healed")
    tiles = [html.index('data-box="%s" data-screen' % name) for name in names]
    assert tiles == sorted(tiles), "the wall follows the table's order"
    healed = wall[wall.index('data-box="healed"'):]
    assert healed.startswith('data-box="healed" data-screen="live"')
    assert '<img src="data:image/jpeg;base64,' in healed[:200] and 'width="240" height="180"' in healed[:20000]
    stopped = wall[wall.index('data-box="no-watchdog"'):]
    assert stopped.startswith('data-box="no-watchdog" data-screen="stopped"') and "streamer stopped" in stopped[:600]
    broken = wall[wall.index('data-box="needs-human&lt;script&gt;"'):]
    assert "permission denied &lt;img src=x&gt;" in broken[:800] and "<img src=x>" not in html
    assert 'data-box="gone" data-screen="none"' in wall and "not reachable" in wall
    assert 'href="#box-1"' in wall and 'id="box-1"' in html  # a tile leads to its row
