# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The watchdog's reports: journal lines, the state file and the Prometheus textfile.

PRIVATE to the onekvm.fleet collection. Box-side core: standard library only.
"""

from __future__ import annotations

import json
import os
import stat
import sys

from ._errors import InvalidArgument, NotFound, PermissionDenied
from ._files import write_new_then_rename
from ._watchdog_config import DEFAULT_STATE_FILE, Config
from ._watchdog_ladder import ACTED, FAILED, SKIPPED, STATUSES


def write_atomically(path: str, text: str, mode: int = 0o644) -> None:
    """Replace ``path`` so readers see the old or the new content, never half of it."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    write_new_then_rename(directory, path, text, mode)


def render_metrics(state: dict, config: Config) -> str:
    """node_exporter textfile format (one HELP/TYPE per metric family), labelled by domain.

    A state without ``domains`` (one domain, as the ladder tests build it) counts as capture's.
    """
    domains = state.get("domains") or {"capture": state}
    lines = []

    def family(name, kind, text, sample):
        lines.append("# HELP onekvm_watchdog_%s %s" % (name, text))
        lines.append("# TYPE onekvm_watchdog_%s %s" % (name, kind))
        for domain, snapshot in domains.items():
            for labels, value in sample(snapshot):
                label_text = ",".join('%s="%s"' % kv for kv in (("domain", domain),) + tuple(labels))
                lines.append("onekvm_watchdog_%s{%s} %s" % (name, label_text, _num(value)))

    def counter(key):
        return lambda d: [((), d["counters"][key])]

    family("up", "gauge", "1 while the domain is healthy or idle, 0 while a failure lasts",
           lambda d: [((), 1 if d["status"] == "ok" else 0)])
    family("status", "gauge", "the domain's current status (1 for the active one)",
           lambda d: [((("status", s),), 1 if d["status"] == s else 0) for s in STATUSES])
    family("needs_human", "gauge", "1 when every step of the domain's ladder failed to heal it",
           lambda d: [((), 1 if d["status"] == "needs_human" else 0)])
    family("checks_total", "counter", "health checks run", counter("checks"))
    family("failures_total", "counter", "failure episodes detected", counter("failures"))
    family("recoveries_total", "counter", "failure episodes healed by an action", counter("recoveries"))
    family("rate_limited_total", "counter", "times the hourly action budget stopped the ladder",
           counter("rate_limited"))

    def steps(d):
        ladder = (config.domains.get(_name_of(domains, d)) or config).ladder
        return list(dict.fromkeys(list(ladder) + sorted(d["counters"]["actions"])))

    family("resets_total", "counter", "ladder steps that ran successfully, by method",
           lambda d: [((("method", s),), d["counters"]["actions"].get(s, {}).get(ACTED, 0)) for s in steps(d)])
    family("actions_total", "counter", "ladder steps attempted, by step and result",
           lambda d: [((("step", s), ("result", r)), d["counters"]["actions"].get(s, {}).get(r, 0))
                      for s in steps(d) for r in (ACTED, FAILED, SKIPPED)])
    family("last_recovery_seconds", "gauge", "time from failure detection to recovery, last episode",
           lambda d: [((), d["counters"]["last_recovery_seconds"])] if d["counters"]["last_recovery_seconds"]
           is not None else [])
    for name, text, value in (
            ("last_check_timestamp_seconds",
             "when the check these figures come from ran (unix time; rewritten on change, else every minute)",
             state["checked_at"]),
            ("check_duration_seconds", "how long the last check took", state["check_duration"])):
        lines.append("# HELP onekvm_watchdog_%s %s" % (name, text))
        lines.append("# TYPE onekvm_watchdog_%s gauge" % name)
        lines.append("onekvm_watchdog_%s %s" % (name, _num(value)))
    return "\n".join(lines) + "\n"


def _name_of(domains: dict, snapshot: dict) -> str:
    return next(name for name, d in domains.items() if d is snapshot)


def _num(value) -> str:
    if isinstance(value, float):
        return repr(round(value, 6))
    return str(int(value))


WARNING_EVENTS = ("failure_detected", "needs_human", "rate_limited", "action_failed", "report_failed", "state_ignored")


class Reporter:
    """Journal lines on stdout, the state file and the metrics file; never raises on I/O."""

    def __init__(self, config: Config, out=None) -> None:
        self.config = config
        self.out = out or sys.stdout
        self.broken = set()  # files whose write failed: said once, not every interval

    def event(self, wall: float, event: dict) -> None:
        line = dict(event)
        line.setdefault("level", "warning" if line["event"] in WARNING_EVENTS else "info")
        line["ts"] = round(wall, 3)
        self.out.write(json.dumps(line, sort_keys=True, default=str) + "\n")
        self.out.flush()

    def files(self, wall: float, state: dict) -> None:
        self._write(wall, self.config.state_file, json.dumps(state, indent=2, sort_keys=True, default=str) + "\n")
        if self.config.metrics_file:
            self._write(wall, self.config.metrics_file, render_metrics(state, self.config))

    def _write(self, wall: float, path: str, text: str) -> None:
        try:
            write_atomically(path, text)
        except OSError as exc:
            if path not in self.broken:
                self.broken.add(path)
                self.event(wall, {"event": "report_failed", "path": path, "error": exc.strerror or str(exc)})
        else:
            self.broken.discard(path)


MAX_STATE_BYTES = 1024 * 1024  # the service writes a few kB; anything bigger is not its file


def read_state(path: str = DEFAULT_STATE_FILE) -> dict:
    """The state file the service writes (for ``onekvm status`` and the service's restart).

    /run outlives the service and other root processes can write there, so the file is
    read as untrusted: a regular file only (never a FIFO or /dev/zero), at most
    MAX_STATE_BYTES, and it must hold a JSON object.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise NotFound("no watchdog state in %s: is onekvm-watchdog.service running? (systemctl status onekvm-watchdog)"
                       % path, path=path) from None
    except PermissionError:
        raise PermissionDenied("cannot read %s: permission denied" % path, path=path) from None
    except OSError as exc:
        raise InvalidArgument("cannot read the watchdog state %s: %s" % (path, exc.strerror or exc), path=path) from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise InvalidArgument("the watchdog state %s is not a regular file; remove it (the watchdog rewrites it "
                                  "at its next check)" % path, path=path)
        try:
            raw = f.read(MAX_STATE_BYTES + 1)
        except OSError as exc:
            raise InvalidArgument("cannot read the watchdog state %s: %s" % (path, exc.strerror or exc),
                                  path=path) from None
    if len(raw) > MAX_STATE_BYTES:
        raise InvalidArgument("the watchdog state %s is larger than %d bytes, so the watchdog did not write it; "
                              "remove it" % (path, MAX_STATE_BYTES), path=path)
    try:
        state = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        detail = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise InvalidArgument("the watchdog state %s is not valid JSON (%s); remove it" % (path, detail),
                              path=path) from None
    if not isinstance(state, dict):
        raise InvalidArgument("the watchdog state %s holds a JSON %s, not the object the watchdog writes; remove it"
                              % (path, _json_kind(state)), path=path)
    return state


def _json_kind(value) -> str:
    if value is None:
        return "null"
    return {list: "array", str: "string", bool: "boolean"}.get(type(value), "number")
