# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""USB resets on the simulated box: every method really resets QEMU's emulated devices
(the guest kernel says so), the wait sees them come back, and the refusals are clear.

Topology (tests/testbed/vm.py): hub 1-1 with per-port power switching holds the CH9329's
FTDI adapter (1-1.1), the identical tablet twins (1-1.2 = the dongle stand-in, 1-1.3) and
the relay's FTDI (1-1.4); hub 1-2 without power switching holds a keyboard (1-2.1).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time

import pytest

from ansible_collections.onekvm.fleet.tests.testbed.vm import wait_for

DONGLE, TWIN_B, FTDI, HUB2_KBD = "1-1.2", "1-1.3", "1-1.1", "1-2.1"
TABLET = "0627:0001"


def devices(box) -> dict:
    return {d["port"]: d for d in box.cli("usb-list")["devices"]}


def reset_json(box, *args, check=True) -> dict:
    return box.cli("usb-reset", *args, check=check, timeout=300)


def hid_probe_re(port: str):
    # hid-generic logs each probe "... on usb-0000:00:04.0-1.2/input0"
    return re.compile(r"hid-generic \S+: .* on usb-\S+-%s/input0" % re.escape(port[2:]))


@pytest.fixture(scope="module")
def ftdi_peer(box):
    """The far end of the CH9329 adapter's serial line (QEMU chardev socket): a raw client."""
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(box.ch9329_socket)
    sock.settimeout(30)
    yield sock
    sock.close()


# ------------------------------------------------------------------------ discovery

def test_usb_list_reports_the_emulated_topology(box):
    found = devices(box)
    assert found["1-1"]["id"] == found["1-2"]["id"] == "0409:55aa"
    assert found[DONGLE]["id"] == found[TWIN_B]["id"] == TABLET
    assert found[DONGLE]["serial"] == found[TWIN_B]["serial"] == "TWIN"
    assert found[FTDI]["drivers"] == ["ftdi_sio"]
    assert any(re.match(r"/dev/ttyUSB\d+$", n) for n in found[FTDI]["nodes"])
    assert any(n.startswith("/dev/hidraw") for n in found[DONGLE]["nodes"])
    assert found[DONGLE]["usbfs"] == "/dev/bus/usb/%03d/%03d" % (found[DONGLE]["bus"], found[DONGLE]["address"])


def test_usb_info_module_agrees_with_lsusb(box):
    result = box.ansible("onekvm.fleet.usb_info", {"id": TABLET})
    assert not result.get("failed"), result
    ports = [d["port"] for d in result["devices"]]
    assert ports == [DONGLE, TWIN_B, HUB2_KBD]
    lsusb = box.run("lsusb -d %s" % TABLET).stdout
    for dev in result["devices"]:
        assert "Bus %03d Device %03d" % (dev["bus"], dev["address"]) in lsusb


# ------------------------------------------------------------------------ the twins

def test_identical_twins_without_port_are_refused_as_ambiguous(box):
    mark = box.log_mark()
    out = reset_json(box, TABLET, "--serial", "TWIN", check=False)
    assert out["rc"] == 3 and out["failed"]
    assert "2 USB devices match" in out["msg"] and DONGLE in out["msg"] and TWIN_B in out["msg"]
    assert "reset" not in box.kernel_log_since(mark)


def test_twin_selected_by_port_is_the_only_one_reset(box):
    mark = box.log_mark()
    out = reset_json(box, TABLET, "--port", TWIN_B)
    [report] = out["devices"]
    assert report["port"] == TWIN_B and report["waited"]
    log = box.kernel_log_since(mark)
    assert re.search(r"usb %s: reset full-speed USB device number %d" % (TWIN_B, report["before"]["address"]), log)
    assert "usb %s: reset" % DONGLE not in log


# ------------------------------------------------------------------------ each method

@pytest.mark.parametrize("method", ["ioctl", "authorize", "rebind"])
def test_each_method_resets_the_dongle_and_waits_for_it(box, method):
    mark = box.log_mark()
    out = reset_json(box, TABLET, "--port", DONGLE, "--method", method, "--timeout", "60")
    [report] = out["devices"]
    before, after = report["before"], report["after"]
    assert report["method"] == method and report["waited"]
    assert after["drivers"] == before["drivers"] == ["usbhid"]
    assert after["address"] == before["address"]  # none of these re-enumerates
    assert len(after["nodes"]) == len(before["nodes"]) >= 2
    log = box.kernel_log_since(mark)
    if method == "ioctl":
        assert "usb %s: reset full-speed USB device number %d" % (DONGLE, before["address"]) in log
    else:  # the driver probed the interface again
        assert hid_probe_re(DONGLE).search(log), log


def test_ioctl_reset_of_the_ftdi_keeps_its_tty_working(box, ftdi_peer):
    mark = box.log_mark()
    result = box.ansible("onekvm.fleet.usb_reset", {"id": "0403:6001", "port": FTDI, "timeout": 60})
    assert not result.get("failed"), result
    assert result["changed"] is True and result["method"] == "ioctl" and result["elapsed"] > 0
    [report] = result["devices"]
    assert "usb %s: reset full-speed USB device number" % FTDI in box.kernel_log_since(mark)
    tty = [n for n in report["after"]["nodes"] if n.startswith("/dev/ttyUSB")][0]
    # guest -> host
    box.run("python3 -c \"import serial; s = serial.Serial('%s', 9600, timeout=5); s.write(b'ping-after-reset'); "
            "s.flush()\"" % tty)
    received = b""
    while b"ping-after-reset" not in received:
        received += ftdi_peer.recv(256)
    # host -> guest
    reader = subprocess.Popen(  # start reading before sending: the tty drops what arrives while closed
        ["ssh"] + box.ssh_options() + ["root@127.0.0.1", "python3 -c \"import serial, sys; "
                                       "s = serial.Serial('%s', 9600, timeout=30); print('ready', flush=True); "
                                       "sys.stdout.write(s.read(4).decode())\"" % tty],
        stdout=subprocess.PIPE, text=True)
    assert reader.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    ftdi_peer.sendall(b"pong")
    out, _dummy = reader.communicate(timeout=60)
    assert out == "pong"


def test_power_cycle_really_removes_and_re_enumerates_the_device(box):
    mark = box.log_mark()
    result = box.ansible("onekvm.fleet.usb_reset", {"id": TABLET, "port": DONGLE, "method": "power_cycle",
                                                    "timeout": 90})
    assert not result.get("failed"), result
    [report] = result["devices"]
    assert (report["hub"], report["hub_power_mode"]) == ("1-1", "individual")
    before, after = report["before"], report["after"]
    assert after["address"] != before["address"]  # a new enumeration gets a new address
    assert after["drivers"] == ["usbhid"] and len(after["nodes"]) == len(before["nodes"])
    log = box.kernel_log_since(mark)
    assert "usb %s: USB disconnect, device number %d" % (DONGLE, before["address"]) in log
    assert "usb %s: new full-speed USB device number %d" % (DONGLE, after["address"]) in log
    assert box.run("cat /sys/bus/usb/devices/1-1:1.0/1-1-port2/disable").stdout.strip() == "0"


def test_power_cycle_behind_a_hub_without_power_switching_is_refused(box):
    mark = box.log_mark()
    out = reset_json(box, "--port", HUB2_KBD, "--method", "power_cycle", check=False)
    assert out["rc"] == 2, out
    assert "hub 1-2 0409:55aa" in out["msg"] and "reports no power switching" in out["msg"]
    assert out["hub_power_mode"] == "none"
    assert HUB2_KBD not in box.kernel_log_since(mark)


def test_power_cycle_on_a_root_hub_port_is_refused(box):
    out = reset_json(box, "--port", "1-1", "--method", "power_cycle", check=False)
    assert out["rc"] == 2 and "root hub port" in out["msg"]


# ------------------------------------------------------------------------ Ansible specifics

def test_check_mode_resets_nothing(box):
    mark = box.log_mark()
    result = box.ansible("onekvm.fleet.usb_reset", {"id": TABLET, "port": DONGLE, "method": "authorize"},
                         check_mode=True)
    assert result["changed"] is True and result["devices"][0]["after"] is None
    time.sleep(1)
    assert not hid_probe_re(DONGLE).search(box.kernel_log_since(mark))


def test_ad_hoc_key_value_arguments(box):
    def adhoc(args):
        res = subprocess.run(["ansible", "box", "-i", box.inventory, "-m", "onekvm.fleet.usb_reset", "-a", args],
                             capture_output=True, text=True, env=box.ansible_env(), timeout=300, check=False)
        data = json.loads(res.stdout[res.stdout.index("{"):])
        return data["plays"][0]["tasks"][0]["hosts"]["box"]
    ambiguous = adhoc("id=0403:6001")  # the box carries two FTDI adapters
    assert ambiguous["failed"] and ambiguous["error"] == "Ambiguous" and "1-1.4" in ambiguous["msg"]
    done = adhoc("id=0403:6001 port=1-1.4")
    assert not done.get("failed"), done
    assert done["devices"][0]["port"] == "1-1.4" and done["devices"][0]["waited"]


def test_not_root_is_a_clear_refusal(box):
    res = box.run("runuser -u nobody -- /usr/local/bin/onekvm usb-reset --port %s" % DONGLE, check=False)
    assert res.returncode == 6, (res.stdout, res.stderr)
    assert "run as root" in res.stderr and "Traceback" not in res.stderr


def test_malformed_id_is_refused_through_ansible(box):
    result = box.ansible("onekvm.fleet.usb_reset", {"id": "12345:1"})
    assert result["failed"] and "534d:2109" in result["msg"] and "Traceback" not in result.get("module_stderr", "")


HOLD_LOCK = """import sys, time
sys.path.insert(0, "/usr/local/lib/onekvm")
from onekvm._lock import hardware_lock
with hardware_lock():
    open("/run/onekvm-held", "w").close()
    time.sleep(20)
"""


def test_resets_never_overlap(box):
    # while another holder (the watchdog, a relay press) has the box lock, a reset waits, then gives up as Busy
    box.run("cat > /run/onekvm-hold-lock.py", input=HOLD_LOCK)
    box.run("rm -f /run/onekvm-held; nohup python3 /run/onekvm-hold-lock.py >/dev/null 2>&1 &")
    assert wait_for(lambda: box.run("test -e /run/onekvm-held", check=False).returncode == 0, 60)
    mark = box.log_mark()
    out = reset_json(box, "--port", DONGLE, "--lock-timeout", "1", check=False)
    assert out["rc"] == 4 and "holds" in out["msg"], out
    assert "usb %s: reset" % DONGLE not in box.kernel_log_since(mark)
