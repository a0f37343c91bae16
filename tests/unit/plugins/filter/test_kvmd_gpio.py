# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The kvmd_gpio filters: what kvmd sees for a button list, and what they refuse."""

from __future__ import annotations

import re

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.onekvm.fleet.plugins.filter.kvmd_gpio import FilterModule, kvmd_gpio, kvmd_gpio_sudoers
from ansible_collections.onekvm.fleet.tests.testbed.kvmd_standin import effective_pulse, gpio_model, web_ui

SEED_BUTTON = {
    "name": "toggle_switch",
    "cmd": ["/usr/local/bin/kvm-switch", "next"],
    "confirm": True,
    "label": "Switch KVM machine",
}


def test_seed_note_example_comes_out_equivalent():
    gpio = kvmd_gpio([SEED_BUTTON])
    assert gpio == {
        "drivers": {"toggle_switch": {"type": "cmd", "cmd": ["/usr/local/bin/kvm-switch", "next"]}},
        "scheme": {"toggle_switch": {"driver": "toggle_switch", "pin": 0, "mode": "output", "switch": False}},
        "view": {"table": [["toggle_switch|confirm|Switch KVM machine"]]},
    }


def test_yaml_dump_keeps_real_booleans():
    text = yaml.safe_dump({"kvmd": {"gpio": kvmd_gpio([SEED_BUTTON])}})
    assert "switch: false" in text
    assert yaml.safe_load(text)["kvmd"]["gpio"]["scheme"]["toggle_switch"]["switch"] is False


def test_serial_relay_button_runs_the_box_command_through_sudo_and_its_wrapper():
    buttons = [{"name": "toggle_switch", "kind": "relay", "channel": 2, "duration": 0.3, "label": "Switch", "confirm": True}]
    gpio = kvmd_gpio(buttons)
    assert gpio["drivers"]["toggle_switch"] == {"type": "cmd", "cmd": ["/usr/bin/sudo", "-n", "/usr/local/lib/onekvm/buttons/toggle_switch"]}
    assert kvmd_gpio_sudoers(buttons, user="kvmd") == [{
        "name": "toggle_switch", "wrapper": "/usr/local/lib/onekvm/buttons/toggle_switch",
        "argv": ["/usr/local/bin/onekvm", "relay", "pulse", "--channel", "2", "--channels", "2", "--duration", "0.3",
                 "--port", "/dev/onekvm-relay"],
    }]
    assert gpio["scheme"]["toggle_switch"] == {"driver": "toggle_switch", "pin": 0, "mode": "output", "switch": False}
    assert gpio["view"]["table"] == [["toggle_switch|confirm|Switch"]]


def test_relay_on_a_four_channel_board():
    root = kvmd_gpio_sudoers([{"name": "r", "kind": "relay", "channel": 3, "channels": 4}, {"name": "one", "kind": "relay", "channel": 1}],
                             user="kvmd")
    assert root[0]["argv"][3:7] == ["--channel", "3", "--channels", "4"]
    assert "--channels" not in root[1]["argv"]


def test_relay_without_sudo_and_custom_paths():
    gpio = kvmd_gpio([{"name": "r", "kind": "relay", "channel": 1, "sudo": False, "port": "/dev/ttyUSB3"}], onekvm_bin="/opt/onekvm")
    assert gpio["drivers"]["r"]["cmd"][:2] == ["/opt/onekvm", "relay"]
    assert gpio["drivers"]["r"]["cmd"][-1] == "/dev/ttyUSB3"


def test_hid_relays_on_one_device_share_one_driver():
    gpio = kvmd_gpio([
        {"name": "power", "kind": "hidrelay", "device": "/dev/hidraw0", "pin": 0, "label": "Power", "confirm": True},
        {"name": "reset", "kind": "hidrelay", "device": "/dev/hidraw0", "pin": 1, "label": "Reset", "inline": True},
    ])
    assert gpio["drivers"] == {"hidrelay_hidraw0": {"type": "hidrelay", "device": "/dev/hidraw0"}}
    assert gpio["scheme"]["reset"] == {"driver": "hidrelay_hidraw0", "pin": 1, "mode": "output", "switch": False}
    assert gpio["view"]["table"] == [["power|confirm|Power", "reset|Reset"]]


def test_driver_name_clash_with_other_settings_is_refused():
    with pytest.raises(AnsibleFilterError, match=r"'b'.*driver name 'relays' is already used by button 'a'"):
        kvmd_gpio([
            {"name": "a", "kind": "hidrelay", "device": "/dev/hidraw0", "pin": 0, "driver": "relays"},
            {"name": "b", "kind": "hidrelay", "device": "/dev/hidraw1", "pin": 0, "driver": "relays"},
        ])


def test_led_label_colour_layout_and_title():
    gpio = kvmd_gpio([
        {"kind": "label", "label": "Server 1"},
        {"name": "host_up", "kind": "led", "cmd": ["/usr/bin/ping", "-c1", "192.0.2.1"], "color": "red", "label": "Up", "inline": True},
        {"kind": "separator"},
        {"name": "reboot", "cmd": ["/sbin/reboot"], "sudo": True, "hide": True, "confirm": True},
    ], title="Machines")
    assert gpio["drivers"]["host_up"] == {"type": "cmdret", "cmd": ["/usr/bin/ping", "-c1", "192.0.2.1"]}
    assert gpio["scheme"]["host_up"] == {"driver": "host_up", "pin": 0, "mode": "input"}
    assert gpio["drivers"]["reboot"]["cmd"] == ["/usr/bin/sudo", "-n", "/usr/local/lib/onekvm/buttons/reboot"]
    assert gpio["view"] == {
        "header": {"title": "Machines"},
        "table": [["#Server 1", "#Up", "host_up|red"], [], ["reboot|confirm,hide|reboot"]],
    }


def test_pulse_settings_and_switch():
    gpio = kvmd_gpio([
        {"name": "a", "cmd": ["/bin/true"], "pulse": {"delay": 1, "max_delay": 5}},
        {"name": "b", "kind": "hidrelay", "device": "/dev/hidraw0", "pin": 1, "pulse": False, "switch": True, "inverted": True},
    ])
    assert gpio["scheme"]["a"]["pulse"] == {"delay": 1, "min_delay": 0.1, "max_delay": 5}
    assert gpio["scheme"]["b"] == {"driver": "hidrelay_hidraw0", "pin": 1, "mode": "output", "switch": True, "pulse": {"delay": 0},
                                   "inverted": True}


def test_empty_list_gives_an_empty_but_complete_section():
    assert kvmd_gpio([]) == {"drivers": {}, "scheme": {}, "view": {"table": []}}


@pytest.mark.parametrize("buttons, message", [
    ([{"name": "9lives", "cmd": ["/bin/true"]}], r"item 1.*'9lives' does not match kvmd's pattern"),
    ([{"name": "a.b", "cmd": ["/bin/true"]}], r"'a\.b' does not match"),
    ([{"cmd": ["/bin/true"]}], r"item 1: name None does not match"),
    ([{"name": "__gpio__", "cmd": ["/bin/true"]}], r"button '__gpio__'.*reserved"),
    ([{"name": "a", "cmd": ["/bin/true"]}, {"name": "a", "cmd": ["/bin/false"]}], r"button 'a' \(item 2\).*already used by button 'a' \(item 1\)"),
    ([{"name": "a", "cmd": ["bin/true"]}], r"button 'a'.*'bin/true' is not an absolute path"),
    ([{"name": "a", "cmd": []}], r"button 'a'.*cmd must be a non-empty list"),
    ([{"name": "a", "cmd": "/bin/true"}], r"button 'a'.*cmd must be a non-empty list"),
    ([{"name": "a", "cmd": ["/bin/true"], "label": "on|off"}], r"button 'a'.*contains '\|'"),
    ([{"name": "a", "cmd": ["/bin/true"], "label": "two\nlines"}], r"button 'a'.*line break"),
    ([{"kind": "label", "label": "x|y"}], r"item 1: label 'x\|y' contains"),
    ([{"name": "led1", "kind": "led", "cmd": ["/bin/true"], "color": "purple"}], r"button 'led1'.*unknown LED colour 'purple'"),
    ([{"name": "a", "cmd": ["/bin/true"], "switch": False, "pulse": False}], r"button 'a'.*show no button"),
    ([{"name": "a", "cmd": ["/bin/true"], "pulse": {"delay": 0}}], r"button 'a'.*show no button"),
    ([{"name": "a", "cmd": ["/bin/true"], "confirm": "yes"}], r"button 'a'.*confirm must be true or false, got 'yes'"),
    ([{"name": "a", "cmd": ["/bin/true"], "comfirm": True}], r"button 'a'.*unknown keys for kind cmd: comfirm"),
    ([{"name": "a", "kind": "switchy"}], r"button 'a'.*unknown kind 'switchy'"),
    ([{"name": "a", "cmd": ["/usr/bin/sudo", "/sbin/reboot"]}], r"button 'a'.*starts with sudo.*sudo: true"),
    ([{"name": "a\n", "cmd": ["/bin/true"]}], r"item 1.*'a\\n' does not match kvmd's pattern"),
    ([{"name": "a", "cmd": ["/bin/../bin/sh"], "sudo": True}], r"button 'a'.*'/bin/\.\./bin/sh' is not a plain absolute path"),
    ([{"name": "a", "cmd": ["/bin/ec*"], "sudo": True}], r"button 'a'.*'/bin/ec\*' is not a plain absolute path"),
    ([{"name": "a", "cmd": ["/bin/echo", "x" * 4097], "sudo": True}], r"button 'a'.*'xxxx.*4097 characters long \(at most 4096\)"),
    ([{"name": "a", "cmd": ["/bin/echo", "a\x00b"], "sudo": True}], r"button 'a'.*line break or NUL"),
    ([{"name": "r", "kind": "relay", "channel": 1, "port": "/dev/../etc/x"}], r"button 'r'.*port must be.*'/dev/\.\./etc/x'"),
    ([{"name": "r", "kind": "relay", "channel": 1, "port": "/dev/ttyUSB*"}], r"button 'r'.*port must be.*'/dev/ttyUSB\*'"),
    ([{"name": "h", "kind": "hidrelay", "device": "/dev/hidraw0\n", "pin": 0}], r"button 'h'.*device must be"),
    ([{"name": "r", "kind": "relay", "channel": 9}], r"button 'r'.*channel must be a whole number 1 to 8, got 9"),
    ([{"name": "r", "kind": "relay"}], r"button 'r'.*channel must be"),
    ([{"name": "r", "kind": "relay", "channel": 3, "channels": 2}], r"button 'r'.*at least channel 3, got 2"),
    ([{"name": "r", "kind": "relay", "channel": 1, "port": "ttyUSB0"}], r"button 'r'.*port must be the relay's /dev path"),
    ([{"name": "h", "kind": "hidrelay", "device": "hidraw0", "pin": 0}], r"button 'h'.*device must be the relay's /dev path"),
    ([{"name": "a", "cmd": ["/bin/true"], "pulse": {"delay": 1, "min_delay": 3, "max_delay": 2}}], r"button 'a'.*min_delay is above"),
    ([{"kind": "separator", "inline": True}], r"item 1.*separator cannot be inline"),
    (["toggle"], r"item 1: expected a dict"),
    ({"name": "a"}, r"buttons must be a list"),
])
def test_bad_buttons_are_refused_with_a_message_naming_them(buttons, message):
    with pytest.raises(AnsibleFilterError, match=message):
        kvmd_gpio(buttons)
    with pytest.raises(AnsibleFilterError, match=message):  # the sudoers list never disagrees with the config
        kvmd_gpio_sudoers(buttons, user="kvmd")


def test_bad_title_is_refused():
    with pytest.raises(AnsibleFilterError, match="title must be a one-line string"):
        kvmd_gpio([], title="a\nb")


def test_sudoers_lists_each_root_button_with_its_wrapper_and_exact_argv():
    buttons = [
        {"name": "capture", "cmd": ["/usr/local/bin/onekvm", "usb-reset", "534d:2109", "--port", "1-1.2"], "sudo": True},
        {"name": "hid", "cmd": ["/usr/local/sbin/onekvm-reset-hid"], "sudo": True},
        {"name": "plain", "cmd": ["/bin/true"]},
        {"name": "odd", "cmd": ["/bin/echo", "a=b,c\\d", "#x", "two words", ""], "sudo": True},
    ]
    assert kvmd_gpio_sudoers(buttons, user="kvmd", button_dir="/opt/b") == [
        {"name": "capture", "wrapper": "/opt/b/capture", "argv": ["/usr/local/bin/onekvm", "usb-reset", "534d:2109", "--port", "1-1.2"]},
        {"name": "hid", "wrapper": "/opt/b/hid", "argv": ["/usr/local/sbin/onekvm-reset-hid"]},
        {"name": "odd", "wrapper": "/opt/b/odd", "argv": ["/bin/echo", "a=b,c\\d", "#x", "two words", ""]},
    ]
    assert kvmd_gpio(buttons, button_dir="/opt/b")["drivers"]["plain"]["cmd"] == ["/bin/true"]


@pytest.mark.parametrize("button_dir", ["opt/b", "/opt/../b", "/opt/b/", "/opt/b c", "/opt/b\n"])
def test_button_dir_must_be_a_plain_absolute_path(button_dir):
    with pytest.raises(AnsibleFilterError, match="button_dir .* is not a plain absolute path"):
        kvmd_gpio([], button_dir=button_dir)


def test_filter_module_exposes_both_filters():
    assert set(FilterModule().filters()) == {"kvmd_gpio", "kvmd_gpio_sudoers"}


NAMES = st.from_regex(re.compile(r"[a-z_][a-z0-9_-]{0,11}", re.ASCII), fullmatch=True).filter(lambda n: not (n.startswith("__") and n.endswith("__")))
BUTTON = st.fixed_dictionaries(
    {"kind": st.sampled_from(["cmd", "led", "hidrelay", "relay"])},
    optional={"confirm": st.booleans(), "inline": st.booleans(), "label": st.text("abc XYZ-", min_size=1, max_size=8).filter(str.strip)},
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(NAMES, BUTTON), max_size=8, unique_by=lambda t: t[0]))
def test_every_channel_has_its_driver_and_exactly_one_place_in_the_view(entries):
    buttons = []
    for name, button in entries:
        button = dict(button, name=name)
        if button["kind"] in ("cmd", "led"):
            button["cmd"] = ["/bin/true", name]
        elif button["kind"] == "relay":
            button["channel"] = 1
        else:
            button.update(device="/dev/hidraw0", pin=0, driver="hid_%s" % name)
        if button["kind"] == "led":
            button.pop("confirm", None)
        buttons.append(button)
    gpio = kvmd_gpio(buttons)
    placed = [item.split("|", 1)[0] for row in gpio["view"]["table"] for item in row if not item.startswith("#")]
    assert sorted(placed) == sorted(gpio["scheme"])
    assert sorted(gpio["scheme"]) == sorted(entry[0] for entry in entries)
    for channel, scheme in gpio["scheme"].items():
        assert scheme["driver"] in gpio["drivers"], channel


# ---- what kvmd will really do with the rendered section ------------------------------------
# kvmd's model of the section (the test bed's kvmd stand-in, which follows pikvm/kvmd
# kvmd/apps/kvmd/ugpio.py: effective pulse min(max(delay, min_delay), max_delay), defaults 0.1)
# and what the web UI draws from it (web/share/js/kvm/gpio.js).
def kvmd_effective_pulse(scheme):
    return effective_pulse(scheme.get("pulse"))[0]


def drawn(gpio):
    return web_ui(gpio_model(gpio))


@pytest.mark.parametrize("pulse, effective", [
    ({"delay": 5}, 5),                                   # an ATX long press: not a 0.1 s tap
    ({"delay": 0.5}, 0.5),
    ({"delay": 2, "max_delay": 10}, 2),
    ({"delay": 3, "min_delay": 1}, 3),
    ({"delay": 0.1}, 0.1),
    (None, 0.1),                                         # kvmd's default pulse
])
def test_the_pulse_kvmd_sends_is_the_delay_asked_for(pulse, effective):
    for kind in ({"cmd": ["/bin/true"]}, {"kind": "hidrelay", "device": "/dev/hidraw0", "pin": 0},
                 {"kind": "relay", "channel": 1}):
        button = dict(kind, name="power")
        if pulse is not None:
            button["pulse"] = pulse
        scheme = kvmd_gpio([button])["scheme"]["power"]
        assert kvmd_effective_pulse(scheme) == pytest.approx(effective), scheme


@pytest.mark.parametrize("pulse, message", [
    ({"delay": 5, "max_delay": 2}, r"button 'a'.*max_delay 2 is below the delay 5: kvmd would send a 2 s pulse"),
    ({"delay": 1, "min_delay": 3}, r"button 'a'.*min_delay 3 is above the delay 1: kvmd would send a 3 s pulse"),
    ({"min_delay": 2}, r"button 'a'.*min_delay 2 is above the delay 0.1 \(kvmd's default\)"),
    ({"delay": 0.05}, r"button 'a'.*shortest pulse kvmd sends is 0.1 s"),
    ({"delay": 1, "max_delay": 0.05}, r"button 'a'.*max_delay must be at least 0.1"),
])
def test_pulse_bounds_that_contradict_the_delay_are_refused(pulse, message):
    with pytest.raises(AnsibleFilterError, match=message):
        kvmd_gpio([{"name": "a", "cmd": ["/bin/true"], "pulse": pulse}])


@pytest.mark.parametrize("button, message", [
    # the cmd driver's read() is always false (pikvm/kvmd kvmd/plugins/ugpio/cmd.py)
    ({"name": "a", "cmd": ["/bin/true"], "switch": True},
     r"button 'a'.*switch that never turns on.*Remove switch: true"),
    ({"name": "a", "cmd": ["/bin/true"], "switch": True, "pulse": False}, r"button 'a'.*switch that never turns on"),
    # web/share/js/kvm/gpio.js draws the hide mark only on a pulse button
    ({"name": "h", "kind": "hidrelay", "device": "/dev/hidraw0", "pin": 0, "switch": True, "pulse": False, "hide": True},
     r"button 'h'.*hide.*only.*pulse button"),
])
def test_buttons_the_web_ui_cannot_show_as_meant_are_refused(button, message):
    with pytest.raises(AnsibleFilterError, match=message):
        kvmd_gpio([button])


def test_a_switch_only_relay_gets_its_label_drawn_next_to_it():
    # gpio.js draws an output's text only on its pulse button: a switch-only output would be a bare switch
    gpio = kvmd_gpio([{"name": "fan", "kind": "hidrelay", "device": "/dev/hidraw0", "pin": 0, "switch": True,
                       "pulse": False, "label": "Fan", "confirm": True}])
    assert gpio["view"]["table"] == [["#Fan", "fan|confirm|Fan"]]
    assert drawn(gpio) == [[{"label": "Fan"}, {"channel": "fan", "confirm": True, "switch": "on/off"}]]


def test_every_kind_shows_in_the_web_ui_as_meant():
    gpio = kvmd_gpio([
        {"kind": "label", "label": "Server 1"},
        {"name": "power", "cmd": ["/bin/true"], "label": "Power", "confirm": True, "pulse": {"delay": 5}, "inline": True},
        {"name": "kvm", "kind": "relay", "channel": 2, "label": "KVM", "hide": True},
        {"name": "atx", "kind": "hidrelay", "device": "/dev/hidraw0", "pin": 1, "label": "ATX", "switch": True,
         "pulse": {"delay": 0.5}},
        {"kind": "separator"},
        {"name": "up", "kind": "led", "cmd": ["/bin/true"], "label": "Up", "color": "red"},
    ], title="Machines")
    assert drawn(gpio) == [
        [{"label": "Server 1"}, {"channel": "power", "confirm": True, "button": "Power", "pulse": 5.0, "hide": False}],
        [{"channel": "kvm", "confirm": False, "button": "KVM", "pulse": 0.1, "hide": True}],
        [{"channel": "atx", "confirm": False, "switch": "on/off", "button": "ATX", "pulse": 0.5, "hide": False}],
        None,
        [{"label": "Up"}, {"lamp": "up", "color": "red"}],
    ]
    assert gpio_model(gpio)["view"]["header"]["title"] == [{"type": "label", "text": "Machines"}]


def test_relay_buttons_use_the_relay_port_given():
    relay = [{"name": "r", "kind": "relay", "channel": 1}]
    assert kvmd_gpio_sudoers(relay, user="kvmd", relay_port="/dev/kvm-relay")[0]["argv"] == [
        "/usr/local/bin/onekvm", "relay", "pulse", "--channel", "1", "--duration", "0.5", "--port", "/dev/kvm-relay"]
    unrooted = kvmd_gpio([dict(relay[0], sudo=False)], relay_port="/dev/kvm-relay")
    assert unrooted["drivers"]["r"]["cmd"][-2:] == ["--port", "/dev/kvm-relay"]
    own = kvmd_gpio_sudoers([dict(relay[0], port="/dev/ttyUSB3")], user="kvmd", relay_port="/dev/kvm-relay")
    assert own[0]["argv"][-1] == "/dev/ttyUSB3"
    with pytest.raises(AnsibleFilterError, match="relay_port 'kvm-relay' is not a plain /dev path"):
        kvmd_gpio(relay, relay_port="kvm-relay")


def test_an_empty_name_is_named_in_the_message():
    # found by test_sudoers_real_sudo's hostile inventories: the message said only "item 1"
    with pytest.raises(AnsibleFilterError, match=r"button '' \(item 1\): name '' does not match"):
        kvmd_gpio([dict(SEED_BUTTON, name="")])
