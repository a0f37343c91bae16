# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The CI examples in examples/ci/ run here as written: their shell steps, in their order.

They run in a copy of this checkout (what actions/checkout or GitLab's clone gives the job),
ansible-core from PyPI into a fresh virtualenv (pip's cache keeps this quick), and the
environment carries nothing of this checkout (no ANSIBLE_COLLECTIONS_PATH, no PYTHONPATH). The
GitHub steps run with their variables exactly as written (the collection built from the
checkout); the GitLab script with COLLECTION set to the tarball `ansible-galaxy collection build`
made, the other way the examples offer. Steps that only set up the CI machine's OS packages are
not run: scripts/setup.sh has installed them here (sudo for visudo).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from ansible_collections.onekvm.fleet.tests.fleet.conftest import ROOT, run

CI = os.path.join(ROOT, "examples", "ci")
BAD_BUTTON = "onekvm_gpio_buttons:\n  - name: toggle switch\n    cmd: [/usr/local/bin/kvm-switch, next]\n"


def load(name):
    with open(os.path.join(CI, name), encoding="utf-8") as f:
        return yaml.safe_load(f)


def github_steps():
    job = load("github-actions.yml")["jobs"]["validate"]
    return job["env"], [step["run"] for step in job["steps"] if "run" in step]


def gitlab_steps():
    job = load("gitlab-ci.yml")["onekvm-validate"]
    return job["variables"], job["script"]


def clean_env(extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PYTHON", "ONEKVM_"))}
    env.update(extra)
    return env


def run_steps(steps, env, cwd):
    for step in steps:
        done = subprocess.run(["bash", "-e", "-c", step], env=env, cwd=cwd, capture_output=True, text=True, check=False,
                              timeout=900)
        if done.returncode != 0:
            return done
    return done


# what a checkout does not have: build and test output of this tree
NOT_CHECKED_OUT = shutil.ignore_patterns(".git", ".nox", ".venv*", "output", "__pycache__", ".pytest_cache", ".hypothesis",
                                         "*.tar.gz", "onekvm-validate")


@pytest.fixture(scope="module")
def ci_work(tmp_path_factory):
    work = tmp_path_factory.mktemp("ci")
    checkout = work / "checkout"
    shutil.copytree(ROOT, checkout, ignore=NOT_CHECKED_OUT)
    done = run(["ansible-galaxy", "collection", "build", "--output-path", str(work / "dist"), ROOT])
    assert done.returncode == 0, done.stdout + done.stderr
    (tarball,) = (work / "dist").iterdir()
    return checkout, str(tarball)


def test_workflows_run_on_inventory_changes_and_install_without_galaxy():
    gh = load("github-actions.yml")
    assert {"inventory/**", "examples/inventory/**"} <= set(gh["on"]["pull_request"]["paths"])
    gl = load("gitlab-ci.yml")["onekvm-validate"]
    assert {"inventory/**/*", "examples/inventory/**/*"} <= set(gl["rules"][0]["changes"])
    for env, steps in (github_steps(), gitlab_steps()):
        # as written: the collection built from the checkout the job runs in, no placeholder to edit
        assert env["COLLECTION"] == "" and env["COLLECTION_SOURCE"] == "." and env["INVENTORY"] == "examples/inventory"
        assert any("ansible-galaxy collection build" in s and '"$COLLECTION_SOURCE"' in s for s in steps)
        assert any("ansible-galaxy collection install" in s and '"$COLLECTION"' in s for s in steps)
        assert any("onekvm.fleet.validate" in s and '-i "$INVENTORY"' in s for s in steps)
    assert gl["artifacts"]["reports"]["junit"] == "onekvm-validate/junit.xml"


def test_github_steps_as_written_pass_the_example_inventory(ci_work):
    checkout, _tarball = ci_work
    env, steps = github_steps()
    summary = checkout.parent / "step-summary.md"
    done = run_steps(steps, clean_env(dict(env, GITHUB_STEP_SUMMARY=str(summary))), str(checkout))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
    assert "onekvm.fleet.validate: 6 hosts, 6 pass, 0 fail" in summary.read_text()
    # the collection was built from the checkout and installed into the job's own path
    with open(os.path.join(ROOT, "galaxy.yml"), encoding="utf-8") as f:
        version = yaml.safe_load(f)["version"]
    assert (checkout / ".onekvm-dist" / ("onekvm-fleet-%s.tar.gz" % version)).is_file()
    assert (checkout / ".collections" / "ansible_collections" / "onekvm" / "fleet" / "MANIFEST.json").is_file()
    assert (checkout / "onekvm-validate" / "kvm-a01" / "etc" / "sudoers.d" / "onekvm").is_file()
    assert (checkout / "onekvm-validate" / "junit.xml").is_file()


def test_gitlab_script_with_a_tarball_fails_a_bad_button_naming_host_and_button(ci_work):
    checkout, tarball = ci_work
    env, steps = gitlab_steps()
    host_vars = checkout / "examples" / "inventory" / "host_vars"
    host_vars.mkdir(exist_ok=True)
    (host_vars / "kvm-a02.yml").write_text(BAD_BUTTON)
    try:
        done = run_steps(steps, clean_env(dict(env, COLLECTION=tarball)), str(checkout))
    finally:
        (host_vars / "kvm-a02.yml").unlink()
    assert done.returncode != 0
    assert "onekvm.fleet.validate: 6 hosts, 5 pass, 1 fail" in done.stdout, done.stdout[-3000:] + done.stderr[-2000:]
    assert "FAILED kvm-a02: Check the GPIO buttons" in done.stdout
    assert "button 'toggle switch' (item 1): name 'toggle switch' does not match" in done.stdout
    assert "1 of 6 boxes fail: kvm-a02." in done.stdout
