"""The role's argument spec, its defaults and the README tell the same story.

Every variable in defaults/ is in meta/argument_specs.yml with the same default (the spec is what
`ansible-doc -t role` shows and what validates inventories), and the README names it.
"""
import pathlib
import re

import pytest
import yaml

ROLE = pathlib.Path(__file__).resolve().parents[2] / "roles" / "onekvm"
README = (ROLE.parents[1] / "README.md").read_text()


def _defaults() -> dict:
    values = {}
    for path in sorted((ROLE / "defaults" / "main").glob("*.yml")):
        values.update(yaml.safe_load(path.read_text()) or {})
    return values


def _options() -> dict:
    return yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]


DEFAULTS = _defaults()
OPTIONS = _options()


def test_defaults_are_found():
    assert len(DEFAULTS) > 40, "defaults/main/*.yml not read"


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_default_is_specified_with_the_same_value(name):
    assert name in OPTIONS, "%s has a default but no entry in meta/argument_specs.yml" % name
    spec = OPTIONS[name]
    assert spec.get("description"), "%s has no description" % name
    assert spec.get("default") == DEFAULTS[name], "%s: spec default %r, defaults/ %r" % (
        name, spec.get("default"), DEFAULTS[name])


def _readme_names() -> set:
    """Backticked variable names in the README; a row may abbreviate a pair as `onekvm_x_id` / `_port` (or more)."""
    names = set(re.findall(r"`(onekvm_\w+)`", README))
    for chain in re.findall(r"`onekvm_\w+`(?: / `_\w+`)+", README):  # also `a_x` / `_y` / `_z`
        first, *suffixes = re.findall(r"`(\w+)`", chain)
        parts = first.split("_")
        names.update("_".join(parts[:-k]) + suffix for suffix in suffixes for k in range(1, len(parts)))
    return names


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_specified_option_has_a_default_and_a_readme_row(name):
    assert name in DEFAULTS, "%s is specified but has no default in defaults/main/" % name
    assert name in _readme_names(), "README does not mention %s" % name
