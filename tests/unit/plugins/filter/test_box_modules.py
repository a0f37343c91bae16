# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The box package holds exactly what the box command imports: the box_modules filter the role installs by."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from ansible_collections.onekvm.fleet.plugins.filter.box_modules import box_modules
from ansible_collections.onekvm.fleet.plugins.module_utils._cli import COMMANDS
from ansible_collections.onekvm.fleet.tests.support.boxpkg import MODULE_UTILS, box_package_sources, package_root

ROOT = os.path.abspath(os.path.join(MODULE_UTILS, "..", ".."))


def names(paths):
    return sorted(os.path.basename(p)[:-3] for p in paths)


def test_the_box_package_leaves_out_the_modules_glue_and_keeps_every_command():
    shipped = names(box_modules(box_package_sources()))
    assert "_ansible" not in shipped
    assert {"_cli", "_errors"} | {module for module, dummy in COMMANDS.values()} <= set(shipped)
    assert [n for n in shipped if n.startswith("_watchdog")], shipped  # the watchdog runs as `onekvm watchdog`


def test_the_box_package_alone_imports_every_command_and_module():
    """A package of just those files (as the role installs it) imports all of them, and each command's file."""
    package = os.path.join(package_root(), "onekvm")
    shipped = sorted(n[:-3] for n in os.listdir(package) if n.startswith("_") and n.endswith(".py"))
    code = ("import importlib, sys\n"
            "sys.path.insert(0, sys.argv.pop(1))\n"  # as the installed command does, under -I
            "from onekvm import _cli\n"
            "for name in sys.argv[1:]: importlib.import_module('onekvm.' + name)\n"
            "for command in _cli.COMMANDS: _cli._command_module(command)\n"
            "try:\n    import onekvm._ansible\nexcept ImportError:\n    print('no glue')\n")
    done = subprocess.run([sys.executable, "-I", "-c", code, package_root(), *shipped], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "no glue"


def test_imports_are_followed_through_functions_relative_names_and_strings(tmp_path):
    files = {
        "_main.py": "from ._a import x\ndef later():\n    from . import _b\nTABLE = {'cmd': ('_c', 'help')}\n",
        "_a.py": "from ._d import y\n",
        "_b.py": "",
        "_c.py": "import importlib\nimportlib.import_module('._e', __package__)\n",
        "_d.py": "",
        "_e.py": "",
        "_glue.py": "from ._a import x\n",  # imports the box code, but nothing imports it
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    paths = sorted(str(tmp_path / name) for name in files)
    assert names(box_modules(paths, entry="_main")) == ["_a", "_b", "_c", "_d", "_e", "_main"]


def test_a_missing_entry_is_named():
    with pytest.raises(ValueError, match=r"_cli\.py is not among the files given \(0 files\)"):
        box_modules([])


def test_the_role_installs_by_it():
    with open(os.path.join(ROOT, "roles", "onekvm", "vars", "main.yml"), encoding="utf-8") as f:
        core_files = yaml.safe_load(f)["_onekvm_core_files"]
    assert "plugins/module_utils/_*.py" in core_files and "| onekvm.fleet.box_modules" in core_files
