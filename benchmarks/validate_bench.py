# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""How long onekvm.fleet.validate takes for a generated inventory of N hosts (no box needed).

    python3 benchmarks/validate_bench.py [N ...]    (default: 10 100; or make bench BENCH=benchmarks/validate_bench.py)

Each host differs from the others (its own dongle port and a relay channel), so every host's
files are rendered and checked, none is a copy of another's. Printed beside it, as the reference
measured in the same run: a play with one ansible.builtin.debug task over the same hosts (what
Ansible itself costs per host). Wall clock of the whole command and its CPU time (user + system,
all processes: the figure that depends least on what else runs on the machine), the tasks each
host runs, ANSIBLE_FORKS as set (default 5), and the load average before and after. Target: at
most 2 s per host on 2 cores.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import tempfile
import time

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def inventory(path: str, count: int) -> None:
    with open(os.path.join(ROOT, "examples", "inventory", "group_vars", "onekvm.yml"), encoding="utf-8") as f:
        group_vars = yaml.safe_load(f)
    hosts = {}
    for index in range(count):
        hosts["kvm-%03d" % index] = {
            "ansible_host": "192.0.2.%d" % (index % 250 + 1),
            "onekvm_capture_usb_port": "1-1.%d" % (index % 7 + 1),
            "onekvm_gpio_buttons": group_vars["onekvm_gpio_buttons"] + [
                {"name": "relay_%d" % index, "kind": "relay", "channel": index % 4 + 1, "label": "Switch %d" % index,
                 "confirm": True}],
        }
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump({"onekvm": {"hosts": hosts, "vars": group_vars}}, f, sort_keys=False)


def timed(argv: list, cwd: str) -> tuple:
    """Wall clock and CPU seconds (user + system of the command and its children) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, done


def main(sizes: list) -> int:
    env_forks = os.environ.get("ANSIBLE_FORKS", "5")
    print("onekvm.fleet.validate, %d cores, forks %s" % (os.cpu_count() or 0, env_forks))
    print("load average before: %.1f" % os.getloadavg()[0])
    print("%6s %10s %10s %12s %11s %16s %8s" % ("hosts", "validate", "per host", "CPU per host", "tasks/host", "debug reference",
                                                "ratio"))
    rc = 0
    with tempfile.TemporaryDirectory(prefix="validate-bench-") as work:
        reference = os.path.join(work, "reference.yml")
        with open(reference, "w", encoding="utf-8") as f:
            yaml.safe_dump([{"name": "Reference", "hosts": "onekvm", "gather_facts": False,
                             "tasks": [{"name": "One task", "ansible.builtin.debug": {"msg": "{{ inventory_hostname }}"}}]}], f)
        for count in sizes:
            hosts = os.path.join(work, "hosts-%d.yml" % count)
            inventory(hosts, count)
            argv = ["ansible-playbook", "-i", hosts, "onekvm.fleet.validate", "-e", "validate_dir=" + os.path.join(work, "out")]
            seconds, cpu, done = timed(argv, work)
            if done.returncode != 0 or "%d hosts, %d pass, 0 fail" % (count, count) not in done.stdout:
                print("validate failed for %d hosts:\n%s" % (count, done.stdout[-3000:] + done.stderr[-2000:]))
                rc = 1
                continue
            ref_seconds, _cpu, ref = timed(["ansible-playbook", "-i", hosts, reference], work)
            if ref.returncode != 0:
                print(ref.stdout[-2000:] + ref.stderr[-2000:])
                rc = 1
            figures = (count, seconds, seconds / count, cpu / count, tasks_per_host(done.stdout), ref_seconds,
                       seconds / ref_seconds)
            print("%6d %9.1fs %9.2fs %11.2fs %11d %15.1fs %7.1fx" % figures)
    print("load average after: %.1f" % os.getloadavg()[0])
    return rc


def tasks_per_host(stdout: str) -> int:
    """Tasks the first host ran (ok + skipped + rescued, from the play recap): what Ansible charges per host."""
    found = re.search(r"^kvm-000\s+: ok=(\d+)\s+changed=\d+\s+unreachable=\d+\s+failed=\d+\s+skipped=(\d+)\s+rescued=(\d+)",
                      stdout, re.M)
    return sum(int(n) for n in found.groups()) if found else -1


if __name__ == "__main__":
    sys.exit(main([int(arg) for arg in sys.argv[1:]] or [10, 100]))
