# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The WCH CH9329 serial-to-USB-HID chip: frames, replies, the 50-byte config and the
chip operations (reset with a ready check, info, apply a config).

PRIVATE to the onekvm.fleet collection. Box-side core: standard library + pyserial.

Frame: ``57 AB`` head, address, command, length N, N data bytes, checksum (sum of all
preceding bytes mod 256). The chip answers ``command | 0x80`` on success and
``command | 0xC0`` with one status byte on failure. Config changes take effect after
RESET; after RESET the chip is deaf for a while (up to ~3 s).

From WCH's protocol document ("CH9329芯片串口通信协议" V1.2): a chip at address 00 accepts
frames with any address code, a chip at 01-FE its own address or FF; FF is broadcast and
never answered, so it cannot be used to read or check anything. A packet ends after the
packet interval (3 ms) of silence: every frame is written in one ``write``.

Used by the modules (ch9329_reset, ch9329_info, ch9329_config), the box command
(``onekvm ch9329-reset`` / ``ch9329-info``) and the capture watchdog.
"""

from __future__ import annotations

import contextlib
import os
import time

from . import _kvmd
from ._errors import DeviceError, InvalidArgument, Timeout
from ._limits import check
from ._lock import hardware_lock
from ._serialport import check_tty, open_port

HEAD = b"\x57\xab"
BROADCAST_ADDRESS = 0xFF  # the chip acts on it but never answers (WCH's document)
MAX_ADDRESS = 0xFE  # the highest address a chip answers at

CMD_GET_INFO = 0x01
CMD_KEYBOARD = 0x02
CMD_GET_PARA_CFG = 0x08
CMD_SET_PARA_CFG = 0x09
CMD_GET_USB_STRING = 0x0A
CMD_SET_USB_STRING = 0x0B
CMD_SET_DEFAULT_CFG = 0x0C
CMD_RESET = 0x0F

COMMAND_NAMES = {
    0x01: "GET_INFO", 0x02: "SEND_KB_GENERAL_DATA", 0x03: "SEND_KB_MEDIA_DATA", 0x04: "SEND_MS_ABS_DATA",
    0x05: "SEND_MS_REL_DATA", 0x06: "SEND_MY_HID_DATA", 0x08: "GET_PARA_CFG", 0x09: "SET_PARA_CFG",
    0x0A: "GET_USB_STRING", 0x0B: "SET_USB_STRING", 0x0C: "SET_DEFAULT_CFG", 0x0F: "RESET",
}

STATUS_OK = 0x00
STATUS_WORDS = {
    0x00: "success",
    0xE1: "E1 byte timeout (the chip got a partial frame)",
    0xE2: "E2 bad frame head",
    0xE3: "E3 unknown command",
    0xE4: "E4 checksum error",
    0xE5: "E5 bad parameter",
    0xE6: "E6 execution failed",
}

BAUD_RATES = (9600, 19200, 38400, 57600, 115200)
PROBE_ORDER = (9600, 115200, 57600, 38400, 19200)  # factory default first, then kvmd's usual choices
DEFAULT_BAUDRATE = 9600
KVMD_DEFAULT_DEVICE = "/dev/kvmd-hid"  # kvmd's ch9329 plugin default for hid.device
DEFAULT_TIMEOUT = 1.0
DEFAULT_READY_TIMEOUT = 5.0
# finding a chip at an unknown address: one GET_INFO per address 0-254; each waits for the
# exchange's wire time plus this (the chip's packet interval, its answer, the USB-serial
# adapter's latency), so a scan takes 255 x (20 bytes' wire time + 25 ms): see scan_seconds
SCAN_SLACK = 0.025
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


class ChipError(DeviceError):
    """The chip answered with an error status (E1-E6)."""


# -- frames ----------------------------------------------------------------------------
def checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def encode_frame(command: int, data: bytes = b"", address: int = 0) -> bytes:
    """The frame for ``command`` with ``data`` to the chip at ``address``."""
    if not 0 <= command <= 0xFF or not 0 <= address <= 0xFF or len(data) > 0xFF:
        raise InvalidArgument("cannot encode command 0x%X with %d data bytes for address %d" % (command, len(data), address))
    body = HEAD + bytes((address, command, len(data))) + bytes(data)
    return body + bytes((checksum(body),))


class Reply:
    """A checked reply frame."""

    def __init__(self, address: int, command: int, data: bytes, raw: bytes) -> None:
        self.address = address
        self.command = command
        self.data = data
        self.raw = raw

    @property
    def is_error(self) -> bool:
        return self.command & 0xC0 == 0xC0

    @property
    def status(self) -> int | None:
        """The status byte of a status-only reply (None when the reply carries data)."""
        return self.data[0] if len(self.data) == 1 else None

    def __repr__(self) -> str:
        return "Reply(%s)" % self.raw.hex(" ")


def frame_end(buf: bytes) -> int | None:
    """Index just past the first complete frame in ``buf`` (None: no complete frame yet)."""
    start = buf.find(HEAD)
    if start < 0 or len(buf) < start + 5:
        return None
    end = start + 6 + buf[start + 4]
    return end if len(buf) >= end else None


def _is_late_reply(buf: bytes, command: int) -> bool:
    """True when ``buf`` starts with a late answer to a GET_INFO poll (not to ``command``)."""
    end = frame_end(buf)
    if end is None:
        return False
    start = bytes(buf).find(HEAD)
    # only answers to GET_INFO, the ready poll, can be late in normal operation
    return command != CMD_GET_INFO and buf[start + 3] in (CMD_GET_INFO | 0x80, CMD_GET_INFO | 0xC0)


def parse_reply(buf: bytes, command: int, address: int = 0) -> Reply:
    """The reply to ``command`` found in ``buf`` (leading noise is skipped).

    Raises ``Timeout`` when ``buf`` holds nothing, ``DeviceError`` for garbage, a truncated
    or corrupt frame, a reply to another command or address, and ``ChipError`` for an
    error status.
    """
    buf = bytes(buf)
    if not buf:
        raise Timeout("no reply from the CH9329", reply="")
    start = buf.find(HEAD)
    if start < 0:
        raise DeviceError("the CH9329's answer is not a frame (garbage %s): wrong baud rate or line noise; check "
                          "baudrate (try baudrate auto) and the cable" % _hex(buf[:32]), reply=_hex(buf))
    frame = buf[start:]
    if len(frame) < 6 or len(frame) < 6 + frame[4]:
        raise DeviceError("truncated reply from the CH9329 (%s): the frame ended early; check the cable and that no "
                          "other program reads the port" % _hex(frame), reply=_hex(buf))
    frame = frame[:6 + frame[4]]
    if checksum(frame[:-1]) != frame[-1]:
        raise DeviceError("corrupt reply from the CH9329 (%s): checksum 0x%02X, expected 0x%02X; check the cable and "
                          "the baud rate" % (_hex(frame), frame[-1], checksum(frame[:-1])), reply=_hex(frame))
    reply = Reply(frame[2], frame[3], frame[5:-1], frame)
    if reply.command & 0x3F != command or not reply.command & 0x80:
        raise DeviceError("the CH9329 answered command 0x%02X to %s (0x%02X) (%s): another program may be using the "
                          "port" % (reply.command, COMMAND_NAMES.get(command, "?"), command, _hex(frame)), reply=_hex(frame))
    # a chip at 00 takes any address code; the document does not say which address it then
    # answers with, so its own (0) is accepted as well as the one asked
    if reply.address not in (address, 0):
        raise DeviceError("reply from CH9329 address %d, expected %d (%s); set address to the chip's address "
                          "(or auto to find it)" % (reply.address, address, _hex(frame)), reply=_hex(frame))
    if reply.is_error or (reply.status is not None and reply.status != STATUS_OK and command not in _DATA_COMMANDS):
        _raise_status(command, reply)
    return reply


_DATA_COMMANDS = (CMD_GET_INFO, CMD_GET_PARA_CFG, CMD_GET_USB_STRING)


def _raise_status(command: int, reply: Reply):
    code = reply.data[0] if reply.data else None
    word = STATUS_WORDS.get(code, "unknown status 0x%02X" % code if code is not None else "no status byte")
    raise ChipError("the CH9329 refused %s: %s" % (COMMAND_NAMES.get(command, "0x%02X" % command), word),
                    status=word, status_code=code, reply=_hex(reply.raw))


def _hex(data: bytes) -> str:
    return bytes(data).hex(" ")


def wire_time(n_bytes: int, baudrate: int) -> float:
    """Seconds ``n_bytes`` take on an 8N1 line (10 bits a byte)."""
    return n_bytes * 10.0 / baudrate


def scan_window(baudrate: int) -> float:
    """How long the address scan waits for each address: GET_INFO out (6 bytes) and its
    answer back (14 bytes) on the wire, plus SCAN_SLACK."""
    return wire_time(6 + 14, baudrate) + SCAN_SLACK


def scan_seconds(baudrate: int) -> float:
    """The planned time of a whole address scan at ``baudrate`` (no chip, or the chip at 254);
    each question costs a little more (the write, the port set-up): ~2 ms measured."""
    return (MAX_ADDRESS + 1) * scan_window(baudrate)


def info_reply_address(buf: bytes):
    """The address in the first good GET_INFO answer in ``buf`` (None: none yet)."""
    start = 0
    while True:
        start = buf.find(HEAD, start)
        if start < 0 or len(buf) < start + 6:
            return None
        end = start + 6 + buf[start + 4]
        if len(buf) < end:
            return None
        frame = buf[start:end]
        if frame[3] == CMD_GET_INFO | 0x80 and checksum(frame[:-1]) == frame[-1]:
            return frame[2]
        start += 1


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
                              % (len(raw), CONFIG_SIZE), reply=_hex(raw))
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
            "vid_raw": _hex(self.raw[11:13]),
            "pid_raw": _hex(self.raw[13:15]),
            "custom_strings": bool(flags & CUSTOM_STRINGS_BIT),
            "string_flags": {name: bool(flags & bit) for name, bit in STRING_FLAG_BITS.items()},
            "ascii_upload_interval": self.get("ascii_upload_interval"),
            "ascii_release_delay": self.get("ascii_release_delay"),
            "ascii_auto_enter": self.get("ascii_auto_enter"),
            "ascii_enter_chars": _hex(self.get("ascii_enter_chars")),
            "ascii_filter_strings": _hex(self.get("ascii_filter_strings")),
            "ascii_fast_upload": self.get("ascii_fast_upload"),
            "raw": _hex(self.raw),
            "reply_size": CONFIG_SIZE + len(self.extra),
            "raw_extra": _hex(self.extra),
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


# -- talking to the chip ---------------------------------------------------------------
class Chip:
    """One open link to a chip: exchanges and the chip's commands."""

    def __init__(self, serial_port, port: str, address: int = 0, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.ser = serial_port
        self.port = port
        self.address = address
        self.timeout = timeout

    @property
    def baudrate(self) -> int:
        return self.ser.baudrate

    def set_baudrate(self, baudrate: int) -> None:
        try:
            self.ser.baudrate = baudrate
        except (OSError, ValueError) as exc:
            raise DeviceError("cannot set %s to %d baud: %s" % (self.port, baudrate, exc), port=self.port) from None

    def exchange(self, command: int, data: bytes = b"", timeout: float | None = None, flush: bool = True) -> Reply:
        """Send one frame, return the checked reply (or raise Timeout / DeviceError)."""
        timeout = self.timeout if timeout is None else timeout
        request = encode_frame(command, data, self.address)
        try:
            if flush:
                self.ser.reset_input_buffer()  # stale bytes (an earlier answer, noise) are not our reply
            self.ser.write(request)
            deadline = time.monotonic() + timeout
            buf = self._read_frame(timeout)
            while _is_late_reply(buf, command) and time.monotonic() < deadline:
                # a late answer to an earlier request (e.g. a ready poll that timed out): skip it
                buf = self._read_frame(deadline - time.monotonic(), buf[frame_end(buf):])
        except OSError as exc:  # pyserial's SerialException is an OSError
            raise DeviceError("I/O error on %s: %s; check the USB-serial adapter (replug or usb_reset it)"
                              % (self.port, exc), port=self.port) from None
        try:
            return parse_reply(buf, command, self.address)
        except Timeout:
            raise Timeout("no answer from the CH9329 on %s at %d baud within %.2f s to %s; check the baud rate (try "
                          "baudrate auto), the cable and that the chip is powered" % (
                              self.port, self.baudrate, timeout, COMMAND_NAMES.get(command, "0x%02X" % command)),
                          port=self.port, baudrate=self.baudrate) from None

    def _read_frame(self, timeout: float, pending: bytes = b"") -> bytes:
        buf = bytearray(pending)
        deadline = time.monotonic() + timeout
        while frame_end(buf) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.ser.timeout = remaining
            buf += self.ser.read(max(1, self.ser.in_waiting))
        return bytes(buf)

    # the chip's commands
    def get_info(self, timeout: float | None = None, flush: bool = True) -> dict:
        data = self.exchange(CMD_GET_INFO, timeout=timeout, flush=flush).data
        if len(data) < 3:
            raise DeviceError("GET_INFO reply too short (%s); the chip is misbehaving" % _hex(data), reply=_hex(data))
        leds = data[2]
        return {
            "version": "V%d.%d" % divmod(data[0] - 0x30 + 10, 10) if data[0] >= 0x30 else "0x%02x" % data[0],
            "version_byte": data[0],
            "usb_enumerated": data[1] == 1,
            "leds": {"num_lock": bool(leds & 1), "caps_lock": bool(leds & 2), "scroll_lock": bool(leds & 4)},
        }

    def read_config(self) -> ChipConfig:
        return ChipConfig(self.exchange(CMD_GET_PARA_CFG).data)

    def write_config(self, config: ChipConfig) -> None:
        self.exchange(CMD_SET_PARA_CFG, config.raw)

    def get_string(self, name: str) -> str:
        data = self.exchange(CMD_GET_USB_STRING, bytes((STRING_TYPES[name],))).data
        if len(data) < 2 or len(data) < 2 + data[1]:
            raise DeviceError("GET_USB_STRING reply malformed (%s)" % _hex(data), reply=_hex(data))
        return data[2:2 + data[1]].decode("ascii", errors="replace")

    def set_string(self, name: str, text: str) -> None:
        payload = text.encode("ascii")
        self.exchange(CMD_SET_USB_STRING, bytes((STRING_TYPES[name], len(payload))) + payload)

    def set_default_config(self) -> None:
        self.exchange(CMD_SET_DEFAULT_CFG)

    def send_reset(self) -> Reply:
        return self.exchange(CMD_RESET)

    def poll_timeout(self) -> float:
        """One GET_INFO exchange on the wire (6 + 14 bytes) plus a little for the chip's answer.

        Short on purpose: a poll sent while the chip reboots is lost, so polling often finds
        it soon after it wakes; a reply slower than this is still taken by the next poll.
        """
        return wire_time(20, self.baudrate) + 0.01

    def wait_ready(self, ready_timeout: float) -> tuple:
        """Poll GET_INFO until the chip answers; returns (info, seconds waited, polls)."""
        start = time.monotonic()
        polls = 0
        flush = True
        while True:
            polls += 1
            try:
                return self.get_info(timeout=self.poll_timeout(), flush=flush), time.monotonic() - start, polls
            except (Timeout, DeviceError) as exc:
                # after silence keep the input: a late answer on a slow link still counts;
                # after a bad answer start clean
                flush = not isinstance(exc, Timeout)
                if time.monotonic() - start >= ready_timeout:
                    raise Timeout("the CH9329 on %s did not answer within %.1f s after RESET (%d polls, last: %s); "
                                  "raise ready_timeout, or power-cycle the chip" % (self.port, ready_timeout, polls, exc.msg),
                                  port=self.port, polls=polls) from None

    def find_address(self) -> int | None:
        """Ask GET_INFO at each address 0..254 in turn; the first answer names the chip's
        address (None: no answer). Address 0 goes first: a chip at 0 answers any address
        code. A late answer still counts: it carries the address of the chip that sent it;
        an address is taken only once a GET_INFO exchange at it has been answered."""
        window = scan_window(self.baudrate)
        buf = b""
        address = 0
        try:
            self.ser.reset_input_buffer()
            while address <= MAX_ADDRESS:
                self.ser.write(encode_frame(CMD_GET_INFO, b"", address))  # one write: one packet
                found = self._scan_answer(time.monotonic() + window, buf)
                buf = b""
                if found is not None and self._answers_at(found):
                    return found
                address += 1
        except OSError as exc:
            raise DeviceError("I/O error on %s: %s; check the USB-serial adapter (replug or usb_reset it)"
                              % (self.port, exc), port=self.port) from None
        return None

    def _scan_answer(self, deadline: float, buf: bytes):
        while True:
            found = info_reply_address(buf)
            if found is not None:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.ser.timeout = remaining
            buf = (buf + self.ser.read(max(1, self.ser.in_waiting)))[-256:]

    def _answers_at(self, address: int) -> bool:
        """Confirm a scan's find (a stray answer, e.g. a late one to an earlier session, is no chip)."""
        self.address = address
        try:
            self.get_info(timeout=scan_window(self.baudrate) + 0.1)
            return True
        except (Timeout, DeviceError):
            return False

    def probe_baudrate(self, rates=PROBE_ORDER) -> int:
        """The first rate in ``rates`` at which the chip answers GET_INFO."""
        tried = []
        for rate in rates:
            self.set_baudrate(rate)
            tried.append(rate)
            try:
                self.get_info(timeout=wire_time(20, rate) + 0.15)
                return rate
            except (Timeout, DeviceError):
                continue
        raise Timeout("no answer from the CH9329 on %s at any baud rate (%s); check the cable, the adapter and the "
                      "chip's power" % (self.port, ", ".join(map(str, tried))), port=self.port)


# -- opening: lock, kvmd pause, port, baud rate --------------------------------------------
def default_port(dev: str = "/dev", kvmd_root: str | None = None) -> str:
    """kvmd's configured CH9329 device, else /dev/kvmd-hid if present, else /dev/ttyUSB0."""
    hid = _kvmd.hid_settings(kvmd_root)
    if hid["type"] == "ch9329" and hid["device"]:
        return hid["device"]
    udev_name = os.path.join(dev, "kvmd-hid")
    return udev_name if os.path.exists(udev_name) else os.path.join(dev, "ttyUSB0")


def default_baudrate(port: str, kvmd_root: str | None = None) -> int:
    """kvmd's ``hid.speed`` when kvmd drives a CH9329 on this port, else the factory 9600."""
    hid = _kvmd.hid_settings(kvmd_root)
    kvmd_device = hid["device"] or KVMD_DEFAULT_DEVICE
    if hid["type"] == "ch9329" and hid["speed"] in BAUD_RATES and _same_file(kvmd_device, port):
        return hid["speed"]
    return DEFAULT_BAUDRATE


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a == b


class LinkOptions:
    """How to reach the chip; validated on construction (nothing touched before)."""

    def __init__(self, port: str | None = None, baudrate=None, address: int = 0, timeout: float = DEFAULT_TIMEOUT,
                 pause_kvmd: bool = True, lock_timeout: float = 30.0, kvmd_root: str | None = None,
                 systemctl: str | None = None) -> None:
        self.kvmd_root = kvmd_root
        self.port = port or default_port(kvmd_root=kvmd_root)
        self.baudrate = validate_baudrate(baudrate) if baudrate not in (None, "") else \
            default_baudrate(self.port, kvmd_root)
        self.address = validate_address(address)
        self.timeout = float(check("ch9329_timeout", timeout, "timeout"))
        self.pause_kvmd = bool(pause_kvmd)
        self.lock_timeout = check("lock_timeout", lock_timeout)
        self.systemctl = systemctl


@contextlib.contextmanager
def open_chip(options: LinkOptions, read_only: bool = False, pause: bool | None = None):
    """Yield ``(chip, report)`` with the hardware lock held, kvmd paused if it holds the
    port (and ``options.pause_kvmd``), the port open, the baud rate and address resolved.
    ``report`` collects what happened.

    The port is checked (a serial tty) before anything else. ``pause`` (default
    ``options.pause_kvmd``) says whether kvmd may be stopped; a ``read_only`` caller that
    may not gets ``_kvmd.KvmdHoldsPort`` when kvmd holds the port: kvmd is untouched.
    """
    check_tty(options.port)
    pause = options.pause_kvmd if pause is None else pause
    report = {"port": options.port, "kvmd_holding": [], "kvmd_paused": [], "warnings": []}
    with hardware_lock(timeout=options.lock_timeout):
        with _kvmd.paused_for_port(options.port, pause, options.systemctl, read_only=read_only) as kvmd:
            report["kvmd_holding"] = kvmd["holding"]
            report["kvmd_paused"] = kvmd["paused"]
            report["warnings"].extend(kvmd["warnings"])
            start_rate = DEFAULT_BAUDRATE if options.baudrate == "auto" else options.baudrate
            ser = open_port(options.port, start_rate, options.timeout)
            try:
                chip = Chip(ser, options.port, 0 if options.address == "auto" else options.address, options.timeout)
                _resolve_link(chip, options)
                report["baudrate"] = chip.baudrate
                report["address"] = chip.address
                yield chip, report
            finally:
                ser.close()


def _resolve_link(chip: Chip, options: LinkOptions) -> None:
    """Find the baud rate and/or the address when they are ``auto``."""
    if options.address != "auto":
        if options.baudrate == "auto":
            chip.probe_baudrate()
        return
    rates = PROBE_ORDER if options.baudrate == "auto" else (chip.baudrate,)
    start = time.monotonic()
    for rate in rates:
        chip.set_baudrate(rate)
        found = chip.find_address()
        if found is not None:
            chip.address = found
            return
    raise Timeout("no CH9329 answered on %s at any address 0-%d at %s baud (%.1f s); check the baud rate (try "
                  "baudrate auto), the cable and the chip's power" % (
                      options.port, MAX_ADDRESS, ", ".join(map(str, rates)), time.monotonic() - start),
                  port=options.port)


def link_argument_spec(baudrate_name: str = "baudrate", address_name: str = "address",
                       pause_kvmd: bool = True) -> dict:
    """The modules' options for reaching the chip (a plain dict: no Ansible import here).
    ``address`` is raw: a number 0-254 or ``auto`` (checked by ``validate_address``)."""
    return {
        "port": {"type": "path"},
        baudrate_name: {"type": "str", "choices": ["auto"] + [str(b) for b in BAUD_RATES]},
        address_name: {"type": "raw", "default": 0},
        "timeout": {"type": "float", "default": DEFAULT_TIMEOUT},
        "pause_kvmd": {"type": "bool", "default": pause_kvmd},
        "lock_timeout": {"type": "float", "default": 30.0},
    }


def link_options_from(params: dict, baudrate_name: str = "baudrate", address_name: str = "address") -> LinkOptions:
    return LinkOptions(port=params["port"], baudrate=params[baudrate_name], address=params[address_name],
                       timeout=params["timeout"], pause_kvmd=params["pause_kvmd"], lock_timeout=params["lock_timeout"])


# -- operations (modules, box command, watchdog) -----------------------------------------------
NOT_READ_HINT = ("reading and checking never stop kvmd (stopping it drops every web session); kvmd's web UI shows "
                 "whether its HID is online and the lock LEDs. To read the chip itself, run again with pause_kvmd: "
                 "true (box command: --pause-kvmd), which stops kvmd for about a second and starts it again, or while "
                 "kvmd is stopped")


def _not_reached(options: LinkOptions, exc: _kvmd.KvmdHoldsPort, warning: str) -> dict:
    """The report of a call that left the chip alone because kvmd holds its port."""
    return {"port": options.port, "baudrate": None if options.baudrate == "auto" else options.baudrate,
            "address": None if options.address == "auto" else options.address,
            "kvmd_holding": list(exc.details.get("units", [])), "kvmd_paused": [],
            "warnings": ["%s: %s" % (exc.msg, warning)]}


def _kvmd_note(report: dict) -> str:
    if report.get("kvmd_paused"):
        return "; %s paused for it and started again" % " and ".join(report["kvmd_paused"])
    return ""


def reset(options: LinkOptions, retries: int = 1, wait_ready: bool = True,
          ready_timeout: float = DEFAULT_READY_TIMEOUT, check_mode: bool = False) -> dict:
    """Reset the chip (RESET with a checked reply) and wait until it answers again.

    kvmd is paused only when it holds the port (and ``options.pause_kvmd``). In check mode
    kvmd is never touched: the chip is probed with GET_INFO when the port is free, and no
    RESET is sent.
    """
    check("retries", retries)
    check("ready_timeout", ready_timeout)
    start = time.monotonic()
    if check_mode:
        try:
            with open_chip(options, read_only=True, pause=False) as (chip, report):
                report.update(info=chip.get_info(), probed=True, attempts=0, reply=None, status=None, ready_after=None)
                return _finish(report, start, changed=True, message="the CH9329 answers; RESET not sent (check mode)")
        except _kvmd.KvmdHoldsPort as exc:
            report = _not_reached(options, exc, "the chip was not probed (check mode never stops kvmd; a real run "
                                                "pauses it for the reset)")
            report.update(info=None, probed=False, attempts=0, reply=None, status=None, ready_after=None)
            return _finish(report, start, changed=True,
                           message="RESET not sent (check mode); the chip was not probed: kvmd holds the port")
    with open_chip(options) as (chip, report):
        reply, attempts = _send_reset(chip, retries, ready_timeout)
        report.update(reply=_hex(reply.raw), status=STATUS_WORDS[STATUS_OK], attempts=attempts,
                      info=None, ready_after=None, polls=0)
        if wait_ready:
            # the reply left the chip just before it rebooted; timing starts at the reply
            info, waited, polls = chip.wait_ready(ready_timeout)
            report.update(info=info, ready_after=round(waited, 3), polls=polls)
    message = "CH9329 reset" + (" and answering again after %.2f s" % report["ready_after"] if wait_ready else "")
    return _finish(report, start, changed=True, message=message + _kvmd_note(report))


def _send_reset(chip: Chip, retries: int, ready_timeout: float) -> tuple:
    attempt = 1
    while True:
        try:
            return chip.send_reset(), attempt
        except (Timeout, DeviceError) as exc:
            if attempt > retries:
                if retries:
                    raise type(exc)("%s (after %d attempts)" % (exc.msg, attempt), **dict(exc.details, attempts=attempt)) from None
                raise
            if not isinstance(exc, Timeout):
                # the chip answered (badly): it may have got the RESET and be rebooting, deaf
                # to a new one; let it come back first
                with contextlib.suppress(Timeout):
                    chip.wait_ready(ready_timeout)
        attempt += 1


def info(options: LinkOptions, strings: bool = True, pause: bool | None = None, report_not_read: bool = False) -> dict:
    """Version, USB state, LEDs, the whole config and (optionally) the USB strings.

    A read: kvmd is stopped only when ``pause`` (default ``options.pause_kvmd``) allows it
    and it holds the port; otherwise kvmd is untouched and ``_kvmd.KvmdHoldsPort`` says what
    was not read and how to read it (with ``report_not_read`` a report with ``read: false``
    and that warning is returned instead).
    """
    start = time.monotonic()
    try:
        with open_chip(options, read_only=True, pause=pause) as (chip, report):
            report["info"] = chip.get_info()
            config = chip.read_config()
            report["config"] = config.as_dict()
            if strings:
                report["usb_strings"] = {name: chip.get_string(name) for name in STRING_TYPES}
    except _kvmd.KvmdHoldsPort as exc:
        what = "the CH9329's version, USB state, LEDs, config and USB strings were not read; " + NOT_READ_HINT
        if not report_not_read:
            raise _kvmd.KvmdHoldsPort("%s: %s" % (exc.msg, what), **exc.details) from None
        return _finish(dict(_not_reached(options, exc, what), read=False), start, changed=False,
                       message="CH9329 not read: kvmd holds the port")
    report["read"] = True
    return _finish(report, start, changed=False, message="CH9329 %s, USB %s%s" % (
        report["info"]["version"], "enumerated" if report["info"]["usb_enumerated"] else "not enumerated",
        _kvmd_note(report)))


def configure(options: LinkOptions, changes: dict, force: bool = False, check_mode: bool = False,
              ready_timeout: float = DEFAULT_READY_TIMEOUT) -> dict:
    """Apply the desired settings idempotently: read, compare, write only the difference,
    RESET to apply, reconnect at the new baud rate / address and verify.

    kvmd is paused only when it holds the port (and ``options.pause_kvmd``); check mode never
    touches kvmd: when kvmd holds the port nothing is compared and the result says so.
    """
    changes = validate_changes(changes)
    check("ready_timeout", ready_timeout)
    problems = kvmd_safety_problems(changes)
    if problems and not force:
        raise InvalidArgument("refusing settings that would make kvmd lose control of the chip: %s; set force: true "
                              "if kvmd does not drive this chip" % "; ".join(problems), problems=problems)
    start = time.monotonic()
    try:
        with open_chip(options, read_only=check_mode, pause=False if check_mode else None) as (chip, report):
            return _configure(chip, report, changes, check_mode, ready_timeout, start)
    except _kvmd.KvmdHoldsPort as exc:
        report = _not_reached(options, exc, "the config was not read nor compared (check mode never stops kvmd); a "
                                            "real run pauses kvmd, compares and applies only what differs")
        report.update(compared=False, config=None, diff={"before": {}, "after": {}})
        return _finish(report, start, changed=True, message="CH9329 config not compared: kvmd holds the port")


def _configure(chip: Chip, report: dict, changes: dict, check_mode: bool, ready_timeout: float, start: float) -> dict:
    current = chip.read_config()
    wanted_strings = changes.get("usb_strings", {})
    current_strings = {name: chip.get_string(name) for name in wanted_strings}
    target = desired_config(current, changes)
    string_updates = {n: t for n, t in wanted_strings.items() if current_strings[n] != t}
    report["diff"] = {
        "before": dict(current.as_dict(), usb_strings=current_strings),
        "after": dict(target.as_dict(), usb_strings=dict(current_strings, **string_updates)),
    }
    # bit 7 of the modes is the pins' (PIN_SET_OFFSETS): not a difference software can make
    changed = target.raw != current.writable().raw or bool(string_updates)
    report["compared"] = True
    report["config"] = report["diff"]["after" if changed else "before"]
    if target.get("baudrate") != current.get("baudrate"):
        report["warnings"].append("the CH9329 now runs at %d baud: kvmd's hid.speed must be %d too (the onekvm "
                                  "role manages it)" % (target.get("baudrate"), target.get("baudrate")))
    if not changed or check_mode:
        return _finish(report, start, changed=changed, message="CH9329 config %s" % (
            "would change" if changed else "already as desired"))
    _apply(chip, current, target, string_updates, ready_timeout, report)
    return _finish(report, start, changed=True, message="CH9329 config applied" + _kvmd_note(report))


def _apply(chip: Chip, current: ChipConfig, target: ChipConfig, string_updates: dict, ready_timeout: float,
           report: dict) -> None:
    if target.raw != current.writable().raw:
        chip.write_config(target)
    for name, text in string_updates.items():
        chip.set_string(name, text)
    chip.send_reset()
    # the new settings are live after RESET: follow the chip to its new baud rate and address
    chip.set_baudrate(target.get("baudrate"))
    chip.address = target.get("address")
    report["baudrate"] = chip.baudrate
    report["address"] = chip.address
    waited = chip.wait_ready(ready_timeout)[1]
    report["ready_after"] = round(waited, 3)
    # a change is done when the chip reports it; the pins' bit 7 is not ours to compare
    readback = chip.read_config()
    if readback.writable().raw != target.raw:
        raise DeviceError("the CH9329 did not keep the new config after RESET: wrote %s, read back %s; WCH documents "
                          "that settings are enabled at the next power-on: power-cycle the chip (unplug it from the "
                          "target) and check with ch9329_info" % (_hex(target.raw), _hex(readback.raw)),
                          written=_hex(target.raw), read=_hex(readback.raw))
    for name, text in string_updates.items():
        if chip.get_string(name) != text:
            raise DeviceError("the CH9329 did not keep the %s string %r after RESET; power-cycle the chip and check "
                              "with ch9329_info" % (name, text))


def _finish(report: dict, start: float, changed: bool, message: str) -> dict:
    report["changed"] = changed
    report["elapsed"] = round(time.monotonic() - start, 3)
    report["message"] = message
    return report
