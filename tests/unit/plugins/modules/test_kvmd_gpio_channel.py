# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""kvmd_gpio_channel and kvmd_gpio_info against the kvmd stand-in's API on a real unix socket.

The stand-in (tests/testbed/kvmd_standin.py) answers GET /gpio, POST /gpio/pulse|switch and
checks X-KVMD-User/X-KVMD-Passwd against an htpasswd file as kvmd does (its sources are named
there: kvmd/apps/kvmd/api/ugpio.py, api/auth.py, ugpio.py, htserver.py)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from ansible_collections.onekvm.fleet.plugins.modules import kvmd_gpio_channel, kvmd_gpio_info
from ansible_collections.onekvm.fleet.tests.testbed import kvmd_standin
from ansible_collections.onekvm.fleet.tests.unit.plugins.modules.module_runner import run_module

# "admin" as kvmd ships it (pikvm/kvmd configs/kvmd/htpasswd), "watchdog"/"s3cret" written by
# passlib 1.7.4's ldap_salted_sha512, the scheme kvmd-htpasswd uses (kvmd/crypto.py)
HTPASSWD = (
    "admin:{SSHA512}3zSmw/L9zIkpQdX5bcy6HntTxltAzTuGNP6NjHRRgOcNZkA0K+Lsrj3QplO9Gr3BA5MYVVki9rAVnFNCcIdtYC6FkLJWCmHs\n"
    "fleet:{SSHA256}w0b6XMLUkdd+n6GsGYHx98CRZ9h/l1d8iMK82venNR/ufa9VqnUu5Q==\n"  # password "x"
)


@pytest.fixture
def kvmd(tmp_path):
    """The stand-in's API serving a cmd button, a long pulse, a switch-only relay and a lamp."""
    marker = tmp_path / "presses"
    script = tmp_path / "press.sh"
    script.write_text("#!/bin/sh\necho pressed >> %s\n" % marker)
    os.chmod(str(script), 0o755)
    gpio = {
        "drivers": {"press": {"type": "cmd", "cmd": [str(script)]}, "relay": {"type": "hidrelay"},
                    "lamp": {"type": "cmdret", "cmd": ["/bin/true"]}},
        "scheme": {
            "toggle_switch": {"driver": "press", "pin": 0, "mode": "output", "switch": False,
                              "pulse": {"delay": 0.2, "min_delay": 0.1, "max_delay": 0.3}},
            "power_long": {"driver": "press", "pin": 0, "mode": "output", "switch": False, "pulse": {"delay": 5}},
            "relay1": {"driver": "relay", "pin": 0, "mode": "output", "switch": True, "pulse": False},
            "led": {"driver": "lamp", "pin": 0, "mode": "input"},
        },
        "view": {"table": [["toggle_switch", "power_long", "relay1", "led"]]},
    }
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(HTPASSWD)
    sock = str(tmp_path / "kvmd.sock")
    api = kvmd_standin.Api(kvmd_standin.Gpio(gpio), None, path=sock, auth=kvmd_standin.Auth(str(htpasswd)))
    ready = threading.Event()
    threading.Thread(target=api.serve, args=(ready,), daemon=True).start()
    assert ready.wait(5)
    api.marker = marker
    api.sock = sock
    return api


def presses(api):
    return api.marker.read_text().count("pressed") if api.marker.exists() else 0


def channel(api, check_mode=False, user="admin", password="admin", **args):
    args = dict(args, socket=api.sock, user=user, password=password)
    return run_module(kvmd_gpio_channel.main, args, check_mode=check_mode)


def test_a_pulse_presses_the_button_with_the_delay_kvmd_sends(kvmd):
    result = channel(kvmd, channel="toggle_switch", action="pulse", delay=9)
    assert not result.get("failed"), result
    assert result["changed"] is True and result["delay"] == 0.3  # 9 clamped to max_delay, as ugpio.py does
    assert presses(kvmd) == 1
    result = channel(kvmd, channel="power_long", action="pulse")
    assert result["delay"] == 0.1 and presses(kvmd) == 2  # kvmd -m says delay 5; kvmd sends 0.1


def test_check_mode_asks_kvmd_but_presses_nothing(kvmd):
    result = channel(kvmd, check_mode=True, channel="toggle_switch", action="pulse")
    assert result["changed"] is True and result["delay"] == 0.2
    time.sleep(0.3)
    assert presses(kvmd) == 0
    assert channel(kvmd, check_mode=True, channel="ghost", action="pulse")["failed"]  # discovery errors still surface


def test_an_unknown_channel_is_refused_by_name_and_nothing_is_pressed(kvmd):
    result = channel(kvmd, channel="ghost", action="pulse")
    assert result["failed"] and result["error"] == "NotFound"
    assert "has no GPIO output channel 'ghost'" in result["msg"]
    assert "power_long, relay1, toggle_switch" in result["msg"]  # what it does have
    assert presses(kvmd) == 0


@pytest.mark.parametrize("user, password, says", [
    ("admin", "Pa55-nope", "refused the credentials (HTTP 403)"),
    ("nobody", "admin", "refused the credentials (HTTP 403)"),
    ("", "", "wants credentials for GET /gpio (HTTP 401)"),
    ("Admin Smith", "admin", "refused GET /gpio: ValidatorError"),  # valid_user: a 400 before any password check
])
def test_wrong_credentials_are_a_clear_error_and_press_nothing(kvmd, user, password, says):
    result = channel(kvmd, user=user, password=password, channel="toggle_switch", action="pulse")
    assert result["failed"] and says in result["msg"], result
    assert "Pa55-nope" not in str(result) and presses(kvmd) == 0  # the password is never echoed


def test_a_unix_peer_kvmd_trusts_needs_no_credentials(kvmd):
    kvmd.auth.usc_uids = {os.geteuid()}  # kvmd 4.197 kvmd.auth.usc.kvmd_users: [root]
    result = channel(kvmd, user="", password="", channel="toggle_switch", action="pulse")
    assert result["changed"] and presses(kvmd) == 1


def test_switch_is_idempotent_on_a_channel_that_reads_back(kvmd):
    first = channel(kvmd, channel="relay1", action="switch", state=True)
    assert first["changed"] is True and first["previous_state"] is False and first["state"] is True
    again = channel(kvmd, channel="relay1", action="switch", state=True)
    assert again["changed"] is False and again["state"] is True
    predicted = channel(kvmd, check_mode=True, channel="relay1", action="switch", state=False)
    assert predicted["changed"] is True and predicted["state"] is False
    assert channel(kvmd, channel="relay1", action="switch", state=True)["changed"] is False  # check mode left it on


@pytest.mark.parametrize("args, says", [
    ({"channel": "relay1", "action": "pulse"}, "'relay1' does not pulse"),
    ({"channel": "toggle_switch", "action": "switch", "state": True}, "'toggle_switch' does not switch"),
    ({"channel": "led", "action": "pulse"}, "is an input"),
    ({"channel": "a&b=c", "action": "pulse"}, "is not a kvmd GPIO channel name"),
    ({"channel": "toggle_switch", "action": "pulse", "delay": float("nan")}, "delay must be a number from 0 to 3600"),
    ({"channel": "toggle_switch", "action": "pulse", "state": True}, "state is only for action=switch"),
    ({"channel": "relay1", "action": "switch"}, "state"),
])
def test_what_the_channel_cannot_do_is_refused_before_acting(kvmd, args, says):
    result = channel(kvmd, **args)
    assert result["failed"] and says in result["msg"], result
    assert presses(kvmd) == 0


def test_kvmd_not_running(tmp_path):
    result = run_module(kvmd_gpio_channel.main, {"socket": str(tmp_path / "none.sock"), "channel": "a", "action": "pulse"})
    assert result["failed"] and "kvmd is not running" in result["msg"]


def test_info_reports_the_running_model_with_effective_pulses(kvmd):
    result = run_module(kvmd_gpio_info.main, {"socket": kvmd.sock, "user": "fleet", "password": "x"}, check_mode=True)
    assert not result.get("failed") and result["changed"] is False
    assert result["outputs"]["power_long"]["pulse"]["delay"] == 0.1
    assert set(result["outputs"]) == {"toggle_switch", "power_long", "relay1"}
    assert result["gpio_state"]["inputs"]["led"]["state"] is True
    assert "password" not in result
