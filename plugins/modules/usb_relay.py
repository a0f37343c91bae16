#!/usr/bin/python
# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: usb_relay
short_description: Switch or pulse a channel of a serial (LCUS) USB relay on a OneKVM / PiKVM box
version_added: 1.0.0
description:
  - Sends the 4-byte LCUS command (V(A0), channel, V(00) off or V(01) on, checksum) to a serial USB relay board
    (CH340 USB-serial bridge plus a microcontroller, 9600 baud 8N1), for example to "press" the button of a
    KVM switch or a server's power button wired to the relay's COM and NO terminals.
  - V(on) closes the contacts (COM-NO), V(off) opens them, V(pulse) closes them for O(duration) seconds and opens
    them again. A pulse always ends with the off command, even when it is interrupted.
  - The relay cannot be read back (the boards send nothing). The last commanded state of each channel is recorded
    in O(state_file); V(on) / V(off) send nothing and report C(changed=false) when the record says the channel is
    already there. The record counts only for the same USB adapter (same device number, sysfs path and boot), so a
    replug, a port power cycle or a reboot make it unknown again. Switching the relay by any other means makes the
    record wrong; O(force=true) sends the command regardless.
  - Holds the box-wide hardware lock shared with the C(onekvm) box command, kvmd buttons and the capture
    watchdog, so two presses never interleave.
  - The same code runs as the box command C(onekvm relay on|off|pulse), usable as a kvmd C(cmd) GPIO driver.
  - HID relays (V(16c0:05df), "USBRelayN") need no module, kvmd's own C(hidrelay) GPIO driver drives them.
author:
  - onekvm.fleet maintainers (@onekvm)
requirements:
  - pyserial on the box (Debian/Armbian C(python3-serial), Arch/PiKVM C(python-pyserial))
extends_documentation_fragment:
  - onekvm.fleet.attributes
attributes:
  check_mode:
    support: full
    details:
      - Validates the options, checks that O(serial_port) is a tty nobody holds exclusively and reads the record, then
        reports what would be sent. Nothing is written to the port or the record. Check mode does not take the
        hardware lock, so a port in use fails at once.
  diff_mode:
    support: none
  platform:
    details:
      - Linux boxes (OneKVM, PiKVM) with the relay's USB-serial adapter attached.
  idempotent:
    support: partial
    details:
      - V(on) and V(off) are idempotent while O(state_file) holds a valid record; V(pulse) is an action and
        always changes.
options:
  serial_port:
    description:
      - The relay's USB-serial adapter (its device node, or a udev name for it).
      - V(port) is an alias, this option's older name. The USB modules name a USB topology path
        O(onekvm.fleet.usb_reset#module:port_path) instead, so each name says which kind of port it is.
      - The default is the stable name the C(onekvm.fleet.onekvm) role's udev rule gives the adapter by its USB
        port path. C(/dev/ttyUSB0) is risky when a CH9329 adapter (often the same V(1a86:7523)) is plugged in too,
        since which one gets which number depends on the enumeration order.
    type: path
    default: /dev/onekvm-relay
    aliases: [port]
  channel:
    description:
      - The relay channel, from V(1) to O(channels).
    type: int
    default: 1
  channels:
    description:
      - How many relays the board has (LCUS-1, -2, -4, -8). A O(channel) above it is refused rather than sent to a
        board that would silently ignore it.
    type: int
    choices: [1, 2, 4, 8]
    default: 1
  state:
    description:
      - V(on) closes the contacts, V(off) opens them, V(pulse) closes them for O(duration) seconds then opens them
        (a button press). A pulse leaves the channel off, whatever it was before.
    type: str
    choices: ["on", "off", pulse]
    required: true
  duration:
    description:
      - Seconds the contacts stay closed for O(state=pulse), from V(0.05) to V(10). V(0.5) when not set.
      - Only valid with O(state=pulse).
    type: float
  baudrate:
    description:
      - Serial speed. LCUS boards use V(9600).
    type: int
    choices: [1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200]
    default: 9600
  state_file:
    description:
      - File on the box recording the last commanded state of each channel.
      - The default lives under C(/run), a tmpfs, so a reboot forgets the record, as a relay board losing USB power
        forgets its state. An empty value disables the record; V(on) and V(off) are then always sent and changed.
    type: path
    default: /run/onekvm/relay-state.json
  force:
    description:
      - Send V(on) / V(off) even when the record says the channel is already in that state.
    type: bool
    default: false
  lock_timeout:
    description:
      - Seconds to wait for the box-wide hardware lock held by another reset or press.
      - A port held exclusively when the module starts may be another press of this collection in mid-pulse, so
        the port is checked again once the lock is held; only then is a port still in use an error.
    type: float
    default: 30
notes:
  - kvmd runs C(cmd) buttons as user C(kvmd); the box command needs root (the lock under C(/run/onekvm) and the
    serial port), hence a sudoers rule for it, which the C(onekvm.fleet.onekvm) role manages.
seealso:
  - name: kvmd GPIO drivers (cmd, hidrelay)
    description: How kvmd buttons run commands and drive HID relays.
    link: https://docs.pikvm.org/gpio/
"""

EXAMPLES = r"""
- name: Press the KVM switch's button (relay channel 1 closed for half a second)
  onekvm.fleet.usb_relay:
    state: pulse
  become: true

- name: Hold a server's power button for 6 s to force it off (channel 2 of a 2-channel board)
  onekvm.fleet.usb_relay:
    serial_port: /dev/onekvm-relay
    channels: 2
    channel: 2
    state: pulse
    duration: 6
  become: true

- name: Keep channel 1 closed
  onekvm.fleet.usb_relay:
    state: "on"
  become: true

- name: Open it again even if the record says it is open already
  onekvm.fleet.usb_relay:
    state: "off"
    force: true
  become: true
"""

RETURN = r"""
port:
  description: The port as given.
  returned: always
  type: str
  sample: /dev/onekvm-relay
device:
  description: The character device behind O(serial_port) (udev symlink resolved).
  returned: always
  type: str
  sample: /dev/ttyUSB1
channel:
  description: The channel switched.
  returned: always
  type: int
  sample: 1
state:
  description: The requested state.
  returned: always
  type: str
  sample: pulse
previous_state:
  description:
    - The channel's state according to the record before this run, V(unknown) without a valid record. It is what
      was last commanded, not read from the relay.
  returned: always
  type: str
  sample: unknown
frames:
  description: The commands sent (in check mode, that would be sent), as hex bytes. Empty when nothing was needed.
  returned: always
  type: list
  elements: str
  sample: ["a0 01 01 a2", "a0 01 00 a1"]
bytes_sent:
  description: Bytes written to the port (V(0) in check mode or when nothing was needed).
  returned: always
  type: int
  sample: 8
duration:
  description: The requested pulse length in seconds.
  returned: when O(state=pulse)
  type: float
  sample: 0.5
pulse_width:
  description:
    - Measured seconds between the on and the off command leaving the adapter (each written and drained).
  returned: when O(state=pulse) and not in check mode
  type: float
  sample: 0.5043
state_file:
  description: The record used, V(null) when disabled.
  returned: always
  type: str
  sample: /run/onekvm/relay-state.json
elapsed:
  description: Seconds the module spent, including waiting for the lock.
  returned: always
  type: float
  sample: 0.531
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.onekvm.fleet.plugins.module_utils._ansible import run_core
from ansible_collections.onekvm.fleet.plugins.module_utils._relay import (
    BAUDRATES,
    CHANNEL_COUNTS,
    DEFAULT_BAUDRATE,
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_PORT,
    DEFAULT_STATE_FILE,
    STATES,
    run,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            serial_port=dict(type="path", default=DEFAULT_PORT, aliases=["port"]),
            channel=dict(type="int", default=1),
            channels=dict(type="int", choices=list(CHANNEL_COUNTS), default=1),
            state=dict(type="str", choices=list(STATES), required=True),
            duration=dict(type="float"),
            baudrate=dict(type="int", choices=list(BAUDRATES), default=DEFAULT_BAUDRATE),
            state_file=dict(type="path", default=DEFAULT_STATE_FILE),
            force=dict(type="bool", default=False),
            lock_timeout=dict(type="float", default=DEFAULT_LOCK_TIMEOUT),
        ),
        supports_check_mode=True,
    )
    p = module.params
    result = run_core(module, run, port=p["serial_port"], channel=p["channel"], state=p["state"], channels=p["channels"],
                      duration=p["duration"], baudrate=p["baudrate"], state_file=p["state_file"] or None,
                      force=p["force"], check_mode=module.check_mode, lock_timeout=p["lock_timeout"])
    for warning in result.pop("warnings", []):
        module.warn(warning)
    result.pop("check_mode", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
