# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Turn a list of buttons into kvmd's ``kvmd.gpio`` section (drivers, scheme, view).

This is the one place that decides what kvmd sees: the role's template only dumps the
result. Every button is checked here against kvmd's own rules (names, reserved names,
entry points, view syntax, colours, visibility), and the error names the button.
"""

from __future__ import annotations

# The documentation of the kvmd_gpio filter is in kvmd_gpio.yml (kvmd_gpio_sudoers.yml for the other).

import re

from ansible.errors import AnsibleFilterError

# kvmd's channel/driver name pattern; \Z, not $: "$" also matches before a trailing newline
NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_-]*\Z")
# Debian's adduser NAME_REGEX (without the Samba "$"), at most 31 characters as systemd's strict
# user/group name rules want (they must fit utmp: https://systemd.io/USER_NAMES/; systemd-analyze
# flags a 32-character SupplementaryGroups= name): a plain login or group name, never ALL, %group,
# +netgroup, #uid or a list, so the sudoers rule names exactly one user. The role checks group
# names with it too (the onekvm.fleet.account_name test plugin).
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,30}\Z")
# An absolute path made of plain components (no "." or "..", no doubled "/"), for the paths the
# role writes into kvmd's config and the sudoers rule.
_PATH_PART = r"/(?!\.\.?(?:/|\Z))[A-Za-z0-9_.+@:-]+"
CLEAN_PATH_RE = re.compile(r"^(?:%s)+\Z" % _PATH_PART)
DEV_PATH_RE = re.compile(r"^/dev(?:%s)+\Z" % _PATH_PART)
# One argument of a root button's command, at most this many characters (Linux refuses a single
# argv string above 128 KiB, MAX_ARG_STRLEN; kvmd's config is not the place for that much).
MAX_ARG_CHARS = 4096
RESERVED_RE = re.compile(r"^__.*__$")
LED_COLORS = ("green", "yellow", "red", "blue", "cyan", "magenta", "pink", "white")
KINDS = ("cmd", "relay", "hidrelay", "led", "label", "separator")
COMMON_KEYS = {"kind", "inline"}
KIND_KEYS = {
    "cmd": {"name", "label", "cmd", "sudo", "confirm", "hide", "switch", "pulse", "inverted"},
    "relay": {"name", "label", "channel", "channels", "duration", "port", "sudo", "confirm", "hide", "pulse"},
    "hidrelay": {"name", "label", "device", "pin", "driver", "confirm", "hide", "switch", "pulse", "inverted"},
    "led": {"name", "label", "cmd", "sudo", "color", "inverted"},
    "label": {"label"},
    "separator": set(),
}
PULSE_KEYS = ("delay", "min_delay", "max_delay")
RELAY_BOARD_SIZES = (1, 2, 4, 8)
ONEKVM_BIN = "/usr/local/bin/onekvm"
SUDO_BIN = "/usr/bin/sudo"
BUTTON_DIR = "/usr/local/lib/onekvm/buttons"
RELAY_PORT = "/dev/onekvm-relay"
KVMD_MIN_PULSE = 0.1  # kvmd's default delay, min_delay and max_delay, and the least min/max_delay it accepts


class _Item:
    """A checked button: what goes into drivers, scheme and the view row."""

    def __init__(self, where, kind, inline):
        self.where = where
        self.kind = kind
        self.inline = inline
        self.driver_name = None
        self.driver = None
        self.channel = None
        self.scheme = None
        self.view = []  # the items this button adds to its row; None means a separator row
        self.sudo_argv = None  # the command a root button's wrapper runs
        self.wrapper = None  # that wrapper's path (the only thing sudoers allows)


def _fail(where, problem, fix):
    raise AnsibleFilterError("kvmd_gpio: %s: %s. %s" % (where, problem, fix))


def _where(index, raw):
    name = raw.get("name") if isinstance(raw, dict) else None
    if name is not None:  # an empty or odd name too: the message shows it as given
        return "button %r (item %d)" % (name, index + 1)
    return "item %d" % (index + 1)


def _flag(where, raw, key, default):
    value = raw.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        _fail(where, "%s must be true or false, got %r" % (key, value), "Write true or false (kvmd reads yes/no/on/off as strings).")
    return value


def _text(where, raw, key, default):
    value = raw.get(key)
    if value is None:
        value = default
    if not isinstance(value, str) or not value.strip():
        _fail(where, "%s must be a non-empty string, got %r" % (key, value), "Give it a short text.")
    if "|" in value or "\n" in value or "\r" in value:
        _fail(where, "%s %r contains '|' or a line break" % (key, value), "kvmd splits view items on '|': remove it.")
    return value.strip()


def _name(where, raw, key="name"):
    name = raw.get(key)
    if not isinstance(name, str) or not NAME_RE.match(name):
        _fail(where, "%s %r does not match kvmd's pattern ^[a-zA-Z_][a-zA-Z0-9_-]*$" % (key, name),
              "Use letters, digits, '_' and '-', starting with a letter or '_'.")
    if RESERVED_RE.match(name):
        _fail(where, "%s %r is reserved by kvmd (names like __x__)" % (key, name), "Choose another name.")
    return name


def _argv(where, raw):
    cmd = raw.get("cmd")
    if not isinstance(cmd, list) or not cmd or not all(isinstance(arg, (str, int, float)) and not isinstance(arg, bool) for arg in cmd):
        _fail(where, "cmd must be a non-empty list of strings, got %r" % (cmd,), "Write the command as a list: [/absolute/path, arg, ...].")
    argv = [str(arg) for arg in cmd]
    if not argv[0].startswith("/"):
        _fail(where, "the entry point %r is not an absolute path" % argv[0], "kvmd runs it without a shell or PATH: give the full path.")
    if argv[0].rsplit("/", 1)[-1] == "sudo":
        _fail(where, "cmd starts with sudo", "Write the command itself and set sudo: true, so the sudoers rule is made for it.")
    if not CLEAN_PATH_RE.match(argv[0]):
        _fail(where, "the entry point %r is not a plain absolute path" % argv[0],
              "Use a path of letters, digits and _ . + @ : - without '.' or '..' parts.")
    for arg in argv:
        if "\n" in arg or "\0" in arg:
            _fail(where, "argument %r contains a line break or NUL" % arg, "Remove it.")
        if len(arg) > MAX_ARG_CHARS:
            _fail(where, "argument %r... is %d characters long (at most %d)" % (arg[:40], len(arg), MAX_ARG_CHARS),
                  "Put long data in a file the command reads.")
    return argv


def _sudo_driver(item, argv, sudo, sudo_bin, button_dir):
    """kvmd's cmd for the button: the command itself, or for root a fixed wrapper through sudo.

    A root button never puts its arguments into the sudoers rule: the role installs a
    root-owned wrapper per button that runs exactly ``argv`` and ignores what it is given,
    and sudoers allows that wrapper only without arguments (``""``). So nothing depends on
    sudoers' escaping, wildcards or comment rules.
    """
    if not sudo:
        return argv
    item.sudo_argv = argv
    item.wrapper = "%s/%s" % (button_dir, item.channel)
    return [sudo_bin, "-n", item.wrapper]


def _number(where, value, what, low, high=None, integer=False):
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < low or (high is not None and value > high):
        limits = "%s to %s" % (low, high) if high is not None else "at least %s" % low
        _fail(where, "%s must be a %s %s, got %r" % (what, "whole number" if integer else "number", limits, value), "Fix the value.")
    return value


def _pulse(where, raw):
    """kvmd's pulse settings, rendered so that the pulse kvmd sends is the delay asked for.

    kvmd sends min(max(delay, min_delay), max_delay) (pikvm/kvmd kvmd/apps/kvmd/ugpio.py) with
    the defaults 0.1, 0.1 and 0.1, and min_delay/max_delay must be at least 0.1
    (kvmd/apps/_scheme.py): a bare ``delay: 5`` would be a 0.1 s tap.
    """
    if "pulse" not in raw or raw["pulse"] is None:
        return None
    pulse = raw["pulse"]
    if pulse is False:
        return {"delay": 0}
    if not isinstance(pulse, dict) or not pulse or set(pulse) - set(PULSE_KEYS):
        _fail(where, "pulse must be false or a dict with delay, min_delay, max_delay, got %r" % (pulse,), "Fix the pulse setting.")
    given = {key: _number(where, pulse[key], "pulse." + key, 0) for key in PULSE_KEYS if key in pulse}
    for key in ("min_delay", "max_delay"):
        if key in given and given[key] < KVMD_MIN_PULSE:
            _fail(where, "pulse.%s must be at least %s (kvmd refuses less), got %r" % (key, KVMD_MIN_PULSE, given[key]),
                  "Raise it or leave it out.")
    if "min_delay" in given and "max_delay" in given and given["min_delay"] > given["max_delay"]:
        _fail(where, "pulse.min_delay is above pulse.max_delay", "Swap or fix them.")
    delay = given.get("delay", KVMD_MIN_PULSE)
    if not delay:
        return {"delay": 0}
    asked = "the delay %s%s" % (delay, "" if "delay" in given else " (kvmd's default)")
    if delay < KVMD_MIN_PULSE:
        _fail(where, "pulse.delay %s is too short: the shortest pulse kvmd sends is %s s" % (delay, KVMD_MIN_PULSE),
              "Use a delay of at least %s, or pulse: false for no pulse." % KVMD_MIN_PULSE)
    if given.get("min_delay", delay) > delay:
        _fail(where, "pulse.min_delay %s is above %s: kvmd would send a %s s pulse" % (given["min_delay"], asked, given["min_delay"]),
              "Set delay to the pulse you want (at least min_delay) or lower min_delay.")
    if given.get("max_delay", delay) < delay:
        _fail(where, "pulse.max_delay %s is below %s: kvmd would send a %s s pulse" % (given["max_delay"], asked, given["max_delay"]),
              "Raise max_delay to at least the delay, or leave it out.")
    return {"delay": delay, "min_delay": given.get("min_delay", KVMD_MIN_PULSE), "max_delay": given.get("max_delay", delay)}


def _output_scheme(where, raw, driver, pin, reads_state=True):
    switch = _flag(where, raw, "switch", False)
    pulse = _pulse(where, raw)
    if switch and not reads_state:
        # the cmd driver's read() is always false (pikvm/kvmd kvmd/plugins/ugpio/cmd.py)
        _fail(where, "switch: true on a command button: kvmd reads a command's state as always off, so the web UI "
                     "would show a switch that never turns on (a click runs the command and the switch stays off)",
              "Remove switch: true (the button then runs the command once per click); for a state lamp use kind: led.")
    if not switch and pulse is not None and not pulse.get("delay", 0.1):
        _fail(where, "switch is false and pulse is off: kvmd would treat it as a constant and show no button",
              "Enable the pulse or set switch: true.")
    if switch and pulse is not None and not pulse["delay"] and _flag(where, raw, "hide", False):
        # web/share/js/kvm/gpio.js: "hide" only marks the pulse button
        _fail(where, "hide on a switch without a pulse: the web UI applies hide only to a pulse button, the switch "
                     "would stay in the menu", "Remove hide, or give the output a pulse.")
    scheme = {"driver": driver, "pin": pin, "mode": "output", "switch": switch}
    if pulse is not None:
        scheme["pulse"] = pulse
    if "inverted" in raw:
        scheme["inverted"] = _flag(where, raw, "inverted", False)
    return scheme


def _output_view(where, raw, channel, scheme):
    label = _text(where, raw, "label", channel)
    options = [opt for opt in ("confirm", "hide") if _flag(where, raw, opt, False)]
    item = "%s|%s|%s" % (channel, ",".join(options), label) if options else "%s|%s" % (channel, label)
    if scheme["switch"] and not scheme.get("pulse", {"delay": 0.1})["delay"]:
        # web/share/js/kvm/gpio.js draws an output's text only on its pulse button: a switch-only
        # output is a bare switch, so its label goes in front of it as a label item
        return ["#" + label, item]
    return [item]


def _command_button(item, raw, sudo_bin, button_dir):
    item.channel = item.driver_name = _name(item.where, raw)
    sudo = _flag(item.where, raw, "sudo", False)
    argv = _argv(item.where, raw)
    item.driver = {"type": "cmd", "cmd": _sudo_driver(item, argv, sudo, sudo_bin, button_dir)}
    item.scheme = _output_scheme(item.where, raw, item.driver_name, 0, reads_state=False)
    item.view = _output_view(item.where, raw, item.channel, item.scheme)


def _relay_button(item, raw, sudo_bin, onekvm_bin, button_dir, relay_port):
    item.channel = item.driver_name = _name(item.where, raw)
    channel = _number(item.where, raw.get("channel"), "channel", 1, 8, integer=True)
    channels = raw.get("channels", min(count for count in RELAY_BOARD_SIZES if count >= channel))
    if channels not in RELAY_BOARD_SIZES or isinstance(channels, bool) or channel > channels:
        _fail(item.where, "channels (the board's relay count) must be one of 1, 2, 4, 8 and at least channel %d, got %r" % (channel, channels),
              "Set channels to the number of relays on the board.")
    duration = _number(item.where, raw.get("duration", 0.5), "duration", 0.05, 10)
    port = raw.get("port", relay_port)
    if not isinstance(port, str) or not DEV_PATH_RE.match(port):
        _fail(item.where, "port must be the relay's /dev path, got %r" % (port,),
              "Give its udev name (default %s) or /dev/ttyUSBN (plain parts, no '..')." % relay_port)
    relay_cmd = [onekvm_bin, "relay", "pulse", "--channel", str(channel)]
    if channels != 1:
        relay_cmd += ["--channels", str(channels)]
    relay_cmd += ["--duration", str(duration), "--port", port]
    sudo = _flag(item.where, raw, "sudo", True)
    argv = _argv(item.where, {"cmd": relay_cmd})
    item.driver = {"type": "cmd", "cmd": _sudo_driver(item, argv, sudo, sudo_bin, button_dir)}
    item.scheme = _output_scheme(item.where, raw, item.driver_name, 0, reads_state=False)
    item.view = _output_view(item.where, raw, item.channel, item.scheme)


def _hidrelay_button(item, raw):
    item.channel = _name(item.where, raw)
    device = raw.get("device")
    if not isinstance(device, str) or not DEV_PATH_RE.match(device):
        _fail(item.where, "device must be the relay's /dev path, got %r" % (device,),
              "Give its /dev/hidrawN path or a udev symlink (plain parts, no '..').")
    default_driver = "hidrelay_" + re.sub(r"[^a-zA-Z0-9_-]", "_", device[len("/dev/"):])
    item.driver_name = _name(item.where, dict(driver=raw.get("driver", default_driver)), "driver")
    item.driver = {"type": "hidrelay", "device": device}
    pin = _number(item.where, raw.get("pin"), "pin", 0, 7, integer=True)
    item.scheme = _output_scheme(item.where, raw, item.driver_name, pin)
    item.view = _output_view(item.where, raw, item.channel, item.scheme)


def _led(item, raw, sudo_bin, button_dir):
    item.channel = item.driver_name = _name(item.where, raw)
    sudo = _flag(item.where, raw, "sudo", False)
    argv = _argv(item.where, raw)
    item.driver = {"type": "cmdret", "cmd": _sudo_driver(item, argv, sudo, sudo_bin, button_dir)}
    item.scheme = {"driver": item.driver_name, "pin": 0, "mode": "input"}
    if "inverted" in raw:
        item.scheme["inverted"] = _flag(item.where, raw, "inverted", False)
    color = raw.get("color", "green")
    if color not in LED_COLORS:
        _fail(item.where, "unknown LED colour %r" % (color,), "Use one of: %s." % ", ".join(LED_COLORS))
    item.view = ["%s|%s" % (item.channel, color)]
    if raw.get("label") is not None:
        item.view.insert(0, "#" + _text(item.where, raw, "label", None))


def _check_item(index, raw, onekvm_bin, sudo_bin, button_dir, relay_port):
    where = _where(index, raw)
    if not isinstance(raw, dict):
        _fail(where, "expected a dict, got %r" % (raw,), "Describe each button as a dict with name, label, cmd, ...")
    kind = raw.get("kind", "cmd")
    if kind not in KINDS:
        _fail(where, "unknown kind %r" % (kind,), "Use one of: %s." % ", ".join(KINDS))
    unknown = sorted(set(raw) - KIND_KEYS[kind] - COMMON_KEYS)
    if unknown:
        _fail(where, "unknown keys for kind %s: %s" % (kind, ", ".join(map(str, unknown))),
              "Allowed: %s." % ", ".join(sorted(KIND_KEYS[kind] | COMMON_KEYS)))
    item = _Item(where, kind, _flag(where, raw, "inline", False))
    if kind == "cmd":
        _command_button(item, raw, sudo_bin, button_dir)
    elif kind == "relay":
        _relay_button(item, raw, sudo_bin, onekvm_bin, button_dir, relay_port)
    elif kind == "hidrelay":
        _hidrelay_button(item, raw)
    elif kind == "led":
        _led(item, raw, sudo_bin, button_dir)
    elif kind == "label":
        item.view = ["#" + _text(where, raw, "label", None)]
    else:
        item.view = None
        if item.inline:
            _fail(where, "a separator cannot be inline", "Remove inline: it is a whole row.")
    return item


def check_buttons(buttons, onekvm_bin=ONEKVM_BIN, sudo_bin=SUDO_BIN, button_dir=BUTTON_DIR, relay_port=RELAY_PORT):
    """Check every button and return them as _Item objects (raises AnsibleFilterError)."""
    if not isinstance(buttons, list):
        raise AnsibleFilterError("kvmd_gpio: the buttons must be a list, got %s. Give a list of dicts." % type(buttons).__name__)
    for what, path in (("onekvm_bin", onekvm_bin), ("sudo_bin", sudo_bin), ("button_dir", button_dir)):
        if not isinstance(path, str) or not CLEAN_PATH_RE.match(path):
            raise AnsibleFilterError("kvmd_gpio: %s %r is not a plain absolute path. Give the full path (letters, digits, "
                                     "_ . + @ : -, no '.' or '..' parts)." % (what, path))
    if not isinstance(relay_port, str) or not DEV_PATH_RE.match(relay_port):
        raise AnsibleFilterError("kvmd_gpio: relay_port %r is not a plain /dev path. Give the relay's udev name "
                                 "(the role passes /dev/ + onekvm_relay_symlink)." % (relay_port,))
    items = [_check_item(index, raw, onekvm_bin, sudo_bin, button_dir, relay_port) for index, raw in enumerate(buttons)]
    channels, drivers = {}, {}
    for item in items:
        if item.channel is not None:
            if item.channel in channels:
                _fail(item.where, "the name %r is already used by %s" % (item.channel, channels[item.channel]), "Names must be unique.")
            channels[item.channel] = item.where
        if item.driver_name is not None:
            previous = drivers.get(item.driver_name)
            if previous is not None and previous[1] != item.driver:
                _fail(item.where, "the driver name %r is already used by %s with other settings" % (item.driver_name, previous[0]),
                      "Give this button another name or driver.")
            drivers.setdefault(item.driver_name, (item.where, item.driver))
    return items


def kvmd_gpio(buttons, title=None, onekvm_bin=ONEKVM_BIN, sudo_bin=SUDO_BIN, button_dir=BUTTON_DIR, relay_port=RELAY_PORT):
    """The kvmd.gpio section for these buttons."""
    items = check_buttons(buttons, onekvm_bin, sudo_bin, button_dir, relay_port)
    section = {"drivers": {}, "scheme": {}, "view": {"table": []}}
    table = section["view"]["table"]
    for item in items:
        if item.driver_name is not None:
            section["drivers"][item.driver_name] = item.driver
        if item.channel is not None:
            section["scheme"][item.channel] = item.scheme
        if item.view is None:
            table.append([])
        elif item.inline and table and table[-1]:
            table[-1].extend(item.view)
        else:
            table.append(list(item.view))
    if title is not None:
        if not isinstance(title, str) or "\n" in title:
            raise AnsibleFilterError("kvmd_gpio: the title must be a one-line string, got %r. Fix onekvm_gpio_title." % (title,))
        section["view"]["header"] = {"title": title}
    return section


def kvmd_gpio_sudoers(buttons, user, onekvm_bin=ONEKVM_BIN, sudo_bin=SUDO_BIN, button_dir=BUTTON_DIR, relay_port=RELAY_PORT):
    """The root buttons, in order: name, the wrapper sudoers allows (without arguments) and the argv it runs."""
    if not isinstance(user, str) or not USER_RE.match(user):
        raise AnsibleFilterError("kvmd_gpio_sudoers: the kvmd user %r is not a plain user name (%s). Set onekvm_kvmd_user "
                                 "to the user kvmd runs as (kvmd on PiKVM and One-KVM)." % (user, USER_RE.pattern))
    return [{"name": item.channel, "wrapper": item.wrapper, "argv": item.sudo_argv}
            for item in check_buttons(buttons, onekvm_bin, sudo_bin, button_dir, relay_port) if item.sudo_argv]


class FilterModule:
    """kvmd GPIO rendering."""

    def filters(self):
        return {
            "kvmd_gpio": kvmd_gpio,
            "kvmd_gpio_sudoers": kvmd_gpio_sudoers,
        }
