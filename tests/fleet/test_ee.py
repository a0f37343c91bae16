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


def test_context_has_containerfile_scripts_and_the_collection(built):
    context = built / "context"
    containerfile = (context / "Containerfile").read_text()
    assert 'ARG PYCMD="/usr/bin/python3.12"' in containerfile
    assert re.search(r'ARG ANSIBLE_INSTALL_REFS=".*ansible-core>=2\.18\.0,<2\.22.*ansible-runner', containerfile)
    assert "ansible-galaxy collection install" in containerfile and "-r requirements.yml" in containerfile
    assert "introspect.py introspect" in containerfile
    for script in ("assemble", "install-from-bindep", "introspect.py", "entrypoint"):
        assert (context / "_build" / "scripts" / script).is_file(), script
    tarball = context / "_build" / "collections" / ("onekvm-fleet-%s.tar.gz" % galaxy_version())
    assert tarball.is_file()
    with open(context / "_build" / "requirements.yml", encoding="utf-8") as f:
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
    assert "openssh-clients [platform:rpm]  # from collection onekvm.fleet" in out
    assert "openssh-client [platform:dpkg]  # from collection onekvm.fleet" in out
