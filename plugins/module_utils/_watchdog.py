# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The capture watchdog: health probes, the escalation ladder, reports and the service loop.

PRIVATE to the onekvm.fleet collection. Box-side core: standard library only (pyusb and
pyserial are reached through ``_usb`` / ``_ch9329``, imported when first needed).

Parts, each usable alone:

- ``load_config`` / ``parse_config``: the JSON config the role renders, fully validated.
- ``check_health``: runs the probes (dongle on USB, video node, ustreamer /state, optional
  CH9329) and folds them into one verdict: ``ok``, ``failing`` or ``unknown`` (no evidence
  either way, e.g. kvmd stopped ustreamer because nobody watches).
- ``Ladder``: the pure state machine. Fed a verdict and a monotonic time it answers which
  step to run, if any; told the step's result it schedules the next one. Grace period,
  per-step waits, max actions per hour and backoff live here and nowhere else.
- ``Actions``: the ladder's steps on real hardware (streamer restart, USB resets, CH9329).
- ``Reporter``: journal lines (JSON on stdout), the state file and the Prometheus textfile.
- ``Service``: the loop that ties them together and talks to systemd (notify + watchdog).
"""

from __future__ import annotations

import os
import time

from ._errors import InvalidArgument, MissingDependency, NotFound, OnekvmError
from ._watchdog_actions import Actions, find_processes, is_watchdog_process, process_alive, process_start
from ._watchdog_config import (
    DEFAULT_CONFIG_PATH, DEFAULT_STATE_FILE, FILES_HEARTBEAT, Config, load_config, parse_config)
from ._watchdog_ladder import ACTED, FAILED, SKIPPED, Ladder
from ._watchdog_probes import (
    OK, DongleFinder, check_health, default_probes, probe_dongle, probe_hid, probe_ustreamer, probe_video_node)
from ._watchdog_report import Reporter, read_state, render_metrics, write_atomically
from ._watchdog_systemd import Keepalive, sd_notify, watchdog_interval

# what the box command, the benchmark and the tests reach through this module
__all__ = ["Actions", "Config", "DongleFinder", "Keepalive", "Reporter", "Service", "check_health", "default_probes",
           "find_processes", "is_watchdog_process", "load_config", "parse_config", "probe_dongle", "probe_hid",
           "probe_ustreamer", "probe_video_node", "process_alive", "read_state", "render_metrics", "sd_notify", "watchdog_interval",
           "write_atomically", "DEFAULT_CONFIG_PATH", "DEFAULT_STATE_FILE"]


# ---------------------------------------------------------------------------------------
# The service loop
# ---------------------------------------------------------------------------------------

class Service:
    """One check per interval: probes -> ladder -> action -> reports -> systemd ping."""

    def __init__(self, config: Config, probes=None, actions=None, reporter=None, clock=time.monotonic,
                 wall=time.time, notify=sd_notify, keepalive=None) -> None:
        self.config = config
        self.probes = probes if probes is not None else default_probes(config)
        self.actions = actions or Actions(config)
        self.reporter = reporter or Reporter(config)
        self.clock = clock
        self.wall = wall
        self.notify = notify
        # systemd's WatchdogSec as this process sees it ($WATCHDOG_USEC), whatever the config says
        self.keepalive = keepalive or Keepalive(watchdog_interval(), notify, clock)
        self.ladder = Ladder(config)
        self.health = None
        self.check_duration = 0.0
        self.files_summary = None  # what the files last said (status, verdict, probe results)
        self.files_written_at = float("-inf")
        self.pid_start = process_start(os.getpid())  # with the pid, how `onekvm status` knows it is us

    def start(self) -> None:
        """Take over the previous run's counters and rate-limit history, then tell systemd."""
        try:
            saved = read_state(self.config.state_file)
        except NotFound:
            saved = {}
        except OnekvmError as exc:  # /run outlives us and others can write there: start afresh, say why
            saved = {}
            self.reporter.event(self.wall(), {"event": "state_ignored", "path": self.config.state_file,
                                              "error": exc.msg})
        self.ladder.restore(saved, self.clock(), self.wall())
        self.reporter.event(self.wall(), {"event": "started", "interval": self.config.interval,
                                          "grace": self.config.grace, "ladder": self.config.ladder,
                                          "probes": list(self.probes)})
        self.notify("READY=1\nSTATUS=started, first check running")

    def check_once(self) -> list:
        """One iteration; returns the events it reported.

        systemd's watchdog is kept fed while it runs (a step may wait for the box lock and a
        device's return), but only as long as its probes and step can take by their timeouts.
        """
        with self.keepalive.cover(self.config.operation_bound):
            return self._check_once()

    def _check_once(self) -> list:
        started = self.clock()
        self.health = check_health(self.config, self.probes)
        now = self.clock()
        events, step = self.ladder.tick(now, self.health)
        self._report(events)
        if step:
            self.notify("WATCHDOG=1\nSTATUS=running %s" % step)  # alive so far; the step's own timeouts bound it
            result, detail = self._run_step(step)
            events_done = self.ladder.done(self.clock(), step, result, detail)
            self._report(events_done)
            events += events_done
        self.check_duration = self.clock() - started
        self._write_files(events)
        self.keepalive.ping(self.status_line())
        return events

    def _write_files(self, events: list) -> None:
        """State and metrics files on any event or change of verdict, else once per FILES_HEARTBEAT.

        Rewriting them every few seconds was most of an idle check's cost; once a minute
        still keeps the textfile collector's mtime fresh for staleness alerts.
        """
        summary = (self.ladder.status, self.health.verdict,
                   tuple((name, result[0]) for name, result in self.health.probes.items()))
        now = self.clock()
        if events or summary != self.files_summary or now - self.files_written_at >= FILES_HEARTBEAT:
            self.reporter.files(self.wall(), self.state())
            self.files_summary, self.files_written_at = summary, now

    def run(self, should_stop=lambda: False, sleep=time.sleep) -> None:
        """Check every interval (sooner when the ladder is due) until ``should_stop()``.

        Sleeps in 1 s slices so a stop is quick.
        """
        self.start()
        while not should_stop():
            began = self.clock()
            self.check_once()
            now = self.clock()
            next_check = min(began + self.config.interval, now + self.ladder.due_in(now))
            while not should_stop() and self.clock() < next_check:
                sleep(min(self.keepalive.sleep_slice(), max(next_check - self.clock(), 0.0)))
                if self.keepalive.due():
                    self.keepalive.ping()
        self.notify("STOPPING=1")
        self.reporter.event(self.wall(), {"event": "stopped"})

    def state(self) -> dict:
        state = self.ladder.snapshot(self.clock(), self.wall())
        state.update(
            checked_at=round(self.wall(), 3),
            check_duration=round(self.check_duration, 4),
            verdict=self.health.verdict if self.health else None,
            probes={name: {"ok": ok, "detail": detail} for name, (ok, detail) in self.health.probes.items()}
            if self.health else {},
            pid=os.getpid(),
            pid_start=self.pid_start,
            config={"interval": self.config.interval, "grace": self.config.grace, "ladder": self.config.ladder,
                    "max_actions_per_hour": self.config.max_actions_per_hour},
        )
        return state

    def status_line(self) -> str:
        ladder = self.ladder
        if ladder.status == "ok":
            return "capture ok" if self.health and self.health.verdict == OK else "capture idle (nothing to check)"
        reasons = "; ".join(self.health.failures) if self.health and self.health.failures else "failure"
        return "%s: %s" % (ladder.status.replace("_", " "), reasons)[:200]

    def _run_step(self, step: str) -> tuple:
        try:
            return ACTED, self.actions.run(step)
        except (NotFound, InvalidArgument, MissingDependency) as exc:  # nothing was touched: go on to the next step
            return SKIPPED, exc.msg
        except OnekvmError as exc:
            return FAILED, exc.msg

    def _report(self, events: list) -> None:
        wall = self.wall()
        for event in events:
            event.setdefault("status", self.ladder.status)
            self.reporter.event(wall, event)
