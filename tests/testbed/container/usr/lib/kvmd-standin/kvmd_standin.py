"""Stand-in for `kvmd -m` (dump the merged config) in the role's molecule container.

Real kvmd is not installable in the test bed. This loads the config set the way kvmd does
(main.yaml, every file in override.d in sorted order whatever its suffix, override.yaml;
dicts deep-merge, lists and scalars are replaced), checks the kvmd.gpio section with
kvmd's rules for names, drivers, modes and view items, prints the merged config and exits
non-zero with `ConfigError: ...` on a problem, as kvmd does.

Failure injection for tests: if /etc/kvmd/standin-reject exists, its text is reported
as a ConfigError (a config kvmd rejects for a reason the role cannot foresee).
"""
import os
import re
import sys

import yaml

MAIN = "/usr/lib/kvmd/main.yaml"
OVERRIDE_DIR = "/etc/kvmd/override.d"
OVERRIDE = "/etc/kvmd/override.yaml"
REJECT = "/etc/kvmd/standin-reject"
NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_-]*$")
CHANNEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.-]*$")
DRIVER_TYPES = ("gpio", "cmd", "cmdret", "hidrelay", "locator", "pwm", "otgconf", "wol")


class ConfigError(Exception):
    pass


def load(path):
    with open(path) as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            raise ConfigError("Can't parse %s: %s" % (path, exc))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("%s: the top level must be a dict" % path)
    return data


def merge(dest, src):
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dest.get(key), dict):
            merge(dest[key], value)
        else:
            dest[key] = value


def check_gpio(gpio):
    drivers = gpio.get("drivers") or {}
    for name, opts in drivers.items():
        if not NAME_RE.match(str(name)) or re.match(r"^__.*__$", str(name)):
            raise ConfigError("Invalid driver name %r" % name)
        kind = opts.get("type", "gpio")
        if kind not in DRIVER_TYPES:
            raise ConfigError("Unknown GPIO driver type %r for %r" % (kind, name))
        if kind in ("cmd", "cmdret"):
            cmd = opts.get("cmd")
            if not isinstance(cmd, list) or not cmd or not all(isinstance(a, str) for a in cmd):
                raise ConfigError("kvmd.gpio.drivers.%s.cmd: a list of strings is required" % name)
    for channel, opts in (gpio.get("scheme") or {}).items():
        if not CHANNEL_RE.match(str(channel)):
            raise ConfigError("Invalid GPIO channel name %r" % channel)
        driver = opts.get("driver", "__gpio__")
        if driver != "__gpio__" and driver not in drivers:
            raise ConfigError("kvmd.gpio.scheme.%s.driver: unknown driver %r" % (channel, driver))
        if opts.get("mode", "input") not in ("input", "output"):
            raise ConfigError("kvmd.gpio.scheme.%s.mode: must be input or output" % channel)
        for key in ("inverted", "switch", "initial"):
            if key in opts and opts[key] is not None and not isinstance(opts[key], bool):
                raise ConfigError("kvmd.gpio.scheme.%s.%s: must be a bool" % (channel, key))
    table = ((gpio.get("view") or {}).get("table")) or []
    for row in table:
        if not isinstance(row, list) or not all(isinstance(item, str) for item in row):
            raise ConfigError("kvmd.gpio.view.table: each row must be a list of strings")


def main(argv):
    if argv not in (["-m"], ["--dump-config"]):
        sys.stderr.write("kvmd stand-in: only `kvmd -m` is implemented\n")
        return 2
    try:
        config = load(MAIN)
        if os.path.isdir(OVERRIDE_DIR):
            for name in sorted(os.listdir(OVERRIDE_DIR)):
                path = os.path.join(OVERRIDE_DIR, name)
                if os.path.isfile(path):
                    merge(config, load(path))
        if os.path.exists(OVERRIDE):
            merge(config, load(OVERRIDE))
        if os.path.exists(REJECT):
            with open(REJECT) as f:
                raise ConfigError(f.read().strip() or "rejected by the test bed")
        check_gpio((config.get("kvmd") or {}).get("gpio") or {})
    except ConfigError as exc:
        sys.stderr.write("ConfigError: %s\n" % exc)
        return 1
    sys.stdout.write(yaml.safe_dump(config, default_flow_style=False, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
