# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Which of the collection's module_utils files the box package needs: what the box command imports."""

from __future__ import annotations

import ast
import functools
import os

DOCUMENTATION = r"""
name: box_modules
short_description: The module_utils files the onekvm box command needs
version_added: 1.0.0
author: onekvm.fleet maintainers
description:
  - Takes paths of the collection's C(plugins/module_utils/_*.py) files and returns those the box command imports,
    directly or through each other, starting from O(entry) - the command's C(main) and everything its commands
    (the capture watchdog included) import. Files only the modules use, such as C(_ansible.py), are left out.
  - An import counts when it is a relative import (C(from ._x import y), C(from . import _x)) anywhere in a file, in
    a function too, or a string naming a sibling module (the box command imports each command's file by name when
    that command runs).
  - The role installs exactly these files on the box and removes the others.
options:
  _input:
    description: Paths of the module_utils files.
    type: list
    elements: path
    required: true
  entry:
    description: The module the box command starts in, without C(.py).
    type: str
    default: _cli
"""

EXAMPLES = r"""
- name: The files of the box package
  ansible.builtin.debug:
    msg: "{{ query('ansible.builtin.fileglob', 'plugins/module_utils/_*.py') | onekvm.fleet.box_modules }}"
"""

RETURN = r"""
_value:
  description: The paths given that the box command needs, in the order given.
  type: list
  elements: path
  sample: [plugins/module_utils/_cli.py, plugins/module_utils/_errors.py]
"""

ENTRY = "_cli"


def _name(path: str) -> str:
    return os.path.basename(path)[:-len(".py")]


@functools.lru_cache(maxsize=64)
def _imports(path: str, mtime_ns: int, siblings: frozenset) -> frozenset:
    """The siblings that the file at ``path`` imports (``mtime_ns`` keys the cache: the role asks per host)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.add(node.value.lstrip("."))  # importlib.import_module("._cli_usb", ...) or a table of names
    return frozenset(found & siblings)


def box_modules(paths, entry: str = ENTRY) -> list:
    """The ``paths`` (module_utils files) that module ``entry`` needs, itself included, in the order given."""
    by_name = {_name(p): p for p in paths or [] if str(p).endswith(".py")}
    if entry not in by_name:
        raise ValueError("box_modules: the entry module %s.py is not among the files given (%d files); give the "
                         "collection's plugins/module_utils/_*.py" % (entry, len(by_name)))
    siblings = frozenset(by_name)
    needed, todo = set(), [entry]
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            path = by_name[name]
            todo.extend(_imports(path, os.stat(path).st_mtime_ns, siblings) - needed)
    return [p for p in paths if str(p).endswith(".py") and _name(p) in needed]


class FilterModule:
    """The box package's files."""

    def filters(self):
        return {"box_modules": box_modules}
