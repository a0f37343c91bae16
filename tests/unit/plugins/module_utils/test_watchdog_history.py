# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The watchdog's recovery history: a bounded ring of episode events in the state file, taken over
by a restart, read back as hostile input."""

from __future__ import annotations

import json
import math

import pytest

from ansible_collections.onekvm.fleet.plugins.module_utils._watchdog_config import parse_config
from ansible_collections.onekvm.fleet.plugins.module_utils._watchdog_ladder import HISTORY, HISTORY_AGE, Ladder
from ansible_collections.onekvm.fleet.plugins.module_utils._watchdog_probes import FAILING, OK, Health

BAD = Health(FAILING, ["ustreamer: offline"], {})
GOOD = Health(OK, [], {})


def make():
    raw = {"dongle": {"id": "534d:2109"}, "grace": 2, "ladder": ["restart_streamer", "ioctl"],
           "waits": {"restart_streamer": 5, "ioctl": 5}, "max_actions_per_hour": 100, "backoff": 0}
    return Ladder(parse_config(raw))


def episode(ladder, start):
    """A failure that the second step heals: detected, restart_streamer fails, ioctl heals it."""
    ladder.tick(start, BAD)
    assert ladder.tick(start + 2, BAD)[1] == "restart_streamer"
    ladder.done(start + 2.5, "restart_streamer", "failed", "kvmd/streamer: no such process")
    assert ladder.tick(start + 3, BAD)[1] == "ioctl"
    ladder.done(start + 3.4, "ioctl", "ok", {"device": "1-1.2"})
    ladder.tick(start + 4, GOOD)


def test_an_episode_is_kept_step_by_step_with_the_time_to_heal():
    ladder = make()
    episode(ladder, 100)
    events = ladder.snapshot(now=110, wall=10110)["recent_events"]
    assert [(e["event"], e.get("step"), e["at"]) for e in events] == [
        ("failure_detected", None, 10100), ("action_failed", "restart_streamer", 10102.5),
        ("action_done", "ioctl", 10103.4), ("recovered", None, 10104)]
    assert events[0]["reasons"] == ["ustreamer: offline"]
    assert events[1]["detail"] == "kvmd/streamer: no such process"
    assert events[3]["failing_for"] == 4.0


def test_the_ring_is_bounded():
    ladder = make()
    for n in range(20):
        episode(ladder, 1000 * n)
    events = ladder.snapshot(now=20000, wall=20000)["recent_events"]
    assert len(events) == HISTORY and events[-1]["event"] == "recovered"
    assert len(json.dumps(events)) < 8 * 1024


def test_a_restart_takes_the_history_over():
    ladder = make()
    episode(ladder, 100)
    saved = json.loads(json.dumps(ladder.snapshot(now=110, wall=10110)))
    restarted = make()
    restarted.restore(saved, now=3, wall=10200)
    again = restarted.snapshot(now=3, wall=10200)["recent_events"]
    assert again == saved["recent_events"]


@pytest.mark.parametrize("garbage", [
    "x", None, 5, {"a": 1}, [None, 1, "a", [], {}],
    [{"event": "rm -rf", "at": 10000}],  # not an event kind of the ladder
    [{"event": "recovered", "at": math.inf}, {"event": "recovered", "at": -1}, {"event": "recovered", "at": True}],
    [{"event": "recovered", "at": 20000}],  # from the future
    [{"event": "recovered", "at": 10200 - HISTORY_AGE - 1}],  # too old
])
def test_hostile_history_is_dropped(garbage):
    ladder = make()
    ladder.restore({"recent_events": garbage}, now=0, wall=10200)
    assert ladder.snapshot(now=0, wall=10200)["recent_events"] == []


def test_hostile_entries_are_rebuilt_from_known_fields_and_bounded():
    ladder = make()
    entry = {"event": "action_failed", "at": 10000, "step": "format_disk", "result": "owned", "detail": "x" * 10000,
             "reasons": ["y" * 10000] * 50 + [{"z": 1}], "failing_for": -3, "extra": "<script>"}
    ladder.restore({"recent_events": [entry] * 10000}, now=0, wall=10200)
    events = ladder.snapshot(now=0, wall=10200)["recent_events"]
    assert len(events) == HISTORY
    assert set(events[0]) == {"event", "at", "detail", "reasons"}
    assert len(events[0]["detail"]) <= 160 and len(events[0]["reasons"]) <= 4 and len(events[0]["reasons"][0]) <= 160


# ---- the health report shows it -----------------------------------------------------------
def box_with_history():
    from ansible_collections.onekvm.fleet.tests.unit.plugins.filter.test_fleet_health import collected, watchdog_state

    ladder = make()
    episode(ladder, 100)
    capture = ladder.snapshot(now=110, wall=1764630110)
    state = watchdog_state(domains={"capture": capture, "hid": {"status": "ok", "recent_events": [
        {"event": "glitch_cleared", "at": 1764630000, "failing_for": 0.4}]}})
    return collected("kvm1", state)


def test_the_report_carries_each_domains_events_oldest_first():
    from ansible_collections.onekvm.fleet.plugins.filter.fleet_health import fleet_health

    history = fleet_health(["kvm1"], [box_with_history()])["boxes"][0]["watchdog"]["history"]
    assert [(e["domain"], e["event"], e["kind"]) for e in history] == [
        ("hid", "glitch_cleared", "cleared"), ("capture", "failure_detected", "failure"),
        ("capture", "action_failed", "step-failed"), ("capture", "action_done", "step"),
        ("capture", "recovered", "healed")]
    assert history[1]["at"] == "2025-12-01T23:01:40Z" and history[1]["detail"] == "ustreamer: offline"
    assert history[-1]["failing_for"] == 4.0 and history[2]["step"] == "restart_streamer"


def test_the_report_bounds_and_checks_what_a_box_sent():
    from ansible_collections.onekvm.fleet.plugins.filter.fleet_health import fleet_health
    from ansible_collections.onekvm.fleet.tests.unit.plugins.filter.test_fleet_health import collected, watchdog_state

    junk = [{"event": "recovered", "at": 1764630000 + n, "step": "<b>" * 500, "failing_for": "soon"} for n in range(5000)]
    junk += [{"event": "evil", "at": 1}, {"event": "recovered", "at": "now"}, "x", None]
    state = watchdog_state(recent_events=junk)
    history = fleet_health(["kvm1"], [collected("kvm1", state)])["boxes"][0]["watchdog"]["history"]
    assert 0 < len(history) <= 48 and all(e["event"] == "recovered" for e in history)  # only the last 48 are read
    assert len(history[0]["step"]) <= 160 and history[0]["failing_for"] is None and history[0]["domain"] is None
