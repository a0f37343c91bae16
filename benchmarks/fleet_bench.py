# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fleet figures with N simulated boxes (a measurement, not a test).

For each N (ONEKVM_BENCH_FLEET, default "5,10,20") N fresh systemd containers are started
(tests/fleet/containers.py) and, in the same run on the same hosts:

- first provision: `ansible-playbook onekvm.fleet.provision` in one batch (fleet_serial
  ["100%"]: the canary batches would only add the role's per-batch time twice more);
- no-change re-run: the real command, canary first (1, 25 %, the rest) with the health gate
  after each batch; it must report changed=0 on every box;
- ping round: `ansible onekvm -m ansible.builtin.ping`.

All three run with ANSIBLE_PIPELINING=True, strategy free, forks = min(N, 20), through the
podman connection. Target: no-change re-run <= 8 x the ping round. Figures are wall-clock
seconds of the whole command (ansible's own start-up included), so the ping round is the
fixed cost of talking to the fleet at all. Results also go to tests/output/fleet_bench.json.
Run: scripts/bench.sh benchmarks/fleet_bench.py
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid

from ansible_collections.onekvm.fleet.tests.fleet import containers

TARGET_RATIO = 8.0


def out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def timed(argv: list, env: dict) -> tuple:
    began = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=7200)
    took = time.monotonic() - began
    if done.returncode != 0:
        tail = done.stdout[-3000:] + "\n" + done.stderr[-2000:]
        raise RuntimeError("%s failed (rc %d):\n%s" % (" ".join(argv[:4]), done.returncode, tail))
    return took, done.stdout


def changed_total(stdout: str) -> int:
    return sum(int(n) for n in re.findall(r"^\S+\s+:\s+ok=\d+\s+changed=(\d+)", stdout, re.M))


def collections_path() -> str:
    path = os.environ.get("ANSIBLE_COLLECTIONS_PATH", "").split(":")[0]
    if not path:
        raise SystemExit("set ANSIBLE_COLLECTIONS_PATH (scripts/bench.sh does)")
    return path


def one_size(n: int, image: str, workdir: str) -> dict:
    tag = uuid.uuid4().hex[:4]
    names = ["bench-%s-%02d" % (tag, i) for i in range(n)]
    env = containers.ansible_env(collections_path(), forks=min(n, 20))
    inventory = containers.write_inventory(os.path.join(workdir, "hosts-%d.yml" % n), names)
    provision = ["ansible-playbook", "-i", inventory, "onekvm.fleet.provision"]
    try:
        began = time.monotonic()
        containers.start_boxes(names, image, boot_timeout=180)
        boot = time.monotonic() - began
        first, first_out = timed(provision + ["-e", '{"fleet_serial": ["100%"]}'], env)
        rerun, rerun_out = timed(provision, env)
        ping, ping_out = timed(["ansible", "-i", inventory, "onekvm", "-m", "ansible.builtin.ping"], env)
    finally:
        containers.remove_boxes(names)
    return {"n": n, "boot": round(boot, 1), "first_provision": round(first, 1), "first_changed": changed_total(first_out),
            "rerun": round(rerun, 1), "rerun_changed": changed_total(rerun_out), "ping": round(ping, 1),
            "ratio": round(rerun / ping, 2), "pongs": ping_out.count('"ping": "pong"'), "load": os.getloadavg()[0]}


def main() -> int:
    sizes = [int(s) for s in os.environ.get("ONEKVM_BENCH_FLEET", "5,10,20").split(",") if s.strip()]
    image = containers.build_image()
    results = []
    out("%4s %8s %10s %8s %8s %8s %7s" % ("N", "boot s", "provision", "changed", "re-run", "ping s", "ratio"))
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as workdir:
        for n in sizes:
            r = one_size(n, image, workdir)
            results.append(r)
            out("%4d %8.1f %10.1f %8d %8.1f %8.1f %6.2fx%s" % (
                r["n"], r["boot"], r["first_provision"], r["first_changed"], r["rerun"], r["ping"], r["ratio"],
                "" if r["rerun_changed"] == 0 else "  (re-run changed %d!)" % r["rerun_changed"]))
    if len(results) > 1:
        a, b = results[0], results[-1]
        grow = (b["n"] - a["n"])
        out("growth from N=%d to N=%d: re-run +%.2f s/box, ping +%.2f s/box, first provision +%.2f s/box" % (
            a["n"], b["n"], (b["rerun"] - a["rerun"]) / grow, (b["ping"] - a["ping"]) / grow,
            (b["first_provision"] - a["first_provision"]) / grow))
    worst = max(r["ratio"] for r in results)
    out("target: no-change re-run <= %.0fx the ping round: %s (worst %.2fx); re-runs changed nothing: %s" % (
        TARGET_RATIO, "met" if worst <= TARGET_RATIO else "NOT met", worst, all(r["rerun_changed"] == 0 for r in results)))
    report = os.path.join(containers.ROOT, "tests", "output", "fleet_bench.json")
    os.makedirs(os.path.dirname(report), exist_ok=True)
    with open(report, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    return 0 if worst <= TARGET_RATIO and all(r["rerun_changed"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
