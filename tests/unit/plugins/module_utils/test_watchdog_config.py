# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Config validation: every mistake gets a message naming the field and what to write."""

from __future__ import annotations

import json

import pytest

from ansible_collections.onekvm.fleet.plugins.module_utils._errors import InvalidArgument, NotFound
from ansible_collections.onekvm.fleet.plugins.module_utils._watchdog_config import (
    DEFAULT_LADDER, load_config, parse_config)
from ansible_collections.onekvm.fleet.plugins.module_utils._watchdog_probes import default_probes

BASE = {"dongle": {"id": "534D:2109", "port": "1-1.2"}}


def with_(**changes):
    raw = json.loads(json.dumps(BASE))
    raw.update(changes)
    return raw


def test_defaults_fill_in():
    config = parse_config(BASE)
    assert config.interval == 5.0 and config.grace == 10.0
    assert config.ladder == DEFAULT_LADDER
    assert config.dongle == {"id": "534d:2109", "port": "1-1.2"}  # ids are compared lower-case
    assert config.ustreamer["socket"] == "/run/kvmd/ustreamer.sock"
    assert list(default_probes(config)) == ["dongle", "video_node", "ustreamer"]


def test_hid_probe_only_when_enabled():
    config = parse_config(with_(hid={"enabled": True, "adapter_port": "1-1.1"}))
    assert list(default_probes(config))[-1] == "hid"


@pytest.mark.parametrize("raw, needle", [
    ([], "must be a JSON object"),
    (with_(intervall=3), "unknown key intervall"),
    (with_(dongle={"idd": "x"}), "unknown key dongle.idd"),
    (with_(interval=0), "interval must be a number from 0.5 to 3600"),
    (with_(interval="5"), "interval must be a number"),
    (with_(interval=True), "interval must be a number"),
    (with_(grace=-1), "grace must be a number from 0 to 86400"),
    (with_(waits={"ioctl": -2}), "waits.ioctl must be a number from 0 to 3600"),
    (with_(max_actions_per_hour=0), "max_actions_per_hour must be a whole number"),
    (with_(max_actions_per_hour=2.5), "max_actions_per_hour must be a whole number"),
    (with_(backoff=100, backoff_max=10), "backoff_max (10.0) must not be smaller"),
    (with_(dongle={"id": "534d-2109"}), "dongle.id must look like 534d:2109"),
    (with_(dongle={"port": "usb1"}), "dongle.port must look like 1-1.2"),
    (with_(dongle={}), "USB resets but no dongle is configured"),
    (with_(ladder=["ioctl", "reboot"]), "ladder step 'reboot' is unknown"),
    (with_(ladder=["ioctl", "ioctl"]), "names a step twice"),
    (with_(ladder=[]), "at least one step"),
    (with_(ladder="ioctl"), "ladder must be a list of strings"),
    (with_(hid={"enabled": "yes"}), "hid.enabled must be true or false"),
    (with_(hid={"enabled": True, "device": "ttyUSB0"}), "hid.device must be an absolute path"),
    (with_(hid={"enabled": True}), "set hid.adapter_id and/or hid.adapter_port"),
    (with_(state_file="watchdog.json"), "state_file must be an absolute path"),
    (with_(state_file=""), "state_file must be set"),
    (with_(metrics_file="/tmp/x.txt"), "must end in .prom"),
    (with_(streamer_patterns=[" "]), "streamer_patterns must list"),
    (with_(ustreamer={"timeout": 0}), "ustreamer.timeout must be a number from 0.1 to 60"),
    ({"dongle": {}, "video_node": "", "ustreamer": {"enabled": False}, "ladder": ["restart_streamer"]},
     "every probe is disabled"),
])
def test_invalid_configs_are_named(raw, needle):
    with pytest.raises(InvalidArgument) as info:
        parse_config(raw)
    assert needle in info.value.msg


def test_load_config_names_the_file(tmp_path):
    path = tmp_path / "watchdog.json"
    path.write_text('{"interval": 2, "grace": 4, "dongle": {"port": "1-1.2"}}')
    assert load_config(str(path)).interval == 2.0
    path.write_text('{"interval": 2,}')
    with pytest.raises(InvalidArgument) as info:
        load_config(str(path))
    assert str(path) in info.value.msg and "not valid JSON" in info.value.msg
    path.write_text('{"interval": -2, "dongle": {"port": "1-1.2"}}')
    with pytest.raises(InvalidArgument) as info:
        load_config(str(path))
    assert info.value.msg.startswith("watchdog config %s: interval must be" % path)
    with pytest.raises(NotFound) as info:
        load_config(str(tmp_path / "absent.json"))
    assert "render it with the onekvm.fleet.onekvm role" in info.value.msg
