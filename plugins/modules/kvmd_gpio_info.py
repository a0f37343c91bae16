#!/usr/bin/python
# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: kvmd_gpio_info
short_description: Read the GPIO model and state of the running kvmd
version_added: 1.0.0
description:
  - Asks the running kvmd for its GPIO model and state (C(GET /api/gpio) on its unix socket) - the channels it really
    has and the pulse it really sends, which C(kvmd -m) does not show (it prints the configured C(delay), kvmd sends
    it clamped between C(min_delay) and C(max_delay)).
  - The health gate of the C(onekvm.fleet.provision) playbook uses it to check the role's buttons in the running kvmd.
author:
  - onekvm.fleet maintainers (@onekvm)
extends_documentation_fragment:
  - onekvm.fleet.attributes
  - onekvm.fleet.attributes.info_module
  - onekvm.fleet.kvmd_api
options: {}
"""

EXAMPLES = r"""
- name: Read kvmd's running GPIO
  onekvm.fleet.kvmd_gpio_info:
    user: "{{ kvmd_api_user }}"
    password: "{{ kvmd_api_password }}"
  register: gpio

- name: The KVM switch button sends a half-second pulse
  ansible.builtin.assert:
    that: gpio.outputs.toggle_switch.pulse.delay == 0.5
"""

RETURN = r"""
model:
  description: kvmd's GPIO model as C(GET /api/gpio) returns it (C(scheme) with C(inputs) and C(outputs), C(view)).
  returned: always
  type: dict
  sample: {"scheme": {"inputs": {}, "outputs": {"toggle_switch": {"switch": false, "pulse": {"delay": 0.5,
           "min_delay": 0.1, "max_delay": 0.5}, "hw": {"driver": "toggle_switch", "pin": "0"}}}}, "view": {}}
gpio_state:
  description: The state of each channel (C(inputs) and C(outputs), each with C(online) and C(state)).
  returned: always
  type: dict
  sample: {"inputs": {}, "outputs": {"toggle_switch": {"online": true, "state": false, "busy": false}}}
outputs:
  description: The output channels kvmd offers (a shortcut into RV(model)), with C(switch) and the effective C(pulse).
  returned: always
  type: dict
  sample: {"toggle_switch": {"switch": false, "pulse": {"delay": 0.5, "min_delay": 0.1, "max_delay": 0.5}}}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.onekvm.fleet.plugins.module_utils._ansible import run_core
from ansible_collections.onekvm.fleet.plugins.module_utils._kvmd_api import gpio_state, module_api_spec


def main() -> None:
    module = AnsibleModule(argument_spec=module_api_spec(), supports_check_mode=True)
    p = module.params
    result = run_core(module, gpio_state, p["socket"], (p["user"], p["password"]) if p["user"] else None,
                      p["timeout"], hint="give user and password of a kvmd user (without 2FA)")
    outputs = {name: {"switch": out["switch"], "pulse": out["pulse"]}
               for name, out in result["model"]["scheme"]["outputs"].items()}
    module.exit_json(changed=False, model=result["model"], gpio_state=result["state"], outputs=outputs)


if __name__ == "__main__":
    main()
