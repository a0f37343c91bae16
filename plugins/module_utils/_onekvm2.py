# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One-KVM 0.2 (the Rust rewrite, no kvmd): its config sections, the rules it applies to them,
and setting them through its REST API idempotently.

PRIVATE to the onekvm.fleet collection. Box-side core: standard library only, no Ansible.

Every rule names where One-KVM (mofeng-git/One-KVM ``main``, 0.2.5) states it. The rules are
checked here before any request, so a value One-KVM would refuse - or silently not keep - is
refused with One-KVM's own words and nothing is sent.
"""

from __future__ import annotations

import copy
import ipaddress
import os

from ._errors import InvalidArgument

SERVICE = "one-kvm.service"  # build/one-kvm.service
DEFAULT_URL = "http://127.0.0.1:8080"  # src/config/schema/web.rs WebConfig::default http_port
LCUS_RELAY_MAX_CHANNEL = 8  # src/atx/types.rs
SOURCE = "src/web/handlers/config/types.rs"

U16, U32 = ("int", 0xFFFF), ("int", 0xFFFFFFFF)
BOOL, STR = ("bool",), ("str",)


def _enum(*names):
    return ("enum",) + names


def _obj(**fields):
    return ("obj", fields)


_BINDING = _obj(enabled=BOOL, device=STR, pin=U32, active_level=_enum("high", "low"))
_DESCRIPTOR = _obj(vendor_id=U16, product_id=U16, manufacturer=STR, product=STR, serial_number=STR)

# The fields of each section's *ConfigUpdate (types.rs) this collection sets, with their serde
# types. Fields One-KVM accepts but cannot be compared with what GET returns (TLS PEMs, TURN
# password: not returned) are left out on purpose.
SECTIONS = {
    "hid": _obj(backend=_enum("otg", "ch9329", "none"), ch9329_port=STR, ch9329_baudrate=U32,
                ch9329_hybrid_mouse=BOOL, ch9329_descriptor=_DESCRIPTOR, otg_udc=STR,
                otg_descriptor=_DESCRIPTOR,
                otg_profile=_enum("full", "full_no_consumer", "legacy_keyboard", "legacy_mouse_relative",
                                  "custom"),
                otg_functions=_obj(keyboard=BOOL, mouse_relative=BOOL, mouse_absolute=BOOL, consumer=BOOL),
                otg_keyboard_leds=BOOL, mouse_absolute=BOOL),
    "video": _obj(device=STR, format=STR, width=U32, height=U32, fps=U32, quality=U32),
    "stream": _obj(mode=_enum("webrtc", "mjpeg"),
                   encoder=_enum("auto", "software", "vaapi", "nvenc", "qsv", "amf", "rkmpp", "v4l2m2m"),
                   bitrate_preset=("bitrate",), stun_server=STR, turn_server=STR, turn_username=STR),
    "audio": _obj(enabled=BOOL, device=STR, quality=STR),
    "atx": _obj(enabled=BOOL, driver=_enum("gpio", "usbrelay", "serial", "none"), device=STR, baud_rate=U32,
                power=_BINDING, reset=_BINDING, led=_BINDING, hdd=_BINDING, wol_interface=STR),
    "web": _obj(http_port=U16, https_port=U16, bind_addresses=("list", STR), bind_address=STR,
                https_enabled=BOOL),
    "auth": _obj(single_user_allow_multiple_sessions=BOOL),
}
# applied in this order: the ATX serial-device check reads the HID section (config/atx.rs)
ORDER = ("hid", "video", "stream", "audio", "atx", "auth", "web")
BITRATE_TYPES = ("Speed", "Balanced", "Quality", "Custom")  # schema/common.rs BitratePreset
# stream strings: an empty string clears the value, GET then shows null (types.rs apply_to)
_CLEARED_BY_EMPTY = {("stream", "stun_server"), ("stream", "turn_server"), ("stream", "turn_username"),
                     ("hid", "ch9329_descriptor", "serial_number")}


def _refuse(where: str, rule: str, source: str = SOURCE, why: str = "") -> InvalidArgument:
    return InvalidArgument(
        f"{where}: {why}One-KVM refuses this ({source}: \"{rule}\"). Nothing was sent; change the value.",
        field=where, rule=rule, source=source)


def _check_type(spec, value, where: str):
    kind = spec[0]
    if kind == "bool":
        ok = isinstance(value, bool)
        expected = "a boolean (true/false)"
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= spec[1]
        expected = f"an integer 0-{spec[1]} (u{16 if spec[1] == 0xFFFF else 32})"
    elif kind == "str":
        ok = isinstance(value, str)
        expected = "a string"
    elif kind == "enum":
        ok = value in spec[1:]
        expected = "one of " + ", ".join(spec[1:])
    elif kind == "list":
        ok = isinstance(value, list) and all(isinstance(item, str) for item in value)
        expected = "a list of strings"
    elif kind == "bitrate":
        ok = (isinstance(value, dict) and value.get("type") in BITRATE_TYPES
              and set(value) <= {"type", "value"}
              and ((value["type"] == "Custom") == ("value" in value))
              and (value["type"] != "Custom" or _check_type(U32, value["value"], where + ".value") is None))
        expected = ("{type: Speed|Balanced|Quality} or {type: Custom, value: <kbit/s>} "
                    "(schema/common.rs BitratePreset)")
    else:  # obj
        if not isinstance(value, dict):
            raise InvalidArgument(f"{where} must be a mapping of One-KVM settings, got {type(value).__name__}.",
                                  field=where)
        for name, item in value.items():
            sub = spec[1].get(name)
            if sub is None:
                raise InvalidArgument(
                    f"{where}.{name} is not a One-KVM 0.2 setting this module manages (known: "
                    f"{', '.join(sorted(spec[1]))}). One-KVM ignores unknown fields without an error, so it would "
                    f"never be applied; check the name.", field=f"{where}.{name}")
            _check_type(sub, item, f"{where}.{name}")
        return None
    if not ok:
        raise InvalidArgument(f"{where}={value!r} has the wrong type: One-KVM expects {expected}. Nothing was sent.",
                              field=where)
    return None


def check_types(settings) -> None:
    """Settings are {section: {field: value}} of known sections and fields with One-KVM's types."""
    if not isinstance(settings, dict):
        raise InvalidArgument("settings must be a mapping of One-KVM config sections.", field="settings")
    for section, values in settings.items():
        if section not in SECTIONS:
            raise InvalidArgument(
                f"settings.{section} is not a One-KVM 0.2 config section this module manages (known: "
                f"{', '.join(ORDER)}).", field=f"settings.{section}")
        _check_type(SECTIONS[section], values, section)


def merged(current: dict, desired: dict) -> dict:
    """current with desired laid over it, nested settings field by field (One-KVM's apply_to)."""
    out = copy.deepcopy(current)
    for name, value in desired.items():
        if isinstance(value, dict) and isinstance(out.get(name), dict) and name != "bitrate_preset":
            out[name] = merged(out[name], value)
        else:
            out[name] = copy.deepcopy(value)
    return out


def _same(section_path: tuple, have, want) -> bool:
    if section_path in _CLEARED_BY_EMPTY and want == "" and have is None:
        return True
    return have == want


def differing(current: dict, desired: dict, path: tuple = ()) -> dict:
    """The part of desired that differs from current: what PATCH must send (nested partially)."""
    out = {}
    for name, want in desired.items():
        have = current.get(name) if isinstance(current, dict) else None
        if isinstance(want, dict) and isinstance(have, dict) and name != "bitrate_preset":
            sub = differing(have, want, path + (name,))
            if sub:
                out[name] = sub
        elif not _same(path + (name,), have, want):
            out[name] = want
    return out


def _exists(root: str, path: str) -> bool:
    return os.path.exists(root + path)


def check_rules(section: str, desired: dict, after: dict, config_after: dict, root: str = "",
                check_devices: bool = True) -> None:
    """One-KVM's rules for one section: ``desired`` as given, ``after`` the section once applied,
    ``config_after`` every section once applied (for rules across sections)."""
    where = section + "."
    if section == "video":
        for field, low, high in (("width", 320, 7680), ("height", 240, 4320), ("fps", 1, 120),
                                 ("quality", 1, 100)):
            if field in desired and not low <= desired[field] <= high:
                raise _refuse(where + field, f"Invalid {field}: must be {low}-{high}")
        if not after.get("device"):
            raise _refuse(where + "device", "video_device is required",
                          "src/web/handlers/config/apply.rs apply_video_config (after storing the change)")
        if check_devices and "device" in desired and not _exists(root, desired["device"]):
            raise _refuse(where + "device", "Failed to apply video config",
                          "src/web/handlers/config/apply.rs apply_video_config, after storing the change",
                          why=f"{desired['device']} does not exist on this box. ")
    elif section == "hid":
        if "ch9329_baudrate" in desired and desired["ch9329_baudrate"] not in (9600, 19200, 38400, 57600, 115200):
            raise _refuse(where + "ch9329_baudrate", "Invalid baudrate: must be 9600, 19200, 38400, 57600, or 115200")
        for descriptor, limit, unit in (("otg_descriptor", 126, "chars"), ("ch9329_descriptor", 23,
                                                                           "bytes for CH9329")):
            for field, label in (("manufacturer", "Manufacturer"), ("product", "Product"),
                                 ("serial_number", "Serial number")):
                text = desired.get(descriptor, {}).get(field)
                if text is not None and len(text.encode("utf-8")) > limit:
                    raise _refuse(f"{where}{descriptor}.{field}", f"{label} string too long (max {limit} {unit})")
        if "ch9329_descriptor" in desired and after["backend"] != "ch9329":
            raise _refuse(where + "ch9329_descriptor",
                          "the CH9329 descriptor is written to the chip and kept only with backend ch9329",
                          "src/web/handlers/config/usb_update.rs stage_hid_config_update")
        if after["backend"] == "otg":
            functions = {"full": True, "full_no_consumer": True, "legacy_keyboard": True,
                         "legacy_mouse_relative": True}.get(after.get("otg_profile", "full"))
            if not functions and not any(after.get("otg_functions", {}).values()):
                raise _refuse(where + "otg_functions", "OTG HID functions cannot be empty", "src/config/schema/hid.rs")
        if check_devices and after["backend"] == "ch9329" and not _exists(root, after["ch9329_port"]):
            raise _refuse(where + "ch9329_port", "Failed to reload HID backend",
                          "src/hid/mod.rs reload, rolled back by src/web/handlers/config/usb_update.rs",
                          why=f"{after['ch9329_port']} does not exist on this box. ")
    elif section == "atx":
        _check_atx(desired, after, config_after, root, check_devices)
    elif section == "audio":
        if "quality" in desired and desired["quality"] not in ("voice", "balanced", "high"):
            raise _refuse(where + "quality", "Invalid quality: must be 'voice', 'balanced', or 'high'")
    elif section == "stream":
        stun, turn = desired.get("stun_server"), desired.get("turn_server")
        if stun and not stun.startswith("stun:"):
            raise _refuse(where + "stun_server",
                          "STUN server must start with 'stun:' (e.g., stun:stun.l.google.com:19302)")
        if turn and not turn.startswith(("turn:", "turns:")):
            raise _refuse(where + "turn_server",
                          "TURN server must start with 'turn:' or 'turns:' (e.g., turn:turn.example.com:3478)")
    elif section == "web":
        for field, label in (("http_port", "HTTP"), ("https_port", "HTTPS")):
            if desired.get(field) == 0:
                raise _refuse(where + field, f"{label} port cannot be 0")
        for field in ("bind_addresses", "bind_address"):
            values = desired.get(field, [])
            for addr in values if isinstance(values, list) else [values]:
                try:
                    ipaddress.ip_address(addr)
                except ValueError:
                    raise _refuse(where + field, "Invalid bind address") from None
        if "bind_addresses" in desired and "bind_address" in desired and desired["bind_addresses"] \
                and desired["bind_address"] != desired["bind_addresses"][0]:
            raise _refuse(where + "bind_address", "bind_address becomes the first of bind_addresses",
                          f"{SOURCE} WebConfigUpdate::apply_to")


def _check_atx(desired: dict, after: dict, config_after: dict, root: str, check_devices: bool) -> None:
    # types.rs AtxConfigUpdate::validate and validate_with_current; schema/atx.rs normalize
    if desired.get("baud_rate") == 0:
        raise _refuse("atx.baud_rate", "ATX baud_rate must be greater than 0")
    if after["driver"] == "none":
        if after["enabled"]:
            raise _refuse("atx.enabled", "ATX driver must not be none when ATX is enabled")
        return
    if after["driver"] != "gpio":
        for name in ("led", "hdd"):
            if desired.get(name, {}).get("enabled"):
                raise _refuse(f"atx.{name}.enabled", f"{name} sensing is kept only with the gpio driver",
                              "src/config/schema/atx.rs AtxConfig::normalize")
    if not after["enabled"]:
        return
    devices = []
    if after["driver"] == "gpio":
        devices = [(name, after[name]["device"]) for name in ("power", "reset", "led", "hdd")
                   if after[name]["enabled"]]
    else:
        label = "ATX LCUS HID relay" if after["driver"] == "usbrelay" else "ATX LCUS serial relay"
        devices = [(label, after["device"])]
        for name in ("power", "reset"):
            pin = after[name]["pin"]
            if after[name]["enabled"] and not 1 <= pin <= LCUS_RELAY_MAX_CHANNEL:
                raise _refuse(f"atx.{name}.pin", f"{name} channel must be between 1 and {LCUS_RELAY_MAX_CHANNEL}")
    for name, device in devices:
        if not device.strip():
            raise _refuse("atx", f"{name} device cannot be empty")
        if check_devices and not _exists(root, device.strip()):
            raise _refuse("atx", f"{name} device '{device.strip()}' does not exist")
    hid = config_after["hid"]
    port = hid["ch9329_port"].strip()
    if hid["backend"] == "ch9329" and port and after["driver"] == "serial" and after["device"].strip() == port:
        raise _refuse("atx.device", f"ATX serial device '{port}' conflicts with HID CH9329 serial device",
                      "src/web/handlers/config/atx.rs validate_serial_device_conflict")


def plan(settings: dict, current: dict, root: str = "", check_devices: bool = True) -> list:
    """[(section, patch)] to send, in ORDER, after checking every rule. ``current`` holds the
    GET answer of each section in ``settings`` (and ``hid`` when ``atx`` is set)."""
    check_types(settings)
    config_after = {name: merged(current[name], settings.get(name, {})) for name in current}
    steps = []
    for section in ORDER:
        if section not in settings:
            continue
        desired = settings[section]
        patch = differing(current[section], desired, (section,))
        if not patch:
            continue
        check_rules(section, desired, config_after[section], config_after, root, check_devices)
        steps.append((section, patch))
    return steps


# GET /api/stream/status ``state`` (src/video/streamer.rs StreamerState::as_str) and what it says about
# the capture dongle. USB-class failures (src/video/signal.rs: EPROTO, repeated DQBUF timeouts; the
# device gone, ENODEV/ENXIO in src/video/capture/status.rs) are what One-KVM only soft-restarts and
# re-finds, and what a USB reset or a port power cycle can heal. No signal from the target (cable,
# sync, range, or a machine switched off) is no evidence against the dongle; neither is an idle streamer.
STREAM_OK = ("streaming",)
STREAM_FAILING = ("uvc_usb_error", "uvc_capture_stall", "device_lost", "recovering", "error")
STREAM_NO_EVIDENCE = ("uninitialized", "ready", "no_signal", "no_cable", "no_sync", "out_of_range", "device_busy")


def stream_health(status) -> tuple:
    """``(True | False | None, detail)`` from One-KVM's stream status."""
    state = status.get("state") if isinstance(status, dict) else None
    if not isinstance(state, str):
        return None, "One-KVM's stream status has no state (is this One-KVM 0.2?)"
    state = state[:40]
    device = status.get("device")
    where = " (%s)" % str(device)[:80] if device else ""
    if state in STREAM_OK:
        return True, "One-KVM streams%s at %s fps" % (where, status.get("fps"))
    if state in STREAM_FAILING:
        return False, "One-KVM's capture is %s%s" % (state, where)
    if state in STREAM_NO_EVIDENCE:
        return None, "One-KVM's capture is %s%s: no evidence about the dongle" % (state, where)
    return None, "One-KVM's capture state %r is not known here" % state
