# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The CH9329's serial protocol as WCH's document defines it: frame layout, checksum, command codes,
status bytes, replies and how long an exchange takes on the wire.

PRIVATE to the onekvm.fleet collection. Box-side core: standard library only.

Frame: ``57 AB`` head, address, command, length N, N data bytes, checksum (sum of all
preceding bytes mod 256). The chip answers ``command | 0x80`` on success and
``command | 0xC0`` with one status byte on failure.

From WCH's protocol document ("CH9329芯片串口通信协议" V1.2): a chip at address 00 accepts
frames with any address code, a chip at 01-FE its own address or FF; FF is broadcast and
never answered, so it cannot be used to read or check anything. A packet ends after the
packet interval (3 ms) of silence: every frame is written in one ``write``.
"""

from __future__ import annotations

from ._errors import DeviceError, InvalidArgument, Timeout


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
DEFAULT_TIMEOUT = 1.0
# finding a chip at an unknown address: one GET_INFO per address 0-254; each waits for the
# exchange's wire time plus this (the chip's packet interval, its answer, the USB-serial
# adapter's latency), so a scan takes 255 x (20 bytes' wire time + 25 ms): see scan_seconds
SCAN_SLACK = 0.025


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


def is_late_reply(buf: bytes, command: int) -> bool:
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
                          "baudrate (try baudrate auto) and the cable" % hex_bytes(buf[:32]), reply=hex_bytes(buf))
    frame = buf[start:]
    if len(frame) < 6 or len(frame) < 6 + frame[4]:
        raise DeviceError("truncated reply from the CH9329 (%s): the frame ended early; check the cable and that no "
                          "other program reads the port" % hex_bytes(frame), reply=hex_bytes(buf))
    frame = frame[:6 + frame[4]]
    if checksum(frame[:-1]) != frame[-1]:
        raise DeviceError("corrupt reply from the CH9329 (%s): checksum 0x%02X, expected 0x%02X; check the cable and "
                          "the baud rate" % (hex_bytes(frame), frame[-1], checksum(frame[:-1])), reply=hex_bytes(frame))
    reply = Reply(frame[2], frame[3], frame[5:-1], frame)
    if reply.command & 0x3F != command or not reply.command & 0x80:
        raise DeviceError("the CH9329 answered command 0x%02X to %s (0x%02X) (%s): another program may be using the "
                          "port" % (reply.command, COMMAND_NAMES.get(command, "?"), command, hex_bytes(frame)), reply=hex_bytes(frame))
    # a chip at 00 takes any address code; the document does not say which address it then
    # answers with, so its own (0) is accepted as well as the one asked
    if reply.address not in (address, 0):
        raise DeviceError("reply from CH9329 address %d, expected %d (%s); set address to the chip's address "
                          "(or auto to find it)" % (reply.address, address, hex_bytes(frame)), reply=hex_bytes(frame))
    if reply.is_error or (reply.status is not None and reply.status != STATUS_OK and command not in _DATA_COMMANDS):
        _raise_status(command, reply)
    return reply


_DATA_COMMANDS = (CMD_GET_INFO, CMD_GET_PARA_CFG, CMD_GET_USB_STRING)


def _raise_status(command: int, reply: Reply):
    code = reply.data[0] if reply.data else None
    word = STATUS_WORDS.get(code, "unknown status 0x%02X" % code if code is not None else "no status byte")
    raise ChipError("the CH9329 refused %s: %s" % (COMMAND_NAMES.get(command, "0x%02X" % command), word),
                    status=word, status_code=code, reply=hex_bytes(reply.raw))


def hex_bytes(data: bytes) -> str:
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
