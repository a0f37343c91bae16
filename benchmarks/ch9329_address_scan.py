# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""CH9329 address scan (``address: auto``): measured time per baud rate against the plan.

The simulated chip sits at address 254, the last one the scan asks, on a pseudo-terminal
that paces replies at the wire time of the chip's baud rate (and its 3 ms packet
interval). Printed per rate: the measured time to find it, the planned time ``scan_seconds``
(255 x (20 bytes' wire time + SCAN_SLACK)), and the ratio; then the same for a factory chip
at address 0 (found by the first question).

Run from a tree laid out as ``.../ansible_collections/onekvm/fleet`` with its parent on
PYTHONPATH (``make bench BENCH=benchmarks/ch9329_address_scan.py`` does that).
"""

from __future__ import annotations

import sys
import time

from ansible_collections.onekvm.fleet.plugins.module_utils import _ch9329 as ch
from ansible_collections.onekvm.fleet.plugins.module_utils import _ch9329_protocol as proto
from ansible_collections.onekvm.fleet.tests.testbed.ch9329_sim import Chip, Simulator


def scan_once(baud: int, address: int) -> tuple:
    chip = Chip(reset_time=0.3)
    chip.stored[2] = address
    chip.stored[3:7] = baud.to_bytes(4, "big")
    chip.active = bytes(chip.stored)
    with Simulator.on_pty(chip=chip) as sim:
        options = ch.LinkOptions(port=sim.port, baudrate=baud, address="auto", pause_kvmd=False)
        start = time.monotonic()
        with ch.open_chip(options) as (link, report):
            found = report["address"]
        return time.monotonic() - start, found


def main() -> int:
    print("%-8s %12s %10s %7s %14s" % ("baud", "at 254 (s)", "planned (s)", "ratio", "at 0 (ms)"))
    total = 0.0
    for baud in proto.BAUD_RATES:
        seconds, found = scan_once(baud, 0xFE)
        assert found == 0xFE, found
        first, found = scan_once(baud, 0x00)
        assert found == 0x00, found
        bound = proto.scan_seconds(baud)
        total += bound
        print("%-8d %12.2f %10.2f %7.2f %14.1f" % (baud, seconds, bound, seconds / bound, first * 1000))
    print("planned with baudrate auto (all five rates): %.1f s" % total)
    return 0


if __name__ == "__main__":
    sys.exit(main())
