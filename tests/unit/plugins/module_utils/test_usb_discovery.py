# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""USB discovery, id parsing and device selection on fake sysfs trees."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.onekvm.fleet.plugins.module_utils import _usb
from ansible_collections.onekvm.fleet.plugins.module_utils._errors import Ambiguous, InvalidArgument, MissingDependency, NotFound
from ansible_collections.onekvm.fleet.tests.unit.plugins.module_utils.fake_sysfs import FakeSysfs, onekvm_box


@pytest.fixture
def box(tmp_path):
    return onekvm_box(tmp_path)


def devices_of(fake):
    return _usb.list_devices(fake.sysfs_root, fake.dev_root)


def by_port(fake):
    return {d.port: d for d in devices_of(fake)}


# ---------------------------------------------------------------- parse_id

@pytest.mark.parametrize("text, expected", [
    ("534d:2109", (0x534D, 0x2109)),
    ("534D:2109", (0x534D, 0x2109)),
    (" 345f:2130 ", (0x345F, 0x2130)),
    ("0000:ffff", (0, 0xFFFF)),
])
def test_parse_id_accepts_lsusb_form(text, expected):
    assert _usb.parse_id(text) == expected


@pytest.mark.parametrize("text", ["xyz", "1234", "12345:1", "534d:210", "534d-2109", "0x534d:0x2109", "", None, "g34d:2109"])
def test_parse_id_rejects_malformed_ids_with_a_hint(text):
    with pytest.raises(InvalidArgument) as info:
        _usb.parse_id(text)
    assert "534d:2109" in info.value.msg and repr(text) in info.value.msg


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_parse_id_round_trips_every_id(vid, pid):
    assert _usb.parse_id("%04x:%04X" % (vid, pid)) == (vid, pid)


# ---------------------------------------------------------------- discovery

def test_list_devices_reads_the_whole_topology_in_port_order(box):
    devices = devices_of(box)
    assert [d.port for d in devices] == ["usb1", "1-1", "1-1.1", "1-1.2", "1-1.3", "1-1.4", "1-2", "1-2.1", "1-3"]


def test_device_record_has_ids_strings_parent_and_usbfs_node(box):
    tablet = by_port(box)["1-1.2"]
    assert (tablet.bus, tablet.address, tablet.id) == (1, 4, "0627:0001")
    assert (tablet.serial, tablet.manufacturer, tablet.product, tablet.speed) == ("TWIN", "QEMU", "QEMU USB Tablet", "12")
    assert tablet.parent == "1-1"
    assert tablet.usbfs == os.path.join(box.dev_root, "bus", "usb", "001", "004")
    assert by_port(box)["1-3"].parent == "usb1"
    assert by_port(box)["usb1"].parent is None


def test_interfaces_drivers_and_nodes_behind_a_device(box):
    dongle = by_port(box)["1-3"]
    assert [(i.name, i.interface_class, i.driver) for i in dongle.interfaces] == [
        ("1-3:1.0", 0x0E, "uvcvideo"), ("1-3:1.1", 0x0E, "uvcvideo"),
        ("1-3:1.2", 0x01, "snd-usb-audio"), ("1-3:1.3", 0x01, None)]
    assert dongle.drivers == ["snd-usb-audio", "uvcvideo"]
    assert dongle.bound_interfaces == {"1-3:1.0": "uvcvideo", "1-3:1.1": "uvcvideo", "1-3:1.2": "snd-usb-audio"}
    dev = box.dev_root
    assert dongle.nodes == sorted(os.path.join(dev, n) for n in ("video0", "video1", "snd/pcmC1D0c", "snd/controlC1"))


def test_a_hub_does_not_claim_the_nodes_of_devices_behind_it(box):
    devices = by_port(box)
    assert devices["1-1"].nodes == []
    assert devices["1-1"].drivers == ["hub"]
    assert devices["1-1.1"].nodes == [os.path.join(box.dev_root, "ttyUSB0")]
    assert devices["usb1"].interfaces[0].name == "1-0:1.0"


def test_as_dict_is_the_reported_record(box):
    record = by_port(box)["1-1.1"].as_dict()
    assert record["id"] == "0403:6001" and record["vid"] == "0403" and record["pid"] == "6001"
    assert record["drivers"] == ["ftdi_sio"]
    assert record["interfaces"] == [{"name": "1-1.1:1.0", "class": 0xFF, "driver": "ftdi_sio"}]
    assert record["nodes"] == [os.path.join(box.dev_root, "ttyUSB0")]
    assert record["authorized"] is True


def test_deauthorized_and_half_gone_devices(box):
    box.set_attr("1-1.4", "authorized", "0")
    os.unlink(os.path.join(box.device_dir("1-1.3"), "devnum"))  # disappearing while being read
    devices = by_port(box)
    assert devices["1-1.4"].authorized is False
    assert "1-1.3" not in devices
    assert _usb.read_device("9-9", box.sysfs_root, box.dev_root) is None


def test_no_usb_in_sysfs_is_a_clear_error(tmp_path):
    with pytest.raises(MissingDependency) as info:
        _usb.list_devices(str(tmp_path / "sys"), str(tmp_path / "dev"))
    assert "no USB support" in info.value.msg


def test_empty_bus_lists_nothing(tmp_path):
    assert devices_of(FakeSysfs(tmp_path)) == []


# ---------------------------------------------------------------- selection

def test_select_by_id_and_port_picks_one_twin(box):
    [twin] = _usb.select_devices(devices_of(box), id="0627:0001", port="1-1.3")
    assert twin.address == 5


def test_identical_twins_are_ambiguous_and_listed(box):
    with pytest.raises(Ambiguous) as info:
        _usb.select_devices(devices_of(box), id="0627:0001", serial="TWIN")
    msg = info.value.msg
    assert msg.startswith("2 USB devices match id=0627:0001 serial=TWIN")
    assert "1-1.2 0627:0001 QEMU USB Tablet" in msg and "1-1.3 0627:0001" in msg and "port" in msg
    assert info.value.details["matches"][0].startswith("1-1.2")


def test_all_allows_many(box):
    ports = [d.port for d in _usb.select_devices(devices_of(box), id="0627:0001", allow_many=True)]
    assert ports == ["1-1.2", "1-1.3", "1-2.1"]


def test_vendor_and_product_select_like_id(box):
    [dongle] = _usb.select_devices(devices_of(box), vendor="534D", product="0x2109")
    assert dongle.port == "1-3"


def test_bus_and_address_select(box):
    [hit] = _usb.select_devices(devices_of(box), bus=1, address=6)
    assert hit.port == "1-1.4"


def test_nothing_matches_lists_what_is_present(box):
    with pytest.raises(NotFound) as info:
        _usb.select_devices(devices_of(box), id="534d:2109", port="1-1.2")
    msg = info.value.msg
    assert msg.startswith("no USB device matches id=534d:2109 port=1-1.2; present: ")
    assert "1-3 534d:2109 USB Video" in msg and "1-1.1 0403:6001 FT232" in msg
    assert "usb1" not in msg  # root hubs are not candidates worth listing
    assert len(info.value.details["present"]) == 8


def test_allow_none_returns_empty(box):
    assert _usb.select_devices(devices_of(box), id="dead:beef", allow_none=True) == []


def test_no_selector_selects_all(box):
    assert len(_usb.select_devices(devices_of(box), allow_many=True)) == 9


@pytest.mark.parametrize("selectors, words", [
    (dict(id="xyz"), "id must be"),
    (dict(id="534d:2109", vendor="534d", product="2109"), "either id"),
    (dict(vendor="534d"), "vendor and product go together"),
    (dict(vendor="53x4d", product="2109"), "vendor must be a hex number"),
    (dict(vendor="534d", product="12345"), "product must be a hex number"),
    (dict(port="1.2"), "port must be a USB port path"),
    (dict(port="/dev/ttyUSB0"), "port must be a USB port path"),
    (dict(bus=1), "bus and address go together"),
    (dict(bus=0, address=3), "bus must be a positive integer"),
    (dict(bus=1, address="x"), "address must be a positive integer"),
])
def test_bad_selectors_are_clear_errors(box, selectors, words):
    with pytest.raises(InvalidArgument) as info:
        _usb.select_devices(devices_of(box), **selectors)
    assert words in info.value.msg


# ---------------------------------------------------------------- find_devices

def find(fake, **selection):
    return _usb.find_devices(fake.sysfs_root, fake.dev_root, **selection)


def test_find_by_port_reads_only_that_device(box, monkeypatch):
    monkeypatch.setattr(_usb, "list_devices", None)  # would fail if the whole bus were listed
    [twin] = find(box, id="0627:0001", port="1-1.3")
    assert twin.address == 5 and twin.drivers == ["usbhid"]


def test_find_by_port_with_another_device_there_says_what_is_there(box):
    with pytest.raises(NotFound) as info:
        find(box, id="534d:2109", port="1-1.3")
    assert "present: 1-1.3 0627:0001 QEMU USB Tablet" in info.value.msg


def test_find_by_empty_port_lists_the_bus(box):
    with pytest.raises(NotFound) as info:
        find(box, port="1-1.7")
    assert "1-3 534d:2109 USB Video" in info.value.msg


def test_find_checks_selectors_first(box):
    with pytest.raises(InvalidArgument):
        find(box, port="1-1.2/../..")
    with pytest.raises(InvalidArgument):
        find(box, port="1-1.2", id="xyz")


def test_find_without_port_is_select_on_the_listing(box):
    assert [d.port for d in find(box, id="0403:6001", allow_many=True)] == ["1-1.1", "1-1.4"]
    assert find(box, id="dead:beef", allow_none=True) == []


def test_listing_reads_interfaces_and_nodes_only_when_asked(box):
    [tablet] = [d for d in devices_of(box) if d.port == "1-1.2"]
    box.unbind("1-1.2:1.0")  # a change after listing is seen on first use
    assert tablet.drivers == []
    snapshot = _usb.read_device("1-1.3", box.sysfs_root, box.dev_root)
    box.unbind("1-1.3:1.0")  # read_device takes a snapshot: later changes are not in it
    assert snapshot.drivers == ["usbhid"]
