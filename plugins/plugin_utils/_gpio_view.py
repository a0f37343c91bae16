# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Reading a kvmd ``gpio`` section (rendered, from ``kvmd -m`` or from the running kvmd's API) that may be
any shape: the health gate's filters. PRIVATE to the onekvm.fleet collection."""

from __future__ import annotations


def mapping(value, *keys) -> dict:
    """``value[key][key]...`` when every step is a dictionary, else an empty one."""
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, dict) else {}


def shown_channels(view, channel_of) -> set:
    """The channels named by the items in the rows of ``view["table"]``; ``channel_of(item)`` gives an
    item's channel, or None for an item that is no channel (a label, a separator)."""
    table = view.get("table") if isinstance(view, dict) and isinstance(view.get("table"), list) else []
    channels = (channel_of(item) for row in table if isinstance(row, list) for item in row)
    return {channel for channel in channels if channel is not None}
