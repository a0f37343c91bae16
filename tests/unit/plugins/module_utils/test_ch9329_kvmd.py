# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""kvmd's config as the CH9329 code reads it: the YAML subset, load order and merge rules."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.onekvm.fleet.plugins.module_utils import _kvmd

ONE_KVM_MAIN = """\
# One-KVM style main.yaml
override: !include [override.d, override.yaml]
kvmd:
    server:
        unix: /run/kvmd/kvmd.sock   # comment after a value
    hid:
        type: ch9329
        device: /dev/ttyUSB0
        speed: 9600
        read_timeout: 0.3
        mouse_alt:
            device: ""
    gpio:
        view:
            table:
                - ["#One-KVM", "#"]
                - []
            header:
                title: "Switch # 1"
    atx:
        type: disabled
vnc:
    keymap: /usr/share/kvmd/keymaps/en-us
    enabled: yes
"""


def test_subset_reader_agrees_with_pyyaml_on_scalars_and_mappings():
    ours = _kvmd.parse_yaml_mappings(ONE_KVM_MAIN)
    hid = ours["kvmd"]["hid"]
    assert hid == {"type": "ch9329", "device": "/dev/ttyUSB0", "speed": 9600, "read_timeout": 0.3,
                   "mouse_alt": {"device": ""}}
    assert ours["kvmd"]["server"]["unix"] == "/run/kvmd/kvmd.sock"
    assert ours["kvmd"]["gpio"]["view"]["header"]["title"] == "Switch # 1"
    assert isinstance(ours["kvmd"]["gpio"]["view"]["table"], _kvmd.Opaque)
    assert ours["vnc"]["enabled"] == "yes"  # kvmd keeps yes/no as strings
    reference = yaml.safe_load(ONE_KVM_MAIN.replace("!include ", ""))
    assert reference["kvmd"]["hid"] == hid


def test_sequence_at_the_same_indent_is_opaque():
    tree = _kvmd.parse_yaml_mappings("a:\n  table:\n  - x\n  - y: 1\n    z: 2\n  after: 3\n")
    assert isinstance(tree["a"]["table"], _kvmd.Opaque) and tree["a"]["after"] == 3


keys = st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True)
scalars = st.one_of(st.integers(-10**6, 10**6), st.booleans(), st.from_regex(r"/[a-z/]{0,12}", fullmatch=True))
trees = st.recursive(st.dictionaries(keys, scalars, min_size=1, max_size=4),
                     lambda inner: st.dictionaries(keys, st.one_of(scalars, inner), min_size=1, max_size=4), max_leaves=12)


@given(tree=trees, indent=st.sampled_from([2, 4]))
def test_subset_reader_reads_what_pyyaml_writes(tree, indent):
    text = yaml.safe_dump(tree, indent=indent, default_flow_style=False)
    assert _kvmd.parse_yaml_mappings(text) == yaml.safe_load(text)


def test_merge_rules():
    base = {"kvmd": {"hid": {"type": "otg", "speed": 9600}, "gpio": {"view": {"table": ["a"]}}}}
    over = {"kvmd": {"hid": {"type": "ch9329"}, "gpio": {"view": {"table": ["b"]}}}}
    assert _kvmd.merge(base, over) == {"kvmd": {"hid": {"type": "ch9329", "speed": 9600},
                                                "gpio": {"view": {"table": ["b"]}}}}


@pytest.fixture
def root(tmp_path):
    (tmp_path / "usr" / "lib" / "kvmd").mkdir(parents=True)
    (tmp_path / "etc" / "kvmd" / "override.d").mkdir(parents=True)
    return tmp_path


def test_load_order_any_suffix_in_override_d(root):
    (root / "usr/lib/kvmd/main.yaml").write_text(ONE_KVM_MAIN)
    (root / "etc/kvmd/override.d/0000-vendor.yaml").write_text("kvmd:\n  hid:\n    speed: 19200\n")
    (root / "etc/kvmd/override.d/9999-hid.yaml.bak").write_text("kvmd:\n  hid:\n    device: /dev/kvmd-hid\n")
    (root / "etc/kvmd/override.yaml").write_text("kvmd:\n  hid:\n    speed: 115200\n")
    assert _kvmd.hid_settings(str(root)) == {"type": "ch9329", "device": "/dev/kvmd-hid", "speed": 115200}


def test_older_main_location_and_missing_config(root):
    assert _kvmd.hid_settings(str(root)) == {"type": None, "device": None, "speed": None}
    (root / "etc/kvmd/main.yaml").write_text("kvmd:\n  hid:\n    type: otg\n")
    assert _kvmd.hid_settings(str(root))["type"] == "otg"


def test_quoted_speed_is_not_a_number(root):
    (root / "etc/kvmd/override.yaml").write_text("kvmd:\n  hid:\n    speed: '9600'\n")
    assert _kvmd.hid_settings(str(root))["speed"] is None
