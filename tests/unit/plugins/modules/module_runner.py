# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run a module's main() in-process with given arguments and capture its result."""

from __future__ import annotations

import contextlib
import json

import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args


class ModuleExit(Exception):
    def __init__(self, result: dict) -> None:
        super().__init__(result)
        self.result = result


def _exit_json(self, **kwargs):
    kwargs.setdefault("changed", False)
    json.dumps(kwargs)  # a result must be JSON-able, like on a real run
    raise ModuleExit(kwargs)


def _fail_json(self, msg, **kwargs):
    kwargs["failed"] = True
    kwargs["msg"] = msg
    json.dumps(kwargs)
    raise ModuleExit(kwargs)


def run_module(main, args: dict, check_mode: bool = False, diff: bool = False) -> dict:
    """Return the module's result dict (``failed`` is set when it called fail_json)."""
    args = dict(args)
    if check_mode:
        args["_ansible_check_mode"] = True
    if diff:
        args["_ansible_diff"] = True
    with contextlib.ExitStack() as stack:
        mp = stack.enter_context(pytest.MonkeyPatch.context())
        mp.setattr(basic.AnsibleModule, "exit_json", _exit_json)
        mp.setattr(basic.AnsibleModule, "fail_json", _fail_json)
        stack.enter_context(patch_module_args(args))
        try:
            main()
        except ModuleExit as exc:
            return exc.result
    raise AssertionError("module returned without exit_json/fail_json")
