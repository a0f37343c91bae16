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


def run_core(module, call, *args, fail_extra=None, **kwargs):
    """``call(*args, **kwargs)``'s result; a core error fails the task through fail_from (with the fields
    ``fail_extra()`` returns, if given). The one place where modules turn an OnekvmError into fail_json."""
    try:
        return call(*args, **kwargs)
    except OnekvmError as exc:
        fail_from(module, exc, **(fail_extra() if fail_extra else {}))
        raise  # not reached: fail_json exits


# The USB selector options of usb_info and usb_reset (documented by the onekvm.fleet.usb doc fragment), each
# with the name of the core's selector: the option port_path (alias port) is the core's port
USB_SELECTORS = {"id": "id", "vendor": "vendor", "product": "product", "serial": "serial", "port_path": "port",
                 "bus": "bus", "address": "address"}


def usb_selector_spec(**more) -> dict:
    """AnsibleModule keyword arguments for the USB selectors, plus the module's own options ``more``."""
    options = dict(id=dict(type="str"), vendor=dict(type="str"), product=dict(type="str"), serial=dict(type="str"),
                   port_path=dict(type="str", aliases=["port"]), bus=dict(type="int"), address=dict(type="int"))
    options.update(more)
    return dict(argument_spec=options,
                required_together=[("vendor", "product"), ("bus", "address")],
                mutually_exclusive=[("id", "vendor"), ("id", "product")])


def usb_selection(params: dict) -> dict:
    """The selector options as keyword arguments of ``_usb.find_devices``."""
    return {selector: params[option] for option, selector in USB_SELECTORS.items()}
