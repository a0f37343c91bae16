"""The role's argument spec, its defaults and its README tell the same story.

meta/argument_specs.yml is the one home of the role's variables (what `ansible-doc -t role` shows
and what validates inventories); defaults/main.yml and the role's README.md are generated from it
by aar-doc (`make role-docs`; the lint session fails when they are stale). These tests check the
result as a user meets it: every default is specified with the same value, every variable is
described and listed in the role's README.
"""
import pathlib
import re

import pytest
import yaml

ROLE = pathlib.Path(__file__).resolve().parents[2] / "roles" / "onekvm"
README = (ROLE / "README.md").read_text()


def _defaults() -> dict:
    return yaml.safe_load((ROLE / "defaults" / "main.yml").read_text()) or {}


def _options() -> dict:
    return yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]


DEFAULTS = _defaults()
OPTIONS = _options()


def test_defaults_are_found():
    assert len(DEFAULTS) > 40, "defaults/main.yml not read"


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_default_is_specified_with_the_same_value(name):
    assert name in OPTIONS, "%s has a default but no entry in meta/argument_specs.yml" % name
    spec = OPTIONS[name]
    assert spec.get("description"), "%s has no description" % name
    assert spec.get("default") == DEFAULTS[name], "%s: spec default %r, defaults/ %r" % (
        name, spec.get("default"), DEFAULTS[name])


def _readme_names() -> set:
    """The variables in the option tables of the role's README (first column)."""
    return set(re.findall(r"^\| (onekvm_\w+) \|", README, re.M))


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_specified_option_has_a_default_and_a_readme_row(name):
    assert name in DEFAULTS, "%s is specified but has no default in defaults/main.yml" % name
    assert name in _readme_names(), "README does not mention %s" % name
