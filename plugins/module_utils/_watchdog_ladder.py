# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The escalation ladder: a pure state machine (no I/O, no clock of its own).

PRIVATE to the onekvm.fleet collection. Box-side core: standard library only.
"""

from __future__ import annotations

import collections
import math

from ._watchdog_config import STEPS, Config, FAST_RECHECK
from ._watchdog_probes import OK, UNKNOWN, Health


STATUSES = ("ok", "failing", "recovering", "needs_human")
ACTED, FAILED, SKIPPED = "ok", "failed", "skipped"
HOUR = 3600.0
# The recovery history: the last HISTORY episode events of a domain (failure, each step and its
# outcome, the end with the time it took), kept in the state file rather than read back from the
# journal: the state is what `onekvm status --json` and the health playbook already read, it needs
# no journal access (One-KVM in Docker runs under supervisord, PiKVM's journal is volatile), and a
# bounded ring in /run cannot grow. A restart takes it over like the counters.
HISTORY = 24
HISTORY_EVENTS = ("failure_detected", "action_done", "action_failed", "action_skipped", "rate_limited",
                  "needs_human", "ladder_retry", "recovered", "glitch_cleared", "cleared_unconfirmed")
HISTORY_AGE = 7 * 24 * HOUR  # older entries in a restored file are dropped
HISTORY_TEXT = 160  # characters of a reason or a step's detail kept per entry


class Ladder:
    """Decides when to act and how hard, from verdicts and a monotonic ``now``.

    ``tick(now, health)`` returns ``(events, step)``: events to report and the step to run
    now (or None). After running it, call ``done(now, step, result, detail)`` with result
    ``ok`` (it ran: wait ``waits[step]`` for it to heal), ``failed`` (it ran and errored)
    or ``skipped`` (nothing to act on): the last two go on to the next step at the next tick.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.status = "ok"
        self.failure_since = None  # monotonic start of the current failure episode
        self.next_step = 0  # index into config.ladder
        self.act_after = None  # no step before this time (grace, a step's wait, backoff)
        self.deferred_until = float("-inf")  # another domain's step disturbed this one: no step before this
        self.backoff = config.backoff
        self.action_times = collections.deque()  # for max_actions_per_hour
        self.rate_limited = False
        self.last_failure = None  # dict, kept after recovery
        self.last_action = None  # dict
        self.counters = {"checks": 0, "failures": 0, "recoveries": 0, "cleared": 0, "needs_human": 0,
                         "rate_limited": 0, "actions": {}, "last_recovery_seconds": None}
        self.history = collections.deque(maxlen=HISTORY)  # (monotonic time, entry) of the recent episodes

    # -- the decision ---------------------------------------------------------------
    def tick(self, now: float, health: Health) -> tuple:
        events, step = self._tick(now, health)
        self._remember(now, events)
        return events, step

    def _remember(self, now: float, events: list) -> None:
        for event in events:
            if event["event"] in HISTORY_EVENTS:
                self.history.append((now, history_entry(event)))

    def _tick(self, now: float, health: Health) -> tuple:
        self.counters["checks"] += 1
        if health.verdict == OK:
            return ([self._end_episode(now, "recovered")] if self.status != "ok" else []), None
        if health.verdict == UNKNOWN:
            return self._tick_unknown(now), None
        events = []
        if self.status == "ok":
            events.append(self._start_episode(now, health))
        self.last_failure["reasons"] = health.failures
        if now < self.act_after:
            return events, None
        if self.next_step >= len(self.config.ladder) and not self._retry_ladder(now, events):
            return events, None
        if self._limited(now, events):
            return events, None
        step = self.config.ladder[self.next_step]
        self.next_step += 1
        self.status = "recovering"
        events.append({"event": "action_started", "step": step, "attempt": self.next_step,
                       "failing_for": round(now - self.failure_since, 3)})
        return events, step

    def done(self, now: float, step: str, result: str, detail: object = None) -> list:
        """Record a step's outcome and schedule what comes next."""
        counts = self.counters["actions"].setdefault(step, {ACTED: 0, FAILED: 0, SKIPPED: 0})
        counts[result] = counts.get(result, 0) + 1
        if result != SKIPPED:  # a skipped step touched nothing: it does not use up the hourly budget
            self.action_times.append(now)
        wait = self.config.waits[step] if result == ACTED else 0.0
        self.act_after = now + wait
        self.last_action = {"step": step, "result": result, "detail": detail, "at": now}
        events = [{"event": "action_" + ("done" if result == ACTED else result), "step": step, "result": result,
                   "detail": detail, "wait": wait}]
        self._remember(now, events)
        return events

    def defer(self, until: float) -> None:
        """Another domain's step disturbed this domain's device: a failure until ``until`` is
        expected (the device is coming back), so no step of this ladder before then."""
        self.deferred_until = max(self.deferred_until, until)
        if self.status != "ok":
            self.act_after = max(self.act_after, until)

    def due_in(self, now: float) -> float:
        """Seconds until the ladder wants a check, if sooner than the interval (else inf).

        A pending step is checked for exactly when it becomes due (end of the grace period,
        of a wait, of the rate limit), and while a step's wait runs every FAST_RECHECK
        seconds, so neither an action nor a recovery waits for the next regular check.
        """
        due = FAST_RECHECK if self.status == "recovering" else float("inf")
        if self.act_after is not None and now < self.act_after:
            due = min(due, self.act_after - now)
        return due

    # -- episodes -------------------------------------------------------------------
    def _start_episode(self, now: float, health: Health) -> dict:
        self.status = "failing"
        self.failure_since = now
        self.next_step = 0
        self.act_after = max(now + self.config.grace, self.deferred_until)
        self.rate_limited = False
        self.counters["failures"] += 1
        self.last_failure = {"since": now, "reasons": health.failures, "ended": None, "outcome": None}
        return {"event": "failure_detected", "reasons": health.failures, "grace": self.config.grace}

    def _end_episode(self, now: float, outcome: str) -> dict:
        acted = self.next_step > 0
        took = now - self.failure_since
        event = {"event": outcome, "failing_for": round(took, 3), "steps_tried": self.config.ladder[:self.next_step]}
        if outcome == "recovered" and acted:
            self.counters["recoveries"] += 1
            self.counters["last_recovery_seconds"] = round(took, 3)
            self.backoff = self.config.backoff
        elif outcome == "recovered":
            outcome = event["event"] = "glitch_cleared"  # healed by itself within the grace period
            self.counters["cleared"] += 1
        else:
            self.counters["cleared"] += 1
        self.last_failure.update(ended=now, outcome=outcome)
        self.status = "ok"
        self.failure_since = None
        self.next_step = 0
        self.act_after = None
        return event

    def _tick_unknown(self, now: float) -> list:
        # No evidence either way (e.g. kvmd stopped ustreamer). Hold while a wait runs;
        # once it is over with still nothing failing, the failure is considered cleared.
        if self.status == "ok" or now < self.act_after:
            return []
        return [self._end_episode(now, "cleared_unconfirmed")]

    def _retry_ladder(self, now: float, events: list) -> bool:
        """The ladder ran out: report once, then retry from the bottom after the backoff."""
        if self.status != "needs_human":
            self.status = "needs_human"
            self.counters["needs_human"] += 1
            retry = self.backoff if self.config.backoff > 0 else None
            self.act_after = now + retry if retry is not None else float("inf")
            self.backoff = min(self.backoff * 2, self.config.backoff_max)
            events.append({"event": "needs_human", "reasons": self.last_failure["reasons"],
                           "steps_tried": list(self.config.ladder), "retry_in": retry})
            return False
        self.next_step = 0
        events.append({"event": "ladder_retry", "failing_for": round(now - self.failure_since, 3)})
        return True

    def _limited(self, now: float, events: list) -> bool:
        while self.action_times and self.action_times[0] <= now - HOUR:
            self.action_times.popleft()
        if len(self.action_times) < self.config.max_actions_per_hour:
            self.rate_limited = False
            return False
        self.act_after = self.action_times[0] + HOUR
        if not self.rate_limited:
            self.rate_limited = True
            self.counters["rate_limited"] += 1
            events.append({"event": "rate_limited", "max_actions_per_hour": self.config.max_actions_per_hour,
                           "next_action_in": round(self.act_after - now, 3)})
        return True

    # -- persistence across restarts (the rate limit must survive a crash loop) ----------
    def snapshot(self, now: float, wall: float) -> dict:
        def to_wall(t):
            return None if t is None else round(wall - (now - t), 3)

        failure = dict(self.last_failure) if self.last_failure else None
        if failure:
            failure.update(since=to_wall(failure["since"]), ended=to_wall(failure["ended"]))
        action = dict(self.last_action) if self.last_action else None
        if action:
            action["at"] = to_wall(action["at"])
        return {
            "status": self.status,
            "failing_since": to_wall(self.failure_since),
            "next_step": self.config.ladder[self.next_step] if self.status != "ok" and self.next_step < len(
                self.config.ladder) else None,
            "next_action_at": to_wall(self.act_after) if self.act_after not in (None, float("inf")) else None,
            "rate_limited": self.rate_limited,
            "last_failure": failure,
            "last_action": action,
            "counters": self.counters,
            "recent_actions": [to_wall(t) for t in self.action_times],
            "backoff": self.backoff,
            "recent_events": [dict(entry, at=to_wall(t)) for t, entry in self.history],
        }

    def restore(self, saved: dict, now: float, wall: float) -> None:
        """Take over counters, the hourly action history and the backoff of an earlier run.

        ``saved`` comes from a file in /run: every field is checked, anything else is ignored.
        """
        if not isinstance(saved, dict):
            return

        def to_mono(t):
            return now - (wall - t)

        counters = saved.get("counters") if isinstance(saved.get("counters"), dict) else {}
        for key, value in counters.items():
            if key != "actions" and _is_number(value) and key in self.counters:
                self.counters[key] = value
        actions = counters.get("actions") if isinstance(counters.get("actions"), dict) else {}
        for step, results in actions.items():
            if step in STEPS and isinstance(results, dict):
                self.counters["actions"][step] = {r: int(results[r]) if _is_number(results.get(r)) else 0
                                                  for r in (ACTED, FAILED, SKIPPED)}
        recent = saved.get("recent_actions") if isinstance(saved.get("recent_actions"), list) else []
        times = [t for t in recent if _is_number(t) and t > 0 and 0 <= wall - t < HOUR]
        self.action_times = collections.deque(sorted(to_mono(t) for t in times))
        if _is_number(saved.get("backoff")):
            self.backoff = min(max(saved["backoff"], self.config.backoff), self.config.backoff_max)
        self.history.clear()
        for entry in checked_history(saved.get("recent_events"), wall):
            self.history.append((to_mono(entry.pop("at")), entry))


def _short(value):
    return value[:HISTORY_TEXT] if isinstance(value, str) else None


def history_entry(event: dict) -> dict:
    """What the recovery history keeps of a ladder event: its kind, step, result, time taken, reasons."""
    entry = {"event": event["event"]}
    if event.get("step") in STEPS:
        entry["step"] = event["step"]
    if event.get("result") in (ACTED, FAILED, SKIPPED):
        entry["result"] = event["result"]
    if _is_number(event.get("failing_for")):
        entry["failing_for"] = round(float(event["failing_for"]), 3)
    detail = _short(event.get("detail"))
    if detail and event.get("result") != ACTED:
        entry["detail"] = detail
    reasons = event.get("reasons")
    if isinstance(reasons, list):
        entry["reasons"] = [_short(r) for r in reasons[:4] if isinstance(r, str)]
    return entry


def checked_history(raw, wall: float) -> list:
    """The valid entries of a saved ``recent_events`` (a file in /run: anything may be there), oldest first,
    at most HISTORY, none from the future or older than HISTORY_AGE; each rebuilt from known fields only."""
    entries = []
    for item in raw[-HISTORY:] if isinstance(raw, list) else []:
        if not isinstance(item, dict) or item.get("event") not in HISTORY_EVENTS:
            continue
        at = item.get("at")
        if not _is_number(at) or not 0 <= wall - at <= HISTORY_AGE:
            continue
        entry = history_entry(item)
        entry["at"] = round(float(at), 3)
        entries.append(entry)
    entries.sort(key=lambda e: e["at"])
    return entries


def _is_number(value) -> bool:
    """A finite, non-negative JSON number (the state file may hold anything: NaN, -1, 1e999)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
