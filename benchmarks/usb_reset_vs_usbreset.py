# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""USB reset: the box command (``onekvm usb-reset``, method ioctl) vs usbutils' ``usbreset``.

Both reset the same emulated device (the dongle stand-in at port 1-1.2) on the simulated
box, alternating, in one run; a timing harness on the box runs each as a fresh process
and measures its wall time, so ssh is not part of the figures. ``usbreset`` issues the
ioctl and exits, so ours is compared with ``--no-wait`` (the ioctl is synchronous: the
kernel has finished the reset when it returns); ours with its default wait is shown too.
Target: ours / usbreset <= 1.3 (medians).

Also reported: where our time goes (interpreter start, imports, discovery, the ioctl) and
the module's end-to-end time through Ansible next to an Ansible ping.
The box is a TCG guest, about 6x slower than real hardware.
Run: make bench (or scripts/bench.sh benchmarks/usb_reset_vs_usbreset.py).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

from ansible_collections.onekvm.fleet.tests.testbed.vm import Box

RUNS = int(os.environ.get("ONEKVM_BENCH_RUNS", "15"))
PORT = "1-1.2"
# usbreset takes BUS/DEVICE numbers; the harness reads them from sysfs before starting the
# clock ("{busdev}"), so usbreset is timed at its fastest. A script that knows only the port
# (what our --port selects by) has to look the numbers up itself: shown as a second line.
COMMANDS = {
    "usbreset": "usbreset {busdev}",
    "usbreset + shell lookup": ("usbreset $(printf %%03d $(cat /sys/bus/usb/devices/%s/busnum))/"
                                "$(printf %%03d $(cat /sys/bus/usb/devices/%s/devnum))" % (PORT, PORT)),
    "onekvm --no-wait": "onekvm usb-reset --port %s --no-wait" % PORT,
    "onekvm (waits)": "onekvm usb-reset --port %s" % PORT,
    # the least any Python tool can do: start, open the node, the ioctl (no selection, lock or checks)
    "python3 floor": ("python3 -IS -c \"import os, fcntl; "
                      "fcntl.ioctl(os.open('/dev/bus/usb/{busdev}', os.O_WRONLY), %d, 0)\"" % ((ord("U") << 8) | 20)),
}
# the figures of our own run, split: interpreter, imports, discovery, the ioctl itself
PARTS = {
    "python3 -IS start": "python3 -IS -c pass",
    "python3 -IS + imports": "python3 -IS -c \"import sys; sys.path.insert(0, '/usr/local/lib/onekvm'); "
                             "import onekvm._cli, onekvm._cli_usb, argparse\"",
    "onekvm usb-list": "onekvm usb-list --port %s" % PORT,
}

# Runs on the box: each command RUNS times, interleaved, wall time per run in seconds.
HARNESS = r"""
import json, subprocess, sys, time
commands = json.loads(sys.argv[1]); runs = int(sys.argv[2]); port = sys.argv[3]
def busdev():
    read = lambda name: int(open("/sys/bus/usb/devices/%s/%s" % (port, name)).read())
    return "%03d/%03d" % (read("busnum"), read("devnum"))
times = {name: [] for name in commands}
for i in range(runs):
    for name, cmd in commands.items():
        cmd = cmd.replace("{busdev}", busdev())
        t = time.monotonic()
        res = subprocess.run(cmd, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        times[name].append(time.monotonic() - t)
        if res.returncode != 0:
            sys.exit("%s failed (rc=%d): %s" % (cmd, res.returncode, res.stderr.decode()))
        time.sleep(0.2)
print(json.dumps(times))
"""


def out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def time_on_box(box, commands: dict, runs: int) -> dict:
    box.run("cat > /run/onekvm-bench-harness.py", input=HARNESS)
    res = box.run("python3 /run/onekvm-bench-harness.py %s %d %s" % (_quote(json.dumps(commands)), runs, PORT),
                  timeout=1800)
    return json.loads(res.stdout)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def summary(values: list) -> str:
    return "median %7.1f ms  min %7.1f ms  max %7.1f ms" % (1000 * statistics.median(values), 1000 * min(values),
                                                            1000 * max(values))


def ansible_figures(box, runs: int) -> dict:
    module, ping, inner = [], [], []
    for _dummy in range(runs):
        t = time.monotonic()
        result = box.ansible("onekvm.fleet.usb_reset", {"id": "0627:0001", "port": PORT})
        module.append(time.monotonic() - t)
        assert not result.get("failed"), result
        inner.append(result["elapsed"])
        t = time.monotonic()
        box.ansible("ansible.builtin.ping")
        ping.append(time.monotonic() - t)
    return {"module end to end": module, "module elapsed (on the box)": inner, "ansible ping": ping}


def main() -> int:
    box = Box.load() or Box().start()
    try:
        box.install_cli()
        kernel = box.run("uname -r").stdout.strip()
        out("box: kernel %s, TCG guest; device %s (%s); %d runs each, interleaved" % (
            kernel, PORT, box.run("cat /sys/bus/usb/devices/%s/product" % PORT).stdout.strip(), RUNS))
        times = time_on_box(box, COMMANDS, RUNS)
        for name, values in times.items():
            out("%-24s %s" % (name, summary(values)))
        ratio = statistics.median(times["onekvm --no-wait"]) / statistics.median(times["usbreset"])
        out("ours (--no-wait) / usbreset = %.2f  (target <= 1.3: %s)" % (ratio, "met" if ratio <= 1.3 else "MISSED"))
        ratio_wait = statistics.median(times["onekvm (waits)"]) / statistics.median(times["usbreset"])
        out("ours (with wait) / usbreset = %.2f" % ratio_wait)
        ratio_lookup = statistics.median(times["onekvm --no-wait"]) / statistics.median(times["usbreset + shell lookup"])
        out("ours (--no-wait) / usbreset + shell lookup = %.2f" % ratio_lookup)
        out("python3 floor / usbreset = %.2f (what the interpreter alone costs any Python tool)" % (
            statistics.median(times["python3 floor"]) / statistics.median(times["usbreset"])))
        report = box.cli("usb-reset", "--port", PORT)["devices"][0]
        out("one reset as the core sees it: ioctl %.1f ms, with the wait %.1f ms" % (
            1000 * report["reset_seconds"], 1000 * report["elapsed"]))
        out("where our time goes (each as a fresh process):")
        for name, values in time_on_box(box, PARTS, RUNS).items():
            out("  %-22s %s" % (name, summary(values)))
        ansible_runs = max(3, RUNS // 3)
        out("through Ansible (%d runs, from the controller over ssh, pipelining on):" % ansible_runs)
        for name, values in ansible_figures(box, ansible_runs).items():
            out("  %-28s %s" % (name, summary(values)))
    finally:
        if os.environ.get("ONEKVM_KEEP_BOX") != "1":
            box.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
