#!/usr/bin/python
# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: onekvm2_config
short_description: Set the configuration of a One-KVM 0.2 box (the Rust rewrite, no kvmd) through its REST API
version_added: 1.0.0
description:
  - One-KVM 0.2 keeps its whole configuration in one document in its own database and changes it only through its
    REST API; it has no kvmd, no C(override.d) and no GPIO menu. This module sets config sections idempotently -
    it logs in (C(POST /api/auth/login)), reads each section given (C(GET /api/config/<section>)), compares, and
    sends C(PATCH /api/config/<section>) with only the fields that differ. A section that already matches is not
    sent at all.
  - Values One-KVM would refuse are refused before any request, with One-KVM's own rule and the source file that
    states it in the message (for example C(hid.ch9329_baudrate) must be one of 9600, 19200, 38400, 57600, 115200;
    relay channels are 1 to 8; a serial ATX relay must not be the CH9329's port). So are values One-KVM would accept
    but not keep (an unknown field, which it ignores without an error; LED sensing with a relay driver; a CH9329
    descriptor without the CH9329 backend), since they would report a change on every run.
  - Sections are applied in the order hid, video, stream, audio, atx, auth, web. After each PATCH the answer is
    compared with what was asked; a field One-KVM did not keep fails the task.
  - Runs on the box and talks to One-KVM on the box's loopback by default (O(url)); device paths (the CH9329 port,
    the capture device, relay devices) are checked to exist on the host the module runs on.
author:
  - onekvm.fleet maintainers (@onekvm)
extends_documentation_fragment:
  - onekvm.fleet.attributes
attributes:
  check_mode:
    support: full
    details:
      - Logs in and reads the sections, checks every rule and reports the PATCH bodies it would send; sends none.
  diff_mode:
    support: full
    details:
      - The sections that change, as One-KVM returns them before and after.
  idempotent:
    support: full
options:
  settings:
    description:
      - The One-KVM config sections to set, each a mapping of the fields to set; fields not given are left as they
        are. Nested settings (C(atx.power), C(hid.ch9329_descriptor)) are compared and sent field by field.
      - "Sections and their fields (One-KVM's C(src/web/handlers/config/types.rs)):
        C(hid): backend (V(ch9329), V(otg), V(none)), ch9329_port, ch9329_baudrate, ch9329_hybrid_mouse,
        ch9329_descriptor (vendor_id, product_id, manufacturer, product, serial_number), otg_udc, otg_descriptor,
        otg_profile, otg_functions, otg_keyboard_leds, mouse_absolute.
        C(video): device, format, width (320-7680), height (240-4320), fps (1-120), quality (1-100).
        C(stream): mode (V(mjpeg), V(webrtc)), encoder, bitrate_preset (C({type: Balanced}) or
        C({type: Custom, value: 5000})), stun_server, turn_server, turn_username.
        C(audio): enabled, device, quality (V(voice), V(balanced), V(high)).
        C(atx): enabled, driver (V(serial), V(usbrelay), V(gpio), V(none)), device, baud_rate, power, reset, led, hdd
        (each enabled, device, pin, active_level), wol_interface.
        C(auth): single_user_allow_multiple_sessions. C(web): http_port, https_port, bind_addresses, bind_address,
        https_enabled."
      - The TURN password and TLS certificates are not managed (One-KVM never returns them, so they cannot be
        compared); set them in One-KVM's web UI.
    type: dict
    required: true
  url:
    description:
      - One-KVM's web address, C(http(s)://HOST[:PORT]). The default is One-KVM's default port on the box itself.
    type: str
    default: http://127.0.0.1:8080
  username:
    description: One-KVM's user (the one made in its setup wizard).
    type: str
    required: true
  password:
    description:
      - The user's password. Keep it in a vault. An account with two-factor login cannot be used.
    type: str
    required: true
  timeout:
    description: Seconds to wait for each answer of One-KVM.
    type: float
    default: 10
  check_devices:
    description:
      - Check that device paths given (video device, CH9329 port, relay device) exist on the host the module runs
        on, as One-KVM checks them on the box. Set V(false) only when the module runs elsewhere than the box.
    type: bool
    default: true
notes:
  - Logging in ends the other sessions of the same user unless C(auth.single_user_allow_multiple_sessions) is true
    (One-KVM's C(src/auth/session.rs)); a web-UI user logged in with the same account has to log in again. Use a
    dedicated account for automation. The module logs out at the end.
  - One-KVM has no custom web-UI buttons; its ATX section (power and reset through a relay) is what it offers.
  - A change of C(web.http_port) or the bind addresses takes effect when one-kvm.service restarts; later tasks must
    then use the new O(url).
seealso:
  - name: One-KVM
    description: The project (its Rust main line is One-KVM 0.2).
    link: https://github.com/mofeng-git/One-KVM
"""

EXAMPLES = r"""
- name: CH9329 on its stable name, the capture dongle and a serial relay for power and reset
  onekvm.fleet.onekvm2_config:
    username: "{{ onekvm2_username }}"
    password: "{{ onekvm2_password }}"
    settings:
      hid:
        backend: ch9329
        ch9329_port: /dev/onekvm-ch9329
        ch9329_baudrate: 9600
      video:
        device: /dev/onekvm-video
        fps: 30
      atx:
        enabled: true
        driver: serial
        device: /dev/onekvm-relay
        baud_rate: 9600
        power: {enabled: true, pin: 1}
        reset: {enabled: true, pin: 2}

- name: Show what would change, without changing it
  onekvm.fleet.onekvm2_config:
    username: "{{ onekvm2_username }}"
    password: "{{ onekvm2_password }}"
    settings:
      stream:
        mode: webrtc
        bitrate_preset: {type: Custom, value: 3000}
  check_mode: true
  diff: true
"""

RETURN = r"""
patches:
  description: The PATCH bodies sent (in check mode, that would be sent), by section. Empty when all matched.
  returned: always
  type: dict
  sample: {"hid": {"ch9329_baudrate": 115200}}
config:
  description: The sections given, as One-KVM returns them after the run (before, in check mode).
  returned: always
  type: dict
  sample: {"hid": {"backend": "ch9329", "ch9329_port": "/dev/onekvm-ch9329", "ch9329_baudrate": 115200}}
url:
  description: The One-KVM address used.
  returned: always
  type: str
  sample: http://127.0.0.1:8080
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.onekvm.fleet.plugins.module_utils._ansible import run_core
from ansible_collections.onekvm.fleet.plugins.module_utils._errors import DeviceError
from ansible_collections.onekvm.fleet.plugins.module_utils._onekvm2 import (
    DEFAULT_URL,
    check_types,
    differing,
    plan,
)
from ansible_collections.onekvm.fleet.plugins.module_utils._onekvm2_api import Client


def run(params: dict, check_mode: bool) -> dict:
    settings = params["settings"]
    check_types(settings)  # before any request
    wanted = set(settings) | ({"hid"} if "atx" in settings else set())
    result = {"changed": False, "patches": {}, "config": {}, "url": params["url"]}
    before = {}
    with Client(params["url"], params["timeout"]) as api:
        api.login(params["username"], params["password"])
        current = {section: api.get(f"/api/config/{section}") for section in sorted(wanted)}
        steps = plan(settings, current, check_devices=params["check_devices"])
        for section, patch in steps:
            result["patches"][section] = patch
            before[section] = current[section]
            if check_mode:
                continue
            answer = api.patch(f"/api/config/{section}", patch)
            if not isinstance(answer, dict):
                raise DeviceError(f"One-KVM's answer to PATCH /api/config/{section} is not a JSON object.")
            current[section] = answer
            left = differing(answer, settings[section], (section,))
            if left:
                raise DeviceError(f"One-KVM accepted PATCH /api/config/{section} but did not keep {left}; "
                                  f"the task would change it on every run.", section=section, not_kept=left)
    result["changed"] = bool(steps)
    result["config"] = {section: current[section] for section in settings}
    if params.get("_diff"):
        result["diff"] = {"before": before, "after": {s: current[s] for s in before}}
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            settings=dict(type="dict", required=True),
            url=dict(type="str", default=DEFAULT_URL),
            username=dict(type="str", required=True),
            password=dict(type="str", required=True, no_log=True),
            timeout=dict(type="float", default=10.0),
            check_devices=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    params = dict(module.params, _diff=module._diff)
    module.exit_json(**run_core(module, run, params, module.check_mode))


if __name__ == "__main__":
    main()
