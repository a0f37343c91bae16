# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A simulated LCUS serial relay board for tests: records every byte with its arrival time.

The board side of the wire is one of:

- ``PtyRelay``: a pseudo-terminal in this process; production code opens ``.port``.
- ``SocketRelay``: a unix-socket client of QEMU's chardev behind the simulated box's
  emulated USB-serial adapter (``box.relay_socket``).

Both feed a ``RelayBoard``, which decodes frames like the board's microcontroller would
(hunt for ``A0``, take four bytes, check the sum) and keeps each channel's state. This
decoder is written separately from the collection's encoder on purpose: a bug shared by
both could not hide a wrong frame.

Run as a script it serves a JSON-lines control socket (one request per line, one reply per
line): ``{"cmd": "status"}`` (states, frames, rejected bytes, pulses), ``{"cmd": "clear"}``,
``{"cmd": "quit"}``::

    python relay_sim.py --pty --control /tmp/relay.ctl            # prints {"port": "/dev/pts/N"}
    python relay_sim.py --socket /path/relay.sock --control /tmp/relay.ctl
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import select
import signal
import socket
import sys
import threading
import time
import tty

try:
    from . import control_socket
except ImportError:  # run as a script (relay_sim.py --pty ...): the siblings are on sys.path
    import control_socket

Frame = collections.namedtuple("Frame", "time channel on raw")
Rejected = collections.namedtuple("Rejected", "time raw reason")

START = 0xA0


class RelayBoard:
    """Decodes the byte stream into frames and tracks the relay states (thread-safe)."""

    def __init__(self, channels: int = 8) -> None:
        self.channels = channels
        self._cond = threading.Condition(threading.RLock())  # re-entrant: snapshot() calls pulses()
        self.clear()

    def clear(self) -> None:
        with self._cond:
            self.received = []  # (time, bytes) chunks as they arrived
            self.frames = []  # Frame, every well-formed command for an existing channel
            self.rejected = []  # Rejected, bytes the board would ignore
            self.states = {ch: False for ch in range(1, self.channels + 1)}
            self._pending = bytearray()

    def feed(self, data: bytes, when: float | None = None) -> None:
        when = time.monotonic() if when is None else when
        with self._cond:
            self.received.append((when, bytes(data)))
            self._pending += data
            self._decode(when)
            self._cond.notify_all()

    def _decode(self, when: float) -> None:
        buf = self._pending
        while buf:
            if buf[0] != START:
                skip = buf.find(bytes([START]))
                skip = len(buf) if skip < 0 else skip
                self.rejected.append(Rejected(when, bytes(buf[:skip]), "no A0 start byte"))
                del buf[:skip]
                continue
            if len(buf) < 4:
                return  # wait for the rest of the frame
            raw = bytes(buf[:4])
            reason = self._check(raw)
            if reason:
                self.rejected.append(Rejected(when, raw[:1], reason))
                del buf[:1]  # resynchronise on the next A0
                continue
            del buf[:4]
            self.states[raw[1]] = raw[2] == 1
            self.frames.append(Frame(when, raw[1], raw[2] == 1, raw))

    def _check(self, raw: bytes) -> str | None:
        start, channel, state, checksum = raw
        if (start + channel + state) & 0xFF != checksum:
            return "checksum %02x, expected %02x" % (checksum, (start + channel + state) & 0xFF)
        if state not in (0, 1):
            return "state byte %02x is neither 00 nor 01" % state
        if not 1 <= channel <= self.channels:
            return "channel %d does not exist on a %d-channel board" % (channel, self.channels)
        return None

    # ---- what tests ask ---------------------------------------------------------------
    def wait_for_frames(self, count: int, timeout: float = 10.0) -> list:
        """Block until at least ``count`` frames arrived (or the timeout); return them all."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.frames) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return list(self.frames)

    def raw_bytes(self) -> bytes:
        with self._cond:
            return b"".join(chunk for dummy, chunk in self.received)

    def pulses(self, channel: int = 1) -> list:
        """(on time, off time, width) for each on -> off sequence on ``channel``."""
        result, on_at = [], None
        with self._cond:
            for f in self.frames:
                if f.channel != channel:
                    continue
                if f.on and on_at is None:
                    on_at = f.time
                elif not f.on and on_at is not None:
                    result.append((on_at, f.time, f.time - on_at))
                    on_at = None
        return result

    def snapshot(self) -> dict:
        with self._cond:
            return {
                "channels": self.channels,
                "states": {str(ch): ("on" if on else "off") for ch, on in self.states.items()},
                "bytes": b"".join(chunk for dummy, chunk in self.received).hex(),
                "frames": [{"time": f.time, "channel": f.channel, "on": f.on, "raw": f.raw.hex()} for f in self.frames],
                "rejected": [{"time": r.time, "raw": r.raw.hex(), "reason": r.reason} for r in self.rejected],
                "pulses": {str(ch): [list(p) for p in self.pulses(ch)] for ch in self.states},
            }


class _Reader:
    """A thread that feeds whatever arrives on a descriptor into the board."""

    def __init__(self, board: RelayBoard) -> None:
        self.board = board
        self._stop = threading.Event()
        self._thread = None

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=type(self).__name__, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            ready = select.select([self._fileno()], [], [], 0.05)[0]
            if not ready:
                continue
            data = self._recv()
            when = time.monotonic()
            if data is None:
                continue
            if not data:
                return  # the other side closed for good
            self.board.feed(data, when)

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        self._close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PtyRelay(_Reader):
    """The board on a pseudo-terminal: open ``.port`` as if it were /dev/ttyUSB0."""

    def __init__(self, board: RelayBoard | None = None) -> None:
        super().__init__(board or RelayBoard())
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no newline translation: bytes arrive as written
        tty.setraw(self._master)
        self.port = os.ttyname(self._slave)
        self._start()

    def _fileno(self) -> int:
        return self._master

    def _recv(self) -> bytes | None:
        try:
            return os.read(self._master, 4096)
        except BlockingIOError:
            return None
        except OSError:  # EIO: no slave open; we keep one open, so this means closing down
            return b""

    def _close(self) -> None:
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass


class SocketRelay(_Reader):
    """The board behind QEMU's emulated USB-serial adapter (client of its unix chardev)."""

    def __init__(self, path: str, board: RelayBoard | None = None, connect_timeout: float = 30.0) -> None:
        super().__init__(board or RelayBoard())
        self.path = path
        self._sock = _connect(path, connect_timeout)
        self._start()

    def _fileno(self) -> int:
        return self._sock.fileno()

    def _recv(self) -> bytes | None:
        try:
            return self._sock.recv(4096)
        except BlockingIOError:
            return None
        except OSError:
            return b""

    def _close(self) -> None:
        self._sock.close()


def _connect(path: str, timeout: float) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# ---- script mode: a control socket ----------------------------------------------------

control = control_socket.request  # a request to a running simulator's control socket, its reply


def _answer(board: RelayBoard, request: dict) -> dict:
    cmd = request.get("cmd")
    if cmd == "status":
        return dict(ok=True, **board.snapshot())
    if cmd == "clear":
        board.clear()
        return {"ok": True}
    if cmd == "quit":
        return {"ok": True, "quit": True}
    return {"ok": False, "error": "unknown cmd %r; use status, clear or quit" % (cmd,)}


def listen_control(path: str) -> socket.socket:
    """The control socket, listening (so a client may connect as soon as this returns)."""
    server = control_socket.listen(path)
    server.settimeout(0.2)
    return server


def serve_control(board: RelayBoard, server: socket.socket, should_stop) -> None:
    """Answer control requests until ``should_stop()`` or a quit request; then remove the socket."""
    path = server.getsockname()
    try:
        while not should_stop():
            try:
                conn = server.accept()[0]
            except socket.timeout:
                continue
            if _serve_connection(board, conn):
                return
    finally:
        server.close()
        os.unlink(path)


def _serve_connection(board: RelayBoard, conn: socket.socket) -> bool:
    """Answer one client's requests; True when it asked the simulator to quit."""
    conn.settimeout(10)  # an idle client must not block the simulator for good
    with conn, conn.makefile("rwb") as stream:
        try:
            for line in stream:
                try:
                    reply = _answer(board, json.loads(line))
                except ValueError as exc:
                    reply = {"ok": False, "error": "bad JSON: %s" % exc}
                stream.write(json.dumps(reply).encode() + b"\n")
                stream.flush()
                if reply.get("quit"):
                    return True
        except OSError:  # timed out or went away
            pass
    return False


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description="Simulated LCUS USB relay board")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", action="store_true", help="serve on a new pseudo-terminal (path printed)")
    where.add_argument("--socket", help="connect to QEMU's chardev unix socket at this path")
    parser.add_argument("--channels", type=int, default=8, help="board size (default: %(default)s)")
    parser.add_argument("--control", required=True, help="path of the JSON-lines control socket to create")
    args = parser.parse_args(argv)
    board = RelayBoard(args.channels)
    transport = PtyRelay(board) if args.pty else SocketRelay(args.socket, board)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *args: stopped.set())
    server = listen_control(args.control)
    # the first line tells the caller where the board is; the control socket already listens
    sys.stdout.write(json.dumps({"port": getattr(transport, "port", args.socket), "control": args.control}) + "\n")
    sys.stdout.flush()
    try:
        serve_control(board, server, stopped.is_set)
    finally:
        transport.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
