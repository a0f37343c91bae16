# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""render_check: each file is judged by the real checker (visudo, systemd-analyze, the box command's config check).

The files here are written by hand, broken the ways a template change could break them; the
playbook-level tests (tests/fleet/test_validate.py) feed the role's real rendering.
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET

import pytest

from ansible_collections.onekvm.fleet.plugins.modules import render_check
from ansible_collections.onekvm.fleet.tests.unit.plugins.modules.module_runner import run_module

GPIO = {"kvmd": {"gpio": {"drivers": {"b": {"type": "cmd", "cmd": ["/bin/true"]}},
                          "scheme": {"b": {"driver": "b", "pin": 0, "mode": "output", "switch": False}},
                          "view": {"table": [["b|Press"]]}}}}
SUDOERS = 'Cmnd_Alias ONEKVM_BUTTONS = /usr/local/sbin/onekvm-reset-hid ""\nkvmd ALL=(root) NOPASSWD: ONEKVM_BUTTONS\n'
UNIT = "[Unit]\nDescription=x\n\n[Service]\nType=simple\nExecStart=/usr/local/bin/onekvm watchdog\n\n[Install]\nWantedBy=multi-user.target\n"
BIN = "#!/usr/bin/python3 -IS\nimport sys\n"


def entry(path, content, check, mode="0644", **extra):
    return dict(path=path, content=content, check=check, mode=mode, present=True, **extra)


def good_files():
    return {
        "gpio": entry("/etc/kvmd/override.d/gpio.yaml", json.dumps(GPIO), "kvmd", data=GPIO),
        "sudoers": entry("/etc/sudoers.d/onekvm", SUDOERS, "visudo", "0440"),
        "watchdog_config": entry("/etc/onekvm/watchdog.json", json.dumps({"interval": 5, "ladder": ["restart_streamer"]}), "watchdog-config"),
        "watchdog_unit": entry("/etc/systemd/system/onekvm-watchdog.service", UNIT, "systemd-unit"),
        "bin": entry("/usr/local/bin/onekvm", BIN, "script", "0755"),
        "reset_hid": entry("/usr/local/sbin/onekvm-reset-hid", "#!/bin/sh\nset -eu\nexit 0\n", "script", "0755"),
    }


def check(tmp_path, files, **args):
    result = run_module(render_check.main, dict(hosts=["box"], files={"box": files}, dest=str(tmp_path / "out"),
                                                junit=str(tmp_path / "junit.xml"), **args))
    assert not result.get("failed"), result
    return result


def problems(result):
    return {(p["file"], p["check"]): p["message"] for p in result["results"]["box"]["problems"]}


def test_good_files_pass_and_land_under_the_host(tmp_path):
    result = check(tmp_path, good_files())
    assert result["failed_hosts"] == [], result["summary"]
    assert (tmp_path / "out" / "box" / "etc" / "sudoers.d" / "onekvm").stat().st_mode & 0o777 == 0o440
    assert "box" in (tmp_path / "out" / "summary.md").read_text()


@pytest.mark.skipif(shutil.which("visudo") is None, reason="needs visudo (the sudo package; scripts/setup.sh installs it)")
def test_visudo_rejects_a_rule_it_cannot_parse(tmp_path):
    files = good_files()
    files["sudoers"]["content"] = "kvmd ALL=(root) NOPASSWD: onekvm-reset-hid\n"  # not a full path
    found = problems(check(tmp_path, files))
    assert "expected a fully-qualified path name" in found[("/etc/sudoers.d/onekvm", "visudo")]


def test_missing_visudo_is_a_failure_that_says_what_to_install(tmp_path):
    found = problems(check(tmp_path, good_files(), visudo="/nonexistent/visudo"))
    assert "install the sudo package" in found[("/etc/sudoers.d/onekvm", "visudo")]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_analyze_flags_a_key_systemd_would_ignore(tmp_path):
    files = good_files()
    files["watchdog_unit"]["content"] = UNIT.replace("Type=simple", "Type=simple\nRestart=sometimes")
    found = problems(check(tmp_path, files))
    assert "Failed to parse service restart specifier" in found[("/etc/systemd/system/onekvm-watchdog.service", "systemd-unit")]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_unit_whose_program_the_box_does_not_get_fails(tmp_path):
    files = good_files()
    files["bin"]["present"] = False
    found = problems(check(tmp_path, files))
    assert "/usr/local/bin/onekvm is not executable" in found[("/etc/systemd/system/onekvm-watchdog.service", "systemd-unit")]


def test_watchdog_config_is_judged_by_the_box_commands_check(tmp_path):
    files = good_files()
    files["watchdog_config"]["content"] = json.dumps({"interval": 5, "ladder": ["restart_streamer", "reboot"]})
    found = problems(check(tmp_path, files))
    message = found[("/etc/onekvm/watchdog.json", "watchdog-config")]
    assert "reboot" in message and str(tmp_path) not in message  # named by its path on the box


def test_a_view_naming_a_channel_not_in_the_scheme_fails(tmp_path):
    gpio = json.loads(json.dumps(GPIO))
    gpio["kvmd"]["gpio"]["view"]["table"].append(["ghost|Ghost"])
    files = good_files()
    files["gpio"] = entry("/etc/kvmd/override.d/gpio.yaml", json.dumps(gpio), "kvmd", data=gpio)
    assert "channel 'ghost', which is not in the scheme" in problems(check(tmp_path, files))[("/etc/kvmd/override.d/gpio.yaml", "kvmd")]


def test_a_file_that_loads_as_something_else_fails(tmp_path):
    files = good_files()
    # what YAML makes of an unquoted `yes`: a string in kvmd (shared domain facts), not the boolean the role meant
    files["gpio"]["content"] = json.dumps(GPIO).replace('"switch": false', '"switch": "no"')
    assert "loads as something else" in problems(check(tmp_path, files))[("/etc/kvmd/override.d/gpio.yaml", "kvmd")]


@pytest.mark.parametrize("path", ["/etc/../../tmp/evil", "etc/sudoers.d/onekvm", "/etc/sudoers.d/./onekvm"])
def test_paths_outside_the_host_directory_are_refused(tmp_path, path):
    files = good_files()
    files["sudoers"]["path"] = path
    result = check(tmp_path, files)
    assert result["failed_hosts"] == ["box"]
    assert not (tmp_path / "tmp").exists() and not (tmp_path / "out" / "tmp").exists()


def test_host_name_that_is_no_directory_name_is_refused(tmp_path):
    result = run_module(render_check.main, dict(hosts=["../x"], dest=str(tmp_path / "out")))
    assert result["failed"] and "rename the host" in result["msg"]


def test_role_failure_is_reported_as_one_line_naming_the_button(tmp_path):
    error = {"task": "Check the GPIO buttons and render the files the role writes",
             "msg": "Task failed: Finalization of task args for 'ansible.builtin.set_fact' failed: Error while resolving value "
                    "for '_onekvm_gpio': The filter plugin 'onekvm.fleet.kvmd_gpio' failed: kvmd_gpio: button 'a b' (item 1): "
                    "name 'a b' does not match kvmd's pattern. Use letters."}
    result = check(tmp_path, {}, errors={"box": error})
    assert result["summary"][1] == ("FAILED box: Check the GPIO buttons and render the files the role writes: kvmd_gpio: button 'a b' "
                                    "(item 1): name 'a b' does not match kvmd's pattern. Use letters.")
    failures = [c for c in ET.parse(tmp_path / "junit.xml").getroot().iter("testcase") if c.find("failure") is not None]
    assert [c.get("classname") for c in failures] == ["box"]


def test_check_mode_leaves_no_files(tmp_path):
    result = run_module(render_check.main, dict(hosts=["box"], files={"box": good_files()}, dest=str(tmp_path / "out")),
                        check_mode=True)
    assert result["changed"] is False and not (tmp_path / "out").exists()
