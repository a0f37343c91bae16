"""The main job (`make demo`): the collection's whole story on the simulated OneKVM box.

1. boot the box (QEMU; its CH9329 and relay simulators run in this process);
2. provision it with the playbook onekvm.fleet.provision (canary batch, health gate),
   then once more to show that a second run changes nothing;
3. show the GPIO config kvmd would load, and press its "Switch KVM machine" button through
   kvmd's API as the web UI does (kvmd runs the command; the relay simulator sees the pulse);
4. break the capture dongle and watch the watchdog's ladder bring it back;
5. reset the dongle ad hoc with the usb_reset module;
6. write the fleet health report (JSON + HTML): the box's screen from its ustreamer on the
   screen wall, and the watchdog's recovery history of step 4 (tests/output/demo/fleet-health.html,
   with Chromium's picture of it in fleet-health.png);
and print a summary. Exits non-zero when a step fails.

Expects the environment from `source "$(scripts/setup.sh)"` (the Makefile does that).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import yaml  # noqa: E402  (controller side: PyYAML comes with ansible-core)

from tests.testbed.ch9329_sim import Chip, Simulator  # noqa: E402
from tests.testbed.relay_sim import RelayBoard, SocketRelay  # noqa: E402
from tests.testbed.vm import Box  # noqa: E402

DEMO_VARS = os.path.join(ROOT, "tests", "testbed", "demo-vars.yml")
OUTPUT = os.path.join(ROOT, "tests", "output", "demo")
DONGLE = {"id": "0627:0001", "port": "1-1.2"}
RECOVERY_TIMEOUT = 240
BOLD, GREEN, RED, END = ("\033[1m", "\033[32m", "\033[31m", "\033[0m") if sys.stdout.isatty() else ("",) * 4


class DemoFailed(Exception):
    pass


def say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def step(title: str) -> None:
    say("\n%s== %s%s" % (BOLD, title, END))


def shown(argv: list) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def ansible_env(box: Box) -> dict:
    env = box.ansible_env()
    # show what changes (and what fails), not every unchanged or skipped task
    env.update(ANSIBLE_STDOUT_CALLBACK="default", ANSIBLE_FORCE_COLOR="1" if sys.stdout.isatty() else "0",
               ANSIBLE_DISPLAY_OK_HOSTS="False", ANSIBLE_DISPLAY_SKIPPED_HOSTS="False")
    return env


def run_playbook(box: Box, playbook: str, *extra: str) -> dict:
    """Run a playbook of the collection, showing its output; return the box's recap counts."""
    argv = ["ansible-playbook", "-i", box.inventory, playbook, "-e", "@" + DEMO_VARS, *extra]
    say("$ " + shown(argv).replace(box.inventory, "<box inventory>").replace(ROOT + "/", ""))
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ansible_env(box))
    lines = []
    for line in proc.stdout:
        lines.append(line)
        sys.stdout.write(line)
    if proc.wait() != 0:
        raise DemoFailed("%s failed (exit %d)" % (playbook, proc.returncode))
    recap = re.search(r"box\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)",
                      re.sub(r"\x1b\[[0-9;]*m", "", "".join(lines)))
    if not recap:
        raise DemoFailed("no play recap for the box in the output of %s" % playbook)
    return dict(zip(("ok", "changed", "unreachable", "failed"), map(int, recap.groups())))


def provision(box: Box, results: dict) -> None:
    step("Provision the box: ansible-playbook onekvm.fleet.provision (canary batch, then the health gate)")
    started = time.monotonic()
    first = run_playbook(box, "onekvm.fleet.provision")
    took = time.monotonic() - started
    results["provision"] = "%d tasks changed, health gate passed (%.0f s)" % (first["changed"], took)

    step("Provision again: a second run must change nothing")
    started = time.monotonic()
    second = run_playbook(box, "onekvm.fleet.provision")
    took = time.monotonic() - started
    if second["changed"]:
        raise DemoFailed("the second provisioning run changed %d tasks" % second["changed"])
    results["provision again"] = "changed=0 (%.0f s)" % took


def gpio(box: Box, relay: SocketRelay, results: dict) -> None:
    step("The GPIO config kvmd would load: /etc/kvmd/override.d/gpio.yaml")
    text = box.run("cat /etc/kvmd/override.d/gpio.yaml").stdout
    say(text)
    config = yaml.safe_load(text)["kvmd"]["gpio"]
    command = config["drivers"]["toggle_switch"]["cmd"]

    # the web UI's click is POST /api/gpio/pulse; nginx hands it to kvmd's socket without /api, and
    # kvmd's cmd driver runs the button's command as its own child (the box's kvmd stand-in does the same)
    step("Press 'Switch KVM machine' through kvmd's API, as the web UI does")
    say("$ curl --unix-socket /run/kvmd/kvmd.sock -X POST 'http://localhost/gpio/pulse?channel=toggle_switch&wait=1'")
    relay.board.clear()
    since = box.run("date +%s").stdout.strip()
    answer = box.kvmd_api("POST", "/gpio/pulse?channel=toggle_switch&wait=1")
    say(json.dumps(answer))
    if not answer.get("ok"):
        raise DemoFailed("kvmd did not take the press: %s" % answer)
    say("the button's command in kvmd's config: " + shown(command))
    say(box.run("journalctl -u kvmd -o cat --no-pager --since @%s | grep -F 'GPIO:' || true" % since).stdout.strip())
    relay.board.wait_for_frames(2, timeout=10)
    pulses = relay.board.pulses(1)
    if not pulses:
        raise DemoFailed("the relay simulator saw no pulse on channel 1")
    say("relay simulator: channel 1 closed for %.0f ms" % (1000 * pulses[-1][2]))
    results["gpio button"] = "toggle_switch pulsed relay channel 1 for %.0f ms" % (1000 * pulses[-1][2])


def watchdog_events(box: Box, since: float) -> list:
    lines = box.run("journalctl -u onekvm-watchdog -o cat --no-pager --since @%d" % int(since)).stdout.splitlines()
    events = []
    for line in lines:
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("ts", 0) >= since:
                events.append(event)
    return events


def describe(event: dict) -> str:
    name = event["event"]
    if name == "failure_detected":
        return "failure detected: %s (grace %s s)" % ("; ".join(event["reasons"]), event["grace"])
    if name == "action_started":
        return "action: %s (failing for %.1f s)" % (event["step"], event["failing_for"])
    if name.startswith("action_"):
        return "%s %s, waiting up to %s s for the capture" % (event["step"], event["result"], event["wait"])
    if name == "recovered":
        return "recovered after %.1f s (steps: %s)" % (event["failing_for"], ", ".join(event["steps_tried"]))
    return name


def break_and_recover(box: Box, results: dict) -> None:
    step("Break the capture dongle (the capture stops like a hung MS2109) and watch the watchdog")
    broke = float(box.run("date +%s.%N").stdout)
    box.run("onekvm-testbed break-capture")
    say("$ onekvm-testbed break-capture       # ustreamer now reports the source offline")
    seen = 0
    deadline = time.monotonic() + RECOVERY_TIMEOUT
    recovered = None
    while recovered is None:
        if time.monotonic() > deadline:
            raise DemoFailed("the watchdog did not recover the capture within %d s" % RECOVERY_TIMEOUT)
        time.sleep(2)
        events = watchdog_events(box, broke)
        for event in events[seen:]:
            say("  +%5.1f s  %s" % (event["ts"] - broke, describe(event)))
            if event["event"] == "recovered":
                recovered = event
        seen = len(events)
    kernel = box.run("journalctl -k -o cat --no-pager --since @%d | grep -E 'reset .*USB device' || true"
                     % int(broke)).stdout.strip()
    say("kernel log (the real reset):\n  " + kernel.replace("\n", "\n  "))
    state = box.cli("status")
    say("onekvm status: %s, recoveries %d, resets %s" % (
        state["status"], state["counters"]["recoveries"],
        {step: counts["ok"] for step, counts in state["counters"]["actions"].items()}))
    results["watchdog"] = "capture back %.1f s after it broke (%s)" % (
        recovered["ts"] - broke, " -> ".join(recovered["steps_tried"]))


def adhoc_reset(box: Box, results: dict) -> None:
    step("Ad hoc: reset the dongle with the usb_reset module")
    say("$ ansible onekvm -m onekvm.fleet.usb_reset -a 'id=%s port=%s'" % (DONGLE["id"], DONGLE["port"]))
    result = box.ansible("onekvm.fleet.usb_reset", DONGLE)
    if result.get("failed"):
        raise DemoFailed("usb_reset failed: %s" % result.get("msg"))
    device = result["devices"][0]
    before, after = device["before"], device["after"]
    say("changed: %s, method %s, %.2f s; before %03d/%03d %s, after %03d/%03d %s" % (
        result["changed"], result["method"], result["elapsed"], before["bus"], before["address"],
        " ".join(before["nodes"]), after["bus"], after["address"], " ".join(after["nodes"])))
    results["ad hoc usb_reset"] = "%s %s reset by ioctl and back in %.2f s" % (
        device["port"], device["id"], device["elapsed"])


def health_report(box: Box, results: dict) -> None:
    step("The fleet health report: ansible-playbook onekvm.fleet.health (the box's screen and recovery history)")
    os.makedirs(OUTPUT, exist_ok=True)
    run_playbook(box, "onekvm.fleet.health", "-e", "fleet_health_dir=" + OUTPUT)
    with open(os.path.join(OUTPUT, "fleet-health.json"), encoding="utf-8") as f:
        report = json.load(f)
    say(json.dumps(report.get("summary", report), indent=2, sort_keys=True)[:1500])
    entry = report["boxes"][0]
    screen = entry.get("screen") or {}
    if screen.get("state") != "live" or not screen.get("thumbnail"):
        shown_screen = {k: v for k, v in screen.items() if k != "thumbnail"}
        raise DemoFailed("the report has no live screen of the box: %s" % shown_screen)
    say("screen: %s, %sx%s from ustreamer's /snapshot, shown as a %sx%s thumbnail" % (
        screen["state"], screen["width"], screen["height"], screen["thumbnail_width"], screen["thumbnail_height"]))
    history = (entry.get("watchdog") or {}).get("history") or []
    healed = [e for e in history if e["kind"] == "healed"]
    if not healed:
        raise DemoFailed("the report's recovery history has no recovery: %s" % history)
    say("recovery history: %d events, %s" % (len(history), ", ".join(
        "%s %s" % (e["at"][11:19], "%s %s" % (e["step"], e["result"] or "") if e["step"] else e["event"]) for e in history)))
    html = os.path.join(OUTPUT, "fleet-health.html")
    say("report: %s" % html)
    results["health report"] = "%s (and fleet-health.json): the box's screen (%sx%s) and %d history events, " \
        "healed in %s s" % (os.path.relpath(html, ROOT), screen["width"], screen["height"], len(history),
                            healed[-1]["failing_for"])
    shot = screenshot(html)
    if shot:
        say("Chromium's picture of it: %s" % shot)
        results["health report"] += "; picture: %s" % os.path.relpath(shot, ROOT)


def screenshot(html: str) -> str | None:
    """Headless Chromium's picture of the report (a few seconds); None when there is no Chromium."""
    binary = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if not binary:
        return None
    png = os.path.join(OUTPUT, "fleet-health.png")
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                               "--disable-background-networking", "--disable-component-update", "--disable-sync",
                               "--user-data-dir=" + profile, "--screenshot=" + png, "--window-size=1600,900",
                               "--hide-scrollbars", "file://" + html], capture_output=True, timeout=120, check=False)
    return png if done.returncode == 0 and os.path.exists(png) else None


def main() -> int:
    results = {}
    started = time.monotonic()
    step("Boot the simulated OneKVM box (the image is built from Debian packages on the first run)")
    box = Box().start(owner=os.getpid())
    results["boot"] = "box up in %.0f s" % (time.monotonic() - started)
    try:
        with Simulator.on_socket(box.ch9329_socket, chip=Chip(reset_time=0.5)) as dummy_chip, \
                SocketRelay(box.relay_socket, RelayBoard(channels=8)) as relay:
            provision(box, results)
            gpio(box, relay, results)
            break_and_recover(box, results)
            adhoc_reset(box, results)
            health_report(box, results)
    except DemoFailed as exc:
        say("\n%sDEMO FAILED: %s%s" % (RED, exc, END))
        return 1
    finally:
        box.stop()
    step("Summary")
    for name, text in results.items():
        say("  %s%-18s%s %s" % (GREEN, name, END, text))
    say("  %-18s %.0f s" % ("total", time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
