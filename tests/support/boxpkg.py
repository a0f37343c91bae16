# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run the box command from this checkout exactly as the box runs it.

The role installs ``plugins/module_utils`` as a package named ``onekvm``; here a
directory holding an ``onekvm`` symlink to it gives the same import layout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

MODULE_UTILS = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "plugins", "module_utils"))


def package_root() -> str:
    """A directory whose ``onekvm`` entry is the box package (created once per process)."""
    root = os.path.join(tempfile.gettempdir(), "onekvm-boxpkg-%d" % os.getpid())
    link = os.path.join(root, "onekvm")
    if not os.path.islink(link):
        os.makedirs(root, exist_ok=True)
        os.symlink(MODULE_UTILS, link)
    return root


def cli_argv(*args: str) -> list:
    return [sys.executable, "-c", "import sys; from onekvm._cli import main; sys.exit(main())", *args]


def run_cli(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``onekvm ARGS`` in a subprocess; returns the CompletedProcess (text mode)."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = package_root()
    full_env.update(env or {})
    return subprocess.run(cli_argv(*args), env=full_env, capture_output=True, text=True, timeout=timeout, check=False)
