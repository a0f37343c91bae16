# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The CH9329 simulator driven by an independent client: pych9329-hid from PyPI (a test-only
dependency; never on a box). Written by others, it checks that the
simulator speaks the protocol real clients speak, not only our own codec.

Used for what that library gets right: config read and write, USB strings, keyboard
reports, RESET. Not used:
- ``get_info()``: it expects 3 data bytes (and reads 9 bytes of frame) where WCH's document
  gives GET_INFO 8 data bytes, so it rejects a correct answer;
- its VID/PID properties: they decode big-endian, while real chips store them little-endian
  (factory ``86 1A 29 E1`` = 1A86:E129; One-KVM issue #297, a real chip's dump).
"""

from __future__ import annotations

import time

import pytest
from pych9329_hid import CH9329, CH9329Config, SerialTransport

from ansible_collections.onekvm.fleet.tests.testbed.ch9329_sim import Chip, Simulator

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # the library warns on every retry


@pytest.fixture
def sim():
    # pace=False: the library waits 0.1 s for a reply at 9600 baud; wire pacing is not what is tested here
    with Simulator.on_pty(chip=Chip(reset_time=0.3), pace=False) as simulator:
        yield simulator


@pytest.fixture
def client(sim):
    transport = SerialTransport(sim.port, 9600)
    # the library gives a reply 0.1 s (its budget for a real chip at 9600 baud) and then sends the
    # command again: on a loaded machine the simulator's thread can miss that, and a repeated
    # keyboard report or config write is not what these tests judge. A longer wait keeps the frames
    # exactly one per call.
    transport.ser.timeout = 2.0
    try:
        yield CH9329(transport)
    finally:
        transport.close()


def test_config_read(client, sim):
    config = client.get_config()
    assert config is not None and config.to_bytes() == bytes(sim.chip.stored)
    assert (config.baudrate, config.address, config.packet_interval) == (9600, 0, 3)
    assert (config.chip_mode, config.serial_mode) == (0x80, 0x80)  # a factory chip: modes set by the pins


def test_config_write_as_the_document_allows(client, sim):
    config = client.get_config()
    # written back as read (80 80) the simulator answers E5, as WCH's document says
    assert client.set_config(CH9329Config(config.to_bytes())) is False
    assert sim.chip.counters["errors"] == 1
    config.chip_mode = 0x00
    config.serial_mode = 0x00
    config.packet_interval = 9
    assert client.set_config(config) is True
    assert sim.chip.stored[9:11] == b"\x00\x09" and bytes(sim.chip.stored[:2]) == b"\x00\x00"
    assert client.get_config().packet_interval == 9


def test_usb_strings(client, sim):
    assert client.get_usb_descriptor(0x00) == "WCH" and client.get_usb_descriptor(0x01) == "CH9329"
    assert client.set_usb_descriptor(0x01, "OneKVM keyboard") is True
    assert sim.chip.strings[1] == b"OneKVM keyboard"
    assert client.get_usb_descriptor(0x01) == "OneKVM keyboard"


def test_keyboard_report(client, sim):
    assert client.send_keyboard(0x02, [0x04]) is True  # shift + a
    assert client.send_keyboard(0x00, []) is True  # release
    assert sim.chip.counters["keyboard_reports"] == 2
    assert sim.log[-2][1] == "57 ab 00 02 08 02 00 04 00 00 00 00 00 12"


def test_reset_then_the_chip_answers_again(client, sim):
    assert client.chip_reset() is True
    assert sim.counters["resets"] == 1
    time.sleep(0.35)
    assert client.get_config() is not None
