# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    # How the CH9329 modules reach the chip (port, kvmd pause, lock)
    DOCUMENTATION = r"""
options:
  serial_port:
    description:
      - Serial port of the USB-serial adapter the CH9329 hangs on (its device node, or a udev name for it).
      - V(port) is an alias, this option's older name. The USB modules name a USB topology path
        O(onekvm.fleet.usb_reset#module:port_path) instead, so each name says which kind of port it is.
      - Default is kvmd's C(kvmd.hid.device) when kvmd's config (C(main.yaml), C(override.d/*), C(override.yaml)) sets
        C(kvmd.hid.type=ch9329), else C(/dev/kvmd-hid) if it exists, else C(/dev/ttyUSB0).
    type: path
    aliases: [port]
  timeout:
    description:
      - Seconds to wait for each reply of the chip (between V(0.05) and V(60)).
    type: float
    default: 1.0
  pause_kvmd:
    description:
      - kvmd keeps the port open and polls the chip about every 0.1 s, which would steal the replies.
      - When V(true) and C(kvmd.service) or C(kvmd-hid.service) is active and one of its processes really has O(serial_port)
        open (seen in C(/proc/*/fd)), that unit is stopped for the exchange and always started again afterwards, also
        on failure; C(kvmd_paused) in the result names it. When no kvmd process holds the port, kvmd is not touched.
      - On One-KVM 0.2 (no kvmd) its own C(one-kvm.service) holds the port, exclusively; it is paused the same way.
      - When V(false), kvmd is left alone and a warning is returned if it holds the port.
      - Check mode never stops kvmd, whatever this option says.
      - Every option is checked, and the port checked to be a serial tty, before kvmd is touched.
    type: bool
    default: true
  lock_timeout:
    description:
      - Seconds to wait for the box-wide hardware lock that keeps resets and relay presses apart.
    type: float
    default: 30.0
requirements:
  - pyserial on the box (Debian/Armbian C(python3-serial), Arch/PiKVM C(python-pyserial)).
  - systemd on the box when O(pause_kvmd=true) and kvmd holds the port.
notes:
  - The CH9329 itself enumerates on the target machine, not on the KVM box; resetting the USB-serial adapter with
    M(onekvm.fleet.usb_reset) does not reset the chip.
"""

    # The address option of the modules that reach one chip (ch9329_config names it connect_address)
    ADDRESS = r"""
options:
  address:
    description:
      - Address of the chip (V(0) from the factory), V(0) to V(254).
      - V(auto) finds the chip by asking each address in turn with GET_INFO, address V(0) first (a chip at address
        0 answers any address code); the scan is bounded, 255 x (20 bytes' wire time + 25 ms), about 12 s at 9600
        baud and 7.4 s at 115200 (with O(baudrate=auto) at each rate in turn, about 45 s).
      - V(255) is refused, being the broadcast address, which a chip acts on but never answers.
    type: raw
    default: 0
"""

    # The link's baud rate of the modules that talk to the chip as it is (ch9329_config sets a new one)
    BAUDRATE = r"""
options:
  baudrate:
    description:
      - Baud rate of the chip's serial link.
      - V(auto) probes 9600, 115200, 57600, 38400 and 19200 with GET_INFO and uses the first that answers.
      - Default is kvmd's C(kvmd.hid.speed) when kvmd drives a CH9329 on O(serial_port), else the factory V(9600).
    type: str
    choices: ['auto', '9600', '19200', '38400', '57600', '115200']
"""
