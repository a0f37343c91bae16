#!/usr/bin/python
# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: render_check
short_description: Write the files the onekvm role rendered for each box into a directory and check them as the box would
version_added: 1.1.0
description:
  - The checking half of the C(onekvm.fleet.validate) playbook, run once on the controller for the whole inventory.
    The files come from the role's own rendering (its C(offline) entry point, fact C(_onekvm_files)); this module only
    writes and checks them, it renders nothing itself.
  - Writes each box's files to O(dest)C(/<host>/<path on the box>) with the box's file modes (an artifact a reviewer can
    read), then checks each one the way the box would.
  - C(gpio.yaml) is loaded back as YAML like kvmd loads it and must give the section the role decided, with every button of
    the view in the scheme and every channel's driver defined (kvmd drops unknown channels from the view without a word).
  - The sudoers drop-in is checked with the real C(visudo -cf) (the same command the role validates it with on the box);
    the controller needs the C(sudo) package for it.
  - The watchdog config is checked with the box command's own config check (the code behind C(onekvm watchdog --check-config)).
  - The watchdog unit is checked with C(systemd-analyze verify) against the rendered tree, where systemd is installed
    (otherwise the check is reported as skipped). udev rules are checked with C(udevadm verify) where it exists (systemd 254+).
  - Shell scripts are checked with C(sh -n), Python scripts with Python's compiler.
  - A host whose rendering failed (a bad button or variable) is reported with the role's message, which names the host's
    button or variable and what to change.
  - Identical files of different hosts are checked once.
author:
  - onekvm.fleet maintainers (@onekvm)
options:
  hosts:
    description: The hosts, in report order.
    type: list
    elements: str
    required: true
  files:
    description:
      - Per host, the role's C(_onekvm_files) fact; each entry has C(path) (absolute path on the box), C(content), C(mode),
        C(present) (whether the box gets the file), for V(kvmd) C(data) (the config the role decided) and C(check)
        (V(kvmd), V(visudo), V(watchdog-config), V(systemd-unit),
        V(udev), V(script), or V(none)).
    type: dict
    default: {}
  errors:
    description:
      - Per host, why the role's checks or rendering failed (empty or missing when they passed), as a dictionary with
        C(task) (the role's task that failed) and C(msg) (its message), or a string.
    type: dict
    default: {}
  kvmd:
    description:
      - Per host, the box's kvmd flavour (V(pikvm) or V(one-kvm)). On V(one-kvm) a command button's program must already
        exist on the box (its kvmd refuses the config otherwise); programs the role does not install are listed as warnings.
    type: dict
    default: {}
  dest:
    description: Directory for the rendered files (one subdirectory per host, replaced on each run) and C(summary.md).
    type: path
    required: true
  junit:
    description: Also write a JUnit XML report here (one test case per host and file).
    type: path
  visudo:
    description: The visudo program.
    type: str
    default: visudo
extends_documentation_fragment:
  - onekvm.fleet.attributes
attributes:
  check_mode:
    support: full
    details: In check mode the files are written to a temporary directory, checked, and removed.
  diff_mode:
    support: none
  idempotent:
    support: none
    details: The files are written and checked on every run outside check mode, which reports changed.
  platform:
    details: Runs on the controller.
notes:
  - Runs on the controller (the playbook delegates it to C(localhost)); no box is contacted.
"""

EXAMPLES = r"""
- name: Check what the role rendered for every host (see playbooks/validate.yml)
  onekvm.fleet.render_check:
    hosts: "{{ names }}"
    files: "{{ dict(names | zip(names | map('extract', hostvars, '_onekvm_files'))) }}"
    dest: onekvm-validate
    junit: onekvm-validate/junit.xml
  vars:
    names: "{{ groups['onekvm'] }}"
  delegate_to: localhost
"""

RETURN = r"""
failed_hosts:
  description: The hosts that fail, in report order.
  returned: always
  type: list
  elements: str
  sample: [kvm-a02]
results:
  description:
    - Per host, C(ok), C(problems) (each C(file), C(check), C(message)), C(warnings) and C(checks)
      (each C(file), C(check), C(result) passed/failed/skipped, C(detail)).
  returned: always
  type: dict
summary:
  description: The report as lines (also written to O(dest)C(/summary.md)).
  returned: always
  type: list
  elements: str
"""

import hashlib
import os
import re
import shutil
import tempfile
import xml.etree.ElementTree as ET

from ansible.module_utils.basic import AnsibleModule

try:
    import yaml
    SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
except ImportError:  # the controller always has it (ansible-core needs it)
    yaml = SafeLoader = None

from ansible_collections.onekvm.fleet.plugins.module_utils import _watchdog
from ansible_collections.onekvm.fleet.plugins.module_utils._errors import OnekvmError

SYSTEMD_UNITS = "/usr/lib/systemd/system"
CHECKS = ("kvmd", "visudo", "watchdog-config", "systemd-unit", "udev", "script", "none")


class Checker:
    """Runs each check once per distinct file content."""

    def __init__(self, module):
        self.module = module
        self.cache = {}
        self.visudo = module.get_bin_path(module.params["visudo"]) or (
            module.params["visudo"] if os.path.isabs(module.params["visudo"]) and os.path.exists(module.params["visudo"]) else None)
        self.systemd_analyze = module.get_bin_path("systemd-analyze")
        self.udevadm = module.get_bin_path("udevadm")
        self._udev_verify = None

    def run(self, kind, path, entry, root, expected):
        key = (kind, entry["content"], entry["path"], repr(expected))
        if kind == "systemd-unit":  # the result also depends on the programs it runs, as this box gets them
            key += tuple(file_digest(root + program) for program in unit_programs(entry["content"]))
        if key not in self.cache:
            outcome, detail = getattr(self, "_" + kind.replace("-", "_"))(path, entry, root, expected)
            self.cache[key] = outcome, detail.replace(root, "")  # name the file by its path on the box
        return self.cache[key]

    def _run(self, argv):
        rc, out, err = self.module.run_command(argv, environ_update={"LC_ALL": "C"})
        return rc, (out + err).strip()

    def _kvmd(self, path, entry, root, expected):
        # kvmd loads override.d files as YAML (only true/false are booleans; shared domain facts)
        try:
            loaded = yaml.load(entry["content"], Loader=SafeLoader)
        except yaml.YAMLError as exc:
            return "failed", "not valid YAML: %s" % exc
        if loaded != expected:
            return "failed", "loads as something else than the role decided: %r" % (loaded,)
        streamer = (loaded or {}).get("kvmd", {}).get("streamer")
        if streamer is not None:  # kvmd's streamer command edited (kvmd/tools.py build_cmd): cmd_append ends it
            removed, appended = streamer.get("cmd_remove", []), streamer.get("cmd_append", [])
            return "passed", "streamer: removes %s, appends %s" % (", ".join(removed), ", ".join(appended))
        gpio = (loaded or {}).get("kvmd", {}).get("gpio", {})
        scheme, drivers = gpio.get("scheme", {}), gpio.get("drivers", {})
        for channel, spec in scheme.items():
            if spec.get("driver", "__gpio__") not in drivers and spec.get("driver", "__gpio__") != "__gpio__":
                return "failed", "channel %r uses driver %r, which is not defined" % (channel, spec.get("driver"))
        for row in gpio.get("view", {}).get("table", []):
            for item in row:
                channel = item.split("|", 1)[0]
                if item and not item.startswith("#") and channel not in scheme:
                    return "failed", "the view names channel %r, which is not in the scheme (kvmd would drop the button)" % channel
        return "passed", "%d buttons, %d drivers" % (len(scheme), len(drivers))

    def _visudo(self, path, entry, root, expected):
        if not self.visudo:
            return "failed", ("visudo is not installed here, so the sudoers rules cannot be checked: install the sudo package "
                              "(Debian/Ubuntu: apt-get install sudo) on the machine running this check")
        rc, out = self._run([self.visudo, "-cf", path])
        return ("passed" if rc == 0 else "failed"), out

    def _watchdog_config(self, path, entry, root, expected):
        try:
            _watchdog.load_config(path)
        except OnekvmError as exc:
            return "failed", str(exc)
        return "passed", "watchdog config is valid"

    def _systemd_unit(self, path, entry, root, expected):
        if not self.systemd_analyze or not os.path.isdir(SYSTEMD_UNITS):
            return "skipped", "systemd-analyze is not installed here"
        # a root holding the unit, the programs it runs (as this box gets them) and the standard targets (the unit
        # pulls in sysinit.target and multi-user.target, which every systemd box has)
        sandbox = tempfile.mkdtemp(prefix="onekvm-unit-")
        try:
            units = os.path.join(sandbox, SYSTEMD_UNITS.lstrip("/"))
            os.makedirs(units)
            for name in os.listdir(SYSTEMD_UNITS):
                if name.endswith(".target"):
                    shutil.copy2(os.path.join(SYSTEMD_UNITS, name), units, follow_symlinks=False)
            for box_path in [entry["path"]] + unit_programs(entry["content"]):
                if os.path.lexists(root + box_path):
                    os.makedirs(os.path.dirname(sandbox + box_path), exist_ok=True)
                    shutil.copy2(root + box_path, sandbox + box_path)
            rc, out = self._run([self.systemd_analyze, "verify", "--man=no", "--generators=no", "--root=" + sandbox,
                                 sandbox + entry["path"]])
        finally:
            shutil.rmtree(sandbox, ignore_errors=True)
        # systemd ignores a key it cannot parse with only a warning: for a unit the role writes, that is a failure
        out = out.replace(sandbox, "")
        return ("passed" if rc == 0 and not out else "failed"), out or "systemd-analyze verify passed"

    def _udev(self, path, entry, root, expected):
        if self.udevadm and self._udev_verify is None:
            self._udev_verify = self._run([self.udevadm, "verify", "--help"])[0] == 0
        if not self._udev_verify:
            return "skipped", "udevadm verify needs systemd 254 or newer"
        rc, out = self._run([self.udevadm, "verify", "--no-style", path])
        return ("passed" if rc == 0 else "failed"), out

    def _script(self, path, entry, root, expected):
        first = entry["content"].split("\n", 1)[0]
        if "python" in first:
            try:
                compile(entry["content"], entry["path"], "exec")
            except SyntaxError as exc:
                return "failed", "Python syntax error: %s" % exc
            return "passed", "Python compiles"
        rc, out = self._run(["sh", "-n", path])
        return ("passed" if rc == 0 else "failed"), out or "sh -n passed"

    def _none(self, path, entry, root, expected):
        return "skipped", "no check"


def unit_programs(unit):
    """The absolute programs of a unit's Exec*= lines (systemd.service(5): prefixes @ - : + ! may come first)."""
    programs = []
    for line in unit.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip().startswith("Exec") and value.strip():
            program = value.strip().lstrip("@-:+!").split(None, 1)[0] if value.strip().lstrip("@-:+!") else ""
            if program.startswith("/") and safe_box_path(program):
                programs.append(program)
    return programs


def file_digest(path):
    if not os.path.lexists(path):
        return None
    with open(path, "rb") as f:
        return oct(os.stat(path).st_mode), hashlib.sha256(f.read()).hexdigest()


ARG_SPEC_TASK = re.compile(r"^Validating arguments against arg spec")
NOISE = (
    re.compile(r"^Task failed: (Action failed: )?"),
    re.compile(r"^.*The filter plugin '[^']+' failed: ", re.S),  # the filter's own message names the button
    re.compile(r"^Validation of arguments failed:\s*"),
    re.compile(r": <class '[^']*'> cannot be converted to an? \w+"),
)


def role_error(error):
    """The role's failure as one line: which check failed, and its message without Ansible's wrapping."""
    if not isinstance(error, dict):
        error = {"msg": str(error)}
    task, msg = str(error.get("task") or ""), str(error.get("msg") or "failed")
    for pattern in NOISE:
        msg = pattern.sub("", msg)
    msg = " ".join(msg.split())
    if ARG_SPEC_TASK.match(task):
        return "role variables: %s. Fix the variable (its type and choices: ansible-doc -t role onekvm.fleet.onekvm)" % msg
    return "%s: %s" % (task, msg) if task else msg


def safe_box_path(path):
    """An absolute, normalised path (nothing may be written outside the host's directory)."""
    return isinstance(path, str) and path.startswith("/") and os.path.normpath(path) == path and "\0" not in path


def write_file(path, content, mode):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(content)
    os.chmod(path, int(str(mode), 8))


def check_host(checker, host, files, error, kvmd, root):
    result = {"ok": True, "problems": [], "warnings": [], "checks": []}

    def problem(file, check, message):
        result["ok"] = False
        result["problems"].append({"file": file, "check": check, "message": message})

    if error:
        problem(None, "role", role_error(error))
        return result
    if not files:
        problem(None, "role", "the role rendered no files for this host")
        return result
    present = {}
    for name, entry in sorted(files.items()):
        if not isinstance(entry, dict) or not entry.get("present"):
            continue
        if not safe_box_path(entry.get("path")) or entry.get("check") not in CHECKS:
            problem(entry.get("path") if isinstance(entry, dict) else name, "path",
                    "%s: path %r is not an absolute, normalised path (or unknown check %r): fix the variable that sets it"
                    % (name, entry.get("path"), entry.get("check")))
            continue
        if entry["path"] in present:
            problem(entry["path"], "path", "%s and %s would both be written to %s: give them different paths"
                    % (present[entry["path"]], name, entry["path"]))
            continue
        present[entry["path"]] = name
        write_file(root + entry["path"], entry.get("content", ""), entry.get("mode", "0644"))
    for name, entry in sorted(files.items()):
        if isinstance(entry, dict) and entry.get("present") and present.get(entry.get("path")) == name:
            # for gpio.yaml, `data` is the section the role decided: kvmd must load the file as exactly that
            outcome, detail = checker.run(entry["check"], root + entry["path"], entry, root, entry.get("data"))
            result["checks"].append({"file": entry["path"], "check": entry["check"], "result": outcome, "detail": detail})
            if outcome == "failed":
                problem(entry["path"], entry["check"], detail)
    if kvmd == "one-kvm":
        gpio_entry = next((e for e in files.values() if isinstance(e, dict) and e.get("check") == "kvmd" and e.get("present")), None)
        installed = {e["path"] for e in files.values() if isinstance(e, dict) and e.get("present")} | {"/usr/bin/sudo"}
        drivers = ((yaml.load(gpio_entry["content"], Loader=SafeLoader) or {}).get("kvmd", {}).get("gpio", {}).get("drivers", {})
                   if gpio_entry else {})
        for driver, spec in sorted(drivers.items()):
            program = (spec.get("cmd") or [None])[0]
            if program and program not in installed:
                result["warnings"].append("button driver %r runs %s: One-KVM's kvmd refuses the whole config if that program "
                                          "does not exist on the box; install it before the rollout" % (driver, program))
    return result


def summary_lines(hosts, results, dest):
    failed = [h for h in hosts if not results[h]["ok"]]
    lines = ["onekvm.fleet.validate: %d hosts, %d pass, %d fail; rendered files in %s"
             % (len(hosts), len(hosts) - len(failed), len(failed), dest)]
    for host in hosts:
        res = results[host]
        if res["ok"]:
            skipped = sorted({c["check"] for c in res["checks"] if c["result"] == "skipped"})
            note = " (skipped here: %s)" % ", ".join(skipped) if skipped else ""
            lines.append("ok     %s: %d files checked%s" % (host, len(res["checks"]), note))
        for p in res["problems"]:
            lines.append("FAILED %s: %s%s" % (host, ("%s (%s): " % (p["file"], p["check"])) if p["file"] else "", p["message"]))
        for w in res["warnings"]:
            lines.append("warn   %s: %s" % (host, w))
    return lines


def write_junit(path, hosts, results):
    suite = ET.Element("testsuite", name="onekvm.fleet.validate")
    tests = failures = skipped = 0
    for host in hosts:
        res = results[host]
        cases = [(c["file"], c["check"], c["result"], c["detail"]) for c in res["checks"]]
        cases += [(p["file"] or "role", p["check"], "failed", p["message"]) for p in res["problems"] if p["check"] in ("role", "path")]
        if not cases:
            cases = [("role", "role", "passed", "")]
        for file, check, outcome, detail in cases:
            tests += 1
            case = ET.SubElement(suite, "testcase", classname=host, name="%s: %s" % (file, check))
            if outcome == "failed":
                failures += 1
                ET.SubElement(case, "failure", message=detail.split("\n", 1)[0][:500]).text = detail
            elif outcome == "skipped":
                skipped += 1
                ET.SubElement(case, "skipped", message=detail)
    suite.set("tests", str(tests))
    suite.set("failures", str(failures))
    suite.set("skipped", str(skipped))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            hosts=dict(type="list", elements="str", required=True),
            files=dict(type="dict", default={}),
            errors=dict(type="dict", default={}),
            kvmd=dict(type="dict", default={}),
            dest=dict(type="path", required=True),
            junit=dict(type="path"),
            visudo=dict(type="str", default="visudo"),
        ),
        supports_check_mode=True,
    )
    if yaml is None:
        module.fail_json(msg="PyYAML is missing on the controller (ansible-core needs it): reinstall ansible-core")
    params = module.params
    hosts = params["hosts"]
    for host in hosts:
        if not host or "/" in host or host in (".", ".."):
            module.fail_json(msg="host name %r cannot be a directory name under %s: rename the host in the inventory" % (host, params["dest"]))
    dest = tempfile.mkdtemp(prefix="onekvm-validate-") if module.check_mode else params["dest"]
    checker = Checker(module)
    results = {}
    try:
        for host in hosts:
            root = os.path.join(dest, host)
            if os.path.isdir(root) and not os.path.islink(root):
                shutil.rmtree(root)
            os.makedirs(root)
            results[host] = check_host(checker, host, params["files"].get(host) or {}, params["errors"].get(host) or "",
                                       params["kvmd"].get(host) or "pikvm", os.path.realpath(root))
        lines = summary_lines(hosts, results, params["dest"])
        if not module.check_mode:
            with open(os.path.join(dest, "summary.md"), "w", encoding="utf-8") as f:
                f.write("```\n%s\n```\n" % "\n".join(lines))
            if params["junit"]:
                write_junit(params["junit"], hosts, results)
    except OSError as exc:
        module.fail_json(msg="cannot write the rendered files to %s: %s; choose another validate_dir" % (params["dest"], exc))
    finally:
        if module.check_mode:
            shutil.rmtree(dest, ignore_errors=True)
    module.exit_json(changed=not module.check_mode, failed_hosts=[h for h in hosts if not results[h]["ok"]],
                     results=results, summary=lines)


if __name__ == "__main__":
    main()
