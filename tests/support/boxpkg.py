# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run the box command from this checkout exactly as the box runs it.

The role installs the ``plugins/module_utils`` files that the box command imports (the
``box_modules`` filter) as a package named ``onekvm``; here a directory ``onekvm`` holding links
to just those files gives the same import layout, so a file the box needs but the role would not
install fails these tests.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile

from ansible_collections.onekvm.fleet.plugins.filter.box_modules import box_modules

MODULE_UTILS = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "plugins", "module_utils"))


_ROOTS = {}  # pid -> this process's package root


def package_root() -> str:
    """A directory whose ``onekvm`` entry is this checkout's box package (one per process).

    Made afresh with a unique name and removed at exit: a directory named after the pid
    could be one a finished run left behind, its link pointing at a tree that is gone or
    at another checkout's code.
    """
    pid = os.getpid()
    root = _ROOTS.get(pid)
    if root is None or not os.path.isdir(os.path.join(root, "onekvm")):
        root = tempfile.mkdtemp(prefix="onekvm-boxpkg-")
        package = os.path.join(root, "onekvm")
        os.mkdir(package)
        with open(os.path.join(package, "__init__.py"), "w", encoding="utf-8"):
            pass  # the role's __init__.py is a comment only
        for path in box_modules(box_package_sources()):
            os.symlink(path, os.path.join(package, os.path.basename(path)))
        _ROOTS[pid] = root
        atexit.register(shutil.rmtree, root, True)
    return root


def box_package_sources() -> list:
    """Every ``_*.py`` of the checkout's module_utils, as the role's fileglob finds them."""
    return sorted(os.path.join(MODULE_UTILS, name) for name in os.listdir(MODULE_UTILS)
                  if name.startswith("_") and name.endswith(".py"))


_MAIN = "import sys; from onekvm._cli import main; sys.exit(main())"
# Unit tests may run unprivileged: on a fake sysfs tree, the command's own root checks are the
# only thing that root changes, so a test that asks for root gets os.geteuid() == 0 there.
_MAIN_AS_ROOT = "import os; os.geteuid = lambda: 0; " + _MAIN


def cli_argv(*args: str, as_root: bool = False) -> list:
    code = _MAIN_AS_ROOT if as_root and os.geteuid() != 0 else _MAIN
    return [sys.executable, "-c", code, *args]


def run_cli(*args: str, env: dict | None = None, timeout: float = 60,
            as_root: bool = False) -> subprocess.CompletedProcess:
    """Run ``onekvm ARGS`` in a subprocess; returns the CompletedProcess (text mode).
    ``as_root``: the command believes it runs as root (for fake sysfs trees; see above)."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = package_root()
    full_env.update(env or {})
    return subprocess.run(cli_argv(*args, as_root=as_root), env=full_env, capture_output=True, text=True, timeout=timeout, check=False)
