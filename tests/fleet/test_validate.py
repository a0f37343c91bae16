# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""onekvm.fleet.validate: the whole inventory checked offline, through the role's own rendering.

No box is reachable here (the example inventory's addresses are TEST-NET-1, 192.0.2.0/24). The
checks are the real ones: visudo from the sudo package, systemd-analyze, the box command's
config check. The role's apply tasks write from the same rendering (test_render_is_the_apply_path).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import xml.etree.ElementTree as ET

import pytest
import yaml

from ansible_collections.onekvm.fleet.tests.fleet.conftest import ROOT, run

EXAMPLE_INVENTORY = os.path.join(ROOT, "examples", "inventory")
TASKS = os.path.join(ROOT, "roles", "onekvm", "tasks")
SEED_BUTTON = {"name": "toggle_switch", "cmd": ["/usr/local/bin/kvm-switch", "next"], "label": "Switch KVM machine", "confirm": True}

# one host per way an inventory can be wrong, and what the report must say about it
BROKEN = {
    "good": ({}, None),
    "bad-button": ({"onekvm_gpio_buttons": [dict(SEED_BUTTON, name="toggle switch")]},
                   r"FAILED bad-button: Check the GPIO buttons .*button 'toggle switch' \(item 1\): name 'toggle switch' does not"
                   r" match kvmd's pattern .*Use letters, digits"),
    "bad-type": ({"onekvm_watchdog_interval": "often"},
                 r"FAILED bad-type: role variables: argument 'onekvm_watchdog_interval' is of type str .* Fix the variable"),
    # a line break in a name written into the unit would add a directive to it
    "bad-service": ({"onekvm_kvmd_service": "kvmd.service\nExecStartPre=/bin/rm -rf /"},
                    r"FAILED bad-service: Check the settings: onekvm_kvmd_service .* must be a systemd unit name"),
    # the group is named by the kvmd user's rule: systemd's strict rules end at 31 characters
    "bad-group": ({"onekvm_watchdog_kvmd_group": "g" * 32},
                  r'FAILED bad-group: Check the settings: onekvm_watchdog_kvmd_group \("g{32}"\) must be a plain group name'),
    # ... and in the sudoers rule a rule of its own: visudo would accept that one
    "bad-user": ({"onekvm_kvmd_user": "kvmd ALL=(ALL) NOPASSWD: ALL\nkvmd", "onekvm_watchdog_kvmd_group": "kvmd"},
                 r"FAILED bad-user: Check the GPIO buttons .*the kvmd user .* is not a plain user name"),
    "bad-watchdog": ({"onekvm_watchdog_metrics_file": "/var/lib/onekvm/metrics.txt"},
                     r"FAILED bad-watchdog: /etc/onekvm/watchdog.json \(watchdog-config\): .*metrics_file must end in \.prom"),
    "bad-path": ({"onekvm_sudoers_file": "/etc/sudoers.d/../../tmp/evil"},
                 r"FAILED bad-path: .*path '/etc/sudoers.d/../../tmp/evil' is not an absolute, normalised path"),
    "bad-dongle": ({"onekvm_capture_usb_id": "534d-2109"}, r"FAILED bad-dongle: Check the settings: Invalid device settings"),
    # every setting that is wrong is named at once
    "two-wrong": ({"onekvm_capture_usb_id": "534d-2109", "onekvm_watchdog_systemd_watchdog_sec": 1},
                  r"FAILED two-wrong: Check the settings: Invalid device settings.* onekvm_watchdog_systemd_watchdog_sec \(1\) must"),
    # a line break after a good port path would end the udev rule's line early (the role's old
    # regex match let it through; the box's own pattern, matched whole, does not)
    "bad-port": ({"onekvm_capture_usb_port": "1-1.2\n"}, r"FAILED bad-port: Check the settings: Invalid device settings"),
    # One-KVM ships an override.yaml whose GPIO view would hide the buttons
    "one-kvm": ({"onekvm_offline_kvmd": "one-kvm"},
                r"FAILED one-kvm: Stop on a GPIO view in override.yaml .*defines kvmd.gpio.view .*onekvm_override_yaml_gpio_view=move"),
    "one-kvm-move": ({"onekvm_offline_kvmd": "one-kvm", "onekvm_override_yaml_gpio_view": "move"}, None),
    "no-dongle": ({"onekvm_capture_usb_id": "", "onekvm_capture_usb_port": "", "onekvm_watchdog_ladder": ["restart_streamer"],
                   "onekvm_watchdog_dongle_usb_id": "", "onekvm_watchdog_dongle_usb_port": ""}, None),
    "no-streamer": ({"onekvm_streamer_use_symlink": False}, None),
    "bad-streamer": ({"onekvm_streamer_cmd_remove": ["--device=/dev/video0\n--x"]},
                     r"FAILED bad-streamer: Check the settings: onekvm_streamer_cmd_remove"),
    "box-override": ({"onekvm_offline_override_yaml": {"kvmd": {"gpio": {"view": {"table": [["x"]]}}}}},
                     r"FAILED box-override: Stop on a GPIO view in override.yaml"),
    # One-KVM 0.2 (no kvmd): set in the inventory, checked without the box; One-KVM's baud rates only
    "onekvm2": ({"onekvm_flavour": "onekvm2", "onekvm_offline_kvmd": "one-kvm"}, None),
    "bad-onekvm2-baud": ({"onekvm_flavour": "onekvm2", "onekvm_onekvm2_hid_baudrate": 14400},
                         r"FAILED bad-onekvm2-baud: role variables: .*onekvm_onekvm2_hid_baudrate"),
}


def ansible_env(coll_path):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=coll_path, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    env.pop("ANSIBLE_CONFIG", None)
    return env


def validate(coll_path, inventory, workdir, *extra):
    return run(["ansible-playbook", "-i", inventory, "onekvm.fleet.validate", "-e", "validate_dir=" + str(workdir / "out"),
                "-e", "validate_junit=" + str(workdir / "junit.xml"), *extra], env=ansible_env(coll_path), cwd=str(workdir))


@pytest.fixture(scope="module")
def example(coll_path, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("validate-example")
    return workdir, validate(coll_path, EXAMPLE_INVENTORY, workdir)


@pytest.fixture(scope="module")
def broken(coll_path, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("validate-broken")
    with open(os.path.join(EXAMPLE_INVENTORY, "group_vars", "onekvm.yml"), encoding="utf-8") as f:
        group_vars = yaml.safe_load(f)
    inventory = {"onekvm": {"hosts": {name: case[0] for name, case in BROKEN.items()}, "vars": group_vars}}
    (workdir / "hosts.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    return workdir, validate(coll_path, str(workdir / "hosts.yml"), workdir)


def test_example_inventory_passes_without_any_box(example):
    workdir, done = example
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "unreachable=1" not in done.stdout and "UNREACHABLE" not in done.stdout
    assert "onekvm.fleet.validate: 6 hosts, 6 pass, 0 fail" in done.stdout
    summary = (workdir / "out" / "summary.md").read_text()
    for host in ("kvm-a01", "kvm-a02", "kvm-a03", "kvm-b01", "kvm-b02"):
        # gpio.yaml, the streamer override, sudoers, udev, the box command, Reset HID (button command, job, unit),
        # watchdog config and unit, a wrapper per root button
        assert re.search(r"^ok +%s: 12 files checked" % host, summary, re.M), summary
    # the One-KVM 0.2 box: udev, the box command, Reset HID (command, job, unit), watchdog config and unit
    assert re.search(r"^ok +kvm-c01: 7 files checked", summary, re.M), summary


def test_rendered_files_are_what_the_box_gets(example):
    workdir, done = example
    box = workdir / "out" / "kvm-a03"
    gpio = yaml.safe_load((box / "etc/kvmd/override.d/gpio.yaml").read_text())["kvmd"]["gpio"]
    assert gpio["view"]["table"][0] == ["toggle_switch|confirm|Switch KVM machine"]
    wrapper = "/usr/local/lib/onekvm/buttons/onekvm_reset_capture"
    assert gpio["drivers"]["onekvm_reset_capture"]["cmd"] == ["/usr/bin/sudo", "-n", wrapper]
    # kvm-a03's own dongle (host_vars override the group's), in the root-owned wrapper sudo allows
    assert (box / wrapper.lstrip("/")).read_text().splitlines()[-1] == "exec /usr/local/bin/onekvm usb-reset 345f:2130 --port 2-1"
    assert oct((box / wrapper.lstrip("/")).stat().st_mode & 0o777) == "0o755"
    sudoers = box / "etc/sudoers.d/onekvm"
    assert oct(sudoers.stat().st_mode & 0o777) == "0o440"
    assert wrapper + ' ""' in sudoers.read_text()
    assert (box / "etc/onekvm/watchdog.json").is_file() and (box / "etc/systemd/system/onekvm-watchdog.service").is_file()
    assert 'KERNELS=="2-1"' in (box / "etc/udev/rules.d/90-onekvm.rules").read_text()
    assert os.access(box / "usr/local/sbin/onekvm-reset-hid", os.X_OK)


def fake_systemctl(tmp_path, active):
    """A systemctl that logs its calls and answers is-active with ``active`` (the edge: no systemd here)."""
    (tmp_path / "bin").mkdir()
    log = tmp_path / "calls"
    script = tmp_path / "bin" / "systemctl"
    script.write_text('#!/bin/sh\necho "$*" >>%s\n[ "$1" != is-active ] || exit %d\n' % (log, 0 if active else 3))
    script.chmod(0o755)
    return dict(os.environ, PATH="%s:%s" % (tmp_path / "bin", os.environ["PATH"])), log


@pytest.mark.parametrize("kvmd_was_active, kvmd_active_now, started", [
    (True, False, True),  # the reset stopped kvmd and died before it could start it again
    (True, True, False),  # the reset brought kvmd back itself
    (False, False, False),  # kvmd was not running when the reset began: left as it was
])
def test_reset_hid_unit_brings_kvmd_back_however_the_job_ends(example, tmp_path, kvmd_was_active, kvmd_active_now,
                                                              started):
    workdir, done = example
    box = workdir / "out" / "kvm-a03"
    unit = (box / "etc/systemd/system/onekvm-reset-hid.service").read_text()
    job = "/usr/local/lib/onekvm/reset-hid-job"
    # systemd runs ExecStopPost= however the service ended (success, failure, timeout, a kill): systemd.service(5)
    assert "ExecStopPost=%s --bring-kvmd-back" % job in unit.splitlines()
    assert "RuntimeDirectory=onekvm-reset-hid" in unit.splitlines()
    runtime = tmp_path / "run"
    runtime.mkdir()
    env, log = fake_systemctl(tmp_path, kvmd_active_now)
    env.update(RUNTIME_DIRECTORY=str(runtime), SERVICE_RESULT="signal")
    if kvmd_was_active:  # what the job's start leaves behind when kvmd was running
        (runtime / "kvmd-was-active").write_text("")
    after = run(["sh", str(box / job.lstrip("/")), "--bring-kvmd-back"], env=env)
    assert after.returncode == 0, after.stderr
    calls = log.read_text().splitlines() if log.exists() else []
    assert ("start kvmd" in calls) == started, calls
    if started:
        assert "ended (signal) with kvmd stopped: starting kvmd again" in after.stdout


@pytest.mark.parametrize("flavour", ["pikvm", "one-kvm"])
def test_the_streamer_override_makes_kvmd_run_ustreamer_on_the_symlink(example, flavour, tmp_path):
    """The rendered override.d file, loaded with the box's config by the kvmd stand-in (what `kvmd -m`
    runs): kvmd's streamer command (kvmd/tools.py build_cmd) names the role's symlink as its only device,
    whether the box's cmd says /dev/kvmd-video (PiKVM's main.yaml) or /dev/video0 (One-KVM's override.yaml)."""
    from ansible_collections.onekvm.fleet.tests.testbed import kvmd_standin as kvmd
    workdir, done = example
    rendered = (workdir / "out" / "kvm-a03" / "etc/kvmd/override.d/onekvm-streamer.yaml").read_text()
    root = tmp_path / "root"
    if flavour == "one-kvm":
        shutil.copytree(os.path.join(ROOT, "tests", "testbed", "fixtures", "one-kvm"), str(root))
        os.rename(str(root / "etc/kvmd/main.yaml.in"), str(root / "etc/kvmd/main.yaml"))
    else:
        (root / "usr/lib/kvmd").mkdir(parents=True)
        (root / "usr/lib/kvmd/main.yaml").write_text(
            "kvmd:\n    streamer:\n        cmd: [/usr/bin/ustreamer, --device=/dev/kvmd-video, --persistent, '--unix={unix}']\n")
        (root / "etc/kvmd").mkdir(parents=True)
        (root / "etc/kvmd/override.yaml").write_text("{}\n")
    (root / "etc/kvmd/override.d").mkdir()
    before = kvmd.streamer_cmd(kvmd.checked(str(root))[0])
    (root / "etc/kvmd/override.d/onekvm-streamer.yaml").write_text(rendered)
    after = kvmd.streamer_cmd(kvmd.checked(str(root))[0])
    assert [item for item in after if item.startswith("--device")] == ["--device=/dev/kvmd-video"], after
    assert [item for item in before if not item.startswith("--device")] == [item for item in after if not item.startswith("--device")]


def test_no_streamer_override_without_the_capture_rule(broken):
    """Without a dongle id or port the role's udev rule makes no symlink: the streamer is left alone."""
    workdir, done = broken
    assert (workdir / "out" / "good" / "etc/kvmd/override.d/onekvm-streamer.yaml").is_file()
    assert not (workdir / "out" / "no-dongle" / "etc/kvmd/override.d/onekvm-streamer.yaml").exists()
    assert not (workdir / "out" / "no-streamer" / "etc/kvmd/override.d/onekvm-streamer.yaml").exists()


def test_junit_report_has_a_case_per_host_and_file(example):
    workdir, done = example
    suite = ET.parse(workdir / "junit.xml").getroot()
    assert suite.get("failures") == "0"
    cases = {(c.get("classname"), c.get("name")) for c in suite.iter("testcase")}
    assert ("kvm-a01", "/etc/sudoers.d/onekvm: visudo") in cases
    assert ("kvm-b02", "/etc/systemd/system/onekvm-watchdog.service: systemd-unit") in cases
    assert ("kvm-b02", "/etc/systemd/system/onekvm-reset-hid.service: systemd-unit") in cases
    assert len(cases) == 5 * 12 + 7


def test_a_broken_inventory_fails_naming_host_and_what_to_change(broken):
    workdir, done = broken
    assert done.returncode != 0
    summary = (workdir / "out" / "summary.md").read_text()
    failing = [name for name, case in BROKEN.items() if case[1]]
    assert "%d hosts, %d pass, %d fail" % (len(BROKEN), len(BROKEN) - len(failing), len(failing)) in summary
    for name, case in BROKEN.items():
        expected = case[1]
        if expected:
            assert re.search(expected, summary), "%s: %s\n%s" % (name, expected, summary)
        else:
            assert re.search(r"^ok +%s: " % name, summary, re.M), summary
    assert "boxes fail: " + ", ".join(failing) in done.stdout
    suite = ET.parse(workdir / "junit.xml").getroot()
    failed_cases = {c.get("classname") for c in suite.iter("testcase") if c.find("failure") is not None}
    assert failed_cases == set(failing)


def test_hostile_values_write_nothing_outside_the_artifact_dir(broken):
    workdir, done = broken
    assert not (workdir / "out" / "tmp" / "evil").exists() and not (workdir / "out" / "bad-path" / "tmp").exists()
    assert not os.path.exists("/tmp/evil")


def test_one_kvm_warns_about_programs_the_role_does_not_install(broken):
    workdir, done = broken
    summary = (workdir / "out" / "summary.md").read_text()
    assert re.search(r"warn +one-kvm-move: button driver 'toggle_switch' runs /usr/local/bin/kvm-switch: One-KVM's kvmd refuses",
                     summary), summary
    assert "warn   one-kvm-move: button driver 'onekvm_reset_hid'" not in summary  # sudo and the role's own scripts exist


def test_onekvm2_box_gets_no_kvmd_files_and_is_told_once(broken):
    """One-KVM 0.2 reads no override.d: no gpio.yaml, sudoers or button wrappers for it (a kvmd host of the same
    inventory gets them), and the run says once what it cannot do. Its watchdog asks One-KVM, not ustreamer, and
    has the USB steps One-KVM lacks, not the streamer restart (One-KVM restarts its capture itself)."""
    workdir, done = broken
    box, kvmd_box = workdir / "out" / "onekvm2", workdir / "out" / "good"
    assert (kvmd_box / "etc/kvmd/override.d/gpio.yaml").is_file()
    for path in ("etc/kvmd/override.d/gpio.yaml", "etc/sudoers.d/onekvm", "usr/local/lib/onekvm/buttons"):
        assert not (box / path).exists(), path
    watchdog = json.loads((box / "etc/onekvm/watchdog.json").read_text())
    assert watchdog["onekvm2"] == {"enabled": True, "url": "http://127.0.0.1:8080",
                                   "credentials": "/etc/onekvm/watchdog-onekvm2.json", "timeout": 2.0}
    assert watchdog["ustreamer"]["enabled"] is False and "restart_streamer" not in watchdog["ladder"]
    assert json.loads((kvmd_box / "etc/onekvm/watchdog.json").read_text())["onekvm2"]["enabled"] is False
    assert "SupplementaryGroups=root" in (box / "etc/systemd/system/onekvm-watchdog.service").read_text()
    assert (box / "etc/udev/rules.d/90-onekvm.rules").is_file()  # stable names serve One-KVM too
    told = re.findall(r"One-KVM 0.2 \(no kvmd\) on ([^:]*): it has no custom web-UI buttons", done.stdout)
    assert len(told) == 1 and "onekvm2" in told[0], done.stdout[-3000:]
    assert "ATX power and reset buttons" in done.stdout


def _tasks():
    for name in sorted(os.listdir(TASKS)):
        with open(os.path.join(TASKS, name), encoding="utf-8") as f:
            for task in _flatten(yaml.safe_load(f) or []):
                yield name, task


def _flatten(tasks):
    for task in tasks:
        yield task
        for key in ("block", "rescue", "always"):
            yield from _flatten(task.get(key, []))


# written by the role but not rendered for the check: fixed text, the box's own file edited, a
# secret (kvmd's password must not end up in CI artifacts), or what the box had before, put back
# when a GPIO change fails
NOT_RENDERED = {("commands.yml", "Mark the directory as a package"),
                ("watchdog.yml", "Give the watchdog kvmd credentials to ask kvmd's HID state (root only)"),
                ("streamer.yml", "Put the previous streamer override back"),  # the box's previous file, restored
                ("watchdog.yml", "Give the watchdog One-KVM 0.2's login to ask its stream status (root only)"),
                ("override_move.yml", "Write override.yaml without kvmd.gpio.view (its comments are not kept; the copy has them)"),
                ("gpio.yml", "Put the previous sudoers drop-in back"),
                ("gpio.yml", "Put the previous wrappers back")}


def test_render_is_the_apply_path():
    """Every file the role writes from a template comes from render.yml, and every rendered file is written."""
    with open(os.path.join(TASKS, "render.yml"), encoding="utf-8") as f:
        render = next(t for t in yaml.safe_load(f) if t["name"] == "Check the GPIO buttons and render the files the role writes")
    rendered = set(render["vars"]["_onekvm_fixed_files"]) | {"button wrappers"}
    with open(os.path.join(TASKS, "apply.yml"), encoding="utf-8") as f:
        wrappers = next(t for t in yaml.safe_load(f) if "gpio.yml" in str(t))["vars"]["_onekvm_root_wanted"]
    assert wrappers.startswith("{{ _onekvm_files.values()"), wrappers
    written = set()
    for name, task in _tasks():
        assert "ansible.builtin.template" not in task and "template" not in task, (
            "%s: %r renders a template itself; render it in render.yml (_onekvm_files) and copy its content" % (name, task["name"]))
        copy = task.get("ansible.builtin.copy") or {}
        if "content" not in copy or (name, task["name"]) in NOT_RENDERED:
            continue
        if copy["content"] == "{{ item.content }}":  # the root buttons' wrappers, from _onekvm_files
            assert copy["dest"] == "{{ item.path }}" and task["loop"] == "{{ _onekvm_root_wanted }}", (name, task["name"])
            written.add("button wrappers")
            continue
        found = re.fullmatch(r"\{\{ _onekvm_files\.(\w+)\.content \}\}", copy["content"])
        assert found and copy["dest"] == "{{ _onekvm_files.%s.path }}" % found.group(1), (name, task["name"])
        written.add(found.group(1))
    assert rendered == written
