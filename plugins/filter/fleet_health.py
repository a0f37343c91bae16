# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Controller-side helpers of the fleet playbooks.

``fleet_health`` turns what health.yml collected from each box into the report (one verdict
per box with its reasons, failing boxes first, a summary); the JSON file and the HTML page
are both rendered from its result.
"""

from __future__ import annotations

import datetime
import json

DOCUMENTATION = r"""
name: fleet_health
short_description: Build the fleet health report from what health.yml collected on each box
version_added: 1.0.0
author: onekvm.fleet maintainers
description:
  - Takes the inventory names of the boxes and, in the same order, what was collected on each (or nothing for a box
    that was never reached) and returns the report that C(onekvm.fleet.health) writes as C(fleet-health.json) and
    C(fleet-health.html).
  - "Each box gets a state: V(unreachable) (no connection), V(failing) (collecting failed, kvmd not active, the
    watchdog service not active or without a state, or the watchdog reporting V(failing), V(recovering) or
    V(needs_human)), V(warning) (the CH9329 or the USB listing did not answer) or V(ok); with the reasons as text."
  - Boxes are ordered by state (unreachable, failing, warning, ok), then by name.
options:
  _input:
    description: Inventory names of the boxes.
    type: list
    elements: str
    required: true
  boxes:
    description:
      - What was collected on each box (the C(fleet_health_box) fact of C(onekvm.fleet.health)), same order as O(_input).
      - A missing entry or V(null) stands for a box nothing was collected from.
    type: list
    elements: raw
    required: true
  generated_at:
    description: Time stamp of the report (ISO 8601).
    type: str
"""

EXAMPLES = r"""
- name: Build the report
  ansible.builtin.set_fact:
    report: "{{ hosts | onekvm.fleet.fleet_health(hosts | map('extract', hostvars) | map(attribute='fleet_health_box', default=none) | list) }}"
  vars:
    hosts: "{{ groups['onekvm'] }}"
"""

RETURN = r"""
_value:
  description: The report.
  type: dict
  contains:
    generated_at:
      description: Time stamp of the report.
      type: str
    summary:
      description: >-
        Counts: C(boxes), C(ok), C(warning), C(failing), C(unreachable), C(recoveries) (sum of the watchdogs' recovery
        counters), C(needs_human) (boxes whose watchdog gave up), and C(last_recovery) (the most recent recovery in the
        fleet: C(box), C(at), C(seconds)) or null.
      type: dict
    boxes:
      description: One entry per box, failing boxes first.
      type: list
      elements: dict
      contains:
        name:
          description: Inventory name.
          type: str
        state:
          description: V(unreachable), V(failing), V(warning) or V(ok).
          type: str
        problems:
          description: Why the box is failing or unreachable.
          type: list
          elements: str
        warnings:
          description: What did not answer without making the box fail.
          type: list
          elements: str
        flavour:
          description: What the box runs, V(kvmd) (PiKVM, One-KVM's kvmd-based branch) or V(onekvm2) (One-KVM 0.2, no kvmd).
          type: str
        service:
          description: The unit the box's state is judged on, kvmd's or V(one-kvm.service).
          type: str
        kvmd:
          description: The state of that unit (C(systemctl is-active)), null when unknown.
          type: str
        watchdog:
          description: >-
            The watchdog: C(service) (unit state), C(status), C(message), C(failing_since), C(reasons), C(last_failure),
            C(last_action), C(counters), C(last_recovery) (C(at), C(seconds)), C(checked_at); each null (or empty)
            when unknown. Null when the box has no watchdog (C(onekvm_watchdog_enabled=false)).
            C(history) is the recovery history, oldest first (at most 48 entries), from the bounded event ring in
            the watchdog's state - each with C(domain), C(event), C(kind) (V(failure), V(step), V(step-failed),
            V(skipped), V(held), V(gave-up), V(healed), V(cleared)), C(at), C(epoch), C(step), C(result),
            C(failing_for) (on V(healed) the time to heal, in seconds) and C(detail).
          type: dict
        usb:
          description: USB devices (C(port), C(id), C(product), C(nodes)), null when not listed.
          type: list
          elements: dict
        ch9329:
          description: The CH9329's C(version), C(usb_enumerated) and C(port), null when it did not answer.
          type: dict
        screen:
          description: >-
            The box's screen (C(onekvm.fleet.fleet_screen)): C(state) (V(live), V(no_signal), V(stopped) - the streamer
            not running, which is no warning - or V(error), a warning), C(thumbnail) (a small JPEG as a
            C(data:image/jpeg;base64,...) URI, the picture the page shows, or null), C(thumbnail_width),
            C(thumbnail_height), the frame's C(width), C(height) and C(bytes), C(elapsed), C(message) and C(error).
            Null when no screen was asked for.
          type: dict
        collected_at:
          description: When the box was asked.
          type: str
"""

STATE_ORDER = ("unreachable", "failing", "warning", "ok")
WATCHDOG_PASSING = ("ok",)


def fleet_health(hosts, boxes, generated_at=None):
    """The report: summary plus one entry per box, worst first."""
    boxes = list(boxes or [])
    entries = [box_entry(name, boxes[i] if i < len(boxes) else None) for i, name in enumerate(hosts or [])]
    entries.sort(key=lambda e: (STATE_ORDER.index(e["state"]), e["name"]))
    return {"generated_at": generated_at, "summary": summarize(entries), "boxes": entries}


def box_entry(name, box):
    """One box's row: its state and the reasons for it."""
    box = box if isinstance(box, dict) else {}
    flavour = box.get("flavour") or "kvmd"
    entry = {"name": str(name), "state": "ok", "problems": [], "warnings": [], "flavour": flavour,
             "service": box.get("service") or "kvmd", "kvmd": box.get("kvmd"),
             "watchdog": None, "usb": None, "ch9329": None, "screen": None, "collected_at": box.get("collected_at")}
    if not box:
        entry.update(state="unreachable", problems=["nothing was collected from this box (it failed before the health checks)"])
        return entry
    if not box.get("reachable"):
        entry.update(state="unreachable", problems=["not reachable: %s" % _one_line(box.get("error") or "no answer")])
        return entry
    if box.get("error"):
        entry["problems"].append("collecting failed: %s" % _one_line(box["error"]))
    if box.get("kvmd") != "active":
        entry["problems"].append("%s is %s" % (entry["service"], box.get("kvmd") or "unknown"))
    _add_watchdog(entry, box)
    _add_usb(entry, box)
    _add_ch9329(entry, box)
    _add_screen(entry, box)
    if entry["problems"]:
        entry["state"] = "failing"
    elif entry["warnings"]:
        entry["state"] = "warning"
    return entry


def _add_watchdog(entry, box):
    if not box.get("watchdog_enabled", True):
        return
    state = parse_json_object(box.get("watchdog_stdout"))
    unit = box.get("watchdog_unit")
    # every key present (null when unknown): the page and JSON readers need not guess
    watchdog = dict.fromkeys(("status", "message", "failing_since", "last_failure", "last_action", "last_recovery",
                              "checked_at"))
    watchdog.update(service=unit, reasons=[], counters={})
    entry["watchdog"] = watchdog
    if unit != "active":
        entry["problems"].append("the watchdog service is %s" % (unit or "unknown"))
    if box.get("watchdog_rc") not in (0, "0") or state is None or state.get("failed"):
        why = (state or {}).get("msg") or _one_line(box.get("watchdog_stderr") or "") or "no answer"
        entry["problems"].append("no watchdog state: %s" % why)
        return
    watchdog.update(_watchdog_view(state))
    if watchdog["status"] not in WATCHDOG_PASSING:
        entry["problems"].append("watchdog %s" % (watchdog["message"] or watchdog["status"]))


def _watchdog_view(state):
    failure = state.get("last_failure") if isinstance(state.get("last_failure"), dict) else {}
    counters = state.get("counters") if isinstance(state.get("counters"), dict) else {}
    return {
        "status": state.get("status") or "unknown",
        "message": state.get("message"),
        "failing_since": iso_time(state.get("failing_since")),
        "reasons": failure.get("reasons") or [],
        "last_failure": {"since": iso_time(failure.get("since")), "ended": iso_time(failure.get("ended")),
                         "outcome": failure.get("outcome")} if failure else None,
        "last_action": state.get("last_action"),
        "counters": counters,
        "last_recovery": _last_recovery(failure, counters),
        "checked_at": iso_time(state.get("checked_at")),
        "history": _history(state),
    }


HISTORY_EVENTS = {  # the watchdog's recovery history (_watchdog_ladder.HISTORY_EVENTS): event -> kind on the page
    "failure_detected": "failure", "action_done": "step", "action_failed": "step-failed", "action_skipped": "skipped",
    "rate_limited": "held", "needs_human": "gave-up", "ladder_retry": "held", "recovered": "healed",
    "glitch_cleared": "cleared", "cleared_unconfirmed": "cleared",
}
MAX_HISTORY = 48  # entries per box on the page and in the JSON (two domains of 24)


def _history(state):
    """The recent watchdog events of every domain, oldest first; each checked and cut (box output is untrusted)."""
    domains = state.get("domains") if isinstance(state.get("domains"), dict) else {}
    sources = [(str(name)[:40], d) for name, d in list(domains.items())[:8] if isinstance(d, dict)] or [(None, state)]
    history = []
    for domain, source in sources:
        events = source.get("recent_events") if isinstance(source.get("recent_events"), list) else []
        for item in events[-MAX_HISTORY:]:
            if not isinstance(item, dict) or item.get("event") not in HISTORY_EVENTS or not _is_number(item.get("at")):
                continue
            history.append({
                "domain": domain, "event": item["event"], "kind": HISTORY_EVENTS[item["event"]],
                "at": iso_time(item["at"]), "epoch": item["at"],
                "step": _short(item.get("step")), "result": _short(item.get("result")),
                "failing_for": item["failing_for"] if _is_number(item.get("failing_for")) else None,
                "detail": _short(item.get("detail")) or ("; ".join(_short(r) or "" for r in item["reasons"][:4])
                                                         if isinstance(item.get("reasons"), list) else None),
            })
    history.sort(key=lambda e: e["epoch"])
    return history[-MAX_HISTORY:]


def _short(value):
    return _one_line(value)[:160] if isinstance(value, str) else None


def _last_recovery(failure, counters):
    """The watchdog's last recovery: the end of the last episode it healed, and how long that took."""
    if failure.get("outcome") == "recovered" and _is_number(failure.get("ended")):
        return {"at": iso_time(failure["ended"]), "epoch": failure["ended"], "seconds": counters.get("last_recovery_seconds")}
    if counters.get("recoveries"):
        return {"at": None, "epoch": None, "seconds": counters.get("last_recovery_seconds")}
    return None


def _add_usb(entry, box):
    if box.get("usb_error"):
        entry["warnings"].append("USB devices not listed: %s" % _one_line(box["usb_error"]))
    devices = box.get("usb")
    if isinstance(devices, list):
        entry["usb"] = [{key: dev.get(key) for key in ("port", "id", "product", "nodes")} for dev in devices if isinstance(dev, dict)]


def _add_ch9329(entry, box):
    if box.get("ch9329_skipped"):
        return
    info = box.get("ch9329_info")
    if isinstance(info, dict):
        entry["ch9329"] = {"version": info.get("version"), "usb_enumerated": info.get("usb_enumerated"),
                           "port": box.get("ch9329_port")}
        if info.get("usb_enumerated") is False:
            entry["warnings"].append("the target machine has not enumerated the CH9329 (is it switched on?)")
        return
    entry["warnings"].append("CH9329 did not answer: %s" % _one_line(box.get("ch9329_error") or "no reply"))


SCREEN_STATES = ("live", "no_signal", "stopped", "error")
THUMBNAIL_PREFIX = "data:image/jpeg;base64,"
MAX_THUMBNAIL = 512 * 1024  # characters of one inline thumbnail (the fleet_screen filter makes some 5-20 kB)


def _add_screen(entry, box):
    """The box's screen (the fleet_screen filter's entry); a screen that could not be taken is a warning."""
    screen = box.get("screen")
    if not isinstance(screen, dict):
        return
    state = screen.get("state") if screen.get("state") in SCREEN_STATES else "error"
    thumbnail = screen.get("thumbnail")
    if not (isinstance(thumbnail, str) and thumbnail.startswith(THUMBNAIL_PREFIX) and len(thumbnail) <= MAX_THUMBNAIL
            and _BASE64.issuperset(thumbnail[len(THUMBNAIL_PREFIX):])):
        thumbnail = None
    entry["screen"] = {
        "state": state, "thumbnail": thumbnail,
        "message": _short(screen.get("message")), "error": _short(screen.get("error")),
        **{key: screen.get(key) if _is_number(screen.get(key)) else None
           for key in ("width", "height", "bytes", "elapsed", "thumbnail_width", "thumbnail_height")},
    }
    if state == "error":
        entry["warnings"].append("screen not taken: %s" % (entry["screen"]["error"] or "no picture"))


_BASE64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def summarize(entries):
    counts = {state: sum(1 for e in entries if e["state"] == state) for state in STATE_ORDER}
    watchdogs = [(e["name"], e["watchdog"]) for e in entries if e["watchdog"] and e["watchdog"]["status"]]
    recoveries = [(name, w["last_recovery"]) for name, w in watchdogs if w["last_recovery"] and w["last_recovery"]["epoch"]]
    latest = max(recoveries, key=lambda r: r[1]["epoch"]) if recoveries else None
    counts.update(
        boxes=len(entries),
        recoveries=sum(int(w["counters"].get("recoveries") or 0) for name, w in watchdogs),
        needs_human=sum(1 for name, w in watchdogs if w["status"] == "needs_human"),
        last_recovery={"box": latest[0], "at": latest[1]["at"], "seconds": latest[1]["seconds"]} if latest else None,
    )
    return counts


def parse_json_object(text):
    """The JSON object a box command printed, or None (empty, not JSON, not an object)."""
    if isinstance(text, dict):
        return text
    try:
        value = json.loads(text or "")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def iso_time(epoch):
    """Unix time -> ISO 8601 UTC string (None stays None)."""
    if not _is_number(epoch):
        return None
    return datetime.datetime.fromtimestamp(float(epoch), tz=datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _one_line(text):
    return " ".join(str(text).split())[:300]


class FilterModule:
    """Fleet report helpers."""

    def filters(self):
        return {
            "fleet_health": fleet_health,
        }
