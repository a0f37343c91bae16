# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Hostile input to the box command and the core: a clear error naming it, never exit 70.

Each case is an input someone who wants root or a crash might give: numbers that are not
finite or out of range, paths that point elsewhere (links, FIFOs, devices, a file where a
directory should be), configs nested until the parser gives up, options that exist for
tests given through sudo. The command must answer with exit 2 (or 3/7 where the README's
table says so: not found, missing facility), name what was wrong, print no traceback and
touch nothing.
"""

from __future__ import annotations

import json
import math
import os

import pytest

from ansible_collections.onekvm.fleet.plugins.module_utils import _ch9329_config, _watchdog_actions
from ansible_collections.onekvm.fleet.plugins.module_utils._errors import InvalidArgument
from ansible_collections.onekvm.fleet.plugins.module_utils._watchdog_config import parse_config
from ansible_collections.onekvm.fleet.tests.support.boxpkg import run_cli

SUDO = {"SUDO_UID": "1000", "SUDO_USER": "kvmd"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Hostile files, made once: a plain file, a FIFO, a symlink to a good config, nested JSON."""
    root = tmp_path_factory.mktemp("hostile")
    paths = {name: str(root / name) for name in ("file", "fifo", "link", "deep", "deep_value", "list", "good", "huge")}
    with open(paths["file"], "w") as handle:
        handle.write("x")
    os.mkfifo(paths["fifo"])
    with open(paths["good"], "w") as handle:
        json.dump({"dongle": {"id": "534d:2109"}}, handle)
    os.symlink(paths["good"], paths["link"])
    with open(paths["deep"], "w") as handle:
        handle.write("[" * 100000 + "]" * 100000)
    with open(paths["deep_value"], "w") as handle:
        handle.write('{"interval": ' + "{\"a\": " * 50000 + "1" + "}" * 50000 + "}")
    with open(paths["list"], "w") as handle:
        handle.write("[1, 2, 3]")
    with open(paths["huge"], "w") as handle:
        handle.write(" " * (2 * 1024 * 1024) + "{}")
    return paths


NUMBER_OPTIONS = [
    (["usb-reset", "534d:2109", "--dry-run"], "--timeout"),
    (["usb-reset", "534d:2109", "--dry-run"], "--lock-timeout"),
    (["usb-reset", "534d:2109", "--dry-run"], "--power-off-time"),
    (["relay", "pulse", "--port", "/dev/null"], "--duration"),
    (["relay", "on", "--port", "/dev/null"], "--lock-timeout"),
    (["ch9329-reset", "--port", "/dev/null"], "--timeout"),
    (["ch9329-reset", "--port", "/dev/null"], "--ready-timeout"),
    (["ch9329-reset", "--port", "/dev/null"], "--lock-timeout"),
    (["ch9329-info", "--port", "/dev/null"], "--timeout"),
]
BAD_NUMBERS = ["nan", "inf", "1e400", "-1", "1e9", "0x10", "five"]

CASES = [pytest.param(base + ["%s=%s" % (option, value)], 2, option, id="%s%s=%s" % (base[0], option, value))
         for base, option in NUMBER_OPTIONS for value in BAD_NUMBERS]
CASES += [
    pytest.param(["ch9329-reset", "--port", "/dev/null", "--retries=11"], 2, "--retries", id="retries-11"),
    pytest.param(["ch9329-reset", "--port", "/dev/null", "--retries=nan"], 2, "--retries", id="retries-nan"),
    pytest.param(["usb-list", "--sysfs-root", "{file}"], 7, "not a directory", id="usb-list-sysfs-root-file"),
    pytest.param(["usb-list", "--sysfs-root", "{fifo}"], 7, "not a directory", id="usb-list-sysfs-root-fifo"),
    pytest.param(["usb-list", "--sysfs-root", "/nonexistent"], 7, "does not exist", id="usb-list-sysfs-root-missing"),
    pytest.param(["watchdog", "--check-config", "--config", "{deep}"], 2, "nested too deeply", id="config-nested-array"),
    pytest.param(["watchdog", "--check-config", "--config", "{deep_value}"], 2, "nested too deeply", id="config-nested-value"),
    pytest.param(["watchdog", "--check-config", "--config", "/dev/zero"], 2, "not a regular file", id="config-dev-zero"),
    pytest.param(["watchdog", "--check-config", "--config", "{fifo}"], 2, "not a regular file", id="config-fifo"),
    pytest.param(["watchdog", "--check-config", "--config", "{link}"], 2, "symbolic link", id="config-symlink"),
    pytest.param(["watchdog", "--check-config", "--config", "{list}"], 2, "JSON object", id="config-list"),
    pytest.param(["watchdog", "--check-config", "--config", "{huge}"], 2, "larger than", id="config-huge"),
    pytest.param(["watchdog", "--check-config", "--config", "{file}"], 2, "not valid JSON", id="config-not-json"),
    pytest.param(["status", "--state-file", "/dev/zero"], 2, "not a regular file", id="status-dev-zero"),
    pytest.param(["status", "--state-file", "{fifo}"], 2, "not a regular file", id="status-fifo"),
]
SUDO_CASES = [
    pytest.param(["usb-list", "--sysfs-root", "/tmp"], "--sysfs-root", id="sudo-sysfs-root"),
    pytest.param(["usb-reset", "534d:2109", "--sysfs-root", "/tmp"], "--sysfs-root", id="sudo-reset-sysfs-root"),
    pytest.param(["usb-reset", "534d:2109", "--dev-root", "/tmp"], "--dev-root", id="sudo-dev-root"),
    pytest.param(["relay", "on", "--port", "/dev/null", "--state-file", "/etc/ld.so.preload"], "--state-file",
                 id="sudo-relay-state-file"),
    pytest.param(["relay", "off", "--port", "/dev/null", "--state-file", "/root/.bashrc"], "--state-file",
                 id="sudo-relay-state-file-2"),
]


@pytest.mark.parametrize("args, code, words", CASES)
def test_hostile_box_command_input_is_a_clear_error(files, args, code, words):
    args = [arg.format(**files) for arg in args]
    res = run_cli(*args, timeout=30)
    assert res.returncode == code, (res.returncode, res.stderr)
    assert words in res.stderr and "Traceback" not in res.stderr and "internal error" not in res.stderr, res.stderr


@pytest.mark.parametrize("args, option", SUDO_CASES)
def test_test_options_through_sudo_are_refused(args, option):
    res = run_cli(*args, env=SUDO)
    assert res.returncode == 2 and "%s is not honoured through sudo" % option in res.stderr, res.stderr


CONFIGS = [
    pytest.param({"interval": math.nan}, "interval", id="interval-nan"),
    pytest.param({"interval": math.inf}, "interval", id="interval-inf"),
    pytest.param({"grace": -math.inf}, "grace", id="grace-minus-inf"),
    pytest.param({"waits": {"ioctl": math.nan}}, "waits.ioctl", id="waits-nan"),
    pytest.param({"backoff": math.nan}, "backoff", id="backoff-nan"),
    pytest.param({"backoff_max": 1e400}, "backoff_max", id="backoff-max-inf"),
    pytest.param({"max_actions_per_hour": 1e400}, "max_actions_per_hour", id="max-actions-1e400"),
    pytest.param({"max_actions_per_hour": math.nan}, "max_actions_per_hour", id="max-actions-nan"),
    pytest.param({"lock_timeout": math.nan}, "lock_timeout", id="lock-timeout-nan"),
    pytest.param({"ustreamer": {"timeout": math.inf}}, "ustreamer.timeout", id="ustreamer-timeout-inf"),
    pytest.param({"streamer_patterns": ["/"]}, "streamer_patterns entry '/'", id="pattern-slash"),
    pytest.param({"streamer_patterns": ["ustreamer", " /u "]}, "streamer_patterns entry", id="pattern-short"),
]


@pytest.mark.parametrize("raw, words", CONFIGS)
def test_hostile_watchdog_config_is_refused_by_name(raw, words):
    with pytest.raises(InvalidArgument, match=words.replace(".", r"\.")):
        parse_config(dict({"dongle": {"id": "534d:2109"}}, **raw))


def test_the_restart_step_never_matches_init_us_or_our_parent(tmp_path):
    for pid, argv in ((1, "/sbin/init"), (os.getpid(), "/usr/bin/python3"), (os.getppid(), "/bin/sh"), (4242, "/usr/bin/ustreamer")):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cmdline").write_bytes(argv.encode() + b"\0")
    assert _watchdog_actions.find_processes(["/"], str(tmp_path)) == [4242]


def test_ch9329_custom_strings_false_with_usb_strings_is_refused():
    with pytest.raises(InvalidArgument, match="custom_strings: false .* usb_strings .*drop one"):
        _ch9329_config.validate_changes({"custom_strings": False, "usb_strings": {"product": "x"}})


def test_count_of_hostile_inputs():
    cli, core = len(CASES) + len(SUDO_CASES), len(CONFIGS) + 2
    print("adversarial suite: %d box-command calls, %d core calls" % (cli, core))  # quoted in the notes
    assert (cli, core) == (83, 14)
