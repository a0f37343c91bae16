# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A watchdog config written by hand behaves like the one the role renders from its defaults.

The box needs its own defaults (``_watchdog_config.DEFAULTS``: a config file may leave keys out);
the role's come from its argument spec. The role's template, rendered with the role's defaults,
must give the box's defaults, except where the role fills in what only an inventory knows.
"""

from __future__ import annotations

import json
import os

import jinja2
import yaml

from ansible_collections.onekvm.fleet.plugins.module_utils._watchdog_config import parse_config

HERE = os.path.dirname(os.path.abspath(__file__))
ROLE = os.path.abspath(os.path.join(HERE, "..", "..", "..", "..", "roles", "onekvm"))
# filled in from the role's other settings (devices, the unit it writes), on purpose
ROLE_DECIDES = {"dongle", "systemd_watchdog_sec"}
ROLE_DECIDES_HID = {"adapter_id", "adapter_port", "kvmd_credentials"}
DONGLE = "534d:2109"


def role_rendered_config() -> dict:
    with open(os.path.join(ROLE, "defaults", "main.yml"), encoding="utf-8") as f:
        defaults = yaml.safe_load(f)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.filters["to_nice_json"] = lambda value, indent=2, sort_keys=True: json.dumps(value, indent=indent, sort_keys=sort_keys)
    # the watchdog's defaults that name other defaults ("/dev/{{ onekvm_capture_symlink }}")
    values = {k: env.from_string(v).render(**defaults) if k.startswith("onekvm_watchdog_") and isinstance(v, str)
              and "{{" in v else v for k, v in defaults.items()}
    values["onekvm_watchdog_dongle_usb_id"] = DONGLE  # what only an inventory knows
    with open(os.path.join(ROLE, "templates", "onekvm-watchdog.json.j2"), encoding="utf-8") as f:
        return json.loads(env.from_string(f.read()).render(**values))


def test_role_defaults_render_the_box_defaults():
    role = parse_config(role_rendered_config())._asdict()
    box = parse_config({"dongle": {"id": DONGLE}})._asdict()
    differ = {key: (role[key], box[key]) for key in box if key not in ROLE_DECIDES | {"hid"} and role[key] != box[key]}
    differ.update({"hid." + key: (role["hid"][key], box["hid"][key]) for key in box["hid"]
                   if key not in ROLE_DECIDES_HID and role["hid"][key] != box["hid"][key]})
    assert not differ, "role default vs box default: %r" % differ
