# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Errors shared by the box-side core, the modules, the box CLI and the watchdog.

PRIVATE to the onekvm.fleet collection: no compatibility promise.
This file is part of the box-side core: standard library only, no Ansible imports.

Every failure the core can foresee is raised as an ``OnekvmError`` whose message says
what was wrong and what to do. Modules turn it into ``fail_json``; the box CLI prints it
and exits with ``exit_code`` (stable, documented in the CLI's --help).
"""

from __future__ import annotations


class OnekvmError(Exception):
    """A foreseen failure with a message for humans and details for machines."""

    exit_code = 1

    def __init__(self, msg: str, **details: object) -> None:
        super().__init__(msg)
        self.msg = msg
        self.details = details


class InvalidArgument(OnekvmError):
    """An option value is malformed or out of range. Nothing was touched."""

    exit_code = 2


class NotFound(OnekvmError):
    """The selected device / port / file does not exist."""

    exit_code = 3


class Ambiguous(OnekvmError):
    """A selector matched more than one device."""

    exit_code = 3


class Busy(OnekvmError):
    """Another reset holds the box-wide lock, or a port is in exclusive use."""

    exit_code = 4


class Timeout(OnekvmError):
    """The hardware did not answer / come back within the allowed time."""

    exit_code = 5


class PermissionDenied(OnekvmError):
    """Root (or the right group) is needed."""

    exit_code = 6


class MissingDependency(OnekvmError):
    """A Python library or OS facility the requested action needs is absent."""

    exit_code = 7


class DeviceError(OnekvmError):
    """The hardware answered, but wrongly (bad reply, error status, I/O error)."""

    exit_code = 8
