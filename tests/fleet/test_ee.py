# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The execution environment definition gives a complete ansible-builder build context.

Building the image needs a container registry for the base image, which the test bed
cannot reach; `ansible-builder create` (the build context) and `introspect` (what the
collection asks for) are checked instead.
"""

from __future__ import annotations

import os
import shutil
import tarfile

import pytest
import yaml

from ansible_collections.onekvm.fleet.tests.fleet.conftest import ROOT, run


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The collection tarball and the EE files laid out as the EE file expects them."""
    if shutil.which("ansible-builder") is None:
        pytest.fail("ansible-builder is not installed (requirements-dev.txt; re-run scripts/setup.sh)")
    work = tmp_path_factory.mktemp("ee")
    for name in ("execution-environment.yml", "requirements.yml"):
        shutil.copy(os.path.join(ROOT, name), work / name)
    done = run(["ansible-galaxy", "collection", "build", "--output-path", str(work / "dist"), ROOT])
    assert done.returncode == 0, done.stdout + done.stderr
    done = run(["ansible-builder", "create", "-f", "execution-environment.yml", "-c", "context"], cwd=str(work))
    assert done.returncode == 0, done.stdout + done.stderr
    return work


def galaxy_version():
    with open(os.path.join(ROOT, "galaxy.yml"), encoding="utf-8") as f:
        return yaml.safe_load(f)["version"]


def test_requirements_name_the_tarball_of_this_version():
    with open(os.path.join(ROOT, "requirements.yml"), encoding="utf-8") as f:
        requirements = yaml.safe_load(f)
    names = [c["name"] for c in requirements["collections"]]
    assert "collections/onekvm-fleet-%s.tar.gz" % galaxy_version() in names, (
        "requirements.yml must name the tarball of galaxy.yml's version %s" % galaxy_version())


def ee_definition() -> dict:
    with open(os.path.join(ROOT, "execution-environment.yml"), encoding="utf-8") as f:
        return yaml.safe_load(f)


def test_context_builds_what_our_ee_file_asks_for(built):
    """Each choice of execution-environment.yml reaches the Containerfile; the tarball is in the context.

    What ansible-builder writes around those choices (its scripts, its stages) is its own
    business and not asserted here.
    """
    ee = ee_definition()
    deps = ee["dependencies"]
    context = built / "context"
    containerfile = (context / "Containerfile").read_text()
    assert ee["images"]["base_image"]["name"] in containerfile
    assert deps["python_interpreter"]["python_path"] in containerfile
    assert deps["python_interpreter"]["package_system"] in containerfile
    for key in ("ansible_core", "ansible_runner"):
        assert deps[key]["package_pip"] in containerfile, key
    tarball = context / "_build" / "collections" / ("onekvm-fleet-%s.tar.gz" % galaxy_version())
    assert tarball.is_file()
    with open(context / "_build" / deps["galaxy"], encoding="utf-8") as f:
        assert yaml.safe_load(f) == yaml.safe_load(open(os.path.join(ROOT, "requirements.yml"), encoding="utf-8"))
    with tarfile.open(tarball) as tar:
        members = set(tar.getnames())
    for needed in ("MANIFEST.json", "meta/execution-environment.yml", "bindep.txt", "requirements.txt",
                   "playbooks/provision.yml", "playbooks/health.yml", "playbooks/templates/fleet-health.html.j2",
                   "plugins/filter/fleet_health.py", "roles/onekvm/tasks/main.yml"):
        assert needed in members, needed


def test_introspection_finds_the_collections_needs(built, tmp_path):
    """What ansible-builder's introspect stage will install for the collection (from its tarball)."""
    target = tmp_path / "ansible_collections" / "onekvm" / "fleet"
    target.mkdir(parents=True)
    with tarfile.open(built / "dist" / ("onekvm-fleet-%s.tar.gz" % galaxy_version())) as tar:
        tar.extractall(target, filter="data")
    done = run(["ansible-builder", "introspect", str(tmp_path)])
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    with open(os.path.join(ROOT, "bindep.txt"), encoding="utf-8") as f:
        wanted = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    assert wanted, "bindep.txt names the controller's system packages"
    for line in wanted:  # each of our bindep.txt lines, attributed to this collection
        assert "%s  # from collection onekvm.fleet" % line in out, line
    # and our Python needs (requirements.txt: Pillow for the health report's screens)
    with open(os.path.join(ROOT, "requirements.txt"), encoding="utf-8") as f:
        python_needs = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    assert any(line.startswith("pillow") for line in python_needs)
    for line in python_needs:
        assert "%s  # from collection onekvm.fleet" % line in out, line
