# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""kvmd on the box: its HID settings from its config files, and pausing it around a
serial exchange.

PRIVATE to the onekvm.fleet collection. Box-side core: standard library only.

kvmd loads ``main.yaml`` (``/usr/lib/kvmd``, older kvmd ``/etc/kvmd``), then every file
in ``/etc/kvmd/override.d/`` in sorted order whatever its suffix, then
``/etc/kvmd/override.yaml``; dicts deep-merge, lists and scalars are replaced. PyYAML
cannot be assumed on the box, so ``parse_yaml_mappings`` reads the block-mapping subset
those files use for scalars (sequences, flow collections and block scalars are kept as
opaque values: replaced as a whole when merging, never interpreted).

kvmd keeps the HID port open (not exclusively) and polls it every ~0.1 s, which would
steal our replies: ``paused_for_port`` stops the kvmd units that really hold the port (a
process of the unit has it open, seen in /proc) and always starts them again. Stopping kvmd
drops every web session, so reading and checking never do it: a read-only caller gets
``KvmdHoldsPort`` instead and says what it could not read.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess

from ._errors import Busy, DeviceError, MissingDependency, PermissionDenied
from ._serialport import port_users

MAIN_CONFIGS = ("usr/lib/kvmd/main.yaml", "etc/kvmd/main.yaml")  # first that exists, relative to root
OVERRIDE_DIR = "etc/kvmd/override.d"
OVERRIDE_FILE = "etc/kvmd/override.yaml"
# The services that may hold the CH9329's port: kvmd (PiKVM, One-KVM's kvmd branch) or, on One-KVM 0.2
# (no kvmd), one-kvm.service itself (build/one-kvm.service; src/hid/ch9329.rs opens the port with
# serialport 4, which takes it exclusively with TIOCEXCL - root still gets in, so it must be paused).
ONEKVM2_UNIT = "one-kvm.service"
DEFAULT_UNITS = ("kvmd.service", "kvmd-hid.service", ONEKVM2_UNIT)
# The Reset HID button's work runs in this unit (the role's _onekvm_reset_hid_unit): outside kvmd's
# cgroup, since stopping kvmd kills every process kvmd started (KillMode=mixed)
RESET_HID_UNIT = "onekvm-reset-hid.service"
KVMD_ROOT_ENV = "ONEKVM_KVMD_ROOT"  # tests point this at a fake config tree
SYSTEMCTL_ENV = "ONEKVM_SYSTEMCTL"  # tests point this at a stand-in service manager

_KEY_LINE = re.compile(r"""^(?P<indent> *)(?P<key>"[^"]*"|'[^']*'|[^\s#'"\-][^:#]*?|-[^\s:#][^:#]*?)\s*:(?:\s+(?P<value>.*))?$""")


class KvmdHoldsPort(Busy):
    """kvmd holds the port and this call may not stop it (a read, a check)."""


class Opaque(str):
    """A YAML value this reader does not interpret (a sequence, flow collection, block scalar)."""


def kvmd_root(root: str | None = None) -> str:
    return root or os.environ.get(KVMD_ROOT_ENV) or "/"


def systemctl_path(systemctl: str | None = None) -> str:
    return systemctl or os.environ.get(SYSTEMCTL_ENV) or "systemctl"


# -- config files -------------------------------------------------------------------
def parse_yaml_mappings(text: str) -> dict:
    """Nested dicts of the block mappings in ``text``; scalars typed like kvmd sees them."""
    root: dict = {}
    stack = [(-1, root, None, None)]  # (indent, mapping, its parent mapping, its key there)
    skip_deeper_than = None  # lines deeper than this belong to an opaque value
    for raw in text.splitlines():
        line = _strip_comment(raw).rstrip()
        if not line.strip() or line.strip() in ("---", "..."):
            continue
        indent = len(line) - len(line.lstrip(" "))
        if skip_deeper_than is not None and indent > skip_deeper_than:
            continue
        skip_deeper_than = None
        if line.lstrip() == "-" or line.lstrip().startswith("- "):
            _mark_sequence(stack, indent)
            skip_deeper_than = indent
            continue
        while stack[-1][0] >= indent:
            stack.pop()
        mapping = stack[-1][1]
        match = _KEY_LINE.match(line)
        if not match:
            skip_deeper_than = indent  # something this reader does not model
            continue
        key = _unquote(match.group("key").strip())
        value = (match.group("value") or "").strip()
        if not value:
            child: dict = {}
            mapping[key] = child
            stack.append((indent, child, mapping, key))
        elif value[0] in "[{|>&*!":
            mapping[key] = Opaque(value)
            skip_deeper_than = indent
        else:
            mapping[key] = _scalar(value)
    return root


def _mark_sequence(stack: list, indent: int) -> None:
    """``key:`` followed by ``- item`` lines (indented or not) is a sequence: opaque."""
    while len(stack) > 1 and stack[-1][0] > indent:
        stack.pop()
    mapping, parent, key = stack[-1][1:]
    if parent is not None and not mapping and stack[-1][0] <= indent:
        parent[key] = Opaque("<sequence>")
        stack.pop()


def _strip_comment(line: str) -> str:
    quote = None
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _scalar(text: str):
    if text[0] in "'\"":
        return _unquote(text)
    if text in ("true", "false"):  # kvmd's loader: yes/no/on/off stay strings
        return text == "true"
    if text in ("null", "~"):
        return None
    if re.fullmatch(r"[-+]?[0-9]+", text):
        return int(text)
    if re.fullmatch(r"[-+]?[0-9]*\.[0-9]+", text):
        return float(text)
    return text


def merge(base: dict, override: dict) -> dict:
    """kvmd's merge: dicts deep-merge, everything else is replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def config_files(root: str | None = None) -> list:
    """kvmd's config files in load order (only those that exist)."""
    root = kvmd_root(root)
    files = []
    for rel in MAIN_CONFIGS:
        path = os.path.join(root, rel)
        if os.path.isfile(path):
            files.append(path)
            break
    override_dir = os.path.join(root, OVERRIDE_DIR)
    if os.path.isdir(override_dir):
        files.extend(os.path.join(override_dir, name) for name in sorted(os.listdir(override_dir))
                     if os.path.isfile(os.path.join(override_dir, name)))
    override = os.path.join(root, OVERRIDE_FILE)
    if os.path.isfile(override):
        files.append(override)
    return files


def read_config(root: str | None = None) -> dict:
    """kvmd's merged config (the subset this reader models); unreadable files are skipped."""
    merged: dict = {}
    for path in config_files(root):
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                merged = merge(merged, parse_yaml_mappings(f.read()))
        except OSError:
            continue
    return merged


def hid_settings(root: str | None = None) -> dict:
    """kvmd's ``kvmd.hid`` type, device and speed (None where not configured)."""
    hid = read_config(root).get("kvmd", {})
    hid = hid.get("hid", {}) if isinstance(hid, dict) else {}
    if not isinstance(hid, dict):
        hid = {}
    speed = hid.get("speed")
    return {
        "type": hid.get("type") if isinstance(hid.get("type"), str) else None,
        "device": hid.get("device") if isinstance(hid.get("device"), str) else None,
        "speed": speed if isinstance(speed, int) and not isinstance(speed, bool) else None,
    }


# -- the service manager ------------------------------------------------------------
class ServiceManager:
    """The few systemctl calls needed (the binary is a parameter so tests can stand in)."""

    def __init__(self, systemctl: str | None = None, timeout: float = 60.0) -> None:
        self.systemctl = systemctl_path(systemctl)
        self.timeout = timeout

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        try:
            # box-side core, no AnsibleModule here: run_command is not available
            return subprocess.run([self.systemctl, *args], capture_output=True, text=True,  # pylint: disable=ansible-bad-function
                                  timeout=self.timeout, check=False)
        except FileNotFoundError:
            raise MissingDependency("%s not found: pausing kvmd needs systemd; set pause_kvmd: false and stop kvmd "
                                    "yourself" % self.systemctl) from None
        except PermissionError:
            raise PermissionDenied("cannot run %s: permission denied; run as root (become: true)" % self.systemctl) from None
        except subprocess.TimeoutExpired:
            raise DeviceError("%s %s did not finish within %.0f s" % (self.systemctl, " ".join(args), self.timeout)) from None

    def is_active(self, unit: str) -> bool:
        return self._run("is-active", "--quiet", unit).returncode == 0

    def show(self, unit: str, *props: str) -> dict:
        """``systemctl show`` properties of ``unit`` (empty strings where systemd has none)."""
        out = self._run("show", *["--property=%s" % prop for prop in props], unit).stdout
        values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        return {prop: values.get(prop, "") for prop in props}

    def main_pid(self, unit: str) -> int:
        out = self._run("show", "--property=MainPID", "--value", unit).stdout.strip()
        return int(out) if out.isdigit() else 0

    def stop(self, unit: str) -> None:
        self._change("stop", unit)

    def start(self, unit: str) -> None:
        self._change("start", unit)

    def _change(self, verb: str, unit: str) -> None:
        res = self._run(verb, unit)
        if res.returncode != 0:
            text = (res.stderr or res.stdout).strip()
            if "access denied" in text.lower() or "interactive authentication" in text.lower():
                raise PermissionDenied("cannot %s %s: %s; run as root (become: true)" % (verb, unit, text), unit=unit)
            raise DeviceError("systemctl %s %s failed: %s" % (verb, unit, text or "exit %d" % res.returncode), unit=unit)


def _ancestors(pid: int, proc: str = "/proc") -> list:
    """``pid`` and its parents up to init (kvmd's HID runs in a child of the main process)."""
    chain = []
    while pid > 1 and pid not in chain:
        chain.append(pid)
        try:
            with open("%s/%d/stat" % (proc, pid)) as f:
                stat = f.read()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return chain


def _in_unit_cgroup(pid: int, unit: str, proc: str = "/proc") -> bool:
    """Whether ``pid`` runs in ``unit``'s cgroup (a child kvmd started, whatever its parent)."""
    try:
        with open("%s/%d/cgroup" % (proc, pid)) as f:
            return any(line.rstrip("\n").endswith("/" + unit) for line in f)
    except OSError:
        return False


def port_holders(port: str) -> list:
    """Processes other than this one that have ``port`` open (pid, comm)."""
    return [u for u in port_users(port) if u["pid"] != os.getpid()]


def units_holding_port(port: str, manager: ServiceManager, units=DEFAULT_UNITS, holders=None) -> list:
    """Active units among ``units`` one of whose processes has ``port`` open."""
    pids = [u["pid"] for u in (port_holders(port) if holders is None else holders)]
    if not pids:
        return []
    found = []
    for unit in units:
        if not manager.is_active(unit):
            continue
        main = manager.main_pid(unit)
        if any((main and main in _ancestors(pid)) or _in_unit_cgroup(pid, unit) for pid in pids):
            found.append(unit)
    return found


@contextlib.contextmanager
def paused_for_port(port: str, enabled: bool = True, systemctl: str | None = None, units=DEFAULT_UNITS,
                    read_only: bool = False):
    """Stop the kvmd units holding ``port`` for the ``with`` body; always start them again.

    Yields ``{"holding": [units], "paused": [units], "warnings": [...]}``. Nothing is
    stopped when no unit's process has the port open. With ``enabled=False`` nothing is
    stopped either: a ``read_only`` caller gets ``KvmdHoldsPort`` when kvmd holds the port,
    any other caller a warning that kvmd may steal replies.
    """
    manager = ServiceManager(systemctl)
    holders = port_holders(port)
    holding = units_holding_port(port, manager, units, holders)
    state: dict = {"holding": holding, "paused": [], "warnings": []}
    if holding and not enabled:
        who = ", ".join("%s pid %d" % (u["comm"], u["pid"]) for u in holders)
        if read_only:
            how = ("talks to the chip (it opened the port exclusively)" if holding == [ONEKVM2_UNIT]
                   else "polls the chip about every 0.1 s")
            raise KvmdHoldsPort("%s holds %s (%s) and %s" % (" and ".join(holding), port, who, how),
                                units=holding, port=port)
        state["warnings"].append("%s holds %s and polls it; replies may be lost (pause_kvmd is off)"
                                 % (", ".join(holding), port))
        holding = []
    try:
        for unit in holding:
            manager.stop(unit)
            state["paused"].append(unit)
        yield state
    finally:
        _restart(manager, state["paused"])


def _restart(manager: ServiceManager, units: list) -> None:
    failures = []
    for unit in reversed(units):
        try:
            manager.start(unit)
        except (DeviceError, PermissionDenied, MissingDependency) as exc:
            failures.append(exc.msg)
    if failures:
        raise DeviceError("could not start kvmd again after the exchange: %s; start it by hand "
                          "(systemctl start %s)" % ("; ".join(failures), " ".join(units)), units=units)


def reset_hid_outcome(systemctl: str | None = None, unit: str = RESET_HID_UNIT) -> dict | None:
    """How the last Reset HID run went (None where its unit is not installed), for ``onekvm status``."""
    try:
        props = ServiceManager(systemctl, timeout=10).show(unit, "LoadState", "ActiveState", "Result", "ExecMainStatus",
                                                           "ExecMainStartTimestamp", "ExecMainExitTimestamp",
                                                           "InactiveExitTimestamp")
    except (DeviceError, MissingDependency, PermissionDenied):
        return None
    if props["LoadState"] != "loaded":
        return None
    # on the simulated box (systemd 252) ExecMainStartTimestamp was empty once the oneshot unit had
    # ended; the time a unit leaves "inactive" is recorded on every start, whatever its type
    started = props["ExecMainStartTimestamp"] or props["InactiveExitTimestamp"]
    if props["ActiveState"] in ("activating", "deactivating"):
        summary = "running since %s" % started
    elif not started:
        summary = "not run since boot"
    elif props["Result"] == "success":
        summary = "last run at %s succeeded" % started
    else:
        summary = "last run at %s failed (%s, exit status %s): journalctl -u %s" % (
            started, props["Result"], props["ExecMainStatus"] or "?", unit)
    return {"unit": unit, "state": props["ActiveState"], "result": props["Result"], "summary": summary,
            "started": started, "exited": props["ExecMainExitTimestamp"]}
