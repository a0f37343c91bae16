#!/usr/bin/python
# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: ustreamer_snapshot
short_description: Take the current screen of a OneKVM / PiKVM box from ustreamer or One-KVM 0.2 (a JPEG)
version_added: 1.0.0
description:
  - Asks ustreamer for its current frame (C(GET /snapshot) on kvmd's ustreamer unix socket) and returns it as
    base64 JPEG with the size ustreamer reports, bounded in bytes (O(max_bytes)) and time (O(timeout)).
  - A streamer that is not running is not an error - kvmd stops ustreamer about 10 s after the last viewer left
    (PiKVM's C(streamer.forever=false)); RV(state) is then V(stopped) and no picture is returned. Nothing is
    started to take the picture.
  - While the capture has no signal, ustreamer sends a placeholder frame; RV(state) is then V(no_signal).
  - On One-KVM 0.2 (no kvmd, no ustreamer) O(api=onekvm2) asks One-KVM's own C(GET /api/snapshot) instead, logged in
    with the watchdog's login file that the C(onekvm.fleet.onekvm) role keeps (O(credentials_file)). One-KVM answers
    with its MJPEG stream's current frame, or 503 when it has none (its stream stopped, or not MJPEG) - RV(state) is
    then V(stopped). One-KVM sends no frame size, so RV(width) and RV(height) are V(null) there.
  - The C(onekvm.fleet.health) playbook uses it for the screen wall of C(fleet-health.html).
author:
  - onekvm.fleet maintainers (@onekvm)
extends_documentation_fragment:
  - onekvm.fleet.attributes
  - onekvm.fleet.attributes.info_module
options:
  api:
    description:
      - Where the picture comes from - V(ustreamer) (kvmd's streamer, on O(socket)) or V(onekvm2) (One-KVM 0.2's REST
        API at O(url)).
    type: str
    choices: [ustreamer, onekvm2]
    default: ustreamer
  url:
    description: One-KVM 0.2's web address as seen from the box (O(api=onekvm2) only).
    type: str
    default: http://127.0.0.1:8080
  credentials_file:
    description:
      - The root-only JSON file (C({"user", "passwd"}), mode 0600) with One-KVM 0.2's login (O(api=onekvm2) only); the
        role writes it from C(onekvm_onekvm2_username) and C(onekvm_onekvm2_password).
    type: path
    default: /etc/onekvm/watchdog-onekvm2.json
  socket:
    description:
      - ustreamer's unix socket (kvmd runs it with C(--unix=/run/kvmd/ustreamer.sock)). Needs root or kvmd's group.
    type: path
    default: /run/kvmd/ustreamer.sock
  timeout:
    description:
      - Seconds to wait for the picture, from V(0.1) to V(60) (ustreamer 6 waits for a fresh frame, up to 3 s by default).
        With O(api=onekvm2) each of the login, the picture and the logout gets this long.
    type: float
    default: 5.0
  max_bytes:
    description:
      - Largest picture accepted, in bytes, from V(1024) to V(33554432); a bigger answer is an error.
    type: int
    default: 2097152
"""

EXAMPLES = r"""
- name: Take the box's screen
  onekvm.fleet.ustreamer_snapshot:
  become: true
  register: screen

- name: Take the screen of a One-KVM 0.2 box (its login as the role keeps it for the watchdog)
  onekvm.fleet.ustreamer_snapshot:
    api: onekvm2
  become: true
  register: screen

- name: Keep it on the controller
  ansible.builtin.copy:
    content: "{{ screen.jpeg | b64decode }}"
    dest: "screens/{{ inventory_hostname }}.jpg"
    mode: "0644"
  delegate_to: localhost
  when: screen.state != 'stopped'
"""

RETURN = r"""
state:
  description: >-
    V(live), V(no_signal) (ustreamer reports the source offline) or V(stopped) (ustreamer is not running; on One-KVM
    0.2, One-KVM has no frame to give).
  returned: always
  type: str
  sample: live
online:
  description: ustreamer's C(X-UStreamer-Online) for the frame, V(null) when stopped.
  returned: always
  type: bool
  sample: true
width:
  description: Frame width ustreamer reports, V(null) when unknown.
  returned: always
  type: int
  sample: 640
height:
  description: Frame height ustreamer reports, V(null) when unknown.
  returned: always
  type: int
  sample: 480
bytes:
  description: Size of the JPEG in bytes (V(0) when stopped).
  returned: always
  type: int
  sample: 23817
jpeg:
  description: The JPEG, base64-encoded; empty when stopped.
  returned: always
  type: str
elapsed:
  description: Seconds the snapshot took.
  returned: always
  type: float
  sample: 0.21
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.onekvm.fleet.plugins.module_utils._ansible import run_core
from ansible_collections.onekvm.fleet.plugins.module_utils._onekvm2_api import snapshot as onekvm2_snapshot
from ansible_collections.onekvm.fleet.plugins.module_utils._ustreamer import (
    DEFAULT_SOCKET,
    SNAPSHOT_BYTES,
    SNAPSHOT_TIMEOUT,
    snapshot,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            api=dict(type="str", choices=["ustreamer", "onekvm2"], default="ustreamer"),
            url=dict(type="str", default="http://127.0.0.1:8080"),
            credentials_file=dict(type="path", default="/etc/onekvm/watchdog-onekvm2.json"),
            socket=dict(type="path", default=DEFAULT_SOCKET),
            timeout=dict(type="float", default=SNAPSHOT_TIMEOUT),
            max_bytes=dict(type="int", default=SNAPSHOT_BYTES),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if p["api"] == "onekvm2":
        result = run_core(module, onekvm2_snapshot, p["url"], p["credentials_file"], p["timeout"], p["max_bytes"])
    else:
        result = run_core(module, snapshot, p["socket"], timeout=p["timeout"], max_bytes=p["max_bytes"])
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
