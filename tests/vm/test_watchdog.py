# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The capture watchdog on the simulated box: installed as the role's tasks install it, run by systemd.

Failures are injected for real (vivid unbound, the dongle unplugged through QEMU's monitor,
the service killed or frozen) and every test judges by what the kernel log, systemd, the
state file and the metrics file show, not by the watchdog's own journal lines.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
UNIT = "onekvm-watchdog.service"
STATE = "/run/onekvm/watchdog.json"
METRICS = "/var/lib/prometheus/node-exporter/onekvm_watchdog.prom"
CONFIG = "/etc/onekvm/watchdog.json"
DONGLE = "usb-tablet,bus=xhci.0,port=1.2,serial=TWIN,id=dongle"

# Short times for the test (TCG runs the guest ~6x slower than the host, hence the margins).
SETTINGS = {
    "onekvm_watchdog_dongle_usb_id": "0627:0001",
    "onekvm_watchdog_dongle_usb_port": "1-1.2",  # its identical twin sits at 1-1.3
    "onekvm_watchdog_interval": 2,
    "onekvm_watchdog_grace": 4,
    "onekvm_watchdog_ladder": ["restart_streamer", "ioctl", "authorize"],
    "onekvm_watchdog_waits": {"restart_streamer": 8, "ioctl": 10, "authorize": 10},
    "onekvm_watchdog_max_actions_per_hour": 30,
    "onekvm_watchdog_backoff": 0,
    "onekvm_watchdog_systemd_watchdog_sec": 20,
}


def apply_role(box, tasks_from="watchdog", **overrides):
    """Run the role's watchdog tasks (or ``tasks_from``) against the box with SETTINGS (+ overrides)."""
    # the role's task files write what its render step decided (tasks/render.yml): render first
    res = box.apply_role(dict(SETTINGS, **overrides), tasks_from=("render", tasks_from), timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    return res


UNIT_FILE = "/etc/systemd/system/" + UNIT
KVMD_CREDENTIALS = "/etc/onekvm/watchdog-kvmd.json"  # onekvm_watchdog_hid_kvmd_credentials_file


def install_watchdog(box, **overrides):
    """What the role's tasks/watchdog.yml does with SETTINGS (+ overrides), without a role run.

    Its two files are the ones the role renders (``Box.install_rendered``: seconds, where a role
    run takes minutes under TCG); each step below is the watchdog.yml task named beside it.
    test_service_is_hardened_and_reports runs the role after this and sees it change nothing.
    """
    settings = dict(SETTINGS, **overrides)
    # "Create the watchdog's config directory", "Create the Prometheus textfile directory"
    # ("Create the state file's directory" is skipped for /run/onekvm, the unit's RuntimeDirectory)
    box.run("install -d -o root -g root -m 0755 %s %s" % (os.path.dirname(CONFIG), os.path.dirname(METRICS)))
    # "Give the watchdog kvmd credentials ..." / "Remove kvmd credentials no longer configured"
    if settings.get("onekvm_watchdog_hid_kvmd_user"):
        credentials = {"user": settings["onekvm_watchdog_hid_kvmd_user"], "passwd": settings["onekvm_watchdog_hid_kvmd_password"]}
        box.run("umask 077 && cat > %s && chmod 0600 %s" % (KVMD_CREDENTIALS, KVMD_CREDENTIALS), input=json.dumps(credentials) + "\n")
    else:
        box.run("rm -f %s" % KVMD_CREDENTIALS)
    # "Render the watchdog config" (its validate: the offline render checks it with the box
    # command's own config check) and "Install the watchdog's systemd unit", then daemon-reload
    files = "%s %s" % (CONFIG, UNIT_FILE)
    before = box.run("sha256sum %s 2>/dev/null" % files, check=False).stdout
    box.install_rendered(settings, only=(CONFIG, UNIT_FILE))
    changed = box.run("sha256sum %s" % files).stdout != before
    # "Enable and start the watchdog": enabled, restarted when its config or unit changed, else started
    box.run("systemctl enable %s && systemctl %s %s" % (UNIT, "restart" if changed else "start", UNIT))


def read_json(box, path):
    res = box.run("cat %s" % path, check=False)
    return json.loads(res.stdout) if res.returncode == 0 and res.stdout.strip() else None


def metrics(box):
    values = {}
    for line in box.run("cat %s" % METRICS).stdout.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def wait_for(what, check, timeout=150, every=1.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError("timed out after %ds waiting for %s (last: %r)" % (timeout, what, last))


def state_where(box, predicate):
    def check():
        state = read_json(box, STATE)
        return state if state and predicate(state) else None
    return check


def main_pid(box):
    return int(box.run("systemctl show -p MainPID --value %s" % UNIT).stdout.strip() or 0)


def unit_prop(box, prop):
    return box.run("systemctl show -p %s --value %s" % (prop, UNIT)).stdout.strip()


def healthy(box):
    return wait_for("a healthy capture and watchdog",
                    state_where(box, lambda s: s["status"] == "ok" and s["verdict"] == "ok"), timeout=180)


@pytest.fixture(scope="module")
def watchdog(box):
    box.run("onekvm-testbed heal-capture")
    install_watchdog(box)
    assert box.run("systemctl is-active %s" % UNIT, check=False).stdout.strip() == "active"
    healthy(box)
    yield box
    box.run("systemctl stop %s; onekvm-testbed heal-capture" % UNIT, check=False)


@pytest.fixture
def clean(watchdog):
    """Each test starts from a healed capture, a present dongle and a healthy watchdog."""
    box = watchdog
    box.run("systemctl reset-failed %s" % UNIT, check=False)  # the tests restart it more often than StartLimitBurst
    yield box
    box.run("onekvm-testbed heal-capture", check=False)
    if "dongle" not in box.monitor("info usb"):
        box.monitor("device_add " + DONGLE)
    if box.run("systemctl is-active %s" % UNIT, check=False).stdout.strip() != "active":
        box.run("systemctl reset-failed %s; systemctl start %s" % (UNIT, UNIT), check=False)
    healthy(box)


def test_service_is_hardened_and_reports(watchdog):
    box = watchdog
    out = box.run("systemd-analyze security --no-pager %s" % UNIT).stdout
    exposure = float(re.search(r"Overall exposure level for %s: ([0-9.]+)" % re.escape(UNIT), out).group(1))
    # the README states the figure: it must be the one real systemd measures for the role's unit
    with open(os.path.join(HERE, "..", "..", "README.md"), encoding="utf-8") as readme:
        stated = float(re.search(r"`systemd-analyze security` exposure ([0-9.]+)", readme.read()).group(1))
    print("systemd-analyze security: exposure %.1f (README: %.1f)" % (exposure, stated))
    assert exposure == stated, out
    status = box.cli("status")
    assert status["status"] == "ok" and status["probes"]["ustreamer"]["ok"] is True
    assert status["probes"]["dongle"]["ok"] is True and status["pid"] == main_pid(box)
    values = metrics(box)
    assert values['onekvm_watchdog_up{domain="capture"}'] == 1 and values['onekvm_watchdog_checks_total{domain="capture"}'] >= 1
    # a second run of the role changes nothing
    assert '"changed": true' not in apply_role(box).stdout


def test_usb_reset_heals_a_dead_capture(clean):
    box = clean
    before = metrics(box)
    mark = box.log_mark()
    started = time.monotonic()
    box.run("onekvm-testbed break-capture")
    failing = wait_for("the failure to be seen", state_where(box, lambda s: s["status"] != "ok"), timeout=60)
    assert any("ustreamer" in r or "video" in r for r in failing["last_failure"]["reasons"])
    state = wait_for("recovery", state_where(box, lambda s: s["status"] == "ok" and s["counters"]["recoveries"]
                                             > before['onekvm_watchdog_recoveries_total{domain="capture"}']))
    took = time.monotonic() - started
    kernel = box.kernel_log_since(mark)
    assert re.search(r"usb 1-1\.2: reset \S+ USB device number", kernel), kernel
    assert "capture healed by a dongle reset" in kernel
    assert not re.search(r"usb 1-1\.3: reset", kernel)  # the identical twin is left alone
    assert state["last_action"]["step"] == "ioctl" and state["verdict"] == "ok"
    after = metrics(box)
    assert after['onekvm_watchdog_resets_total{domain="capture",method="ioctl"}'] == before['onekvm_watchdog_resets_total{domain="capture",method="ioctl"}'] + 1
    assert after['onekvm_watchdog_resets_total{domain="capture",method="restart_streamer"}'] > before[
        'onekvm_watchdog_resets_total{domain="capture",method="restart_streamer"}']
    assert after['onekvm_watchdog_up{domain="capture"}'] == 1 and 0 < after['onekvm_watchdog_last_recovery_seconds{domain="capture"}'] < took
    assert "streamer exited" in box.run("journalctl -u kvmd --since '-%ds' --no-pager" % int(took + 5)).stdout


def test_dongle_unplugged_then_back(clean):
    box = clean
    mark = box.log_mark()
    box.monitor("device_del dongle")
    state = wait_for("the missing dongle to be seen", state_where(
        box, lambda s: s["probes"].get("dongle", {}).get("ok") is False and s["status"] != "ok"), timeout=60)
    assert "not on the USB bus" in state["probes"]["dongle"]["detail"]
    assert metrics(box)['onekvm_watchdog_up{domain="capture"}'] == 0
    assert "usb 1-1.2: USB disconnect" in box.kernel_log_since(mark)
    box.monitor("device_add " + DONGLE)
    wait_for("the dongle to count as back", state_where(box, lambda s: s["status"] == "ok" and s["verdict"] == "ok"))
    assert re.search(r"usb 1-1\.2: new \S+ USB device number", box.kernel_log_since(mark))
    assert metrics(box)['onekvm_watchdog_up{domain="capture"}'] == 1


def test_nothing_heals_needs_human_and_the_rate_limit_holds(clean):
    box = clean
    box.run("systemctl stop %s && rm -f %s" % (UNIT, STATE))  # forget earlier tests' actions in the hourly budget
    install_watchdog(box, onekvm_watchdog_max_actions_per_hour=2)
    try:
        healthy(box)
        mark = box.log_mark()
        box.run("onekvm-testbed break-capture --permanent")
        state = wait_for("the hourly budget to run out", state_where(box, lambda s: s["rate_limited"]), timeout=120)
        assert state["status"] == "recovering" and state["next_step"] == "authorize"
        assert metrics(box)['onekvm_watchdog_rate_limited_total{domain="capture"}'] >= 1
        time.sleep(20)  # several checks: the budget must hold
        assert len(re.findall(r"usb 1-1\.2: reset \S+ USB device number", box.kernel_log_since(mark))) == 1
        assert read_json(box, STATE)["counters"]["actions"].get("authorize", {}).get("ok", 0) == 0
    finally:
        install_watchdog(box)
    # with budget enough the ladder runs out and says so, once, then stays quiet (backoff 0)
    state = wait_for("needs a human", state_where(box, lambda s: s["status"] == "needs_human"), timeout=120)
    assert state["last_action"]["step"] == "authorize"
    values = metrics(box)
    assert values['onekvm_watchdog_needs_human{domain="capture"}'] == 1 and values['onekvm_watchdog_up{domain="capture"}'] == 0
    mark = box.log_mark()
    time.sleep(15)
    assert not re.search(r"usb 1-1\.2: reset", box.kernel_log_since(mark))
    assert read_json(box, STATE)["status"] == "needs_human"


def test_sigkill_brings_it_back(clean):
    box = clean
    pid = main_pid(box)
    restarts = int(unit_prop(box, "NRestarts"))
    box.run("kill -KILL %d" % pid)
    wait_for("a new main process", lambda: main_pid(box) not in (0, pid) and
             unit_prop(box, "ActiveState") == "active", timeout=90)
    assert int(unit_prop(box, "NRestarts")) == restarts + 1
    wait_for("the new process to write the state", state_where(box, lambda s: s["pid"] == main_pid(box)))


def test_hung_check_is_killed_by_systemd(clean):
    box = clean
    pid = main_pid(box)
    since = box.run("date '+%Y-%m-%d %H:%M:%S'").stdout.strip()
    box.run("kill -STOP %d" % pid)  # a check that never returns: no more WATCHDOG=1 pings
    wait_for("systemd's watchdog to restart it", lambda: main_pid(box) not in (0, pid) and
             unit_prop(box, "ActiveState") == "active", timeout=120)
    journal = box.run("journalctl -u %s --since '%s' --no-pager" % (UNIT, since)).stdout
    assert "Watchdog timeout" in journal, journal


def test_invalid_config_fails_once(clean):
    box = clean
    good = box.run("cat %s" % CONFIG).stdout
    try:
        box.run("sed -i 's/\"interval\": [0-9.]*/\"interval\": -1/' %s" % CONFIG)
        box.run("systemctl restart %s" % UNIT, check=False)
        wait_for("the unit to fail", lambda: unit_prop(box, "ActiveState") == "failed", timeout=60)
        restarts = unit_prop(box, "NRestarts")
        time.sleep(12)  # RestartSec is 5: a crash loop would have restarted it by now
        assert unit_prop(box, "ActiveState") == "failed" and unit_prop(box, "NRestarts") == restarts
        assert unit_prop(box, "ExecMainStatus") == "2"
        log = box.run("journalctl -u %s -n 20 --no-pager -o cat" % UNIT).stdout
        assert "interval must be a number from 0.5 to 3600" in log, log  # worded by _limits.LIMITS
    finally:
        box.run("cat > %s" % CONFIG, input=good)
        box.run("systemctl reset-failed %s; systemctl start %s" % (UNIT, UNIT))


def test_disabled_by_the_role_it_stops_and_stays_off(clean):
    box = clean
    try:
        # what the role runs when onekvm_watchdog_enabled is false
        assert '"changed": true' in apply_role(box, tasks_from="watchdog_off").stdout
        assert unit_prop(box, "ActiveState") == "inactive"
        assert box.run("systemctl is-enabled %s" % UNIT, check=False).stdout.strip() == "disabled"
        status = box.cli("status")
        assert status["running"] is False and status["message"].startswith("watchdog: not running"), status
        assert '"changed": true' not in apply_role(box, tasks_from="watchdog_off").stdout
    finally:
        install_watchdog(box)  # back on, as the other tests expect
    assert box.run("systemctl is-enabled %s" % UNIT, check=False).stdout.strip() == "enabled"
    wait_for("the restarted watchdog's state", lambda: box.cli("status", check=False).get("running"), timeout=60)


# ---- the ladder steps no test ran for real: power_cycle and ch9329 through the service ----

def test_power_cycle_step_through_the_hardened_service(clean):
    """The dongle stand-in sits on hub 1-1, which switches power per port (testbed.md): the
    service's power_cycle step really takes 1-1.2 off the bus and the capture heals when
    it re-enumerates; the twin at 1-1.3 and the CH9329's adapter at 1-1.1 stay."""
    box = clean
    install_watchdog(box, onekvm_watchdog_ladder=["power_cycle"], onekvm_watchdog_waits={"power_cycle": 15})
    try:
        healthy(box)
        assert "CapabilityBoundingSet=cap_kill" in box.run("systemctl show -p CapabilityBoundingSet %s" % UNIT).stdout
        before = read_json(box, STATE)["counters"]["recoveries"]
        mark = box.log_mark()
        box.run("onekvm-testbed break-capture")
        state = wait_for("the power cycle to heal it", state_where(
            box, lambda s: s["status"] == "ok" and s["counters"]["recoveries"] > before), timeout=150)
        assert state["last_action"]["step"] == "power_cycle" and state["last_action"]["result"] == "ok", state
        assert state["last_action"]["detail"]["hub"] == "1-1"
        kernel = box.kernel_log_since(mark)
        assert "usb 1-1.2: USB disconnect" in kernel and re.search(r"usb 1-1\.2: new \S+ USB device number", kernel)
        assert "capture healed by a dongle reset" in kernel
        assert not re.search(r"usb 1-1\.[13]: (USB disconnect|reset)", kernel), kernel
    finally:
        install_watchdog(box)


GET_INFO = 0x01


@pytest.fixture
def chip(watchdog):
    """The CH9329 simulator behind the FTDI adapter at 1-1.1 (QEMU chardev)."""
    from ansible_collections.onekvm.fleet.tests.testbed.ch9329_sim import Chip, Simulator
    with Simulator.on_socket(watchdog.ch9329_socket, chip=Chip(reset_time=0.5)) as simulator:
        yield simulator


def hid_settings(box):
    # kvmd's user as PiKVM ships it (admin/admin): the watchdog asks kvmd's GET /hid while kvmd holds the port
    return {"onekvm_watchdog_hid_enabled": True, "onekvm_watchdog_hid_device": box.serial_by_path("1-1.1"),
            "onekvm_watchdog_hid_kvmd_user": "admin", "onekvm_watchdog_hid_kvmd_password": "admin",
            "onekvm_watchdog_hid_adapter_usb_id": "0403:6001", "onekvm_watchdog_hid_adapter_usb_port": "1-1.1",
            "onekvm_watchdog_hid_ladder": ["ch9329", "hid_adapter"], "onekvm_watchdog_hid_grace": 4,
            "onekvm_watchdog_hid_waits": {"ch9329": 8, "hid_adapter": 10}}


def heal_on_reset(chip):
    """A chip that went deaf and answers again after its RESET (what the step is for)."""
    resets = chip.counters["resets"]
    chip.set_faults(silent=True, commands=[GET_INFO])
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            if chip.counters["resets"] > resets:
                chip.clear_faults()
                return
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()
    return stop


def test_ch9329_step_through_the_hardened_service(clean, chip):
    """A silent chip is the HID domain's failure: the service resets the chip over the
    FTDI adapter (DeviceAllow char-ttyUSB) and nothing of the capture is touched."""
    box = clean
    install_watchdog(box, **hid_settings(box))
    try:
        # until the restarted service writes its first state, the file is the old process's (no HID domain)
        wait_for("both domains healthy", state_where(box, lambda s: s["status"] == "ok" and all(
            s.get("domains", {}).get(d, {}).get("verdict") == "ok" for d in ("hid", "capture"))), timeout=120)
        capture_before = read_json(box, STATE)["domains"]["capture"]["counters"]
        mark = box.log_mark()
        stop = heal_on_reset(chip)
        try:
            state = wait_for("the chip reset to heal the HID", state_where(
                box, lambda s: s["domains"]["hid"]["counters"]["recoveries"] >= 1
                and s["domains"]["hid"]["status"] == "ok"), timeout=120)
        finally:
            stop.set()
        hid = state["domains"]["hid"]
        assert hid["last_action"]["step"] == "ch9329" and hid["last_action"]["result"] == "ok", hid
        assert chip.counters["resets"] >= 1
        capture = state["domains"]["capture"]
        assert capture["counters"]["failures"] == capture_before["failures"] and capture["status"] == "ok"
        assert not re.search(r"usb 1-1\.\d: (reset|USB disconnect)", box.kernel_log_since(mark))
        values = metrics(box)
        assert values['onekvm_watchdog_resets_total{domain="hid",method="ch9329"}'] >= 1
        assert values['onekvm_watchdog_resets_total{domain="capture",method="restart_streamer"}'] == metrics_before(
            capture_before, "restart_streamer")
    finally:
        install_watchdog(box)


def metrics_before(counters, step):
    return counters["actions"].get(step, {}).get("ok", 0)
