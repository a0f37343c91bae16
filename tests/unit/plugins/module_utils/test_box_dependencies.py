# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the box-side core imports is what the role installs: the standard library and pyserial.

pyusb is not among them: USB resets are the USBDEVFS_RESET ioctl done with fcntl, discovery
reads sysfs. So the role does not install it either.
"""

from __future__ import annotations

import ast
import os
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", "..", ".."))
CORE = os.path.join(ROOT, "plugins", "module_utils")
BOX_SIDE = sorted(name for name in os.listdir(CORE) if name.startswith("_") and name.endswith(".py")
                  and name != "_ansible.py")  # _ansible.py is the modules' glue, never run as the box command


def imported_top_levels(path: str) -> set:
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_box_side_core_needs_only_the_standard_library_and_pyserial():
    assert len(BOX_SIDE) > 15, BOX_SIDE
    outside = {}
    for name in BOX_SIDE:
        extra = imported_top_levels(os.path.join(CORE, name)) - set(sys.stdlib_module_names) - {"__future__"}
        if extra:
            outside[name] = sorted(extra)
    assert set(sum(outside.values(), [])) <= {"serial"}, outside
    assert "usb" not in sum(outside.values(), [])


def test_the_role_installs_no_pyusb():
    for family in ("Debian", "Archlinux"):
        with open(os.path.join(ROOT, "roles", "onekvm", "vars", family + ".yml"), encoding="utf-8") as f:
            packages = yaml.safe_load(f)["_onekvm_packages"]
        assert not [p for p in packages if "usb" in p], (family, packages)
        assert [p for p in packages if "serial" in p], (family, packages)
