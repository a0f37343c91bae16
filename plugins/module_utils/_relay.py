# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Serial ("LCUS") USB relays: frames, validation, on / off / pulse, the state record.

PRIVATE to the onekvm.fleet collection: no compatibility promise.
This file is part of the box-side core: standard library + pyserial, no Ansible imports.
It serves the ``usb_relay`` module and the ``onekvm relay`` command (kvmd ``cmd`` buttons).

An LCUS board is a USB-serial bridge plus a microcontroller: 9600 baud 8N1, one 4-byte
command ``A0 <channel> <00 off | 01 on> <checksum>`` per switch, checksum = sum of the
three bytes mod 256. "On" closes the contacts (COM-NO), "off" opens them.

The boards send nothing back, so the relay's state cannot be read. To let ``on`` / ``off``
report ``changed`` honestly, the last commanded state of each channel is kept in a state
file (default under /run/onekvm, a tmpfs: a reboot forgets it, as the board, losing USB
power, forgets its state too). A record only counts while the adapter it was made for is
still the same USB device (same bus number, device number, sysfs path and boot): a replug
or a port power cycle gives the adapter a new device number, and the record is ignored.
Someone switching the relay by other means still makes the record wrong; ``force``
re-sends regardless.
"""

from __future__ import annotations

import collections
import errno
import fcntl
import json
import os
import time

from ._errors import Busy, DeviceError, InvalidArgument, OnekvmError, PermissionDenied
from ._files import read_bounded, replace_own_file
from ._limits import LIMITS, check
from ._lock import hardware_lock
from ._serialport import check_port_path, open_port, port_busy

DEFAULT_PORT = "/dev/onekvm-relay"
DEFAULT_BAUDRATE = 9600
BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
CHANNEL_COUNTS = (1, 2, 4, 8)
STATES = ("on", "off", "pulse")
DEFAULT_DURATION = 0.5
# Below ~50 ms a relay's contacts (bounce ~10 ms) may not register as a button press; above
# 10 s the press holds the box-wide lock (and a kvmd button stays busy) for too long.
MIN_DURATION = LIMITS["duration"].low
MAX_DURATION = LIMITS["duration"].high
DEFAULT_STATE_FILE = "/run/onekvm/relay-state.json"
DEFAULT_LOCK_TIMEOUT = 30.0
MAX_STATE_BYTES = 64 * 1024  # one small entry per relay port

FRAME_START = 0xA0
WRITE_TIMEOUT = 2.0

RelayRequest = collections.namedtuple("RelayRequest", "state channel channels duration baudrate")


# ---- frames and validation ---------------------------------------------------------

def frame(channel: int, on: bool) -> bytes:
    """The 4-byte LCUS command that switches ``channel`` on (contacts closed) or off."""
    body = [FRAME_START, channel, 1 if on else 0]
    return bytes(body + [sum(body) % 256])


def validate(state: str, channel: int, channels: int = 1, duration: float | None = None,
             baudrate: int = DEFAULT_BAUDRATE) -> RelayRequest:
    """Check every option before anything touches the hardware; return them normalised."""
    if state not in STATES:
        raise InvalidArgument("state must be one of %s, got %r" % (", ".join(STATES), state), state=state)
    if _not_int(channels) or channels not in CHANNEL_COUNTS:
        raise InvalidArgument("channels (the relay board's size) must be one of %s, got %r"
                              % (", ".join(map(str, CHANNEL_COUNTS)), channels), channels=channels)
    if _not_int(channel) or not 1 <= channel <= channels:
        raise InvalidArgument("channel must be between 1 and %d (channels=%d), got %r; set channels to the "
                              "board's relay count if it has more" % (channels, channels, channel),
                              channel=channel, channels=channels)
    if _not_int(baudrate) or baudrate not in BAUDRATES:
        raise InvalidArgument("baudrate must be one of %s (LCUS boards use 9600), got %r"
                              % (", ".join(map(str, BAUDRATES)), baudrate), baudrate=baudrate)
    if state == "pulse":
        duration = float(check("duration", DEFAULT_DURATION if duration is None else duration))
    elif duration is not None:
        raise InvalidArgument("duration applies to state=pulse only; remove it for state=%s" % state,
                              duration=duration)
    return RelayRequest(state, channel, channels, duration, baudrate)


def _not_int(value) -> bool:
    return isinstance(value, bool) or not isinstance(value, int)


# ---- the port ------------------------------------------------------------------------

def probe_port(port: str) -> str:
    """Check ``port`` as far as possible without configuring it or sending a byte.

    Returns the resolved device; raises NotFound / InvalidArgument (not a tty) /
    PermissionDenied / Busy (another program holds it exclusively).
    """
    device = check_port_path(port)
    try:
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    except PermissionError:
        raise PermissionDenied("cannot open %s: permission denied; run as root (become: true)" % port,
                               port=port) from None
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise port_busy(port) from None
        raise InvalidArgument("cannot open %s: %s" % (port, exc.strerror), port=port) from None
    try:
        if not os.isatty(fd):
            raise InvalidArgument("%s is not a tty (not a serial port); point port at the relay's "
                                  "USB-serial adapter" % port, port=port)
        try:  # the same advisory lock pyserial's exclusive mode takes
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise port_busy(port) from None
    finally:
        os.close(fd)
    return device


def adapter_identity(port: str, sys_root: str = "/sys", proc_root: str = "/proc") -> dict:
    """What makes a state record valid: this boot, and this USB device behind the tty."""
    device = os.path.realpath(port)
    identity = {"device": device, "boot_id": _read(os.path.join(proc_root, "sys/kernel/random/boot_id"))}
    usb_dir = _usb_device_dir(os.path.basename(device), sys_root)
    if usb_dir:
        identity["usb_path"] = os.path.basename(usb_dir)
        identity["busnum"] = _read(os.path.join(usb_dir, "busnum"))
        identity["devnum"] = _read(os.path.join(usb_dir, "devnum"))
    else:  # not a USB adapter (a pseudo-terminal in tests): the device number must match
        try:
            identity["rdev"] = os.stat(device).st_rdev
        except OSError:
            identity["rdev"] = None
    return identity


def _usb_device_dir(tty_name: str, sys_root: str) -> str | None:
    """The sysfs directory of the USB device (not interface) that provides ``tty_name``."""
    path = os.path.realpath(os.path.join(sys_root, "class", "tty", tty_name, "device"))
    while path.startswith(sys_root) and path != sys_root:
        if os.path.isfile(os.path.join(path, "devnum")) and os.path.isfile(os.path.join(path, "busnum")):
            return path
        path = os.path.dirname(path)
    return None


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


# ---- the state record ---------------------------------------------------------------

class StateRecord:
    """The last commanded state per port and channel, in one small JSON file.

    ``None`` for ``path`` disables the record: every on/off is then sent and changed.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path or None
        self.warnings = []

    def recorded(self, port: str, channel: int, identity: dict) -> str | None:
        """'on' / 'off' if the record is valid for this adapter, else None (unknown)."""
        entry = self._load().get(port) or {}
        if entry.get("adapter") != identity:
            return None
        value = (entry.get("channels") or {}).get(str(channel))
        return value if value in ("on", "off") else None

    def write(self, port: str, channel: int, identity: dict, value: str | None) -> None:
        """Record ``value`` ('on', 'off', or None = unknown) for the channel."""
        if not self.path:
            return
        data = self._load()
        entry = data.get(port) or {}
        channels = entry.get("channels") if entry.get("adapter") == identity else None
        channels = dict(channels or {})
        if value is None:
            channels.pop(str(channel), None)
        else:
            channels[str(channel)] = value
        data[port] = {"adapter": identity, "channels": channels, "updated": time.time()}
        self._save(data)

    def _load(self) -> dict:
        """The record. A regular file of ours that does not hold one (corrupt, a JSON list) is
        a warning and every channel is unknown; links, FIFOs, devices and files of others are refused."""
        if not self.path:
            return {}
        try:
            raw = read_bounded(self.path, MAX_STATE_BYTES)
        except OnekvmError as exc:
            raise type(exc)("cannot read the relay state file: %s" % exc.msg, state_file=self.path) from None
        if raw is None:
            return {}
        try:
            data = json.loads(raw.decode("utf-8"))
        except ValueError as exc:
            data, problem = None, "not JSON: %s" % exc
        else:
            problem = "not a JSON object of ports"
        if not isinstance(data, dict) or not all(isinstance(entry, dict) for entry in data.values()):
            self.warnings.append("relay state file %s is unreadable (%s); treating every channel as unknown"
                                 % (self.path, problem))
            return {}
        return data

    def _save(self, data: dict) -> None:
        try:
            replace_own_file(self.path, json.dumps(data, indent=1, sort_keys=True) + "\n")  # readers never see half of it
        except OnekvmError as exc:
            raise type(exc)("cannot write the relay state file: %s (or disable the record: state_file empty)" % exc.msg,
                            state_file=self.path) from None
        except OSError as exc:
            cls = PermissionDenied if isinstance(exc, PermissionError) else InvalidArgument
            raise cls("cannot write the relay state file %s: %s; fix the path, run as root, or disable the "
                      "record (state_file empty)" % (self.path, exc.strerror or exc), state_file=self.path) from None


# ---- the action ----------------------------------------------------------------------

def hexframes(frames: list) -> list:
    return [f.hex(" ") for f in frames]


def run(port: str = DEFAULT_PORT, channel: int = 1, state: str = "pulse", channels: int = 1,
        duration: float | None = None, baudrate: int = DEFAULT_BAUDRATE, state_file: str | None = DEFAULT_STATE_FILE,
        force: bool = False, check_mode: bool = False, lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        sys_root: str = "/sys", proc_root: str = "/proc") -> dict:
    """Switch or pulse one relay channel; return what was (or in check mode would be) sent.

    Validation and discovery come first: bad input or a missing / busy port raise before a
    byte is written. A pulse always ends with the off frame, even when interrupted.
    """
    start = time.monotonic()
    req = validate(state, channel, channels, duration, baudrate)
    if not port or not isinstance(port, str):
        raise InvalidArgument("port must be the relay adapter's device path (e.g. %s), got %r" % (DEFAULT_PORT, port),
                              port=port)
    try:
        device, busy = probe_port(port), False
    except Busy:
        if check_mode:
            raise
        # the holder may be another press of ours in mid-pulse: look again once we hold the lock
        device, busy = check_port_path(port), True
    record = StateRecord(state_file)
    identity = adapter_identity(port, sys_root, proc_root)
    previous = record.recorded(port, req.channel, identity)
    planned = _planned_frames(req, previous, force)
    result = {
        "port": port, "device": device, "channel": req.channel, "state": req.state,
        "previous_state": previous or "unknown", "changed": bool(planned),
        "frames": hexframes(planned), "bytes_sent": 0, "check_mode": check_mode,
        "state_file": record.path,
    }
    if req.state == "pulse":
        result["duration"] = req.duration
    if check_mode or not planned:
        result["warnings"] = record.warnings
        result["elapsed"] = round(time.monotonic() - start, 3)
        return result
    with hardware_lock(timeout=lock_timeout):
        if busy:
            probe_port(port)
        # re-read under the lock: another press may have just switched this channel
        previous = record.recorded(port, req.channel, identity)
        result["previous_state"] = previous or "unknown"
        planned = _planned_frames(req, previous, force)
        result["changed"] = bool(planned)
        if planned:
            record.write(port, req.channel, identity, None)  # unknown until the frames are out
            sent, timing = _send_frames(port, req, planned)
            record.write(port, req.channel, identity, "on" if req.state == "on" else "off")
            result.update(timing)
            result["frames"] = hexframes(sent)
            result["bytes_sent"] = sum(len(f) for f in sent)
    result["warnings"] = record.warnings
    result["elapsed"] = round(time.monotonic() - start, 3)
    return result


def _planned_frames(req: RelayRequest, previous: str | None, force: bool) -> list:
    if req.state == "pulse":
        return [frame(req.channel, True), frame(req.channel, False)]
    if previous == req.state and not force:
        return []
    return [frame(req.channel, req.state == "on")]


def _send_frames(port: str, req: RelayRequest, planned: list) -> tuple:
    """Open the port exclusively and write the frames; a pulse waits between on and off."""
    ser = open_port(port, req.baudrate, timeout=WRITE_TIMEOUT)
    sent = []
    try:
        if req.state != "pulse":
            _write(ser, port, planned[0], sent)
            return sent, {}
        try:
            _write(ser, port, planned[0], sent)
            on_at = time.monotonic()
            _sleep_until(on_at + req.duration)
        finally:  # never leave a pressed button held: the off frame goes out whatever happened
            _write(ser, port, planned[1], sent, channel=req.channel)
        off_at = time.monotonic()
        return sent, {"pulse_width": round(off_at - on_at, 4)}
    finally:
        _close(ser)


def _write(ser, port: str, data: bytes, sent: list, channel: int | None = None) -> None:
    """Write one frame and wait until it has left the adapter (tcdrain)."""
    try:
        written = ser.write(data)
        ser.flush()
    except OSError as exc:  # pyserial's SerialException (and its timeout) derive from OSError
        hint = ""
        if channel is not None:
            hint = "; channel %d may be left ON (closed): run `onekvm relay off --channel %d` or unplug the relay" % (
                channel, channel)
        raise DeviceError("writing to the relay on %s failed: %s%s" % (port, exc, hint), port=port,
                          frames_sent=hexframes(sent)) from None
    if written is not None and written != len(data):
        raise DeviceError("short write to the relay on %s (%d of %d bytes)" % (port, written, len(data)),
                          port=port, frames_sent=hexframes(sent))
    sent.append(data)


def _sleep_until(deadline: float) -> None:
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(left)


def _close(ser) -> None:
    try:
        ser.close()
    except OSError:  # closing a vanished adapter may fail; nothing left to do
        pass
