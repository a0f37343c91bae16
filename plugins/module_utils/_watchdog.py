# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The watchdog service: two failure domains (capture, HID), each probed and healed alone.

PRIVATE to the onekvm.fleet collection. Box-side core: standard library only (pyusb and
pyserial are reached through ``_usb`` / ``_ch9329``, imported when first needed).

Parts, each usable alone, one file each:

- ``_watchdog_config``: the JSON config the role renders, fully validated; ``Config.domains``.
- ``_watchdog_probes``: the probes (dongle on USB, video node, ustreamer /state; the CH9329
  directly or through kvmd's GET /api/hid) and ``check_health``, which folds one domain's
  into a verdict: ``ok``, ``failing`` or ``unknown`` (no evidence either way, e.g. kvmd
  stopped ustreamer because nobody watches).
- ``_watchdog_ladder``: the pure state machine, one per domain. Fed a verdict and a monotonic
  time it answers which step to run, if any; told the step's result it schedules the next
  one. Grace period, per-step waits, max actions per hour and backoff live here only.
- ``_watchdog_actions``: the steps on real hardware (streamer restart, USB resets, CH9329).
- ``_watchdog_report``: journal lines (JSON on stdout), the state file, the Prometheus textfile.
- ``_watchdog_systemd``: sd_notify and the keepalive that feeds systemd's watchdog.
- here, ``Service``: the loop that ties them together, domain by domain.
"""

from __future__ import annotations

import collections
import os
import time

from ._errors import InvalidArgument, MissingDependency, NotFound, OnekvmError
from ._watchdog_actions import Actions, find_processes, is_watchdog_process, process_alive, process_start
from ._watchdog_config import (
    DEFAULT_CONFIG_PATH, DEFAULT_STATE_FILE, FILES_HEARTBEAT, RESET_TIMEOUT, Config, Domain, load_config, parse_config)
from ._watchdog_ladder import ACTED, FAILED, SKIPPED, Ladder
from ._watchdog_probes import (
    OK, DongleFinder, check_health, default_probes, domain_probes, probe_dongle, probe_hid, probe_ustreamer,
    probe_video_node)
from ._watchdog_report import Reporter, read_state, render_metrics, write_atomically
from ._watchdog_systemd import Keepalive, sd_notify, watchdog_interval

# what the box command, the benchmark and the tests reach through this module
__all__ = ["Actions", "Config", "DongleFinder", "Keepalive", "Reporter", "Service", "check_health", "default_probes", "domain_probes",
           "find_processes", "is_watchdog_process", "load_config", "parse_config", "probe_dongle", "probe_hid",
           "probe_ustreamer", "probe_video_node", "process_alive", "read_state", "render_metrics", "sd_notify", "watchdog_interval",
           "write_atomically", "DEFAULT_CONFIG_PATH", "DEFAULT_STATE_FILE"]


# ---------------------------------------------------------------------------------------
# The service loop
# ---------------------------------------------------------------------------------------

class Watched:
    """One failure domain as the service runs it: its probes, its ladder, its last health."""

    def __init__(self, name: str, settings: Domain, probes: dict) -> None:
        self.name = name
        self.settings = settings
        self.probes = probes
        self.ladder = Ladder(settings)
        self.health = None

    def line(self) -> str:
        if self.ladder.status == "ok":
            return "%s ok" % self.name if self.health and self.health.verdict == OK else (
                "%s idle (nothing to check)" % self.name)
        reasons = "; ".join(self.health.failures) if self.health and self.health.failures else "failure"
        return "%s: %s" % (self.ladder.status.replace("_", " "), reasons)


STATUS_ORDER = ("ok", "failing", "recovering", "needs_human")  # the worst domain's is the box's


class Service:
    """One check per interval: for each domain probes -> ladder -> action; reports; systemd ping.

    The capture (dongle) and the HID (CH9329 and its adapter) are separate failure domains,
    each with its own ladder, budget, backoff and state: a silent chip never resets a
    healthy dongle, a dead dongle never resets the chip. A USB step that also takes the
    other domain's device off the bus (it sits on or below the port acted on, or on a hub
    with ganged power) makes the other domain wait for it instead of escalating, and the
    CH9329 is reset once its adapter is back.
    """

    def __init__(self, config: Config, probes=None, actions=None, reporter=None, clock=time.monotonic,
                 wall=time.time, notify=sd_notify, keepalive=None, find_devices=None) -> None:
        self.config = config
        self.actions = actions or Actions(config)
        self.reporter = reporter or Reporter(config)
        self.clock = clock
        self.wall = wall
        self.notify = notify
        # systemd's WatchdogSec as this process sees it ($WATCHDOG_USEC), whatever the config says
        self.keepalive = keepalive or Keepalive(watchdog_interval(), notify, clock)
        self.find_devices = find_devices or {"capture": DongleFinder(), "hid": DongleFinder()}
        self.domains = self._domains(probes)
        first = next(iter(self.domains.values()))
        self.ladder = first.ladder  # the first domain's (capture's) ladder: the state file's top level
        self.probes = collections.OrderedDict((n, p) for w in self.domains.values() for n, p in w.probes.items())
        self.chip_reset_due = None  # monotonic deadline: the CH9329 is reset once its adapter is back
        self.check_duration = 0.0
        self.files_summary = None  # what the files last said (status, verdict, probe results)
        self.files_written_at = float("-inf")
        self.pid_start = process_start(os.getpid())  # with the pid, how `onekvm status` knows it is us

    def _domains(self, probes) -> dict:
        if probes is None:
            probes = domain_probes(self.config)
        elif all(callable(p) for p in probes.values()):  # a flat set of probes: one domain
            probes = {next(iter(self.config.domains), "capture"): probes}
        settings = self.config.domains
        fallback = Domain("capture", self.config.grace, self.config.ladder, self.config.waits,
                          self.config.max_actions_per_hour, self.config.backoff, self.config.backoff_max)
        return collections.OrderedDict((name, Watched(name, settings.get(name, fallback), p))
                                       for name, p in probes.items())

    @property
    def health(self):
        return next(iter(self.domains.values())).health

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
        saved_domains = saved.get("domains") if isinstance(saved.get("domains"), dict) else {}
        for index, watched in enumerate(self.domains.values()):
            # a state file from before the domains holds the capture's ladder at its top level
            mine = saved_domains.get(watched.name, saved if index == 0 and not saved_domains else {})
            watched.ladder.restore(mine, self.clock(), self.wall())
        self.reporter.event(self.wall(), {"event": "started", "interval": self.config.interval,
                                          "grace": self.config.grace, "ladder": self.config.ladder,
                                          "probes": list(self.probes),
                                          "domains": {n: list(w.settings.ladder) for n, w in self.domains.items()}})
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
        for watched in self.domains.values():
            watched.health = check_health(self.config, watched.probes)
        events = []
        for watched in self.domains.values():
            ticked, step = watched.ladder.tick(self.clock(), watched.health)
            events += self._report(watched, ticked)
            if step:
                result, detail = self._run_step(step)
                events += self._report(watched, watched.ladder.done(self.clock(), step, result, detail))
                if result == ACTED:
                    events += self._disturbed_by(watched, step, detail)
        events += self._chip_reset_after_usb()
        self.check_duration = self.clock() - started
        self._write_files(events)
        self.keepalive.ping(self.status_line())
        return events

    # -- one domain's step touching the other's device -------------------------------
    def _disturbed_by(self, watched: Watched, step: str, detail) -> list:
        port = detail.get("port") if isinstance(detail, dict) else None
        if not isinstance(port, str) or not port:
            return []
        ganged_hub = detail.get("hub") if detail.get("hub_power_mode") == "ganged" else None
        events = []
        for other in self.domains.values():
            other_port = self._device_port(other.name) if other is not watched else None
            if not other_port or not (other_port == port or other_port.startswith(port + ".")
                                      or (ganged_hub and other_port.startswith(ganged_hub + "."))):
                continue
            settle = watched.settings.waits.get(step, 0.0) + RESET_TIMEOUT
            other.ladder.defer(self.clock() + settle)
            event = {"event": "disturbed", "by": "%s/%s" % (watched.name, step), "port": port,
                     "device_port": other_port, "recheck_within": settle}
            if other.name == "hid" and "ch9329" in self.config.hid["ladder"] + ["ch9329"]:
                self.chip_reset_due = self.clock() + settle
                event["chip_reset"] = "once the adapter is back"
            events += self._report(other, [event])
        return events

    def _device_port(self, domain: str):
        """Where the domain's USB device sits now (configured port, else found by id), or None."""
        if domain == "capture":
            usb_id, port = self.config.dongle["id"], self.config.dongle["port"]
        else:
            usb_id, port = self.config.hid["adapter_id"], self.config.hid["adapter_port"]
        if not (usb_id or port):
            return None
        try:
            found = self.find_devices[domain](usb_id, port)
        except OnekvmError:
            found = []
        return found[0].port if len(found) == 1 else (port or None)

    def _chip_reset_after_usb(self) -> list:
        """The field note's "reset the CH9329 after remounting USB", once its adapter is back."""
        if self.chip_reset_due is None or "hid" not in self.domains:
            return []
        hid = self.domains["hid"]
        usb_id, port = self.config.hid["adapter_id"], self.config.hid["adapter_port"]
        try:
            back = bool(self.find_devices["hid"](usb_id, port))
        except OnekvmError:
            back = False
        if not back and self.clock() < self.chip_reset_due:
            return []
        self.chip_reset_due = None
        if not back:
            return self._report(hid, [{"event": "adapter_not_back", "detail": "the HID ladder takes over"}])
        result, detail = self._run_step("ch9329")
        events = self._report(hid, [{"event": "chip_reset_after_usb", "result": result, "detail": detail}])
        hid.ladder.done(self.clock(), "ch9329", result, detail)
        return events

    # -- reports --------------------------------------------------------------------
    def _write_files(self, events: list) -> None:
        """State and metrics files on any event or change of verdict, else once per FILES_HEARTBEAT.

        Rewriting them every few seconds was most of an idle check's cost; once a minute
        still keeps the textfile collector's mtime fresh for staleness alerts.
        """
        summary = tuple((w.name, w.ladder.status, w.health.verdict,
                         tuple((name, result[0]) for name, result in w.health.probes.items()))
                        for w in self.domains.values())
        now = self.clock()
        if events or summary != self.files_summary or now - self.files_written_at >= FILES_HEARTBEAT:
            self.reporter.files(self.wall(), self.state())
            self.files_summary, self.files_written_at = summary, now

    def run(self, should_stop=lambda: False, sleep=time.sleep) -> None:
        """Check every interval (sooner when a ladder is due) until ``should_stop()``.

        Sleeps in slices (at most 1 s) so a stop is quick and systemd's pings stay on time.
        """
        self.start()
        while not should_stop():
            began = self.clock()
            self.check_once()
            now = self.clock()
            due = min(w.ladder.due_in(now) for w in self.domains.values())
            if self.chip_reset_due is not None:
                due = min(due, 1.0)
            next_check = min(began + self.config.interval, now + due)
            while not should_stop() and self.clock() < next_check:
                sleep(min(self.keepalive.sleep_slice(), max(next_check - self.clock(), 0.0)))
                if self.keepalive.due():
                    self.keepalive.ping()
        self.notify("STOPPING=1")
        self.reporter.event(self.wall(), {"event": "stopped"})

    def state(self) -> dict:
        now, wall = self.clock(), self.wall()
        domains = collections.OrderedDict()
        for name, watched in self.domains.items():
            snapshot = watched.ladder.snapshot(now, wall)
            snapshot.update(verdict=watched.health.verdict if watched.health else None,
                            probes=_probe_results(watched.health))
            domains[name] = snapshot
        state = dict(next(iter(domains.values())))  # the first domain's ladder at the top, as before domains
        state.update(
            status=max((d["status"] for d in domains.values()), key=STATUS_ORDER.index),
            domains=domains,
            checked_at=round(wall, 3),
            check_duration=round(self.check_duration, 4),
            probes={name: result for d in domains.values() for name, result in d["probes"].items()},
            pid=os.getpid(),
            pid_start=self.pid_start,
            config={"interval": self.config.interval, "grace": self.config.grace, "ladder": self.config.ladder,
                    "max_actions_per_hour": self.config.max_actions_per_hour,
                    "domains": {n: w.settings._asdict() for n, w in self.domains.items()}},
        )
        return state

    def status_line(self) -> str:
        lines = [w.line() for w in self.domains.values()]
        if len(lines) > 1:
            lines = [line if line.startswith(name) else "%s %s" % (name, line)
                     for name, line in zip(self.domains, lines)]
        return "; ".join(lines)[:200]

    def _run_step(self, step: str) -> tuple:
        try:
            return ACTED, self.actions.run(step)
        except (NotFound, InvalidArgument, MissingDependency) as exc:  # nothing was touched: go on to the next step
            return SKIPPED, exc.msg
        except OnekvmError as exc:
            return FAILED, exc.msg

    def _report(self, watched: Watched, events: list) -> list:
        wall = self.wall()
        for event in events:
            event.setdefault("domain", watched.name)
            event.setdefault("status", watched.ladder.status)
            self.reporter.event(wall, event)
        return events


def _probe_results(health) -> dict:
    return {name: {"ok": ok, "detail": detail} for name, (ok, detail) in health.probes.items()} if health else {}
