# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One open serial link to a CH9329: the exchanges and the chip's commands (GET_INFO, RESET,
the config and USB strings, the baud rate and address search).

PRIVATE to the onekvm.fleet collection. Box-side core: standard library + pyserial.

Config changes take effect after RESET; after RESET the chip is deaf for a while (up to ~3 s).
"""

from __future__ import annotations

import time

from ._ch9329_config import ChipConfig, STRING_TYPES
from ._ch9329_protocol import (
    CMD_GET_INFO,
    CMD_GET_PARA_CFG,
    CMD_GET_USB_STRING,
    CMD_RESET,
    CMD_SET_DEFAULT_CFG,
    CMD_SET_PARA_CFG,
    CMD_SET_USB_STRING,
    COMMAND_NAMES,
    DEFAULT_TIMEOUT,
    MAX_ADDRESS,
    PROBE_ORDER,
    Reply,
    hex_bytes,
    is_late_reply,
    encode_frame,
    frame_end,
    info_reply_address,
    parse_reply,
    scan_window,
    wire_time,
)
from ._errors import DeviceError, Timeout


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
            while is_late_reply(buf, command) and time.monotonic() < deadline:
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
            raise DeviceError("GET_INFO reply too short (%s); the chip is misbehaving" % hex_bytes(data), reply=hex_bytes(data))
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
            raise DeviceError("GET_USB_STRING reply malformed (%s)" % hex_bytes(data), reply=hex_bytes(data))
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
