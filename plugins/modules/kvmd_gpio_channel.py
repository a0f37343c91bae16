#!/usr/bin/python
# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: kvmd_gpio_channel
short_description: Pulse or switch a GPIO channel of the running kvmd (a web-UI button, ad hoc)
version_added: 1.0.0
description:
  - Presses a kvmd GPIO button from Ansible as its web UI does, through kvmd's API on its unix socket
    (C(POST /api/gpio/pulse) or C(POST /api/gpio/switch)), for example the KVM switch button the
    C(onekvm.fleet.onekvm) role rendered.
  - It first reads kvmd's running GPIO model (C(GET /api/gpio)), so a channel kvmd does not have, an input, or an
    action the channel does not offer is refused by name before anything is pressed.
  - Not to be confused with the C(onekvm.fleet.kvmd_gpio) filter, which renders the GPIO config file.
author:
  - onekvm.fleet maintainers (@onekvm)
extends_documentation_fragment:
  - onekvm.fleet.attributes
  - onekvm.fleet.kvmd_api
attributes:
  check_mode:
    support: full
    details:
      - Reads kvmd's model and state (so an unknown channel or wrong credentials fail in check mode too) and
        reports what would happen; nothing is pulsed or switched.
  diff_mode:
    support: none
  idempotent:
    support: partial
    details:
      - V(pulse) is an action and always changes.
      - V(switch) changes only when kvmd reads the channel in the other state. kvmd's C(cmd) driver always reads
        V(false), so switching such a channel on always runs its command and switching it off never changes.
options:
  channel:
    description:
      - The GPIO output channel, as in C(kvmd.gpio.scheme) (for buttons of the role, the button's C(name)).
    type: str
    required: true
  action:
    description:
      - V(pulse) switches the output on for the pulse delay and off again (a button press).
      - V(switch) sets the output to O(state).
    type: str
    choices: [pulse, switch]
    required: true
  state:
    description:
      - The state to switch to; required with O(action=switch), not allowed with O(action=pulse).
    type: bool
  delay:
    description:
      - Pulse length in seconds asked of kvmd; V(0) (default) is the channel's own delay.
      - kvmd clamps it between the channel's C(min_delay) and C(max_delay); RV(delay) is what kvmd sends.
    type: float
    default: 0.0
  wait:
    description:
      - Wait until kvmd has finished the pulse or switch (C(wait=1)); V(false) returns as soon as kvmd started it.
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Press the KVM switch button the onekvm role rendered
  onekvm.fleet.kvmd_gpio_channel:
    channel: toggle_switch
    action: pulse
    user: "{{ kvmd_api_user }}"
    password: "{{ kvmd_api_password }}"

- name: Switch a HID relay channel on (as root, on kvmd 4.107 or newer, no credentials needed)
  onekvm.fleet.kvmd_gpio_channel:
    channel: relay1
    action: switch
    state: true
  become: true

# ad hoc:  ansible kvms -b -m onekvm.fleet.kvmd_gpio_channel -a 'channel=toggle_switch action=pulse'
"""

RETURN = r"""
channel:
  description: The channel.
  returned: always
  type: str
  sample: toggle_switch
action:
  description: The action.
  returned: always
  type: str
  sample: pulse
delay:
  description: The pulse length kvmd sends (the asked or channel delay clamped to its C(min_delay)/C(max_delay)).
  returned: when O(action=pulse)
  type: float
  sample: 0.5
pulse:
  description: The channel's pulse settings in kvmd's running model (C(delay) is the effective one).
  returned: always
  type: dict
  sample: {"delay": 0.5, "min_delay": 0.1, "max_delay": 0.5}
switch:
  description: Whether kvmd offers a switch on the channel.
  returned: always
  type: bool
  sample: false
previous_state:
  description: The channel's state as kvmd read it before, V(null) when kvmd gave none.
  returned: always
  type: bool
  sample: false
state:
  description:
    - The state kvmd reads after the action (in check mode the predicted one; V(null) with O(wait=false)).
  returned: always
  type: bool
  sample: false
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.onekvm.fleet.plugins.module_utils._ansible import run_core
from ansible_collections.onekvm.fleet.plugins.module_utils._kvmd_api import ACTIONS, channel_action, module_api_spec


def main() -> None:
    spec = module_api_spec()
    spec.update(
        channel=dict(type="str", required=True),
        action=dict(type="str", choices=list(ACTIONS), required=True),
        state=dict(type="bool"),
        delay=dict(type="float", default=0.0),
        wait=dict(type="bool", default=True),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True, required_if=[("action", "switch", ["state"])])
    p = module.params
    result = run_core(module, channel_action, p["socket"], (p["user"], p["password"]) if p["user"] else None,
                      p["channel"], p["action"], state=p["state"], delay=p["delay"], wait=p["wait"],
                      timeout=p["timeout"], check_mode=module.check_mode)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
