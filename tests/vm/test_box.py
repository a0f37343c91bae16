# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The simulated box itself: boots through systemd and imitates a kvmd box as promised."""

from __future__ import annotations

import json
import time

from ansible_collections.onekvm.fleet.tests.testbed.vm import wait_for

STATE_QUERY = (
    "python3 -c \"import http.client,socket,json\n"
    "class C(http.client.HTTPConnection):\n"
    "    def connect(self):\n"
    "        self.sock = socket.socket(socket.AF_UNIX); self.sock.settimeout(3); self.sock.connect('/run/kvmd/ustreamer.sock')\n"
    "c = C('localhost'); c.request('GET', '/state'); print(c.getresponse().read().decode())\""
)


# usbutils' own reset tool, addressed as BBB/DDD (the dongle stand-in at port 1-1.2)
USBRESET_DONGLE = ("usbreset $(printf %03d $(cat /sys/bus/usb/devices/1-1.2/busnum))/"
                   "$(printf %03d $(cat /sys/bus/usb/devices/1-1.2/devnum))")


def ustreamer_source(box) -> dict:
    res = box.run(STATE_QUERY, check=False)
    if res.returncode != 0:
        return {}
    return json.loads(res.stdout)["result"]["source"]


def sysfs_devices(box) -> dict:
    out = box.run("cd /sys/bus/usb/devices && for d in [0-9]-*; do case $d in *:*) continue;; esac; "
                  "echo $d $(cat $d/idVendor):$(cat $d/idProduct) $(cat $d/serial 2>/dev/null || echo -); done").stdout
    return {line.split()[0]: line.split()[1:] for line in out.splitlines()}


def test_boots_into_systemd_and_the_boot_is_recorded(box):
    """systemd is PID 1 and ssh answers; the boot phases are recorded and logged.

    How long the boot takes depends on the host's load (TCG on a shared machine): vm.py logs
    the phases, a figure to read, not a bound to assert.
    """
    assert box.run("cat /proc/1/comm").stdout.strip() == "systemd"
    phases = box.state["boot_phases"]
    assert box.state["boot_seconds"] >= phases["boot to ssh"] > 0, phases


def test_usb_topology_matches_the_documented_layout(box):
    devices = sysfs_devices(box)
    assert devices["1-1"][0] == "0409:55aa"
    assert devices["1-2"][0] == "0409:55aa"
    assert devices["1-1.1"][0] == devices["1-1.4"][0] == "0403:6001"
    assert devices["1-1.2"] == devices["1-1.3"] == ["0627:0001", "TWIN"]  # identical twins
    assert devices["1-2.1"][0] == "0627:0001"
    by_path = box.run("ls -l /dev/serial/by-path/").stdout
    assert "usb-0:1.1:1.0-port0" in by_path and "usb-0:1.4:1.0-port0" in by_path


def test_hub_power_switching_modes_differ(box):
    # only hub1 exposes per-port power control; hub2 is the refusal path
    assert box.run("test -e /sys/bus/usb/devices/1-1:1.0/1-1-port2/disable", check=False).returncode == 0

    def characteristics(port):
        return box.run("lsusb -v -s $(cat /sys/bus/usb/devices/%s/busnum):$(cat /sys/bus/usb/devices/%s/devnum) "
                       "2>/dev/null | grep -A1 wHubCharacteristic" % (port, port)).stdout
    assert "Per-port power switching" in characteristics("1-1")
    assert "No power switching" in characteristics("1-2")


def test_kvmd_standin_runs_ustreamer_as_kvmd_and_capture_is_online(box):
    assert box.run("systemctl is-active kvmd").stdout.strip() == "active"

    # the streamer runs as kvmd, titled like kvmd's ("kvmd/streamer: /usr/bin/ustreamer ...")
    def streamer_pids():
        return box.run("pgrep -f '^kvmd/streamer: /usr/bin/ustreamer'", check=False).stdout.split()

    streamer = wait_for(streamer_pids, 30)
    assert streamer
    assert box.run("ps -o user= -p %s" % streamer[0]).stdout.strip() == "kvmd"
    # it runs the command kvmd builds from the box's config (main.yaml's whole command, override.d's
    # cmd_remove / cmd_append), with kvmd's {unix} placeholder filled in
    built = json.loads(box.run("kvmd --standin-streamer-cmd").stdout)
    running = box.run("tr '\\0' '\\n' </proc/%s/cmdline" % streamer[0]).stdout.splitlines()
    assert running[1:] == [part.format(unix="/run/kvmd/ustreamer.sock") for part in built[1:]], (running, built)
    assert "--unix=/run/kvmd/ustreamer.sock" in running
    source = wait_for(lambda: ustreamer_source(box).get("online") and ustreamer_source(box), 60)
    assert source and source["online"] is True
    assert box.run("readlink -f /dev/kvmd-video").stdout.strip().startswith("/dev/video")


def test_kvmd_restart_is_observable(box):
    before = len(box.run("cat /var/lib/kvmd/standin-starts").stdout.splitlines())
    box.run("systemctl restart kvmd")
    starts = wait_for(lambda: len(box.run("cat /var/lib/kvmd/standin-starts").stdout.splitlines()) > before and
                      len(box.run("cat /var/lib/kvmd/standin-starts").stdout.splitlines()), 30)
    assert starts == before + 1
    assert box.run("test -d /etc/kvmd/override.d && test -f /etc/kvmd/override.yaml && id kvmd",
                   check=False).returncode == 0


def test_broken_capture_goes_offline_and_a_dongle_reset_heals_it(box):
    assert wait_for(lambda: ustreamer_source(box).get("online"), 60)
    box.run("onekvm-testbed break-capture")
    assert wait_for(lambda: ustreamer_source(box).get("online") is False, 20)
    mark = box.log_mark()
    # usbutils' reset (not our code) of the dongle stand-in: the test bed heals on it
    box.run(USBRESET_DONGLE)
    assert wait_for(lambda: ustreamer_source(box).get("online") is True, 30)
    assert "usb 1-1.2: reset" in box.kernel_log_since(mark)


def test_permanent_failure_survives_a_reset(box):
    box.run("onekvm-testbed break-capture --permanent")
    try:
        box.run(USBRESET_DONGLE)
        time.sleep(3)
        assert ustreamer_source(box).get("online") is False
    finally:
        box.run("onekvm-testbed heal-capture")
    assert wait_for(lambda: ustreamer_source(box).get("online") is True, 30)


def test_monitor_unplugs_and_replugs_a_device(box):
    box.monitor("device_del twin")
    assert wait_for(lambda: "1-1.3" not in sysfs_devices(box), 30)
    box.monitor("device_add usb-tablet,bus=xhci.0,port=1.3,serial=TWIN,id=twin")
    assert wait_for(lambda: "1-1.3" in sysfs_devices(box), 30)


def test_box_cli_is_installed_from_the_checkout(box):
    out = box.run("onekvm --help").stdout
    assert "usb-reset" in out and "exit codes" in out
