# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A simulated WCH CH9329 (serial -> USB HID) chip for tests.

Deliberately independent of ``plugins/module_utils/_ch9329.py``: its framing is written
separately (and kept small) so that a bug shared by both cannot hide. Protocol facts:
frame ``57 AB addr cmd len data.. sum``; replies ``cmd|0x80`` (ok) or ``cmd|0xC0`` with a
status byte (E1 byte timeout .. E6 execution failed); a 50-byte configuration that takes
effect after RESET; after RESET the chip answers, then ignores its input while it reboots.

By default it follows WCH's protocol document ("CH9329芯片串口通信协议" V1.2, quoted in the
project's domain notes); each rule names the document's section it comes from ("doc §...").
Where the document is silent the choice is marked "not in the document".

Variants seen in the field or allowed by the document (constructor arguments of ``Chip``):
``config_reply_size`` (72 or 88: a CH9329F-style GET_PARA_CFG reply, One-KVM PR #302,
unverified), ``mode_pins`` (the mode pins choose the modes: GET_PARA_CFG reports bytes 0-1
with bit 7 set whatever software wrote), ``volatile_settings`` (new settings live only
until the next power-on; a RESET reloads what the chip powered on with).

Transports:
- a pseudo-terminal (``Simulator.on_pty()``), in-process as a context manager; the tty
  path is ``sim.port``. The client's configured speed is read from the pty (the master
  shares the slave's termios), so a wrong baud rate behaves like a real wrong-baud link;
- a client of a unix socket (QEMU's chardev server behind the VM's /dev/ttyUSB*),
  reconnecting whenever the socket drops (``Simulator.on_socket(path)``).

Fault switches (``sim.set_faults(...)`` or the JSON-lines control socket):
``silent``, ``garbage``, ``truncate``, ``bad_checksum``, ``error_status`` (a status byte such
as 0xE6), ``delay`` (extra seconds before each reply), ``never_ready`` (stays deaf after
RESET), ``wrong_command``; ``commands`` limits the faults to these command codes.

Run as a script: ``ch9329_sim.py --pty`` (prints the tty path) or
``ch9329_sim.py --socket PATH [--control PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import select
import socket
import sys
import termios
import threading
import time
import tty

try:
    from . import control_socket
    from .ch9329_sim_chip import VALID_BAUDS, Chip
except ImportError:  # run as a script (ch9329_sim.py --socket ...): the siblings are on sys.path
    import control_socket
    from ch9329_sim_chip import VALID_BAUDS, Chip


TERMIOS_SPEEDS = {getattr(termios, "B%d" % b): b for b in VALID_BAUDS + (1200, 2400, 4800, 230400)}


class Simulator:
    """Runs a ``Chip`` on a transport in a background thread (a context manager)."""

    def __init__(self, chip: Chip | None = None, pace: bool = True, answer_time: float = 0.001) -> None:
        self.chip = chip or Chip()
        self.pace = pace  # replies take the serial wire time of request + reply at the chip's baud
        self.answer_time = answer_time
        self.port = ""  # tty path (pty mode)
        self._master = self._slave = -1
        self._socket_path = ""
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._control: ControlServer | None = None

    # -- construction ----------------------------------------------------------------
    @classmethod
    def on_pty(cls, **kwargs) -> Simulator:
        sim = cls(**kwargs)
        sim._master, sim._slave = pty.openpty()
        tty.setraw(sim._slave)  # no echo, no line editing: a plain byte pipe like a UART
        sim.port = os.ttyname(sim._slave)
        return sim

    @classmethod
    def on_socket(cls, path: str, **kwargs) -> Simulator:
        sim = cls(**kwargs)
        sim._socket_path = path
        return sim

    def start(self, control_path: str | None = None) -> Simulator:
        self._thread = threading.Thread(target=self._run, name="ch9329-sim", daemon=True)
        self._thread.start()
        if control_path:
            self._control = ControlServer(self, control_path).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        if self._control:
            self._control.stop()
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1
        if self._sock:
            self._sock.close()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- convenience for tests -------------------------------------------------------
    def set_faults(self, **faults) -> None:
        self.chip.set_faults(**faults)

    def clear_faults(self) -> None:
        self.chip.clear_faults()

    @property
    def counters(self) -> dict:
        return dict(self.chip.counters)

    @property
    def log(self) -> list:
        return list(self.chip.log)

    def client_baudrate(self) -> int | None:
        """The speed the client set on the tty (None on a socket: not observable there)."""
        if self._master < 0:
            return None
        return TERMIOS_SPEEDS.get(termios.tcgetattr(self._master)[4])

    # -- the loop --------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            fd = self._connect()
            if fd is None:
                time.sleep(0.2)
                continue
            try:
                self._serve(fd)
            except OSError:
                pass  # peer went away: reconnect (socket) or keep waiting (pty)
            if self._sock:
                self._sock.close()
                self._sock = None

    def _connect(self) -> int | None:
        if self._master >= 0:
            return self._master
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(self._socket_path)
        except OSError:
            return None
        self._sock = sock
        return sock.fileno()

    def _serve(self, fd: int) -> None:
        pending: list = []  # (due time, bytes)
        while not self._stop.is_set():
            now = time.monotonic()
            deadlines = [item[0] for item in pending] + [d for d in (self.chip.next_deadline(),) if d]
            wait = max(0.0, min(deadlines) - now) if deadlines else 0.1
            readable = select.select([fd], [], [], min(wait, 0.1))[0]
            now = time.monotonic()
            if readable:
                data = os.read(fd, 4096)
                if not data:
                    raise OSError("peer closed")
                pending.extend(self._replies_for(data, now))
            pending.extend(self._schedule(self.chip.expire(now), now, 0))
            due = [item for item in pending if item[0] <= now]
            for item in due:
                pending.remove(item)
                if item[1]:
                    os.write(fd, item[1])

    def _replies_for(self, data: bytes, now: float) -> list:
        client = self.client_baudrate()
        if client is not None and client != self.chip.baudrate:
            # a wrong-baud link: the chip sees framing errors; it mostly says nothing,
            # sometimes a stray byte comes back
            self.chip.counters["wrong_baud_bytes"] += len(data)
            return [(now, b"\xf8")] if len(data) >= 6 else []
        return self._schedule(self.chip.receive(data, now), now, len(data))

    def _schedule(self, replies: list, now: float, request_len: int) -> list:
        out = []
        for reply in replies:
            self.chip.counters["replies"] += 1
            sent = self.chip.apply_faults(reply)
            # doc §2: the packet (and so the command) ends after the packet interval of silence
            delay = self.answer_time + self.chip.packet_interval + float(self.chip.faults.get("delay") or 0)
            if self.pace:
                delay += (request_len + len(sent)) * 10.0 / self.chip.baudrate
            out.append((now + delay, sent))
        return out


CHIP_SETTINGS = ("reset_time", "leds", "config_reply_size", "mode_pins", "volatile_settings")


class ControlServer:
    """JSON-lines control socket: {"op": "set_faults", "faults": {...}} | "clear_faults" |
    "counters" | "log" | "state" | "set_chip" (reset_time, leds and the variants) | "power_cycle"."""

    def __init__(self, sim: Simulator, path: str) -> None:
        self.sim = sim
        self.path = path
        self.server = control_socket.listen(path)
        self._stop = threading.Event()

    def start(self) -> ControlServer:
        threading.Thread(target=self._accept, name="ch9329-sim-control", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.server.close()
        if os.path.exists(self.path):
            os.unlink(self.path)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn = self.server.accept()[0]
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rw") as stream:
            for line in stream:
                try:
                    answer = {"ok": True, "result": self.handle(json.loads(line))}
                except (ValueError, KeyError, TypeError) as exc:
                    answer = {"ok": False, "error": str(exc)}
                stream.write(json.dumps(answer) + "\n")
                stream.flush()

    def handle(self, request: dict):
        op = request["op"]
        chip = self.sim.chip
        if op == "set_faults":
            chip.set_faults(**request["faults"])
            return dict(chip.faults)
        if op == "clear_faults":
            chip.clear_faults()
            return {}
        if op == "counters":
            return dict(chip.counters)
        if op == "log":
            return [list(entry) for entry in chip.log]
        if op == "state":
            return {"baudrate": chip.baudrate, "address": chip.address, "stored": chip.stored.hex(),
                    "strings": {str(k): v.decode("latin-1") for k, v in chip.strings.items()}, "faults": dict(chip.faults)}
        if op == "set_chip":
            for key in CHIP_SETTINGS:
                if key in request:
                    setattr(chip, key, request[key])
            return {key: getattr(chip, key) for key in CHIP_SETTINGS}
        if op == "power_cycle":
            chip.power_cycle()
            return {}
        raise ValueError("unknown op %r" % op)


def control(path: str, request: dict, timeout: float = 10.0):
    """Send one request to a simulator's control socket and return its result."""
    answer = control_socket.request(path, request, timeout)
    if not answer["ok"]:
        raise ValueError(answer["error"])
    return answer["result"]


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description="Simulated CH9329 chip")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", action="store_true", help="serve on a new pseudo-terminal (prints its path)")
    where.add_argument("--socket", help="connect to this unix socket (e.g. QEMU's chardev server)")
    parser.add_argument("--control", help="JSON-lines control socket to create")
    parser.add_argument("--reset-time", type=float, default=0.5, help="seconds the chip stays deaf after RESET")
    args = parser.parse_args(argv)
    chip = Chip(reset_time=args.reset_time)
    sim = Simulator.on_pty(chip=chip) if args.pty else Simulator.on_socket(args.socket, chip=chip)
    sim.start(control_path=args.control)
    sys.stdout.write((sim.port or args.socket) + "\n")
    sys.stdout.flush()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
