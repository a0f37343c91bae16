# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The simulated CH9329 itself: frames in, replies out, its 50-byte config, USB strings, RESET and
its deaf time, and the fault switches - no transport (``ch9329_sim.Simulator`` runs it on a pty
or a socket).

Deliberately independent of ``plugins/module_utils/_ch9329*.py``: its framing is written
separately (and kept small) so that a bug shared by both cannot hide. Each rule names the section
of WCH's protocol document ("CH9329芯片串口通信协议" V1.2) it comes from ("doc §..."); where the
document is silent the choice is marked "not in the document". The variants and fault switches
are described in ``ch9329_sim``.
"""

from __future__ import annotations

import threading
import time


HEAD = bytes((0x57, 0xAB))
VALID_BAUDS = (9600, 19200, 38400, 57600, 115200)

# status bytes
OK, E_TIMEOUT, E_HEAD, E_COMMAND, E_CHECKSUM, E_PARAM, E_EXEC = 0x00, 0xE1, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6
# doc §2 (serial communication): a packet ends when no byte arrives for the packet interval
# (config bytes 9-10, 3 ms from the factory). A pty or QEMU's chardev socket delivers one
# write as one chunk but the simulator thread wakes with scheduling jitter of a few ms on a
# loaded machine, so a gap counts as the end of the packet only past the interval plus this
# tolerance (10 ms: a frame split by a 20 ms gap is two packets, as on a real chip).
PACKET_TOLERANCE = 0.010
BROADCAST = 0xFF
FAULT_NAMES = ("silent", "garbage", "truncate", "bad_checksum", "error_status", "delay", "never_ready", "wrong_command",
               "commands")


def factory_config() -> bytearray:
    """The 50 configuration bytes of a chip fresh from the factory (VID/PID stored little-endian)."""
    cfg = bytearray(50)
    cfg[0] = 0x80  # keyboard+mouse, chosen by the mode pins
    cfg[1] = 0x80  # protocol mode, chosen by the mode pins
    cfg[2] = 0x00  # address
    cfg[3:7] = (9600).to_bytes(4, "big")
    cfg[7:9] = b"\x08\x00"
    cfg[9:11] = (3).to_bytes(2, "big")  # packet interval, ms
    cfg[11:13] = b"\x86\x1a"  # VID 1A86
    cfg[13:15] = b"\x29\xe1"  # PID E129
    cfg[17:19] = (1).to_bytes(2, "big")
    cfg[20] = 0x0D  # enter character
    return cfg


FACTORY_STRINGS = {0: b"WCH", 1: b"CH9329", 2: b""}


def frame(address: int, command: int, data: bytes = b"") -> bytes:
    body = HEAD + bytes((address, command, len(data))) + bytes(data)
    return body + bytes((sum(body) & 0xFF,))


class Chip:
    """The chip's protocol state: bytes in, replies out. Time is passed in (``now``)."""

    def __init__(self, reset_time: float = 0.5, enumerate_time: float = 0.0, tolerance: float = PACKET_TOLERANCE,
                 config_reply_size: int = 50, mode_pins: bool = False, volatile_settings: bool = False) -> None:
        self.reset_time = reset_time
        self.enumerate_time = enumerate_time
        self.tolerance = tolerance
        self.config_reply_size = config_reply_size
        self.mode_pins = mode_pins
        self.volatile_settings = volatile_settings
        self.stored = factory_config()  # what SET_PARA_CFG wrote (GET_PARA_CFG reads it)
        self.active = bytes(self.stored)  # what the chip runs with (changes on RESET)
        self.strings = dict(FACTORY_STRINGS)
        self.power_on_settings = (bytes(self.stored), dict(self.strings))  # what a RESET reloads when volatile
        self.leds = 0
        self.deaf_until = 0.0
        self.enumerated_at = 0.0
        self.buffer = bytearray()
        self.last_byte_at = 0.0
        self.faults: dict = {}
        self.counters = {"frames": 0, "replies": 0, "resets": 0, "errors": 0, "ignored_bytes": 0, "wrong_baud_bytes": 0,
                         "other_address": 0, "broadcasts": 0, "keyboard_reports": 0}
        self.log: list = []  # (time, hex of received frame)
        self.lock = threading.Lock()

    # -- settings the chip runs with -------------------------------------------------
    @property
    def baudrate(self) -> int:
        return int.from_bytes(self.active[3:7], "big")

    @property
    def address(self) -> int:
        return self.active[2]

    @property
    def packet_interval(self) -> float:
        """Seconds of silence that end a packet (config bytes 9-10, big-endian ms)."""
        return int.from_bytes(self.active[9:11], "big") / 1000.0

    def power_cycle(self) -> None:
        """Power off and on: the stored settings become the ones the chip runs with."""
        with self.lock:
            self.active = bytes(self.stored)
            self.power_on_settings = (bytes(self.stored), dict(self.strings))
            self.buffer.clear()
            self.deaf_until = 0.0

    # -- input -----------------------------------------------------------------------
    def receive(self, data: bytes, now: float) -> list:
        """Feed received bytes; return the replies to send."""
        replies = []
        with self.lock:
            if now < self.deaf_until or self.faults.get("never_ready") and self.deaf_until:
                self.counters["ignored_bytes"] += len(data)
                return replies
            for byte in data:
                replies.extend(self._expire(now))
                self.buffer.append(byte)
                self.last_byte_at = now
                replies.extend(self._take_frame(now))
        return replies

    def expire(self, now: float) -> list:
        """A partial frame whose packet ended (silence, doc §2) gets an E1 reply and is dropped."""
        with self.lock:
            return self._expire(now)

    def packet_gap(self) -> float:
        return self.packet_interval + self.tolerance

    def next_deadline(self) -> float | None:
        return self.last_byte_at + self.packet_gap() if self.buffer else None

    def _expire(self, now: float) -> list:
        if self.buffer and now - self.last_byte_at > self.packet_gap():
            command = self.buffer[3] if len(self.buffer) > 3 else 0
            self.buffer.clear()
            return [self._error(command, E_TIMEOUT)]
        return []

    def _take_frame(self, now: float) -> list:
        buf = self.buffer
        if buf[0] != HEAD[0]:
            buf.clear()  # line noise before a head: dropped
            return []
        if len(buf) >= 2 and buf[1] != HEAD[1]:
            buf.clear()
            return [self._error(0, E_HEAD)]
        if len(buf) < 5 or len(buf) < 6 + buf[4]:
            return []
        raw = bytes(buf)
        buf.clear()
        address, command, length = raw[2], raw[3], raw[4]
        # doc §2 (address code): a chip at address 00 accepts frames with any address code; a
        # chip at 01-FE accepts its own address or FF; FF is broadcast and never answered.
        if self.address != 0 and address not in (self.address, BROADCAST):
            self.counters["other_address"] += 1
            return []  # another chip's frame
        self.counters["frames"] += 1
        self.log.append((time.time(), raw.hex(" ")))
        if sum(raw[:-1]) & 0xFF != raw[-1]:
            reply = self._error(command, E_CHECKSUM)
        else:
            reply = self._execute(command, raw[5:5 + length], now)
        if address == BROADCAST:
            self.counters["broadcasts"] += 1
            return []  # executed, but no reply may come back to a broadcast
        return [reply]

    # -- commands --------------------------------------------------------------------
    def _execute(self, command: int, data: bytes, now: float) -> bytes:
        handler = {
            0x01: self._get_info, 0x02: self._keyboard, 0x03: self._ack_hid, 0x04: self._ack_hid, 0x05: self._ack_hid,
            0x06: self._ack_hid, 0x08: self._get_config, 0x09: self._set_config, 0x0A: self._get_string,
            0x0B: self._set_string, 0x0C: self._set_default, 0x0F: self._reset,
        }.get(command)
        if handler is None:
            return self._error(command, E_COMMAND)
        # a RESET answers from the address it had when it got the frame. Not in the document:
        # which address a chip at 00 puts in its reply to another address code; this one
        # answers with its own (00), and the client accepts either.
        address = self.address
        status_or_data = handler(data, now)
        if isinstance(status_or_data, int):
            if status_or_data != OK:
                return self._error(command, status_or_data)
            return frame(address, command | 0x80, bytes((OK,)))
        return frame(address, command | 0x80, status_or_data)

    def _get_info(self, data: bytes, now: float):
        enumerated = 1 if now >= self.enumerated_at else 0
        return bytes((0x30, enumerated, self.leds, 0, 0, 0, 0, 0))

    def _ack_hid(self, data: bytes, now: float):
        return OK if data else E_PARAM

    def _keyboard(self, data: bytes, now: float):
        # doc §CMD_SEND_KB_GENERAL_DATA: exactly 8 data bytes; the second "must be 0x00"
        if len(data) != 8 or data[1] != 0x00:
            return E_PARAM
        self.counters["keyboard_reports"] += 1
        return OK

    def _get_config(self, data: bytes, now: float):
        reported = bytearray(self.stored)
        if self.mode_pins:
            # doc §CMD_GET_PARA_CFG: 80-83 / 80-82 = the mode chosen by the mode pins
            reported[0] |= 0x80
            reported[1] |= 0x80
        if self.config_reply_size > 50:
            # field variant (CH9329F, One-KVM PR #302, unverified): more bytes after the 50;
            # their meaning is unknown, so they are a recognisable pattern here
            reported += bytes((0xA0 + i) & 0xFF for i in range(self.config_reply_size - 50))
        return bytes(reported)

    def _set_config(self, data: bytes, now: float):
        # doc §CMD_SET_PARA_CFG: 50 data bytes; working mode 00-03 and serial mode 00-02 only
        # (80-83 / 80-82 are what GET_PARA_CFG reports when pins set them); address 00-FF
        if len(data) != 50 or int.from_bytes(data[3:7], "big") not in VALID_BAUDS:
            return E_PARAM
        if data[0] > 0x03 or data[1] > 0x02:
            return E_PARAM
        self.stored = bytearray(data)
        return OK

    def _get_string(self, data: bytes, now: float):
        if len(data) != 1 or data[0] not in self.strings:
            return E_PARAM
        text = self.strings[data[0]]
        return bytes((data[0], len(text))) + text

    def _set_string(self, data: bytes, now: float):
        if len(data) < 2 or data[0] not in self.strings or data[1] != len(data) - 2 or data[1] > 23:
            return E_PARAM
        self.strings[data[0]] = bytes(data[2:])
        return OK

    def _set_default(self, data: bytes, now: float):
        self.stored = factory_config()
        self.strings = dict(FACTORY_STRINGS)
        return OK

    def _reset(self, data: bytes, now: float):
        self.counters["resets"] += 1
        if self.volatile_settings:
            # doc §CMD_SET_PARA_CFG: settings are "enabled at the next power-on"; this variant
            # treats RESET as no power-on: the settings it powered on with come back
            self.stored = bytearray(self.power_on_settings[0])
            self.strings = dict(self.power_on_settings[1])
        self.active = bytes(self.stored)
        self.deaf_until = now + self.reset_time
        self.enumerated_at = self.deaf_until + self.enumerate_time
        return OK

    def _error(self, command: int, status: int) -> bytes:
        self.counters["errors"] += 1
        return frame(self.address, command | 0xC0, bytes((status,)))

    # -- faults ----------------------------------------------------------------------
    def set_faults(self, **faults) -> None:
        unknown = set(faults) - set(FAULT_NAMES)
        if unknown:
            raise ValueError("unknown fault(s): %s" % ", ".join(sorted(unknown)))
        with self.lock:
            self.faults.update({k: v for k, v in faults.items() if v not in (None, False)})
            for key in [k for k, v in faults.items() if v in (None, False)]:
                self.faults.pop(key, None)
            if not self.faults.get("never_ready"):
                self.deaf_until = min(self.deaf_until, time.monotonic() + self.reset_time)

    def clear_faults(self) -> None:
        with self.lock:
            self.faults = {}

    def apply_faults(self, reply: bytes) -> bytes:
        """The reply as the faulty chip would send it (empty: nothing)."""
        faults = self.faults
        commands = faults.get("commands")
        if commands is not None and (reply[3] & 0x3F) not in commands:
            return reply
        if faults.get("silent"):
            return b""
        if faults.get("garbage"):
            return bytes((0xFF, 0x13, 0x00, 0xA5, 0x5A, 0xFE, 0x80))
        if faults.get("error_status"):
            reply = frame(reply[2], reply[3] | 0xC0, bytes((faults["error_status"],)))
        if faults.get("wrong_command"):
            reply = frame(reply[2], (reply[3] & 0xC0) | ((reply[3] + 1) & 0x3F), reply[5:-1])
        if faults.get("bad_checksum"):
            reply = reply[:-1] + bytes(((reply[-1] + 1) & 0xFF,))
        if faults.get("truncate"):
            reply = reply[:max(3, len(reply) // 2)]
        return reply
