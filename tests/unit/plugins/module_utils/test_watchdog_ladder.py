# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The escalation ladder as a pure state machine: verdicts and a clock in, decisions out."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.onekvm.fleet.plugins.module_utils._watchdog_config import parse_config
from ansible_collections.onekvm.fleet.plugins.module_utils._watchdog_ladder import Ladder
from ansible_collections.onekvm.fleet.plugins.module_utils._watchdog_probes import FAILING, OK, UNKNOWN, Health

BAD = Health(FAILING, ["ustreamer: offline"], {})
GOOD = Health(OK, [], {})
IDLE = Health(UNKNOWN, [], {})


def make(**overrides):
    waits = {"restart_streamer": 5, "ioctl": 5, "authorize": 5, "power_cycle": 5}
    raw = {"dongle": {"id": "534d:2109"}, "grace": 10, "waits": waits,
           "ladder": ["restart_streamer", "ioctl", "authorize"], "max_actions_per_hour": 100, "backoff": 0}
    raw.update(overrides)
    return Ladder(parse_config(raw))


def names(events):
    return [e["event"] for e in events]


def test_failure_waits_for_the_grace_period():
    ladder = make()
    events, step = ladder.tick(0, BAD)
    assert names(events) == ["failure_detected"] and step is None
    assert ladder.tick(9.9, BAD) == ([], None)
    events, step = ladder.tick(10, BAD)
    assert step == "restart_streamer"
    assert names(events) == ["action_started"]
    assert ladder.status == "recovering"


def test_glitch_inside_grace_period_does_nothing():
    ladder = make()
    ladder.tick(0, BAD)
    events, step = ladder.tick(3, GOOD)
    assert names(events) == ["glitch_cleared"] and step is None
    assert ladder.status == "ok"
    assert ladder.counters["recoveries"] == 0 and ladder.counters["cleared"] == 1


def test_each_step_only_after_the_previous_wait():
    ladder = make()
    ladder.tick(0, BAD)
    assert ladder.tick(10, BAD)[1] == "restart_streamer"
    ladder.done(11, "restart_streamer", "ok")
    assert ladder.tick(15.9, BAD)[1] is None  # restart_streamer's wait (5 s) runs until 16
    assert ladder.tick(16, BAD)[1] == "ioctl"
    ladder.done(16.5, "ioctl", "ok")
    assert ladder.tick(21.5, BAD)[1] == "authorize"


def test_recovery_counts_and_measures():
    ladder = make()
    ladder.tick(0, BAD)
    ladder.tick(10, BAD)
    ladder.done(10.5, "restart_streamer", "ok")
    events, step = ladder.tick(13, GOOD)
    assert names(events) == ["recovered"] and step is None
    assert events[0]["steps_tried"] == ["restart_streamer"]
    assert ladder.counters["recoveries"] == 1
    assert ladder.counters["last_recovery_seconds"] == 13
    assert ladder.counters["actions"]["restart_streamer"]["ok"] == 1


def test_skipped_or_failed_step_goes_on_at_the_next_tick():
    ladder = make()
    ladder.tick(0, BAD)
    ladder.tick(10, BAD)
    events = ladder.done(10, "restart_streamer", "skipped", "no streamer process")
    assert names(events) == ["action_skipped"]
    assert ladder.tick(11, BAD)[1] == "ioctl"
    ladder.done(11, "ioctl", "failed", "EPROTO")
    assert ladder.tick(12, BAD)[1] == "authorize"
    assert len(ladder.action_times) == 1  # skipped steps touched nothing: not counted


def test_ladder_ends_in_needs_human_once_and_stays_quiet():
    ladder = make()
    now = 0
    ladder.tick(now, BAD)
    steps = []
    for now in range(10, 100):
        events, step = ladder.tick(now, BAD)
        if step:
            steps.append(step)
            ladder.done(now, step, "ok")
        if "needs_human" in names(events):
            break
    assert steps == ["restart_streamer", "ioctl", "authorize"]
    assert ladder.status == "needs_human"
    assert ladder.counters["needs_human"] == 1
    for later in range(now + 1, now + 5000, 7):  # backoff 0: never again by itself
        assert ladder.tick(later, BAD) == ([], None)


def test_needs_human_retries_after_doubling_backoff():
    ladder = make(ladder=["ioctl"], backoff=100, backoff_max=250)
    ladder.tick(0, BAD)
    ladder.tick(10, BAD)
    ladder.done(10, "ioctl", "ok")
    events, dummy = ladder.tick(15, BAD)
    assert names(events) == ["needs_human"] and events[0]["retry_in"] == 100
    assert ladder.tick(114, BAD)[1] is None
    events, step = ladder.tick(115, BAD)
    assert names(events) == ["ladder_retry", "action_started"] and step == "ioctl"
    ladder.done(115, "ioctl", "ok")
    events, dummy = ladder.tick(120, BAD)
    assert events[0]["retry_in"] == 200  # doubled
    ladder.tick(320, BAD)
    ladder.done(320, "ioctl", "ok")
    assert ladder.tick(325, BAD)[0][0]["retry_in"] == 250  # capped at backoff_max


def test_recovery_resets_the_backoff():
    ladder = make(ladder=["ioctl"], backoff=100, backoff_max=1000)
    ladder.tick(0, BAD)
    ladder.tick(10, BAD)
    ladder.done(10, "ioctl", "ok")
    ladder.tick(15, BAD)
    assert ladder.backoff == 200
    ladder.tick(50, GOOD)
    assert ladder.backoff == 100


def test_rate_limit_holds_across_episodes():
    ladder = make(ladder=["ioctl"], max_actions_per_hour=2, grace=0)
    for start in (0, 100):  # two episodes, each healed by one reset
        ladder.tick(start, BAD)
        ladder.done(start, "ioctl", "ok")
        ladder.tick(start + 1, GOOD)
    events, step = ladder.tick(200, BAD)
    assert step is None
    assert names(events) == ["failure_detected", "rate_limited"]
    assert events[1]["next_action_in"] == 3400  # the first reset leaves the window at 3600
    assert ladder.tick(3599, BAD) == ([], None)  # reported once, not every check
    assert ladder.tick(3600, BAD)[1] == "ioctl"
    assert ladder.counters["rate_limited"] == 1


def test_unknown_holds_during_a_wait_then_clears():
    ladder = make()
    ladder.tick(0, BAD)
    ladder.tick(10, BAD)
    ladder.done(10, "restart_streamer", "ok")
    assert ladder.tick(12, IDLE) == ([], None)  # streamer restarting: not a recovery yet
    assert ladder.status == "recovering"
    events, dummy = ladder.tick(15, IDLE)
    assert names(events) == ["cleared_unconfirmed"]
    assert ladder.status == "ok" and ladder.counters["recoveries"] == 0


def test_unknown_while_healthy_changes_nothing():
    ladder = make()
    assert ladder.tick(0, IDLE) == ([], None)
    assert ladder.status == "ok" and ladder.counters["failures"] == 0


def test_snapshot_and_restore_keep_counters_and_hourly_history():
    ladder = make(ladder=["ioctl"], max_actions_per_hour=1, grace=0)
    ladder.tick(1000, BAD)
    ladder.done(1000, "ioctl", "ok")
    saved = ladder.snapshot(now=1010, wall=50010)
    assert saved["recent_actions"] == [50000]
    assert saved["last_action"]["at"] == 50000
    restarted = make(ladder=["ioctl"], max_actions_per_hour=1, grace=0)
    restarted.restore(saved, now=7, wall=50020)  # a new process: its monotonic clock starts anew
    assert restarted.counters["actions"]["ioctl"]["ok"] == 1
    events, step = restarted.tick(8, BAD)
    assert step is None and "rate_limited" in names(events)  # a crash loop cannot reset the budget
    assert restarted.tick(7 + 3580, BAD)[1] == "ioctl"


def test_restore_ignores_garbage():
    ladder = make()
    ladder.restore({"counters": "x", "recent_actions": ["a", None, -5, True, 500], "backoff": "slow"}, now=0, wall=100)
    assert ladder.counters["checks"] == 0 and not ladder.action_times


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([OK, FAILING, UNKNOWN]), st.floats(0.1, 400),
                          st.sampled_from(["ok", "failed", "skipped"])), max_size=80))
def test_properties_hold_for_any_sequence(script):
    """Whatever happens: no action within grace, never more than the hourly budget, no action while healthy."""
    ladder = make(max_actions_per_hour=4, grace=10, backoff=60, backoff_max=300)
    now = 0.0
    episode_start = None
    acted_at = []
    for verdict, gap, result in script:
        now += gap
        events, step = ladder.tick(now, Health(verdict, ["x"] if verdict == FAILING else [], {}))
        if "failure_detected" in names(events):
            episode_start = now
        if step:
            assert verdict == FAILING
            assert now - episode_start >= 10
            ladder.done(now, step, result)
            if result != "skipped":
                acted_at.append(now)
            assert len([t for t in acted_at if t > now - 3600]) <= 4
        assert ladder.status in ("ok", "failing", "recovering", "needs_human")
        if verdict == OK:
            assert ladder.status == "ok"


def test_due_in_brings_checks_forward_only_while_handling_a_failure():
    ladder = make()
    assert ladder.due_in(0) == float("inf")  # healthy: the regular interval
    ladder.tick(0, BAD)
    assert ladder.due_in(3) == 7  # the grace period ends at 10: check exactly then
    ladder.tick(10, BAD)
    ladder.done(10.5, "restart_streamer", "ok")
    assert ladder.due_in(11) == 1.0  # a step's wait runs: re-check every second
    assert ladder.due_in(15.25) == 0.25  # ... and exactly when the next step is due
    ladder.tick(16, GOOD)
    assert ladder.due_in(16) == float("inf")


def test_due_in_never_asks_for_a_busy_loop():
    ladder = make(max_actions_per_hour=1, ladder=["ioctl"])
    ladder.tick(0, BAD)
    ladder.tick(10, BAD)
    ladder.done(10, "ioctl", "failed")  # no wait: the ladder ran out
    ladder.tick(10, BAD)
    assert ladder.status == "needs_human" and ladder.due_in(10) == float("inf")
