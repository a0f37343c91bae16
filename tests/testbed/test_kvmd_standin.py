# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The kvmd stand-in against kvmd's own rules (sources named in kvmd_standin.py): both
config layouts, the cmd checks of each kvmd version, the GPIO model, and the service's
HID polling and button commands."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time

import pytest
import yaml

from ansible_collections.onekvm.fleet.tests.testbed import kvmd_standin as kvmd
from ansible_collections.onekvm.fleet.tests.testbed.ch9329_sim import Simulator

HERE = os.path.dirname(os.path.abspath(__file__))
ONE_KVM = os.path.join(HERE, "fixtures", "one-kvm")


def write(root, path, text):
    full = os.path.join(str(root), path.lstrip("/"))
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w") as f:
        f.write(text)
    return full


@pytest.fixture
def pikvm(tmp_path):
    write(tmp_path, kvmd.UPSTREAM_MAIN, "kvmd:\n    gpio:\n        view:\n            table: []\n")
    write(tmp_path, kvmd.OVERRIDE, "{}\n")
    os.makedirs(os.path.join(str(tmp_path), kvmd.OVERRIDE_DIR.lstrip("/")))
    return tmp_path


@pytest.fixture
def one_kvm(tmp_path):
    root = tmp_path / "root"
    shutil.copytree(ONE_KVM, str(root))
    os.rename(str(root / "etc/kvmd/main.yaml.in"), str(root / "etc/kvmd/main.yaml"))
    os.makedirs(str(root / "etc/kvmd/override.d"))
    return root


def gpio_file(buttons_yaml):
    return "kvmd:\n    gpio:\n" + "".join("        " + line + "\n" for line in buttons_yaml.strip().splitlines())


def test_pikvm_layout_merges_override_d_whatever_the_suffix_then_override_yaml(pikvm):
    write(pikvm, "/etc/kvmd/override.d/gpio.yaml.bak", "kvmd: {gpio: {view: {header: {title: Old}}}, x: 1}\n")
    write(pikvm, "/etc/kvmd/override.d/gpio.yaml", "kvmd: {gpio: {view: {header: {title: New}}}}\n")
    write(pikvm, kvmd.OVERRIDE, "kvmd: {x: 2, flag: yes}\n")
    config = kvmd.load_config(str(pikvm))
    assert kvmd.flavour(str(pikvm)) == "pikvm"
    assert config["kvmd"]["gpio"]["view"]["header"]["title"] == "Old"  # sorted: gpio.yaml < gpio.yaml.bak
    assert config["kvmd"]["x"] == 2 and config["kvmd"]["flag"] == "yes"  # yes is a string to kvmd


def test_one_kvm_layout_loads_main_yaml_with_its_includes(one_kvm):
    config = kvmd.load_config(str(one_kvm))
    assert kvmd.flavour(str(one_kvm)) == "one-kvm"
    assert "override" not in config
    assert config["logging"]["version"] == 1 and config["kvmd"]["auth"] == {"enabled": True}
    assert config["kvmd"]["hid"]["type"] == "ch9329"  # override.yaml merged over main.yaml
    gpio = kvmd.check_config(config, str(one_kvm))
    assert gpio["drivers"]["hdmi_a"]["cmd"] == ["/etc/kvmd/hdmi-input.sh", "1"]  # a number becomes a string


def test_one_kvm_refuses_a_cmd_whose_program_does_not_exist_pikvm_does_not(one_kvm, pikvm):
    text = gpio_file("drivers: {b: {type: cmd, cmd: [/usr/local/bin/not-yet, 1]}}\n"
                     "scheme: {b: {driver: b, pin: 0, mode: output, switch: false}}")
    write(one_kvm, "/etc/kvmd/override.d/gpio.yaml", text)
    with pytest.raises(kvmd.ConfigError, match=r"'/usr/local/bin/not-yet' is not a valid command entry point: \[Errno 2\]"):
        kvmd.checked(str(one_kvm))
    write(pikvm, "/etc/kvmd/override.d/gpio.yaml", text)
    gpio = kvmd.checked(str(pikvm))[1]
    assert gpio["drivers"]["b"]["cmd"] == ["/usr/local/bin/not-yet", "1"]


@pytest.mark.parametrize("text, message", [
    ("drivers: {b: {type: cmd, cmd: [bin/x]}}\nscheme: {b: {driver: b, pin: 0, mode: output}}", "not an absolute path"),
    ("drivers: {b: {type: cmd, cmd: [/bin/true]}}\nscheme: {b: {driver: b, pin: 0, mode: input}}", "not one of the driver's modes"),
    ("drivers: {b: {type: cmd, cmd: [/bin/true]}}\nscheme: {b: {driver: b, pin: 0}}", "not one of the driver's modes"),
    ("scheme: {b: {driver: nope, pin: 0, mode: output}}", "unknown driver 'nope'"),
    ("drivers: {b: {type: cmd, cmd: [/bin/true]}}\nscheme: {b: {driver: b, pin: 0, mode: output, switch: no}}", "is not a bool"),
    ("drivers: {b: {type: cmd, cmd: [/bin/true]}}\nscheme: {b: {driver: b, pin: 0, mode: output, pulse: {max_delay: 0.05}}}",
     "max_delay: 0.05 is not a float >= 0.1"),
])
def test_configs_kvmd_rejects(pikvm, text, message):
    write(pikvm, "/etc/kvmd/override.d/gpio.yaml", gpio_file(text))
    with pytest.raises(kvmd.ConfigError, match=message):
        kvmd.checked(str(pikvm))


def test_model_follows_ugpio(pikvm):
    write(pikvm, "/etc/kvmd/override.d/gpio.yaml", gpio_file("""
drivers: {c: {type: cmd, cmd: [/bin/true]}, r: {type: cmdret, cmd: [/bin/true]}, h: {type: hidrelay, device: /dev/hidraw0}}
scheme:
    tap: {driver: c, pin: 0, mode: output, switch: false}
    long: {driver: c, pin: 0, mode: output, switch: false, pulse: {delay: 5}}
    fixed: {driver: c, pin: 0, mode: output, switch: false, pulse: {delay: 5, max_delay: 5}}
    const: {driver: h, pin: 0, mode: output, switch: false, pulse: false}
    sw: {driver: h, pin: 1, mode: output, pulse: false}
    led: {driver: r, pin: 0, mode: input}
view:
    header: {title: Machines}
    table:
        - ["#Text", "tap", "long|Long", "fixed|confirm,hide|Fixed", "const|Const", "ghost|Ghost"]
        - []
        - ["sw|confirm|Switch", "led|purple", "led|red"]
"""))
    model = kvmd.gpio_model(kvmd.checked(str(pikvm))[1])
    outputs = model["scheme"]["outputs"]
    assert outputs["tap"]["pulse"] == {"delay": 0.1, "min_delay": 0.1, "max_delay": 0.1}
    assert outputs["long"]["pulse"]["delay"] == 0.1  # kvmd -m says 5, kvmd sends 0.1
    assert outputs["fixed"]["pulse"]["delay"] == 5.0
    assert "const" not in outputs and outputs["sw"]["switch"] is True and outputs["sw"]["pulse"]["delay"] == 0
    assert model["view"]["header"]["title"] == [{"type": "label", "text": "Machines"}]
    row, sep, row2 = model["view"]["table"]
    assert [item.get("channel", item.get("text")) for item in row] == ["Text", "tap", "long", "fixed"]  # unknown dropped
    assert row[1]["text"] == "Click" and row[3] == {"type": "output", "channel": "fixed", "confirm": True, "hide": True, "text": "Fixed"}
    assert sep is None
    assert [item["color"] for item in row2[1:]] == ["green", "red"]
    drawn = kvmd.web_ui(model)
    assert drawn[0][1] == {"channel": "tap", "confirm": False, "button": "Click", "pulse": 0.1, "hide": False}
    assert drawn[2][0] == {"channel": "sw", "confirm": True, "switch": "on/off"}  # no text: gpio.js draws none


def test_kvmd_m_and_the_model_on_the_command_line(one_kvm):
    # the command line reads the real paths; here the library is run against the fixture tree
    config, gpio = kvmd.checked(str(one_kvm))
    dumped = yaml.safe_load(yaml.safe_dump(config))
    assert dumped["kvmd"]["gpio"]["view"]["header"]["title"] == "Extras"
    model = kvmd.gpio_model(gpio)
    assert len(model["scheme"]["outputs"]) == 6
    assert [item["text"] for row in model["view"]["table"] if row for item in row if item["type"] == "output"] == \
        ["Press", "Press", "Press", "Wake", "Select", "Select"]


def test_service_rejects_bad_arguments():
    res = subprocess.run([sys.executable, kvmd.__file__, "--bogus"], capture_output=True, text=True, check=False)
    assert res.returncode == 2 and "only `kvmd -m`" in res.stderr


def test_hid_loop_holds_the_port_and_polls_get_info_about_every_tenth_second():
    with Simulator.on_pty() as sim:
        hid = kvmd.Hid(sim.port, 9600, 0.3)
        threading.Thread(target=hid.run, daemon=True).start()
        time.sleep(2.0)
        polls = [entry for entry in sim.log if entry[1] == "57 ab 00 01 00 03"]
        hid.stopped.set()
        assert hid.online
        assert 5 <= len(polls) <= 20, len(polls)  # ~0.1 s apart plus the wire time at 9600 baud (a 2 s back-off gives 1)


def test_hid_loop_goes_offline_and_backs_off_on_a_silent_chip():
    with Simulator.on_pty() as sim:
        sim.set_faults(silent=True)
        hid = kvmd.Hid(sim.port, 9600, 0.3)
        threading.Thread(target=hid.run, daemon=True).start()
        time.sleep(1.5)
        hid.stopped.set()
        assert not hid.online
        assert len([e for e in sim.log if e[1] == "57 ab 00 01 00 03"]) == 1  # then 2 s of sleep


def test_a_pulse_runs_the_command_as_the_services_child_and_waits(tmp_path):
    marker = tmp_path / "ran"
    script = write(tmp_path, "/press.sh", "#!/bin/sh\nsleep 0.3\necho $PPID > %s\n" % marker)
    os.chmod(script, 0o755)
    gpio = {"drivers": {"b": {"type": "cmd", "cmd": [script]}},
            "scheme": {"b": {"driver": "b", "pin": 0, "mode": "output", "switch": False,
                             "pulse": {"delay": 0.2, "min_delay": 0.1, "max_delay": 0.2}}}, "view": {"table": [["b"]]}}
    api = kvmd.Api(kvmd.Gpio(gpio), None)
    start = time.monotonic()
    assert api.route("POST", "/gpio/pulse", {"channel": "b", "wait": "1", "delay": "9"}) == (200, {})
    elapsed = time.monotonic() - start
    assert marker.read_text().strip() == str(os.getpid())  # the command's parent is the service itself
    assert 0.5 <= elapsed < 2, elapsed  # the command (0.3 s), then the clamped delay (0.2 s, not 9)
    assert api.route("POST", "/gpio/pulse", {"channel": "nope"})[0] == 400
    status, result = api.route("GET", "/gpio", {})
    assert status == 200 and result["model"]["scheme"]["outputs"]["b"]["pulse"]["delay"] == 0.2


def test_auth_follows_each_kvmd_version(tmp_path, pikvm, one_kvm):
    """api/auth.py: X-KVMD-User must match the htpasswd (403, malformed name 400), else the unix peer must be a
    kvmd.auth.usc user (401): kvmd 4.197 trusts root (kvmd_users), One-KVM's 4.94 nobody by default."""
    htpasswd = write(tmp_path, "/htpasswd", "admin:{SSHA512}3zSmw/L9zIkpQdX5bcy6HntTxltAzTuGNP6NjHRRgOcNZkA0K+Lsrj3Q"
                                            "plO9Gr3BA5MYVVki9rAVnFNCcIdtYC6FkLJWCmHs\n")
    upstream = kvmd.Auth.from_config({"kvmd": {"auth": {"internal": {"file": htpasswd}}}}, "pikvm")
    fork = kvmd.Auth.from_config({"kvmd": {"auth": {"internal": {"file": htpasswd}}}}, "one-kvm")
    assert upstream.check({}, 0) is None and fork.check({}, 0) == (401, "UnauthorizedError")
    assert fork.check({"x-kvmd-user": "admin", "x-kvmd-passwd": "admin"}, 1000) is None
    assert upstream.check({"x-kvmd-user": "admin", "x-kvmd-passwd": "nope"}, 0) == (403, "ForbiddenError")  # no usc fallback
    assert fork.check({"x-kvmd-user": "Admin!", "x-kvmd-passwd": "admin"}, 0) == (400, "ValidatorError")
    assert kvmd.Auth.from_config({"kvmd": {"auth": {"enabled": False}}}, "pikvm") is None


def test_switch_and_errors_are_shaped_like_kvmds():
    gpio = {"drivers": {"c": {"type": "cmd", "cmd": ["/bin/true"]}, "h": {"type": "hidrelay"}},
            "scheme": {"b": {"driver": "c", "pin": 0, "mode": "output", "switch": False},
                       "sw": {"driver": "h", "pin": 1, "mode": "output", "pulse": False}}, "view": {"table": [["b", "sw"]]}}
    api = kvmd.Api(kvmd.Gpio(gpio), None)
    assert api.route("POST", "/gpio/switch", {"channel": "b", "state": "1", "wait": "1"}) == \
        (400, {"error": "GpioSwitchNotSupported", "error_msg": "This GPIO channel does not support switching"})
    assert api.route("POST", "/gpio/pulse", {"channel": "sw"})[1]["error"] == "GpioPulseNotSupported"
    assert api.route("POST", "/gpio/switch", {"channel": "sw", "state": "maybe"})[1]["error"] == "ValidatorError"
    assert api.route("POST", "/gpio/switch", {"channel": "sw", "state": "YES", "wait": "1"}) == (200, {})
    assert api.route("GET", "/gpio", {})[1]["state"]["outputs"]["sw"]["state"] is True
    assert api.route("POST", "/gpio/pulse", {"channel": "ghost"})[1]["error"] == "GpioChannelNotFoundError"
    assert api.route("GET", "/nope", {})[0] == 404


# ---- the streamer command (kvmd/tools.py build_cmd) ----------------------------------------
def test_streamer_cmd_is_cmd_without_the_removed_items_then_the_appended_ones(pikvm):
    write(pikvm, kvmd.UPSTREAM_MAIN, "kvmd:\n    streamer:\n        cmd: [/usr/bin/ustreamer, --device=/dev/video0, --persistent,"
                                     " --device=/dev/video0, 5]\n")
    write(pikvm, "/etc/kvmd/override.d/streamer.yaml",
          "kvmd: {streamer: {cmd_remove: [--device=/dev/video0, --persistent=1], cmd_append: [--device=/dev/kvmd-video]}}\n")
    # every exact match goes ("--persistent=1" is not "--persistent"), items become strings, the appended come last
    assert kvmd.streamer_cmd(kvmd.load_config(str(pikvm))) == [
        "/usr/bin/ustreamer", "--persistent", "5", "--device=/dev/kvmd-video"]


def test_one_kvm_points_the_streamer_at_video0_and_an_override_d_edit_survives_its_override_yaml(one_kvm):
    config = kvmd.load_config(str(one_kvm))
    assert "--device=/dev/video0" in kvmd.streamer_cmd(config)  # override.yaml replaced main.yaml's whole cmd
    write(one_kvm, "/etc/kvmd/override.d/streamer.yaml",
          "kvmd: {streamer: {cmd_remove: [--device=/dev/video0], cmd_append: [--device=/dev/kvmd-video]}}\n")
    cmd = kvmd.streamer_cmd(kvmd.load_config(str(one_kvm)))
    assert [item for item in cmd if item.startswith("--device")] == ["--device=/dev/kvmd-video"] and "--unix={unix}" in cmd


def test_streamer_options_are_read_like_kvmd_reads_them(pikvm):
    # valid_options: a string is split on commas and tabs (kvmd/validators/os.py)
    write(pikvm, kvmd.OVERRIDE, "kvmd: {streamer: {cmd: '/usr/bin/ustreamer,--device=/dev/video0', "
                                "cmd_remove: --device=/dev/video0, cmd_append: '--device=/dev/kvmd-video,\t--slowdown'}}\n")
    assert kvmd.streamer_cmd(kvmd.load_config(str(pikvm))) == ["/usr/bin/ustreamer", "--device=/dev/kvmd-video", "--slowdown"]


@pytest.mark.parametrize("streamer, message", [
    ("{cmd_append: {a: 1}}", "kvmd/streamer/cmd_append': a list of strings"),
    ("{cmd_remove: [null]}", "kvmd/streamer/cmd_remove': a list of strings"),
    ("{cmd: []}", "kvmd/streamer/cmd': a command with an absolute entry point"),
    ("{cmd: [ustreamer]}", "kvmd/streamer/cmd': a command with an absolute entry point"),
])
def test_streamer_parts_kvmd_refuses(pikvm, streamer, message):
    write(pikvm, kvmd.OVERRIDE, "kvmd: {streamer: %s}\n" % streamer)
    with pytest.raises(kvmd.ConfigError, match=message):
        kvmd.streamer_cmd(kvmd.load_config(str(pikvm)))


def test_the_streamer_runs_the_command_kvmd_builds_with_its_placeholders_filled_in(pikvm):
    # kvmd formats each part with {unix} and {process_name_prefix} (kvmd/apps/kvmd/streamer/__init__.py)
    write(pikvm, kvmd.UPSTREAM_MAIN, "kvmd:\n    streamer:\n        cmd: [/usr/bin/ustreamer, --device=/dev/video0, '--unix={unix}',"
          " '--process-name-prefix={process_name_prefix}']\n")
    write(pikvm, "/etc/kvmd/override.d/streamer.yaml",
          "kvmd: {streamer: {cmd_remove: [--device=/dev/video0], cmd_append: [--device=/dev/kvmd-video]}}\n")
    cmd, title = kvmd.streamer_run_cmd(kvmd.load_config(str(pikvm)))
    assert cmd == ["/usr/bin/ustreamer", "--unix=/run/kvmd/ustreamer.sock", "--process-name-prefix=kvmd/streamer",
                   "--device=/dev/kvmd-video"]
    assert title == "kvmd/streamer: /usr/bin/ustreamer"
    write(pikvm, kvmd.OVERRIDE, "kvmd: {streamer: {unix: /run/kvmd/other.sock, process_name_prefix: box/streamer}}\n")
    cmd, title = kvmd.streamer_run_cmd(kvmd.load_config(str(pikvm)))
    assert cmd[1] == "--unix=/run/kvmd/other.sock" and title == "box/streamer: /usr/bin/ustreamer"


def test_a_placeholder_kvmd_does_not_know_fails_the_streamer_start(pikvm):
    write(pikvm, kvmd.UPSTREAM_MAIN, "kvmd:\n    streamer:\n        cmd: [/usr/bin/ustreamer, '--sink={nothing}']\n")
    with pytest.raises(kvmd.ConfigError, match="Can't start streamer: bad placeholder 'nothing'"):
        kvmd.streamer_run_cmd(kvmd.load_config(str(pikvm)))
