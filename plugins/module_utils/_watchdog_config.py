# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The watchdog's configuration: the JSON file the role renders, fully validated.

PRIVATE to the onekvm.fleet collection. Box-side core: standard library only.
"""

from __future__ import annotations

import collections
import json
import math

from . import _ustreamer
from ._errors import InvalidArgument, NotFound, PermissionDenied
from ._files import read_bounded
from ._limits import check
from ._usb import ID_RE, PORT_PATH_RE  # the box command's own selector patterns


DEFAULT_CONFIG_PATH = "/etc/onekvm/watchdog.json"
DEFAULT_STATE_FILE = "/run/onekvm/watchdog.json"
DEFAULT_METRICS_FILE = "/var/lib/prometheus/node-exporter/onekvm_watchdog.prom"

# Two failure domains, each with its own probes, ladder, budget, backoff and state:
# the HDMI capture (the dongle) and the HID (the CH9329 and its USB-serial adapter).
CAPTURE_STEPS = ("restart_streamer", "ioctl", "authorize", "power_cycle")
HID_STEPS = ("ch9329", "hid_adapter")  # the chip's RESET; the adapter's USB reset, then the chip's
STEPS = CAPTURE_STEPS + HID_STEPS
USB_STEPS = ("ioctl", "authorize", "power_cycle")
FAST_RECHECK = 1.0  # seconds between checks while a step's wait runs, so a healing is seen at once
FILES_HEARTBEAT = 60.0  # seconds: state and metrics files are rewritten at least this often
RESET_TIMEOUT = 15.0  # a reset plus the device's return; WatchdogSec must exceed lock_timeout + this
DEFAULT_LADDER = list(CAPTURE_STEPS)
DEFAULT_HID_LADDER = list(HID_STEPS)
DEFAULT_KVMD_SOCKET = "/run/kvmd/kvmd.sock"

DEFAULTS = {
    "interval": 5.0,  # seconds between checks
    "grace": 10.0,  # a failure must last this long before the first action
    "dongle": {"id": "", "port": ""},
    "video_node": "/dev/kvmd-video",  # "" disables the probe
    "ustreamer": {"enabled": True, "socket": _ustreamer.DEFAULT_SOCKET, "timeout": 2.0, "min_fps": 1.0},
    # One-KVM 0.2 (no kvmd, no ustreamer): its own GET /api/stream/status, after a login with the
    # credentials in a root-only file (JSON {"user", "passwd"}), is the capture's health
    "onekvm2": {"enabled": False, "url": "http://127.0.0.1:8080", "credentials": "", "timeout": 2.0},
    "hid": {"enabled": False, "device": "/dev/kvmd-hid", "adapter_id": "", "adapter_port": "", "timeout": 1.0,
            # while kvmd holds the port, its GET /api/hid `online` is the HID's health (credentials: a root-only file)
            "kvmd_socket": DEFAULT_KVMD_SOCKET, "kvmd_credentials": "",
            "grace": 10.0, "ladder": DEFAULT_HID_LADDER, "waits": {"ch9329": 10.0, "hid_adapter": 15.0},
            "max_actions_per_hour": 6, "backoff": 600.0, "backoff_max": 3600.0},
    "streamer_patterns": ["kvmd/streamer:", "ustreamer"],
    "ladder": DEFAULT_LADDER,
    "waits": {"restart_streamer": 15.0, "ioctl": 15.0, "authorize": 20.0, "power_cycle": 25.0},
    "max_actions_per_hour": 6,
    "backoff": 600.0,  # after the ladder ran out: wait this long, then try again (doubling); 0 = never
    "backoff_max": 3600.0,
    "lock_timeout": 20.0,
    "state_file": DEFAULT_STATE_FILE,
    "metrics_file": DEFAULT_METRICS_FILE,  # "" disables the textfile
    "systemd_watchdog_sec": 0.0,  # the unit's WatchdogSec (0: none), so settings that cannot fit are refused
}
MAX_CONFIG_BYTES = 1024 * 1024  # the rendered config is about 1 KiB
MIN_WATCHDOG_SEC = 2.0  # pings go out every WatchdogSec / 4 from a loop that looks at the clock each 0.5 s


Domain = collections.namedtuple("Domain", "name grace ladder waits max_actions_per_hour backoff backoff_max")
Domain.__doc__ = """One failure domain's escalation settings (what ``Ladder`` reads)."""


class Config(collections.namedtuple("Config", sorted(DEFAULTS))):
    """A validated watchdog configuration (fields as in ``DEFAULTS``)."""

    __slots__ = ()

    @property
    def dongle_probe(self) -> bool:
        return bool(self.dongle["id"] or self.dongle["port"])

    @property
    def capture_probe(self) -> bool:
        return bool(self.dongle_probe or self.video_node or self.ustreamer["enabled"] or self.onekvm2["enabled"])

    @property
    def domains(self) -> dict:
        """The watched domains, capture first: ``{name: Domain}``."""
        found = collections.OrderedDict()
        if self.capture_probe:
            found["capture"] = Domain("capture", self.grace, self.ladder, self.waits, self.max_actions_per_hour,
                                      self.backoff, self.backoff_max)
        if self.hid["enabled"]:
            h = self.hid
            found["hid"] = Domain("hid", h["grace"], h["ladder"], h["waits"], h["max_actions_per_hour"],
                                  h["backoff"], h["backoff_max"])
        return found

    @property
    def operation_bound(self) -> float:
        """The longest one check and its ladder step can take by their own timeouts.

        The ch9329 step is the slowest: the adapter's USB reset and the chip's reset, each
        waiting up to lock_timeout for the box lock and RESET_TIMEOUT for the device.
        """
        probes = self.ustreamer["timeout"] + 3 * self.onekvm2["timeout"] + 2 * self.hid["timeout"] + 10.0  # + a whole-bus USB scan, generously
        return probes + 2 * (self.lock_timeout + RESET_TIMEOUT) + 10.0


def load_config(path: str = DEFAULT_CONFIG_PATH) -> Config:
    """Read and validate the JSON config file; raise a clear error naming what is wrong."""
    try:
        text = read_bounded(path, MAX_CONFIG_BYTES)  # a regular file, links not followed, bounded
        if text is None:
            raise FileNotFoundError(path)
        raw = json.loads(text.decode("utf-8"))
    except FileNotFoundError:
        raise NotFound("watchdog config %s does not exist; render it with the onekvm.fleet.onekvm role" % path,
                       path=path) from None
    except RecursionError:
        raise InvalidArgument("watchdog config %s is nested too deeply to be a config; render it with the role" % path,
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
    _reject_moved(raw)
    values = {}
    for key, default in DEFAULTS.items():
        values[key] = _merge(key, default, raw.get(key, default))
    _reject_unknown(raw, DEFAULTS, "")
    _check_numbers(values)
    _check_devices(values)
    _check_ladder(values)
    _check_paths(values)
    return Config(**values)


def _reject_moved(raw: dict) -> None:
    """The CH9329 step moved to the HID domain's own ladder: say where, not just "unknown"."""
    ladder = raw.get("ladder")
    waits = raw.get("waits")
    if (isinstance(ladder, list) and "ch9329" in ladder) or (isinstance(waits, dict) and "ch9329" in waits):
        raise InvalidArgument("the ch9329 step belongs to the HID domain now: list it in hid.ladder and its wait in "
                              "hid.waits (role: onekvm_watchdog_hid_ladder, onekvm_watchdog_hid_waits), not in the "
                              "capture ladder")


def _merge(key: str, default, value):
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise InvalidArgument("%s must be an object with keys %s" % (key, ", ".join(sorted(default))))
        _reject_unknown(value, default, key + ".")
        merged = dict(default)
        for sub, sub_default in default.items():
            merged[sub] = _merge(key + "." + sub, sub_default, value.get(sub, sub_default))
        return merged
    return _typed(key, default, value)


def _typed(name: str, default, value):
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise InvalidArgument("%s must be true or false, got %r" % (name, value))
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidArgument("%s must be a number (not NaN or infinite), got %r" % (name, value))
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
    hid = values["hid"]
    # (quantity in the shared limits table, config key, value)
    numbers = [("interval", "interval", values["interval"]),
               ("ustreamer_timeout", "ustreamer.timeout", values["ustreamer"]["timeout"]),
               ("min_fps", "ustreamer.min_fps", values["ustreamer"]["min_fps"]),
               ("ustreamer_timeout", "onekvm2.timeout", values["onekvm2"]["timeout"]),
               ("hid_timeout", "hid.timeout", hid["timeout"]),
               ("lock_timeout", "lock_timeout", values["lock_timeout"]),
               ("systemd_watchdog_sec", "systemd_watchdog_sec", values["systemd_watchdog_sec"])]
    for prefix, domain in (("", values), ("hid.", hid)):
        numbers += [(key, prefix + key, domain[key]) for key in ("grace", "backoff", "backoff_max", "max_actions_per_hour")]
        numbers += [("waits", prefix + "waits." + step, wait) for step, wait in domain["waits"].items()]
    for quantity, name, value in numbers:
        check(quantity, value, name)
    for prefix, domain in (("", values), ("hid.", hid)):
        if domain["backoff_max"] < domain["backoff"]:
            raise InvalidArgument("%sbackoff_max (%s) must not be smaller than %sbackoff (%s)"
                                  % (prefix, domain["backoff_max"], prefix, domain["backoff"]))
    watchdog_sec = values["systemd_watchdog_sec"]
    if watchdog_sec < 0 or 0 < watchdog_sec < MIN_WATCHDOG_SEC:
        raise InvalidArgument("systemd_watchdog_sec must be 0 (no systemd watchdog) or at least %s, got %s"
                              % (MIN_WATCHDOG_SEC, watchdog_sec))
    if watchdog_sec and values["interval"] >= watchdog_sec:
        raise InvalidArgument("interval (%s) must be shorter than systemd_watchdog_sec (%s): every check must come "
                              "round within one watchdog period; raise the unit's WatchdogSec or check more often"
                              % (values["interval"], watchdog_sec))


def _check_devices(values: dict) -> None:
    for name, value, pattern, example in (
            ("dongle.id", values["dongle"]["id"], ID_RE, "534d:2109"),
            ("dongle.port", values["dongle"]["port"], PORT_PATH_RE, "1-1.2"),
            ("hid.adapter_id", values["hid"]["adapter_id"], ID_RE, "1a86:7523"),
            ("hid.adapter_port", values["hid"]["adapter_port"], PORT_PATH_RE, "1-1.1")):
        if value and not pattern.match(value):
            raise InvalidArgument("%s must look like %s (see `onekvm usb-list`), got %r" % (name, example, value))
    values["dongle"]["id"] = values["dongle"]["id"].lower()
    values["hid"]["adapter_id"] = values["hid"]["adapter_id"].lower()
    if values["hid"]["enabled"] and not values["hid"]["device"].startswith("/"):
        raise InvalidArgument("hid.device must be an absolute path like /dev/kvmd-hid, got %r" % values["hid"]["device"])
    if not values["streamer_patterns"] or not all(p.strip() for p in values["streamer_patterns"]):
        raise InvalidArgument("streamer_patterns must list at least one non-empty command prefix, e.g. 'kvmd/streamer:'")
    for pattern in values["streamer_patterns"]:
        if len(pattern.strip(" /")) < 3:
            raise InvalidArgument("streamer_patterns entry %r would match almost every process (the restart step "
                                  "signals what it matches); give the streamer's command prefix, e.g. 'kvmd/streamer:'"
                                  % pattern)


def _check_ladder(values: dict) -> None:
    hid = values["hid"]
    for name, ladder, steps in (("ladder", values["ladder"], CAPTURE_STEPS), ("hid.ladder", hid["ladder"], HID_STEPS)):
        if not ladder:
            raise InvalidArgument("%s must name at least one step (%s)" % (name, ", ".join(steps)))
        for step in ladder:
            if step not in steps:
                raise InvalidArgument("%s step %r is unknown; choose from %s" % (name, step, ", ".join(steps)))
        if len(set(ladder)) != len(ladder):
            raise InvalidArgument("%s names a step twice: %s" % (name, ", ".join(ladder)))
    probes = (values["dongle"]["id"] or values["dongle"]["port"] or values["video_node"] or values["ustreamer"]["enabled"]
              or values["onekvm2"]["enabled"])
    if probes and any(step in USB_STEPS for step in values["ladder"]) and not (values["dongle"]["id"]
                                                                               or values["dongle"]["port"]):
        raise InvalidArgument("the ladder has USB resets but no dongle is configured: set dongle.id and/or dongle.port")
    if hid["enabled"] and "hid_adapter" in hid["ladder"] and not (hid["adapter_id"] or hid["adapter_port"]):
        raise InvalidArgument("the hid_adapter step resets the CH9329's USB adapter: set hid.adapter_id and/or "
                              "hid.adapter_port, or leave the step out of hid.ladder")
    if not probes and not hid["enabled"]:
        raise InvalidArgument("every probe is disabled: configure the dongle, video_node, ustreamer, onekvm2 or hid")


def _check_paths(values: dict) -> None:
    for name in ("state_file", "metrics_file", "video_node"):
        if values[name] and not values[name].startswith("/"):
            raise InvalidArgument("%s must be an absolute path (or empty to disable), got %r" % (name, values[name]))
    if not values["state_file"]:
        raise InvalidArgument("state_file must be set: `onekvm status` reads it")
    if values["ustreamer"]["enabled"] and not values["ustreamer"]["socket"].startswith("/"):
        raise InvalidArgument("ustreamer.socket must be an absolute path, got %r" % values["ustreamer"]["socket"])
    for name in ("kvmd_socket", "kvmd_credentials"):
        if values["hid"][name] and not values["hid"][name].startswith("/"):
            raise InvalidArgument("hid.%s must be an absolute path, got %r" % (name, values["hid"][name]))
    onekvm2 = values["onekvm2"]
    if onekvm2["enabled"]:
        if not onekvm2["credentials"].startswith("/"):
            raise InvalidArgument("onekvm2.credentials must be the absolute path of the root-only file with One-KVM's "
                                  "login, got %r" % onekvm2["credentials"])
        from ._onekvm2_api import Client
        Client(onekvm2["url"])  # refuses anything but http(s)://HOST[:PORT]
    if values["metrics_file"] and not values["metrics_file"].endswith(".prom"):
        raise InvalidArgument("metrics_file must end in .prom (node_exporter's textfile collector reads only those)")
