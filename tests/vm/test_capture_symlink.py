# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The role's capture rule on a real USB video device: its node comes back under another number.

QEMU has no USB video device, so the box makes one the way testbed.md describes: a configfs UVC
gadget (usb_f_uvc) on the USB/IP virtual device controller (usbip_vudc), exported by
``usbipd --device`` and attached over the box's loopback (``usbip attach``, vhci_hcd). The
guest's uvcvideo binds it like a dongle and makes a capture node. It is only enumerated and
reset here, never streamed from (streaming over usbip_vudc crashes the guest kernel; testbed.md).

A reset renumbers the node the way it happens on a box: uvcvideo has no pre/post_reset hooks, so
a USB reset unbinds and rebinds it (domain facts), and while something still holds the old node
open (ustreamer does) its number is not free, so the node comes back as another /dev/videoN.
The role's udev rule must move its symlink to the new node.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time

import pytest

USB_ID = "534d:2109"  # the gadget claims to be an MS2109 dongle (the role's rule matches by id and port)
SYMLINK = "onekvm-uvc"  # not the test bed's /dev/kvmd-video (vivid's, made by the test bed's own rule)
RULES = "/etc/udev/rules.d/90-onekvm.rules"

# configfs UVC function: one uncompressed 640x360 format; control and streaming headers linked
# for every speed f_uvc asks for (Documentation/usb/gadget-testing.rst, "UVC function")
GADGET = r"""
set -e
modprobe libcomposite; modprobe usb_f_uvc; modprobe usbip_vudc num=1; modprobe vhci_hcd
G=/sys/kernel/config/usb_gadget/onekvm-uvc
if [ ! -d $G ]; then
  mkdir $G; cd $G
  echo 0x534d >idVendor; echo 0x2109 >idProduct; echo 0x0200 >bcdUSB
  mkdir strings/0x409
  echo "onekvm test bed" >strings/0x409/manufacturer; echo "UVC stand-in" >strings/0x409/product
  echo TESTBED >strings/0x409/serialnumber
  mkdir -p configs/c.1/strings/0x409; echo UVC >configs/c.1/strings/0x409/configuration
  F=functions/uvc.0; mkdir $F
  mkdir -p $F/control/header/h
  ln -s ../../header/h $F/control/class/fs/h
  ln -s ../../header/h $F/control/class/ss/h
  mkdir -p $F/streaming/uncompressed/u/360p
  echo 640 >$F/streaming/uncompressed/u/360p/wWidth
  echo 360 >$F/streaming/uncompressed/u/360p/wHeight
  echo 460800 >$F/streaming/uncompressed/u/360p/dwMaxVideoFrameBufferSize
  printf '333333\n' >$F/streaming/uncompressed/u/360p/dwFrameInterval
  mkdir $F/streaming/header/h
  ln -s ../../uncompressed/u $F/streaming/header/h/u
  for speed in fs hs ss; do ln -s ../../header/h $F/streaming/class/$speed/h; done
  ln -s $G/$F configs/c.1/uvc.0
fi
cd $G
[ -n "$(cat UDC)" ] || echo usbip-vudc.0 >UDC
[ -e /run/onekvm-usbipd.pid ] || usbipd --device -D --pid /run/onekvm-usbipd.pid
sleep 1
usbip attach -r 127.0.0.1 -d usbip-vudc.0
"""


def usb_port_of(box, usb_id):
    vendor, product = usb_id.split(":")
    res = box.run("for d in /sys/bus/usb/devices/*; do [ \"$(cat $d/idVendor 2>/dev/null)\" = %s ] && "
                  "[ \"$(cat $d/idProduct 2>/dev/null)\" = %s ] && basename $d; done; true" % (vendor, product))
    return res.stdout.split()


def capture_node(box, port):
    """The capture node (index 0) uvcvideo made for the device at ``port``, or None."""
    res = box.run("for v in /sys/class/video4linux/video*; do d=$(readlink -f $v/device); "
                  "case $d in */%s/%s:*) [ \"$(cat $v/index)\" = 0 ] && basename $v;; esac; done; true" % (port, port))
    return res.stdout.strip() or None


def wait_for(what, check, timeout=120, every=1.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError("timed out after %ds waiting for %s (last: %r)" % (timeout, what, last))


def apply_udev_rules(box, **settings):
    """The role's render step and its udev task file, against the box (the handler reloads udev)."""
    play = [{"hosts": "box", "gather_facts": False, "tasks": [
        {"name": "Render", "ansible.builtin.include_role": {"name": "onekvm.fleet.onekvm", "tasks_from": "render"}},
        {"name": "Udev", "ansible.builtin.include_role": {"name": "onekvm.fleet.onekvm", "tasks_from": "udev"}}]}]
    with tempfile.TemporaryDirectory() as tmp:
        play_path = os.path.join(tmp, "play.yml")
        vars_path = os.path.join(tmp, "vars.json")
        with open(play_path, "w") as f:
            json.dump(play, f)
        with open(vars_path, "w") as f:
            json.dump(settings, f)
        res = subprocess.run(["ansible-playbook", "-i", box.inventory, play_path, "-e", "@" + vars_path],
                             capture_output=True, text=True, env=box.ansible_env(), timeout=600, check=False)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    return res


@pytest.fixture
def uvc(box):
    """A UVC device on the box's USB/IP bus; detached (and the role's rules file put back) afterwards."""
    box.run("cp -a %s /tmp/onekvm-rules.before 2>/dev/null || rm -f /tmp/onekvm-rules.before" % RULES)
    mark = box.log_mark()
    box.run(GADGET, timeout=120)
    ports = wait_for("the UVC gadget on the USB bus", lambda: usb_port_of(box, USB_ID), timeout=90)
    assert len(ports) == 1, ports
    port = ports[0]
    node = wait_for("uvcvideo's capture node", lambda: capture_node(box, port), timeout=180)
    try:
        yield {"port": port, "node": node, "mark": mark}
    finally:
        box.run("usbip detach -p 0; echo '' > /sys/kernel/config/usb_gadget/onekvm-uvc/UDC; "
                "kill $(cat /run/onekvm-usbipd.pid) && rm -f /run/onekvm-usbipd.pid", check=False)
        box.run("if [ -e /tmp/onekvm-rules.before ]; then cp -a /tmp/onekvm-rules.before %s; else rm -f %s; fi; "
                "udevadm control --reload; udevadm trigger --action=add --subsystem-match=video4linux "
                "--subsystem-match=tty; udevadm settle" % (RULES, RULES), check=False)


def test_the_roles_symlink_follows_the_capture_node_to_its_new_number(box, uvc):
    port, first = uvc["port"], uvc["node"]
    apply_udev_rules(box, onekvm_capture_usb_id=USB_ID, onekvm_capture_usb_port=port, onekvm_capture_symlink=SYMLINK,
                     onekvm_watchdog_ladder=["restart_streamer"])
    rules = box.run("cat %s" % RULES).stdout
    assert 'KERNELS=="%s"' % port in rules and 'SYMLINK+="%s"' % SYMLINK in rules, rules
    link = "/dev/" + SYMLINK
    assert wait_for("the role's symlink", lambda: box.run("readlink -f %s" % link, check=False).stdout.strip()
                    == "/dev/" + first, timeout=60)

    # hold the node open, as ustreamer would, so its number stays taken across the reset
    holder = int(box.run("nohup python3 -c 'import os, time, sys; fd = os.open(sys.argv[1], os.O_RDONLY); time.sleep(900)' "
                         "/dev/%s </dev/null >/dev/null 2>&1 & echo $!" % first).stdout.strip())
    try:
        wait_for("the node held open", lambda: box.run("ls -l /proc/%d/fd" % holder, check=False).stdout.count(
            "/dev/" + first), timeout=30)
        mark = box.log_mark()
        report = box.cli("usb-reset", USB_ID, "--port", port, timeout=300)  # the box command: USBDEVFS_RESET
        assert report["devices"][0]["port"] == port, report
        def renumbered():
            node = capture_node(box, port)
            return node if node and node != first else None
        second = wait_for("the capture node back under another number", renumbered, timeout=180)
        assert wait_for("the role's symlink on the new node", lambda: box.run(
            "readlink -f %s" % link, check=False).stdout.strip() == "/dev/" + second, timeout=60)
    finally:
        box.run("kill %d" % holder, check=False)
    kernel = box.kernel_log_since(mark)
    assert re.search(r"usb %s: reset \S+ USB device number" % re.escape(port), kernel), kernel
    print("capture node %s -> %s after the reset; /dev/%s -> /dev/%s" % (first, second, SYMLINK, second))
