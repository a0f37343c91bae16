#!/usr/bin/python
# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: ustreamer_snapshot
short_description: Take the current screen of a OneKVM / PiKVM box from ustreamer (a JPEG)
version_added: 1.0.0
description:
  - Asks ustreamer for its current frame (C(GET /snapshot) on kvmd's ustreamer unix socket) and returns it as
    base64 JPEG with the size ustreamer reports, bounded in bytes (O(max_bytes)) and time (O(timeout)).
  - A streamer that is not running is not an error - kvmd stops ustreamer about 10 s after the last viewer left
    (PiKVM's C(streamer.forever=false)); RV(state) is then V(stopped) and no picture is returned. Nothing is
    started to take the picture.
  - While the capture has no signal, ustreamer sends a placeholder frame; RV(state) is then V(no_signal).
  - The C(onekvm.fleet.health) playbook uses it for the screen wall of C(fleet-health.html).
author:
  - onekvm.fleet maintainers (@onekvm)
extends_documentation_fragment:
  - onekvm.fleet.attributes
  - onekvm.fleet.attributes.info_module
options:
  socket:
    description:
      - ustreamer's unix socket (kvmd runs it with C(--unix=/run/kvmd/ustreamer.sock)). Needs root or kvmd's group.
    type: path
    default: /run/kvmd/ustreamer.sock
  timeout:
    description:
      - Seconds to wait for the picture, from V(0.1) to V(60) (ustreamer 6 waits for a fresh frame, up to 3 s by default).
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
  description: V(live), V(no_signal) (ustreamer reports the source offline) or V(stopped) (ustreamer is not running).
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
from ansible_collections.onekvm.fleet.plugins.module_utils._ustreamer import (
    DEFAULT_SOCKET,
    SNAPSHOT_BYTES,
    SNAPSHOT_TIMEOUT,
    snapshot,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            socket=dict(type="path", default=DEFAULT_SOCKET),
            timeout=dict(type="float", default=SNAPSHOT_TIMEOUT),
            max_bytes=dict(type="int", default=SNAPSHOT_BYTES),
        ),
        supports_check_mode=True,
    )
    p = module.params
    result = run_core(module, snapshot, p["socket"], timeout=p["timeout"], max_bytes=p["max_bytes"])
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
