# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fleet figures with N simulated boxes: what one controller spends per box (a measurement, not a test).

For each N (ONEKVM_BENCH_FLEET, default "5,20,50") N systemd containers are started
(tests/fleet/containers.py) and, in the same run on the same hosts:

- first provision: `ansible-playbook onekvm.fleet.provision` in one batch (fleet_serial
  ["100%"]: the canary batches would only add the role's per-batch time twice more);
- no-change re-run: the real command, canary first (1, 25 %, the rest) with the health gate
  after each batch; it must report changed=0 on every box;
- ping round: `ansible onekvm -m ansible.builtin.ping`.

The figure that says how many boxes one controller serves is the controller's CPU time per
box: user + sys of the command and everything it forked and waited for (ansible's workers,
the connection's client processes: `podman exec` here, `ssh` on a real fleet), from
getrusage(RUSAGE_CHILDREN) around each command. The boxes' own work runs inside the
containers (under conmon, not a child of ansible) and is not counted. CPU time is less
sensitive than wall time to what else runs on the machine; the load average (`uptime`) is
recorded with each row all the same, and wall seconds are printed beside.

Fresh boxes are provisioned for every N up to ONEKVM_BENCH_FIRST_MAX (default 20): the first
provision on 2 shared cores takes about a minute of wall time per box. Larger fleets start
from an image of a box provisioned in an earlier size (`podman commit`): they carry the
stamp the fast path reads, so their first provision is not measured, their re-run and ping
are. Target: no-change re-run <= 4 x the ping round in CPU seconds, at every size.
All commands run with ANSIBLE_PIPELINING=True, strategy free, forks = min(N, 20), through the
podman connection. Results also go to tests/output/fleet_bench.json.
Run: scripts/bench.sh benchmarks/fleet_bench.py
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import uuid

from ansible_collections.onekvm.fleet.tests.fleet import containers

TARGET_RATIO = 4.0


def out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list, env: dict) -> dict:
    """Run a command; its wall seconds, CPU seconds (with its waited-for descendants), stdout."""
    cpu, began = children_cpu(), time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=7200)
    took, used = time.monotonic() - began, children_cpu() - cpu
    if done.returncode != 0:
        tail = done.stdout[-3000:] + "\n" + done.stderr[-2000:]
        raise RuntimeError("%s failed (rc %d):\n%s" % (" ".join(argv[:4]), done.returncode, tail))
    return {"wall": took, "cpu": used, "stdout": done.stdout}


def recap(stdout: str) -> list:
    """One dict of counters per host of the PLAY RECAP."""
    return [{k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", fields)}
            for fields in re.findall(r"^\S+\s+:\s+(ok=.*)$", stdout, re.M)]


def tasks_per_host(stdout: str) -> float:
    hosts = recap(stdout)
    return sum(h["ok"] + h["skipped"] + h["failed"] for h in hosts) / max(len(hosts), 1)


def changed_total(stdout: str) -> int:
    return sum(h["changed"] for h in recap(stdout))


def collections_path() -> str:
    path = os.environ.get("ANSIBLE_COLLECTIONS_PATH", "").split(":")[0]
    if not path:
        raise SystemExit("set ANSIBLE_COLLECTIONS_PATH (scripts/bench.sh does)")
    return path


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def one_size(n: int, image: str, fresh: bool, workdir: str) -> tuple:
    """Figures for N boxes, and the name of one provisioned box (still running: the caller commits and removes it)."""
    tag = uuid.uuid4().hex[:4]
    names = ["bench-%s-%02d" % (tag, i) for i in range(n)]
    env = containers.ansible_env(collections_path(), forks=min(n, 20))
    inventory = containers.write_inventory(os.path.join(workdir, "hosts-%d.yml" % n), names)
    provision = ["ansible-playbook", "-i", inventory, "onekvm.fleet.provision"]
    row = {"n": n, "uptime_before": uptime()}
    try:
        began = time.monotonic()
        containers.start_boxes(names, image, boot_timeout=300)
        row["boot"] = round(time.monotonic() - began, 1)
        runs = {}
        if fresh:
            runs["first"] = timed(provision + ["-e", '{"fleet_serial": ["100%"]}'], env)
        runs["rerun"] = timed(provision, env)
        runs["ping"] = timed(["ansible", "-i", inventory, "onekvm", "-m", "ansible.builtin.ping"], env)
    except BaseException:
        containers.remove_boxes(names)
        raise
    containers.remove_boxes(names[1:])
    for key, r in runs.items():
        row[key] = {"wall": round(r["wall"], 1), "cpu": round(r["cpu"], 2), "cpu_per_box": round(r["cpu"] / n, 3),
                    "changed": changed_total(r["stdout"]), "tasks_per_host": round(tasks_per_host(r["stdout"]), 1)}
    row["pongs"] = len(re.findall(r"""^\s*"?ping"?: "?pong"?,?$""", runs["ping"]["stdout"], re.M))
    row["ratio_cpu"] = round(runs["rerun"]["cpu"] / runs["ping"]["cpu"], 2)
    row["ratio_wall"] = round(runs["rerun"]["wall"] / runs["ping"]["wall"], 2)
    row["uptime_after"] = uptime()
    return row, names[0]


def load(text: str) -> str:
    return text.rsplit("load average:", 1)[-1].strip()


def main() -> int:
    sizes = [int(s) for s in os.environ.get("ONEKVM_BENCH_FLEET", "5,20,50").split(",") if s.strip()]
    first_max = int(os.environ.get("ONEKVM_BENCH_FIRST_MAX", "20"))
    image = containers.build_image()
    provisioned = None  # an image of a provisioned box, for the sizes above first_max
    results = []
    out("controller CPU seconds per box (user+sys of ansible and its children); wall seconds of the whole command")
    out("%4s %7s | %10s %8s | %10s %8s %6s | %10s %8s | %7s %7s | %s" % (
        "N", "boot s", "first cpu/box", "wall", "re-run cpu/box", "wall", "tasks", "ping cpu/box", "wall",
        "cpu x", "wall x", "load before -> after"))
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as workdir:
        try:
            for n in sizes:
                fresh = n <= first_max or provisioned is None
                row, keep = one_size(n, image if fresh else provisioned, fresh, workdir)
                try:
                    if provisioned is None:
                        provisioned = "localhost/onekvm-bench-provisioned:" + uuid.uuid4().hex[:8]
                        containers.podman("commit", "--quiet", keep, provisioned, timeout=600)
                finally:
                    containers.remove_boxes([keep])
                results.append(row)
                first = row.get("first")
                out("%4d %7.1f | %10s %8s | %10.3f %8.1f %6.1f | %10.3f %8.1f | %6.2fx %6.2fx | %s -> %s%s" % (
                    n, row["boot"], "%.2f" % first["cpu_per_box"] if first else "-",
                    "%.0f" % first["wall"] if first else "-", row["rerun"]["cpu_per_box"], row["rerun"]["wall"],
                    row["rerun"]["tasks_per_host"], row["ping"]["cpu_per_box"], row["ping"]["wall"],
                    row["ratio_cpu"], row["ratio_wall"], load(row["uptime_before"]), load(row["uptime_after"]),
                    "" if row["rerun"]["changed"] == 0 else "  (re-run changed %d!)" % row["rerun"]["changed"]))
        finally:
            if provisioned:
                containers.podman("rmi", "-f", provisioned, check=False)
    if len(results) > 1:  # cpu = fixed + N x marginal, from the smallest and the largest fleet
        a, b = results[0], results[-1]
        for key in ("rerun", "ping"):
            marginal = (b[key]["cpu"] - a[key]["cpu"]) / (b["n"] - a["n"])
            out("%s: %.3f CPU s per additional box, %.1f CPU s fixed (start-up, play, batches)" % (
                key, marginal, a[key]["cpu"] - marginal * a["n"]))
    worst = max(r["ratio_cpu"] for r in results)
    unchanged = all(r["rerun"]["changed"] == 0 for r in results)
    all_pong = all(r["pongs"] == r["n"] for r in results)
    out("target: no-change re-run <= %.0fx the ping round in CPU: %s (worst %.2fx); re-runs changed nothing: %s;"
        " every box answered ping: %s" % (TARGET_RATIO, "met" if worst <= TARGET_RATIO else "NOT met", worst,
                                          unchanged, all_pong))
    report = os.path.join(containers.ROOT, "tests", "output", "fleet_bench.json")
    os.makedirs(os.path.dirname(report), exist_ok=True)
    with open(report, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    return 0 if worst <= TARGET_RATIO and unchanged and all_pong else 1


if __name__ == "__main__":
    sys.exit(main())
