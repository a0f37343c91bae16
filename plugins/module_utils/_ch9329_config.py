# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The CH9329's 50-byte parameter configuration (GET_PARA_CFG / SET_PARA_CFG) as named fields,
the checks of the changes asked for, and the config a change gives.

PRIVATE to the onekvm.fleet collection. Box-side core: standard library only.
"""

from __future__ import annotations

from ._ch9329_protocol import BAUD_RATES, BROADCAST_ADDRESS, MAX_ADDRESS, hex_bytes
from ._errors import DeviceError, InvalidArgument


CONFIG_SIZE = 50
MAX_STRING = 23  # bytes the chip keeps per USB string descriptor

MODES = ("keyboard_mouse", "keyboard", "mouse", "custom_hid")
SERIAL_MODES = ("protocol", "ascii", "transparent")
STRING_TYPES = {"manufacturer": 0x00, "product": 0x01, "serial": 0x02}
STRING_FLAG_BITS = {"manufacturer": 0x04, "product": 0x02, "serial": 0x01}
CUSTOM_STRINGS_BIT = 0x80
SET_BY_PINS = 0x80
# WCH's document, SET_PARA_CFG: the working mode "may be set to 00-03 only" and the serial mode
# to 00-02 only; 80-83 / 80-82 are what GET_PARA_CFG reports when the mode pins set the mode.
# So bit 7 of bytes 0-1 is never written (the mode bits are kept: the same mode, now as set
# by software), and comparisons and the read-back ignore it: software cannot change it.
PIN_SET_OFFSETS = (0, 1)

# VID/PID byte order in the config: the factory default 1A86:E129 reads back as
# 86 1A 29 E1, so the chip stores them little-endian. The one place that decides it.
ID_BYTE_ORDER = "little"

# name -> (offset, size, kind) of the config fields; kind "be" = big-endian integer
CONFIG_FIELDS = {
    "mode": (0, 1, "u8"),
    "serial_mode": (1, 1, "u8"),
    "address": (2, 1, "u8"),
    "baudrate": (3, 4, "be"),
    "packet_interval": (9, 2, "be"),
    "vid": (11, 2, "id"),
    "pid": (13, 2, "id"),
    "ascii_upload_interval": (15, 2, "be"),
    "ascii_release_delay": (17, 2, "be"),
    "ascii_auto_enter": (19, 1, "u8"),
    "ascii_enter_chars": (20, 8, "bytes"),
    "ascii_filter_strings": (28, 8, "bytes"),
    "string_flags": (36, 1, "u8"),
    "ascii_fast_upload": (37, 1, "u8"),
}


# -- the config --------------------------------------------------------------------------
def parse_id(value, what: str) -> int:
    """A USB VID/PID from an int or a hex string (``1a86``, ``0x1A86``)."""
    if isinstance(value, bool):
        raise InvalidArgument("%s must be a 16-bit number like 0x1A86, got %r" % (what, value))
    if isinstance(value, int):
        number = value
    else:
        text = str(value).strip().lower()
        try:
            number = int(text[2:] if text.startswith("0x") else text, 16)
        except ValueError:
            raise InvalidArgument("%s must be a 16-bit hex number like 1a86 or 0x1A86, got %r" % (what, value)) from None
    if not 0 <= number <= 0xFFFF:
        raise InvalidArgument("%s 0x%X is out of range: it must fit in 16 bits (0000-FFFF)" % (what, number))
    return number


class ChipConfig:
    """The 50 config bytes with named fields; unknown and reserved bytes are kept as read.

    A longer reply (the CH9329F's 72 or 88 bytes seen in the field, One-KVM PR #302, not in
    WCH's document) is read for its first 50 bytes, laid out as the document says; the rest
    is kept in ``extra`` and shown, never interpreted or written.
    """

    def __init__(self, raw: bytes, extra: bytes = b"") -> None:
        if len(raw) < CONFIG_SIZE:
            raise DeviceError("the CH9329 sent a %d-byte config, expected %d; the chip or the link is misbehaving"
                              % (len(raw), CONFIG_SIZE), reply=hex_bytes(raw))
        self.raw = bytes(raw[:CONFIG_SIZE])
        self.extra = bytes(raw[CONFIG_SIZE:]) + bytes(extra)

    def writable(self) -> ChipConfig:
        """What SET_PARA_CFG may carry: these bytes with the pin-set bit 7 of the modes cleared."""
        raw = bytearray(self.raw)
        for offset in PIN_SET_OFFSETS:
            raw[offset] &= ~SET_BY_PINS & 0xFF
        return ChipConfig(bytes(raw), self.extra)

    def get(self, name: str):
        offset, size, kind = CONFIG_FIELDS[name]
        chunk = self.raw[offset:offset + size]
        if kind == "bytes":
            return chunk
        return int.from_bytes(chunk, ID_BYTE_ORDER if kind == "id" else "big")

    def replaced(self, **values) -> ChipConfig:
        """A copy with the named integer fields set (values are checked by ``validate_changes``)."""
        raw = bytearray(self.raw)
        for name, value in values.items():
            offset, size, kind = CONFIG_FIELDS[name]
            raw[offset:offset + size] = bytes(value) if kind == "bytes" else \
                int(value).to_bytes(size, ID_BYTE_ORDER if kind == "id" else "big")
        return ChipConfig(bytes(raw), self.extra)

    @property
    def mode(self) -> str:
        return _name_of(MODES, self.get("mode"))

    @property
    def serial_mode(self) -> str:
        return _name_of(SERIAL_MODES, self.get("serial_mode"))

    def as_dict(self) -> dict:
        flags = self.get("string_flags")
        return {
            "mode": self.mode,
            "mode_set_by_pins": bool(self.get("mode") & SET_BY_PINS),
            "serial_mode": self.serial_mode,
            "serial_mode_set_by_pins": bool(self.get("serial_mode") & SET_BY_PINS),
            "address": self.get("address"),
            "baudrate": self.get("baudrate"),
            "packet_interval": self.get("packet_interval"),
            "vid": "%04x" % self.get("vid"),
            "pid": "%04x" % self.get("pid"),
            "vid_raw": hex_bytes(self.raw[11:13]),
            "pid_raw": hex_bytes(self.raw[13:15]),
            "custom_strings": bool(flags & CUSTOM_STRINGS_BIT),
            "string_flags": {name: bool(flags & bit) for name, bit in STRING_FLAG_BITS.items()},
            "ascii_upload_interval": self.get("ascii_upload_interval"),
            "ascii_release_delay": self.get("ascii_release_delay"),
            "ascii_auto_enter": self.get("ascii_auto_enter"),
            "ascii_enter_chars": hex_bytes(self.get("ascii_enter_chars")),
            "ascii_filter_strings": hex_bytes(self.get("ascii_filter_strings")),
            "ascii_fast_upload": self.get("ascii_fast_upload"),
            "raw": hex_bytes(self.raw),
            "reply_size": CONFIG_SIZE + len(self.extra),
            "raw_extra": hex_bytes(self.extra),
        }


def _name_of(names: tuple, value: int) -> str:
    index = value & 0x7F
    return names[index] if index < len(names) else "unknown_0x%02x" % value


def validate_changes(changes: dict) -> dict:
    """Check desired settings (None = leave alone); returns them normalised. Touches nothing."""
    out = {}
    for name, value in changes.items():
        if value is None:
            continue
        if name == "mode" and value not in MODES:
            raise InvalidArgument("mode %r is not one of %s" % (value, ", ".join(MODES)))
        if name == "serial_mode" and value not in SERIAL_MODES:
            raise InvalidArgument("serial_mode %r is not one of %s" % (value, ", ".join(SERIAL_MODES)))
        if name == "baudrate":
            value = validate_baudrate(value, allow_auto=False)
        if name == "address":
            value = validate_address(value, allow_auto=False, wanted=True)
        if name in ("vid", "pid"):
            value = parse_id(value, name.upper())
        if name == "packet_interval" and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF):
            raise InvalidArgument("packet_interval must be 0-65535 ms, got %r" % (value,))
        if name == "usb_strings":
            value = validate_strings(value)
        out[name] = value
    if out.get("custom_strings") is False and out.get("usb_strings"):
        raise InvalidArgument("custom_strings: false turns the chip's own USB strings off, so usb_strings (%s) would "
                              "never be shown; drop one of them" % ", ".join(sorted(out["usb_strings"])))
    return out


def validate_baudrate(value, allow_auto: bool = True):
    if allow_auto and value == "auto":
        return "auto"
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number not in BAUD_RATES or isinstance(value, bool):
        raise InvalidArgument("baudrate %r is not one the CH9329 supports: %s%s" % (
            value, ", ".join(map(str, BAUD_RATES)), " or auto" if allow_auto else ""))
    return number


def validate_address(value, allow_auto: bool = True, wanted: bool = False):
    """A chip address 0-254 (or ``auto``: find the chip by asking each address in turn).

    255 (FF) is refused: it is the broadcast address, which a chip acts on but never
    answers (WCH's document), so nothing could be read or checked there.
    """
    if allow_auto and value == "auto":
        return "auto"
    number = value
    if isinstance(value, str) and value.strip().isdigit():
        number = int(value)
    hint = " or auto to find the chip" if allow_auto else ""
    if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number <= BROADCAST_ADDRESS:
        raise InvalidArgument("address must be 0-%d%s, got %r" % (MAX_ADDRESS, hint, value))
    if number == BROADCAST_ADDRESS:
        if wanted:
            raise InvalidArgument("address 255 (FF) is the CH9329's broadcast address: a chip set to it would act on "
                                  "broadcasts but never answer again; choose 0-%d" % MAX_ADDRESS)
        raise InvalidArgument("address 255 (FF) is the CH9329's broadcast address: the chip acts on it but never "
                              "answers, so nothing can be read or checked there; give the chip's address (0 from "
                              "the factory)%s" % hint)
    return number


def validate_strings(strings) -> dict:
    if not isinstance(strings, dict):
        raise InvalidArgument("usb_strings must be a mapping of manufacturer, product and serial")
    out = {}
    for name, text in strings.items():
        if name not in STRING_TYPES:
            raise InvalidArgument("usb_strings.%s is unknown; use manufacturer, product or serial" % name)
        if text is None:
            continue
        try:
            data = str(text).encode("ascii")
        except UnicodeEncodeError:
            raise InvalidArgument("usb_strings.%s must be plain ASCII, got %r" % (name, text)) from None
        if len(data) > MAX_STRING:
            raise InvalidArgument("usb_strings.%s is %d bytes; the CH9329 keeps at most %d" % (name, len(data), MAX_STRING))
        out[name] = str(text)
    return out


def kvmd_safety_problems(changes: dict) -> list:
    """Settings among ``changes`` that would leave kvmd unable to drive the chip."""
    problems = []
    if changes.get("serial_mode") not in (None, "protocol"):
        problems.append("serial_mode %s (kvmd speaks only the protocol mode)" % changes["serial_mode"])
    if changes.get("mode") not in (None, "keyboard_mouse"):
        problems.append("mode %s (kvmd sends both keyboard and mouse reports)" % changes["mode"])
    if changes.get("address") not in (None, 0):
        problems.append("address %d (kvmd always talks to address 0)" % changes["address"])
    return problems


def desired_config(current: ChipConfig, changes: dict) -> ChipConfig:
    """``current`` with ``changes`` applied, changing only the bytes that must change, in
    the form SET_PARA_CFG may carry (pin-set bits cleared, see PIN_SET_OFFSETS)."""
    current = current.writable()
    values = {}
    if "mode" in changes and current.mode != changes["mode"]:
        values["mode"] = MODES.index(changes["mode"])
    if "serial_mode" in changes and current.serial_mode != changes["serial_mode"]:
        values["serial_mode"] = SERIAL_MODES.index(changes["serial_mode"])
    for name in ("address", "baudrate", "vid", "pid", "packet_interval"):
        if name in changes:
            values[name] = changes[name]
    flags = current.get("string_flags")
    if changes.get("usb_strings"):
        flags |= CUSTOM_STRINGS_BIT
        for name in changes["usb_strings"]:
            flags |= STRING_FLAG_BITS[name]
    if changes.get("custom_strings") is False:
        flags = 0
    elif changes.get("custom_strings") is True:
        flags |= CUSTOM_STRINGS_BIT
    values["string_flags"] = flags
    return current.replaced(**values)
