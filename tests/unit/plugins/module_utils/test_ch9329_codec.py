# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The CH9329 codec and config model: protocol vectors, property tests, validation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.onekvm.fleet.plugins.module_utils import _ch9329_config as chip_config
from ansible_collections.onekvm.fleet.plugins.module_utils import _ch9329_protocol as proto
from ansible_collections.onekvm.fleet.plugins.module_utils._errors import DeviceError, InvalidArgument, OnekvmError, Timeout

FACTORY = bytes.fromhex(
    "80 80 00 00 00 25 80 08 00 00 03 86 1a 29 e1 00 00 00 01 00 0d 00 00 00 00 00 00 00 00 00"
    "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00")


def test_vectors_from_the_protocol():
    assert proto.encode_frame(proto.CMD_RESET) == bytes.fromhex("57 AB 00 0F 00 11")
    assert proto.encode_frame(proto.CMD_GET_INFO) == bytes.fromhex("57 AB 00 01 00 03")
    reply = proto.parse_reply(bytes.fromhex("57 AB 00 8F 01 00 92"), proto.CMD_RESET)
    assert reply.status == proto.STATUS_OK and reply.raw == bytes.fromhex("57 AB 00 8F 01 00 92")


def test_error_status_is_named():
    with pytest.raises(proto.ChipError) as info:
        proto.parse_reply(bytes.fromhex("57 AB 00 C5 01 E4 AC"), 0x05)
    assert "E4 checksum error" in info.value.msg
    assert info.value.details["status_code"] == 0xE4


@pytest.mark.parametrize("code,word", sorted(proto.STATUS_WORDS.items())[1:])
def test_every_status_code_decodes(code, word):
    with pytest.raises(proto.ChipError, match=word.split(" (")[0]):
        proto.parse_reply(proto.encode_frame(proto.CMD_RESET | 0xC0, bytes((code,))), proto.CMD_RESET)


def test_status_in_an_ok_reply_of_a_set_command_is_checked():
    with pytest.raises(proto.ChipError, match="E5 bad parameter"):
        proto.parse_reply(proto.encode_frame(proto.CMD_SET_PARA_CFG | 0x80, b"\xe5"), proto.CMD_SET_PARA_CFG)


def test_leading_noise_is_skipped():
    reply = proto.parse_reply(b"\x00\xff\x57" + bytes.fromhex("57 AB 00 8F 01 00 92"), proto.CMD_RESET)
    assert reply.command == 0x8F


@pytest.mark.parametrize("buf,error,words", [
    (b"", Timeout, "no reply"),
    (b"\x13\x37\x00", DeviceError, "not a frame"),
    (bytes.fromhex("57 AB 00 81 08 30 01"), DeviceError, "truncated"),
    (bytes.fromhex("57 AB 00 8F 01 00 93"), DeviceError, "checksum 0x93, expected 0x92"),
    (bytes.fromhex("57 AB 00 81 01 00 84"), DeviceError, "answered command 0x81 to RESET"),
    (bytes.fromhex("57 AB 00 0F 00 11"), DeviceError, "answered command 0x0F"),  # our own echo is no reply
])
def test_bad_replies_are_rejected(buf, error, words):
    with pytest.raises(error, match=words):
        proto.parse_reply(buf, proto.CMD_RESET)


def test_reply_from_another_address_is_rejected():
    with pytest.raises(DeviceError, match="address 3, expected 0"):
        proto.parse_reply(proto.encode_frame(0x8F, b"\x00", address=3), proto.CMD_RESET)
    with pytest.raises(DeviceError, match="address 3, expected 5"):
        proto.parse_reply(proto.encode_frame(0x8F, b"\x00", address=3), proto.CMD_RESET, address=5)
    # a chip at 0 takes any address code (WCH's document) and may answer as 0
    assert proto.parse_reply(proto.encode_frame(0x8F, b"\x00", address=0), proto.CMD_RESET, address=5).address == 0


@given(command=st.integers(0, 0x3F), address=st.integers(0, 0xFE), data=st.binary(max_size=255))
def test_frames_round_trip(command, address, data):
    frame = proto.encode_frame(command | 0x80, data, address)
    assert proto.frame_end(frame) == len(frame)
    if len(data) == 1 and data != b"\x00" and command not in (0x01, 0x08, 0x0A):
        with pytest.raises(proto.ChipError):
            proto.parse_reply(frame, command, address)
        return
    reply = proto.parse_reply(frame, command, address)
    assert (reply.address, reply.command, reply.data, reply.raw) == (address, command | 0x80, data, frame)


@settings(max_examples=500)
@given(buf=st.binary(max_size=80), command=st.integers(0, 0x3F))
def test_any_bytes_parse_or_raise_our_own_error(buf, command):
    try:
        reply = proto.parse_reply(buf, command)
    except OnekvmError as exc:
        assert exc.msg
        return
    assert reply.command & 0x3F == command and proto.HEAD in buf


@given(noise=st.binary(max_size=20).filter(lambda b: proto.HEAD not in b and not b.endswith(b"\x57")),
       data=st.binary(max_size=60))
def test_noise_before_a_frame_never_hides_it(noise, data):
    frame = proto.encode_frame(proto.CMD_GET_PARA_CFG | 0x80, data)
    assert proto.parse_reply(noise + frame, proto.CMD_GET_PARA_CFG).data == data


@given(frame_len=st.integers(0, 5 + 8))
def test_every_truncation_is_rejected(frame_len):
    frame = proto.encode_frame(0x81, bytes(range(8)))
    with pytest.raises(OnekvmError):
        proto.parse_reply(frame[:frame_len], proto.CMD_GET_INFO)


def test_factory_config_decodes():
    config = chip_config.ChipConfig(FACTORY).as_dict()
    assert config["mode"] == "keyboard_mouse" and config["mode_set_by_pins"]
    assert config["serial_mode"] == "protocol" and config["baudrate"] == 9600
    assert (config["vid"], config["pid"]) == ("1a86", "e129")
    assert (config["vid_raw"], config["pid_raw"]) == ("86 1a", "29 e1")
    assert config["raw"] == FACTORY.hex(" ")


@given(raw=st.binary(min_size=50, max_size=50))
def test_config_serialises_back_byte_exact(raw):
    config = chip_config.ChipConfig(raw)
    values = {name: config.get(name) for name in chip_config.CONFIG_FIELDS}
    assert config.replaced(**values).raw == raw


@given(raw=st.binary(min_size=50, max_size=50), baud=st.sampled_from(proto.BAUD_RATES), vid=st.integers(0, 0xFFFF))
def test_changing_fields_touches_only_their_bytes(raw, baud, vid):
    new = chip_config.ChipConfig(raw).replaced(baudrate=baud, vid=vid)
    assert new.get("baudrate") == baud and new.get("vid") == vid
    assert new.raw[:3] + new.raw[7:11] + new.raw[13:] == raw[:3] + raw[7:11] + raw[13:]


def test_desired_config_never_writes_the_pin_set_bit():
    # WCH's document: SET_PARA_CFG takes working mode 00-03 and serial mode 00-02 only; 80-83 /
    # 80-82 are what GET_PARA_CFG reports when pins set the mode (a factory chip reads 80 80)
    current = chip_config.ChipConfig(FACTORY)
    same = chip_config.desired_config(current, {"mode": "keyboard_mouse", "serial_mode": "protocol"})
    assert same.raw[:2] == b"\x00\x00" and same.raw[2:] == FACTORY[2:]
    assert same.raw == current.writable().raw  # so: no change to make
    other = chip_config.desired_config(current, {"mode": "keyboard"})
    assert other.raw[:2] == b"\x01\x00" and other.raw[2:] == FACTORY[2:]
    pins_keyboard = chip_config.ChipConfig(b"\x81\x80" + FACTORY[2:])
    assert chip_config.desired_config(pins_keyboard, {"packet_interval": 5}).raw[:2] == b"\x01\x00"  # the same mode, by software


def test_longer_config_reply_reads_the_first_50_bytes_and_keeps_the_rest():
    extra = bytes(range(0xA0, 0xA0 + 22))
    config = chip_config.ChipConfig(FACTORY + extra)
    assert config.raw == FACTORY and config.extra == extra
    decoded = config.as_dict()
    assert (decoded["baudrate"], decoded["vid"], decoded["reply_size"]) == (9600, "1a86", 72)
    assert decoded["raw_extra"] == extra.hex(" ")
    assert len(chip_config.desired_config(config, {"packet_interval": 5}).raw) == 50


def test_strings_set_their_flags():
    cfg = chip_config.desired_config(chip_config.ChipConfig(FACTORY), {"usb_strings": {"product": "KVM"}})
    assert cfg.raw[36] == 0x80 | 0x02
    assert chip_config.desired_config(cfg, {"custom_strings": False}).raw[36] == 0


def test_config_of_wrong_size_is_a_device_error():
    with pytest.raises(DeviceError, match="49-byte config"):
        chip_config.ChipConfig(bytes(49))


@pytest.mark.parametrize("changes,words", [
    ({"baudrate": 4800}, "baudrate 4800 is not one the CH9329 supports"),
    ({"vid": 0x10000}, "VID 0x10000 is out of range"),
    ({"pid": "zz"}, "PID must be a 16-bit hex number"),
    ({"address": 255}, "broadcast address: a chip set to it would act on broadcasts but never answer"),
    ({"address": 256}, "address must be 0-254"),
    ({"mode": "joystick"}, "mode 'joystick' is not one of"),
    ({"usb_strings": {"product": "x" * 24}}, "24 bytes; the CH9329 keeps at most 23"),
    ({"usb_strings": {"product": "Tastatur \u00e4"}}, "plain ASCII"),
    ({"usb_strings": {"vendor": "x"}}, "usb_strings.vendor is unknown"),
    ({"packet_interval": -1}, "packet_interval must be 0-65535"),
])
def test_invalid_config_values_are_refused(changes, words):
    with pytest.raises(InvalidArgument, match=words):
        chip_config.validate_changes(changes)


def test_ids_accept_numbers_and_hex_strings():
    assert chip_config.parse_id("0x1A86", "VID") == chip_config.parse_id("1a86", "VID") == chip_config.parse_id(0x1A86, "VID") == 0x1A86


def test_kvmd_safety():
    assert chip_config.kvmd_safety_problems({"serial_mode": "protocol", "mode": "keyboard_mouse", "address": 0}) == []
    assert len(chip_config.kvmd_safety_problems({"serial_mode": "ascii", "mode": "mouse", "address": 2})) == 3


def test_wire_time():
    assert proto.wire_time(960, 9600) == pytest.approx(1.0)
