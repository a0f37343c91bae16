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

import collections
import json
import os
import re
import signal
import socket
import sys
import tempfile
import time

from . import _ustreamer
from ._errors import Busy, InvalidArgument, MissingDependency, NotFound, OnekvmError, PermissionDenied

# ---------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------

DEFAULT_CONFIG_PATH = "/etc/onekvm/watchdog.json"
DEFAULT_STATE_FILE = "/run/onekvm/watchdog.json"
DEFAULT_METRICS_FILE = "/var/lib/prometheus/node-exporter/onekvm_watchdog.prom"

STEPS = ("restart_streamer", "ioctl", "authorize", "power_cycle", "ch9329")
USB_STEPS = ("ioctl", "authorize", "power_cycle")
FAST_RECHECK = 1.0  # seconds between checks while a step's wait runs, so a healing is seen at once
FILES_HEARTBEAT = 60.0  # seconds: state and metrics files are rewritten at least this often
RESET_TIMEOUT = 15.0  # a reset plus the device's return; WatchdogSec must exceed lock_timeout + this
DEFAULT_LADDER = ["restart_streamer", "ioctl", "authorize", "power_cycle", "ch9329"]

DEFAULTS = {
    "interval": 5.0,  # seconds between checks
    "grace": 10.0,  # a failure must last this long before the first action
    "dongle": {"id": "", "port": ""},
    "video_node": "/dev/kvmd-video",  # "" disables the probe
    "ustreamer": {"enabled": True, "socket": _ustreamer.DEFAULT_SOCKET, "timeout": 2.0, "min_fps": 1.0},
    "hid": {"enabled": False, "device": "/dev/kvmd-hid", "adapter_id": "", "adapter_port": "", "timeout": 1.0},
    "streamer_patterns": ["kvmd/streamer:", "ustreamer"],
    "ladder": DEFAULT_LADDER,
    "waits": {"restart_streamer": 15.0, "ioctl": 15.0, "authorize": 20.0, "power_cycle": 25.0, "ch9329": 15.0},
    "max_actions_per_hour": 6,
    "backoff": 600.0,  # after the ladder ran out: wait this long, then try again (doubling); 0 = never
    "backoff_max": 3600.0,
    "lock_timeout": 20.0,
    "state_file": DEFAULT_STATE_FILE,
    "metrics_file": DEFAULT_METRICS_FILE,  # "" disables the textfile
}

USB_ID_RE = re.compile(r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{4}$")
USB_PORT_RE = re.compile(r"^[0-9]+-[0-9]+(\.[0-9]+)*$")


class Config(collections.namedtuple("Config", sorted(DEFAULTS))):
    """A validated watchdog configuration (fields as in ``DEFAULTS``)."""

    __slots__ = ()

    @property
    def dongle_probe(self) -> bool:
        return bool(self.dongle["id"] or self.dongle["port"])


def load_config(path: str = DEFAULT_CONFIG_PATH) -> Config:
    """Read and validate the JSON config file; raise a clear error naming what is wrong."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise NotFound("watchdog config %s does not exist; render it with the onekvm.fleet.onekvm role" % path,
                       path=path) from None
    except PermissionError:
        raise PermissionDenied("cannot read watchdog config %s: permission denied; run as root" % path,
                               path=path) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument("watchdog config %s is not valid JSON: %s" % (path, exc), path=path) from None
    except OSError as exc:
        raise InvalidArgument("cannot read watchdog config %s: %s" % (path, exc.strerror or exc), path=path) from None
    try:
        return parse_config(raw)
    except InvalidArgument as exc:
        raise InvalidArgument("watchdog config %s: %s" % (path, exc.msg), path=path) from None


def parse_config(raw: object) -> Config:
    """Merge ``raw`` over the defaults and validate every field."""
    if not isinstance(raw, dict):
        raise InvalidArgument("the config must be a JSON object, got %s" % type(raw).__name__)
    values = {}
    for key, default in DEFAULTS.items():
        values[key] = _merge(key, default, raw.get(key, default))
    _reject_unknown(raw, DEFAULTS, "")
    _check_numbers(values)
    _check_devices(values)
    _check_ladder(values)
    _check_paths(values)
    return Config(**values)


def _merge(key: str, default, value):
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise InvalidArgument("%s must be an object with keys %s" % (key, ", ".join(sorted(default))))
        _reject_unknown(value, default, key + ".")
        merged = dict(default)
        for sub, sub_default in default.items():
            merged[sub] = _typed(key + "." + sub, sub_default, value.get(sub, sub_default))
        return merged
    return _typed(key, default, value)


def _typed(name: str, default, value):
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise InvalidArgument("%s must be true or false, got %r" % (name, value))
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidArgument("%s must be a number, got %r" % (name, value))
        if isinstance(default, float):
            return float(value)
        return int(value) if value == int(value) else value  # a fraction is refused by the range checks
    if isinstance(default, str):
        if not isinstance(value, str):
            raise InvalidArgument("%s must be a string, got %r" % (name, value))
        return value
    if isinstance(default, list):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidArgument("%s must be a list of strings, got %r" % (name, value))
        return list(value)
    return value


def _reject_unknown(given: dict, known: dict, prefix: str) -> None:
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise InvalidArgument("unknown key %s%s (known: %s); check the spelling" % (
            prefix, unknown[0], ", ".join(sorted(known))))


def _check_numbers(values: dict) -> None:
    positive = {"interval": values["interval"], "ustreamer.timeout": values["ustreamer"]["timeout"],
                "hid.timeout": values["hid"]["timeout"]}
    for name, value in positive.items():
        if value <= 0:
            raise InvalidArgument("%s must be greater than 0, got %s" % (name, value))
    not_negative = {"grace": values["grace"], "ustreamer.min_fps": values["ustreamer"]["min_fps"],
                    "backoff": values["backoff"], "backoff_max": values["backoff_max"],
                    "lock_timeout": values["lock_timeout"]}
    not_negative.update(("waits." + k, v) for k, v in values["waits"].items())
    for name, value in not_negative.items():
        if value < 0:
            raise InvalidArgument("%s must not be negative, got %s" % (name, value))
    if not isinstance(values["max_actions_per_hour"], int) or values["max_actions_per_hour"] < 1:
        raise InvalidArgument("max_actions_per_hour must be a whole number >= 1, got %r" % values["max_actions_per_hour"])
    if values["backoff_max"] < values["backoff"]:
        raise InvalidArgument("backoff_max (%s) must not be smaller than backoff (%s)" % (values["backoff_max"], values["backoff"]))


def _check_devices(values: dict) -> None:
    for name, value, pattern, example in (
            ("dongle.id", values["dongle"]["id"], USB_ID_RE, "534d:2109"),
            ("dongle.port", values["dongle"]["port"], USB_PORT_RE, "1-1.2"),
            ("hid.adapter_id", values["hid"]["adapter_id"], USB_ID_RE, "1a86:7523"),
            ("hid.adapter_port", values["hid"]["adapter_port"], USB_PORT_RE, "1-1.1")):
        if value and not pattern.match(value):
            raise InvalidArgument("%s must look like %s (see `onekvm usb-list`), got %r" % (name, example, value))
    values["dongle"]["id"] = values["dongle"]["id"].lower()
    values["hid"]["adapter_id"] = values["hid"]["adapter_id"].lower()
    if values["hid"]["enabled"] and not values["hid"]["device"].startswith("/"):
        raise InvalidArgument("hid.device must be an absolute path like /dev/kvmd-hid, got %r" % values["hid"]["device"])
    if not values["streamer_patterns"] or not all(p.strip() for p in values["streamer_patterns"]):
        raise InvalidArgument("streamer_patterns must list at least one non-empty command prefix, e.g. 'kvmd/streamer:'")


def _check_ladder(values: dict) -> None:
    ladder = values["ladder"]
    if not ladder:
        raise InvalidArgument("ladder must name at least one step (%s)" % ", ".join(STEPS))
    for step in ladder:
        if step not in STEPS:
            raise InvalidArgument("ladder step %r is unknown; choose from %s" % (step, ", ".join(STEPS)))
    if len(set(ladder)) != len(ladder):
        raise InvalidArgument("ladder names a step twice: %s" % ", ".join(ladder))
    if any(step in USB_STEPS for step in ladder) and not (values["dongle"]["id"] or values["dongle"]["port"]):
        raise InvalidArgument("the ladder has USB resets but no dongle is configured: set dongle.id and/or dongle.port")
    if "ch9329" in ladder and values["hid"]["enabled"] and not (values["hid"]["adapter_id"] or values["hid"]["adapter_port"]):
        raise InvalidArgument("the ch9329 step resets the HID adapter first: set hid.adapter_id and/or hid.adapter_port")
    probes = values["dongle"]["id"] or values["dongle"]["port"] or values["video_node"] or values["ustreamer"]["enabled"]
    if not probes and not values["hid"]["enabled"]:
        raise InvalidArgument("every probe is disabled: configure the dongle, video_node, ustreamer or hid")


def _check_paths(values: dict) -> None:
    for name in ("state_file", "metrics_file", "video_node"):
        if values[name] and not values[name].startswith("/"):
            raise InvalidArgument("%s must be an absolute path (or empty to disable), got %r" % (name, values[name]))
    if not values["state_file"]:
        raise InvalidArgument("state_file must be set: `onekvm status` reads it")
    if values["ustreamer"]["enabled"] and not values["ustreamer"]["socket"].startswith("/"):
        raise InvalidArgument("ustreamer.socket must be an absolute path, got %r" % values["ustreamer"]["socket"])
    if values["metrics_file"] and not values["metrics_file"].endswith(".prom"):
        raise InvalidArgument("metrics_file must end in .prom (node_exporter's textfile collector reads only those)")


# ---------------------------------------------------------------------------------------
# Probes
# ---------------------------------------------------------------------------------------

OK, FAILING, UNKNOWN = "ok", "failing", "unknown"

Health = collections.namedtuple("Health", "verdict failures probes")
Health.__doc__ = """verdict: ok/failing/unknown; failures: human reasons; probes: {name: [ok, detail]}."""


def check_health(config: Config, probes: dict) -> Health:
    """Run the enabled probes (callables returning ``(True|False|None, detail)``) and fold them.

    Any failing probe makes the verdict ``failing``. ``None`` means "cannot tell" (ustreamer
    stopped by kvmd, HID port held by kvmd): with nothing failing the verdict is then
    ``unknown`` rather than ``ok``, so an idle streamer never passes for a recovery.
    """
    results = {}
    for name, probe in probes.items():
        try:
            results[name] = list(probe(config))
        except OnekvmError as exc:  # a probe that cannot run is not evidence of a dead dongle
            results[name] = [None, exc.msg]
    failures = ["%s: %s" % (name, detail) for name, (ok, detail) in results.items() if ok is False]
    if failures:
        verdict = FAILING
    elif any(ok is None for ok, detail in results.values()):
        verdict = UNKNOWN
    else:
        verdict = OK
    return Health(verdict, failures, results)


def probe_dongle(config: Config, find_devices=None) -> tuple:
    """The dongle is on the bus (by id and/or port path)."""
    find_devices = find_devices or _find_usb_devices
    found = find_devices(config.dongle["id"], config.dongle["port"])
    what = " at port %s" % config.dongle["port"] if config.dongle["port"] else ""
    what = (config.dongle["id"] or "device") + what
    if not found:
        return False, "capture dongle %s is not on the USB bus" % what
    return True, "capture dongle %s present" % what


def probe_video_node(config: Config, exists=os.path.exists) -> tuple:
    """The capture node (or its stable symlink) exists."""
    if exists(config.video_node):
        return True, "%s present" % config.video_node
    return False, "video node %s is missing" % config.video_node


def probe_ustreamer(config: Config, get_state=_ustreamer.get_state) -> tuple:
    """ustreamer's /state agrees the source is online and frames arrive."""
    settings = config.ustreamer
    try:
        result = get_state(settings["socket"], settings["timeout"])
    except _ustreamer.StreamerNotRunning:
        return None, "ustreamer not running (kvmd stops it when nobody watches)"
    except OnekvmError as exc:
        return False, exc.msg
    return _ustreamer.source_health(result, settings["min_fps"])


def probe_hid(config: Config, port_users=None, get_info=None) -> tuple:
    """The CH9329 answers GET_INFO, asked only while no other process has the port open."""
    if port_users is None:
        from ._serialport import port_users
    device = config.hid["device"]
    holders = port_users(device)
    if holders:
        # kvmd polls the chip every 0.1 s and would take our reply (or we its): stay away
        return None, "HID not probed: %s holds %s" % (", ".join(h["comm"] for h in holders), device)
    get_info = get_info or _ch9329_get_info
    try:
        info = get_info(device, config.hid["timeout"])
    except InvalidArgument as exc:
        return None, exc.msg
    except NotFound as exc:
        return False, exc.msg
    except OnekvmError as exc:
        return False, "CH9329 on %s does not answer: %s" % (device, exc.msg)
    return True, "CH9329 on %s answers (%s)" % (device, _short(info))


def default_probes(config: Config) -> dict:
    """The probes the config enables, in the order they run."""
    probes = collections.OrderedDict()
    if config.dongle_probe:
        probes["dongle"] = probe_dongle
    if config.video_node:
        probes["video_node"] = probe_video_node
    if config.ustreamer["enabled"]:
        probes["ustreamer"] = probe_ustreamer
    if config.hid["enabled"]:
        probes["hid"] = probe_hid
    return probes


def _short(info) -> str:
    if isinstance(info, dict):
        return ", ".join("%s=%s" % (k, info[k]) for k in sorted(info) if not isinstance(info[k], (dict, list)))[:120]
    return str(info)[:120]


# ---------------------------------------------------------------------------------------
# The escalation ladder (pure: no I/O, no clock of its own)
# ---------------------------------------------------------------------------------------

STATUSES = ("ok", "failing", "recovering", "needs_human")
ACTED, FAILED, SKIPPED = "ok", "failed", "skipped"
HOUR = 3600.0


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
        self.backoff = config.backoff
        self.action_times = collections.deque()  # for max_actions_per_hour
        self.rate_limited = False
        self.last_failure = None  # dict, kept after recovery
        self.last_action = None  # dict
        self.counters = {"checks": 0, "failures": 0, "recoveries": 0, "cleared": 0, "needs_human": 0,
                         "rate_limited": 0, "actions": {}, "last_recovery_seconds": None}

    # -- the decision ---------------------------------------------------------------
    def tick(self, now: float, health: Health) -> tuple:
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
        return [{"event": "action_" + ("done" if result == ACTED else result), "step": step, "result": result,
                 "detail": detail, "wait": wait}]

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
        self.act_after = now + self.config.grace
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
        }

    def restore(self, saved: dict, now: float, wall: float) -> None:
        """Take over counters, the hourly action history and the backoff of an earlier run."""
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


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ---------------------------------------------------------------------------------------
# The steps on real hardware
# ---------------------------------------------------------------------------------------

class Actions:
    """Runs a ladder step; returns details or raises OnekvmError (NotFound = nothing to act on)."""

    def __init__(self, config: Config, proc_root: str = "/proc", kill=os.kill, sleep=time.sleep) -> None:
        self.config = config
        self.proc_root = proc_root
        self.kill = kill
        self.sleep = sleep

    def run(self, step: str) -> dict:
        if step == "restart_streamer":
            return self.restart_streamer()
        if step in USB_STEPS:
            return usb_reset(self.config.dongle["id"], self.config.dongle["port"], step, self.config.lock_timeout)
        if step == "ch9329":
            return self.reset_hid()
        raise InvalidArgument("unknown ladder step %r" % step)

    def restart_streamer(self, wait: float = 3.0) -> dict:
        """Stop the streamer process; kvmd starts a fresh one about a second later."""
        pids = find_processes(self.config.streamer_patterns, self.proc_root)
        if not pids:
            raise NotFound("no streamer process (cmdline starting with %s) to restart"
                           % " or ".join(repr(p) for p in self.config.streamer_patterns))
        for pid in pids:
            self._signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(process_alive(pid, self.proc_root) for pid in pids):
            self.sleep(0.1)
        killed = [pid for pid in pids if process_alive(pid, self.proc_root)]
        for pid in killed:  # a streamer stuck on a dead device may ignore SIGTERM
            self._signal(pid, signal.SIGKILL)
        return {"pids": pids, "sigkill": killed}

    def reset_hid(self) -> dict:
        if not self.config.hid["enabled"]:
            raise NotFound("the HID probe is disabled: the CH9329 step does not apply")
        hid = self.config.hid
        adapter = usb_reset(hid["adapter_id"], hid["adapter_port"], "ioctl", self.config.lock_timeout)
        chip = _ch9329_reset(hid["device"], self.config.lock_timeout)
        return {"adapter": adapter, "chip": chip}

    def _signal(self, pid: int, sig: int) -> None:
        try:
            self.kill(pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            raise PermissionDenied("not allowed to signal streamer pid %d; the watchdog needs CAP_KILL" % pid,
                                   pid=pid) from None


def process_alive(pid, proc_root: str = "/proc") -> bool:
    """Still running: a positive int present in /proc and not a zombie waiting for its parent."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        with open(os.path.join(proc_root, str(pid), "stat"), encoding="utf-8", errors="replace") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def find_processes(patterns: list, proc_root: str = "/proc") -> list:
    """PIDs whose command line starts with one of ``patterns`` (or whose program is named so)."""
    found = []
    for entry in os.listdir(proc_root):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(os.path.join(proc_root, entry, "cmdline"), "rb") as f:
                argv = f.read().decode("utf-8", "replace").rstrip("\0").split("\0")
        except OSError:
            continue
        cmdline = " ".join(argv)
        if any(cmdline.startswith(p) or os.path.basename(argv[0]) == p for p in patterns):
            found.append(int(entry))
    return sorted(found)


class DongleFinder:
    """Finds the dongle cheaply enough to run every few seconds.

    Reading one port path costs a fraction of a whole-bus scan (on the simulated box 0.06 s
    against 0.55 s), so a scan runs only to learn where an id-only dongle sits, and again
    when it is no longer there.
    """

    def __init__(self, usb=None) -> None:
        self.usb = usb
        self.port_hint = None

    def __call__(self, usb_id: str, port: str) -> list:
        if self.usb is None:
            from . import _usb
            self.usb = _usb
        known = port or self.port_hint
        if known:
            device = self.usb.read_device(known, lazy=True)  # presence only: no walk for device nodes
            if device is not None and (not usb_id or device.id == usb_id):
                return [device]
            if port:
                return []
        found = self.usb.select_devices(self.usb.list_devices(), id=usb_id, allow_many=True, allow_none=True)
        self.port_hint = found[0].port if len(found) == 1 else None
        return found


_find_usb_devices = DongleFinder()


def usb_reset(usb_id: str, port: str, method: str, lock_timeout: float) -> dict:
    """Reset the one device selected by id and/or port with ``method`` (holds the box lock)."""
    from . import _usb
    device = _usb.select_devices(_usb.list_devices(), id=usb_id or None, port=port or None)[0]
    report = _usb.reset_device(device, method=method, timeout=RESET_TIMEOUT, lock_timeout=lock_timeout)
    return {key: report.get(key) for key in ("port", "id", "method", "reset_seconds", "elapsed", "hub")}


def _ch9329_get_info(device: str, timeout: float):
    """GET_INFO without pausing kvmd (the probe runs only while nobody holds the port)."""
    from . import _ch9329
    options = _ch9329.LinkOptions(port=device, timeout=timeout, pause_kvmd=False, lock_timeout=timeout)
    try:
        with _ch9329.open_chip(options) as (chip, dummy):
            return chip.get_info()
    except Busy as exc:  # a reset is running: no verdict this time
        raise InvalidArgument("HID not probed: %s" % exc.msg) from None


def _ch9329_reset(device: str, lock_timeout: float):
    """RESET and wait until the chip answers; kvmd is paused around it if it holds the port."""
    from . import _ch9329
    report = _ch9329.reset(_ch9329.LinkOptions(port=device, lock_timeout=lock_timeout))
    return {key: report.get(key) for key in ("port", "ready_after", "kvmd_paused", "elapsed")}


# ---------------------------------------------------------------------------------------
# Reports: journal lines, state file, Prometheus textfile
# ---------------------------------------------------------------------------------------

def write_atomically(path: str, text: str, mode: int = 0o644) -> None:
    """Replace ``path`` so readers see the old or the new content, never half of it."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def render_metrics(state: dict, config: Config) -> str:
    """node_exporter textfile format (one HELP/TYPE per metric family)."""
    counters = state["counters"]
    lines = []

    def family(name, kind, text, samples):
        lines.append("# HELP onekvm_watchdog_%s %s" % (name, text))
        lines.append("# TYPE onekvm_watchdog_%s %s" % (name, kind))
        for labels, value in samples:
            label_text = ",".join('%s="%s"' % kv for kv in labels)
            lines.append("onekvm_watchdog_%s%s %s" % (name, "{%s}" % label_text if label_text else "", _num(value)))

    family("up", "gauge", "1 while the capture is healthy or idle, 0 while a failure lasts",
           [((), 1 if state["status"] == "ok" else 0)])
    family("status", "gauge", "the watchdog's current status (1 for the active one)",
           [((("status", s),), 1 if state["status"] == s else 0) for s in STATUSES])
    family("needs_human", "gauge", "1 when every step of the ladder failed to heal the capture",
           [((), 1 if state["status"] == "needs_human" else 0)])
    family("checks_total", "counter", "health checks run", [((), counters["checks"])])
    family("failures_total", "counter", "failure episodes detected", [((), counters["failures"])])
    family("recoveries_total", "counter", "failure episodes healed by an action", [((), counters["recoveries"])])
    family("rate_limited_total", "counter", "times the hourly action budget stopped the ladder",
           [((), counters["rate_limited"])])
    steps = list(dict.fromkeys(list(config.ladder) + sorted(counters["actions"])))
    family("resets_total", "counter", "ladder steps that ran successfully, by method",
           [((("method", s),), counters["actions"].get(s, {}).get(ACTED, 0)) for s in steps])
    family("actions_total", "counter", "ladder steps attempted, by step and result",
           [((("step", s), ("result", r)), counters["actions"].get(s, {}).get(r, 0))
            for s in steps for r in (ACTED, FAILED, SKIPPED)])
    if counters["last_recovery_seconds"] is not None:
        family("last_recovery_seconds", "gauge", "time from failure detection to recovery, last episode",
               [((), counters["last_recovery_seconds"])])
    family("last_check_timestamp_seconds", "gauge",
           "when the check these figures come from ran (unix time; rewritten on change, else every minute)",
           [((), state["checked_at"])])
    family("check_duration_seconds", "gauge", "how long the last check took", [((), state["check_duration"])])
    return "\n".join(lines) + "\n"


def _num(value) -> str:
    if isinstance(value, float):
        return repr(round(value, 6))
    return str(int(value))


WARNING_EVENTS = ("failure_detected", "needs_human", "rate_limited", "action_failed", "report_failed")


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


def read_state(path: str = DEFAULT_STATE_FILE) -> dict:
    """The state file the service writes (for ``onekvm status``)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise NotFound("no watchdog state in %s: is onekvm-watchdog.service running? (systemctl status onekvm-watchdog)"
                       % path, path=path) from None
    except PermissionError:
        raise PermissionDenied("cannot read %s: permission denied" % path, path=path) from None
    except (OSError, ValueError) as exc:
        raise InvalidArgument("cannot read the watchdog state %s: %s" % (path, exc), path=path) from None


# ---------------------------------------------------------------------------------------
# systemd notification (no python-systemd needed)
# ---------------------------------------------------------------------------------------

def sd_notify(message: str, environ=None) -> bool:
    """Send ``message`` (e.g. ``READY=1``) to $NOTIFY_SOCKET; False when not run by systemd."""
    address = (environ if environ is not None else os.environ).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode("utf-8"))
    except OSError:
        return False
    return True


def watchdog_interval(environ=None) -> float | None:
    """Half of systemd's WatchdogSec (from $WATCHDOG_USEC) if it asked this process for pings."""
    env = environ if environ is not None else os.environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 2e6


# ---------------------------------------------------------------------------------------
# The service loop
# ---------------------------------------------------------------------------------------

class Service:
    """One check per interval: probes -> ladder -> action -> reports -> systemd ping."""

    def __init__(self, config: Config, probes=None, actions=None, reporter=None, clock=time.monotonic,
                 wall=time.time, notify=sd_notify) -> None:
        self.config = config
        self.probes = probes if probes is not None else default_probes(config)
        self.actions = actions or Actions(config)
        self.reporter = reporter or Reporter(config)
        self.clock = clock
        self.wall = wall
        self.notify = notify
        self.ladder = Ladder(config)
        self.health = None
        self.check_duration = 0.0
        self.files_summary = None  # what the files last said (status, verdict, probe results)
        self.files_written_at = float("-inf")

    def start(self) -> None:
        """Take over the previous run's counters and rate-limit history, then tell systemd."""
        try:
            saved = read_state(self.config.state_file)
        except OnekvmError:
            saved = {}
        self.ladder.restore(saved, self.clock(), self.wall())
        self.reporter.event(self.wall(), {"event": "started", "interval": self.config.interval,
                                          "grace": self.config.grace, "ladder": self.config.ladder,
                                          "probes": list(self.probes)})
        self.notify("READY=1\nSTATUS=started, first check running")

    def check_once(self) -> list:
        """One iteration; returns the events it reported."""
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
        self.notify("WATCHDOG=1\nSTATUS=%s" % self.status_line())
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
                sleep(min(1.0, max(next_check - self.clock(), 0.0)))
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
