# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Glue between the box-side core and AnsibleModule (the only module_utils file that
knows about Ansible). PRIVATE to the onekvm.fleet collection."""

from __future__ import annotations

from ._errors import OnekvmError


def fail_from(module, exc: OnekvmError, **extra) -> None:
    """fail_json with the core error's message and its machine-readable details."""
    details = dict(exc.details)
    details.update(extra)
    details.pop("msg", None)
    module.fail_json(msg=exc.msg, error=type(exc).__name__, **details)
