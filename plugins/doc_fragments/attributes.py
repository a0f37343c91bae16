# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    # What each attribute means, once, for the modules (all of them run on the box, so platform is
    # full on posix unless a module says more); a module says only how far it supports the others
    # (support, details). Ansible merges each attribute key by key, the module's words winning.
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
"""

    # The modules that only read (as community.general's attributes.info_module)
    INFO_MODULE = r"""
options: {}
attributes:
  check_mode:
    support: full
    details:
      - Only reads; runs the same in check mode.
  diff_mode:
    support: N/A
    details:
      - Only reads; there is no change to show.
  idempotent:
    support: full
"""
