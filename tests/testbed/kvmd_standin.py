"""kvmd stand-in for the onekvm.fleet test bed (the molecule container and the simulated box).

Real kvmd cannot be installed in the test bed, so this file follows kvmd wherever the
collection meets it, each rule taken from kvmd's source (pikvm/kvmd 4.197, and One-KVM's
kvmd 4.94 from its ``python`` branch where the two differ):

``kvmd -m``
    Loads the config set like the kvmd version on the box and prints it merged; a bad config
    is ``ConfigError: ...`` with a non-zero exit.

    * pikvm/kvmd (``kvmd/apps/__init__.py`` ``_init_config``): ``/usr/lib/kvmd/main.yaml``,
      then every file in ``/etc/kvmd/override.d`` in sorted order whatever its suffix
      (``yamlconf/loader.py`` ``listed_yaml_dir``), then ``/etc/kvmd/override.yaml``; all three
      must exist. A ``cmd`` entry point must be an absolute path (``validators/os.py``
      ``valid_abs_path``).
    * One-KVM (its ``kvmd/apps/__init__.py``, ``configs/kvmd/main.yaml``): ``/etc/kvmd/main.yaml``
      with ``override: !include [override.d, override.yaml]``, merged over the rest after loading;
      a ``cmd`` entry point must be an existing file (``valid_abs_file``: "... is not a valid
      command entry point: [Errno 2] No such file or directory").
    * Both: ``!include`` of a file or a directory (``yamlconf/loader.py``); dicts deep-merge,
      everything else is replaced (``yamlconf/merger.py``); ``yes/no/on/off`` are strings, not
      booleans (``_disable_some_bools``); the items of a ``cmd`` list are turned into strings
      (``validators/basic.py`` ``valid_string_list`` -> ``check_not_none_string``).

    Which version: ``/usr/lib/kvmd/main.yaml`` present = pikvm/kvmd, else One-KVM.
    Failure injection for tests: if ``/etc/kvmd/standin-reject`` exists, its text is reported
    as a ConfigError (a config kvmd rejects for a reason the role cannot foresee).

``kvmd --standin-gpio-model``
    Prints (JSON) the GPIO model kvmd builds from the merged config, as ``GET /api/gpio``
    (on kvmd's socket ``GET /gpio``) returns it: ``kvmd/apps/kvmd/ugpio.py`` (effective pulse ``min(max(delay, min_delay),
    max_delay)``, outputs that neither switch nor pulse are left out, view items split on ``|``
    at most twice, unknown channels dropped). ``web_ui(model)`` says what
    ``web/share/js/kvm/gpio.js`` draws from it.

``kvmd --standin-streamer-cmd``
    Prints (JSON) the streamer command kvmd builds from the merged config: ``cmd[0]``, then
    ``cmd[1:]`` without the items listed in ``cmd_remove`` (exact matches), then ``cmd_append``
    (pikvm/kvmd ``kvmd/tools.py`` ``build_cmd``, called by ``kvmd/apps/kvmd/streamer.py``; One-KVM's
    4.94 has the same keys). Placeholders such as ``{unix}`` stay unformatted, as ``kvmd -m`` shows them.

``kvmd --run``
    The service, as ``kvmd.service`` runs it:

    * the HID: for ``kvmd.hid.type: ch9329`` the chip's port (``kvmd.hid.device``, ``speed``,
      ``read_timeout``) is held open, not exclusively, and polled with GET_INFO about every 0.1 s
      when idle; after a bad or missing reply it sleeps 2 s, on a serial error it reopens the port
      after 2 s (``kvmd/plugins/hid/ch9329/__init__.py`` and ``chip.py``);
    * GPIO ``cmd`` drivers: a pulse runs the command as kvmd's own child in its own process
      group, its output logged, and waits for it; a non-zero exit logs "Can't run custom
      command" (``kvmd/plugins/ugpio/cmd.py``, ``kvmd/aioproc.py``). ``cmdret`` inputs read
      as "exit code 0" (``kvmd/plugins/ugpio/cmdret.py``);
    * ``/run/kvmd/kvmd.sock`` answers ``GET /gpio`` (the model ``--standin-gpio-model`` prints, and
      the state), ``POST /gpio/pulse?channel=&delay=&wait=`` (delay clamped like kvmd's),
      ``POST /gpio/switch?channel=&state=&wait=`` and ``GET /hid`` (``online``): kvmd's own routes
      on its socket (``kvmd/apps/kvmd/api/ugpio.py``, ``api/hid.py``; nginx maps ``/api/...`` to
      them). Arguments are checked like kvmd's validators (``valid_ugpio_channel``, ``valid_bool``,
      ``valid_float_f0``: 400 ``ValidatorError``); an unknown channel is 400
      ``GpioChannelNotFoundError``, a switch or pulse the channel lacks 400 ``GpioSwitchNotSupported``
      / ``GpioPulseNotSupported``, a busy channel 409 (``ugpio.py``, ``htserver.py``). Errors come as
      ``{"ok": false, "result": {"error": name, "error_msg": text}}`` (``make_json_exception``);
    * auth as ``api/auth.py`` ``check_request_auth`` does while ``kvmd.auth.enabled`` (default true):
      an ``X-KVMD-User`` header must name a user of the htpasswd file (``kvmd.auth.internal.file``,
      default ``/etc/kvmd/htpasswd``) with the ``X-KVMD-Passwd`` password, else 403 (a malformed user
      name 400); without that header the peer's uid (``SO_PEERCRED``, ``_check_usc``) must be one of
      ``kvmd.auth.usc.users`` (kvmd 4.197 adds ``kvmd_users``, default ``[root]``; One-KVM's 4.94 has
      no such default), else 401. Cookies, basic auth, usc groups and 2FA are not modelled. The
      htpasswd hashes checked are the ``{SSHA512}`` kvmd writes (``kvmd/crypto.py``: passlib's
      ``ldap_salted_sha512``, base64 of sha512(password + salt) + salt), ``{SSHA256}`` and ``{SHA}``;
    * with ``--streamer``: the streamer command kvmd builds from the merged config (``streamer_cmd``),
      each part formatted with kvmd's placeholders ``{unix}`` (``kvmd.streamer.unix``, default
      ``/run/kvmd/ustreamer.sock``) and ``{process_name_prefix}`` (default ``kvmd/streamer``), as kvmd's
      streamer runner does (``kvmd/apps/kvmd/streamer/__init__.py`` ``__make_params``; 4.94's
      ``streamer.py`` ``__start_streamer_proc``: ``part.format(...)``); an unknown placeholder is a
      failed start, logged and retried. It runs titled ``<process_name_prefix>: <cmd[0]> ...`` (what
      ustreamer's ``--process-name-prefix`` shows) and is started again about a second after it exits.

    Every start is appended to ``$KVMD_STANDIN_STARTS`` (default ``/run/kvmd/standin-starts``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import yaml

UPSTREAM_MAIN = "/usr/lib/kvmd/main.yaml"
ONEKVM_MAIN = "/etc/kvmd/main.yaml"
OVERRIDE_DIR = "/etc/kvmd/override.d"
OVERRIDE = "/etc/kvmd/override.yaml"
REJECT = "/etc/kvmd/standin-reject"
SOCKET = "/run/kvmd/kvmd.sock"
HTPASSWD = "/etc/kvmd/htpasswd"  # kvmd/plugins/auth/htpasswd.py: the default kvmd.auth.internal.file
USER_RE = re.compile(r"^[a-z_]([a-z0-9@._-]*[a-z0-9_-])?$")  # validators/auth.py valid_user (at most 128)
PASSWD_RE = re.compile(r"^[\x20-\x7e]*\Z")  # valid_passwd (at most 512)
NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_-]*$")  # validators/ugpio.py valid_ugpio_driver
CHANNEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.-]*$")  # valid_ugpio_channel
# the pin modes each driver type offers (get_modes() of kvmd/plugins/ugpio/*.py)
DRIVER_MODES = {
    "gpio": {"input", "output"}, "cmd": {"output"}, "cmdret": {"input"}, "hidrelay": {"input", "output"},
    "wol": {"output"}, "locator": {"output"}, "pwm": {"output"}, "otgconf": {"output"}, "servo": {"output"},
    "ipmi": {"input", "output"}, "tesmart": {"input", "output"}, "xh_hk4401": {"input", "output"},
}
LED_COLORS = ("green", "yellow", "red", "blue", "cyan", "magenta", "pink", "white")
PULSE_DEFAULTS = {"delay": 0.1, "min_delay": 0.1, "max_delay": 0.1}  # kvmd/apps/_scheme.py
USTREAMER = [
    "/usr/bin/ustreamer", "--device=/dev/kvmd-video", "--unix=/run/kvmd/ustreamer.sock", "--unix-rm",
    "--unix-mode=0660", "--resolution=640x480", "--format=YUYV", "--desired-fps=2", "--workers=1",
    "--quality=50",
]


class ConfigError(Exception):
    pass


# ---- loading ---------------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    """kvmd's loader: SafeLoader + ``!include``, and yes/no/on/off are not booleans."""

    root = "/"


_Loader.yaml_implicit_resolvers = {
    key: [r for r in resolvers if r[0] != "tag:yaml.org,2002:bool" or key not in "oOyYnN"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _include(loader, node):
    if isinstance(node, yaml.SequenceNode):
        names = [str(item) for item in loader.construct_sequence(node) if isinstance(item, (int, float, str))]
    else:
        names = [str(loader.construct_scalar(node))]
    tree = {}
    for name in filter(None, names):
        path = os.path.join(loader.root, name)
        if os.path.isdir(path):
            for child in sorted(os.listdir(path)):
                child_path = os.path.join(path, child)
                if os.path.isfile(child_path) or os.path.islink(child_path):
                    merge(tree, load_file(child_path))
        else:
            merge(tree, load_file(path))
    return tree


_Loader.add_constructor("!include", _include)


def load_file(path):
    try:
        with open(path) as f:
            loader = _Loader(f)
            loader.root = os.path.dirname(path)
            try:
                data = loader.get_single_data()
            finally:
                loader.dispose()
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError("Can't read config file %r:\n%s" % (path, exc))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("Top-level of the file %r must be a dictionary" % path)
    return data


def merge(dest, src):
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dest.get(key), dict):
            merge(dest[key], value)
        else:
            dest[key] = value
    return dest


def flavour(root="/"):
    """``pikvm`` (kvmd 4.197 layout) or ``one-kvm`` (One-KVM's kvmd 4.94)."""
    return "pikvm" if os.path.isfile(_at(root, UPSTREAM_MAIN)) else "one-kvm"


def _at(root, path):
    return os.path.join(root, path.lstrip("/"))


def load_config(root="/"):
    """The merged config as the kvmd version found under ``root`` loads it (not yet checked)."""
    if flavour(root) == "pikvm":
        config = load_file(_at(root, UPSTREAM_MAIN))
        override = {}
        if not os.path.isdir(_at(root, OVERRIDE_DIR)):
            raise ConfigError("%s is not a directory" % OVERRIDE_DIR)
        for name in sorted(os.listdir(_at(root, OVERRIDE_DIR))):
            path = os.path.join(_at(root, OVERRIDE_DIR), name)
            if os.path.isfile(path) or os.path.islink(path):
                merge(override, load_file(path))
        merge(override, load_file(_at(root, OVERRIDE)))
        return merge(config, override)
    config = load_file(_at(root, ONEKVM_MAIN))
    return merge(config, config.pop("override", None) or {})


# ---- checking ---------------------------------------------------------------------------
def check_config(config, root="/", kind=None):
    """Raise ConfigError where kvmd would; return the checked ``kvmd.gpio`` section (cmd items as strings)."""
    kind = kind or flavour(root)
    if os.path.exists(_at(root, REJECT)):
        with open(_at(root, REJECT)) as f:
            raise ConfigError(f.read().strip() or "rejected by the test bed")
    gpio = ((config.get("kvmd") or {}).get("gpio")) or {}
    drivers = gpio.get("drivers") or {}
    for name, opts in drivers.items():
        if not NAME_RE.match(str(name)) or re.match(r"^__.*__$", str(name)):
            raise ConfigError("Invalid GPIO driver name %r" % name)
        opts = opts or {}
        driver_type = opts.get("type", "gpio")
        if driver_type not in DRIVER_MODES:
            raise ConfigError("Unknown GPIO driver type %r for %r" % (driver_type, name))
        if driver_type in ("cmd", "cmdret"):
            opts["cmd"] = _check_cmd(name, opts.get("cmd"), root, kind)
    for channel, opts in (gpio.get("scheme") or {}).items():
        opts = opts or {}
        if not CHANNEL_RE.match(str(channel)):
            raise ConfigError("Invalid GPIO channel name %r" % channel)
        driver = opts.get("driver", "__gpio__")
        if driver != "__gpio__" and driver not in drivers:
            raise ConfigError("kvmd.gpio.scheme.%s.driver: unknown driver %r" % (channel, driver))
        modes = DRIVER_MODES[(drivers.get(driver) or {}).get("type", "gpio")]
        if opts.get("mode", "") not in modes:
            raise ConfigError("kvmd.gpio.scheme.%s.mode: %r is not one of the driver's modes %s"
                              % (channel, opts.get("mode", ""), sorted(modes)))
        for key in ("inverted", "switch", "initial"):
            if key in opts and opts[key] is not None and not isinstance(opts[key], bool):
                raise ConfigError("kvmd.gpio.scheme.%s.%s: %r is not a bool" % (channel, key, opts[key]))
        pulse = opts.get("pulse")
        if pulse is not None and pulse is not False:
            if not isinstance(pulse, dict):
                raise ConfigError("kvmd.gpio.scheme.%s.pulse: must be a dict or false" % channel)
            for key, low in (("delay", 0.0), ("min_delay", 0.1), ("max_delay", 0.1)):  # valid_float_f0 / _f01
                value = pulse.get(key, PULSE_DEFAULTS[key])
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
                    raise ConfigError("kvmd.gpio.scheme.%s.pulse.%s: %r is not a float >= %s" % (channel, key, value, low))
    view = gpio.get("view") or {}
    for row in view.get("table") or []:
        if not isinstance(row, (list, tuple)):
            raise ConfigError("kvmd.gpio.view.table: each row must be a list, got %r" % (row,))
    return gpio


def _options(value, where):
    """kvmd's ``valid_options`` (validators/os.py): a string is split on commas and tabs, a list's items
    become strings (``valid_string_list``); anything else, or a None item, is refused."""
    if isinstance(value, str):
        value = [item for item in re.split(r"[,\t]+", value) if item]
    if not isinstance(value, (list, tuple)) or any(item is None for item in value):
        raise ConfigError("Invalid value %r for key %r: a list of strings is required" % (value, where))
    return [str(item).strip() for item in value]


def _check_cmd(name, cmd, root, kind):
    where = "kvmd/gpio/drivers/%s/cmd" % name
    cmd = _options(cmd, where) if cmd is not None else None
    if not cmd:
        raise ConfigError("Invalid value %r for key %r: a command is required" % (cmd, where))
    entry = cmd[0]
    if not entry.startswith("/"):
        raise ConfigError("Invalid value %r for key %r: %r is not an absolute path" % (cmd, where, entry))
    if kind == "one-kvm" and not os.path.isfile(_at(root, entry)):
        raise ConfigError("Invalid value %r for key %r: The argument %r is not a valid command entry point: "
                          "[Errno 2] No such file or directory: %r" % (cmd, where, entry, entry))
    return cmd


def streamer_cmd(config):
    """kvmd's final streamer command (``build_cmd``); ConfigError where kvmd's scheme refuses its parts
    (``cmd`` is a ``valid_command``, ``cmd_remove``/``cmd_append`` are ``valid_options``: kvmd/apps/__init__.py)."""
    streamer = (config.get("kvmd") or {}).get("streamer") or {}
    where = "kvmd/streamer/%s"
    cmd = _options(streamer.get("cmd", USTREAMER), where % "cmd")
    if not cmd or not cmd[0].startswith("/"):
        raise ConfigError("Invalid value %r for key %r: a command with an absolute entry point is required"
                          % (cmd, where % "cmd"))
    remove = _options(streamer.get("cmd_remove", []), where % "cmd_remove")
    append = _options(streamer.get("cmd_append", []), where % "cmd_append")
    return [cmd[0]] + [item for item in cmd[1:] if item not in remove] + append


def checked(root="/"):
    config = load_config(root)
    gpio = check_config(config, root)
    return config, gpio


# ---- the GPIO model (kvmd/apps/kvmd/ugpio.py) --------------------------------------------
def effective_pulse(pulse):
    """``(delay, min_delay, max_delay)`` as kvmd's _GpioOutput keeps them: all 0 without a pulse."""
    if pulse is False:
        pulse = {"delay": 0}
    pulse = dict(PULSE_DEFAULTS, **(pulse or {}))
    if not pulse["delay"]:
        return 0.0, 0.0, 0.0
    delay = min(max(pulse["delay"], pulse["min_delay"]), pulse["max_delay"])
    return float(delay), float(pulse["min_delay"]), float(pulse["max_delay"])


def gpio_model(gpio):
    """The ``model`` part of ``GET /api/gpio``: scheme (inputs, non-constant outputs) and view."""
    drivers = gpio.get("drivers") or {}
    inputs, outputs = {}, {}
    for channel, opts in sorted((gpio.get("scheme") or {}).items()):
        hw = {"driver": opts.get("driver", "__gpio__"), "pin": str(opts.get("pin"))}
        if opts.get("mode") == "input":
            inputs[channel] = {"hw": hw}
            continue
        switch = opts.get("switch", True)
        delay, min_delay, max_delay = effective_pulse(opts.get("pulse"))
        if not switch and not delay:
            continue  # is_const(): no button at all
        outputs[channel] = {"switch": switch, "pulse": {"delay": delay, "min_delay": min_delay, "max_delay": max_delay},
                            "hw": hw}
    for out in outputs.values():
        out["hw"]["type"] = (drivers.get(out["hw"]["driver"]) or {}).get("type", "gpio")  # stand-in extra, for tests
    view = gpio.get("view") or {}
    title = (view.get("header") or {}).get("title", "GPIO")
    if isinstance(title, list):
        header = []
        for item in map(str, title):
            if item.startswith("#") or not item:
                header.append(_label(item))
            else:
                parts = [part.strip() for part in item.split("|", 2)]
                if parts[0] in inputs:
                    header.append(_input_item(parts))
    else:
        header = [_label("#%s" % title)]
    table = []
    for row in view.get("table") or []:
        if len(row) == 0:
            table.append(None)
            continue
        items = []
        for item in (str(i).strip() for i in row):
            if item.startswith("#") or not item:
                items.append(_label(item))
                continue
            parts = [part.strip() for part in item.split("|", 2)]
            if parts[0] in inputs:
                items.append(_input_item(parts))
            elif parts[0] in outputs:
                items.append(_output_item(parts))
        table.append(items)
    return {"scheme": {"inputs": inputs, "outputs": outputs}, "view": {"header": {"title": header}, "table": table}}


def _label(item):
    return {"type": "label", "text": item[1:].strip()}


def _input_item(parts):
    color = parts[1] if len(parts) > 1 else None
    return {"type": "input", "channel": parts[0], "color": color if color in LED_COLORS else "green"}


def _output_item(parts):
    confirm = hide = False
    text = "Click"
    if len(parts) == 2:
        text = parts[1]
    elif len(parts) == 3:
        options = parts[1].split(",")
        confirm, hide, text = "confirm" in options, "hide" in options, parts[2]
    return {"type": "output", "channel": parts[0], "confirm": confirm, "hide": hide, "text": text}


def web_ui(model):
    """What web/share/js/kvm/gpio.js draws: rows of controls, ``None`` for a separator.

    A label is its text; an input a lamp; an output a switch if ``switch`` (whose state a cmd
    driver always reads false) and a button with the item's text if the pulse delay is not 0.
    """
    rows = []
    for row in model["view"]["table"]:
        if row is None:
            rows.append(None)
            continue
        drawn = []
        for item in row:
            if item["type"] == "label":
                drawn.append({"label": item["text"]})
            elif item["type"] == "input":
                drawn.append({"lamp": item["channel"], "color": item["color"]})
            else:
                scheme = model["scheme"]["outputs"][item["channel"]]
                control = {"channel": item["channel"], "confirm": item["confirm"]}
                if scheme["switch"]:
                    control["switch"] = "never on" if scheme["hw"].get("type") == "cmd" else "on/off"
                if scheme["pulse"]["delay"]:
                    control.update(button=item["text"], pulse=scheme["pulse"]["delay"], hide=item["hide"])
                drawn.append(control)
        rows.append(drawn)
    return rows


# ---- the service -------------------------------------------------------------------------
def log(msg):
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


class Hid:
    """kvmd's ch9329 HID loop: the port held open (not exclusively), GET_INFO when idle."""

    GET_INFO = bytes.fromhex("57ab00010003")

    def __init__(self, device, speed, read_timeout):
        self.device, self.speed, self.read_timeout = device, speed, read_timeout
        self.online = False
        self.polls = 0
        self.stopped = threading.Event()

    def run(self):
        import serial  # pylint: disable=import-outside-toplevel

        while not self.stopped.is_set():
            try:
                with serial.Serial(self.device, self.speed, timeout=self.read_timeout) as tty:
                    log("HID: %s opened" % self.device)
                    while not self.stopped.is_set():
                        tty.write(self.GET_INFO)
                        self.polls += 1
                        if self._reply_ok(tty):
                            self.online = True
                            time.sleep(0.1)  # the command queue's get(timeout=0.1) when idle
                        else:
                            self.online = False
                            self.stopped.wait(2)
            except (OSError, serial.SerialException) as exc:
                self.online = False
                log("HID: %s: %s; retrying in 2 s" % (self.device, exc))
                self.stopped.wait(2)

    @staticmethod
    def _reply_ok(tty):
        data = tty.read(5)
        if len(data) < 5:
            return False
        if data[4]:
            data += tty.read(data[4] + 1)
        return sum(data[:-1]) % 256 == data[-1] and not (data[4] == 1 and data[5] != 0)


class Gpio:
    """kvmd's user GPIO for the cmd/cmdret drivers: pulses run the command as kvmd's child."""

    def __init__(self, gpio):
        self.gpio = gpio
        self.model = gpio_model(gpio)
        self.busy = set()
        self.lock = threading.Lock()
        self.switched = {}  # what a switch wrote, for the drivers that read it back (a cmd driver reads False)

    def _driver(self, channel):
        opts = self.gpio["scheme"][channel]
        return self.gpio.get("drivers", {}).get(opts.get("driver", "__gpio__"), {})

    def state(self):
        outputs = {ch: {"online": True, "state": self.switched.get(ch, False), "busy": ch in self.busy}
                   for ch in self.model["scheme"]["outputs"]}
        inputs = {}
        for ch in self.model["scheme"]["inputs"]:
            driver = self._driver(ch)
            state = False
            if driver.get("type") == "cmdret":
                state = subprocess.run(driver["cmd"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       check=False).returncode == 0
            inputs[ch] = {"online": True, "state": state ^ bool(self.gpio["scheme"][ch].get("inverted", False))}
        return {"inputs": inputs, "outputs": outputs}

    def pulse(self, channel, delay, wait):
        scheme = self.model["scheme"]["outputs"].get(channel)
        if scheme is None:
            return 400, "GpioChannelNotFoundError"
        if not scheme["pulse"]["delay"]:
            return 400, "GpioPulseNotSupported"
        pulse = scheme["pulse"]
        delay = min(max(delay or pulse["delay"], pulse["min_delay"]), pulse["max_delay"])
        return self._run(channel, wait, self._pulse, delay)

    def switch(self, channel, state, wait):
        """ugpio.py ``switch``: only a channel with ``switch`` on; the driver writes the state."""
        scheme = self.model["scheme"]["outputs"].get(channel)
        if scheme is None:
            return 400, "GpioChannelNotFoundError"
        if not scheme["switch"]:
            return 400, "GpioSwitchNotSupported"
        return self._run(channel, wait, self._switch, state)

    def _run(self, channel, wait, action, arg):
        with self.lock:
            if channel in self.busy:
                return 409, "GpioChannelIsBusyError"
            self.busy.add(channel)
        worker = threading.Thread(target=action, args=(channel, arg), daemon=True)
        worker.start()
        if wait:
            worker.join()
        return 200, None

    def _switch(self, channel, state):
        try:
            self._write(channel, state)
            if self._driver(channel).get("type") != "cmd":
                self.switched[channel] = state
            log("GPIO: Ensured switch %s to state=%d" % (channel, state))
        finally:
            with self.lock:
                self.busy.discard(channel)

    def _pulse(self, channel, delay):
        try:
            self._write(channel, True)
            time.sleep(delay)
            self._write(channel, False)
            log("GPIO: Pulsed %s with delay=%.2f" % (channel, delay))
        finally:
            with self.lock:
                self.busy.discard(channel)

    def _write(self, channel, state):
        driver = self._driver(channel)
        if driver.get("type") != "cmd" or not state:
            return
        cmd = driver["cmd"]
        # kvmd/aioproc.py run_process: its own child, own process group, output logged; waited for
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=os.setpgrp)
        except OSError as exc:
            log("GPIO: Can't run custom command [ %s ]: %s" % (" ".join(cmd), exc))
            return
        for line in proc.stdout:
            log("GPIO: CMD(%s): %s" % (channel, line.decode(errors="replace").rstrip()))
        if proc.wait() != 0:
            log("GPIO: Can't run custom command [ %s ]: Custom command error: retcode=%d" % (" ".join(cmd), proc.returncode))


ERROR_MSGS = {  # kvmd/apps/kvmd/ugpio.py, htserver.py: the text kvmd sends with each error name
    "GpioChannelNotFoundError": "GPIO channel is not found",
    "GpioSwitchNotSupported": "This GPIO channel does not support switching",
    "GpioPulseNotSupported": "This GPIO channel does not support pulsing",
    "GpioChannelIsBusyError": "Performing another GPIO operation on this channel, please try again later",
    "UnauthorizedError": "Unauthorized",
    "ForbiddenError": "Forbidden",
    "NotFound": "Not Found",
}


def check_htpasswd_hash(stored, passwd):
    """passlib's check for the LDAP-style hashes kvmd's htpasswd holds (kvmd/crypto.py)."""
    for ident, algo, size in (("{SSHA512}", "sha512", 64), ("{SSHA256}", "sha256", 32), ("{SHA}", "sha1", 20)):
        if stored.startswith(ident):
            try:
                raw = base64.b64decode(stored[len(ident):], validate=True)
            except ValueError:
                return False
            digest, salt = raw[:size], raw[size:]
            if ident == "{SHA}" and salt:
                return False
            return hmac.compare_digest(hashlib.new(algo, passwd.encode() + salt).digest(), digest)
    return False  # other schemes (crypt, apr1) are not modelled: refused


class Auth:
    """kvmd's request auth (api/auth.py check_request_auth) for X-KVMD-* headers and unix peers."""

    def __init__(self, htpasswd=HTPASSWD, usc_users=()):
        self.htpasswd = htpasswd
        self.usc_uids = set()
        for name in usc_users:
            try:
                import pwd  # pylint: disable=import-outside-toplevel

                self.usc_uids.add(pwd.getpwnam(name).pw_uid)
            except KeyError:
                pass  # kvmd skips a user that does not exist

    @classmethod
    def from_config(cls, config, kind):
        auth = ((config.get("kvmd") or {}).get("auth")) or {}
        if auth.get("enabled", True) is False:
            return None
        usc = auth.get("usc") or {}
        users = list(usc.get("users") or [])
        if kind == "pikvm":
            users += list(usc.get("kvmd_users", ["root"]) or [])  # kvmd 4.197 _scheme.py; One-KVM has none
        return cls((auth.get("internal") or {}).get("file", HTPASSWD), users)

    def check(self, headers, peer_uid):
        """``None`` when allowed, else ``(status, error name)``."""
        user = headers.get("x-kvmd-user", "")
        if user:
            passwd = headers.get("x-kvmd-passwd", "")
            if len(user) > 128 or not USER_RE.match(user) or len(passwd) > 512 or not PASSWD_RE.match(passwd):
                return 400, "ValidatorError"
            return None if self._authorize(user, passwd) else (403, "ForbiddenError")
        if peer_uid is not None and peer_uid in self.usc_uids:
            return None
        return 401, "UnauthorizedError"

    def _authorize(self, user, passwd):
        try:
            with open(self.htpasswd) as f:
                lines = f.read(1024 * 1024).splitlines()
        except OSError:
            return False
        for line in lines:
            name, sep, stored = line.strip().partition(":")
            if sep and name == user:
                return check_htpasswd_hash(stored, passwd)
        return False


def _bool_arg(query, key, default=None):
    """validators/basic.py valid_bool: 1/true/yes, 0/false/no (any case), else ValueError."""
    value = query.get(key, default)
    value = value if isinstance(value, bool) else str(value if value is not None else "").strip().lower()
    if isinstance(value, bool):
        return value
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    raise ValueError(key)


def _error(status, name, msg=None):
    return status, {"error": name, "error_msg": msg or ERROR_MSGS.get(name, name)}


class Api:
    """The part of kvmd's HTTP API on its unix socket that the test bed uses."""

    def __init__(self, gpio, hid, path=SOCKET, auth=None):
        self.gpio, self.hid, self.path, self.auth = gpio, hid, path, auth

    def serve(self, ready=None):
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        server = socket.socket(socket.AF_UNIX)
        server.bind(self.path)
        os.chmod(self.path, 0o660)
        server.listen(8)
        if ready is not None:
            ready.set()
        while True:
            conn = server.accept()[0]
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        from urllib.parse import parse_qs, urlsplit  # pylint: disable=import-outside-toplevel

        with conn:
            conn.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk or len(data) > 65536:
                    return
                data += chunk
            lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
            method, target = (lines[0].split(" ") + ["", ""])[:2]
            headers = {}
            for line in lines[1:]:
                name, _sep, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            url = urlsplit(target)
            query = {key: values[-1] for key, values in parse_qs(url.query).items()}
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
            status, result = self.route(method, url.path, query, headers, int.from_bytes(creds[4:8], sys.byteorder))
            body = json.dumps({"ok": status == 200, "result": result}).encode()
            conn.sendall(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n%s" % (status, len(body), body))

    def route(self, method, path, query, headers=None, peer_uid=None):
        routes = {("GET", "/gpio"), ("POST", "/gpio/pulse"), ("POST", "/gpio/switch"), ("GET", "/hid")}
        if (method, path) not in routes:
            return _error(404, "NotFound")
        if self.auth is not None:
            refused = self.auth.check(headers or {}, peer_uid)
            if refused:
                return _error(*refused)
        if path == "/gpio":
            return 200, {"model": self.gpio.model, "state": self.gpio.state()}
        if path == "/hid":
            return 200, {"online": bool(self.hid and self.hid.online), "busy": False}
        channel = query.get("channel", "")
        try:
            if not CHANNEL_RE.match(channel) or len(channel) > 255:
                raise ValueError("channel")
            wait = _bool_arg(query, "wait", False)
            if path == "/gpio/pulse":
                delay = float(query.get("delay", 0))
                if not math.isfinite(delay) or delay < 0:  # valid_float_f0: a number >= 0
                    raise ValueError("delay")
            else:
                state = _bool_arg(query, "state")
        except ValueError as exc:
            return _error(400, "ValidatorError", "The argument %s is not valid" % exc)
        if path == "/gpio/pulse":
            status, error = self.gpio.pulse(channel, delay, wait)
        else:
            status, error = self.gpio.switch(channel, state, wait)
        return _error(status, error) if error else (status, {})


def streamer_run_cmd(config):
    """The streamer command kvmd starts: ``streamer_cmd`` with kvmd's placeholders filled in, and the
    process title; ConfigError for a placeholder kvmd does not know (kvmd fails that start)."""
    streamer = (config.get("kvmd") or {}).get("streamer") or {}
    params = {"unix": str(streamer.get("unix", "/run/kvmd/ustreamer.sock")),
              "process_name_prefix": str(streamer.get("process_name_prefix", "kvmd/streamer"))}
    try:
        cmd = [part.format(**params) for part in streamer_cmd(config)]
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError("Can't start streamer: bad placeholder %s in kvmd/streamer/cmd" % exc) from None
    return cmd, "%s: %s" % (params["process_name_prefix"], cmd[0])


def run_streamer(config):
    while True:
        try:
            cmd, title = streamer_run_cmd(config)
        except ConfigError as exc:
            log(str(exc))
            time.sleep(1)
            continue
        log("Started streamer: %s" % json.dumps(cmd))
        # argv[0] is the title, so "kill the kvmd/streamer process" works as on a box
        child = subprocess.Popen([title] + cmd[1:], executable=cmd[0])
        Service.children.append(child)
        child.wait()
        Service.children.remove(child)
        log("streamer exited with %s, restarting in 1 s" % child.returncode)
        time.sleep(1)


class Service:
    children = []

    @classmethod
    def stop(cls, signum, frame):
        # kvmd stops its streamer; a button's command is left to systemd (KillMode=mixed kills it)
        for child in list(cls.children):
            child.terminate()
        sys.exit(0)


def run(streamer):
    starts = os.environ.get("KVMD_STANDIN_STARTS", "/run/kvmd/standin-starts")
    with open(starts, "a") as f:
        f.write("%d %.3f\n" % (os.getpid(), time.time()))
    config, gpio = checked()
    signal.signal(signal.SIGTERM, Service.stop)
    log("kvmd stand-in started (%s)" % flavour())
    hid_conf = ((config.get("kvmd") or {}).get("hid")) or {}
    hid = None
    if hid_conf.get("type") == "ch9329":
        hid = Hid(hid_conf.get("device", "/dev/kvmd-hid"), int(hid_conf.get("speed", 9600)),
                  float(hid_conf.get("read_timeout", 0.3)))
        threading.Thread(target=hid.run, daemon=True).start()
    threading.Thread(target=Api(Gpio(gpio), hid, auth=Auth.from_config(config, flavour())).serve, daemon=True).start()
    if streamer:
        threading.Thread(target=run_streamer, args=(config,), daemon=True).start()
    while True:
        time.sleep(3600)


def main(argv):
    try:
        if argv in (["-m"], ["--dump-config"]):
            config = checked()[0]
            sys.stdout.write(yaml.safe_dump(config, default_flow_style=False, sort_keys=True, allow_unicode=True))
            return 0
        if argv == ["--standin-gpio-model"]:
            gpio = checked()[1]
            sys.stdout.write(json.dumps(gpio_model(gpio), indent=2, sort_keys=True, ensure_ascii=False) + "\n")
            return 0
        if argv == ["--standin-streamer-cmd"]:
            sys.stdout.write(json.dumps(streamer_cmd(checked()[0])) + "\n")
            return 0
        if argv[:1] == ["--run"] and set(argv[1:]) <= {"--streamer"}:
            run("--streamer" in argv)
            return 0
    except ConfigError as exc:
        sys.stderr.write("ConfigError: %s\n" % exc)
        return 1
    sys.stderr.write("kvmd stand-in: only `kvmd -m`, `kvmd --standin-gpio-model`, `kvmd --standin-streamer-cmd` and "
                     "`kvmd --run [--streamer]`\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
