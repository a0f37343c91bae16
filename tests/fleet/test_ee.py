# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What goes into the execution environment, checked without building it.

Two ways to the image: execution-environment.yml for ansible-builder on a registry's RPM
base image (its build context is checked here: `ansible-builder create` and `introspect`),
and the image built here from Debian packages (scripts/ee-image.sh, ee/Containerfile),
whose plan is checked here; tests/ee (`make ee`) builds that image and runs the playbooks in
it.
"""

from __future__ import annotations

import os
import re
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


def test_the_debian_image_takes_its_needs_from_the_collections_files():
    """scripts/ee-image.sh --plan: bindep.txt's Debian packages (found by introspection and judged
    by bindep for dpkg), the pins of requirements-dev.txt, the tarball of galaxy.yml's version."""
    done = run([os.path.join(ROOT, "scripts", "ee-image.sh"), "--plan"])
    assert done.returncode == 0, done.stdout + done.stderr
    plan = {}
    for key, value in re.findall(r"^(\w+): (.*)$", done.stdout, re.M):
        plan.setdefault(key, []).append(value)
    packages = plan["packages"][0].split(",")
    with open(os.path.join(ROOT, "bindep.txt"), encoding="utf-8") as f:
        dpkg = [line.split()[0] for line in f if "platform:dpkg" in line]
    assert dpkg and set(dpkg) <= set(packages), (dpkg, packages)
    assert "openssh-clients" not in packages  # the RPM name stays out of a Debian image
    # trixie: Python 3.13 (bookworm's 3.11 is below what ansible-core >= 2.20 needs)
    assert plan["suite"] == ["trixie"]
    with open(os.path.join(ROOT, "requirements-dev.txt"), encoding="utf-8") as f:
        pins = set(re.findall(r"^((?:ansible-core|ansible-runner)==\S+)$", f.read(), re.M))
    assert set(plan["pin"]) == pins and len(pins) == 2, plan["pin"]
    assert plan["collection"] == ["onekvm-fleet-%s.tar.gz" % galaxy_version()]
    # requirements.txt's lines (Pillow) go into the image's venv
    with open(os.path.join(ROOT, "requirements.txt"), encoding="utf-8") as f:
        python_needs = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    assert python_needs and set(python_needs) <= set(plan.get("python", [])), plan.get("python")
