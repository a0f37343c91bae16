# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The CH9329 simulator against the protocol vectors of the CH9329 (independent of the
production codec: frames here are written out as literal bytes)."""

from __future__ import annotations

import os
import subprocess
import sys
import termios
import time
import tty

import pytest

from ansible_collections.onekvm.fleet.tests.testbed import ch9329_sim, ch9329_sim_chip
from ansible_collections.onekvm.fleet.tests.testbed.ch9329_sim import Chip, Simulator

RESET = bytes.fromhex("57 AB 00 0F 00 11")
RESET_OK = bytes.fromhex("57 AB 00 8F 01 00 92")
GET_INFO = bytes.fromhex("57 AB 00 01 00 03")


class RawPort:
    """The client end of the pty at a given speed, with plain os calls."""

    def __init__(self, path: str, baud: int = 9600) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd)
        attrs = termios.tcgetattr(self.fd)
        speed = getattr(termios, "B%d" % baud)
        attrs[4] = attrs[5] = speed
        termios.tcsetattr(self.fd, termios.TCSANOW, attrs)

    def ask(self, data: bytes, expect: int, timeout: float = 1.0) -> bytes:
        os.write(self.fd, data)
        return self.read(expect, timeout)

    def read(self, expect: int, timeout: float = 1.0) -> bytes:
        out = b""
        deadline = time.monotonic() + timeout
        while len(out) < expect and time.monotonic() < deadline:
            import select
            if select.select([self.fd], [], [], 0.02)[0]:
                out += os.read(self.fd, 256)
        return out

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def sim():
    with Simulator.on_pty(chip=Chip(reset_time=0.3)) as s:
        yield s


@pytest.fixture
def port(sim):
    p = RawPort(sim.port)
    yield p
    p.close()


def test_reset_vector(port, sim):
    assert port.ask(RESET, 7) == RESET_OK
    assert sim.counters["resets"] == 1


def test_get_info_vector_has_eight_data_bytes(port):
    reply = port.ask(GET_INFO, 14)
    assert reply[:5] == bytes.fromhex("57 AB 00 81 08")
    assert reply[5] == 0x30 and reply[6] == 0x01  # V1.0, enumerated
    assert reply[-1] == sum(reply[:-1]) & 0xFF


def test_checksum_error_reply_like_the_forum_example(port):
    assert port.ask(bytes.fromhex("57 AB 00 05 00 00"), 7) == bytes.fromhex("57 AB 00 C5 01 E4 AC")


def test_unknown_command_and_bad_head(port):
    assert port.ask(bytes.fromhex("57 AB 00 33 00 35"), 7) == bytes.fromhex("57 AB 00 F3 01 E3 D9")
    assert port.ask(bytes.fromhex("57 AC"), 7)[5] == 0xE2


def test_partial_frame_times_out_with_e1(port):
    assert port.ask(bytes.fromhex("57 AB 00 01"), 7, timeout=1.0) == bytes.fromhex("57 AB 00 C1 01 E1 A5")


def test_leading_noise_is_dropped(port):
    assert port.ask(b"\x00\x13" + RESET, 7) == RESET_OK


def with_sum(hex_body: str) -> bytes:
    body = bytes.fromhex(hex_body)
    return body + bytes((sum(body) & 0xFF,))


def set_address(sim, address: int) -> None:
    sim.chip.stored[2] = address
    sim.chip.active = bytes(sim.chip.stored)


def test_chip_at_address_0_accepts_any_address_code(port):
    # WCH doc: a chip at 00 accepts frames with any address code
    reply = port.ask(bytes.fromhex("57 AB 05 01 00 08"), 14)
    assert reply[:5] == bytes.fromhex("57 AB 00 81 08")


def test_chip_at_another_address_takes_its_own_only(port, sim):
    set_address(sim, 0x05)
    assert port.ask(GET_INFO, 14, timeout=0.3) == b""  # 00 is not its address
    assert port.ask(with_sum("57 AB 06 01 00"), 14, timeout=0.3) == b""
    assert port.ask(with_sum("57 AB 05 01 00"), 14)[:5] == bytes.fromhex("57 AB 05 81 08")
    assert sim.counters["other_address"] == 2


@pytest.mark.parametrize("address", [0x00, 0x05])
def test_broadcast_is_executed_but_never_answered(port, sim, address):
    set_address(sim, address)
    assert port.ask(with_sum("57 AB FF 01 00"), 1, timeout=0.3) == b""
    assert port.ask(with_sum("57 AB FF 0F 00"), 1, timeout=0.3) == b""  # a broadcast RESET
    assert sim.counters["resets"] == 1 and sim.counters["broadcasts"] == 2


def test_frame_split_by_a_gap_is_two_packets(port, sim):
    # WCH doc: a packet ends after the packet interval (3 ms) of silence
    os.write(port.fd, RESET[:3])
    # the simulator timestamps bytes when it reads them: wait until it has the first part,
    # so the 20 ms gap is one it sees even on a loaded machine
    deadline = time.monotonic() + 2
    while len(sim.chip.buffer) < 3 and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(0.02)
    os.write(port.fd, RESET[3:])
    reply = port.read(7, timeout=0.5)
    assert reply == bytes.fromhex("57 AB 00 C0 01 E1 A4") or reply[3:6] == bytes.fromhex("C0 01 E1"), reply.hex(" ")
    assert sim.counters["resets"] == 0


def test_frame_in_one_write_is_one_packet(port, sim):
    assert port.ask(RESET, 7) == RESET_OK


@pytest.mark.parametrize("data,status", [
    ("00 00 04 00 00 00 00 00", 0x00),
    ("00 01 04 00 00 00 00 00", 0xE5),  # second byte "must be 0x00"
    ("00 00 04 00 00 00 00", 0xE5),  # 7 bytes
    ("00 00 04 00 00 00 00 00 00", 0xE5),  # 9 bytes
])
def test_keyboard_data_is_exactly_eight_bytes(port, sim, data, status):
    payload = bytes.fromhex(data)
    reply = port.ask(with_sum("57 AB 00 02 %02X " % len(payload) + data), 7)
    assert reply[5] == status, reply.hex(" ")
    assert sim.counters["keyboard_reports"] == (1 if status == 0 else 0)


def config_frame(cfg: bytes) -> bytes:
    return with_sum("57 AB 00 09 32 " + bytes(cfg).hex(" "))


@pytest.mark.parametrize("offset,value,status", [
    (0, 0x03, 0x00), (0, 0x04, 0xE5), (0, 0x80, 0xE5), (0, 0x83, 0xE5),  # working mode 00-03 only
    (1, 0x02, 0x00), (1, 0x03, 0xE5), (1, 0x80, 0xE5),  # serial mode 00-02 only
    (2, 0xFF, 0x00), (2, 0x7F, 0x00),  # address 00-FF
])
def test_set_para_cfg_checks_modes_as_documented(port, sim, offset, value, status):
    cfg = ch9329_sim_chip.factory_config()
    cfg[0] = cfg[1] = 0x00
    cfg[offset] = value
    assert port.ask(config_frame(cfg), 7)[3:6] == bytes((0x89 if status == 0 else 0xC9, 0x01, status))


def test_factory_config_reads_pin_set_modes_that_cannot_be_written_back(port):
    reply = port.ask(bytes.fromhex("57 AB 00 08 00 0A"), 56)
    assert reply[5:7] == bytes.fromhex("80 80")  # a real chip's factory dump
    assert port.ask(config_frame(reply[5:55]), 7)[3:6] == bytes.fromhex("C9 01 E5")


def test_variant_longer_config_reply(sim):
    sim.chip.config_reply_size = 72
    raw = RawPort(sim.port)
    try:
        reply = raw.ask(bytes.fromhex("57 AB 00 08 00 0A"), 78)
    finally:
        raw.close()
    assert reply[3:5] == bytes.fromhex("88 48") and len(reply) == 78
    assert reply[5:55] == bytes(sim.chip.stored) and reply[-1] == sum(reply[:-1]) & 0xFF


def test_variant_mode_pins_report_bit_7(port, sim):
    sim.chip.mode_pins = True
    cfg = ch9329_sim_chip.factory_config()
    cfg[0] = cfg[1] = 0x00
    assert port.ask(config_frame(cfg), 7)[5] == 0x00
    assert port.ask(bytes.fromhex("57 AB 00 08 00 0A"), 56)[5:7] == bytes.fromhex("80 80")


def test_variant_volatile_settings_lost_at_reset_kept_at_power_on(port, sim):
    sim.chip.volatile_settings = True
    cfg = ch9329_sim_chip.factory_config()
    cfg[0] = cfg[1] = 0x00
    cfg[9:11] = b"\x00\x07"
    assert port.ask(config_frame(cfg), 7)[5] == 0x00
    assert port.ask(RESET, 7) == RESET_OK
    time.sleep(0.35)
    assert port.ask(bytes.fromhex("57 AB 00 08 00 0A"), 56)[14:16] == b"\x00\x03"  # the old interval is back
    assert port.ask(config_frame(cfg), 7)[5] == 0x00
    sim.chip.power_cycle()
    assert port.ask(bytes.fromhex("57 AB 00 08 00 0A"), 56)[14:16] == b"\x00\x07"


def test_chip_is_deaf_after_reset_then_answers(port, sim):
    port.ask(RESET, 7)
    assert port.ask(GET_INFO, 14, timeout=0.15) == b""
    time.sleep(0.3)
    assert len(port.ask(GET_INFO, 14)) == 14


def test_config_read_write_and_baud_change_after_reset(port, sim):
    reply = port.ask(bytes.fromhex("57 AB 00 08 00 0A"), 56)
    assert reply[3:5] == bytes.fromhex("88 32")
    cfg = bytearray(reply[5:55])
    assert cfg[3:7] == bytes.fromhex("00 00 25 80") and cfg[11:15] == bytes.fromhex("86 1A 29 E1")
    cfg[3:7] = bytes.fromhex("00 01 C2 00")  # 115200
    cfg[0] = cfg[1] = 0x00  # the pin-set 80 80 it read cannot be written back
    body = bytes.fromhex("57 AB 00 09 32") + bytes(cfg)
    assert port.ask(body + bytes((sum(body) & 0xFF,)), 7) == bytes.fromhex("57 AB 00 89 01 00 8C")
    assert sim.chip.baudrate == 9600  # not before RESET
    port.ask(RESET, 7)
    assert sim.chip.baudrate == 115200
    time.sleep(0.35)
    assert port.ask(GET_INFO, 14, timeout=0.3) == b"" or port.read(14, 0.1)[:1] != b"\x57"  # wrong baud now
    fast = RawPort(sim.port, 115200)
    try:
        assert len(fast.ask(GET_INFO, 14)) == 14
    finally:
        fast.close()


def test_bad_config_value_is_e5(port):
    body = bytes.fromhex("57 AB 00 09 32") + bytes(50)  # baud 0
    assert port.ask(body + bytes((sum(body) & 0xFF,)), 7)[3:6] == bytes.fromhex("C9 01 E5")


def test_usb_strings(port):
    body = bytes.fromhex("57 AB 00 0B 05 01 03") + b"KVM"
    assert port.ask(body + bytes((sum(body) & 0xFF,)), 7)[3:6] == bytes.fromhex("8B 01 00")
    reply = port.ask(bytes.fromhex("57 AB 00 0A 01 01 0E"), 11)
    assert reply[5:10] == b"\x01\x03KVM"


def test_keyboard_frame_acknowledged(port):
    body = bytes.fromhex("57 AB 00 02 08 00 00 04 00 00 00 00 00")
    assert port.ask(body + bytes((sum(body) & 0xFF,)), 7)[3:6] == bytes.fromhex("82 01 00")


@pytest.mark.parametrize("fault,check", [
    ({"silent": True}, lambda r: r == b""),
    ({"garbage": True}, lambda r: r and r[:2] != b"\x57\xab"),
    ({"truncate": True}, lambda r: 0 < len(r) < 14),
    ({"bad_checksum": True}, lambda r: len(r) == 14 and r[-1] != sum(r[:-1]) & 0xFF),
    ({"error_status": 0xE6}, lambda r: r == bytes.fromhex("57 AB 00 C1 01 E6 AA")),
    ({"wrong_command": True}, lambda r: r[3] == 0x82),
])
def test_fault_switches(port, sim, fault, check):
    sim.set_faults(**fault)
    assert check(port.ask(GET_INFO, 14, timeout=0.4))
    sim.clear_faults()
    assert len(port.ask(GET_INFO, 14)) == 14


def test_slow_reply(port, sim):
    sim.set_faults(delay=0.3)
    start = time.monotonic()
    assert len(port.ask(GET_INFO, 14)) == 14
    assert time.monotonic() - start >= 0.3


def test_wrong_baud_answers_no_valid_frame(sim):
    fast = RawPort(sim.port, 115200)
    try:
        reply = fast.ask(GET_INFO, 14, timeout=0.3)
        assert HEAD_OK(reply) is False
        assert sim.counters["wrong_baud_bytes"] == 6
    finally:
        fast.close()


def HEAD_OK(reply: bytes) -> bool:  # noqa: N802 - reads as a predicate
    return reply.startswith(b"\x57\xab")


def test_log_records_frames(port, sim):
    port.ask(GET_INFO, 14)
    assert sim.log[-1][1] == "57 ab 00 01 00 03"


def test_script_on_socket_reconnects_and_is_driven_through_control(tmp_path):
    sock_path, control_path = str(tmp_path / "chardev.sock"), str(tmp_path / "control.sock")
    import socket
    server = socket.socket(socket.AF_UNIX)
    server.bind(sock_path)
    server.listen(1)
    server.settimeout(10)
    proc = subprocess.Popen([sys.executable, ch9329_sim.__file__, "--socket", sock_path, "--control", control_path,
                             "--reset-time", "0.2"], stdout=subprocess.PIPE, text=True)
    try:
        for round_no in range(2):  # the second round proves the reconnect after a drop
            conn = server.accept()[0]
            conn.settimeout(2)
            time.sleep(0.3 if round_no else 0)  # past the previous round's reboot
            conn.sendall(RESET)
            assert _recv(conn, 7) == RESET_OK
            conn.close()
        assert ch9329_sim.control(control_path, {"op": "counters"})["resets"] == 2
        ch9329_sim.control(control_path, {"op": "set_faults", "faults": {"error_status": 0xE5}})
        conn = server.accept()[0]
        conn.settimeout(2)
        time.sleep(0.3)
        conn.sendall(GET_INFO)
        assert _recv(conn, 7)[3:6] == bytes.fromhex("C1 01 E5")
        log = ch9329_sim.control(control_path, {"op": "log"})
        assert log[-1][1] == "57 ab 00 01 00 03" and log[-1][0] > 0
        conn.close()
    finally:
        proc.terminate()
        proc.wait(10)
        server.close()


def _recv(conn, n: int) -> bytes:
    out = b""
    while len(out) < n:
        out += conn.recv(n - len(out))
    return out
