# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The watchdog's One-KVM 0.2 capture probe against the One-KVM 0.2 simulator: One-KVM's own
GET /api/stream/status (src/video/streamer.rs states) decides; USB-class failures count against
the dongle, no signal and an idle streamer do not; One-KVM down or a refused login is no evidence."""

from __future__ import annotations

import json
import os
import threading

import pytest

from ansible_collections.onekvm.fleet.plugins.module_utils import _watchdog_config, _watchdog_probes
from ansible_collections.onekvm.fleet.plugins.module_utils._errors import InvalidArgument
from ansible_collections.onekvm.fleet.tests.testbed import onekvm2_sim as sim


@pytest.fixture
def one_kvm(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    node = tmp_path / "video0"
    node.write_text("")
    seed = sim.Box(str(data))
    seed.add_user("watchdog", "pw")
    seed.config["video"]["device"] = str(node)
    seed.save()
    server, state = sim.make_server(str(data), 0)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    creds = tmp_path / "onekvm2.json"
    creds.write_text(json.dumps({"user": "watchdog", "passwd": "pw"}))
    os.chmod(creds, 0o600)
    state.node, state.data = node, data
    state.settings = {"enabled": True, "url": "http://127.0.0.1:%d" % server.server_address[1],
                      "credentials": str(creds), "timeout": 2.0}
    yield state
    server.shutdown()
    server.server_close()


def config(settings, **extra):
    raw = {"video_node": "", "ustreamer": {"enabled": False}, "onekvm2": settings, "ladder": ["restart_streamer"]}
    raw.update(extra)
    return _watchdog_config.parse_config(raw)


def probe(one_kvm):
    return _watchdog_probes.probe_onekvm2(config(one_kvm.settings))


def test_streaming_is_healthy(one_kvm):
    ok, detail = probe(one_kvm)
    assert ok is True and "One-KVM streams" in detail, detail
    assert one_kvm.sessions == {}  # logged out after asking


@pytest.mark.parametrize("state", ["uvc_usb_error", "uvc_capture_stall", "error"])
def test_usb_class_failures_count_against_the_dongle(one_kvm, state):
    (one_kvm.data / sim.STREAM_STATE_FILE).write_text(state)
    ok, detail = probe(one_kvm)
    assert ok is False and state in detail


def test_device_gone_counts_against_the_dongle(one_kvm):
    one_kvm.node.unlink()
    assert probe(one_kvm) == (False, "One-KVM's capture is device_lost")


@pytest.mark.parametrize("state", ["no_signal", "no_cable", "ready"])
def test_no_signal_or_idle_is_no_evidence(one_kvm, state):
    (one_kvm.data / sim.STREAM_STATE_FILE).write_text(state)
    ok, detail = probe(one_kvm)
    assert ok is None and "no evidence" in detail


def test_one_kvm_down_or_login_refused_is_no_evidence(one_kvm, tmp_path):
    settings = dict(one_kvm.settings, url="http://127.0.0.1:9")
    ok, detail = _watchdog_probes.probe_onekvm2(config(settings))
    assert ok is None and "Cannot reach One-KVM" in detail
    creds = tmp_path / "wrong.json"
    creds.write_text(json.dumps({"user": "watchdog", "passwd": "nope"}))
    os.chmod(creds, 0o600)
    ok, detail = _watchdog_probes.probe_onekvm2(config(dict(one_kvm.settings, credentials=str(creds))))
    assert ok is None and "Invalid username or password" in detail
    os.chmod(creds, 0o644)
    ok, detail = _watchdog_probes.probe_onekvm2(config(dict(one_kvm.settings, credentials=str(creds))))
    assert ok is None and "One-KVM credentials" in detail and "mode 0600" in detail


def test_probe_is_in_the_capture_domain(one_kvm):
    cfg = config(one_kvm.settings)
    assert list(_watchdog_probes.domain_probes(cfg)["capture"]) == ["onekvm2"]


@pytest.mark.parametrize("settings, words", [
    ({"enabled": True, "credentials": "relative.json"}, "onekvm2.credentials must be the absolute path"),
    ({"enabled": True, "credentials": "/etc/x.json", "url": "file:///etc/passwd"}, "is not One-KVM's web address"),
    ({"enabled": True, "credentials": "/etc/x.json", "timeout": float("nan")}, "onekvm2.timeout"),
    ({"enabled": True, "credentials": "/etc/x.json", "port": 8080}, "unknown key onekvm2.port"),
])
def test_bad_settings_are_refused_by_name(settings, words):
    with pytest.raises(InvalidArgument) as err:
        config(settings)
    assert words in err.value.msg, err.value.msg
