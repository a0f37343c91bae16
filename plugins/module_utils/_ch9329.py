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

Used by the modules (ch9329_reset, ch9329_info, ch9329_config), the box command
(``onekvm ch9329-reset`` / ``ch9329-info``) and the capture watchdog.
"""

from __future__ import annotations

import contextlib
import os
import time

from . import _kvmd
from ._errors import DeviceError, InvalidArgument, Timeout
from ._lock import hardware_lock
from ._serialport import check_port_path, open_port

HEAD = b"\x57\xab"
BROADCAST_ADDRESS = 0xFF

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
CONFIG_SIZE = 50
MAX_STRING = 23  # bytes the chip keeps per USB string descriptor

MODES = ("keyboard_mouse", "keyboard", "mouse", "custom_hid")
SERIAL_MODES = ("protocol", "ascii", "transparent")
STRING_TYPES = {"manufacturer": 0x00, "product": 0x01, "serial": 0x02}
STRING_FLAG_BITS = {"manufacturer": 0x04, "product": 0x02, "serial": 0x01}
CUSTOM_STRINGS_BIT = 0x80
SET_BY_PINS = 0x80

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
    if reply.address != address and address != BROADCAST_ADDRESS:
        raise DeviceError("reply from CH9329 address %d, expected %d (%s); set address to the chip's address"
                          % (reply.address, address, _hex(frame)), reply=_hex(frame))
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
    """The 50 config bytes with named fields; unknown and reserved bytes are kept as read."""

    def __init__(self, raw: bytes) -> None:
        if len(raw) != CONFIG_SIZE:
            raise DeviceError("the CH9329 sent a %d-byte config, expected %d; the chip or the link is misbehaving"
                              % (len(raw), CONFIG_SIZE), reply=_hex(raw))
        self.raw = bytes(raw)

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
        return ChipConfig(bytes(raw))

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
            value = validate_address(value, allow_broadcast=False)
        if name in ("vid", "pid"):
            value = parse_id(value, name.upper())
        if name == "packet_interval" and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF):
            raise InvalidArgument("packet_interval must be 0-65535 ms, got %r" % (value,))
        if name == "usb_strings":
            value = validate_strings(value)
        out[name] = value
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


def validate_address(value, allow_broadcast: bool = True) -> int:
    top = 0xFF if allow_broadcast else 0xFE
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        raise InvalidArgument("address must be 0-%d%s, got %r" % (
            top, " (255 reaches any chip)" if allow_broadcast else "", value))
    return value


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
    """``current`` with ``changes`` applied, changing only the bytes that must change."""
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
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0.05 <= timeout <= 60:
            raise InvalidArgument("timeout must be between 0.05 and 60 seconds, got %r" % (timeout,))
        self.timeout = float(timeout)
        self.pause_kvmd = bool(pause_kvmd)
        self.lock_timeout = lock_timeout
        self.systemctl = systemctl


@contextlib.contextmanager
def open_chip(options: LinkOptions):
    """Yield ``(chip, report)`` with the hardware lock held, kvmd paused if it holds the
    port, the port open and the baud rate resolved. ``report`` collects what happened."""
    check_port_path(options.port)
    report = {"port": options.port, "kvmd_paused": [], "warnings": []}
    with hardware_lock(timeout=options.lock_timeout):
        with _kvmd.paused_for_port(options.port, options.pause_kvmd, options.systemctl) as kvmd:
            report["kvmd_paused"] = kvmd["paused"]
            report["warnings"].extend(kvmd["warnings"])
            start_rate = DEFAULT_BAUDRATE if options.baudrate == "auto" else options.baudrate
            ser = open_port(options.port, start_rate, options.timeout)
            try:
                chip = Chip(ser, options.port, options.address, options.timeout)
                if options.baudrate == "auto":
                    chip.probe_baudrate()
                report["baudrate"] = chip.baudrate
                yield chip, report
            finally:
                ser.close()


def link_argument_spec(baudrate_name: str = "baudrate", address_name: str = "address") -> dict:
    """The modules' options for reaching the chip (a plain dict: no Ansible import here)."""
    return {
        "port": {"type": "path"},
        baudrate_name: {"type": "str", "choices": ["auto"] + [str(b) for b in BAUD_RATES]},
        address_name: {"type": "int", "default": 0},
        "timeout": {"type": "float", "default": DEFAULT_TIMEOUT},
        "pause_kvmd": {"type": "bool", "default": True},
        "lock_timeout": {"type": "float", "default": 30.0},
    }


def link_options_from(params: dict, baudrate_name: str = "baudrate", address_name: str = "address") -> LinkOptions:
    return LinkOptions(port=params["port"], baudrate=params[baudrate_name], address=params[address_name],
                       timeout=params["timeout"], pause_kvmd=params["pause_kvmd"], lock_timeout=params["lock_timeout"])


# -- operations (modules, box command, watchdog) -----------------------------------------------
def reset(options: LinkOptions, retries: int = 1, wait_ready: bool = True,
          ready_timeout: float = DEFAULT_READY_TIMEOUT, check_mode: bool = False) -> dict:
    """Reset the chip (RESET with a checked reply) and wait until it answers again.

    In check mode the port is opened and the chip probed with GET_INFO; no RESET is sent.
    """
    _check_count("retries", retries, 0, 10)
    if isinstance(ready_timeout, bool) or not isinstance(ready_timeout, (int, float)) or not 0 < ready_timeout <= 120:
        raise InvalidArgument("ready_timeout must be between 0 and 120 seconds, got %r" % (ready_timeout,))
    start = time.monotonic()
    with open_chip(options) as (chip, report):
        if check_mode:
            report.update(info=chip.get_info(), attempts=0, reply=None, status=None, ready_after=None)
            return _finish(report, start, changed=True, message="the CH9329 answers; RESET not sent (check mode)")
        reply, attempts = _send_reset(chip, retries, ready_timeout)
        report.update(reply=_hex(reply.raw), status=STATUS_WORDS[STATUS_OK], attempts=attempts,
                      info=None, ready_after=None, polls=0)
        if wait_ready:
            # the reply left the chip just before it rebooted; timing starts at the reply
            info, waited, polls = chip.wait_ready(ready_timeout)
            report.update(info=info, ready_after=round(waited, 3), polls=polls)
    message = "CH9329 reset" + (" and answering again after %.2f s" % report["ready_after"] if wait_ready else "")
    return _finish(report, start, changed=True, message=message)


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


def info(options: LinkOptions, strings: bool = True) -> dict:
    """Version, USB state, LEDs, the whole config and (optionally) the USB strings."""
    start = time.monotonic()
    with open_chip(options) as (chip, report):
        report["info"] = chip.get_info()
        config = chip.read_config()
        report["config"] = config.as_dict()
        if strings:
            report["usb_strings"] = {name: chip.get_string(name) for name in STRING_TYPES}
    return _finish(report, start, changed=False, message="CH9329 %s, USB %s" % (
        report["info"]["version"], "enumerated" if report["info"]["usb_enumerated"] else "not enumerated"))


def configure(options: LinkOptions, changes: dict, force: bool = False, check_mode: bool = False,
              ready_timeout: float = DEFAULT_READY_TIMEOUT) -> dict:
    """Apply the desired settings idempotently: read, compare, write only the difference,
    RESET to apply, reconnect at the new baud rate / address and verify."""
    changes = validate_changes(changes)
    problems = kvmd_safety_problems(changes)
    if problems and not force:
        raise InvalidArgument("refusing settings that would make kvmd lose control of the chip: %s; set force: true "
                              "if kvmd does not drive this chip" % "; ".join(problems), problems=problems)
    start = time.monotonic()
    with open_chip(options) as (chip, report):
        current = chip.read_config()
        wanted_strings = changes.get("usb_strings", {})
        current_strings = {name: chip.get_string(name) for name in wanted_strings}
        target = desired_config(current, changes)
        string_updates = {n: t for n, t in wanted_strings.items() if current_strings[n] != t}
        report["diff"] = {
            "before": dict(current.as_dict(), usb_strings=current_strings),
            "after": dict(target.as_dict(), usb_strings=dict(current_strings, **string_updates)),
        }
        changed = target.raw != current.raw or bool(string_updates)
        report["config"] = report["diff"]["after" if changed else "before"]
        if target.get("baudrate") != current.get("baudrate"):
            report["warnings"].append("the CH9329 now runs at %d baud: kvmd's hid.speed must be %d too (the onekvm "
                                      "role manages it)" % (target.get("baudrate"), target.get("baudrate")))
        if not changed or check_mode:
            return _finish(report, start, changed=changed, message="CH9329 config %s" % (
                "would change" if changed else "already as desired"))
        _apply(chip, current, target, string_updates, ready_timeout, report)
    return _finish(report, start, changed=True, message="CH9329 config applied")


def _apply(chip: Chip, current: ChipConfig, target: ChipConfig, string_updates: dict, ready_timeout: float,
           report: dict) -> None:
    if target.raw != current.raw:
        chip.write_config(target)
    for name, text in string_updates.items():
        chip.set_string(name, text)
    chip.send_reset()
    # the new settings are live after RESET: follow the chip to its new baud rate and address
    chip.set_baudrate(target.get("baudrate"))
    chip.address = target.get("address")
    report["baudrate"] = chip.baudrate
    waited = chip.wait_ready(ready_timeout)[1]
    report["ready_after"] = round(waited, 3)
    readback = chip.read_config()
    if readback.raw != target.raw:
        raise DeviceError("the CH9329 did not keep the new config: wrote %s, read back %s" % (_hex(target.raw),
                          _hex(readback.raw)), written=_hex(target.raw), read=_hex(readback.raw))
    for name, text in string_updates.items():
        if chip.get_string(name) != text:
            raise DeviceError("the CH9329 did not keep the %s string %r" % (name, text))


def _check_count(name: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgument("%s must be an integer from %d to %d, got %r" % (name, low, high, value))


def _finish(report: dict, start: float, changed: bool, message: str) -> dict:
    report["changed"] = changed
    report["elapsed"] = round(time.monotonic() - start, 3)
    report["message"] = message
    return report
