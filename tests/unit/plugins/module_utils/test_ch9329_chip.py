# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Chip operations and the box command against the simulated chip on a pseudo-terminal."""

from __future__ import annotations

import json
import time

import pytest

from ansible_collections.onekvm.fleet.plugins.module_utils import _ch9329 as ch
from ansible_collections.onekvm.fleet.plugins.module_utils import _ch9329_protocol as proto
from ansible_collections.onekvm.fleet.plugins.module_utils import _kvmd
from ansible_collections.onekvm.fleet.plugins.module_utils._errors import DeviceError, InvalidArgument, Timeout
from ansible_collections.onekvm.fleet.tests.support.boxpkg import run_cli
from ansible_collections.onekvm.fleet.tests.unit.plugins.modules.ch9329_support import (  # noqa: F401  # pylint: disable=unused-import
    box_env, set_chip_baudrate, sim, write_kvmd_config)


def test_reset_waits_until_the_chip_answers(sim):
    result = ch.reset(ch.LinkOptions(port=sim.port))
    assert result["reply"] == "57 ab 00 8f 01 00 92" and result["status"] == "success"
    assert result["attempts"] == 1 and sim.counters["resets"] == 1
    assert 0.3 <= result["ready_after"]  # the simulated chip is deaf for 0.3 s
    assert sim.log[-1][1] == "57 ab 00 01 00 03"  # it ended on a GET_INFO that was answered
    assert result["info"]["usb_enumerated"] is True
    assert result["polls"] > 1


def test_check_mode_probes_but_sends_no_reset(sim):
    result = ch.reset(ch.LinkOptions(port=sim.port), check_mode=True)
    assert result["changed"] and result["attempts"] == 0 and result["info"]["version"] == "V1.0"
    assert sim.counters["resets"] == 0 and sim.log[-1][1] == "57 ab 00 01 00 03"


def test_retry_after_a_corrupt_reply(sim):
    sim.set_faults(bad_checksum=True, commands=[proto.CMD_RESET])
    with pytest.raises(DeviceError, match="corrupt reply.*after 2 attempts"):
        ch.reset(ch.LinkOptions(port=sim.port, timeout=0.2), retries=1, wait_ready=False)
    assert sim.counters["resets"] == 2


def test_chip_never_ready_times_out(sim):
    sim.set_faults(never_ready=True)
    start = time.monotonic()
    with pytest.raises(Timeout, match="did not answer within 0.8 s after RESET"):
        ch.reset(ch.LinkOptions(port=sim.port), ready_timeout=0.8)
    assert time.monotonic() - start < 2.5


def test_auto_baud_finds_the_chip(sim):
    set_chip_baudrate(sim, 57600)
    result = ch.info(ch.LinkOptions(port=sim.port, baudrate="auto"))
    assert result["baudrate"] == 57600


def test_wrong_baud_is_a_clear_error(sim):
    # a wrong-baud link gives silence or a stray byte: either way the message points at the baud rate
    with pytest.raises((Timeout, DeviceError), match="(at 115200 baud.*check the baud rate|wrong baud rate)"):
        ch.info(ch.LinkOptions(port=sim.port, baudrate=115200, timeout=0.3))
    assert sim.counters["frames"] == 0 and sim.counters["wrong_baud_bytes"] == 6


def test_retry_after_silence(sim):
    sim.set_faults(silent=True, commands=[proto.CMD_RESET])
    with pytest.raises(Timeout, match="after 3 attempts"):
        ch.reset(ch.LinkOptions(port=sim.port, timeout=0.1), retries=2)
    assert sim.counters["frames"] == 1  # the first RESET got through; the chip was deaf to the others


def test_configure_round_trip_with_baud_change_and_strings(sim):
    options = ch.LinkOptions(port=sim.port)
    wanted = {"baudrate": 115200, "vid": "0x1209", "usb_strings": {"product": "OneKVM"}}
    result = ch.configure(options, wanted)
    assert result["changed"] and result["baudrate"] == 115200
    assert any("hid.speed must be 115200" in w for w in result["warnings"])
    assert sim.chip.baudrate == 115200 and sim.chip.strings[1] == b"OneKVM"
    assert sim.chip.active[11:13] == b"\x09\x12"  # little-endian VID
    again = ch.configure(ch.LinkOptions(port=sim.port, baudrate="auto"), wanted)
    assert not again["changed"] and sim.counters["resets"] == 1


def test_configure_check_mode_writes_nothing(sim):
    before = bytes(sim.chip.stored)
    result = ch.configure(ch.LinkOptions(port=sim.port), {"packet_interval": 9}, check_mode=True)
    assert result["changed"] and result["diff"]["after"]["packet_interval"] == 9
    assert bytes(sim.chip.stored) == before and sim.counters["resets"] == 0


def test_configure_refuses_what_kvmd_cannot_drive(sim):
    with pytest.raises(InvalidArgument, match="serial_mode ascii"):
        ch.configure(ch.LinkOptions(port=sim.port), {"serial_mode": "ascii"})
    assert sim.counters["frames"] == 0


def test_configure_new_address_with_force(sim):
    result = ch.configure(ch.LinkOptions(port=sim.port), {"address": 7}, force=True)
    assert result["changed"] and sim.chip.address == 7
    assert ch.info(ch.LinkOptions(port=sim.port, address=7), strings=False)["config"]["address"] == 7


def test_set_default_config_restores_the_factory_settings(sim):
    ch.configure(ch.LinkOptions(port=sim.port), {"packet_interval": 11, "usb_strings": {"serial": "42"}})
    with ch.open_chip(ch.LinkOptions(port=sim.port)) as (chip, report):
        chip.set_default_config()
        chip.send_reset()
        chip.wait_ready(2.0)
        assert report["kvmd_paused"] == []
        assert chip.read_config().get("packet_interval") == 3 and chip.get_string("serial") == ""


def test_bad_parameter_status_is_reported(sim):
    sim.set_faults(error_status=0xE5, commands=[proto.CMD_SET_PARA_CFG])
    with pytest.raises(proto.ChipError, match="refused SET_PARA_CFG: E5 bad parameter"):
        ch.configure(ch.LinkOptions(port=sim.port), {"packet_interval": 5})


def test_kvmd_config_supplies_port_and_speed(sim, box_env):
    set_chip_baudrate(sim, 19200)
    write_kvmd_config(box_env["kvmd_root"], "kvmd:\n  hid:\n    type: ch9329\n    device: %s\n    speed: 19200\n" % sim.port)
    options = ch.LinkOptions()
    assert (options.port, options.baudrate) == (sim.port, 19200)
    assert ch.LinkOptions(port="/dev/null").baudrate == 9600  # kvmd's speed is for its own port only
    assert ch.info(options, strings=False)["baudrate"] == 19200


def test_kvmd_is_paused_and_restored(sim, box_env):
    systemd = box_env["systemd"]
    systemd.add_unit_holding("kvmd.service", sim.port)
    systemd.set_unit("kvmd-hid.service", active=False)
    result = ch.reset(ch.LinkOptions(port=sim.port))
    assert result["kvmd_paused"] == ["kvmd.service"]
    assert systemd.calls == [("stop", "kvmd.service"), ("start", "kvmd.service")]
    assert systemd.is_active("kvmd.service")


def test_kvmd_is_restored_after_a_failure(sim, box_env):
    systemd = box_env["systemd"]
    systemd.add_unit_holding("kvmd.service", sim.port)
    sim.set_faults(silent=True)
    with pytest.raises(Timeout):
        ch.reset(ch.LinkOptions(port=sim.port, timeout=0.2), retries=0)
    assert systemd.calls == [("stop", "kvmd.service"), ("start", "kvmd.service")]


def test_failed_restart_of_kvmd_is_an_error(sim, box_env):
    systemd = box_env["systemd"]
    systemd.add_unit_holding("kvmd.service", sim.port)
    systemd.set(fail_start=True)
    with pytest.raises(DeviceError, match="could not start kvmd again.*systemctl start kvmd.service"):
        ch.info(ch.LinkOptions(port=sim.port), strings=False)


def test_pause_disabled_warns_for_an_action_and_reads_nothing(sim, box_env):
    box_env["systemd"].add_unit_holding("kvmd.service", sim.port)
    result = ch.reset(ch.LinkOptions(port=sim.port, pause_kvmd=False))
    assert result["kvmd_paused"] == [] and "kvmd.service holds" in result["warnings"][0]
    frames = sim.counters["frames"]
    with pytest.raises(_kvmd.KvmdHoldsPort, match="were not read.*pause_kvmd: true"):
        ch.info(ch.LinkOptions(port=sim.port, pause_kvmd=False), strings=False)
    assert box_env["systemd"].calls == [] and sim.counters["frames"] == frames


def test_watchdog_style_probe_is_busy_while_kvmd_holds_the_port(sim, box_env):
    from ansible_collections.onekvm.fleet.plugins.module_utils._errors import Busy
    box_env["systemd"].add_unit_holding("kvmd.service", sim.port)
    with pytest.raises(Busy):
        with ch.open_chip(ch.LinkOptions(port=sim.port, pause_kvmd=False), read_only=True):
            pass
    assert box_env["systemd"].calls == []


def test_kvmd_not_holding_the_port_is_left_alone(sim, box_env):
    box_env["systemd"].set_unit("kvmd.service", active=True, pid=1)
    ch.info(ch.LinkOptions(port=sim.port), strings=False)
    assert box_env["systemd"].calls == []


# -- the box command: same code, exit codes and JSON ----------------------------------------
def _cli(*args):
    res = run_cli("--json", *args)
    return res.returncode, json.loads(res.stdout) if res.stdout.strip() else {"stderr": res.stderr}


def test_cli_reset_and_info(sim):
    rc, out = _cli("ch9329-reset", "--port", sim.port)
    assert rc == 0, out
    # the chip is deaf for 0.3 s from its answer to RESET; the command's clock starts once it has read that
    # answer, so a loaded host's delivery delay comes off the figure (seen: 0.297): most of the 0.3 s remains
    assert out["reply"] == "57 ab 00 8f 01 00 92" and out["ready_after"] >= 0.2
    rc, out = _cli("ch9329-info", "--port", sim.port)
    assert rc == 0, out
    assert out["config"]["vid"] == "1a86" and out["usb_strings"]["product"] == "CH9329"


def test_cli_errors_have_exit_codes(sim, tmp_path):
    sim.set_faults(silent=True)
    rc, out = _cli("ch9329-reset", "--port", sim.port, "--timeout", "0.2", "--retries", "0")
    assert rc == 5 and "no answer from the CH9329" in out["msg"]
    rc, out = _cli("ch9329-info", "--port", str(tmp_path / "nope"))
    assert rc == 3 and "does not exist" in out["msg"]
    rc, out = _cli("ch9329-info", "--port", sim.port, "--baudrate", "4800")
    assert rc == 2 and "4800" in out["msg"]


def test_cli_info_never_stops_kvmd_and_says_how(sim, box_env):
    systemd = box_env["systemd"]
    systemd.add_unit_holding("kvmd.service", sim.port)
    rc, out = _cli("ch9329-info", "--port", sim.port)
    assert rc == 4 and "were not read" in out["msg"] and "--pause-kvmd" in out["msg"], out
    rc, out = _cli("ch9329-reset", "--port", sim.port, "--check")
    assert rc == 0 and out["probed"] is False and out["attempts"] == 0, out
    assert systemd.calls == []
    rc, out = _cli("ch9329-info", "--port", sim.port, "--pause-kvmd", "--no-strings")
    assert rc == 0 and out["kvmd_paused"] == ["kvmd.service"], out
    assert systemd.calls == [("stop", "kvmd.service"), ("start", "kvmd.service")]


def test_cli_address(sim):
    rc, out = _cli("ch9329-reset", "--port", sim.port, "--address", "255")
    assert rc == 2 and "broadcast address" in out["msg"], out
    rc, out = _cli("ch9329-info", "--port", sim.port, "--address", "auto", "--no-strings")
    assert rc == 0 and out["address"] == 0, out


class _WriteSpy:
    """The real pyserial port, with every write() recorded."""

    def __init__(self, ser) -> None:
        self.__dict__["_ser"] = ser
        self.__dict__["writes"] = []

    def write(self, data):
        self.writes.append(bytes(data))
        return self._ser.write(data)

    def __getattr__(self, name):
        return getattr(self._ser, name)

    def __setattr__(self, name, value):
        setattr(self._ser, name, value)


def test_every_frame_is_written_in_one_go(sim):
    """WCH: a packet ends after the packet interval (3 ms) of silence, so a frame must leave
    in one write: each write() is exactly one whole frame."""
    with ch.open_chip(ch.LinkOptions(port=sim.port)) as (chip, report):
        spy = _WriteSpy(chip.ser)
        chip.ser = spy
        chip.read_config()
        chip.set_string("serial", "12345678901234567890123")  # the longest frame after SET_PARA_CFG
        chip.write_config(chip.read_config().writable())
        chip.get_info()
    assert len(spy.writes) == 5
    for data in spy.writes:
        assert proto.frame_end(data) == len(data) and data[:2] == proto.HEAD
