# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""CH9329 reset: ours (checked reply + ready check) vs the seed note's procedure.

Both run in one process against the simulated chip on a pseudo-terminal, which paces its
replies at the serial wire time of the chip's baud rate, answers after ``ANSWER_TIME`` and
stays deaf for ``REBOOT_TIME`` after RESET like a rebooting chip.

The seed note's procedure: two rounds of (open at 9600 with timeout=1, write RESET,
read(100), close, sleep 2 s); read(100) always waits the full second because the reply is
7 bytes. Ours: one RESET with a checked reply, then GET_INFO polls until the chip answers.

Targets: ours >= 10x faster than the seed, and <= 3x the floor (wire time of RESET and
its reply + the chip's answer and reboot time + one GET_INFO exchange on the wire).

Run from a tree laid out as ``.../ansible_collections/onekvm/fleet`` with its parent on
PYTHONPATH (``make bench`` does that).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

from ansible_collections.onekvm.fleet.plugins.module_utils import _ch9329 as ch
from ansible_collections.onekvm.fleet.plugins.module_utils import _ch9329_protocol as proto
from ansible_collections.onekvm.fleet.tests.testbed.ch9329_sim import Chip, Simulator

BAUD = 9600
REBOOT_TIME = 0.5
ANSWER_TIME = 0.001
OUR_RUNS = 5


def seed_procedure(port: str) -> float:
    import serial
    start = time.monotonic()
    packet = bytes([0x57, 0xAB, 0x00, 0x0F, 0x00, sum([0x57, 0xAB, 0x00, 0x0F, 0x00]) % 256])
    for _round in range(2):
        ser = serial.Serial(port, baudrate=BAUD, timeout=1)
        ser.write(packet)
        ser.read(100)
        ser.close()
        time.sleep(2)
    return time.monotonic() - start


def ours(port: str) -> dict:
    return ch.reset(ch.LinkOptions(port=port, baudrate=BAUD, pause_kvmd=False))


def floor_seconds() -> float:
    reset_exchange = proto.wire_time(6 + 7, BAUD) + ANSWER_TIME
    info_exchange = proto.wire_time(6 + 14, BAUD) + ANSWER_TIME
    return reset_exchange + REBOOT_TIME + info_exchange


def main() -> int:
    os.environ.setdefault("ONEKVM_LOCK_PATH", os.path.join(tempfile.mkdtemp(prefix="onekvm-bench-"), "hw.lock"))
    os.environ.setdefault("ONEKVM_KVMD_ROOT", tempfile.mkdtemp(prefix="onekvm-bench-kvmd-"))
    with Simulator.on_pty(chip=Chip(reset_time=REBOOT_TIME), answer_time=ANSWER_TIME) as sim:
        seed = seed_procedure(sim.port)
        time.sleep(REBOOT_TIME + 0.1)
        runs = []
        for _run in range(OUR_RUNS):
            result = ours(sim.port)
            runs.append(result["elapsed"])
            time.sleep(0.05)
        resets = sim.counters["resets"]
    floor = floor_seconds()
    median = statistics.median(runs)
    speedup = seed / median
    ratio = median / floor
    out = sys.stdout
    out.write("CH9329 reset at %d baud, simulated reboot %.2f s, answer %.3f s\n" % (BAUD, REBOOT_TIME, ANSWER_TIME))
    out.write("  seed note procedure (2 rounds, 2 s sleeps):  %.3f s\n" % seed)
    out.write("  ours (checked reply + ready check), %d runs: median %.3f s (min %.3f, max %.3f)\n"
              % (OUR_RUNS, median, min(runs), max(runs)))
    out.write("  floor (wire time + answer + reboot):          %.3f s\n" % floor)
    out.write("  speed-up vs seed: %.1fx (target >= 10x)   ours/floor: %.2fx (target <= 3x)\n" % (speedup, ratio))
    out.write("  RESET frames the chip executed: %d (seed 2 + ours %d)\n" % (resets, OUR_RUNS))
    ok = speedup >= 10 and ratio <= 3
    out.write("  targets %s\n" % ("met" if ok else "MISSED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
