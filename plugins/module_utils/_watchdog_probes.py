# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The watchdog's health probes and how their results fold into a verdict.

PRIVATE to the onekvm.fleet collection. Box-side core: standard library only (pyusb and
pyserial are reached through ``_usb`` / ``_ch9329``, imported when first needed).
"""

from __future__ import annotations

import collections
import os

from . import _ustreamer
from ._errors import Busy, InvalidArgument, NotFound, OnekvmError, PermissionDenied
from ._watchdog_config import Config


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
        except Exception as exc:  # pylint: disable=broad-except
            # an answer nobody foresaw (they come from sockets and files others control) must
            # not end the service: no evidence this time, and the detail says what happened
            results[name] = [None, "probe failed unexpectedly: %s: %s" % (type(exc).__name__, exc)]
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


def probe_onekvm2(config: Config, get_status=None) -> tuple:
    """One-KVM 0.2's own capture state (GET /api/stream/status); see _onekvm2.stream_health."""
    from . import _onekvm2
    settings = config.onekvm2
    try:
        status = (get_status or _onekvm2_stream_status)(settings)
    except (NotFound, PermissionDenied, InvalidArgument) as exc:  # One-KVM down or the login refused: no evidence
        return None, "One-KVM not asked: %s" % exc.msg
    except OnekvmError as exc:
        return None, "One-KVM's stream status unavailable: %s" % exc.msg
    return _onekvm2.stream_health(status)


def _onekvm2_stream_status(settings: dict) -> dict:
    from ._kvmd_api import read_credentials
    from ._onekvm2_api import Client
    user, passwd = read_credentials(settings["credentials"], "One-KVM credentials",
                                    "set onekvm_onekvm2_username/_password for the watchdog")
    with Client(settings["url"], settings["timeout"]) as api:
        api.login(user, passwd)
        return api.get("/api/stream/status")


def probe_hid(config: Config, port_users=None, get_info=None, ask_kvmd=None) -> tuple:
    """The CH9329 answers: asked directly while nobody holds the port, else kvmd is asked.

    kvmd polls the chip every 0.1 s through the port it holds; a second reader would take
    its replies (or kvmd ours), so then kvmd's own GET /hid ``online`` is the evidence.
    """
    if port_users is None:
        from ._serialport import port_users
    device = config.hid["device"]
    holders = port_users(device)
    if holders:
        if not config.hid["kvmd_credentials"]:
            return None, ("HID not probed: %s holds %s (give the watchdog kvmd credentials to ask kvmd)"
                          % (", ".join(h["comm"] for h in holders), device))
        return (ask_kvmd or probe_kvmd_hid)(config)
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


def probe_kvmd_hid(config: Config) -> tuple:
    """kvmd's HID state (GET /hid over its unix socket): ``online`` true or false."""
    from . import _kvmd_api
    socket_path = config.hid["kvmd_socket"]
    try:
        state = _kvmd_api.hid_state(socket_path, _kvmd_api.read_credentials(config.hid["kvmd_credentials"]),
                                    config.hid["timeout"] + 1.0)
    except (NotFound, PermissionDenied, InvalidArgument) as exc:  # kvmd stopped or credentials wrong: no evidence
        return None, "HID not probed: %s" % exc.msg
    except OnekvmError as exc:
        return False, "kvmd's HID state unavailable: %s" % exc.msg
    if state["online"]:
        return True, "kvmd reports the CH9329 online"
    return False, "kvmd reports the CH9329 offline (GET /api/hid online=false)"


def domain_probes(config: Config) -> dict:
    """The probes the config enables, by failure domain: ``{"capture": {...}, "hid": {...}}``."""
    probes = default_probes(config)
    found = collections.OrderedDict()
    for domain in config.domains:
        names = ("hid",) if domain == "hid" else ("dongle", "video_node", "ustreamer", "onekvm2")
        found[domain] = collections.OrderedDict((n, probes[n]) for n in names if n in probes)
    return found


def default_probes(config: Config) -> dict:
    """The probes the config enables, in the order they run."""
    probes = collections.OrderedDict()
    if config.dongle_probe:
        probes["dongle"] = probe_dongle
    if config.video_node:
        probes["video_node"] = probe_video_node
    if config.ustreamer["enabled"]:
        probes["ustreamer"] = probe_ustreamer
    if config.onekvm2["enabled"]:
        probes["onekvm2"] = probe_onekvm2
    if config.hid["enabled"]:
        probes["hid"] = probe_hid
    return probes


def _short(info) -> str:
    if isinstance(info, dict):
        return ", ".join("%s=%s" % (k, info[k]) for k in sorted(info) if not isinstance(info[k], (dict, list)))[:120]
    return str(info)[:120]


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


def _ch9329_get_info(device: str, timeout: float):
    """GET_INFO, never pausing kvmd: opened read-only, so a kvmd that took the port after
    ``probe_hid`` looked is ``KvmdHoldsPort`` here and the chip is not spoken to."""
    from . import _ch9329
    options = _ch9329.LinkOptions(port=device, timeout=timeout, pause_kvmd=False, lock_timeout=timeout)
    try:
        with _ch9329.open_chip(options, read_only=True) as (chip, dummy):
            return chip.get_info()
    except Busy as exc:  # kvmd holds the port, or a reset is running: no verdict this time
        raise InvalidArgument("HID not probed: %s" % exc.msg) from None
