# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    # How the kvmd API modules reach the running kvmd (its unix socket and its auth)
    DOCUMENTATION = r"""
options:
  socket:
    description:
      - kvmd's unix socket (C(kvmd.server.unix)); nginx maps C(/api/...) on the web port to the same routes there.
    type: path
    default: /run/kvmd/kvmd.sock
  user:
    description:
      - A kvmd user (C(kvmd-htpasswd)), sent in the C(X-KVMD-User) header kvmd checks on every request.
      - With 2FA on, kvmd wants the TOTP code appended to the password; use a user without 2FA.
      - Empty sends no credentials. kvmd then admits only a unix peer it trusts (C(kvmd.auth.usc); kvmd 4.107 and
        newer trust C(root), so running the module as root (become) is enough there; One-KVM's kvmd trusts nobody by default).
    type: str
    default: ""
  password:
    description:
      - The password of O(user), sent in the C(X-KVMD-Passwd) header. Keep it in a vault; it is never logged.
    type: str
    default: ""
  timeout:
    description:
      - Seconds to wait for kvmd's answer (between V(0.1) and V(120)); a waited pulse gets its own length on top.
    type: float
    default: 10.0
requirements:
  - kvmd running on the box (pikvm/kvmd, or One-KVM's kvmd fork); nothing beyond Python's standard library.
seealso:
  - name: kvmd's HTTP API
    description: The GPIO routes C(GET /api/gpio), C(POST /api/gpio/pulse) and C(POST /api/gpio/switch).
    link: https://docs.pikvm.org/api/
"""
